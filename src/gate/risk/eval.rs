//! How good a risk model is on a history: out-of-fold AUROC with whole
//! groups (a family, a model, a source and what is derived from it) held
//! out, against the baselines a reader would try first, and the triage curve.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{fit_on, HistoryRow, Target};
use crate::monitor::metrics::auroc;

/// How well risk ranks stale cells when a whole group is held out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeldOut {
    /// `family` or `model`.
    pub by: String,
    /// Pooled out-of-fold AUROC of each scorer; None when a fold could not be fitted
    /// or the pooled rows hold one class only.
    pub auroc: BTreeMap<String, Option<f64>>,
    pub folds: Vec<String>,
    pub skipped_folds: Vec<String>,
    /// Share of stale cells caught revalidating only the top k% by predicted risk.
    pub triage: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evaluation {
    /// What was predicted.
    #[serde(default)]
    pub target: Target,
    pub rows: usize,
    pub stale: usize,
    pub held_out: Vec<HeldOut>,
}

fn group_key(r: &HistoryRow, by: &str) -> String {
    match by {
        "family" => format!("{:?}", r.features.family),
        _ => r.model.clone(),
    }
}

/// Share of stale rows caught in the top k% by score, for k = 10, 20, … 100.
pub fn triage_curve(scores: &[f64], stale: &[bool]) -> Vec<(f64, f64)> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let total = stale.iter().filter(|s| **s).count().max(1) as f64;
    (1..=10)
        .map(|k| {
            let share = k as f64 / 10.0;
            let top = ((scores.len() as f64) * share).ceil() as usize;
            let caught = idx[..top.min(idx.len())]
                .iter()
                .filter(|&&i| stale[i])
                .count();
            (share, caught as f64 / total)
        })
        .collect()
}

/// Leave-one-family-out and leave-one-model-out, against baselines.
pub fn evaluate(rows: &[HistoryRow], target: Target, l2: f64) -> Evaluation {
    let held_out = ["family", "model"]
        .iter()
        .map(|by| {
            let keys: Vec<String> = rows.iter().map(|r| group_key(r, by)).collect();
            held_out(rows, &keys, by, target, l2)
        })
        .collect();
    Evaluation {
        target,
        rows: rows.len(),
        stale: rows.iter().filter(|r| target.stale(&r.outcome)).count(),
        held_out,
    }
}

/// Out-of-fold quality, on every feature the rows have, when `keys[i]`
/// names row i's fold: each fold is predicted by a model fitted on every
/// other fold, and the predictions are pooled. The caller chooses the folds, so one that keeps related rows
/// (a merged copy and its source) in one fold gets an honest figure.
pub fn held_out(
    rows: &[HistoryRow],
    keys: &[String],
    by: &str,
    target: Target,
    l2: f64,
) -> HeldOut {
    let refs: Vec<&HistoryRow> = rows.iter().collect();
    held_out_on(rows, keys, by, target, l2, &super::features_present(&refs))
}

/// [`held_out`] with models over the features `names` only.
pub fn held_out_on(
    rows: &[HistoryRow],
    keys: &[String],
    by: &str,
    target: Target,
    l2: f64,
    names: &[&str],
) -> HeldOut {
    let stale_all: Vec<bool> = rows.iter().map(|r| target.stale(&r.outcome)).collect();
    let mut groups: Vec<String> = keys.to_vec();
    groups.sort();
    groups.dedup();
    let mut oof = vec![f64::NAN; rows.len()];
    let mut fam_base = vec![f64::NAN; rows.len()];
    let mut skipped = Vec::new();
    for g in &groups {
        let train: Vec<&HistoryRow> = rows
            .iter()
            .zip(keys)
            .filter(|(_, k)| *k != g)
            .map(|(r, _)| r)
            .collect();
        let Ok(model) = fit_on(&train, names, target, l2, "fold") else {
            skipped.push(g.clone());
            continue;
        };
        // Family-alone baseline: the family's stale rate in the training fold.
        let mut rate: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for r in &train {
            let e = rate.entry(format!("{:?}", r.features.family)).or_default();
            e.0 += target.stale(&r.outcome) as usize;
            e.1 += 1;
        }
        let overall =
            train.iter().filter(|r| target.stale(&r.outcome)).count() as f64 / train.len() as f64;
        for (i, r) in rows.iter().enumerate() {
            if &keys[i] == g {
                oof[i] = model.predict(&r.features).p_stale;
                fam_base[i] = rate
                    .get(&format!("{:?}", r.features.family))
                    .map(|(s, n)| *s as f64 / *n as f64)
                    .unwrap_or(overall);
            }
        }
    }
    let keep: Vec<usize> = (0..rows.len()).filter(|&i| oof[i].is_finite()).collect();
    let labels: Vec<u8> = keep.iter().map(|&i| stale_all[i] as u8).collect();
    let pick = |v: &[f64]| keep.iter().map(|&i| v[i]).collect::<Vec<f64>>();
    let weight: Vec<f64> = rows.iter().map(|r| r.features.change_below).collect();
    let mut au = BTreeMap::new();
    au.insert("risk_model".to_string(), auroc(&pick(&oof), &labels));
    au.insert(
        "weight_change_alone".to_string(),
        auroc(&pick(&weight), &labels),
    );
    au.insert("family_alone".to_string(), auroc(&pick(&fam_base), &labels));
    let stale_kept: Vec<bool> = keep.iter().map(|&i| stale_all[i]).collect();
    HeldOut {
        by: by.into(),
        auroc: au,
        folds: groups,
        skipped_folds: skipped,
        triage: triage_curve(&pick(&oof), &stale_kept),
    }
}
