//! The budgeted gate replayed on a full revalidation: what the grid and
//! `risk eval` use to measure the budget's cost and its false passes
//! without running the models again.

use crate::gate::policy::Policy;
use crate::gate::report::{Report, Status};
use crate::gate::revalidate::plan;
use crate::gate::risk::RiskModel;
use crate::gate::verdict::{decide, Decision, Verdict};

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

/// What a complete run (`budget.stop_at_verdict` off) would have spent had
/// it stopped at its verdict: `Some(labeled examples)` when its verdict is
/// fail with every revalidated monitor taken as healthy — decided before
/// the repair ladder, so only revalidation's examples are spent (per
/// concept, the most any of its monitors was judged on) — and `None` when
/// it would have run as it did. Exact for the before-the-ladder case, which
/// is the one the v2 grid's failing runs hit (STUDY.md); a stop part-way up
/// the ladder is not replayed (its run's cost is an upper bound).
pub fn stopped_before_the_ladder(r: &Report) -> Option<usize> {
    if r.verdict != Verdict::Fail {
        return None;
    }
    let best: Vec<_> = r
        .monitors
        .iter()
        .map(|m| {
            let mut m = m.clone();
            if m.eval.is_some() {
                m.status = Status::Healthy;
            }
            m
        })
        .collect();
    if decide(&r.policy, r.diff.family, &best, r.corpus_prompts).verdict != Verdict::Fail {
        return None;
    }
    let mut per_concept = std::collections::BTreeMap::<&str, usize>::new();
    for m in &r.monitors {
        let seen = match (&m.sequential, &m.eval) {
            (Some(t), _) => t.examples,
            (None, Some(e)) => e.n,
            (None, None) => 0,
        };
        let e = per_concept.entry(m.concept.as_str()).or_default();
        *e = (*e).max(seen);
    }
    Some(per_concept.values().sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::repair::MonitorReport;
    use crate::monitor::eval::EvalResult;

    fn judged(name: &str, status: Status, n: usize) -> MonitorReport {
        let mut m = MonitorReport::example(name, status, false);
        m.concept = name.split('-').next().unwrap_or(name).into();
        m.eval = Some(EvalResult::example(name, n));
        m
    }

    /// A failing run whose fail the ladder could not undo is replayed at its
    /// revalidation's examples (per concept, the most any monitor saw); one
    /// the ladder could have turned, or a pass, is not.
    #[test]
    fn a_fail_decided_before_the_ladder_costs_only_its_revalidation() {
        let mut r = Report::example();
        r.policy = Policy::shipped_default();
        let mut risky = MonitorReport::example("toxicity-l7", Status::Unverified, false);
        risky.risk.p_stale = 0.9;
        r.monitors = vec![
            judged("privacy_pii-l7", Status::Stale, 120),
            judged("privacy_pii-l15", Status::Repaired, 100),
            judged("self_harm-l7", Status::Healthy, 60),
            risky.clone(),
        ];
        r.verdict = Verdict::Fail;
        assert_eq!(stopped_before_the_ladder(&r), Some(120 + 60));
        // Without the risky unverified monitor only the stale one fails it,
        // and the ladder might have repaired it: no stop to replay.
        r.monitors.pop();
        assert_eq!(stopped_before_the_ladder(&r), None);
        r.monitors.push(risky);
        r.verdict = Verdict::Pass;
        assert_eq!(stopped_before_the_ladder(&r), None);
    }
}
