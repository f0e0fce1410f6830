//! Sequential revalidation: a concept's labeled test set is consumed in
//! small batches, and after each one every monitor still unsettled gets
//! confidence bounds on the *paired* change (the same examples through base
//! and candidate) of each metric the policy limits. A monitor is settled
//! healthy when every bound is inside its limit, stale when one is clearly
//! past it; only unsettled monitors ask for more examples.
//!
//! What the bounds are about: the metric a full revalidation would compute
//! on the whole test set. The test set is a finite population sampled
//! without replacement, so every interval carries the finite-population
//! correction and collapses to the exact full-set figure once the whole
//! set is consumed: sequential revalidation run to the end is full
//! revalidation.
//!
//! Error rates: a monitor whose full-set change is past a limit is settled
//! healthy with probability at most `alpha` (per monitor, or per suite with
//! the Bonferroni correction), and symmetrically for stale. Each look spends
//! an equal share of `alpha` (Bonferroni over the planned looks: valid under
//! optional stopping, at the price of some width), and tests in
//! `tests/` below check the false-healthy rate by simulation.
//!
//! The bounds: ΔAUROC by DeLong's paired variance plus, for changes carried
//! by a few examples not yet drawn, a Wilson zero-count term (a rare
//! catastrophic flip is what a normal approximation misses); ΔTPR and ΔFPR
//! by Wilson intervals on the down and up flips at the monitor's threshold;
//! Δbalanced accuracy from those two.
//!
//! What it can save is set by the test set's size: ruling out a handful of
//! flips among the unseen examples takes most of a set of 120 (96 examples
//! for a candidate that changed nothing, at the default policy's alpha over
//! 18 monitors), 38% of a set of 1,000 and 25% of 2,000 (the test
//! `an_identical_candidate_needs_most_of_a_small_test_set...`).

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

use crate::gate::policy::{Correction, MetricLimits, RevalidationPolicy};

/// A bound on the full-set change (candidate − base) of one metric.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The paired estimate from the examples seen.
    pub estimate: f64,
    pub lo: f64,
    pub hi: f64,
}

impl Bounds {
    /// Every change exactly zero (a candidate that runs its base's forward pass).
    pub fn zero() -> Self {
        let z = Interval::point(0.0);
        Bounds {
            auroc: z,
            balanced_accuracy: z,
            tpr: z,
            fpr: z,
        }
    }
}

impl Interval {
    fn point(x: f64) -> Self {
        Interval {
            estimate: x,
            lo: x,
            hi: x,
        }
    }
}

/// Bounds on every metric the policy limits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bounds {
    pub auroc: Interval,
    pub balanced_accuracy: Interval,
    pub tpr: Interval,
    pub fpr: Interval,
}

/// The same examples' scores through base and candidate.
pub struct Paired<'a> {
    pub base: &'a [f64],
    pub cand: &'a [f64],
    pub labels: &'a [u8],
}

/// The whole test set's class sizes (the population the bounds are about).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Population {
    pub positives: usize,
    pub negatives: usize,
}

impl Population {
    pub fn of(labels: &[u8]) -> Self {
        let positives = labels.iter().filter(|&&l| l == 1).count();
        Population {
            positives,
            negatives: labels.len() - positives,
        }
    }

    pub fn total(&self) -> usize {
        self.positives + self.negatives
    }
}

/// The one-sided normal quantile for an error rate `alpha` (0 < alpha < 1).
pub fn z_for(alpha: f64) -> f64 {
    let a = alpha.clamp(1e-12, 0.5);
    Normal::standard().inverse_cdf(1.0 - a)
}

/// The effective sample size of `k` draws without replacement from `big`:
/// the finite-population correction folded into n, so `k == big` is exact.
fn n_eff(k: usize, big: usize) -> f64 {
    if k >= big {
        f64::INFINITY
    } else {
        k as f64 / (1.0 - k as f64 / big as f64)
    }
}

/// Wilson score interval for a proportion seen as `hits` of `k` draws from
/// `big`, with the finite-population correction, at quantile `z`; clipped to
/// what the unseen remainder can still make of the full-set proportion.
fn wilson(hits: usize, k: usize, big: usize, z: f64) -> (f64, f64) {
    if big == 0 {
        return (0.0, 0.0);
    }
    let bigf = big as f64;
    // What the full set's proportion can be whatever the unseen examples are.
    let hard_lo = hits as f64 / bigf;
    let hard_hi = (hits + big.saturating_sub(k)) as f64 / bigf;
    if k == 0 {
        return (hard_lo, hard_hi);
    }
    let n = n_eff(k, big);
    if !n.is_finite() {
        return (hard_lo, hard_lo);
    }
    let p = hits as f64 / k as f64;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let hw = z / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    (
        (centre - hw).clamp(hard_lo, hard_hi),
        (centre + hw).clamp(hard_lo, hard_hi),
    )
}

