use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The shipped default policy's limits.
fn limits() -> MetricLimits {
    crate::gate::policy::Policy::shipped_default().metrics
}

/// A recalibrated monitor: the candidate's scores moved by a shift and
/// its threshold moved by the same shift. Judged against the original
/// on the base at the original's threshold, nothing flips; cut both
/// sides at the new threshold, the base side loses positives it had
/// (the bug that failed sequential recalibration repairs).
#[test]
fn a_repair_with_its_own_threshold_is_judged_against_the_original_cut() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let labels: Vec<u8> = (0..180).map(|i| (i % 2) as u8).collect();
    let base: Vec<f64> = labels
        .iter()
        .map(|&l| l as f64 + rng.random::<f64>())
        .collect();
    let cand: Vec<f64> = base.iter().map(|s| s + 0.4).collect();
    let p = Paired {
        base: &base,
        cand: &cand,
        labels: &labels,
    };
    let pop = Population::of(&labels);
    let own = Thresholds {
        base: 1.0,
        cand: 1.4,
    };
    let b = bounds(&p, own, pop, 3.0).unwrap();
    assert_eq!((b.tpr.estimate, b.fpr.estimate), (0.0, 0.0), "{b:?}");
    assert_eq!(settle(&b, 0.9, true, &limits()), Settled::Healthy);
    // One cut for both sides reads the shift as flips.
    let one = bounds(&p, Thresholds::same(1.4), pop, 3.0).unwrap();
    assert!(one.tpr.estimate > 0.2, "{one:?}");
}

/// The ranking test recalibration's skip relies on: past the AUROC limits
/// at every threshold, and `settle`'s stale whenever it holds; a monitor
/// stale only at its threshold is not ranking-stale (a threshold may mend it).
#[test]
fn ranking_stale_is_the_threshold_free_part_of_settle() {
    let lim = limits();
    let iv = |lo: f64, hi: f64| Interval {
        estimate: (lo + hi) / 2.0,
        lo,
        hi,
    };
    let fine = iv(-0.01, 0.01);
    let with = |auroc: Interval, fpr: Interval| Bounds {
        auroc,
        balanced_accuracy: fine,
        tpr: fine,
        fpr,
    };
    // Ranking lost: stale, and no threshold can change that.
    let lost = with(iv(-0.20, -0.08), fine);
    assert!(ranking_settled_stale(&lost, 0.9, true, &lim));
    assert_eq!(settle(&lost, 0.9, true, &lim), Settled::Stale);
    // Below the floor: ranking-stale only where the floor applies.
    let low = with(iv(-0.045, -0.02), fine);
    assert!(ranking_settled_stale(&low, 0.82, true, &lim));
    assert!(!ranking_settled_stale(&low, 0.82, false, &lim));
    // Stale at the threshold only (FPR up): settle says stale, the ranking
    // test does not.
    let cut = with(fine, iv(0.10, 0.20));
    assert_eq!(settle(&cut, 0.9, true, &lim), Settled::Stale);
    assert!(!ranking_settled_stale(&cut, 0.9, true, &lim));
    // Unsettled ranking (the bound straddles the limit): not ruled out.
    let open = with(iv(-0.12, 0.0), fine);
    assert!(!ranking_settled_stale(&open, 0.9, true, &lim));
}

fn full_change(base: &[f64], cand: &[f64], labels: &[u8], t: f64) -> (f64, f64, f64) {
    use crate::monitor::metrics::{at_threshold, auroc};
    let (ab, ac) = (auroc(base, labels).unwrap(), auroc(cand, labels).unwrap());
    let (tb, tc) = (at_threshold(base, labels, t), at_threshold(cand, labels, t));
    (ac - ab, tc.tpr - tb.tpr, tc.fpr - tb.fpr)
}

#[test]
fn the_whole_set_gives_the_exact_full_set_change() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let labels: Vec<u8> = (0..120).map(|i| (i % 3 == 0) as u8).collect();
    let base: Vec<f64> = labels
        .iter()
        .map(|&l| l as f64 + rng.random::<f64>())
        .collect();
    let cand: Vec<f64> = base
        .iter()
        .map(|s| s + rng.random::<f64>() * 0.6 - 0.3)
        .collect();
    let p = Paired {
        base: &base,
        cand: &cand,
        labels: &labels,
    };
    let b = bounds(&p, Thresholds::same(1.0), Population::of(&labels), 3.0).unwrap();
    let (da, dt, df) = full_change(&base, &cand, &labels, 1.0);
    for (i, x) in [(b.auroc, da), (b.tpr, dt), (b.fpr, df)] {
        assert!(
            (i.lo - x).abs() < 1e-12 && (i.hi - x).abs() < 1e-12,
            "{i:?} {x}"
        );
    }
}

