//! The report's types: what a check decided and why, as report.json holds
//! it (schema `probegate.report`, docs/report.md). Plain data: the gate
//! produces it, the writers beside this file render it, and the adapters
//! (GitHub, the webhook server) read it back.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::gate::diff::{BlockDiff, Family};
use crate::gate::features::MonitorFeatures;
use crate::gate::policy::Policy;
pub use crate::gate::policy::Rung;
use crate::gate::repair::realign;
use crate::gate::revalidate::EvalResult;
use crate::gate::risk::{self, HistoryRow, Risk};

pub const REPORT_SCHEMA: &str = "probegate.report";
pub const REPORT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    PassWithRepairs,
    Fail,
}

impl Verdict {
    /// The name report.json uses (`pass`, `pass_with_repairs`, `fail`).
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::PassWithRepairs => "pass_with_repairs",
            Verdict::Fail => "fail",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Revalidated and within the policy's limits.
    Healthy,
    /// Stale, repaired by label-free realignment (verified if the policy says so).
    Repaired,
    /// Stale and not repaired.
    Stale,
    /// Outside the budget: not revalidated.
    Unverified,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RealignReport {
    pub method: realign::Method,
    /// Label-free selection error (held-out unlabeled prompts, base-logit variance units).
    pub heldout_error: f64,
    /// The same error with no map: a map must beat it to be applied.
    pub identity_error: f64,
    pub prompts: usize,
    /// Labeled metrics of the repaired monitor through the candidate.
    pub after: EvalResult,
    pub stale_reasons_after: Vec<String>,
    pub verified: bool,
    /// Where the repaired monitor was written (relative to the output directory).
    pub written_to: Option<String>,
    /// Every method's labeled result, for auditing the label-free choice
    /// (never used to choose: that would spend the labels the choice must not see).
    #[serde(default)]
    pub alternatives: Vec<Alternative>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Alternative {
    pub method: realign::Method,
    pub heldout_error: f64,
    pub auroc: f64,
    pub balanced_accuracy: f64,
    pub would_pass: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MonitorReport {
    pub name: String,
    pub concept: String,
    pub layer: usize,
    pub critical: bool,
    pub status: Status,
    /// The rung of the repair ladder this monitor needed.
    pub rung: Rung,
    pub risk: Risk,
    pub features: MonitorFeatures,
    pub eval: Option<EvalResult>,
    pub stale_reasons: Vec<String>,
    pub realignment: Option<RealignReport>,
    /// Rung 2: the threshold chosen again on a few labeled training examples.
    #[serde(default)]
    pub recalibration: Option<RungReport>,
    /// Rung 3: the probe retrained on the candidate's activations.
    #[serde(default)]
    pub retraining: Option<RungReport>,
    /// The repaired monitor's directory under the output directory.
    #[serde(default)]
    pub repaired_monitor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RungReport {
    /// Labeled training examples this rung ran through the candidate.
    pub examples: usize,
    pub threshold: Option<f64>,
    pub after: EvalResult,
    pub stale_reasons_after: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelInfo {
    pub reference: String,
    pub fingerprint: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiffSummary {
    pub family: Family,
    pub evidence: Vec<String>,
    pub blocks: Vec<BlockDiff>,
    pub kinds: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BudgetUse {
    pub examples_limit: usize,
    pub examples_used: usize,
    /// Examples a full revalidation of every monitor would run.
    pub examples_full: usize,
    pub seconds_limit: Option<f64>,
    pub full_revalidation: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    pub version: u32,
    pub probegate_version: String,
    pub verdict: Verdict,
    pub reasons: Vec<String>,
    pub warnings: Vec<String>,
    pub base: ModelInfo,
    pub candidate: ModelInfo,
    pub condition: Option<String>,
    pub policy: Policy,
    pub diff: DiffSummary,
    pub budget: BudgetUse,
    pub monitors: Vec<MonitorReport>,
    pub corpus_prompts: usize,
    pub seconds: BTreeMap<String, f64>,
}

impl Report {
    /// The base's short id (`smollm2`, a file stem): the history's model and
    /// the leave-one-model-out unit.
    pub fn model_id(&self) -> String {
        let b = &self.base.reference;
        Path::new(b)
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| b.clone())
    }

    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut c = BTreeMap::new();
        for m in &self.monitors {
            let k = match m.status {
                Status::Healthy => "healthy",
                Status::Repaired => "repaired",
                Status::Stale => "stale",
                Status::Unverified => "unverified",
            };
            *c.entry(k).or_insert(0) += 1;
        }
        c
    }

    /// History rows for every revalidated monitor.
    pub fn history(&self, model: &str) -> Vec<HistoryRow> {
        self.monitors
            .iter()
            .filter_map(|m| {
                let e = m.eval.as_ref()?;
                Some(HistoryRow::new(
                    model,
                    &self.candidate.reference,
                    &self.candidate.fingerprint,
                    self.condition.clone(),
                    m.features.clone(),
                    risk::Outcome {
                        auroc: e.auroc,
                        delta_auroc: e.delta_auroc,
                        balanced_accuracy: e.balanced_accuracy,
                        delta_balanced_accuracy: e.balanced_accuracy - e.base_balanced_accuracy,
                        stale_auroc: e.delta_auroc <= -0.05 + 1e-12,
                        stale_policy: !m.stale_reasons.is_empty(),
                    },
                ))
            })
            .collect()
    }
}

/// How a gate run ended, as every adapter reports it: the verdict, or
/// "could not evaluate". It knows its process exit code, so the CLI, the
/// hook and the server agree on what 0, 1 and 2 mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    PassWithRepairs,
    Fail,
    /// The gate could not evaluate the candidate: never a pass.
    Error,
}

impl Outcome {
    pub const EXIT_OK: i32 = 0;
    pub const EXIT_GATE_FAILED: i32 = 1;
    pub const EXIT_ERROR: i32 = 2;

    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Pass | Outcome::PassWithRepairs => Self::EXIT_OK,
            Outcome::Fail => Self::EXIT_GATE_FAILED,
            Outcome::Error => Self::EXIT_ERROR,
        }
    }

    /// The name report.json and the registries' tags use.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::PassWithRepairs => "pass_with_repairs",
            Outcome::Fail => "fail",
            Outcome::Error => "error",
        }
    }

