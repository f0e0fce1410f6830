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
pub use crate::gate::verdict::{Outcome, Verdict};

pub const REPORT_SCHEMA: &str = "probegate.report";
pub const REPORT_VERSION: u32 = 1;

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

/// report.json when the gate could not evaluate the candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReport {
    pub schema: String,
    pub version: u32,
    /// Always [`Outcome::Error`]: the field every reader checks first.
    pub verdict: Outcome,
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
        let text = std::fs::read_to_string(&path).map_err(|e| crate::error::Error::io(&path, e))?;
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
