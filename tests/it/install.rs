//! probegate as a user has it: installed with `cargo install` into a
//! temporary prefix, run in an unrelated git repository that holds only a
//! monitor suite and an adapter, with nothing of this clone on any path —
//! once with explicit flags, once through the repository's probegate.toml.
//! Where the machine allows it (root, `unshare`), the clone is hidden from
//! the gate's process entirely by an empty directory mounted over it, so a
//! stray read of the source tree fails the test instead of passing quietly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use crate::harness::*;

/// The binary `cargo install --path . --root PREFIX` puts in PREFIX/bin.
/// It builds in this clone's target directory (cargo does for path
/// installs), so after the test build it only links and copies.
fn installed() -> &'static Path {
    static BIN: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &BIN.get_or_init(|| {
        let prefix = tempfile::tempdir().expect("prefix");
        let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["install", "--locked", "--offline", "--quiet", "--path"])
            .arg(repo())
            .arg("--root")
            .arg(prefix.path())
            .output()
            .expect("run cargo install");
        assert!(
            out.status.success(),
            "cargo install failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = prefix.path().join("bin/probegate");
        assert!(bin.is_file(), "{} missing", bin.display());
        (prefix, bin)
    })
    .1
}

/// A user's repository: two monitors of the shipped suite and the LoRA
/// adapter fixture, copied in, committed; nothing else.
fn user_repo(root: &Path) -> PathBuf {
    let repo_dir = root.join("user-repo");
    for m in ["privacy_pii-l15", "toxicity-l15"] {
        copy_dir(
            &repo().join("monitors/smollm2").join(m),
            &repo_dir.join("monitors").join(m),
        );
    }
    copy_dir(
        &repo().join("fixtures/adapters/smollm2-lora-r4"),
        &repo_dir.join("adapters/support"),
    );
    std::fs::create_dir_all(repo_dir.join("docs/notes")).unwrap();
    git(&repo_dir, &["init", "-q", "-b", "main"]);
    git(&repo_dir, &["add", "-A"]);
    git(
        &repo_dir,
        &["commit", "-q", "-m", "monitors and an adapter"],
    );
    repo_dir
}

/// Whether this process may hide the clone with a private mount namespace.
fn can_hide_clone() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "true"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Run the installed binary in `cwd` with `args`; when possible inside its
/// own mount namespace where this clone is an empty directory.
fn run_as_user(cwd: &Path, args: &[&str], empty: &Path) -> Output {
    let bin = installed();
    let mut c = if can_hide_clone() {
        let mut c = Command::new("unshare");
        c.args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount --bind "$1" "$2" && shift 2 && exec "$@""#)
            .arg("sh")
            .arg(empty)
            .arg(repo())
            .arg(bin);
        c
    } else {
        eprintln!("note: cannot unshare a mount namespace here; the clone stays visible");
        Command::new(bin)
    };
    c.current_dir(cwd)
        .args(args)
        .env_remove("HF_HUB_OFFLINE")
        // A log, not a terminal: the per-stage lines are part of what a user sees.
        .env_remove("GITHUB_ACTIONS");
    c.output().expect("run installed probegate")
}

fn verdict(report_dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(report_dir.join("report.json"))
        .unwrap_or_else(|e| panic!("{}: {e}", report_dir.display()));
    serde_json::from_str(&text).unwrap()
}

fn assert_reached_a_verdict(o: &Output, report_dir: &Path) -> serde_json::Value {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        matches!(o.status.code(), Some(0) | Some(1)),
        "no verdict (exit {:?}):\n{err}",
        o.status.code()
    );
    let r = verdict(report_dir);
    assert!(
        ["pass", "pass_with_repairs", "fail"].contains(&r["verdict"].as_str().unwrap()),
        "{r}"
    );
    // Every stage said where it was, with its time, on a non-terminal stderr.
    for stage in [
        "load",
        "diff",
        "corpus activations",
        "revalidating",
        "repair ladder",
    ] {
        assert!(
            err.contains(&format!("probegate: {stage}")),
            "{stage}:\n{err}"
        );
    }
    // Nothing in the report points into the clone.
    let clone = repo().display().to_string();
    assert!(!r.to_string().contains(&clone), "report mentions {clone}");
    r
}

