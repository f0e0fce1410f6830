//! `probegate github publish` through octocrab against a fake GitHub on
//! loopback: exact endpoints, the auth header, a sticky comment that a
//! second run edits rather than duplicates, and one check run and comment
//! per job name; `probegate github candidates` on a real git repository.

use crate::fakes::{FakeGithub, ACTIONS_BOT};
use crate::harness::*;

/// `probegate github publish` against the fake, for PR 7 of acme/models.
fn publish_cmd(gh: &FakeGithub, report: &std::path::Path, extra: &[&str]) -> assert_cmd::Command {
    publish_as(gh, "ghs_test_token", report, extra)
}

/// The same with another token.
fn publish_as(
    gh: &FakeGithub,
    token: &str,
    report: &std::path::Path,
    extra: &[&str],
) -> assert_cmd::Command {
    let mut c = bin();
    c.current_dir(repo())
        .env_remove("GITHUB_TOKEN")
        .args([
            "github",
            "publish",
            "--repository",
            "acme/models",
            "--api-url",
        ])
        .arg(gh.url())
        .env_remove("PROBEGATE_COMMENT_AUTHOR")
        .args(["--token", token, "--sha", "0123abc", "--pr", "7"])
        .args([
            "--monitors",
            "monitors/smollm2",
            "--format",
            "json",
            "--report",
        ])
        .arg(report)
        .args(extra);
    c
}

fn publish(gh: &FakeGithub, report: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    json_of(publish_cmd(gh, report, extra))
}

fn json_of(mut c: assert_cmd::Command) -> serde_json::Value {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn publishes_check_runs_and_one_sticky_comment() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = crate::check::test_policy(tmp.path(), &[]);
    let base = model_path("smollm2").display().to_string();
    let report = |name: &str, monitors: &str, code: i32| {
        let out = tmp.path().join(name);
        bin()
            .current_dir(repo())
            .args([
                "check",
                "--base",
                &base,
                "--candidate",
                &base,
                "--quiet",
                "--no-history",
            ])
            .args(["--monitors", monitors, "--policy"])
            .arg(&policy)
            .arg("--out")
            .arg(&out)
            .assert()
            .code(code);
        out
    };
    // A real passing report (the base against itself) and a real
    // could-not-evaluate report (a monitor suite that does not exist).
    let pass = report("pass", "monitors/smollm2", 0);
    let err = report("err", "monitors/nope", 2);

    let gh = FakeGithub::start();
    let first = publish(&gh, &pass, &[]);
    assert_eq!(first["verdict"], "pass");
    assert_eq!(first["comment_created"], true);
    let second = publish(&gh, &err, &[]);
    assert_eq!(second["verdict"], "error");
    assert_eq!(second["comment_created"], false);
    assert_eq!(second["comment_id"], first["comment_id"]);

    let log = gh.log();
    let calls: Vec<String> = log
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    let run1 = first["check_run_id"].as_u64().unwrap();
    let run2 = second["check_run_id"].as_u64().unwrap();
    let cid = first["comment_id"].as_u64().unwrap();
    assert_eq!(
        calls,
        vec![
            "POST /repos/acme/models/check-runs".to_string(),
            format!("PATCH /repos/acme/models/check-runs/{run1}"),
            "GET /repos/acme/models/issues/7/comments".into(),
            "POST /repos/acme/models/issues/7/comments".into(),
            "POST /repos/acme/models/check-runs".into(),
            format!("PATCH /repos/acme/models/check-runs/{run2}"),
            "GET /repos/acme/models/issues/7/comments".into(),
            format!("PATCH /repos/acme/models/issues/comments/{cid}"),
        ]
    );
    for r in &log {
        assert_eq!(r.auth.as_deref(), Some("Bearer ghs_test_token"), "{r:?}");
    }
    assert_eq!(log[0].body["head_sha"], "0123abc");
    assert_eq!(log[0].body["name"], "probegate");
    assert_eq!(log[0].body["status"], "in_progress");
    assert_eq!(log[1].body["status"], "completed");
    assert_eq!(log[1].body["conclusion"], "success");
    // "Could not evaluate" stays apart from a failed gate.
    assert_eq!(log[5].body["conclusion"], "action_required");
    assert!(log[5].body["output"]["title"]
        .as_str()
        .unwrap()
        .contains("could not evaluate"));

    // One comment, now carrying the second report, found by its hidden marker.
    let comments = gh.comments(7);
    assert_eq!(comments.len(), 1);
    assert!(comments[0]
        .1
        .starts_with(probegate::adapters::github::STICKY_MARKER));
    assert!(
        comments[0].1.contains("could not evaluate"),
        "{}",
        comments[0].1
    );

    // --comment new adds one; --comment off touches no comment.
    publish(&gh, &pass, &["--comment", "new", "--no-check-run"]);
    publish(&gh, &pass, &["--comment", "off", "--no-check-run"]);
    assert_eq!(gh.comments(7).len(), 2);

    // The Action's path: complete the check run `github start` created, create none.
    let before = gh.log().len();
    let out = publish(&gh, &pass, &["--comment", "off", "--check-run-id", "42"]);
    assert_eq!(out["check_run_id"], 42);
    let calls: Vec<String> = gh.log()[before..]
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        calls,
        vec!["PATCH /repos/acme/models/check-runs/42".to_string()]
    );
}