/// The paired change of the rate of `score ≥ t` on one class: flips down
/// (base yes, candidate no) and up, each bounded by Wilson at `z`.
fn rate_change(base: &[f64], cand: &[f64], t: Thresholds, big: usize, z: f64) -> Interval {
    let k = base.len();
    let (mut up, mut down) = (0usize, 0usize);
    for (b, c) in base.iter().zip(cand) {
        match (*b >= t.base, *c >= t.cand) {
            (true, false) => down += 1,
            (false, true) => up += 1,
            _ => {}
        }
    }
    let estimate = if k == 0 {
        0.0
    } else {
        (up as f64 - down as f64) / k as f64
    };
    let (up_lo, up_hi) = wilson(up, k, big, z);
    let (down_lo, down_hi) = wilson(down, k, big, z);
    if k >= big {
        return Interval::point(estimate);
    }
    Interval {
        estimate,
        lo: up_lo - down_hi,
        hi: up_hi - down_lo,
    }
}

/// `x > y` as a Mann–Whitney count (ties count half).
pub(super) fn psi(x: f64, y: f64) -> f64 {
    if x > y {
        1.0
    } else if x == y {
        0.5
    } else {
        0.0
    }
}

/// Sample variance (n − 1 denominator); 0 for fewer than two values.
fn variance(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = v.iter().sum::<f64>() / v.len() as f64;
    v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64
}

/// The paired change in AUROC: DeLong's structural components of both
/// models' scores, their differences' variance per class with the
/// finite-population correction, plus the zero-count term.
fn auroc_change(p: &Paired, pop: Population, z: f64) -> Option<Interval> {
    let pos: Vec<usize> = (0..p.labels.len()).filter(|&i| p.labels[i] == 1).collect();
    let neg: Vec<usize> = (0..p.labels.len()).filter(|&i| p.labels[i] != 1).collect();
    if pos.is_empty() || neg.is_empty() {
        return None;
    }
    let (m, n) = (pos.len() as f64, neg.len() as f64);
    let mut d10 = vec![0.0; pos.len()];
    let mut d01 = vec![0.0; neg.len()];
    for (a, &i) in pos.iter().enumerate() {
        for (b, &j) in neg.iter().enumerate() {
            let d = psi(p.cand[i], p.cand[j]) - psi(p.base[i], p.base[j]);
            d10[a] += d / n;
            d01[b] += d / m;
        }
    }
    let estimate = d10.iter().sum::<f64>() / m;
    let fpc = |k: f64, big: usize| (1.0 - k / big.max(1) as f64).max(0.0);
    let (fp, fn_) = (fpc(m, pop.positives), fpc(n, pop.negatives));
    if fp == 0.0 && fn_ == 0.0 {
        return Some(Interval::point(estimate));
    }
    let var = variance(&d10) / m * fp + variance(&d01) / n * fn_;
    // A change carried by a few examples not yet drawn shows no variance in
    // the sample: bound it as Wilson bounds a rate seen zero times in the
    // scarcer class (a catastrophic flip moves ΔAUROC by up to 1/class size).
    let k_eff = n_eff(pos.len(), pop.positives).min(n_eff(neg.len(), pop.negatives));
    let unseen = if k_eff.is_finite() {
        z * z / (k_eff + z * z)
    } else {
        0.0
    };
    let hw = z * var.sqrt() + unseen;
    Some(Interval {
        estimate,
        lo: (estimate - hw).max(-1.0),
        hi: (estimate + hw).min(1.0),
    })
}

/// Where each side's scores are cut: the base side at the original
/// monitor's threshold (the one its recorded base rates were measured at),
/// the candidate side at the threshold of the monitor being judged, which
/// recalibration and retraining move.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub base: f64,
    pub cand: f64,
}

impl Thresholds {
    /// Revalidation: the same monitor, so the same threshold, on both sides.
    pub fn same(t: f64) -> Self {
        Thresholds { base: t, cand: t }
    }
}

/// Bounds on the full-set changes, from the examples seen so far; `None`
/// until both classes have been seen.
pub fn bounds(p: &Paired, threshold: Thresholds, pop: Population, z: f64) -> Option<Bounds> {
    let auroc = auroc_change(p, pop, z)?;
    let split = |want: u8| -> (Vec<f64>, Vec<f64>) {
        p.labels
            .iter()
            .enumerate()
            .filter(|(_, &l)| (l == 1) == (want == 1))
            .map(|(i, _)| (p.base[i], p.cand[i]))
            .unzip()
    };
    let (pb, pc) = split(1);
    let (nb, nc) = split(0);
    // Two Wilson bounds make each rate's interval: each gets half the error.
    let z2 = z_for((1.0 - Normal::standard().cdf(z)) / 2.0);
    let tpr = rate_change(&pb, &pc, threshold, pop.positives, z2);
    let fpr = rate_change(&nb, &nc, threshold, pop.negatives, z2);
    let balanced_accuracy = Interval {
        estimate: (tpr.estimate - fpr.estimate) / 2.0,
        lo: (tpr.lo - fpr.hi) / 2.0,
        hi: (tpr.hi - fpr.lo) / 2.0,
    };
    Some(Bounds {
        auroc,
        balanced_accuracy,
        tpr,
        fpr,
    })
}

/// Where a monitor stands after a look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Settled {
    /// Every bound inside its limit.
    Healthy,
    /// A bound clearly past a limit.
    Stale,
    /// Neither yet: more examples needed.
    Open,
}

