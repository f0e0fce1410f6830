//! `probegate report rejudge`: a report decided again under another
//! policy's verdict rules, without running the models again.
//!
//! The verdict is a pure function of the monitors' states (src/gate/verdict.rs),
//! so a report can be judged again under a policy that differs from the one
//! it ran under only in what the verdict reads: what an unverified monitor
//! means and which update families are allowed. Any other difference (a
//! budget, a limit, the critical list, the ladder) changed what was run, so
//! the answer to it is a new `probegate check`, never a relabelled report:
//! such a policy is refused, naming the first field that differs.

use std::path::Path;

use serde_json::Value;

use super::types::{Rejudged, Report};
use crate::error::{Error, Result};
use crate::gate::policy::Policy;
use crate::gate::revalidate::sequential::Stop;
use crate::gate::verdict::{self, Decision};

/// Policy fields only the verdict reads. `name`, `description` and `source`
/// say which policy it is; the report records the one it was judged under.
const VERDICT_ONLY: &[&str] = &[
    "name",
    "description",
    "source",
    "unverified",
    "unverified_fail_risk",
    "unverified_fail_as_risky_as_stale",
    "allowed_families",
];

/// `report` (read from `path`, named in errors) decided again under
/// `policy`: its verdict, reasons and warnings, and the policy it records.
/// The suite's findings (warnings from before the verdict) are kept.
pub fn rejudge(path: &Path, report: &Report, policy: &Policy) -> Result<Report> {
    let strip = |p: &Policy| -> Value {
        let mut v = serde_json::to_value(p).unwrap_or(Value::Null);
        if let Value::Object(o) = &mut v {
            for k in VERDICT_ONLY {
                o.remove(*k);
            }
            // Whether a run stops at its verdict changes what it leaves
            // undone, never the verdict: a complete run can be judged under
            // either, and one that left monitors off the ladder is refused
            // below whatever the policy says.
            if let Some(Value::Object(b)) = o.get_mut("budget") {
                b.remove("stop_at_verdict");
            }
        }
        v
    };
    if let Some((field, ran, given)) = first_difference("", &strip(&report.policy), &strip(policy))
    {
        return Err(Error::field(
            path.join("report.json"),
            format!("policy.{field}"),
            format!(
                "the report ran with {ran}, policy `{}` ({}) says {given}: that changes what is run, not only the verdict, so run `probegate check` under it instead",
                policy.name, policy.source
            ),
        ));
    }
    // A run that stopped at its verdict left stale monitors off the ladder
    // and others unrevalidated: under rules that no longer fail it, they
    // would decide it in place of repairs and looks never made.
    let not_climbed = report.monitors.iter().filter(|m| m.not_climbed).count();
    let not_looked = report
        .monitors
        .iter()
        .filter(|m| {
            m.sequential
                .as_ref()
                .is_some_and(|t| t.stopped == Stop::Decided)
        })
        .count();
    if not_climbed + not_looked > 0 {
        return Err(Error::field(
            path.join("report.json"),
            "policy.budget.stop_at_verdict",
            format!(
                "the run stopped at its verdict: {not_climbed} stale monitor(s) never climbed the repair ladder and {not_looked} were not revalidated to the end, so no other verdict can be read from it; run `probegate check` under policy `{}` instead",
                policy.name
            ),
        ));
    }
    let Decision {
        verdict,
        reasons,
        warnings,
        failed_by,
    } = verdict::decide(
        policy,
        report.diff.family,
        &report.monitors,
        report.corpus_prompts,
    );
    // Findings about the suite come before the verdict's own warnings, as
    // in a run (src/gate/mod.rs) and a merge.
    let mut all: Vec<String> = report.suite_findings().cloned().collect();
    all.extend(warnings);
    // Rejudged twice, the run is still the first one's.
    let rejudged = report.rejudged.clone().unwrap_or_else(|| Rejudged {
        policy: report.policy.name.clone(),
        source: report.policy.source.clone(),
        verdict: report.verdict,
    });
    Ok(Report {
        verdict,
        reasons,
        failed_by,
        warnings: all,
        policy: policy.clone(),
        rejudged: Some(rejudged),
        ..report.clone()
    })
}

