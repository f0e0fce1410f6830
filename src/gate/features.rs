//! Pre-deployment features per (monitor, candidate): what the risk stage
//! reads to predict which monitors go stale, before any labeled data is spent.
//!
//! | feature | from | cost |
//! | --- | --- | --- |
//! | depth_fraction, base_auroc, weight_norm | the monitor file | free |
//! | change_below, max_stable_rank, family | the diff | one streamed pass over both checkpoints |
//! | act_cosine, projected_shift, score_ks, flip_rate | activations on the unlabeled corpus | two forward passes to the monitor's block (the base side is cached) |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::activations::cache::{cached_activations, ActCache, ActSpec};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::gate::diff::{DiffReport, Family};
use crate::gate::prepare::{Prepared, Progress};
use crate::model::{Pool, Precision};
use crate::monitor::{self as mon, Monitor};

/// Paired corpus activations (base rows, candidate rows: the same prompts)
/// per (pooling, block): the features read them, and realignment fits its
/// maps on them.
#[derive(Default)]
pub struct PairedActs(BTreeMap<(Pool, usize), Paired>);

/// The same prompts' pooled activations through both models, row for row.
pub struct Paired {
    pub base: Vec<Vec<f32>>,
    pub cand: Vec<Vec<f32>>,
}

impl PairedActs {
    fn key(pool: Pool, layer: usize) -> (Pool, usize) {
        (pool, layer)
    }

    /// The rows at `m`'s block and pooling.
    pub fn at(&self, m: &Monitor) -> Result<&Paired> {
        self.0
            .get(&Self::key(m.meta.pooling, m.meta.hook.layer))
            .ok_or_else(|| {
                Error::Usage(format!(
                    "no corpus activations at block {}",
                    m.meta.hook.layer
                ))
            })
    }
}

/// The corpus through both models at every block a monitor reads, each
/// pooling once (the base side comes from the cache after the first run).
pub fn corpus_activations(
    p: &Prepared,
    monitors: &[Monitor],
    cache: &ActCache,
    progress: Progress,
) -> Result<PairedActs> {
    let mut out = PairedActs::default();
    let total = 2 * p.corpus.len() * mon::by_pooling(monitors).len();
    let mut seen = 0;
    for (pool, _, layers) in mon::by_pooling(monitors) {
        let spec = ActSpec {
            pool,
            precision: Precision::F32,
            batch_size: crate::util::DEFAULT_BATCH_SIZE,
        };
        let mut pass = |ck: &Checkpoint| {
            cached_activations(ck, cache, &p.corpus, &layers, spec, &mut |n| {
                seen += n;
                progress("corpus activations", seen, total)
            })
        };
        let ab = pass(&p.base)?;
        let ac = pass(&p.cand)?;
        for &l in &layers {
            out.0.insert(
                PairedActs::key(pool, l),
                Paired {
                    base: ab[&l].to_vec2::<f32>()?,
                    cand: ac[&l].to_vec2::<f32>()?,
                },
            );
        }
    }
    Ok(out)
}

/// Every monitor's features, by monitor name.
pub fn features(
    monitors: &[Monitor],
    diff: &DiffReport,
    acts: &PairedActs,
) -> Result<BTreeMap<String, MonitorFeatures>> {
    monitors
        .iter()
        .map(|m| {
            let p = acts.at(m)?;
            Ok((
                m.meta.name.clone(),
                monitor_features(m, diff, &p.base, &p.cand)?,
            ))
        })
        .collect()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MonitorFeatures {
    pub monitor: String,
    pub concept: String,
    pub layer: usize,
    /// (layer + 1) / num_layers
    pub depth_fraction: f64,
    pub base_auroc: f64,
    /// ‖w / std‖: the probe's sensitivity to raw activation change.
    pub weight_norm: f64,
    pub family: Family,
    /// RMS ‖ΔW‖/‖W‖ over tensors in blocks at or below the monitor's block.
    pub change_below: f64,
    pub max_stable_rank: f64,
    /// Mean cosine between base and candidate activations at the block.
    pub act_cosine: f64,
    /// (mean candidate logit − mean base logit) / std of base logits.
    pub projected_shift: f64,
    /// Two-sample Kolmogorov–Smirnov statistic between base and candidate scores.
    pub score_ks: f64,
    /// Share of prompts whose decision at the monitor's threshold flips.
    pub flip_rate: f64,
    /// Mean |base logit − threshold logit| / std of base logits.
    pub base_margin: f64,
}

/// Cosine similarity in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        ab += *x as f64 * *y as f64;
        aa += *x as f64 * *x as f64;
        bb += *y as f64 * *y as f64;
    }
    ab / (aa.sqrt() * bb.sqrt()).max(1e-30)
}

