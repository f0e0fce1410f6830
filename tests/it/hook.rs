//! `probegate hook install` in a real git repository pushing to a real
//! (bare, local) remote: the hook checks what the push changes, blocks a
//! push the gate cannot pass, and can be skipped.

use std::path::Path;
use std::process::{Command, Output};

use crate::harness::*;

fn git(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .env_remove("PROBEGATE_SKIP")
        .output()
        .unwrap();
    out
}

fn ok(dir: &Path, args: &[&str]) {
    let o = git(dir, args);
    assert!(
        o.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn commit_all(dir: &Path, msg: &str) {
    ok(dir, &["add", "-A"]);
    ok(dir, &["commit", "-q", "-m", msg]);
}

#[test]
fn pre_push_hook_gates_changed_candidates() {
    // The hook runs in the pushing repository, so every path it gets is
    // absolute; no --data: the labeled sets built into probegate are found by
    // the hash each monitor recorded, and the policy's corpus is built in too.
    let (_tmp, work) = hooked_repo();
    let hook = std::fs::read_to_string(work.join(".git/hooks/pre-push")).unwrap();
    assert!(hook.contains(probegate::adapters::hook::HOOK_MARKER));
    // Installing again replaces probegate's own hook; another hook is kept unless --force.
    std::fs::write(work.join(".git/hooks/pre-push"), "#!/bin/sh\nexit 0\n").unwrap();
    bin()
        .args([
            "hook",
            "install",
            "--base",
            "smollm2",
            "--monitors",
            "m",
            "--repo",
        ])
        .arg(&work)
        .assert()
        .code(2)
        .stderr(predicates::str::contains("--force"));
    std::fs::write(work.join(".git/hooks/pre-push"), hook).unwrap();

    // Nothing to check: the push goes through silently.
    std::fs::write(work.join("README.md"), "models, v2\n").unwrap();
    commit_all(&work, "docs");
    let o = git(&work, &["push", "origin", "main"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!String::from_utf8_lossy(&o.stderr).contains("probegate:"));

    // A broken adapter: the gate cannot evaluate it, so the push is blocked.
    std::fs::create_dir_all(work.join("adapters/bad")).unwrap();
    std::fs::write(work.join("adapters/bad/adapter_config.json"), "{not json").unwrap();
    std::fs::write(work.join("adapters/bad/adapter_model.safetensors"), "junk").unwrap();
    commit_all(&work, "bad adapter");
    let o = git(&work, &["push", "origin", "main"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("could not evaluate") && err.contains("PROBEGATE_SKIP=1"),
        "{err}"
    );
    assert!(
        err.contains("adapter_config.json"),
        "the error names the file: {err}"
    );
    let report =
        std::fs::read_to_string(work.join(".probegate/pre-push/candidate-1/report.json")).unwrap();
    assert!(report.contains("\"verdict\": \"error\""));

    // As pre-commit runs it (.pre-commit-hooks.yaml): the changed files as
    // arguments instead of git's pre-push lines, settings as installed.
    let o = Command::new(env!("CARGO_BIN_EXE_probegate"))
        .current_dir(&work)
        .args(["hook", "run", "--base", "smollm2", "--monitors"])
        .arg(repo().join("monitors/smollm2"))
        .args(["README.md", "adapters/bad/adapter_config.json"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("checking 1 candidate") && err.contains("could not evaluate"),
        "{err}"
    );

    // The documented skip lets it through.
    let o = Command::new("git")
        .current_dir(&work)
        .args(["push", "origin", "main"])
        .env("PROBEGATE_SKIP", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("skipped"));

    // A checkpoint identical to the base passes the gate and the push proceeds.
    std::fs::create_dir_all(work.join("models")).unwrap();
    std::os::unix::fs::symlink(model_path("smollm2"), work.join("models/candidate.gguf")).unwrap();
    commit_all(&work, "candidate");
    let o = git(&work, &["push", "origin", "main"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("checking 1 candidate"), "{err}");
    // The link leaves the pushed tree: followed, and said.
    assert!(
        err.contains("warning") && err.contains("outside the pushed tree"),
        "{err}"
    );
    let report =
        std::fs::read_to_string(work.join(".probegate/pre-push/candidate-1/report.json")).unwrap();
    assert!(report.contains("\"verdict\": \"pass\""), "{report}");
}

/// .pre-commit-hooks.yaml is what pre-commit reads: one pre-push hook that
/// runs `probegate hook run` on the changed model files, built from this
/// repository with cargo.
#[test]
fn pre_commit_hook_definition_matches_the_cli() {
    let text = std::fs::read_to_string(repo().join(".pre-commit-hooks.yaml")).unwrap();
    let hooks: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
    let h = &hooks[0];
    assert_eq!(h["id"], "probegate");
    assert_eq!(h["language"], "rust");
    assert_eq!(h["stages"], serde_json::json!(["pre-push"]));
    assert_eq!(h["pass_filenames"], true);
    let entry: Vec<&str> = h["entry"].as_str().unwrap().split(' ').collect();
    assert_eq!(entry, ["probegate", "hook", "run"]);
    // The files pattern takes exactly what the hook can gate.
    let files = h["files"].as_str().unwrap();
    for (path, gated) in [
        ("adapters/x/adapter_config.json", true),
        ("adapters/x/adapter_model.safetensors", true),
        ("models/m.gguf", true),
        ("m/config.json", true),
        ("README.md", false),
        ("src/lib.rs", false),
    ] {
        // pre-commit uses Python's re.search; these patterns need nothing beyond POSIX ERE.
        let ok = std::process::Command::new("grep")
            .args(["-qE", files])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(path.as_bytes())?;
                c.wait()
            })
            .unwrap()
            .success();
        assert_eq!(ok, gated, "{path}");
    }
}

/// A working repository pushing to a bare remote, `main` pushed, the hook
/// installed (base smollm2, the shipped monitors). Returns (tmp, work).
fn hooked_repo() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let remote = tmp.path().join("remote.git");
    let work = tmp.path().join("work");
    ok(
        tmp.path(),
        &["init", "-q", "--bare", remote.to_str().unwrap()],
    );
    ok(
        tmp.path(),
        &["init", "-q", "-b", "main", work.to_str().unwrap()],
    );
    std::fs::write(work.join("README.md"), "models\n").unwrap();
    commit_all(&work, "start");
    ok(
        &work,
        &["remote", "add", "origin", remote.to_str().unwrap()],
    );
    ok(&work, &["push", "-q", "origin", "main"]);
    let policy = crate::check::test_policy(tmp.path(), &[]);
    bin()
        .args(["hook", "install", "--base", "smollm2", "--repo"])
        .arg(&work)
        .arg("--monitors")
        .arg(repo().join("monitors/smollm2"))
        .arg("--policy")
        .arg(&policy)
        .assert()
        .success();
    (tmp, work)
}

/// An adapter the gate cannot read: any push that carries it must be blocked.
fn broken_adapter(work: &Path, dir: &str) {
    let d = work.join(dir);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("adapter_config.json"), "{not json").unwrap();
    std::fs::write(d.join("adapter_model.safetensors"), "junk").unwrap();
}

/// `git push origin ARGS…` through the hook: (pushed?, stderr).
fn push(work: &Path, args: &[&str]) -> (bool, String) {
    let mut all = vec!["push", "origin"];
    all.extend_from_slice(args);
    let o = git(work, &all);
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Pushing `branch` is blocked as "could not evaluate" `candidate`; stderr.
fn blocked(work: &Path, branch: &str, candidate: &str) -> String {
    let (pushed, err) = push(work, &[branch]);
    assert!(!pushed, "{candidate} went through: {err}");
    assert!(
        err.contains("could not evaluate") && err.contains(candidate),
        "{err}"
    );
    err
}

/// A candidate under a directory whose name git would quote without `-z`
/// (`"models/\303\274n…"`) is gated, named as it is.
#[test]
fn a_non_ascii_path_is_gated() {
    let (_tmp, work) = hooked_repo();
    broken_adapter(&work, "models/ünïcode-ft");
    commit_all(&work, "adapter");
    blocked(&work, "main", "models/ünïcode-ft");
}

/// The hook gates what the push sends: another branch than the one checked
/// out is gated on its own content.
#[test]
fn another_branch_is_gated_on_its_own_content() {
    let (_tmp, work) = hooked_repo();
    ok(&work, &["checkout", "-q", "-b", "feature"]);
    broken_adapter(&work, "adapters/bad");
    commit_all(&work, "bad adapter on feature");
    ok(&work, &["checkout", "-q", "main"]);
    assert!(!work.join("adapters/bad").exists());
    blocked(&work, "feature", "adapters/bad (feature at");
}

/// Uncommitted edits in the working tree change nothing: here the broken
/// adapter is committed, then deleted in the working tree only.
#[test]
fn uncommitted_edits_do_not_change_the_result() {
    let (_tmp, work) = hooked_repo();
    broken_adapter(&work, "adapters/bad");
    commit_all(&work, "bad adapter on main");
    std::fs::remove_dir_all(work.join("adapters/bad")).unwrap();
    blocked(&work, "main", "adapters/bad");
    assert!(
        !work.join("adapters/bad").exists(),
        "the working tree is left as it was"
    );
    let status = git(&work, &["status", "--porcelain"]);
    assert!(
        !work.join(".probegate/pre-push/pushed").exists(),
        "the scratch copy is removed"
    );
    assert_eq!(
        String::from_utf8_lossy(&status.stdout).trim_end(),
        " D adapters/bad/adapter_config.json\n D adapters/bad/adapter_model.safetensors"
    );
}

/// A change that arrives in a merge commit itself (a conflict resolved by
/// hand, or files added while merging) is gated on a new branch too; what a
/// merge brings from a branch the remote already has is not re-gated.
#[test]
fn a_change_in_a_merge_commit_is_gated() {
    let (_tmp, work) = hooked_repo();
    ok(&work, &["checkout", "-q", "-b", "side"]);
    std::fs::write(work.join("notes.md"), "side\n").unwrap();
    commit_all(&work, "side");
    ok(&work, &["checkout", "-q", "-b", "merged", "main"]);
    std::fs::write(work.join("other.md"), "merged\n").unwrap();
    commit_all(&work, "merged");
    ok(&work, &["merge", "-q", "--no-ff", "--no-commit", "side"]);
    broken_adapter(&work, "adapters/evil");
    ok(&work, &["add", "-A"]);
    ok(&work, &["commit", "-q", "-m", "merge side"]);
    blocked(&work, "merged", "adapters/evil");

    // A broken adapter the remote already has (pushed past the gate on
    // purpose) does not block every branch that merges it afterwards.
    ok(&work, &["checkout", "-q", "-b", "experimental", "main"]);
    broken_adapter(&work, "adapters/known");
    commit_all(&work, "known");
    let o = Command::new("git")
        .current_dir(&work)
        .args(["push", "-q", "origin", "experimental"])
        .env("PROBEGATE_SKIP", "1")
        .output()
        .unwrap();
    assert!(o.status.success());
    ok(&work, &["checkout", "-q", "-b", "topic", "main"]);
    std::fs::write(work.join("topic.md"), "topic\n").unwrap();
    commit_all(&work, "topic");
    let (pushed, err) = push(&work, &["topic"]);
    assert!(pushed, "{err}");
    ok(
        &work,
        &["merge", "-q", "--no-ff", "-m", "merge", "experimental"],
    );
    let (pushed, err) = push(&work, &["topic"]);
    assert!(pushed, "{err}");
    assert!(!err.contains("checking"), "{err}");
}

/// Links inside the pushed tree lead to the pushed content of their target;
/// a link to something the commit does not hold is "could not evaluate",
/// even when the working tree has a file there.
#[test]
fn links_resolve_in_the_pushed_tree() {
    let (_tmp, work) = hooked_repo();
    let d = work.join("adapters/dangling");
    std::fs::create_dir_all(&d).unwrap();
    std::os::unix::fs::symlink("../../nowhere.json", d.join("adapter_config.json")).unwrap();
    std::fs::write(d.join("adapter_model.safetensors"), "junk").unwrap();
    commit_all(&work, "dangling link");
    // Present in the working tree only, never committed.
    std::fs::write(work.join("nowhere.json"), "{}").unwrap();
    let err = blocked(&work, "main", "adapters/dangling");
    assert!(
        err.contains("`nowhere.json` is not in the pushed commit"),
        "{err}"
    );
}