#[test]
fn installed_binary_gates_an_adapter_in_an_unrelated_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let user = user_repo(tmp.path());
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();

    // 1. Explicit flags, relative to the user's repository; no policy, data
    //    or corpus given: the ones built into the binary are used.
    let o = run_as_user(
        &user,
        &[
            "check",
            "--base",
            "smollm2",
            "--candidate",
            "smollm2+adapters/support",
            "--monitors",
            "monitors",
            "--out",
            "out-flags",
            "--junit",
            "out-flags/junit.xml",
            "--no-history",
        ],
        &empty,
    );
    let r = assert_reached_a_verdict(&o, &user.join("out-flags"));
    assert_eq!(r["policy"]["source"], "builtin:policies/default.toml");
    assert_eq!(
        r["policy"]["realignment"]["corpus"],
        "builtin:data/realign/corpus.jsonl"
    );
    assert_eq!(r["monitors"].as_array().unwrap().len(), 2);
    // JUnit: one case per monitor, failures exactly the stale ones and
    // those the verdict names as failing it.
    let xml = std::fs::read_to_string(user.join("out-flags/junit.xml")).unwrap();
    let j = quick_junit::Report::deserialize_from_str(&xml).unwrap();
    assert_eq!(j.tests, 2);
    let failed_by = r["failed_by"].as_array().unwrap();
    let failing = r["monitors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["status"] == "stale" || failed_by.contains(&m["name"]))
        .count();
    assert_eq!(j.failures, failing);

    // 2. Through probegate.toml: `init` writes it, then `check --candidate`
    //    alone, from a subdirectory; paths resolve against the file.
    let o = run_as_user(
        &user,
        &["init", "--base", "smollm2", "--monitors", "monitors"],
        &empty,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("TODO"));
    for f in [
        "probegate.toml",
        ".probegate/policy.toml",
        ".github/workflows/probegate.yml",
    ] {
        assert!(user.join(f).is_file(), "{f}");
    }
    let o = run_as_user(
        &user.join("docs/notes"),
        &[
            "check",
            "--candidate",
            "smollm2+../../adapters/support",
            "--no-history",
        ],
        &empty,
    );
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(err.contains("settings from"), "{err}");
    let r = assert_reached_a_verdict(&o, &user.join("probegate-report"));
    assert!(
        r["policy"]["source"]
            .as_str()
            .unwrap()
            .ends_with(".probegate/policy.toml"),
        "{}",
        r["policy"]["source"]
    );
    // init's policy extends the built-in default: its own name, the default's limits.
    assert_eq!(r["policy"]["name"], "repository");
    assert_eq!(r["policy"]["budget"]["examples"], 720);
    assert_eq!(r["policy"]["unverified_fail_as_risky_as_stale"], true);

    // 3. An unconfigured directory with no base: a usage error (exit 2) that
    //    says how to configure, and an error report, never a verdict.
    let bare = tmp.path().join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    let o = run_as_user(&bare, &["check", "--candidate", "smollm2"], &empty);
    assert_exit_2_naming(&o, &["probegate init"]);
    assert_eq!(verdict(&bare.join("probegate-report"))["verdict"], "error");
}

#[test]
fn installed_binary_generates_completions_and_man_pages() {
    let tmp = tempfile::tempdir().unwrap();
    let o = Command::new(installed())
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let script = String::from_utf8_lossy(&o.stdout);
    assert!(
        script.contains("probegate") && script.contains("check"),
        "{script}"
    );
    let o = Command::new(installed())
        .args(["man", "--out"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let page = std::fs::read_to_string(tmp.path().join("probegate-check.1")).unwrap();
    assert!(page.contains("\\-\\-candidate"), "{page}");
}
