//! JUnit XML for the CI systems that read test results from it (GitLab,
//! Jenkins, Azure Pipelines, Buildkite): one test case per monitor, so a
//! stale monitor shows up where a failing test would. Written with
//! quick-junit, nextest's serializer.

use std::path::Path;

use quick_junit::{NonSuccessKind, Report as JReport, TestCase, TestCaseStatus, TestSuite};

use super::{Report, Status};
use crate::error::{Error, Result};

/// Healthy and repaired monitors pass, stale ones fail, unverified ones
/// (outside the budget) are skipped with their predicted risk; but any
/// monitor the verdict names in `failed_by` (an unverified one a risk rule
/// fails, a repair the policy does not accept) is a failure with its
/// reason, and a fail reason about no monitor (the update family) is a case
/// of its own, so a failed gate never reads as a green test run.
pub fn from_report(r: &Report) -> JReport {
    let mut suite = TestSuite::new(format!("probegate: {}", r.candidate.reference));
    for m in &r.monitors {
        let status = match (m.status, r.fail_reason(&m.name)) {
            (Status::Stale, _) => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                let ladder = if m.not_climbed {
                    " (repair ladder not climbed: the verdict was already fail)"
                } else {
                    ""
                };
                s.set_message(format!("stale: {}{ladder}", m.stale_reasons.join("; ")))
                    .set_type("stale");
                s
            }
            (_, Some(reason)) => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(reason.clone()).set_type(match m.status {
                    Status::Unverified => "unverified",
                    _ => "policy",
                });
                s
            }
            // A repaired monitor passes (it ships with the model); the
            // rung it needed is in the case's output.
            (Status::Healthy | Status::Repaired, None) => TestCaseStatus::success(),
            (Status::Unverified, None) => {
                let mut s = TestCaseStatus::skipped();
                s.set_message(format!(
                    "unverified: outside the budget (predicted risk {:.2})",
                    m.risk.p_stale
                ));
                s
            }
        };
        let mut case = TestCase::new(m.name.clone(), status);
        case.set_classname(format!("probegate.{}", m.concept));
        let mut out = format!(
            "status: {:?}; layer {}; critical: {}; rung: {}",
            m.status, m.layer, m.critical, m.rung
        );
        if let Some(e) = &m.eval {
            out.push_str(&format!(
                "\nAUROC {:.3} (base {:.3}, Δ {:+.3}); balanced accuracy {:.3}; n = {}",
                e.auroc, e.base_auroc, e.delta_auroc, e.balanced_accuracy, e.n
            ));
        }
        case.set_system_out(out);
        suite.add_test_case(case);
    }
    let unattributed: Vec<&String> = r.unattributed_reasons().collect();
    if !unattributed.is_empty() {
        let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
        s.set_message(
            unattributed
                .iter()
                .map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        )
        .set_type("policy");
        let mut case = TestCase::new("the update", s);
        case.set_classname("probegate.verdict");
        suite.add_test_case(case);
    }
    suite.add_property(("verdict", r.verdict.as_str()));
    suite.add_property(("candidate_fingerprint", r.candidate.fingerprint.as_str()));
    suite.add_property(("base_fingerprint", r.base.fingerprint.as_str()));
    let mut report = JReport::new("probegate");
    report.add_test_suite(suite);
    report
}

/// "Could not evaluate" as one errored test case, so CI shows it as an
/// error, never as an empty (passing) run.
pub fn for_error(candidate: &str, err: &str) -> JReport {
    let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
    s.set_message("probegate could not evaluate the candidate (this is not a pass)")
        .set_description(err.to_string())
        .set_type("error");
    let mut case = TestCase::new("probegate", s);
    case.set_classname("probegate");
    let mut suite = TestSuite::new(format!("probegate: {candidate}"));
    suite.add_test_case(case);
    let mut report = JReport::new("probegate");
    report.add_test_suite(suite);
    report
}

pub fn write(path: &Path, report: &JReport) -> Result<()> {
    let xml = report
        .to_string()
        .map_err(|e| Error::io(path, std::io::Error::other(e.to_string())))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    crate::util::write_atomic(path, xml.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The v2 grid's Gemma 3 full-support run as the default policy
    /// decides it fails only on unverified monitors. JUnit must not read as
    /// green: each monitor the verdict names is a failure with its own
    /// reason, and a reason about no monitor is a case of its own.
    #[test]
    fn monitors_the_verdict_fails_on_are_failures_with_their_reasons() {
        use crate::gate::repair::MonitorReport;
        let r = Report::example_failed(
            vec![
                MonitorReport::example("prompt_injection-l13", Status::Unverified, false),
                MonitorReport::example("prompt_injection-l1", Status::Unverified, true),
                MonitorReport::example("toxicity-l9", Status::Unverified, false),
                MonitorReport::example("toxicity-l7", Status::Repaired, false),
            ],
            &[
                "the candidate is a FullFineTune update; policy `q` allows only [Quantization]",
                "prompt_injection-l13 was not revalidated within the budget (predicted risk 1.00), \
                 at or above unverified_fail_risk 0.50; raise budget.examples",
                "prompt_injection-l1 (critical) was not settled within the budget",
            ],
            &["prompt_injection-l13", "prompt_injection-l1"],
        );
        let j = from_report(&r);
        let xml = j.to_string().unwrap();
        let back = JReport::deserialize_from_str(&xml).unwrap();
        assert_eq!((back.tests, back.failures), (5, 3), "{xml}");
        let message = |name: &str| {
            let c = j.test_suites[0]
                .test_cases
                .iter()
                .find(|c| c.name.as_str() == name)
                .unwrap();
            match &c.status {
                TestCaseStatus::NonSuccess { message, .. } => {
                    message.as_ref().map(|m| m.to_string())
                }
                _ => None,
            }
        };
        // A name that prefixes another's (prompt_injection-l1) gets its own reason.
        assert!(message("prompt_injection-l13")
            .unwrap()
            .contains("unverified_fail_risk"));
        assert!(message("prompt_injection-l1")
            .unwrap()
            .starts_with("prompt_injection-l1 (critical)"));
        assert!(message("the update").unwrap().contains("allows only"));
        // Not named by the verdict: skipped, and a repair passes.
        assert_eq!(message("toxicity-l9"), None);
        assert_eq!(message("toxicity-l7"), None);
    }

    #[test]
    fn an_error_is_an_errored_case_and_round_trips() {
        let r = for_error("smollm2+x", "monitors/a: No such file <&>");
        let xml = r.to_string().unwrap();
        let back = JReport::deserialize_from_str(&xml).unwrap();
        assert_eq!(back.errors, 1);
        assert_eq!(back.tests, 1);
        assert!(xml.contains("No such file &lt;&amp;&gt;"), "{xml}");
    }
}
