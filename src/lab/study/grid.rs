//! The study's grid: every zoo condition through the gate with full
//! revalidation (the ground truth the study is built from), and the
//! summary of a grid's reports replayed as the budgeted gate would run.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::gate::diff::Family;
use crate::gate::policy::Policy;
use crate::gate::prepare::Progress;
use crate::gate::report::{ReportFile, Status, Verdict};
use crate::gate::revalidate::DataSource;
use crate::gate::risk::RiskModel;
use crate::gate::{self, GateRequest, Report};
use crate::lab::zoo::{Manifest, MANIFEST};

/// What `study grid` is asked to run.
pub struct GridRequest<'a> {
    /// A zoo directory (its manifest names the base and the conditions).
    pub zoo: &'a Path,
    pub monitors: &'a Path,
    pub policy: &'a Policy,
    pub risk_model: &'a RiskModel,
    pub data: DataSource,
    /// History rows are appended here (never for budgeted runs: their
    /// unverified monitors have no outcome to learn from).
    pub history: Option<&'a Path>,
    /// Run each condition as the policy says (budget, sequential looks, the
    /// ladder as configured) instead of the ground truth: the gate a user
    /// gets, to compare with the grid's full revalidation.
    pub budgeted: bool,
    /// Each condition's report is written to `<reports>/<condition>/`.
    pub reports: Option<&'a Path>,
    /// Only these conditions, in this order (empty: all, the base first).
    pub only: Vec<String>,
}

/// The conditions of a zoo as (name, model reference), the base itself first
/// as `identical`; with `only`, those conditions in that order.
pub fn conditions(manifest: &Manifest, only: &[String]) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = vec![("identical".into(), manifest.base.clone())];
    all.extend(
        manifest
            .conditions
            .iter()
            .map(|b| (b.name.clone(), b.reference.clone())),
    );
    if !only.is_empty() {
        all.retain(|(n, _)| only.contains(n));
        all.sort_by_key(|(n, _)| only.iter().position(|o| o == n));
    }
    all
}

/// Runs every condition of the grid, calling `each` after each one with
/// its (position, total, name, report).
pub fn grid(
    req: &GridRequest,
    progress: Progress,
    each: &mut dyn FnMut(usize, usize, &str, &Report),
) -> Result<()> {
    let manifest = Manifest::load(&req.zoo.join(MANIFEST))?;
    let conditions = conditions(&manifest, &req.only);
    for (i, (name, reference)) in conditions.iter().enumerate() {
        let gr = GateRequest {
            base: manifest.base.clone(),
            candidate: reference.clone(),
            monitors: req.monitors.to_path_buf(),
            data: req.data.clone(),
            policy: req.policy.clone(),
            risk_model: req.risk_model.clone(),
            full_revalidation: !req.budgeted,
            every_rung: !req.budgeted,
            condition: Some(name.clone()),
            run: None,
            shard: None,
        };
        let out = gate::run_and_record(
            &gr,
            req.reports.map(|d| d.join(name)).as_deref(),
            req.history.filter(|_| !req.budgeted),
            progress,
        )?;
        each(i, conditions.len(), name, &out.report);
    }
    Ok(())
}

/// The budgeted gate's run of one condition against full revalidation, the
/// truth. Computed here once for `study summarize` and STUDY.md alike, so
/// the two cannot disagree on what a false pass is.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub full_verdict: Verdict,
    pub budgeted_verdict: Verdict,
    /// Labeled examples the budgeted gate used, and what full revalidation used.
    pub examples_used: usize,
    pub examples_full: usize,
    /// Monitors the policy calls stale under full revalidation.
    pub stale_policy: usize,
    /// Monitors full revalidation repaired.
    pub repaired: usize,
    /// Monitors full revalidation leaves stale: all, and the critical ones.
    pub stale_unrepaired: usize,
    pub critical_stale_unrepaired: usize,
    /// Monitors full revalidation repaired that the budgeted gate neither
    /// repaired nor failed on: on a pass they ship stale, unrepaired.
    #[serde(default)]
    pub repairs_missed: usize,
    /// The budgeted gate passes while a monitor stale on the candidate ships
    /// unrepaired, critical or not (issue #18's definition): one full
    /// revalidation cannot repair, or one it repairs that the budgeted gate
    /// did not.
    pub false_pass: bool,
    /// A false pass that hides a critical monitor.
    pub false_pass_critical: bool,
    /// The budgeted gate fails a candidate full revalidation passes.
    pub false_fail: bool,
}

