//! The verdict: what the policy makes of every monitor's state after the
//! ladder — pass, pass with repairs, or fail with its reasons — and the
//! warnings a reviewer should read. A pure function of plain data, so its
//! rules are tested as cases (tests/cases/verdict/) with no model.

use crate::gate::diff::Family;
use crate::gate::policy::{Policy, Rung, Unverified};
use crate::gate::repair::MonitorReport;
use crate::gate::revalidate::sequential::Stop;
use crate::gate::revalidate::Status;

crate::util::choices! {
    /// What the gate decided (report.json's `verdict`).
    pub enum Verdict {
        /// Every monitor healthy on the candidate.
        Pass = "pass",
        /// Healthy once the stale monitors are replaced by their repairs.
        PassWithRepairs = "pass_with_repairs",
        /// A monitor the policy fails on, or an update it does not allow.
        Fail = "fail",
    }
}

crate::util::choices! {
    /// How a gate run ended, as every adapter reports it: the verdict, or
    /// "could not evaluate". It knows its process exit code, so the CLI, the
    /// hook and the server agree on what 0, 1 and 2 mean.
    pub enum Outcome {
        /// The gate passed the candidate.
        Pass = "pass",
        /// Passed with repaired monitors.
        PassWithRepairs = "pass_with_repairs",
        /// The gate failed the candidate.
        Fail = "fail",
        /// The gate could not evaluate the candidate: never a pass.
        Error = "error",
    }
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

/// What the policy makes of the monitors' states: the verdict, the reasons
/// it fails (empty unless it does) and the warnings a reviewer should read.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub verdict: Verdict,
    pub reasons: Vec<String>,
    pub warnings: Vec<String>,
    /// The monitors whose state fails the candidate, each named by a
    /// reason: what adapters count without re-deriving the rules.
    pub failed_by: Vec<String>,
}

