//! The risk model: logistic regression (linfa-logistic) from a monitor's
//! pre-deployment features to P(stale), fitted on a history of measured
//! outcomes — the zoo grid for the shipped default, a user's own gate runs
//! for `probegate risk fit`. Also how good it is: out-of-fold AUROC when a
//! whole family or model is held out, the triage curve, and baselines.

use std::io::Write;
use std::path::Path;

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gate::diff::Family;
use crate::gate::features::MonitorFeatures;

mod eval;
pub use eval::{evaluate, held_out, held_out_on, triage_curve, Evaluation, HeldOut};

pub const HISTORY_FORMAT: &str = "probegate.history";
pub const MODEL_FORMAT: &str = "probegate.risk";
/// The shipped default, fitted on the v2 zoo grid (`study/v2/history-*.jsonl`).
pub const DEFAULT_MODEL: &str = include_str!("../../../risk/default.json");

/// What revalidation measured for one monitor through one candidate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Outcome {
    pub auroc: f64,
    pub delta_auroc: f64,
    pub balanced_accuracy: f64,
    pub delta_balanced_accuracy: f64,
    /// ΔAUROC ≤ −0.05: the study's definition ([`Target::Ranking`]).
    pub stale_auroc: bool,
    /// Stale under the policy the run used, thresholded metrics included
    /// ([`Target::Policy`]).
    pub stale_policy: bool,
    /// Operating point: balanced accuracy, TPR or FPR at the monitor's own
    /// threshold beyond the policy's limits (absent in history written
    /// before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_operating_point: Option<bool>,
    /// Study runs: each rung of the ladder tried alone on a stale monitor.
    #[serde(default, skip_serializing_if = "Trials::is_empty")]
    pub trials: Trials,
}

crate::util::choices! {
    /// What a risk model predicts. The study's figure is ranking (the
    /// published definition); the gate fails on the policy's staleness,
    /// which also counts a moved operating point, so its budget is best
    /// spent by that.
    pub enum Target {
        /// ΔAUROC ≤ −0.05, the study's definition (and every model written before targets existed).
        Ranking = "ranking",
        /// Stale under the policy the history's runs used, operating point included: what the gate fails on.
        Policy = "policy",
    }
}

impl Default for Target {
    /// A model file without a target predates targets: it predicts ranking.
    fn default() -> Self {
        Target::Ranking
    }
}

impl Target {
    pub fn stale(self, o: &Outcome) -> bool {
        match self {
            Target::Ranking => o.stale_auroc,
            Target::Policy => o.stale_policy,
        }
    }
}

/// Study runs (the grid): each rung of the repair ladder tried alone from
/// the original monitor on a stale one, whatever the ladder did, so each
/// method's repair rate can be measured. Never read by the verdict.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Trials {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realignment: Option<Trial>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recalibration: Option<Trial>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retraining: Option<Trial>,
}

impl Trials {
    pub fn is_empty(&self) -> bool {
        self.realignment.is_none() && self.recalibration.is_none() && self.retraining.is_none()
    }
}

/// One rung tried alone: the repaired monitor's figures on the test set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Trial {
    /// Labeled training examples it spent.
    pub examples: usize,
    pub auroc: f64,
    pub balanced_accuracy: f64,
    /// Still stale by ranking (ΔAUROC ≤ −0.05 against the base figures).
    pub ranking_after: bool,
    /// Still past an operating-point limit of the policy.
    pub operating_point_after: bool,
    /// Within every limit of the policy.
    pub passes_policy: bool,
    /// Realignment only: whether any of its maps would have passed the
    /// policy (the best in hindsight, which the label-free choice never sees).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any_alternative_passes: Option<bool>,
}

/// One line of a history file (JSONL).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HistoryRow {
    /// Always [`HISTORY_FORMAT`].
    pub format: String,
    /// 1, the only version read.
    pub version: u32,
    /// The base model's id in the monitor (`smollm2`, `gemma3`): the unit of
    /// leave-one-model-out.
    pub model: String,
    /// The candidate's reference as given, and its fingerprint.
    pub candidate: String,
    pub candidate_fingerprint: String,
    /// The zoo's condition name when known.
    #[serde(default)]
    pub condition: Option<String>,
    /// The run's key when its caller gives one (serve: `serve:<job>:<created>`):
    /// a run retried after a crash appends its rows once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    pub features: MonitorFeatures,
    pub outcome: Outcome,
}

