//! JUnit XML for the CI systems that read test results from it (GitLab,
//! Jenkins, Azure Pipelines, Buildkite): one test case per monitor, so a
//! stale monitor shows up where a failing test would. Written with
//! quick-junit, nextest's serializer.

use std::path::Path;

use quick_junit::{NonSuccessKind, Report as JReport, TestCase, TestCaseStatus, TestSuite};

use super::{Report, Status};
use crate::error::{Error, Result};

/// Healthy and repaired monitors pass, stale ones fail, unverified ones
/// (outside the budget) are skipped with their predicted risk.
pub fn from_report(r: &Report) -> JReport {
    let mut suite = TestSuite::new(format!("probegate: {}", r.candidate.reference));
    for m in &r.monitors {
        let status = match m.status {
            // A repaired monitor passes (it ships with the model); the
            // rung it needed is in the case's output.
            Status::Healthy | Status::Repaired => TestCaseStatus::success(),
            Status::Stale => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(format!("stale: {}", m.stale_reasons.join("; ")))
                    .set_type("stale");
                s
            }
            Status::Unverified => {
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
