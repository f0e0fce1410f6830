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

    // The hook runs in the pushing repository, so every path it gets is
    // absolute; no --data: the labeled sets built into probegate are found by
    // the hash each monitor recorded, and the policy's corpus is built in too.
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
