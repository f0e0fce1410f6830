use super::*;
use crate::gate::repair::MonitorReport;
use crate::gate::report::Report;

/// A gate that fails only on unverified monitors (the v2 grid's Gemma 3
/// full-support under the default policy) must not say "0 stale
/// monitors" with no failure annotation: the check run names them.
#[test]
fn a_fail_on_unverified_monitors_is_titled_and_annotated() {
    let dir = tempfile::tempdir().unwrap();
    let r = Report::example_failed(
        vec![
            MonitorReport::example("prompt_injection-l13", Status::Unverified, false),
            MonitorReport::example("toxicity-l9", Status::Unverified, false),
            MonitorReport::example("self_harm-l7", Status::Repaired, true),
        ],
        &[
            "prompt_injection-l13 was not revalidated within the budget (predicted risk 1.00), \
               at or above unverified_fail_risk 0.50; raise budget.examples",
        ],
        &["prompt_injection-l13"],
    );
    std::fs::write(
        dir.path().join("report.json"),
        serde_json::to_string(&r).unwrap(),
    )
    .unwrap();
    let s = summarize(dir.path(), Some("monitors"));
    assert_eq!(s.verdict, Outcome::Fail);
    assert_eq!(
        s.title,
        "Gate failed: 1 monitors fail the policy (0 stale, 1 not verified or not accepted)"
    );
    let failures: Vec<&Annotation> = s
        .annotations
        .iter()
        .filter(|a| a.level == "failure")
        .collect();
    assert_eq!(failures.len(), 1, "{:?}", s.annotations);
    assert_eq!(
        failures[0].path,
        "monitors/prompt_injection-l13/monitor.json"
    );
    assert!(failures[0].message.contains("unverified_fail_risk"));
    // The repair is still a warning; the monitor below the rules is not annotated.
    assert_eq!(s.annotations.len(), 2, "{:?}", s.annotations);
}