    /// The worse of two runs (several candidates in one push or job):
    /// could-not-evaluate outranks a failed gate, which outranks a pass.
    pub fn worst(self, other: Outcome) -> Outcome {
        let rank = |o: Outcome| match o {
            Outcome::Pass => 0,
            Outcome::PassWithRepairs => 1,
            Outcome::Fail => 2,
            Outcome::Error => 3,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

impl From<Verdict> for Outcome {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Pass => Outcome::Pass,
            Verdict::PassWithRepairs => Outcome::PassWithRepairs,
            Verdict::Fail => Outcome::Fail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_know_their_exit_codes_and_the_worst_wins() {
        assert_eq!(Outcome::from(Verdict::Pass).exit_code(), 0);
        assert_eq!(Outcome::from(Verdict::PassWithRepairs).exit_code(), 0);
        assert_eq!(Outcome::from(Verdict::Fail).exit_code(), 1);
        assert_eq!(Outcome::Error.exit_code(), 2);
        assert_eq!(Outcome::Fail.worst(Outcome::Error), Outcome::Error);
        assert_eq!(Outcome::Error.worst(Outcome::Pass), Outcome::Error);
        assert_eq!(Outcome::Pass.worst(Outcome::Fail), Outcome::Fail);
        for v in [Verdict::Pass, Verdict::PassWithRepairs, Verdict::Fail] {
            assert_eq!(Outcome::from(v).as_str(), v.as_str());
        }
        assert_eq!(serde_json::to_value(Outcome::Error).unwrap(), "error");
    }
}
