//! The report's types: what a check decided and why, as report.json holds
//! it (schema `probegate.report`, docs/report.md). Plain data: the gate
//! produces it, the writers beside this file render it, and the adapters
//! (GitHub, the webhook server) read it back.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::gate::diff::{BlockDiff, Family};
use crate::gate::policy::Policy;
pub use crate::gate::policy::Rung;
pub use crate::gate::repair::{Alternative, MonitorReport, RealignReport, RungReport};
pub use crate::gate::revalidate::Status;
use crate::gate::risk::{self, HistoryRow};
pub use crate::gate::shard::ShardInfo;
pub use crate::gate::verdict::{Outcome, Verdict};

pub const REPORT_SCHEMA: &str = "probegate.report";
pub const REPORT_VERSION: u32 = 1;

/// The base or the candidate, as the report names it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The model reference as given (a path, `hf:org/name`, `nf4(X)`, `X+ADAPTER`).
    pub reference: String,
    /// Hex sha256 of the weight files; what-if and adapter candidates hash
    /// their recipe in too, so the same bytes always give the same value.
    pub fingerprint: String,
}

/// What changed between base and candidate (the `diff` stage, without its
/// per-tensor rows).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiffSummary {
    /// The update family the weight changes look like.
    pub family: Family,
    /// The observations the family was named from, one sentence each.
    pub evidence: Vec<String>,
    /// Per decoder block: the RMS of its tensors' ‖ΔW‖/‖W‖ and how many changed.
    pub blocks: Vec<BlockDiff>,
    /// Root mean square ‖ΔW‖/‖W‖ per module kind (attn_q, mlp_up, norm, embed...).
    pub kinds: BTreeMap<String, f64>,
}

/// Labeled examples run through the candidate, against the policy's budget.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BudgetUse {
    /// The policy's `budget.examples`.
    pub examples_limit: usize,
    /// Examples revalidation and the repair rungs actually ran.
    pub examples_used: usize,
    /// Examples a full revalidation of every monitor would run.
    pub examples_full: usize,
    /// The policy's `budget.seconds` for revalidation; `None`: no limit.
    pub seconds_limit: Option<f64>,
    /// Every monitor was revalidated whatever the budget (the grid's ground truth).
    pub full_revalidation: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Always [`REPORT_SCHEMA`].
    pub schema: String,
    /// [`REPORT_VERSION`]: bumped when a field is removed or changes meaning.
    pub version: u32,
    /// The probegate that wrote the report.
    pub probegate_version: String,
    pub verdict: Verdict,
    /// Why the gate failed; empty unless the verdict is `fail`.
    pub reasons: Vec<String>,
    /// The monitors whose state is one of `reasons` (stale and unrepaired,
    /// repaired by a rung the policy does not accept, or unverified under a
    /// rule that fails it), so a reader counts them without re-deriving the
    /// policy's rules. Absent in reports written before it existed.
    #[serde(default)]
    pub failed_by: Vec<String>,
    /// What a pass should not hide (e.g. monitors left unverified); findings
    /// about the suite itself start with `suite:`.
    pub warnings: Vec<String>,
    pub base: ModelInfo,
    pub candidate: ModelInfo,
    /// The zoo condition the candidate was built under, for grid runs.
    pub condition: Option<String>,
    /// The policy as parsed, every field filled in.
    pub policy: Policy,
    pub diff: DiffSummary,
    pub budget: BudgetUse,
    /// Every monitor of the suite, riskiest first.
    pub monitors: Vec<MonitorReport>,
    /// Unlabeled prompts run through both models for features and realignment.
    pub corpus_prompts: usize,
    /// Wall-clock seconds per stage (load, diff, features, revalidation,
    /// realignment: the whole repair ladder) and in `total`.
    pub seconds: BTreeMap<String, f64>,
    /// Present when the run judged one shard of the suite (`--shard I/N`);
    /// absent in whole-suite and merged reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardInfo>,
    /// Present when `report rejudge` decided this report again under
    /// `policy`: the policy the models ran under and what it decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejudged: Option<Rejudged>,
}