impl HistoryRow {
    pub fn new(
        model: &str,
        candidate: &str,
        fingerprint: &str,
        condition: Option<String>,
        features: MonitorFeatures,
        outcome: Outcome,
    ) -> Self {
        HistoryRow {
            format: HISTORY_FORMAT.into(),
            version: 1,
            model: model.into(),
            candidate: candidate.into(),
            candidate_fingerprint: fingerprint.into(),
            condition,
            run: None,
            features,
            outcome,
        }
    }
}

/// Appends `rows`; rows whose `run` key the file already holds are skipped,
/// so a run repeated after a crash between its append and its caller's
/// record of it does not count twice in the risk model's training data.
pub fn append_history(path: &Path, rows: &[HistoryRow]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let keys: std::collections::BTreeSet<&str> =
        rows.iter().filter_map(|r| r.run.as_deref()).collect();
    let rows: Vec<&HistoryRow> = if keys.is_empty() || !path.exists() {
        rows.iter().collect()
    } else {
        let mut seen = std::collections::BTreeSet::new();
        crate::util::for_each_json_line(path, |_, v| {
            if let Some(k) = v.get("run").and_then(|k| k.as_str()) {
                if keys.contains(k) {
                    seen.insert(k.to_string());
                }
            }
            Ok(())
        })?;
        rows.iter()
            .filter(|r| r.run.as_ref().is_none_or(|k| !seen.contains(k)))
            .collect()
    };
    if rows.is_empty() {
        return Ok(());
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let mut buf = String::new();
    for r in rows {
        buf.push_str(&serde_json::to_string(r).unwrap_or_default());
        buf.push('\n');
    }
    // One write per run, so a crash leaves whole lines.
    f.write_all(buf.as_bytes()).map_err(|e| Error::io(path, e))
}

pub fn read_history(path: &Path) -> Result<Vec<HistoryRow>> {
    let mut rows = Vec::new();
    crate::util::for_each_json_line(path, &mut |line, v| {
        let row: HistoryRow = serde_json::from_value(v)
            .map_err(|e| Error::input(path, line, format!("not a history row: {e}")))?;
        if row.format != HISTORY_FORMAT || row.version != 1 {
            return Err(Error::input(
                path,
                line,
                format!(
                    "format `{}` version {} is not {HISTORY_FORMAT} version 1",
                    row.format, row.version
                ),
            ));
        }
        rows.push(row);
        Ok(())
    })?;
    if rows.is_empty() {
        return Err(Error::input(path, 0, "the history is empty"));
    }
    Ok(rows)
}

/// Every feature a risk model may read, by name. A model file lists the
/// ones it reads (any of these, in any order), so a model fitted before a
/// feature existed still loads.
pub const FEATURE_NAMES: [&str; 19] = [
    "depth_fraction",
    "base_auroc",
    "log_weight_norm",
    "log_change_below",
    "log_stable_rank",
    "act_distance",
    "abs_projected_shift",
    "score_ks",
    "flip_rate",
    "base_margin",
    "family_quantization",
    "family_low_rank",
    "family_quant_adapter",
    "family_full",
    "log_change_at",
    "concept_abs_shift",
    "concept_ks",
    "concept_flip_rate",
    "concept_decision_loss",
];

/// The features read before the concept-aware ones existed (risk model v1).
pub const FEATURE_NAMES_V1: &[&str] = FEATURE_NAMES.split_at(14).0;

/// The features read from the unlabeled corpus (two forward passes over it
/// per run, the base side cached): a model that reads none of them lets the
/// gate skip the corpus until its ladder realigns a monitor.
pub const CORPUS_FEATURES: [&str; 5] = [
    "act_distance",
    "abs_projected_shift",
    "score_ks",
    "flip_rate",
    "base_margin",
];

/// The value of feature `name` for `f`; `None` when `f` lacks it (a
/// concept feature without a training split, a corpus feature of a run
/// that did not run the corpus). Names come from
/// [`FEATURE_NAMES`].
pub fn feature_value(f: &MonitorFeatures, name: &str) -> Option<f64> {
    let fam = |fs: &[Family]| fs.contains(&f.family) as u8 as f64;
    Some(match name {
        "depth_fraction" => f.depth_fraction,
        "base_auroc" => f.base_auroc,
        "log_weight_norm" => f.weight_norm.max(1e-12).ln(),
        "log_change_below" => (f.change_below + 1e-6).log10(),
        "log_stable_rank" => (1.0 + f.max_stable_rank).ln(),
        // 1 − cosine spans orders of magnitude (1e-6 for int8, 1e-1 for fine-tunes).
        "act_distance" => (1.0 - f.act_cosine? + 1e-9).log10(),
        "abs_projected_shift" => f.projected_shift?.abs(),
        "score_ks" => f.score_ks?,
        "flip_rate" => f.flip_rate?,
        "base_margin" => f.base_margin?,
        "family_quantization" => fam(&[Family::Quantization]),
        "family_low_rank" => fam(&[Family::LowRankAdapter, Family::MergedLowRank]),
        "family_quant_adapter" => fam(&[Family::QuantizationPlusAdapter]),
        "family_full" => fam(&[Family::FullFineTune]),
        "log_change_at" => (f.change_at + 1e-6).log10(),
        "concept_abs_shift" => f.concept_shift?.abs(),
        "concept_ks" => f.concept_ks?,
        "concept_flip_rate" => f.concept_flip_rate?,
        // 1 − AUROC spans orders of magnitude (0 for int8, 1e-1 for a broken probe).
        "concept_decision_loss" => (1.0 - f.concept_decision_auroc? + 1e-6).log10(),
        _ => return None,
    })
}

/// The features of [`FEATURE_NAMES`] that at least one of `rows` has: what
/// a model fitted on them can read.
pub fn features_present(rows: &[&HistoryRow]) -> Vec<&'static str> {
    FEATURE_NAMES
        .into_iter()
        .filter(|n| rows.iter().any(|r| feature_value(&r.features, n).is_some()))
        .collect()
}