/// Two-sample KS statistic.
pub fn ks_statistic(a: &[f64], b: &[f64]) -> f64 {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs());
    }
    d
}

fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    (p / (1.0 - p)).ln()
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let s = (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n).sqrt();
    (m, s.max(1e-12))
}

/// Features of one monitor from the diff and paired activations at its block
/// (`base`, `cand`: rows are the same prompts through both models).
pub fn monitor_features(
    m: &Monitor,
    diff: &DiffReport,
    base: &[Vec<f32>],
    cand: &[Vec<f32>],
) -> Result<MonitorFeatures> {
    if base.len() != cand.len() || base.is_empty() {
        return Err(Error::Usage(
            "features need the same, non-empty prompts through both models".into(),
        ));
    }
    let layer = m.meta.hook.layer;
    let (w, b) = m.folded();
    let z = |r: &Vec<f32>| r.iter().zip(&w).map(|(x, w)| *x as f64 * w).sum::<f64>() + b;
    let zb: Vec<f64> = base.iter().map(z).collect();
    let zc: Vec<f64> = cand.iter().map(z).collect();
    let (mb, sb) = mean_std(&zb);
    let (mc, _) = mean_std(&zc);
    let t = logit(m.meta.classifier.threshold);
    let flips = zb
        .iter()
        .zip(&zc)
        .filter(|(x, y)| (**x >= t) != (**y >= t))
        .count();
    let cos: f64 = base
        .iter()
        .zip(cand)
        .map(|(x, y)| cosine(x, y))
        .sum::<f64>()
        / base.len() as f64;
    let below: Vec<f64> = diff
        .tensors
        .iter()
        .filter(|t| t.block.is_some_and(|bl| bl <= layer) || t.kind == "embed")
        .map(|t| t.rel_change)
        .collect();
    let change_below =
        (below.iter().map(|x| x * x).sum::<f64>() / below.len().max(1) as f64).sqrt();
    let max_stable_rank = diff
        .tensors
        .iter()
        .filter(|t| t.block.is_some_and(|bl| bl <= layer))
        .map(|t| t.stable_rank)
        .fold(0.0, f64::max);
    Ok(MonitorFeatures {
        monitor: m.meta.name.clone(),
        concept: m.meta.concept.clone(),
        layer,
        depth_fraction: (layer + 1) as f64 / m.meta.base_model.num_layers as f64,
        base_auroc: m.meta.base_metrics.auroc,
        weight_norm: w.iter().map(|x| x * x).sum::<f64>().sqrt(),
        family: diff.family,
        change_below,
        max_stable_rank,
        act_cosine: cos,
        projected_shift: (mc - mb) / sb,
        score_ks: ks_statistic(&zb, &zc),
        flip_rate: flips as f64 / zb.len() as f64,
        base_margin: zb.iter().map(|x| (x - t).abs()).sum::<f64>() / zb.len() as f64 / sb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ks_known_values() {
        assert_eq!(ks_statistic(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]), 0.0);
        assert_eq!(ks_statistic(&[1.0, 2.0], &[3.0, 4.0]), 1.0);
        // scipy.stats.ks_2samp([1,2,3,4],[3,4,5,6]).statistic == 0.5
        assert_eq!(
            ks_statistic(&[1.0, 2.0, 3.0, 4.0], &[3.0, 4.0, 5.0, 6.0]),
            0.5
        );
    }
}
