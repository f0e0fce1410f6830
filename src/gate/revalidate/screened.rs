//! Screened revalidation: every example of a concept's test set runs
//! through base and candidate *before any label is read*, and labels are
//! then read only where they can move a bound.
//!
//! Why it works: whether a monitor's decision flips at its threshold, and
//! which pairs of examples swap order, is read off the two models' scores
//! alone. The policy's metrics change only through those: ΔTPR and ΔFPR
//! through flipped examples (each counts for its class), ΔAUROC through
//! swapped positive–negative pairs. So with some labels read, the full-set
//! change is known exactly on the labeled part, and the unlabeled part can
//! move it at most as far as its flips and swaps allow, whichever class
//! each unlabeled example turns out to be. These bounds are worst cases,
//! not confidence intervals: no error rate, no correction across the suite
//! or the looks, and no sampling assumption, so the labels can be read in
//! any order. They are read most-influential first ([`influence`]): an
//! example no monitor's decision or ranking moved on can never change a
//! figure, and is never worth a label.
//!
//! What it costs: the whole test set's forward passes for every concept it
//! screens (the base side from the activation cache after the first run),
//! where [`super::sequential`] runs only the examples it labels. What it
//! saves: the labels a sampling bound spends ruling out changes hidden in
//! the examples it has not seen, which on sets of 120–182 is most of them.

use crate::gate::policy::MetricLimits;

use super::sequential::{psi, Bounds, Interval, Population, Thresholds};

/// How a pair's order changed: ψ(candidate) − ψ(base) for `i` above `j`.
fn swap(base: &[f64], cand: &[f64], i: usize, j: usize) -> f64 {
    psi(cand[i], cand[j]) - psi(base[i], base[j])
}

/// Each example's decision change at the thresholds: +1 up, −1 down, 0.
fn flips(base: &[f64], cand: &[f64], t: Thresholds) -> Vec<i32> {
    base.iter()
        .zip(cand)
        .map(|(b, c)| i32::from(*c >= t.cand) - i32::from(*b >= t.base))
        .collect()
}

fn interval(lo: f64, hi: f64) -> Interval {
    let (lo, hi) = (lo.max(-1.0), hi.min(1.0));
    Interval {
        // Exact once nothing is unknown; otherwise the middle of what is possible.
        estimate: (lo + hi) / 2.0,
        lo,
        hi,
    }
}

/// Worst-case bounds on the full-set changes of one monitor, from its
/// scores on every example through both models (`base`, `cand`, in the test
/// set's order) and the labels of the examples marked `known`. `None` when
/// the test set lacks a class.
pub fn bounds(
    base: &[f64],
    cand: &[f64],
    labels: &[u8],
    known: &[bool],
    t: Thresholds,
) -> Option<Bounds> {
    let pop = Population::of(labels);
    let (p, q) = (pop.positives as f64, pop.negatives as f64);
    if pop.positives == 0 || pop.negatives == 0 {
        return None;
    }
    let n = base.len();
    let pos = |i: usize| labels[i] == 1;
    let kpos: Vec<usize> = (0..n).filter(|&i| known[i] && pos(i)).collect();
    let kneg: Vec<usize> = (0..n).filter(|&i| known[i] && !pos(i)).collect();
    let unknown: Vec<usize> = (0..n).filter(|&i| !known[i]).collect();

    // ΔAUROC · PQ = Σ over positive i, negative j of swap(i, j).
    let mut exact = 0.0;
    for &i in &kpos {
        for &j in &kneg {
            exact += swap(base, cand, i, j);
        }
    }
    let (mut lo, mut hi) = (exact, exact);
    for (a, &u) in unknown.iter().enumerate() {
        // With the labeled examples: as a positive or as a negative.
        let as_pos: f64 = kneg.iter().map(|&j| swap(base, cand, u, j)).sum();
        let as_neg: f64 = kpos.iter().map(|&i| swap(base, cand, i, u)).sum();
        lo += as_pos.min(as_neg);
        hi += as_pos.max(as_neg);
        // With another unlabeled one: counted only if they differ in class,
        // with either sign.
        let between: f64 = unknown[a + 1..]
            .iter()
            .map(|&v| swap(base, cand, u, v).abs())
            .sum();
        lo -= between;
        hi += between;
    }
    let auroc = interval(lo / (p * q), hi / (p * q));

    let f = flips(base, cand, t);
    let known_sum = |class: bool| -> f64 {
        (0..n)
            .filter(|&i| known[i] && pos(i) == class)
            .map(|i| f64::from(f[i]))
            .sum()
    };
    let (kt, kf) = (known_sum(true), known_sum(false));
    let (mut down, mut up) = (0.0, 0.0);
    let known_ba = kt / (2.0 * p) - kf / (2.0 * q);
    let (mut ba_lo, mut ba_hi) = (known_ba, known_ba);
    for &u in &unknown {
        let fu = f64::from(f[u]);
        down += fu.min(0.0);
        up += fu.max(0.0);
        // A flip counts for TPR as a positive, against FPR as a negative.
        let (as_pos, as_neg) = (fu / (2.0 * p), -fu / (2.0 * q));
        ba_lo += as_pos.min(as_neg);
        ba_hi += as_pos.max(as_neg);
    }
    Some(Bounds {
        auroc,
        tpr: interval((kt + down) / p, (kt + up) / p),
        fpr: interval((kf + down) / q, (kf + up) / q),
        balanced_accuracy: interval(ba_lo, ba_hi),
    })
}

/// How far each example's unknown label can move one monitor's bounds,
/// each metric's reach as a share of its limit: a decision flip moves TPR,
/// FPR and balanced accuracy, a swapped pair moves AUROC. Label-free.
fn reach(
    base: &[f64],
    cand: &[f64],
    t: Thresholds,
    pop: Population,
    lim: &MetricLimits,
) -> Vec<f64> {
    let (p, q) = (pop.positives.max(1) as f64, pop.negatives.max(1) as f64);
    let limit = |x: f64| x.max(1e-9);
    let flip_reach = 1.0 / (p * limit(lim.max_tpr_drop))
        + 1.0 / (q * limit(lim.max_fpr_increase))
        + (1.0 / (2.0 * p) + 1.0 / (2.0 * q)) / limit(lim.max_balanced_accuracy_drop);
    let f = flips(base, cand, t);
    (0..base.len())
        .map(|u| {
            let swaps: f64 = (0..base.len())
                .filter(|&v| v != u)
                .map(|v| swap(base, cand, u, v).abs())
                .sum();
            f64::from(f[u].abs()) * flip_reach + swaps / (p * q * limit(lim.max_auroc_drop))
        })
        .collect()
}

/// Every example's influence on the monitors still open (`scores`: each
/// one's base and candidate scores on every example, and its thresholds):
/// the sum of its reach over them.
pub fn influence(
    scores: &[(&[f64], &[f64], Thresholds)],
    pop: Population,
    lim: &MetricLimits,
) -> Vec<f64> {
    let n = scores.first().map_or(0, |s| s.0.len());
    let mut out = vec![0.0; n];
    for (b, c, t) in scores {
        for (o, r) in out.iter_mut().zip(reach(b, c, *t, pop, lim)) {
            *o += r;
        }
    }
    out
}

/// The examples of `unread` (in their fallback order: the seeded
/// stratified one) sorted most influential first; ties keep that order.
pub fn most_influential_first(unread: &mut [usize], influence: &[f64]) {
    unread.sort_by(|a, b| influence[*b].total_cmp(&influence[*a]));
}

#[cfg(test)]
mod tests;