/// The values of `names` for `f`, in order.
pub fn feature_vector(f: &MonitorFeatures, names: &[String]) -> Vec<Option<f64>> {
    names.iter().map(|n| feature_value(f, n)).collect()
}

/// A fitted risk model, serialized as JSON.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RiskModel {
    /// Always [`MODEL_FORMAT`].
    pub format: String,
    pub version: u32,
    /// The inputs, each one of [`FEATURE_NAMES`]; a model naming any other
    /// feature is refused.
    pub features: Vec<String>,
    /// Per feature, the mean and standard deviation the inputs are standardised with.
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    /// Logistic coefficients on the standardised features.
    pub coef: Vec<f64>,
    pub intercept: f64,
    /// The L2 penalty it was fitted with.
    pub l2: f64,
    /// What `p_stale` is the probability of.
    #[serde(default)]
    pub target: Target,
    /// Rows and stale rows it was fitted on, and from where.
    pub fitted_rows: usize,
    pub fitted_stale: usize,
    pub fitted_on: String,
}

/// One monitor's predicted risk with the features that pushed it most.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Risk {
    /// Predicted probability, 0–1, that the monitor goes stale by the
    /// model's [`Target`].
    pub p_stale: f64,
    /// (feature, contribution to the logit), largest |contribution| first.
    pub drivers: Vec<(String, f64)>,
}

impl RiskModel {
    pub fn default_model() -> Result<Self> {
        Self::parse(DEFAULT_MODEL, Path::new("risk/default.json"))
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::assets::read_small_text(path, "risk model")?;
        Self::parse(&text, path)
    }

    /// The model at `path`, or the shipped one when none is given.
    pub fn load_or_default(path: Option<&Path>) -> Result<Self> {
        path.map_or_else(Self::default_model, Self::load)
    }