impl Comparison {
    /// `full` is the truth, `budgeted` the budgeted gate's report (run or replayed).
    pub fn of(full: &Report, budgeted: &Report, policy: &Policy) -> Self {
        let passes = budgeted.verdict != Verdict::Fail;
        let count = |f: &dyn Fn(&gate::report::MonitorReport) -> bool| {
            full.monitors.iter().filter(|m| f(m)).count()
        };
        let (all, critical) = (
            stale_unrepaired(full, policy, false),
            stale_unrepaired(full, policy, true),
        );
        let missed = repairs_missed(full, budgeted, policy, false);
        let critical_missed = repairs_missed(full, budgeted, policy, true);
        Comparison {
            full_verdict: full.verdict,
            budgeted_verdict: budgeted.verdict,
            examples_used: budgeted.budget.examples_used,
            examples_full: full.budget.examples_full,
            stale_policy: count(&|m| !m.stale_reasons.is_empty()),
            repaired: count(&|m| m.status == Status::Repaired),
            stale_unrepaired: all,
            critical_stale_unrepaired: critical,
            repairs_missed: missed,
            false_pass: passes && all + missed > 0,
            false_pass_critical: passes && critical + critical_missed > 0,
            false_fail: !passes && full.verdict != Verdict::Fail,
        }
    }
}

/// One condition of a grid (`study summarize`): full revalidation against
/// the budgeted gate, run or replayed.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryRow {
    pub condition: String,
    pub family: Family,
    /// Monitors whose AUROC dropped by 0.05 or more.
    pub stale_auroc: usize,
    #[serde(flatten)]
    pub compared: Comparison,
    /// Whether the budgeted figures come from a real run under the policy
    /// (`study grid --budgeted`) rather than a replay of the full report.
    pub ran: bool,
}

/// Monitors a full revalidation leaves stale (so unrepaired): all, or the
/// critical ones under `policy`. What a budgeted pass must not hide.
fn stale_unrepaired(full: &Report, policy: &Policy, crit_only: bool) -> usize {
    full.monitors
        .iter()
        .filter(|m| {
            m.status == Status::Stale && (!crit_only || policy.is_critical(&m.name, &m.concept))
        })
        .count()
}

/// Monitors full revalidation repaired (so stale on the candidate) that
/// the budgeted gate left unverified or healthy: all, or the critical ones.
/// What it repaired or failed on is not missed.
fn repairs_missed(full: &Report, budgeted: &Report, policy: &Policy, crit_only: bool) -> usize {
    full.monitors
        .iter()
        .filter(|m| {
            m.status == Status::Repaired
                && (!crit_only || policy.is_critical(&m.name, &m.concept))
                && budgeted
                    .monitors
                    .iter()
                    .find(|b| b.name == m.name)
                    .is_none_or(|b| !matches!(b.status, Status::Repaired | Status::Stale))
        })
        .count()
}

/// The directories under `dir` that hold a report.json (a grid's
/// conditions), sorted so that every listing of a grid is in one order.
pub fn report_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("report.json").is_file())
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// A condition's report, or an error naming the file: a condition left
/// out would vanish from the false-pass count unseen.
pub(crate) fn decided(d: &Path) -> Result<Report> {
    match ReportFile::read(d)? {
        ReportFile::Decided(r) => Ok(*r),
        ReportFile::Error(e) => Err(Error::field(
            d.join("report.json"),
            "verdict",
            format!(
                "the grid could not evaluate this condition ({}); rerun it",
                e.error
            ),
        )),
    }
}