/// Only the token's own comment is sticky. A comment someone else wrote
/// with probegate's marker (to have probegate edit it, or to hide the real
/// report behind it) is left alone, a new comment is written, and the
/// output says so. Who the token is comes from its check run's app (an
/// installation token such as Actions' GITHUB_TOKEN), else `GET /user` (a
/// user's token), else `--comment-author`; without any, publishing fails
/// closed before it writes anything.
#[test]
fn only_the_tokens_own_comment_is_sticky() {
    let gh = FakeGithub::start();
    // No report in the directory: a real "could not evaluate" summary.
    let empty = tempfile::tempdir().unwrap();
    let report = empty.path();
    let forged = format!(
        "{}\n## probegate: Gate passed\n",
        probegate::adapters::github::STICKY_MARKER
    );
    let foreign = gh.add_comment(7, "mallory", &forged);

    let out = publish_cmd(&gh, report, &[]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let first: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(first["comment_created"], true, "{first}");
    assert_ne!(first["comment_id"], foreign);
    assert_eq!(first["comment_author"], ACTIONS_BOT);
    assert_eq!(
        first["ignored_comments"],
        serde_json::json!([{"id": foreign, "author": "mallory"}])
    );
    assert!(
        err.contains("warning") && err.contains("mallory"),
        "the foreign comment is reported: {err}"
    );
    // The next run edits its own comment, never the forged one.
    let second = publish(&gh, report, &[]);
    assert_eq!(second["comment_created"], false);
    assert_eq!(second["comment_id"], first["comment_id"]);
    let comments = gh.comments_by(7);
    assert_eq!(comments.len(), 2, "{comments:?}");
    assert_eq!(
        (comments[0].id, comments[0].body.as_str()),
        (foreign, forged.as_str())
    );
    assert_eq!(comments[1].author, ACTIONS_BOT);
    assert!(comments[1].body.contains("could not evaluate"));
    let foreign_path = format!("/repos/acme/models/issues/comments/{foreign}");
    assert!(
        !gh.log().iter().any(|r| r.path == foreign_path),
        "the forged comment was touched"
    );

    // A user's token without a check run: `GET /user` names the account.
    gh.add_user_token("ghp_alice", "alice");
    let alice = |extra: &[&str]| {
        let mut args = vec!["--no-check-run"];
        args.extend_from_slice(extra);
        json_of(publish_as(&gh, "ghp_alice", report, &args))
    };
    let a1 = alice(&[]);
    assert_eq!(a1["comment_created"], true);
    assert_eq!(a1["comment_author"], "alice");
    assert_eq!(alice(&[])["comment_id"], a1["comment_id"]);
    assert_eq!(gh.comments_by(7).len(), 3);

    // An installation token without a check run cannot read who it is
    // (`GET /user` answers 403): refused, with the way out, nothing written.
    let before = gh.log().len();
    let out = publish_cmd(&gh, report, &["--no-check-run"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--comment-author") && err.contains(ACTIONS_BOT),
        "{err}"
    );
    assert!(
        gh.log()[before..].iter().all(|r| r.method == "GET"),
        "{:?}",
        gh.log()
    );
    // Told who it is, it finds its comment again.
    let told = publish(
        &gh,
        report,
        &["--no-check-run", "--comment-author", ACTIONS_BOT],
    );
    assert_eq!(told["comment_created"], false);
    assert_eq!(told["comment_id"], first["comment_id"]);
    assert_eq!(gh.comments_by(7).len(), 3);
    assert_eq!(gh.comments_by(7)[0].body, forged);
}

#[test]
fn an_api_error_is_a_clear_error() {
    let gh = FakeGithub::start();
    let tmp = tempfile::tempdir().unwrap();
    // Not owner/name: refused before any request.
    bin()
        .args(["github", "publish", "--repository", "no-slash", "--api-url"])
        .arg(gh.url())
        .args(["--token", "t", "--sha", "s", "--report"])
        .arg(tmp.path())
        .assert()
        .code(2)
        .stderr(predicates::str::contains("owner/name"));
    // An endpoint the fake does not know answers 404: the call is named.
    bin()
        .args([
            "github",
            "start",
            "--repository",
            "acme/models",
            "--api-url",
        ])
        .arg(format!("{}/nowhere", gh.url()))
        .args(["--token", "t", "--sha", "s"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("create check run on acme/models"));
}

/// action.yml is shell glued to the CLI: every input it reads is declared,
/// and every probegate flag it passes exists.
#[test]
fn the_action_only_uses_declared_inputs_and_real_flags() {
    let action = std::fs::read_to_string(repo().join("action.yml")).unwrap();
    let (decl, _) = action.split_once("\noutputs:").unwrap();
    let mut used: Vec<&str> = action
        .match_indices("inputs.")
        .map(|(i, _)| {
            let rest = &action[i + 7..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect();
    used.sort();
    used.dedup();
    assert!(used.len() >= 9, "{used:?}");
    for u in &used {
        assert!(
            decl.contains(&format!("\n  {u}:\n")),
            "input `{u}` is used but not declared"
        );
    }
    for (cmd, flags) in [
        (
            vec!["check"],
            vec![
                "--base",
                "--candidate",
                "--monitors",
                "--policy",
                "--data",
                "--out",
                "--budget",
            ],
        ),
        (
            vec!["github", "publish"],
            vec![
                "--report",
                "--sha",
                "--comment",
                "--monitors",
                "--details-url",
                "--pr",
                "--check-run-id",
                "--name",
            ],
        ),
        (
            vec!["github", "start"],
            vec!["--sha", "--details-url", "--name"],
        ),
        (
            vec!["github", "candidates"],
            vec!["--base", "--since", "--repo", "-z"],
        ),
        (vec!["inspect"], vec!["--model", "--format"]),
    ] {
        let help = bin().args(&cmd).arg("--help").output().unwrap();
        let help = String::from_utf8_lossy(&help.stdout);
        for f in flags {
            assert!(help.contains(f), "`probegate {}` has no {f}", cmd.join(" "));
            assert!(
                action.contains(f),
                "{f} listed here but not used by action.yml"
            );
        }
    }
}

/// A matrix gating two candidates in one pull request: each job name keeps
/// its own sticky comment and its own check run, and the unnamed job's
/// comment is a third, untouched by either.
#[test]
fn named_jobs_keep_their_own_check_run_and_comment() {
    let gh = FakeGithub::start();
    // No report in the directory: a real "could not evaluate" summary.
    let empty = tempfile::tempdir().unwrap();
    let report = empty.path();
    let a1 = publish(&gh, report, &["--name", "smollm2-adapters-a"]);
    let b1 = publish(&gh, report, &["--job", "smollm2-adapters-b"]);
    let a2 = publish(&gh, report, &["--name", "smollm2-adapters-a"]);
    let plain = publish(&gh, report, &[]);
    assert_eq!(a1["comment_created"], true);
    assert_eq!(b1["comment_created"], true);
    assert_ne!(a1["comment_id"], b1["comment_id"]);
    assert_eq!(a2["comment_created"], false);
    assert_eq!(a2["comment_id"], a1["comment_id"]);
    assert_eq!(plain["comment_created"], true);
    let comments = gh.comments(7);
    assert_eq!(comments.len(), 3, "{comments:?}");
    for (c, name) in
        comments
            .iter()
            .zip([Some("smollm2-adapters-a"), Some("smollm2-adapters-b"), None])
    {
        assert!(
            c.1.starts_with(&format!(
                "{}\n",
                probegate::adapters::github::sticky_marker(name)
            )),
            "{c:?}"
        );
    }
    let names: Vec<String> = gh
        .log()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/check-runs"))
        .map(|r| r.body["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        names,
        [
            "probegate (smollm2-adapters-a)",
            "probegate (smollm2-adapters-b)",
            "probegate (smollm2-adapters-a)",
            "probegate",
        ]
    );

    // `github start` names the in-progress run the same way.
    let before = gh.log().len();
    bin()
        .env_remove("GITHUB_TOKEN")
        .args([
            "github",
            "start",
            "--repository",
            "acme/models",
            "--api-url",
        ])
        .arg(gh.url())
        .args(["--token", "t", "--sha", "s", "--name", "gemma3-q4"])
        .assert()
        .success();
    assert_eq!(gh.log()[before].body["name"], "probegate (gemma3-q4)");

    // A name that could close the HTML comment (or is not a name) is refused
    // before any request.
    let before = gh.log().len();
    for bad in ["a -->", "", "x/y", &"n".repeat(101)] {
        publish_cmd(&gh, report, &["--name", bad])
            .assert()
            .code(2)
            .stderr(predicates::str::contains("--name"));
    }
    assert_eq!(gh.log().len(), before);
}

/// `github candidates` lists what a pull request changed (`BASE...HEAD`:
/// not what the base branch gained meanwhile), maps it as the pre-push hook
/// does, keeps non-ASCII paths intact through `-z`, skips deleted files, and
/// fails closed on a revision it cannot find.
#[test]
fn candidates_come_from_the_pull_requests_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let r = std::fs::canonicalize(tmp.path()).unwrap();
    let w = |p: &str, text: &str| {
        let p = r.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    git(&r, &["init", "-q", "-b", "main"]);
    w("README.md", "models\n");
    w("adapters/old/adapter_config.json", "{}");
    w("gone.gguf", "");
    git(&r, &["add", "-A"]);
    git(&r, &["commit", "-q", "-m", "start"]);
    let fork = git(&r, &["rev-parse", "HEAD"]);

    // The base branch moves on after the pull request forked.
    w("adapters/main-only/adapter_config.json", "{}");
    git(&r, &["add", "-A"]);
    git(&r, &["commit", "-q", "-m", "on main"]);
    let main = git(&r, &["rev-parse", "HEAD"]);

    git(&r, &["checkout", "-q", "-b", "pr", &fork]);
    w("adapters/über ü/adapter_config.json", "{}");
    w("adapters/über ü/adapter_model.safetensors", "");
    w("full/config.json", "{}");
    w("full/model.safetensors", "");
    w("m.gguf", "");
    w("notes.md", "");
    std::fs::remove_file(r.join("gone.gguf")).unwrap();
    git(&r, &["add", "-A"]);
    git(&r, &["commit", "-q", "-m", "pr"]);

    let run = |extra: &[&str]| {
        bin()
            .args(["github", "candidates", "--base", "smollm2", "--repo"])
            .arg(&r)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&["--since", &main, "-z"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .split_terminator('\0')
        .map(str::to_string)
        .collect();
    let expected = vec![
        format!("smollm2+{}", r.join("adapters/über ü").display()),
        r.join("full").display().to_string(),
        r.join("m.gguf").display().to_string(),
    ];
    assert_eq!(listed, expected);

    let out = run(&["--since", &main, "--format", "json"]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["since"], main);
    assert_eq!(j["candidates"], serde_json::json!(expected));
    let files: Vec<&str> = j["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        files.contains(&"adapters/über ü/adapter_config.json"),
        "{files:?}"
    );
    assert!(files.contains(&"gone.gguf"), "{files:?}");
    assert!(!files.iter().any(|f| f.contains("main-only")), "{files:?}");

    // Nothing changed since HEAD itself: an empty list, not an error.
    let out = run(&["--since", "HEAD"]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());

    for (since, msg) in [
        ("0123456789abcdef0123456789abcdef01234567", "no such commit"),
        ("-p", "not a git revision"),
    ] {
        let out = run(&[&format!("--since={since}")]);
        assert_eq!(out.status.code(), Some(2), "{since}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(msg), "{since}: {err}");
    }
}
