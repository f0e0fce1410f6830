//! The budgeted gate replayed on a full revalidation: what the grid and
//! `risk eval` use to measure the budget's cost and its false passes
//! without running the models again.

use crate::gate::policy::Policy;
use crate::gate::report::{Report, Status};
use crate::gate::revalidate::plan;
use crate::gate::risk::RiskModel;
use crate::gate::verdict::{decide, Decision};

/// Replays a full-revalidation report (the grid's ground truth) as the
/// budgeted gate would have run it under `policy` with risks from `model`:
/// the monitors the budget would not have reached become unverified.
pub fn replay_budgeted(full: &Report, policy: &Policy, model: &RiskModel) -> Report {
    let mut r = full.clone();
    for m in r.monitors.iter_mut() {
        m.risk = model.predict(&m.features);
        m.critical = policy.is_critical(&m.name, &m.concept);
    }
    let order = plan(
        r.monitors
            .iter()
            .map(|m| (m.concept.as_str(), m.critical, m.risk.p_stale)),
    );
    let size = |c: &str| {
        r.monitors
            .iter()
            .find(|m| m.concept == c)
            .and_then(|m| m.eval.as_ref())
            .map(|e| e.n)
            .unwrap_or(0)
    };
    let mut used = 0;
    let mut reached = Vec::new();
    for (c, crit) in &order {
        let n = size(c);
        if *crit || used + n <= policy.budget.examples {
            used += n;
            reached.push(c.clone());
        }
    }
    for m in r.monitors.iter_mut() {
        if !reached.contains(&m.concept) {
            m.status = Status::Unverified;
        }
    }
    let Decision {
        verdict: v,
        reasons,
        warnings,
        failed_by,
    } = decide(policy, r.diff.family, &r.monitors, r.corpus_prompts);
    r.verdict = v;
    r.reasons = reasons;
    r.failed_by = failed_by;
    r.warnings = warnings;
    r.budget.examples_used = used;
    r.budget.examples_limit = policy.budget.examples;
    r.budget.full_revalidation = false;
    r
}