    fn parse(text: &str, path: &Path) -> Result<Self> {
        let m: RiskModel =
            serde_json::from_str(text).map_err(|e| Error::input(path, e.line(), e.to_string()))?;
        if m.format != MODEL_FORMAT {
            return Err(Error::field(
                path,
                "format",
                format!("not `{MODEL_FORMAT}`"),
            ));
        }
        if let Some(bad) = m
            .features
            .iter()
            .find(|f| !FEATURE_NAMES.contains(&f.as_str()))
        {
            return Err(Error::field(
                path,
                "features",
                format!("`{bad}` is not a feature this version computes"),
            ));
        }
        let n = m.features.len();
        for (field, len) in [
            ("mean", m.mean.len()),
            ("std", m.std.len()),
            ("coef", m.coef.len()),
        ] {
            if len != n {
                return Err(Error::field(
                    path,
                    field,
                    format!("{len} values for {n} features"),
                ));
            }
        }
        if let Some(i) = m.std.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(Error::field(
                path,
                "std",
                format!("entry {i} is not a positive number"),
            ));
        }
        Ok(m)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        std::fs::write(path, serde_json::to_string_pretty(self).unwrap_or_default())
            .map_err(|e| Error::io(path, e))
    }

    /// Whether the model reads a corpus feature ([`CORPUS_FEATURES`]), so
    /// the gate must run the unlabeled corpus before predicting.
    pub fn reads_corpus(&self) -> bool {
        self.features
            .iter()
            .any(|f| CORPUS_FEATURES.contains(&f.as_str()))
    }

    /// Every monitor's risk, by monitor name.
    pub fn predict_each(
        &self,
        features: &std::collections::BTreeMap<String, MonitorFeatures>,
    ) -> std::collections::BTreeMap<String, Risk> {
        features
            .iter()
            .map(|(n, f)| (n.clone(), self.predict(f)))
            .collect()
    }

    pub fn predict(&self, f: &MonitorFeatures) -> Risk {
        let x = feature_vector(f, &self.features);
        let mut z = self.intercept;
        let mut drivers = Vec::with_capacity(x.len());
        for (i, xi) in x.iter().enumerate() {
            // A feature the run could not compute reads as its training mean.
            let xi = xi.unwrap_or(self.mean[i]);
            let c = self.coef[i] * (xi - self.mean[i]) / self.std[i];
            z += c;
            drivers.push((self.features[i].clone(), c));
        }
        drivers.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        drivers.truncate(3);
        Risk {
            p_stale: 1.0 / (1.0 + (-z).exp()),
            drivers,
        }
    }
}

/// Fits on `rows` to predict `target` over every feature of
/// [`FEATURE_NAMES`] the rows have (a history written by runs that skipped
/// the corpus has no corpus features). Needs both outcomes present.
pub fn fit(rows: &[&HistoryRow], target: Target, l2: f64, source: &str) -> Result<RiskModel> {
    fit_on(rows, &features_present(rows), target, l2, source)
}

/// [`fit`] over the features `names`. A row lacking a feature (history
/// from before it existed, a concept without a training split) takes the
/// mean of the rows that have it.
pub fn fit_on(
    rows: &[&HistoryRow],
    names: &[&str],
    target: Target,
    l2: f64,
    source: &str,
) -> Result<RiskModel> {
    let n = rows.len();
    let stale = rows.iter().filter(|r| target.stale(&r.outcome)).count();
    if stale == 0 || stale == n {
        return Err(Error::Usage(format!(
            "the history's {n} rows are all {}: a risk model needs stale and healthy outcomes",
            if stale == 0 { "healthy" } else { "stale" }
        )));
    }
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let k = names.len();
    let given: Vec<Vec<Option<f64>>> = rows
        .iter()
        .map(|r| feature_vector(&r.features, &names))
        .collect();
    // A feature no row has would be fitted as a constant: refuse it rather
    // than write a model that asks every run to compute it for nothing.
    if let Some(j) = (0..k).find(|&j| given.iter().all(|v| v[j].is_none())) {
        return Err(Error::Usage(format!(
            "no history row has the feature `{}` (its runs did not compute it); leave it out",
            names[j]
        )));
    }
    let mut mean = vec![0.0; k];
    let mut std = vec![0.0; k];
    for j in 0..k {
        let have: Vec<f64> = given.iter().filter_map(|v| v[j]).collect();
        mean[j] = have.iter().sum::<f64>() / have.len().max(1) as f64;
        let var =
            have.iter().map(|x| (x - mean[j]).powi(2)).sum::<f64>() / have.len().max(1) as f64;
        std[j] = var.sqrt().max(1e-9);
    }
    let raw: Vec<Vec<f64>> = given
        .iter()
        .map(|v| v.iter().zip(&mean).map(|(x, m)| x.unwrap_or(*m)).collect())
        .collect();
    let x = Array2::from_shape_fn((n, k), |(i, j)| (raw[i][j] - mean[j]) / std[j]);
    let y: Vec<usize> = rows
        .iter()
        .map(|r| target.stale(&r.outcome) as usize)
        .collect();
    let fitted = crate::monitor::train::fit(&x, &y, l2, 500)?;
    Ok(RiskModel {
        format: MODEL_FORMAT.into(),
        version: 1,
        features: names,
        mean,
        std,
        coef: fitted.w.to_vec(),
        intercept: fitted.b,
        l2,
        target,
        fitted_rows: n,
        fitted_stale: stale,
        fitted_on: source.into(),
    })
}

#[cfg(test)]
mod tests;