/// The first path (dotted) at which `a` and `b` differ, with both values
/// as JSON text; None when they are equal.
fn first_difference(at: &str, a: &Value, b: &Value) -> Option<(String, String, String)> {
    let join = |k: &str| {
        if at.is_empty() {
            k.to_string()
        } else {
            format!("{at}.{k}")
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                first_difference(
                    &join(k),
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                )
            })
        }
        _ if a == b => None,
        _ => Some((
            if at.is_empty() {
                "(all)".into()
            } else {
                at.into()
            },
            a.to_string(),
            b.to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::policy::Unverified;
    use crate::gate::revalidate::Status;
    use crate::gate::verdict::Verdict;

    fn report() -> Report {
        let mut r = Report::example();
        r.policy = Policy::shipped_default();
        r.policy.unverified_fail_risk = None;
        r.policy.budget.repair_reserve = 120;
        let mut m = crate::gate::repair::MonitorReport::example(
            "prompt_injection-l13",
            Status::Unverified,
            false,
        );
        m.risk.p_stale = 0.998;
        r.monitors = vec![m];
        r.warnings = vec![
            "suite: prompt_injection-l9 is below the policy on its own base".into(),
            "prompt_injection-l13 was not revalidated within the budget (predicted risk 1.00)"
                .into(),
        ];
        r.verdict = Verdict::Pass;
        r
    }

    #[test]
    fn a_verdict_rule_is_applied_again_and_the_suite_findings_kept() {
        let r = report();
        let mut strict = r.policy.clone();
        strict.name = "risky".into();
        strict.unverified_fail_risk = Some(0.5);
        let got = rejudge(Path::new("run"), &r, &strict).unwrap();
        assert_eq!(got.verdict, Verdict::Fail);
        assert_eq!(got.reasons.len(), 1, "{:?}", got.reasons);
        assert!(got.reasons[0].contains("unverified_fail_risk 0.50"));
        assert_eq!(
            got.warnings,
            vec!["suite: prompt_injection-l9 is below the policy on its own base".to_string()]
        );
        assert_eq!(got.policy, strict);
        let from = got.rejudged.clone().unwrap();
        assert_eq!(
            (from.source.as_str(), from.verdict),
            (r.policy.source.as_str(), Verdict::Pass)
        );
        // The monitors and the budget are the run's.
        let json = |v: &Report| serde_json::to_value((&v.monitors, &v.budget)).unwrap();
        assert_eq!(json(&got), json(&r));
        // And back: the report's own policy gives its own verdict.
        let back = rejudge(Path::new("run"), &got, &r.policy).unwrap();
        assert_eq!(back.verdict, Verdict::Pass);
        assert_eq!(back.warnings, r.warnings);
        assert_eq!(
            back.rejudged,
            Some(from),
            "the run is still the first one's"
        );
    }

    #[test]
    fn a_policy_that_changes_the_run_is_refused_naming_the_field() {
        let r = report();
        let mut p = r.policy.clone();
        p.unverified = Unverified::Fail;
        p.name = "other".into();
        assert!(rejudge(Path::new("run"), &r, &p).is_ok());
        p.budget.repair_reserve = 0;
        let e = rejudge(Path::new("run"), &r, &p).unwrap_err().to_string();
        assert!(
            e.contains("run/report.json") && e.contains("policy.budget.repair_reserve"),
            "{e}"
        );
        assert!(
            e.contains("the report ran with 120") && e.contains("says 0"),
            "{e}"
        );
        let mut p = r.policy.clone();
        p.critical.push("toxicity*".into());
        let e = rejudge(Path::new("run"), &r, &p).unwrap_err().to_string();
        assert!(e.contains("policy.critical"), "{e}");
    }

    #[test]
    fn a_run_that_stopped_at_its_verdict_is_refused() {
        let mut r = report();
        let mut m =
            crate::gate::repair::MonitorReport::example("self_harm-l7", Status::Stale, true);
        m.not_climbed = true;
        r.monitors.push(m);
        let mut p = r.policy.clone();
        p.unverified_fail_risk = Some(0.5);
        // Complete, it is judged under a policy that stops or not...
        r.monitors.last_mut().unwrap().not_climbed = false;
        p.budget.stop_at_verdict = !r.policy.budget.stop_at_verdict;
        assert!(rejudge(Path::new("run"), &r, &p).is_ok());
        // ...with a monitor left off the ladder, under none.
        r.monitors.last_mut().unwrap().not_climbed = true;
        let e = rejudge(Path::new("run"), &r, &p).unwrap_err().to_string();
        assert!(
            e.contains("run/report.json") && e.contains("policy.budget.stop_at_verdict"),
            "{e}"
        );
        assert!(e.contains("1 stale monitor(s) never climbed"), "{e}");
        // ...or with a monitor whose revalidation the verdict cut short.
        r.monitors.last_mut().unwrap().not_climbed = false;
        let mut cut =
            crate::gate::repair::MonitorReport::example("toxicity-l7", Status::Unverified, false);
        cut.sequential = Some(crate::gate::revalidate::sequential::Trace {
            examples: 40,
            of: 120,
            bounds: None,
            z: 3.0,
            stopped: Stop::Decided,
        });
        r.monitors.push(cut);
        let e = rejudge(Path::new("run"), &r, &p).unwrap_err().to_string();
        assert!(e.contains("1 were not revalidated to the end"), "{e}");
    }
}
