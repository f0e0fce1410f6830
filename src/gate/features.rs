//! Pre-deployment features per (monitor, candidate): what the risk stage
//! reads to predict which monitors go stale, before any labeled data is spent.
//!
//! | feature | from | cost |
//! | --- | --- | --- |
//! | depth_fraction, base_auroc, weight_norm | the monitor file | free |
//! | change_below, max_stable_rank, family | the diff | one streamed pass over both checkpoints |
//! | act_cosine, projected_shift, score_ks, flip_rate, base_margin | activations on the unlabeled corpus | two forward passes to the monitor's block (the base side is cached); run only when the risk model reads one of them ([`LazyCorpus`]) |
//! | change_at | the diff, the monitor's own block | free |
//! | concept_shift, concept_ks, concept_flip_rate, concept_decision_auroc | the concept's own training texts, read without their labels (the first part of the ladder's order, so the ladder finds them cached) | 96 texts per concept through each model; under `budget.stop_at_verdict`, a concept outside the critical ones only once revalidation reaches it (`gate::deferred`) |

use std::cell::{OnceCell, RefCell};
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::activations::cache::{cached_activations_parts, ActCache, ActSpec, Kept};
use crate::error::{Error, Result};
use crate::gate::diff::{DiffReport, Family};
use crate::gate::prepare::{Prepared, Progress};
use crate::model::{Pool, Precision};
use crate::monitor::data::{train_order, Labeled, FIRST_PART};
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

/// The corpus's paired activations, run when first needed: by the features
/// stage when the risk model reads a corpus feature, else by the ladder's
/// first realignment, else never (a clean candidate, or a failing one the
/// gate stopped before its ladder). Two forward passes over 600 prompts are
/// about a quarter of the README demo's cold gate.
pub struct LazyCorpus<'a> {
    models: &'a Prepared,
    monitors: &'a [Monitor],
    cache: &'a ActCache,
    kept: Option<&'a RefCell<Kept<'a>>>,
    acts: OnceCell<PairedActs>,
}