/// Same tolerance as [`super::stale_reasons`]: a drop of exactly the limit counts.
const EPS: f64 = 1e-12;

/// Judges bounds against the policy's limits. `base_auroc` is the figure
/// the monitor records for its base; `floor` says whether `min_auroc`
/// applies to it ([`super::floor_applies`]): without it, only the drops
/// count, as in `stale_reasons`.
pub fn settle(b: &Bounds, base_auroc: f64, floor: bool, lim: &MetricLimits) -> Settled {
    let stale = ranking_settled_stale(b, base_auroc, floor, lim)
        || b.balanced_accuracy.hi < -lim.max_balanced_accuracy_drop
        || b.fpr.lo > lim.max_fpr_increase
        || -b.tpr.hi > lim.max_tpr_drop;
    if stale {
        return Settled::Stale;
    }
    let healthy = b.auroc.lo > -lim.max_auroc_drop + EPS
        && (!floor || base_auroc + b.auroc.lo >= lim.min_auroc)
        && b.balanced_accuracy.lo >= -lim.max_balanced_accuracy_drop
        && b.fpr.hi <= lim.max_fpr_increase
        && -b.tpr.lo <= lim.max_tpr_drop;
    if healthy {
        Settled::Healthy
    } else {
        Settled::Open
    }
}

/// Whether the AUROC bound alone is clearly past its limits (the drop, or
/// the `min_auroc` floor when it applies): stale at any threshold, since a
/// threshold does not move AUROC. [`settle`]'s first test.
pub fn ranking_settled_stale(b: &Bounds, base_auroc: f64, floor: bool, lim: &MetricLimits) -> bool {
    b.auroc.hi <= -lim.max_auroc_drop + EPS || (floor && base_auroc + b.auroc.hi < lim.min_auroc)
}

/// Why a monitor stopped asking for examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    /// Settled healthy: every bound inside its limit.
    Healthy,
    /// Settled stale: a bound clearly past a limit.
    Stale,
    /// The whole test set was used: the figures are exact.
    WholeSet,
    /// The example budget ran out with the monitor unsettled (unverified).
    Budget,
    /// The seconds budget ran out with the monitor unsettled (unverified).
    Seconds,
    /// Not looked at further: a monitor already settled stale was beyond
    /// repair, so the verdict was fail whatever this one would show
    /// (`budget.stop_at_verdict`).
    Decided,
    /// Not looked at: the candidate runs the very forward pass of its base
    /// (the same forward identity: weights, config, tokenizer, adapter
    /// scales), so every example's score is the base's and every change is
    /// exactly zero.
    SameForward,
}

/// What sequential revalidation did for one monitor (report.json's
/// `monitors[].sequential`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// Labeled examples it was judged on, of the concept's `of`.
    pub examples: usize,
    pub of: usize,
    /// The bounds reached at the last look (absent before both classes were seen).
    pub bounds: Option<Bounds>,
    /// The one-sided quantile each look used (alpha shared over suite and looks).
    pub z: f64,
    pub stopped: Stop,
}

/// The quantile every look at a concept of `n` test examples uses under
/// `rp`, over a suite of `monitors`: [`look_z`] at the concept's
/// [`planned_looks`].
pub fn concept_z(rp: &RevalidationPolicy, monitors: usize, n: usize) -> f64 {
    look_z(
        rp.alpha,
        rp.correction,
        monitors,
        planned_looks(n, rp.first_look, rp.batch),
    )
}

/// The quantile each look uses: `alpha` shared over the suite (per
/// `correction`) and over the `looks` planned for the concept.
pub fn look_z(alpha: f64, correction: Correction, monitors: usize, looks: usize) -> f64 {
    let per_monitor = match correction {
        Correction::None => alpha,
        Correction::Bonferroni => alpha / monitors.max(1) as f64,
    };
    z_for(per_monitor / looks.max(1) as f64)
}

/// Looks planned for a set of `n` examples: the first look after `first`,
/// then one per `batch`.
pub fn planned_looks(n: usize, first: usize, batch: usize) -> usize {
    let first = first.min(n).max(1);
    1 + n.saturating_sub(first).div_ceil(batch.max(1))
}

/// The order a test set is consumed in: positives and negatives each
/// shuffled by `seed`, then interleaved so every prefix keeps the set's
/// class balance (a look never lacks a class it could have had).
pub fn stratified_order(labels: &[u8], seed: u64) -> Vec<usize> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut pos: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == 1).collect();
    let mut neg: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] != 1).collect();
    pos.shuffle(&mut rng);
    neg.shuffle(&mut rng);
    let (np, nn) = (pos.len(), neg.len());
    let mut out = Vec::with_capacity(labels.len());
    let (mut a, mut b) = (0, 0);
    while a < np || b < nn {
        // Take from the class furthest behind its share.
        let take_pos =
            b >= nn || (a < np && (a as f64 + 0.5) / np as f64 <= (b as f64 + 0.5) / nn as f64);
        if take_pos {
            out.push(pos[a]);
            a += 1;
        } else {
            out.push(neg[b]);
            b += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests;
