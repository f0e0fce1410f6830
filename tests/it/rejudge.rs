//! `probegate report rejudge` on a committed run (the v2 grid's Gemma 3
//! full-support candidate under a 120-example repair reserve): no model is
//! loaded, so it runs in the model-free time of a fresh clone.

use std::path::{Path, PathBuf};

use predicates::prelude::*;

use crate::harness::*;

/// A copy of the committed run's report.json (git keeps no more of it), so
/// a rejudge in place cannot touch the repo.
fn run_copy(into: &Path) -> PathBuf {
    let from = repo().join("study/v2/budgeted-reserve120-gemma3/full-support");
    let to = into.join("run");
    std::fs::create_dir_all(&to).unwrap();
    std::fs::copy(from.join("report.json"), to.join("report.json")).unwrap();
    to
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

fn read(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

fn rejudge(cwd: &Path, run: &Path, policy: &str, out: &Path) -> assert_cmd::Command {
    let mut c = bin();
    c.current_dir(cwd)
        .args(["report", "rejudge", "--quiet", "--policy", policy])
        .arg(run)
        .arg("--out")
        .arg(out);
    c
}

#[test]
fn a_run_is_decided_again_under_a_verdict_rule_and_refused_under_a_run_rule() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_copy(tmp.path());
    let before = std::fs::read(run.join("report.json")).unwrap();
    let ran = read(&run);
    assert_eq!(ran["verdict"], "pass_with_repairs");
    assert_eq!(ran["policy"]["budget"]["repair_reserve"], 120);

    // The default as the run knew it: screening and its first batch of 20
    // labels came later, and change what is run, not only the verdict.
    let unscreened = tmp.path().join("default-unscreened.toml");
    std::fs::write(
        &unscreened,
        "name = \"default\"\nextends = \"default\"\n[revalidation]\nscreen = false\nfirst_look = 40\n",
    )
    .unwrap();
    let unscreened = unscreened.to_str().unwrap();
    // Its repaired monitors are not in git: deciding the report alone must
    // be asked for, and is then written without them.
    let out = tmp.path().join("alone");
    rejudge(tmp.path(), &run, unscreened, &out)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("pass --report-only"));
    assert_eq!(read(&out)["verdict"], "error");
    rejudge(tmp.path(), &run, unscreened, &out)
        .arg("--report-only")
        .assert()
        .code(1);
    assert!(!out.join("repaired").exists());
    // Stand-ins for them (the shipped monitors of the same names), as a
    // run's own output directory holds them.
    let repaired: Vec<String> = ran["monitors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["repaired_monitor"].is_string())
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(repaired.len(), 5, "{repaired:?}");
    for name in &repaired {
        copy_dir(
            &repo().join("monitors/gemma3").join(name),
            &run.join("repaired").join(name),
        );
    }

    // The run's own policy with `unverified_fail_risk = 0.5` fails an
    // unverified monitor at risk ≥ 0.5: the stale prompt_injection-l13
    // (risk 1.00) this run passed.
    let own = repo().join("study/v2/policy-reserve120.toml");
    let text = std::fs::read_to_string(&own).unwrap();
    assert!(text.contains("\nunverified = \"warn\"\n"));
    let risky = tmp.path().join("risky.toml");
    std::fs::write(
        &risky,
        text.replace(
            "\nunverified = \"warn\"\n",
            "\nunverified = \"warn\"\nunverified_fail_risk = 0.5\n",
        ),
    )
    .unwrap();
    let out = tmp.path().join("risky");
    rejudge(tmp.path(), &run, risky.to_str().unwrap(), &out)
        .assert()
        .code(1);
    let r = read(&out);
    assert_eq!(r["verdict"], "fail");
    let reasons: Vec<String> = serde_json::from_value(r["reasons"].clone()).unwrap();
    assert!(
        reasons.iter().any(|s| s.starts_with(
            "prompt_injection-l13 was not revalidated within the budget (predicted risk 1.00), at or above unverified_fail_risk 0.50"
        )),
        "{reasons:?}"
    );
    // The monitors failing it are named as such, one per reason.
    let failed_by: Vec<String> = serde_json::from_value(r["failed_by"].clone()).unwrap();
    assert!(
        failed_by.contains(&"prompt_injection-l13".to_string()),
        "{failed_by:?}"
    );
    assert_eq!(failed_by.len(), reasons.len(), "{failed_by:?} {reasons:?}");
    for (name, reason) in failed_by.iter().zip(&reasons) {
        assert!(reason.starts_with(name.as_str()), "{name}: {reason}");
    }
    // Monitors below the risk limit stay warnings; the suite's findings stay first.
    let warnings: Vec<String> = serde_json::from_value(r["warnings"].clone()).unwrap();
    assert!(warnings[0].starts_with("suite:"), "{warnings:?}");
    assert!(warnings
        .iter()
        .any(|w| w.starts_with("toxicity-l9 was not revalidated")));
    // What was run is the run's: monitors, budget, timings; the repaired
    // monitors are beside the new report; the policy is the one judged under.
    for k in ["monitors", "budget", "seconds", "candidate", "diff"] {
        assert_eq!(r[k], ran[k], "{k}");
    }
    assert_eq!(r["policy"]["unverified_fail_risk"], 0.5);
    assert_eq!(r["rejudged"]["source"], "study/v2/policy-reserve120.toml");
    assert_eq!(r["rejudged"]["verdict"], "pass_with_repairs");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let line = md
        .lines()
        .find(|l| l.starts_with("Decided again by "))
        .unwrap_or_else(|| panic!("{md}"));
    assert!(
        line.contains("study/v2/policy-reserve120.toml")
            && line.ends_with("whose verdict was pass_with_repairs."),
        "{line}"
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<p>Decided again by <code>probegate report rejudge</code>"));
    for m in r["monitors"].as_array().unwrap() {
        if let Some(dir) = m["repaired_monitor"].as_str() {
            assert!(out.join(dir).join("monitor.json").is_file(), "{dir}");
        }
    }

    // Its own policy file gives its own verdict back.
    let back = tmp.path().join("back");
    rejudge(tmp.path(), &out, own.to_str().unwrap(), &back)
        .assert()
        .code(0);
    assert_eq!(read(&back)["verdict"], "pass_with_repairs");
    assert_eq!(read(&back)["reasons"], ran["reasons"]);

    // A policy that changes what is run is refused, naming the field; in
    // place, the run's own report is left as it was.
    rejudge(tmp.path(), &run, "strict", &run)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("run/report.json"))
        .stderr(predicate::str::contains("field `policy."))
        .stderr(predicate::str::contains(
            "run `probegate check` under it instead",
        ));
    assert_eq!(std::fs::read(run.join("report.json")).unwrap(), before);
    // Accepted in place, only the reports change: the run's repaired
    // monitors stay, even when --report-only did not read them.
    let kept = run.join("repaired").join(&repaired[0]).join("monitor.json");
    let monitor = std::fs::read(&kept).unwrap();
    rejudge(tmp.path(), &run, risky.to_str().unwrap(), &run)
        .arg("--report-only")
        .assert()
        .code(1);
    assert_eq!(read(&run)["verdict"], "fail");
    assert_eq!(std::fs::read(&kept).unwrap(), monitor);
    // Elsewhere, the refusal is an error report (never a verdict).
    let refused = tmp.path().join("refused");
    rejudge(tmp.path(), &run, "strict", &refused)
        .assert()
        .code(2);
    assert_eq!(read(&refused)["verdict"], "error");
}