impl<'a> LazyCorpus<'a> {
    /// `ran`: the activations when the features stage already ran the corpus;
    /// `kept`: the models the run keeps loaded.
    pub fn new(
        models: &'a Prepared,
        monitors: &'a [Monitor],
        (cache, kept): (&'a ActCache, Option<&'a RefCell<Kept<'a>>>),
        ran: Option<PairedActs>,
    ) -> Self {
        let acts = OnceCell::new();
        if let Some(a) = ran {
            let _ = acts.set(a);
        }
        LazyCorpus {
            models,
            monitors,
            cache,
            kept,
            acts,
        }
    }

    /// The activations, running the corpus now if it has not run.
    pub fn ensure(&self, progress: Progress) -> Result<&PairedActs> {
        if let Some(a) = self.acts.get() {
            return Ok(a);
        }
        let a = corpus_activations(
            self.models,
            self.monitors,
            (self.cache, self.kept),
            progress,
        )?;
        Ok(self.acts.get_or_init(|| a))
    }

    /// The activations, which a caller must have [`ensure`](Self::ensure)d.
    pub fn get(&self) -> Result<&PairedActs> {
        self.acts
            .get()
            .ok_or_else(|| Error::Usage("internal: the corpus was read before it was run".into()))
    }
}

/// The corpus through both models at every block a monitor reads, each
/// pooling once (the base side comes from the cache after the first run),
/// on the models in `kept` when given (loaded there when missing).
pub fn corpus_activations<'ck>(
    p: &'ck Prepared,
    monitors: &[Monitor],
    (cache, kept): (&ActCache, Option<&RefCell<Kept<'ck>>>),
    progress: Progress,
) -> Result<PairedActs> {
    let mut out = PairedActs::default();
    let total = 2 * p.corpus.len() * mon::by_pooling(monitors).len();
    let mut seen = 0;
    for (pool, _, layers) in mon::by_pooling(monitors) {
        let mut on_batch = |n| {
            seen += n;
            progress("corpus activations", seen, total)
        };
        let parts = [p.corpus.as_slice()];
        let mut pass = |on_base| -> Result<BTreeMap<usize, candle_core::Tensor>> {
            let mut a = one_side(
                p,
                on_base,
                &parts,
                (&layers, pool),
                (cache, kept),
                &mut on_batch,
            )?;
            Ok(a.pop().unwrap_or_default())
        };
        let ab = pass(true)?;
        let ac = pass(false)?;
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

/// `parts` through the base (`on_base`) or the candidate at `layers`, f32,
/// on the model in `kept` when given (loaded there when missing).
fn one_side<'ck>(
    p: &'ck Prepared,
    on_base: bool,
    parts: &[&[String]],
    (layers, pool): (&[usize], Pool),
    (cache, kept): (&ActCache, Option<&RefCell<Kept<'ck>>>),
    on_batch: &mut dyn FnMut(usize),
) -> Result<Vec<BTreeMap<usize, candle_core::Tensor>>> {
    let ck = if on_base { &p.base } else { &p.cand };
    let spec = ActSpec {
        pool,
        precision: Precision::F32,
        batch_size: crate::util::DEFAULT_BATCH_SIZE,
    };
    let mut k = kept.map(RefCell::borrow_mut);
    cached_activations_parts(
        ck,
        cache,
        parts,
        layers,
        spec,
        on_batch,
        k.as_mut().map(|k| k.side(on_base)),
    )
}

/// Paired activations on each concept's own texts, per (concept, pooling,
/// block): the label-free view of the monitor's own distribution, which the
/// corpus (other prompts) can miss.
#[derive(Default)]
pub struct ConceptActs(BTreeMap<(String, Pool, usize), Paired>);

/// The first part of each concept's training split in the ladder's order,
/// read without labels, through both models at every block its monitors
/// read. One extraction per (side, pooling) over all concepts, and the
/// same cache entries the repair ladder reads first. Concepts without a
/// training split are left out (their concept features are `None`).
pub fn concept_activations<'ck>(
    p: &'ck Prepared,
    monitors: &[Monitor],
    trains: &BTreeMap<String, (PathBuf, Labeled)>,
    (cache, kept): (&ActCache, Option<&RefCell<Kept<'ck>>>),
    progress: Progress,
) -> Result<ConceptActs> {
    let mut out = ConceptActs::default();
    for (pool, group, layers) in mon::by_pooling(monitors) {
        let mut concepts: Vec<&str> = group.iter().map(|m| m.meta.concept.as_str()).collect();
        concepts.sort_unstable();
        concepts.dedup();
        concepts.retain(|c| trains.contains_key(*c));
        if concepts.is_empty() {
            continue;
        }
        let parts: Vec<Vec<String>> = concepts
            .iter()
            .map(|c| {
                let d = &trains[*c].1;
                let order = train_order(d.texts.len());
                order[..FIRST_PART.min(order.len())]
                    .iter()
                    .map(|&i| d.texts[i].clone())
                    .collect()
            })
            .collect();
        let refs: Vec<&[String]> = parts.iter().map(Vec::as_slice).collect();
        let total = 2 * parts.iter().map(Vec::len).sum::<usize>();
        let mut seen = 0;
        let mut on_batch = |n| {
            seen += n;
            progress("concept activations", seen, total)
        };
        let mut pass = |on_base| {
            one_side(
                p,
                on_base,
                &refs,
                (&layers, pool),
                (cache, kept),
                &mut on_batch,
            )
        };
        let ab = pass(true)?;
        let ac = pass(false)?;
        for (i, c) in concepts.iter().enumerate() {
            for &l in &layers {
                out.0.insert(
                    ((*c).to_string(), pool, l),
                    Paired {
                        base: ab[i][&l].to_vec2::<f32>()?,
                        cand: ac[i][&l].to_vec2::<f32>()?,
                    },
                );
            }
        }
    }
    Ok(out)
}

/// Every monitor's features, by monitor name; the corpus features only
/// when the corpus was run (`acts`).
pub fn features(
    monitors: &[Monitor],
    diff: &DiffReport,
    acts: Option<&PairedActs>,
    concept: &ConceptActs,
) -> Result<BTreeMap<String, MonitorFeatures>> {
    monitors
        .iter()
        .map(|m| {
            let p = acts.map(|a| a.at(m)).transpose()?;
            let mut f = monitor_features(m, diff, p)?;
            let key = (m.meta.concept.clone(), m.meta.pooling, m.meta.hook.layer);
            if let Some(c) = concept.0.get(&key) {
                let s = score_change(m, &c.base, &c.cand);
                f.concept_shift = Some(s.shift);
                f.concept_ks = Some(s.ks);
                f.concept_flip_rate = Some(s.flip_rate);
                f.concept_decision_auroc = s.decision_auroc;
            }
            Ok((m.meta.name.clone(), f))
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
    /// The corpus features (this one and the four after it), on the
    /// unlabeled corpus: `None` when the run did not compute them, because
    /// its risk model reads none of them and its ladder did not realign.
    /// Mean cosine between base and candidate activations at the block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act_cosine: Option<f64>,
    /// (mean candidate logit − mean base logit) / std of base logits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projected_shift: Option<f64>,
    /// Two-sample Kolmogorov–Smirnov statistic between base and candidate scores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_ks: Option<f64>,
    /// Share of prompts whose decision at the monitor's threshold flips.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flip_rate: Option<f64>,
    /// Mean |base logit − threshold logit| / std of base logits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_margin: Option<f64>,
    /// RMS ‖ΔW‖/‖W‖ over the tensors of the monitor's own block (0 in
    /// history written before it existed).
    #[serde(default)]
    pub change_at: f64,
    /// `projected_shift`, `score_ks` and `flip_rate` on the concept's own
    /// texts (its training split's first part, labels unread); `None`
    /// without a training split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concept_shift: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concept_ks: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concept_flip_rate: Option<f64>,
    /// AUROC of the candidate's scores against the base monitor's own
    /// decisions on those texts (1 when the candidate separates what the base
    /// separated). Label-free, and threshold-free on the candidate side, so
    /// it reads a ranking break rather than a moved operating point; `None`
    /// when the base puts every text on one side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concept_decision_auroc: Option<f64>,
}

#[cfg(test)]
impl MonitorFeatures {
    /// Features for tests: a monitor at block 15 that nothing moved, without
    /// concept features; tests set what they vary with struct update syntax.
    pub(crate) fn example(monitor: &str, family: Family) -> Self {
        MonitorFeatures {
            monitor: monitor.into(),
            concept: monitor.split('-').next().unwrap_or(monitor).into(),
            layer: 15,
            depth_fraction: 0.5,
            base_auroc: 0.99,
            weight_norm: 1.0,
            family,
            change_below: 0.0,
            max_stable_rank: 0.0,
            act_cosine: Some(1.0),
            projected_shift: Some(0.0),
            score_ks: Some(0.0),
            flip_rate: Some(0.0),
            base_margin: Some(1.0),
            change_at: 0.0,
            concept_shift: None,
            concept_ks: None,
            concept_flip_rate: None,
            concept_decision_auroc: None,
        }
    }
}

/// How a monitor's scores move between the same texts through both models.
struct ScoreChange {
    /// (mean candidate logit − mean base logit) / std of base logits.
    shift: f64,
    ks: f64,
    flip_rate: f64,
    /// Mean |base logit − threshold logit| / std of base logits.
    margin: f64,
    decision_auroc: Option<f64>,
}

fn score_change(m: &Monitor, base: &[Vec<f32>], cand: &[Vec<f32>]) -> ScoreChange {
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
    let n = zb.len().max(1) as f64;
    ScoreChange {
        shift: (mc - mb) / sb,
        ks: ks_statistic(&zb, &zc),
        flip_rate: flips as f64 / n,
        margin: zb.iter().map(|x| (x - t).abs()).sum::<f64>() / n / sb,
        decision_auroc: decision_auroc(&zb, &zc, t),
    }
}

/// How well the candidate's logits `zc` separate the texts the base's
/// logits `zb` put on either side of the threshold logit `t`: the base's own
/// decisions stand in for labels, so no label is read.
fn decision_auroc(zb: &[f64], zc: &[f64], t: f64) -> Option<f64> {
    let decided: Vec<u8> = zb.iter().map(|x| (*x >= t) as u8).collect();
    crate::monitor::metrics::auroc(zc, &decided)
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

/// Features of one monitor from the diff and, when given, paired corpus
/// activations at its block (`base`, `cand`: rows are the same prompts
/// through both models); without them the corpus features are `None`.
pub fn monitor_features(
    m: &Monitor,
    diff: &DiffReport,
    corpus: Option<&Paired>,
) -> Result<MonitorFeatures> {
    let corpus = match corpus {
        Some(Paired { base, cand }) => {
            if base.len() != cand.len() || base.is_empty() {
                return Err(Error::Usage(
                    "features need the same, non-empty prompts through both models".into(),
                ));
            }
            let cos = base
                .iter()
                .zip(cand)
                .map(|(x, y)| cosine(x, y))
                .sum::<f64>()
                / base.len() as f64;
            Some((cos, score_change(m, base, cand)))
        }
        None => None,
    };
    let layer = m.meta.hook.layer;
    let (w, _) = m.folded();
    let below: Vec<f64> = diff
        .tensors
        .iter()
        .filter(|t| t.block.is_some_and(|bl| bl <= layer) || t.kind == "embed")
        .map(|t| t.rel_change)
        .collect();
    let rms = |v: &[f64]| (v.iter().map(|x| x * x).sum::<f64>() / v.len().max(1) as f64).sqrt();
    let change_below = rms(&below);
    let at: Vec<f64> = diff
        .tensors
        .iter()
        .filter(|t| t.block == Some(layer))
        .map(|t| t.rel_change)
        .collect();
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
        act_cosine: corpus.as_ref().map(|c| c.0),
        projected_shift: corpus.as_ref().map(|c| c.1.shift),
        score_ks: corpus.as_ref().map(|c| c.1.ks),
        flip_rate: corpus.as_ref().map(|c| c.1.flip_rate),
        base_margin: corpus.as_ref().map(|c| c.1.margin),
        change_at: rms(&at),
        concept_shift: None,
        concept_ks: None,
        concept_flip_rate: None,
        concept_decision_auroc: None,
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

    #[test]
    fn decision_auroc_reads_reordering_not_shift() {
        let zb = [-2.0, -1.0, 0.5, 1.0, 3.0];
        // A shift or a rescaling keeps the base's separation: 1.
        let shifted: Vec<f64> = zb.iter().map(|x| 3.0 * x - 10.0).collect();
        assert_eq!(decision_auroc(&zb, &shifted, 0.0), Some(1.0));
        // One base-negative text now outscores one of three base-positive ones.
        let swapped = [-2.0, 0.7, 0.5, 1.0, 3.0];
        let a = decision_auroc(&zb, &swapped, 0.0).unwrap();
        assert!((a - 5.0 / 6.0).abs() < 1e-12, "{a}");
        // The base puts every text on one side: nothing to separate.
        assert_eq!(decision_auroc(&zb, &shifted, -5.0), None);
    }
}