/// Why a sequential policy's budgeted gate cannot be replayed from full
/// reports, and what to pass instead.
pub fn no_replay(policy: &Policy) -> Error {
    Error::Usage(format!(
        "policy {} revalidates sequentially, which a replay of full reports cannot redo: run \
         the conditions under it (`study grid --budgeted --reports DIR`) and pass that \
         directory with --budgeted DIR",
        policy.name
    ))
}

/// Every `<reports>/<condition>/report.json` of a grid against the
/// budgeted gate under `policy`: the real budgeted run of the same
/// condition under `budgeted/<condition>/` when given, else the full report
/// replayed as the budgeted gate would have run it (whole-set mode only:
/// a replay cannot redo sequential looks, so a sequential policy needs the
/// real runs).
pub fn summarize(
    reports: &Path,
    budgeted: Option<&Path>,
    policy: &Policy,
    model: &RiskModel,
) -> Result<Vec<SummaryRow>> {
    let mut rows = Vec::new();
    for d in report_dirs(reports)? {
        let full = decided(&d)?;
        let ran = match budgeted {
            Some(dir) => {
                let name = d.file_name().unwrap_or_default();
                Some(decided(&dir.join(name))?)
            }
            None if policy.revalidation.mode
                == crate::gate::policy::RevalidationMode::Sequential =>
            {
                return Err(no_replay(policy))
            }
            None => None,
        };
        let b = match &ran {
            Some(r) => r.clone(),
            None => gate::replay::replay_budgeted(&full, policy, model),
        };
        rows.push(SummaryRow {
            condition: full.condition.clone().unwrap_or_else(|| {
                d.file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default()
            }),
            family: full.diff.family,
            stale_auroc: full
                .monitors
                .iter()
                .filter(|m| {
                    m.eval
                        .as_ref()
                        .is_some_and(|e| e.delta_auroc <= super::BIG_DROP + 1e-12)
                })
                .count(),
            compared: Comparison::of(&full, &b, policy),
            ran: ran.is_some(),
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::repair::MonitorReport;

    /// self_harm-l22 (critical), refusal_compliance-l22 and toxicity-l22 in
    /// `states`, in that order.
    fn report(verdict: Verdict, states: [Status; 3]) -> Report {
        let mut r = Report::example();
        r.verdict = verdict;
        r.monitors = ["self_harm-l22", "refusal_compliance-l22", "toxicity-l22"]
            .iter()
            .zip(states)
            .map(|(n, s)| MonitorReport::example(n, s, n.starts_with("self_harm")))
            .collect();
        r
    }

    /// SmolLM2 full-support on the v2 grid: full revalidation repaired
    /// refusal_compliance-l22, the budgeted gate passed with it unverified,
    /// so it shipped stale. A pass that misses a repair is a false pass; one
    /// that makes the repair, or fails on it, is not.
    #[test]
    fn a_pass_that_ships_a_monitor_full_revalidation_repaired_is_a_false_pass() {
        use Status::{Healthy, Repaired, Unverified};
        let policy = Policy::shipped_default();
        let full = report(Verdict::PassWithRepairs, [Repaired, Repaired, Healthy]);
        let judge = |v, states| Comparison::of(&full, &report(v, states), &policy);

        let c = judge(Verdict::PassWithRepairs, [Repaired, Unverified, Unverified]);
        assert_eq!((c.stale_unrepaired, c.repairs_missed), (0, 1));
        assert!(c.false_pass && !c.false_pass_critical && !c.false_fail);

        let c = judge(Verdict::Pass, [Healthy, Repaired, Healthy]);
        assert!(c.false_pass && c.false_pass_critical);

        let c = judge(Verdict::PassWithRepairs, [Repaired, Repaired, Unverified]);
        assert_eq!(c.repairs_missed, 0);
        assert!(!c.false_pass);

        let c = judge(Verdict::Fail, [Repaired, Unverified, Unverified]);
        assert!(!c.false_pass && c.false_fail);
    }
}
