//! action.yml run as GitHub runs a composite action, in a workspace outside
//! this clone: the file is parsed, the `${{ }}` expressions it uses are
//! evaluated (a small evaluator below; anything outside its subset fails the
//! test rather than being guessed), `uses:` steps are stubbed (actions/cache
//! restores a prepared directory, upload-artifact copies into a folder the
//! test reads), and every `shell: bash` step runs as the runner runs it —
//! `bash --noprofile --norc -eo pipefail {0}` — with GITHUB_OUTPUT,
//! GITHUB_ENV, GITHUB_PATH and GITHUB_STEP_SUMMARY files carried between
//! steps. probegate reaches the runner only through the Action's release
//! download, from a loopback "release" holding the binary this test build
//! made, packaged as cargo-dist packages it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use serde_json::{json, Value};

use crate::fakes::{spawn, FakeGithub};
use crate::harness::*;

mod expr;
mod runner;
use runner::*;

// ------------------------------------------------------------ a release on loopback

#[derive(Default)]
struct Release {
    files: Mutex<BTreeMap<String, Vec<u8>>>,
    log: Mutex<Vec<String>>,
}

async fn release_get(State(s): State<Arc<Release>>, uri: Uri) -> Response {
    s.log.lock().unwrap().push(uri.path().to_string());
    match s.files.lock().unwrap().get(uri.path()) {
        Some(b) => (StatusCode::OK, b.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, "Not Found").into_response(),
    }
}

struct FakeRelease {
    addr: SocketAddr,
    state: Arc<Release>,
}

impl FakeRelease {
    fn start() -> Self {
        let state = Arc::new(Release::default());
        let addr = spawn(
            Router::new()
                .fallback(any(release_get))
                .with_state(state.clone()),
        );
        FakeRelease { addr, state }
    }
    /// What PROBEGATE_RELEASE_BASE_URL is set to.
    fn base_url(&self) -> String {
        format!("http://{}/acme/probegate/releases/download", self.addr)
    }
    fn put(&self, name: &str, bytes: Vec<u8>) {
        self.state
            .files
            .lock()
            .unwrap()
            .insert(format!("/acme/probegate/releases/download/{name}"), bytes);
    }
    fn log(&self) -> Vec<String> {
        self.state.log.lock().unwrap().clone()
    }
}

fn target_triple() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x86_64-unknown-linux-gnu",
        _ => "aarch64-unknown-linux-gnu",
    }
}

/// This build's probegate as cargo-dist ships it: `probegate-TARGET.tar.gz`
/// holding `probegate-TARGET/probegate`, and its `.sha256` ("HASH *NAME").
fn packaged(dir: &Path) -> (String, Vec<u8>, String) {
    use sha2::Digest;
    let t = target_triple();
    let stage = dir.join(format!("probegate-{t}"));
    std::fs::create_dir_all(&stage).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_probegate"), stage.join("probegate")).unwrap();
    let asset = format!("probegate-{t}.tar.gz");
    let st = Command::new("tar")
        .current_dir(dir)
        .args(["-czf", &asset, &format!("probegate-{t}")])
        .status()
        .unwrap();
    assert!(st.success());
    let bytes = std::fs::read(dir.join(&asset)).unwrap();
    let sum = format!("{} *{asset}\n", hex::encode(sha2::Sha256::digest(&bytes)));
    (asset, bytes, sum)
}

