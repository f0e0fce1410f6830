//! Revalidation: a monitor's labeled test set through the candidate, its
//! metrics against the base figures recorded in the monitor, and whether the
//! policy calls it stale. Thresholded metrics are judged as well as AUROC:
//! staleness often shows as a shifted threshold while ranking survives.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::monitor::{data, metrics, Monitor};
use crate::policy::MetricLimits;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvalResult {
    pub monitor: String,
    pub layer: usize,
    pub n: usize,
    pub auroc: f64,
    pub auroc_ci95: [f64; 2],
    pub balanced_accuracy: f64,
    pub tpr: f64,
    pub fpr: f64,
    pub threshold: f64,
    pub base_auroc: f64,
    pub delta_auroc: f64,
    pub base_balanced_accuracy: f64,
}

/// Metrics of a monitor on scores of labeled data, against its base figures.
pub fn evaluate(m: &Monitor, scores: &[f64], labels: &[u8], seed: u64) -> Result<EvalResult> {
    let auroc = metrics::auroc(scores, labels)
        .ok_or_else(|| Error::Usage("evaluation data needs both classes".into()))?;
    let (lo, hi) = metrics::auroc_ci(scores, labels, 1000, seed).unwrap_or((auroc, auroc));
    let t = metrics::at_threshold(scores, labels, m.meta.classifier.threshold);
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

/// Why a monitor is stale (empty when it is not).
pub fn stale_reasons(m: &Monitor, e: &EvalResult, lim: &MetricLimits) -> Vec<String> {
    let b = &m.meta.base_metrics;
    let mut out = Vec::new();
    // A tiny epsilon so a drop of exactly the limit counts despite rounding.
    if e.delta_auroc <= -lim.max_auroc_drop + 1e-12 {
        out.push(format!(
            "AUROC {:.3} → {:.3} (Δ {:+.3} ≤ −{})",
            b.auroc, e.auroc, e.delta_auroc, lim.max_auroc_drop
        ));
    }
    if e.auroc < lim.min_auroc {
        out.push(format!("AUROC {:.3} below {}", e.auroc, lim.min_auroc));
    }
    let dba = e.balanced_accuracy - b.balanced_accuracy;
    if dba < -lim.max_balanced_accuracy_drop {
        out.push(format!(
            "balanced accuracy at the threshold {:.3} → {:.3} (Δ {:+.3})",
            b.balanced_accuracy, e.balanced_accuracy, dba
        ));
    }
    if e.fpr - b.fpr > lim.max_fpr_increase {
        out.push(format!("FPR {:.3} → {:.3}", b.fpr, e.fpr));
    }
    if b.tpr - e.tpr > lim.max_tpr_drop {
        out.push(format!("TPR {:.3} → {:.3}", b.tpr, e.tpr));
    }
    out
}

/// The concept's training split, `<data>/<concept>/train.jsonl`: the labels
/// the recalibration and retraining rungs may spend (never the test set,
/// which verifies them).
pub fn train_set(data_root: &Path, m: &Monitor) -> Result<(PathBuf, data::Labeled)> {
    let path = data_root.join(&m.meta.concept).join("train.jsonl");
    let names = (
        m.meta.labels.negative.as_str(),
        m.meta.labels.positive.as_str(),
    );
    let d = data::read_labeled(&path, Some(names))?;
    Ok((path, d))
}

/// The labeled test set a monitor's base figures were measured on:
/// `<data>/<concept>/test.jsonl`, checked against the recorded hash so a
/// comparison with the base figures is like for like.
pub fn test_set(data_root: &Path, m: &Monitor) -> Result<(PathBuf, data::Labeled)> {
    let path = data_root.join(&m.meta.concept).join("test.jsonl");
    let names = (
        m.meta.labels.negative.as_str(),
        m.meta.labels.positive.as_str(),
    );
    let d = data::read_labeled(&path, Some(names))?;
    if d.sha256 != m.meta.base_metrics.data_sha256 {
        return Err(Error::field(
            &path,
            "(contents)",
            format!(
                "sha256 {} differs from the data monitor {} was measured on ({}): base and candidate figures would not be comparable",
                &d.sha256[..12],
                m.meta.name,
                &m.meta.base_metrics.data_sha256[..12.min(m.meta.base_metrics.data_sha256.len())]
            ),
        ));
    }
    Ok((path, d))
}