/// Where a rejudged report's run came from (`report rejudge`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejudged {
    /// The name of the policy the models ran under.
    pub policy: String,
    /// Where that policy was read from.
    pub source: String,
    /// Its verdict.
    pub verdict: Verdict,
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

    /// The warnings that are findings about the suite (before the
    /// verdict's own), in order.
    pub fn suite_findings(&self) -> impl Iterator<Item = &String> {
        self.warnings
            .iter()
            .filter(|w| w.starts_with(crate::gate::revalidate::SUITE_FINDING))
    }

    /// Whether the verdict names monitor `name` among those failing it.
    pub fn fails(&self, name: &str) -> bool {
        self.failed_by.iter().any(|n| n == name)
    }

    /// The fail reason about monitor `name`, when the verdict names it in
    /// `failed_by` (each such reason starts with the name and a space, so
    /// `x-l1` never takes `x-l13`'s).
    pub fn fail_reason(&self, name: &str) -> Option<&String> {
        if !self.fails(name) {
            return None;
        }
        self.reasons.iter().find(|r| is_about(r, name))
    }

    /// The fail reasons about no monitor the verdict names (e.g. an update
    /// family the policy does not allow).
    pub fn unattributed_reasons(&self) -> impl Iterator<Item = &String> {
        self.reasons
            .iter()
            .filter(|r| !self.failed_by.iter().any(|n| is_about(r, n)))
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
                        stale_auroc: e.delta_auroc
                            <= -crate::gate::revalidate::RANKING_DROP + 1e-12,
                        stale_policy: !m.stale_reasons.is_empty(),
                        stale_operating_point: m.breaks.map(|b| b.operating_point),
                        trials: m.trials.clone(),
                    },
                ))
            })
            .collect()
    }

    /// [`Report::example`] failed: `monitors`, the verdict's `reasons` and
    /// the monitors it names in `failed_by`, for tests of what readers make
    /// of a fail.
    #[cfg(test)]
    pub(crate) fn example_failed(
        monitors: Vec<crate::gate::repair::MonitorReport>,
        reasons: &[&str],
        failed_by: &[&str],
    ) -> Self {
        let mut r = Self::example();
        r.verdict = Verdict::Fail;
        r.monitors = monitors;
        r.reasons = reasons.iter().map(|s| s.to_string()).collect();
        r.failed_by = failed_by.iter().map(|s| s.to_string()).collect();
        r
    }

    /// A decided report of a LoRA candidate with no monitors, for tests to
    /// fill in: the default policy, 600 corpus prompts.
    #[cfg(test)]
    pub(crate) fn example() -> Self {
        Report {
            schema: REPORT_SCHEMA.into(),
            version: REPORT_VERSION,
            probegate_version: "0.0.0".into(),
            verdict: Verdict::Pass,
            reasons: vec![],
            failed_by: vec![],
            warnings: vec![],
            base: ModelInfo {
                reference: "smollm2".into(),
                fingerprint: "b".into(),
            },
            candidate: ModelInfo {
                reference: "smollm2+adapter".into(),
                fingerprint: "c".into(),
            },
            condition: None,
            policy: Policy::shipped_default(),
            diff: DiffSummary {
                family: Family::LowRankAdapter,
                evidence: vec![],
                blocks: vec![],
                kinds: BTreeMap::new(),
            },
            budget: BudgetUse {
                examples_limit: 720,
                examples_used: 0,
                examples_full: 0,
                seconds_limit: None,
                full_revalidation: false,
            },
            monitors: vec![],
            corpus_prompts: 600,
            seconds: BTreeMap::new(),
            shard: None,
            rejudged: None,
        }
    }
}

/// A verdict reason is about a monitor when it starts with its name and a space.
fn is_about(reason: &str, name: &str) -> bool {
    reason
        .strip_prefix(name)
        .is_some_and(|rest| rest.starts_with(' '))
}

/// report.json when the gate could not evaluate the candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReport {
    /// Always [`REPORT_SCHEMA`].
    pub schema: String,
    /// [`REPORT_VERSION`].
    pub version: u32,
    /// Always [`Outcome::Error`]: the field every reader checks first.
    pub verdict: Outcome,
    /// The error that stopped the gate.
    pub error: String,
}

impl ErrorReport {
    pub fn new(error: &str) -> Self {
        ErrorReport {
            schema: REPORT_SCHEMA.into(),
            version: REPORT_VERSION,
            verdict: Outcome::Error,
            error: error.into(),
        }
    }
}

/// report.json as the adapters read it back: a decided gate or an error.
#[derive(Debug, Clone)]
pub enum ReportFile {
    Decided(Box<Report>),
    Error(ErrorReport),
}

impl ReportFile {
    /// Reads `<dir>/report.json`. A file that is neither a report nor an
    /// error report of this schema is an error naming the file.
    pub fn read(dir: &Path) -> crate::error::Result<Self> {
        let path = dir.join("report.json");
        let text = crate::assets::read_small_text(&path, "report")?;
        let bad = |msg: String| crate::error::Error::field(&path, "(contents)", msg);
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        if v["schema"] != REPORT_SCHEMA {
            return Err(bad(format!(
                "schema is {}, not {REPORT_SCHEMA}",
                v["schema"]
            )));
        }
        if v["verdict"] == Outcome::Error.as_str() {
            return serde_json::from_value(v)
                .map(ReportFile::Error)
                .map_err(|e| bad(format!("error report: {e}")));
        }
        serde_json::from_value(v)
            .map(|r| ReportFile::Decided(Box::new(r)))
            .map_err(|e| bad(format!("report: {e}")))
    }

    pub fn outcome(&self) -> Outcome {
        match self {
            ReportFile::Decided(r) => r.verdict.into(),
            ReportFile::Error(_) => Outcome::Error,
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
