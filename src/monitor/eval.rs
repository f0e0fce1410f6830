//! A suite of monitors on labeled data through one model: the metrics each
//! reaches, against the base figures its file records. `monitor eval`,
//! `monitor train`'s held-out figures and the gate's revalidation all
//! measure a monitor this way.

use std::collections::BTreeMap;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::activations::cache::{cached_activations, ActCache, ActSpec};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::model::Precision;
use crate::monitor::{by_pooling, data::Labeled, Metrics, Monitor};

/// One monitor's labeled metrics through a model (report.json's
/// `monitors[].eval`). Rates and AUROCs are fractions, 0–1.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvalResult {
    /// The monitor's name.
    pub monitor: String,
    /// The decoder block it reads.
    pub layer: usize,
    /// Labeled examples scored.
    pub n: usize,
    pub auroc: f64,
    /// Stratified percentile-bootstrap 95% interval of `auroc` (1000 resamples).
    pub auroc_ci95: [f64; 2],
    /// Mean of TPR and TNR at `threshold`.
    pub balanced_accuracy: f64,
    /// True-positive rate at `threshold` (positive: score ≥ threshold).
    pub tpr: f64,
    /// False-positive rate at `threshold`.
    pub fpr: f64,
    /// The monitor's own decision threshold on its probability score.
    pub threshold: f64,
    /// AUROC the monitor's file records for its base model.
    pub base_auroc: f64,
    /// `auroc - base_auroc`: negative when the monitor lost ground.
    pub delta_auroc: f64,
    /// Balanced accuracy the monitor's file records for its base model.
    pub base_balanced_accuracy: f64,
}

impl EvalResult {
    /// Figures for tests of what is decided from them (the verdict, a
    /// replay): AUROC 0.95 → 0.90 on `n` examples, which do not enter those.
    #[cfg(test)]
    pub(crate) fn example(monitor: &str, n: usize) -> Self {
        EvalResult {
            monitor: monitor.into(),
            layer: 15,
            n,
            auroc: 0.9,
            auroc_ci95: [0.85, 0.95],
            balanced_accuracy: 0.8,
            tpr: 0.8,
            fpr: 0.2,
            threshold: 0.5,
            base_auroc: 0.95,
            delta_auroc: -0.05,
            base_balanced_accuracy: 0.85,
        }
    }
}

/// Metrics of a monitor on scores of labeled data, against its base figures.
pub fn evaluate(m: &Monitor, scores: &[f64], labels: &[u8], seed: u64) -> Result<EvalResult> {
    let auroc = crate::monitor::metrics::auroc(scores, labels)
        .ok_or_else(|| Error::Usage("evaluation data needs both classes".into()))?;
    let (lo, hi) =
        crate::monitor::metrics::auroc_ci(scores, labels, 1000, seed).unwrap_or((auroc, auroc));
    let t = crate::monitor::metrics::at_threshold(scores, labels, m.meta.classifier.threshold);
    Ok(EvalResult {
        monitor: m.meta.name.clone(),
        layer: m.meta.hook.layer,
        n: labels.len(),
        auroc,
        auroc_ci95: [lo, hi],
        balanced_accuracy: t.balanced_accuracy,
        tpr: t.tpr,
        fpr: t.fpr,
        threshold: t.threshold,
        base_auroc: m.meta.base_metrics.auroc,
        delta_auroc: auroc - m.meta.base_metrics.auroc,
        base_balanced_accuracy: m.meta.base_metrics.balanced_accuracy,
    })
}

/// What one monitor reached on a labeled set, and the activations it read
/// (kept so a repaired monitor is judged without another forward pass).
pub struct Evaluated<'a> {
    pub monitor: &'a Monitor,
    pub eval: EvalResult,
    pub x: Tensor,
}

/// How a suite is run: the forward pass's precision and batch size, and
/// the bootstrap seed of the AUROC interval.
#[derive(Debug, Clone, Copy)]
pub struct EvalOptions {
    pub precision: Precision,
    pub batch_size: usize,
    pub seed: u64,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            precision: Precision::F32,
            batch_size: crate::util::DEFAULT_BATCH_SIZE,
            seed: crate::util::DEFAULT_SEED,
        }
    }
}

/// Every monitor of `monitors` on `data` through `ck`: one forward pass
/// per pooling, reaching the deepest block any monitor reads.
pub fn evaluate_suite<'a>(
    ck: &Checkpoint,
    cache: &ActCache,
    monitors: impl IntoIterator<Item = &'a Monitor>,
    data: &Labeled,
    opts: EvalOptions,
    on_batch: &mut dyn FnMut(usize),
) -> Result<Vec<Evaluated<'a>>> {
    let EvalOptions {
        precision,
        batch_size,
        seed,
    } = opts;
    let mut out = Vec::new();
    for (pool, group, layers) in by_pooling(monitors) {
        let spec = ActSpec {
            pool,
            precision,
            batch_size: batch_size.max(1),
        };
        let mut acts: BTreeMap<usize, Tensor> =
            cached_activations(ck, cache, &data.texts, &layers, spec, on_batch)?;
        for m in group {
            let l = m.meta.hook.layer;
            let x = acts
                .get(&l)
                .cloned()
                .ok_or_else(|| Error::Usage(format!("no activations at block {l}")))?;
            let eval = evaluate(m, &m.scores(&x)?, &data.labels, seed)?;
            out.push(Evaluated {
                monitor: m,
                eval,
                x,
            });
        }
        acts.clear();
    }
    Ok(out)
}

/// A monitor's base figures from a held-out test set it was evaluated on.
pub fn held_out_metrics(e: &EvalResult, data: &Labeled) -> Metrics {
    Metrics {
        split: "held-out test".into(),
        data_sha256: data.sha256.clone(),
        n: data.labels.len(),
        n_positive: data.n_positive(),
        auroc: e.auroc,
        auroc_ci95: e.auroc_ci95,
        balanced_accuracy: e.balanced_accuracy,
        tpr: e.tpr,
        fpr: e.fpr,
    }
}