/// A fake `cargo` first on PATH: records its arguments and fails, so a source
/// build the Action must not start (or must start) is seen, never run.
fn fake_cargo(dir: &Path) -> PathBuf {
    let bin = dir.join("fake-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.join("cargo.log");
    let script = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\necho 'fake cargo: not building' >&2\nexit 3\n",
        log.display()
    );
    std::fs::write(bin.join("cargo"), script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("cargo"), std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// A runner whose release server is `rel` and whose `cargo` is the fake one.
fn runner_for(dir: &Path, rel: &FakeRelease, github: Value) -> Runner {
    let mut r = Runner::new(dir);
    r.path_front.push(fake_cargo(dir));
    r.env
        .insert("PROBEGATE_RELEASE_BASE_URL".into(), rel.base_url());
    r.github = github;
    r
}

/// The prepared "models" cache: the fetched SmolLM2, as a hit restores it.
fn models_cache(dir: &Path) -> PathBuf {
    let d = dir.join("prepared-models");
    std::fs::create_dir_all(&d).unwrap();
    let m = model_path("smollm2");
    std::os::unix::fs::symlink(&m, d.join(m.file_name().unwrap())).unwrap();
    d
}

/// This build, packaged as cargo-dist would, on the fake release server.
/// Returns the asset's name.
fn publish_release(dir: &Path, rel: &FakeRelease) -> String {
    let (asset, bytes, sum) = packaged(dir);
    let version = env!("CARGO_PKG_VERSION");
    rel.put(&format!("v{version}/{asset}"), bytes);
    rel.put(&format!("v{version}/{asset}.sha256"), sum.into_bytes());
    asset
}

/// The model cache as a hit restores it, and an earlier run's base
/// activations: this machine's cache, where the other tests filled it
/// (absent, the gate computes them cold, minutes on two cores).
fn restore_caches(runner: &mut Runner, dir: &Path) {
    runner
        .caches
        .push(("probegate-models-".into(), models_cache(dir)));
    let acts = probegate::checkpoint::cache_root().join("activations");
    if acts.is_dir() {
        runner.caches.push(("probegate-acts-".into(), acts));
    }
}

/// What publishing one gate to pull request 7 calls: a check run opened
/// and completed, then one new sticky comment.
const ONE_GATE_PUBLISHED: [&str; 4] = [
    "POST /repos/acme/models/check-runs",
    "PATCH /repos/acme/models/check-runs/1",
    "GET /repos/acme/models/issues/7/comments",
    "POST /repos/acme/models/issues/7/comments",
];

fn calls(gh: &FakeGithub) -> Vec<String> {
    gh.log()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

// ------------------------------------------------------------ the tests

/// A pull request that adds an adapter (under a non-ASCII name) to a
/// repository holding only a monitor suite: the Action finds it from the
/// changes, downloads and verifies its own release, runs the gate, uploads
/// the report, and publishes one named check run and one sticky comment to
/// a fake GitHub.
#[test]
fn the_action_gates_a_changed_adapter_from_its_release() {
    let tmp = tempfile::tempdir().unwrap();
    let rel = FakeRelease::start();
    let mut runner = runner_for(tmp.path(), &rel, Value::Null);
    let ws = runner.workspace.clone();
    // The models live under ml/, the Action's working-directory.
    let ml = ws.join("ml");

    // The user's repository: the suite and a policy on main, the adapter in
    // the PR. No labeled data: probegate's built-in sets serve the suite.
    git(&ws, &["init", "-q", "-b", "main"]);
    copy_dir(
        &repo().join("monitors/smollm2"),
        &ml.join("monitors/smollm2"),
    );
    // A smaller corpus than the default's, to keep the test short, and
    // whole-set mode: with the budget of 60 below, critical concepts still
    // run (sequential mode's hard cap would leave them unsettled and fail).
    let policy =
        crate::check::test_policy(tmp.path(), &[("mode = \"sequential\"", "mode = \"whole\"")]);
    std::fs::copy(&policy, ml.join("gate-policy.toml")).unwrap();
    git(&ws, &["add", "-A"]);
    git(&ws, &["commit", "-q", "-m", "suite"]);
    let base_sha = git(&ws, &["rev-parse", "HEAD"]);
    let adapter = ml.join("adapters/support-é");
    copy_dir(&repo().join("fixtures/adapters/smollm2-lora-r4"), &adapter);
    git(&ws, &["add", "-A"]);
    git(&ws, &["commit", "-q", "-m", "adapter"]);
    let head_sha = git(&ws, &["rev-parse", "HEAD"]);

    let asset = publish_release(tmp.path(), &rel);
    let version = env!("CARGO_PKG_VERSION");
    let gh = FakeGithub::start();
    let cache = tmp.path().join("cache");
    restore_caches(&mut runner, tmp.path());
    runner.env.insert("GITHUB_API_URL".into(), gh.url());
    runner.env.insert("GITHUB_SHA".into(), head_sha.clone());
    runner.github = json!({
        "token": "ghs_from_the_runner", "sha": head_sha, "run_id": "4242", "run_attempt": "1",
        "repository": "acme/models", "action_repository": "",
        "event": {"pull_request": {"number": 7, "head": {"sha": head_sha}, "base": {"sha": base_sha}}},
    });

    let started = std::time::Instant::now();
    let out = runner.run(&[
        ("base", "smollm2"),
        ("candidates-from-changes", "true"),
        ("working-directory", "ml"),
        ("monitors", "monitors/smollm2"),
        ("policy", "gate-policy.toml"),
        ("budget", "60"),
        ("cache-path", cache.to_str().unwrap()),
    ]);
    eprintln!("action run: {:.1} s", started.elapsed().as_secs_f64());
    let log = out.log();

    // The binary came from the release, checksum-checked; nothing was built.
    assert_eq!(
        rel.log(),
        vec![
            format!("/acme/probegate/releases/download/v{version}/{asset}"),
            format!("/acme/probegate/releases/download/v{version}/{asset}.sha256"),
        ]
    );
    assert!(!tmp.path().join("cargo.log").exists(), "{log}");
    assert_eq!(out.step("Restore a source-built").outcome, "skipped");
    assert!(out.step("Download").log.contains("sha256 "), "{log}");
    assert!(
        out.step("Restore model downloads")
            .log
            .contains("cache hit"),
        "{log}"
    );

    // The gate failed the one changed adapter, and so the job. Under full
    // revalidation this adapter leaves refusal_compliance-l7 stale beyond
    // repair; within a budget of 60 that monitor is not revalidated, at
    // predicted risk 1.00, which the policy's `unverified_fail_risk` fails
    // (before that rule, this job passed it with a warning).
    let verdict = &out.outputs["verdict"];
    assert_eq!(verdict, "fail", "{log}");
    assert_eq!(out.outputs["exit-code"], "1", "{log}");
    assert!(out.failed, "{log}");
    assert_eq!(out.step("Verdict").outcome, "failure", "{log}");
    assert!(
        out.step("Verdict")
            .log
            .contains("not settled within the budget that the policy fails"),
        "{log}"
    );
    assert_ne!(out.outputs["unsettled"], "0", "{log}");
    assert_eq!(out.outputs["candidates"], "1");
    assert_eq!(out.outputs["probegate-version"], version);
    let report_dir = PathBuf::from(&out.outputs["report-path"]);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(report_dir.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["verdict"].as_str(), Some(verdict.as_str()));
    let reference = report["candidate"]["reference"].as_str().unwrap();
    assert_eq!(reference, format!("smollm2+{}", adapter.display()));
    // The step summary carries the report itself.
    let md = std::fs::read_to_string(report_dir.join("report.md")).unwrap();
    let heading = md.lines().next().unwrap();
    assert!(heading.starts_with("## "), "{md}");
    assert!(out.summary.contains(heading), "{}", out.summary);

    // The job name comes from the changed path (workspace stripped, sanitised).
    let name = "smollm2-ml-adapters-support";
    let artifact = runner.artifacts.join("probegate-report-changes-4242-1");
    assert!(artifact.join(name).join("report.json").is_file(), "{log}");
    assert_eq!(calls(&gh), ONE_GATE_PUBLISHED, "{log}");
    let runs = gh.log();
    assert_eq!(runs[0].body["name"], format!("probegate ({name})"));
    assert_eq!(runs[0].body["head_sha"], head_sha);
    assert_eq!(runs[0].auth.as_deref(), Some("Bearer ghs_from_the_runner"));
    // The run `github start` opened is completed with the verdict, and its
    // annotations point into the repository (working-directory included).
    let done = &runs[1].body;
    assert_eq!(
        done["conclusion"],
        serde_json::to_value(probegate::adapters::github::conclusion(
            serde_json::from_value(serde_json::Value::String(verdict.clone())).unwrap()
        ))
        .unwrap()
    );
    for a in done["output"]["annotations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let path = a["path"].as_str().unwrap();
        assert!(path.starts_with("ml/monitors/smollm2/"), "{path}");
    }
    let comments = gh.comments(7);
    assert_eq!(comments.len(), 1);
    assert!(
        comments[0]
            .1
            .starts_with(&probegate::adapters::github::sticky_marker(Some(name))),
        "{}",
        comments[0].1
    );
}

/// A release whose checksum does not match is an error, never a reason to
/// build from source or run the binary; a runner with no release asset (404)
/// builds the action's own source, and only then.
#[test]
fn a_bad_checksum_fails_and_only_a_missing_asset_builds() {
    let tmp = tempfile::tempdir().unwrap();
    let rel = FakeRelease::start();
    let (asset, bytes, _) = packaged(tmp.path());
    let version = env!("CARGO_PKG_VERSION");
    rel.put(&format!("v{version}/{asset}"), bytes);
    rel.put(
        &format!("v{version}/{asset}.sha256"),
        format!("{} *{asset}\n", "0".repeat(64)).into_bytes(),
    );
    let github =
        json!({"token": "", "sha": "abc", "run_id": "4242", "run_attempt": "1", "event": {}});
    let runner = runner_for(tmp.path(), &rel, github.clone());
    let inputs = [
        ("base", "smollm2"),
        ("candidate", "smollm2+adapters/x"),
        ("monitors", "monitors/smollm2"),
        ("github-token", ""),
    ];
    let out = runner.run(&inputs);
    let log = out.log();
    assert!(out.failed, "{log}");
    let dl = out.step("Download");
    assert_eq!(dl.outcome, "failure", "{log}");
    assert!(dl.log.contains("checksum mismatch"), "{log}");
    assert!(!tmp.path().join("cargo.log").exists(), "{log}");
    // Nothing after it ran but the always() upload (which found no report).
    for s in &out.steps[2..] {
        if s.name.contains("Upload") {
            assert!(s.log.contains("no files"), "{log}");
        } else {
            assert_eq!(s.outcome, "skipped", "{}: {log}", s.name);
        }
    }
    assert_eq!(out.outputs["verdict"], "");
    assert!(!runner
        .temp
        .join(format!("probegate-v{version}/bin/probegate"))
        .exists());

    // No asset for this runner: the action's own source is built (here a fake
    // cargo that records the call and fails, so the step fails with it).
    let tmp2 = tempfile::tempdir().unwrap();
    let empty = FakeRelease::start();
    let runner = runner_for(tmp2.path(), &empty, github);
    let out = runner.run(&inputs);
    let log = out.log();
    assert!(out.failed, "{log}");
    assert_eq!(out.step("Download").outcome, "success", "{log}");
    assert!(
        out.step("Restore a source-built")
            .log
            .contains("cache miss"),
        "{log}"
    );
    assert_eq!(out.step("Build probegate").outcome, "failure", "{log}");
    let cargo = std::fs::read_to_string(tmp2.path().join("cargo.log")).unwrap();
    assert_eq!(
        cargo.trim(),
        format!(
            "install --locked --path {} --root {}",
            repo().display(),
            runner.home.join(".probegate-bin").display()
        )
    );
    assert_eq!(
        empty.log(),
        vec![format!(
            "/acme/probegate/releases/download/v{version}/{asset}"
        )]
    );

    // A version other than the action's own is never built from this source.
    let out = runner.run(&[
        inputs[0],
        inputs[1],
        inputs[2],
        inputs[3],
        ("version", "v9.9.9"),
    ]);
    assert!(out.failed);
    assert!(
        out.step("Download").log.contains("pick a released version"),
        "{}",
        out.log()
    );
}

/// `device: cuda` builds the action's source with the cuda feature instead of
/// downloading the CPU release asset, and only where nvcc is; an unknown
/// device is refused before anything runs.
#[test]
fn a_cuda_device_builds_from_source_with_the_feature() {
    let tmp = tempfile::tempdir().unwrap();
    let rel = FakeRelease::start();
    let version = env!("CARGO_PKG_VERSION");
    // An asset is there: a cuda job must not take it.
    let asset = format!("probegate-{}.tar.gz", target_triple());
    rel.put(&format!("v{version}/{asset}"), b"a CPU build".to_vec());
    let github =
        json!({"token": "", "sha": "abc", "run_id": "4242", "run_attempt": "1", "event": {}});
    let runner = runner_for(tmp.path(), &rel, github);
    let with_device = |d: &'static str| {
        [
            ("base", "smollm2"),
            ("candidate", "smollm2+adapters/x"),
            ("monitors", "monitors/smollm2"),
            ("github-token", ""),
            ("device", d),
        ]
    };

    let out = runner.run(&with_device("gpu"));
    assert!(out.failed);
    let check = out.step("Check the inputs");
    assert_eq!(check.outcome, "failure", "{}", out.log());
    assert!(check.log.contains("input device: `gpu`"), "{}", out.log());

    let cargo_log = tmp.path().join("cargo.log");
    let nvcc_on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("nvcc").is_file()));
    if !nvcc_on_path {
        // No toolkit on this runner: the build step says what is missing
        // and cargo is never called.
        let out = runner.run(&with_device("cuda"));
        let log = out.log();
        assert!(out.failed, "{log}");
        assert_eq!(out.step("Download").outcome, "success", "{log}");
        let build = out.step("Build probegate");
        assert_eq!(build.outcome, "failure", "{log}");
        assert!(build.log.contains("needs the CUDA toolkit"), "{log}");
        assert!(!cargo_log.exists(), "{log}");
    }
    // With nvcc (a stand-in: the fake cargo never builds), cargo is asked
    // for the CUDA build.
    let nvcc = tmp.path().join("fake-bin/nvcc");
    std::fs::write(&nvcc, "#!/bin/sh\nexit 0\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&nvcc, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = runner.run(&with_device("cuda:1"));
    let log = out.log();
    assert_eq!(out.step("Build probegate").outcome, "failure", "{log}");
    let cargo = std::fs::read_to_string(&cargo_log).unwrap();
    assert_eq!(
        cargo.trim(),
        format!(
            "install --locked --path {} --root {} --features cuda",
            repo().display(),
            runner.home.join(".probegate-bin").display()
        )
    );
    // The release server was never asked for the CPU asset.
    assert!(rel.log().is_empty(), "{:?}", rel.log());
}

/// What makes the Action safe to call with untrusted inputs, checked on the file itself.
#[test]
fn the_action_keeps_inputs_out_of_scripts() {
    let a = action();
    for s in a["runs"]["steps"].as_array().unwrap() {
        let name = s["name"].as_str().unwrap_or("?");
        if let Some(body) = s["run"].as_str() {
            assert!(!body.contains("${{"), "{name}: expression inside run:");
            assert!(
                !body
                    .split(|c: char| !c.is_ascii_alphanumeric())
                    .any(|w| w == "eval"),
                "{name}: eval"
            );
        }
        if let Some(u) = s["uses"].as_str() {
            let (_, rf) = u.split_once('@').unwrap();
            assert!(
                rf.len() == 40 && rf.chars().all(|c| c.is_ascii_hexdigit()),
                "{name}: {u} is not pinned to a full commit SHA"
            );
        }
    }
    // Each pin says which release it is.
    let text = std::fs::read_to_string(repo().join("action.yml")).unwrap();
    for l in text.lines().filter(|l| l.contains("uses:")) {
        assert!(l.contains("# v"), "{l}");
    }
}

/// A suite spread over a matrix: two shard jobs gate one candidate each on
/// part of the suite and publish nothing (a shard's verdict is not the
/// candidate's); a merge job takes their downloaded artifacts, decides the
/// verdict over every monitor and publishes one check run and one comment.
#[test]
fn a_matrix_of_shards_and_a_merge_job_publish_one_verdict() {
    let tmp = tempfile::tempdir().unwrap();
    let rel = FakeRelease::start();
    let mut runner = runner_for(tmp.path(), &rel, Value::Null);
    let ws = runner.workspace.clone();
    git(&ws, &["init", "-q", "-b", "main"]);
    copy_dir(
        &repo().join("monitors/smollm2"),
        &ws.join("monitors/smollm2"),
    );
    copy_dir(
        &repo().join("fixtures/adapters/smollm2-lora-r4"),
        &ws.join("adapters/support"),
    );
    let policy = crate::check::test_policy(tmp.path(), &[]);
    std::fs::copy(&policy, ws.join("gate-policy.toml")).unwrap();
    git(&ws, &["add", "-A"]);
    git(&ws, &["commit", "-q", "-m", "suite and adapter"]);
    let head_sha = git(&ws, &["rev-parse", "HEAD"]);
    publish_release(tmp.path(), &rel);
    let gh = FakeGithub::start();
    restore_caches(&mut runner, tmp.path());
    runner.env.insert("GITHUB_API_URL".into(), gh.url());
    runner.github = json!({
        "token": "ghs_from_the_runner", "sha": head_sha, "run_id": "4242", "run_attempt": "1",
        "repository": "acme/models", "action_repository": "",
        "event": {"pull_request": {"number": 7, "head": {"sha": head_sha}, "base": {"sha": head_sha}}},
    });
    let cache = tmp.path().join("cache");
    let inputs = |extra: (&'static str, String)| -> Vec<(&'static str, String)> {
        vec![
            ("base", "smollm2".into()),
            ("candidate", "smollm2+adapters/support".into()),
            ("job-name", "support".into()),
            ("monitors", "monitors/smollm2".into()),
            ("policy", "gate-policy.toml".into()),
            ("budget", "60".into()),
            ("cache-path", cache.display().to_string()),
            extra,
        ]
    };
    let run = |extra| {
        let owned = inputs(extra);
        let args: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
        runner.run(&args)
    };

    let mut used = 0;
    for i in 1..=2 {
        let out = run(("shard", format!("{i}/2")));
        let log = out.log();
        // A shard that saw a stale monitor does not fail its job: the merge decides.
        assert!(!out.failed, "{log}");
        assert_eq!(out.step("Start the check runs").outcome, "skipped", "{log}");
        assert_eq!(out.step("Publish").outcome, "skipped", "{log}");
        let dir = runner
            .artifacts
            .join(format!("probegate-report-support-shard-{i}-of-2-4242-1"));
        let r: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("support-shard-{i}-of-2/report.json")))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(r["shard"]["index"], i, "{log}");
        used += r["budget"]["examples_used"].as_u64().unwrap();
    }
    assert!(gh.log().is_empty(), "shards publish nothing");

    // The merge job: actions/download-artifact puts each artifact in a folder of its own.
    copy_dir(&runner.artifacts, &ws.join("shards"));
    let out = run(("merge-shards", "shards".into()));
    let log = out.log();
    assert!(out.outputs["exit-code"] != "2", "{log}");
    assert_eq!(out.step("Fetch models").outcome, "skipped", "{log}");
    let r: Value = serde_json::from_str(
        &std::fs::read_to_string(PathBuf::from(&out.outputs["report-path"]).join("report.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(r["verdict"].as_str(), Some(out.outputs["verdict"].as_str()));
    assert_eq!(r["monitors"].as_array().unwrap().len(), 18);
    assert!(r.get("shard").is_none());
    assert_eq!(r["budget"]["examples_used"].as_u64(), Some(used));
    assert!(
        r["budget"]["examples_used"].as_u64().unwrap() <= 60 + 360,
        "{r}"
    );
    assert_eq!(calls(&gh), ONE_GATE_PUBLISHED, "{log}");
    assert_eq!(gh.log()[0].body["name"], "probegate (support)");

    // A shard must be I/N, and a shard job gates one named candidate.
    let bad = run(("shard", "0/2".into()));
    assert!(
        bad.failed && bad.log().contains("input shard: `0/2` is not I/N"),
        "{}",
        bad.log()
    );
}
