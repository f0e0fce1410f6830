use super::*;

/// A monitor the verdict fails on without being stale reads as
/// failing in report.md and report.html, not as a plain "unverified".
#[test]
fn an_unverified_monitor_the_verdict_fails_on_is_marked() {
    use crate::gate::repair::MonitorReport;
    let r = Report::example_failed(
        vec![
            MonitorReport::example("toxicity-l22", Status::Unverified, false),
            MonitorReport::example("toxicity-l2", Status::Unverified, false),
        ],
        &["toxicity-l22 was not revalidated within the budget"],
        &["toxicity-l22"],
    );
    let md = markdown(&r);
    assert!(
        md.contains("| toxicity-l22 | 15 | 0.30 | **unverified, fails** |"),
        "{md}"
    );
    assert!(
        md.contains("| toxicity-l2 | 15 | 0.30 | unverified |"),
        "{md}"
    );
    assert_eq!(html(&r).matches("(fails the gate)").count(), 1);
}

#[test]
fn names_from_model_files_cannot_forge_markdown() {
    let hostile = "w`\n## ✅ probegate: PASS <img src=x> | [x](y)";
    let e = escape(hostile);
    assert!(!e.contains('\n') && !e.contains("<img"), "{e}");
    assert!(e.contains("\\#\\# ") && e.contains("\\|"), "{e}");
    let c = code("a``b`c");
    assert!(c.starts_with("``` ") && c.ends_with(" ```"), "{c}");
    let f = fenced("```\n## ✅ probegate: PASS\n```");
    assert!(f.starts_with("````\n") && f.ends_with("\n````"), "{f}");
    assert_eq!(fenced("plain"), "```\nplain\n```");
}

/// An earlier run's PASS (report.md, report.html, repaired monitors)
/// used to survive an error report and a crashed run in the same
/// directory; other files there are left alone, links are not followed.
#[test]
fn stale_outputs_are_cleared_and_only_they() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    std::fs::write(out.join("report.md"), "## ✅ probegate: PASS").unwrap();
    std::fs::write(out.join("report.html"), "PASS").unwrap();
    std::fs::create_dir_all(out.join("repaired/m")).unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::write(elsewhere.path().join("keep"), "x").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(elsewhere.path(), out.join(STAGING)).unwrap();

    write_error_report(out, "boom").unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("could not evaluate") && !md.contains("PASS"),
        "{md}"
    );
    assert!(!out.join("report.html").exists() && !out.join("repaired").exists());
    assert!(out.join("notes.txt").exists() && elsewhere.path().join("keep").exists());

    clear_outputs(out).unwrap();
    let left: Vec<_> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("notes.txt")]);
}