/// One monitor (nothing to share alpha with): ten examples show no
/// change but cannot rule out one hidden in the rest; the whole set can.
#[test]
fn identical_scores_settle_healthy_once_enough_is_seen_and_not_before() {
    let first = identical_floor(170, 1);
    assert!(first > 10 && first < 170, "{first}");
}

/// The fewest examples of a balanced test set of `n` that can settle an
/// identical candidate (no score moves) healthy under the default
/// policy's alpha, correction over `monitors`, first look and batch.
fn identical_floor(n: usize, monitors: usize) -> usize {
    let labels: Vec<u8> = (0..n).map(|i| (i % 2) as u8).collect();
    let base: Vec<f64> = (0..n)
        .map(|i| (i % 2) as f64 + (i as f64 * 0.37).sin())
        .collect();
    let order = stratified_order(&labels, 7);
    let pop = Population::of(&labels);
    let z = look_z(
        0.05,
        Correction::Bonferroni,
        monitors,
        planned_looks(n, 40, 20),
    );
    let healthy_at = |k: usize| {
        let s: Vec<f64> = order[..k].iter().map(|&i| base[i]).collect();
        let l: Vec<u8> = order[..k].iter().map(|&i| labels[i]).collect();
        let p = Paired {
            base: &s,
            cand: &s,
            labels: &l,
        };
        bounds(&p, Thresholds::same(0.5), pop, z)
            .is_some_and(|b| settle(&b, 0.9, true, &limits()) == Settled::Healthy)
    };
    // Settling only gets easier with more examples: bisect.
    let (mut lo, mut hi) = (2, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if healthy_at(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// Why sequential revalidation cannot be cheap on the shipped test sets
/// (issue #18's 25% goal): to call a monitor healthy it must rule out a
/// few flips hidden in the unseen rest, and a flip is 1/60 of a rate on a
/// 120-example set, so even a candidate that changed nothing needs most
/// of the set. Measured with this function (18 monitors): 96 of 120,
/// 134 of 182, 232 of 400, 382 of 1,000, 502 of 2,000 examples.
#[test]
fn an_identical_candidate_needs_most_of_a_small_test_set_and_little_of_a_large_one() {
    let share = |n: usize| identical_floor(n, 18) as f64 / n as f64;
    // The v2 suites' test sets: 120 (refusal) to 182 (PII) examples.
    for n in [120, 182] {
        assert!(share(n) > 0.7, "{n}: {}", share(n));
    }
    assert!(share(400) < share(182));
    assert!(share(2000) < 0.3, "{}", share(2000));
}

#[test]
fn stratified_prefixes_keep_the_class_balance() {
    let labels: Vec<u8> = (0..100).map(|i| (i < 30) as u8).collect();
    let o = stratified_order(&labels, 3);
    let mut sorted = o.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    for k in [10, 20, 50] {
        let pos = o[..k].iter().filter(|&&i| labels[i] == 1).count();
        assert!((pos as f64 - 0.3 * k as f64).abs() <= 1.0, "{k}: {pos}");
    }
    assert_eq!(stratified_order(&labels, 3), o);
    assert_ne!(stratified_order(&labels, 4), o);
}

#[test]
fn looks_and_quantiles() {
    assert_eq!(planned_looks(170, 40, 20), 1 + 7);
    assert_eq!(planned_looks(30, 40, 20), 1);
    assert!((z_for(0.025) - 1.959964).abs() < 1e-5);
    assert!(look_z(0.05, Correction::Bonferroni, 18, 8) > look_z(0.05, Correction::None, 18, 8));
}

/// One synthetic monitor on a finite test set, with a drop built in.
struct World {
    labels: Vec<u8>,
    base: Vec<f64>,
    cand: Vec<f64>,
}

/// `kind`: 0 diffuse (every positive shifted down), 1 concentrated (a
/// few positives flipped far below), 2 negatives pushed over the threshold.
fn world(rng: &mut ChaCha8Rng, n: usize, kind: u8, strength: f64) -> World {
    let labels: Vec<u8> = (0..n).map(|i| (i % 2) as u8).collect();
    let base: Vec<f64> = labels
        .iter()
        .map(|&l| 1.4 * l as f64 + gauss(rng))
        .collect();
    let cand = base
        .iter()
        .zip(&labels)
        .map(|(&s, &l)| {
            let jitter = 0.05 * gauss(rng);
            match kind {
                0 if l == 1 => s - strength + jitter,
                1 if l == 1 && rng.random::<f64>() < strength => s - 4.0,
                2 if l == 0 && rng.random::<f64>() < strength => s + 3.0,
                _ => s + jitter,
            }
        })
        .collect();
    World { labels, base, cand }
}

fn gauss(rng: &mut ChaCha8Rng) -> f64 {
    let (u, v): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

/// Runs the rule over one world in a random order; the settled state
/// and the examples it took.
fn run(w: &World, seed: u64, alpha: f64, t: f64) -> (Settled, usize) {
    let (first, batch) = (40, 20);
    let n = w.labels.len();
    let z = look_z(alpha, Correction::None, 1, planned_looks(n, first, batch));
    let pop = Population::of(&w.labels);
    let order = stratified_order(&w.labels, seed);
    let mut k = first.min(n);
    loop {
        let idx = &order[..k];
        let pick = |v: &[f64]| idx.iter().map(|&i| v[i]).collect::<Vec<_>>();
        let (b, c) = (pick(&w.base), pick(&w.cand));
        let l: Vec<u8> = idx.iter().map(|&i| w.labels[i]).collect();
        let p = Paired {
            base: &b,
            cand: &c,
            labels: &l,
        };
        let s = bounds(&p, Thresholds::same(t), pop, z)
            .map_or(Settled::Open, |bd| settle(&bd, 0.9, true, &limits()));
        if s != Settled::Open || k == n {
            return (s, k);
        }
        k = (k + batch).min(n);
    }
}

fn truly_stale(w: &World, t: f64) -> bool {
    let (da, dt, df) = full_change(&w.base, &w.cand, &w.labels, t);
    let lim = limits();
    da <= -lim.max_auroc_drop
        || df > lim.max_fpr_increase
        || -dt > lim.max_tpr_drop
        || (dt - df) / 2.0 < -lim.max_balanced_accuracy_drop
}

/// The error rate the policy states: among monitors whose full-set
/// change is past a limit (built just past it, where the rule is most
/// easily fooled), the share settled healthy stays under alpha.
#[test]
fn false_healthy_rate_stays_under_alpha_by_simulation() {
    let alpha = 0.05;
    let t = 0.7;
    let mut rng = ChaCha8Rng::seed_from_u64(20261201);
    for (kind, strength) in [(0u8, 0.22), (1, 0.06), (1, 0.12), (2, 0.07)] {
        let (mut stale_worlds, mut false_healthy, mut used) = (0, 0, 0);
        // Worlds built near the boundary; only those truly past it count.
        for trial in 0..4000 {
            if stale_worlds == 200 {
                break;
            }
            let w = world(&mut rng, 170, kind, strength);
            if !truly_stale(&w, t) {
                continue;
            }
            stale_worlds += 1;
            let (s, k) = run(&w, trial, alpha, t);
            used += k;
            false_healthy += (s == Settled::Healthy) as usize;
        }
        assert!(
            stale_worlds >= 100,
            "kind {kind}: only {stale_worlds} stale worlds"
        );
        let rate = false_healthy as f64 / stale_worlds as f64;
        assert!(
                rate <= alpha,
                "kind {kind} strength {strength}: false-healthy {false_healthy}/{stale_worlds} = {rate:.3} > {alpha}"
            );
        eprintln!(
                "kind {kind} strength {strength}: false-healthy {false_healthy}/{stale_worlds}, mean examples {:.0}",
                used as f64 / stale_worlds as f64
            );
    }
}

/// And the rule is worth having: clearly healthy and clearly broken
/// monitors settle well before the whole set, and the other way round
/// errors (healthy monitors called stale) stay under alpha too.
#[test]
fn clear_cases_settle_early_and_false_stale_stays_under_alpha() {
    let alpha = 0.05;
    let t = 0.7;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (mut healthy_used, mut false_stale, mut healthy_worlds) = (0, 0, 0);
    let (mut broken_used, mut broken_worlds) = (0, 0);
    for trial in 0..200 {
        let calm = world(&mut rng, 400, 0, 0.0);
        if !truly_stale(&calm, t) {
            healthy_worlds += 1;
            let (s, k) = run(&calm, trial, alpha, t);
            healthy_used += k;
            false_stale += (s == Settled::Stale) as usize;
        }
        let broken = world(&mut rng, 400, 0, 1.0);
        if truly_stale(&broken, t) {
            broken_worlds += 1;
            let (s, k) = run(&broken, trial, alpha, t);
            assert_eq!(s, Settled::Stale);
            broken_used += k;
        }
    }
    let mean_h = healthy_used as f64 / healthy_worlds as f64;
    let mean_b = broken_used as f64 / broken_worlds as f64;
    eprintln!("healthy: mean {mean_h:.0} of 400; broken: mean {mean_b:.0} of 400");
    assert!((false_stale as f64) <= alpha * healthy_worlds as f64);
    assert!(mean_h < 0.75 * 400.0, "{mean_h}");
    assert!(mean_b < 0.25 * 400.0, "{mean_b}");
}
