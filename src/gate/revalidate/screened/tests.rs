use super::*;
use crate::gate::revalidate::sequential::{self, settle, Paired, Settled};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn limits() -> MetricLimits {
    crate::gate::policy::Policy::shipped_default().metrics
}

/// The full-set changes, computed with every label: sequential bounds
/// over the whole set are exact.
fn exact(base: &[f64], cand: &[f64], labels: &[u8], t: Thresholds) -> Bounds {
    let p = Paired { base, cand, labels };
    sequential::bounds(&p, t, Population::of(labels), 3.0).expect("both classes")
}

fn scores(rng: &mut ChaCha8Rng, labels: &[u8], noise: f64) -> (Vec<f64>, Vec<f64>) {
    let base: Vec<f64> = labels
        .iter()
        .map(|&l| 0.3 * l as f64 + 0.35 + 0.3 * rng.random::<f64>())
        .collect();
    let cand = base
        .iter()
        .map(|b| {
            if rng.random::<f64>() < 0.4 {
                b + noise * (rng.random::<f64>() - 0.5)
            } else {
                *b
            }
        })
        .collect();
    (base, cand)
}

#[test]
fn with_every_label_read_the_bounds_are_the_exact_changes() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let labels: Vec<u8> = (0..60).map(|i| (i % 3 == 0) as u8).collect();
    let (base, cand) = scores(&mut rng, &labels, 0.6);
    let t = Thresholds::same(0.5);
    let b = bounds(&base, &cand, &labels, &[true; 60], t).unwrap();
    let e = exact(&base, &cand, &labels, t);
    for (got, want) in [
        (b.auroc, e.auroc),
        (b.tpr, e.tpr),
        (b.fpr, e.fpr),
        (b.balanced_accuracy, e.balanced_accuracy),
    ] {
        assert!((got.lo - want.estimate).abs() < 1e-12, "{got:?} {want:?}");
        assert!((got.hi - want.estimate).abs() < 1e-12, "{got:?} {want:?}");
    }
}

/// The bounds hold whatever the unread labels are: every labeling of the
/// unread examples with the test set's class sizes (the true one among
/// them) lands inside them, for random scores and random sets read.
#[test]
fn no_labeling_of_the_unread_examples_escapes_the_bounds() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for case in 0..40 {
        let n = 10;
        let labels: Vec<u8> = (0..n).map(|i| u8::from(i < 4)).collect();
        let (base, cand) = scores(&mut rng, &labels, 0.8);
        let known: Vec<bool> = (0..n).map(|_| rng.random::<f64>() < 0.5).collect();
        let t = Thresholds::same(0.5);
        let b = bounds(&base, &cand, &labels, &known, t).unwrap();
        let unread: Vec<usize> = (0..n).filter(|&i| !known[i]).collect();
        let read_pos = (0..n).filter(|&i| known[i] && labels[i] == 1).count();
        let mut seen_truth = false;
        for mask in 0u32..(1 << unread.len()) {
            if read_pos + mask.count_ones() as usize != 4 {
                continue;
            }
            let mut l = labels.clone();
            for (k, &u) in unread.iter().enumerate() {
                l[u] = u8::from(mask & (1 << k) != 0);
            }
            seen_truth |= l == labels;
            let e = exact(&base, &cand, &l, t);
            for (name, got, want) in [
                ("auroc", b.auroc, e.auroc),
                ("tpr", b.tpr, e.tpr),
                ("fpr", b.fpr, e.fpr),
                ("ba", b.balanced_accuracy, e.balanced_accuracy),
            ] {
                assert!(
                    got.lo - 1e-12 <= want.estimate && want.estimate <= got.hi + 1e-12,
                    "case {case}: {name} {} outside [{}, {}]",
                    want.estimate,
                    got.lo,
                    got.hi
                );
            }
        }
        assert!(
            seen_truth,
            "case {case}: the true labeling was not enumerated"
        );
    }
}

/// A candidate that moved no decision and swapped no pair is settled
/// healthy with no label read: nothing unread can change a figure.
#[test]
fn an_unchanged_ranking_needs_no_label() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let labels: Vec<u8> = (0..180).map(|i| (i % 2) as u8).collect();
    let base: Vec<f64> = labels
        .iter()
        .map(|&l| 0.4 * l as f64 + 0.3 * rng.random::<f64>())
        .collect();
    // A monotone change: every score moves, no order and no cut changes.
    let cand: Vec<f64> = base.iter().map(|s| s * 0.999 + 0.0001).collect();
    let t = Thresholds::same(0.37);
    assert!(base
        .iter()
        .zip(&cand)
        .all(|(b, c)| (*b >= 0.37) == (*c >= 0.37)));
    let b = bounds(&base, &cand, &labels, &[false; 180], t).unwrap();
    assert_eq!(
        (b.auroc.lo, b.auroc.hi, b.fpr.hi, b.tpr.lo),
        (0.0, 0.0, 0.0, 0.0)
    );
    assert_eq!(settle(&b, 0.9, true, &limits()), Settled::Healthy);
}

/// A monitor whose decisions flip on a tenth of the negatives is settled
/// stale once those flips are read, whatever the rest are.
#[test]
fn flips_read_first_settle_a_broken_monitor() {
    let labels: Vec<u8> = (0..100).map(|i| u8::from(i < 50)).collect();
    let base: Vec<f64> = (0..100)
        .map(|i| if i < 50 { 0.8 } else { 0.2 } + i as f64 * 1e-4)
        .collect();
    let mut cand = base.clone();
    for c in cand.iter_mut().skip(50).take(10) {
        *c += 0.5; // ten negatives now fire
    }
    let t = Thresholds::same(0.5);
    let pop = Population::of(&labels);
    let inf = influence(&[(&base, &cand, t)], pop, &limits());
    let mut order: Vec<usize> = (0..100).collect();
    most_influential_first(&mut order, &inf);
    let mut first: Vec<usize> = order[..10].to_vec();
    first.sort_unstable();
    assert_eq!(first, (50..60).collect::<Vec<_>>());
    let mut known = vec![false; 100];
    for &i in &order[..10] {
        known[i] = true;
    }
    let b = bounds(&base, &cand, &labels, &known, t).unwrap();
    assert!((b.fpr.lo - 0.2).abs() < 1e-12, "{b:?}");
    assert_eq!(settle(&b, 0.9, true, &limits()), Settled::Stale);
    // Before they are read, the same flips could be positives' gains.
    let none = bounds(&base, &cand, &labels, &[false; 100], t).unwrap();
    assert_eq!(settle(&none, 0.9, true, &limits()), Settled::Open);
}