pub fn decide(
    policy: &Policy,
    family: Family,
    monitors: &[MonitorReport],
    corpus_prompts: usize,
) -> Decision {
    let mut fail = Vec::new();
    let mut warn = Vec::new();
    // A candidate identical to its base changed nothing, so nothing can be
    // its fault: whatever a monitor shows is a fact about the suite.
    let identical = family == Family::Identical;
    if let Some(allowed) = &policy.allowed_families {
        if !allowed.contains(&family) && !identical {
            fail.push(format!(
                "the candidate is a {family:?} update; policy `{}` allows only {allowed:?}",
                policy.name
            ));
        }
    }
    // The least risky monitor (by the risk model) that this candidate was
    // measured to make stale, repaired or not: where the model's scale
    // stands on this candidate. An unverified monitor ranked at or above it
    // is, by the model's own ordering, as likely stale as one that is.
    let least_risky_stale = monitors
        .iter()
        .filter(|m| matches!(m.status, Status::Stale | Status::Repaired))
        .min_by(|a, b| a.risk.p_stale.total_cmp(&b.risk.p_stale))
        .filter(|_| policy.unverified_fail_as_risky_as_stale);
    let mut failed_by = Vec::new();
    // Monitors revalidation stopped short of because the verdict was
    // already fail (`budget.stop_at_verdict`): not the budget's doing.
    let mut cut_short = Vec::new();
    for m in monitors {
        let failing_before = fail.len();
        let decided = m
            .sequential
            .as_ref()
            .is_some_and(|t| t.stopped == Stop::Decided);
        match m.status {
            Status::Unverified if decided => cut_short.push(m),
            Status::Stale => {
                let tried: Vec<&str> = [
                    (Rung::Realignment, m.realignment.is_some()),
                    (Rung::Recalibration, m.recalibration.is_some()),
                    (Rung::Retraining, m.retraining.is_some()),
                ]
                .iter()
                .filter(|(_, t)| *t)
                .map(|(n, _)| n.as_str())
                .collect();
                // A rung the budget left no labels for: the fail may be the
                // budget's, and the fix is in the policy.
                let starved = if m.not_climbed {
                    " (the ladder was not climbed: the verdict was already fail; budget.stop_at_verdict)"
                        .to_string()
                } else if m.skipped.is_empty() {
                    m.ruled_out
                        .iter()
                        .map(|x| format!(" (ruled out: {x})"))
                        .collect()
                } else {
                    format!(
                        " (not tried: {}; raise budget.examples or budget.repair_reserve)",
                        m.skipped.join("; ")
                    )
                };
                fail.push(format!(
                    "{}{} is stale{}: {}{starved}",
                    m.name,
                    if m.critical { " (critical)" } else { "" },
                    if tried.is_empty() {
                        String::new()
                    } else {
                        format!(" and {} did not repair it", tried.join(", "))
                    },
                    m.stale_reasons.join("; "),
                ))
            }
            Status::Repaired if !policy.may_pass(m.rung) => fail.push(format!(
                "{} is stale ({}); {} repaired it but policy `{}` does not let that rung pass",
                m.name,
                m.stale_reasons.join("; "),
                m.rung,
                policy.name
            )),
            // The policy promised critical monitors would be checked: one the
            // budget left unsettled (sequential revalidation's hard cap) is
            // never waved through as a warning.
            Status::Unverified if m.critical => fail.push(format!(
                "{} (critical) was not settled within the budget of {} labeled examples; raise budget.examples",
                m.name, policy.budget.examples
            )),
            Status::Unverified => {
                let msg = format!(
                    "{} was not revalidated within the budget (predicted risk {:.2})",
                    m.name, m.risk.p_stale
                );
                match (policy.unverified, policy.unverified_fail_risk) {
                    (Unverified::Fail, _) => fail.push(msg),
                    // Passing a monitor the risk model calls likely stale,
                    // with nothing measured against it, is a pass on faith.
                    (Unverified::Warn, Some(at)) if m.risk.p_stale >= at => fail.push(format!(
                        "{msg}, at or above unverified_fail_risk {at:.2}; raise budget.examples"
                    )),
                    (Unverified::Warn, _) => match least_risky_stale {
                        Some(s) if m.risk.p_stale >= s.risk.p_stale => fail.push(format!(
                            "{msg}, at or above {} ({:.2}), which this candidate made stale; \
                             raise budget.examples",
                            s.name, s.risk.p_stale
                        )),
                        _ => warn.push(msg),
                    },
                }
            }
            _ => {}
        }
        if fail.len() > failing_before {
            failed_by.push(m.name.clone());
        }
    }
    if !cut_short.is_empty() {
        let names: Vec<&str> = cut_short.iter().map(|m| m.name.as_str()).collect();
        // Their concept texts wait for revalidation to reach their concept
        // (gate::deferred), so a run decided first priced them without.
        let unpriced = cut_short
            .iter()
            .filter(|m| m.features.concept_shift.is_none())
            .count();
        let mut msg = format!(
            "{} monitor(s) not revalidated: the verdict was fail before their turn \
             (budget.stop_at_verdict; `check --full` revalidates every one): {}",
            names.len(),
            names.join(", ")
        );
        if unpriced > 0 {
            msg.push_str(&format!(
                "; the predicted risk of {unpriced} of them reads no concept features"
            ));
        }
        // The rule that decided the run still fails it; were it gone (a
        // report judged under other rules), monitors never looked at must
        // not pass on faith.
        if fail.is_empty() {
            fail.push(msg);
            failed_by.extend(names.iter().map(|n| n.to_string()));
        } else {
            warn.push(msg);
        }
    }
    if identical {
        failed_by.clear();
        warn.extend(fail.drain(..).map(|f| {
            format!("suite (the candidate is identical to its base, so this is not the candidate's doing): {f}")
        }));
    }
    if policy.realignment.enabled && corpus_prompts < policy.realignment.min_prompts {
        warn.push(format!(
            "realignment was not attempted: {corpus_prompts} corpus prompts, the policy needs {}",
            policy.realignment.min_prompts
        ));
    }
    let any_repaired = monitors.iter().any(|m| m.status == Status::Repaired);
    let verdict = if !fail.is_empty() {
        Verdict::Fail
    } else if any_repaired {
        Verdict::PassWithRepairs
    } else {
        Verdict::Pass
    };
    Decision {
        verdict,
        reasons: fail,
        warnings: warn,
        failed_by,
    }
}

#[cfg(test)]
mod tests;
