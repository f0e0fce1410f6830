//! MLflow 3 as it is deployed: a real `mlflow server` (installed by
//! scripts/mlflow-env.sh; the test fails, never skips, when it cannot be)
//! with a SQL backend and its artifact proxy, MLflow's own webhook delivery
//! to a real `probegate serve`, and the verdict read back from the registry.
//! Then the artifact resolution against fake servers: `models:/` and
//! `runs:/` chains, hostile listings, the byte cap, ambiguity.

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use probegate::adapters::serve::registry::{mlflow_fetch, ArtifactLimits};
use probegate::checkpoint::Checkpoint;
use serde_json::{json, Value};

use crate::harness::*;

const SECRET: &str = "mlflow-e2e-webhook-secret";
/// The bearer token /jobs and the reports ask for.
const READ_TOKEN: &str = "mlflow-e2e-read-token";
const MODEL: &str = "smollm2-support-e2e";

/// A child in its own process group, killed with the whole group on drop
/// (`mlflow server` forks uvicorn workers), panic or not.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(cmd: &mut Command, log: &Path) -> Proc {
        let out = std::fs::File::create(log).unwrap();
        let child = cmd
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        Proc {
            child,
            log: log.to_path_buf(),
        }
    }

    /// The log's last lines, for a failure message.
    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn assert_running(&mut self, what: &str) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!("{what} exited ({st}):\n{}", self.tail());
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The venv's python from scripts/mlflow-env.sh (installs mlflow on first use).
fn mlflow_python() -> PathBuf {
    let out = Command::new(repo().join("scripts/mlflow-env.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/mlflow-env.sh");
    assert!(
        out.status.success(),
        "scripts/mlflow-env.sh failed ({}): this test needs a real MLflow and must not be skipped",
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let py = PathBuf::from(stdout.lines().last().unwrap_or("").trim());
    assert!(
        py.is_file(),
        "scripts/mlflow-env.sh printed {stdout:?}, not a python"
    );
    py
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get_json(url: &str) -> Value {
    let auth = format!("Bearer {READ_TOKEN}");
    match ureq::get(url).set("Authorization", &auth).call() {
        Ok(r) => r.into_json().unwrap(),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

const LOG_AND_REGISTER: &str = r#"
import json, sys
import mlflow
from mlflow import MlflowClient

name, hook_url, secret, adapter = sys.argv[1:5]
MlflowClient().create_webhook(
    name="probegate", url=hook_url, events=["model_version.created"], secret=secret
)

class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input):
        return model_input

with mlflow.start_run():
    info = mlflow.pyfunc.log_model(
        name="support-adapter",
        python_model=Echo(),
        artifacts={"adapter": adapter},
        pip_requirements=["mlflow"],
    )
mv = mlflow.register_model(info.model_uri, name)
print(json.dumps({"model_uri": info.model_uri, "model_id": info.model_id,
                  "version": str(mv.version), "source": mv.source}))
"#;

#[test]
fn real_mlflow_3_registration_gets_a_verdict_tied_to_the_bytes() {
    let t0 = Instant::now();
    let py = mlflow_python();
    let t_env = t0.elapsed();
    let venv_bin = py.parent().unwrap().to_path_buf();
    let base = model_path("smollm2");
    let adapter = fixture("adapters/smollm2-lora-r4");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    // MLflow: SQL backend (webhooks need it), artifacts behind its proxy, so a
    // logged model's files are at `mlflow-artifacts:/…`, not a local path.
    let port = free_port();
    let ml = format!("http://127.0.0.1:{port}");
    let mut mlflow = Proc::spawn(
        Command::new(venv_bin.join("mlflow"))
            .current_dir(dir)
            .arg("server")
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", dir.join("db.sqlite").display()))
            .args(["--default-artifact-root", "mlflow-artifacts:/"])
            .arg("--artifacts-destination")
            .arg(dir.join("artifacts"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--workers", "2"])
            .env("MLFLOW_WEBHOOK_ALLOWED_SCHEMES", "http,https")
            .env("MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS", "true")
            // Loopback only: no usage reports leave the machine.
            .env("MLFLOW_DISABLE_TELEMETRY", "true")
            .env("DO_NOT_TRACK", "true"),
        &dir.join("mlflow.log"),
    );
    let up = Instant::now();
    loop {
        mlflow.assert_running("mlflow server");
        if ureq::get(&format!("{ml}/health")).call().is_ok() {
            break;
        }
        assert!(
            up.elapsed() < Duration::from_secs(300),
            "mlflow server not up after 300 s:\n{}",
            mlflow.tail()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let t_mlflow_up = up.elapsed();

    // probegate serve, one MLflow target, policy and data from the clone.
    let policy = crate::check::test_policy(dir, &[]);
    let cfg = dir.join("serve.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
listen = "127.0.0.1:0"
state_dir = "{state}"
callback_retries = 3
public_url = "http://probegate.test"
read_token_env = "PG_E2E_READ_TOKEN"

[mlflow]
tracking_uri = "{ml}"
webhook_secret_env = "PG_E2E_MLFLOW_SECRET"

[[target]]
registry = "mlflow"
name = "{MODEL}"
base = "smollm2"
monitors = "{m}"
policy = "{p}"
data = "{d}"
"#,
            state = dir.join("state").display(),
            m = repo().join("monitors/smollm2").display(),
            p = policy.display(),
            d = repo().join("data/suite").display(),
        ),
    )
    .unwrap();
    let mut serve = Proc::spawn(
        Command::new(assert_cmd::cargo::cargo_bin("probegate"))
            .current_dir(repo())
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("PG_E2E_MLFLOW_SECRET", SECRET)
            .env("PG_E2E_READ_TOKEN", READ_TOKEN)
            .env("PROBEGATE_LOG", "info")
            .env_remove("HF_HUB_OFFLINE"),
        &dir.join("serve.log"),
    );
    let serve_url = {
        let up = Instant::now();
        loop {
            serve.assert_running("probegate serve");
            let first = std::fs::read_to_string(&serve.log)
                .unwrap_or_default()
                .lines()
                .find_map(|l| {
                    l.strip_prefix("probegate serve: listening on ")
                        .map(str::to_string)
                });
            if let Some(u) = first {
                break u;
            }
            assert!(up.elapsed() < Duration::from_secs(60), "{}", serve.tail());
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    // The user's side: a webhook, then MLflow 3's usual log + register.
    let t_reg = Instant::now();
    let script = dir.join("log_and_register.py");
    std::fs::write(&script, LOG_AND_REGISTER).unwrap();
    let out = Command::new(&py)
        .current_dir(dir)
        .arg(&script)
        .args([MODEL, &format!("{serve_url}/webhooks/mlflow"), SECRET])
        .arg(&adapter)
        .env("MLFLOW_TRACKING_URI", &ml)
        .env("MLFLOW_DISABLE_TELEMETRY", "true")
        .env("DO_NOT_TRACK", "true")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "log and register failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        mlflow.tail()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let reg: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
    let t_reg = t_reg.elapsed();
    let version = reg["version"].as_str().unwrap().to_string();
    let source = reg["source"].as_str().unwrap();
    assert!(source.starts_with("models:/m-"), "{reg}");
    assert_eq!(source, reg["model_uri"]);
    let lm = get_json(&format!(
        "{ml}/api/2.0/mlflow/logged-models/{}",
        reg["model_id"].as_str().unwrap()
    ));
    let artifact_uri = lm["model"]["info"]["artifact_uri"].as_str().unwrap();
    assert!(
        artifact_uri.starts_with("mlflow-artifacts:/"),
        "the files must sit behind the proxy: {lm}"
    );

    // MLflow delivers the webhook itself; the verdict comes back as tags.
    let t_gate = Instant::now();
    let tags: HashMap<String, String> = loop {
        mlflow.assert_running("mlflow server");
        serve.assert_running("probegate serve");
        let v = get_json(&format!(
            "{ml}/api/2.0/mlflow/model-versions/get?name={MODEL}&version={version}"
        ));
        let tags: HashMap<String, String> = v["model_version"]["tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|t| {
                        (
                            t["key"].as_str().unwrap_or("").to_string(),
                            t["value"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if tags.contains_key("probegate.verdict") {
            break tags;
        }
        assert!(
            t_gate.elapsed() < Duration::from_secs(900),
            "no verdict tag after 900 s; serve log:\n{}",
            serve.tail()
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    let t_gate = t_gate.elapsed();

    // One job, from MLflow's own signed delivery, resolved through the proxy.
    let jobs = get_json(&format!("{serve_url}/jobs"));
    let jobs = jobs["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let id = jobs[0]["id"].as_u64().unwrap();
    let j = get_json(&format!("{serve_url}/jobs/{id}"));
    let (job, report) = (&j["job"], &j["report"]);
    assert_eq!(job["source"]["registry"], "mlflow", "{j}");
    assert_eq!(job["source"]["name"], MODEL);
    assert_eq!(job["source"]["version"], version.as_str());
    assert_eq!(job["source"]["event"], "model_version.created");
    assert!(
        !job["source"]["delivery_id"].as_str().unwrap().is_empty(),
        "{j}"
    );
    assert_eq!(job["state"], "finished", "{j}\n{}", serve.tail());
    let verdict = tags["probegate.verdict"].as_str();
    assert!(
        ["pass", "pass_with_repairs", "fail"].contains(&verdict),
        "{tags:?}"
    );
    assert_eq!(job["verdict"], verdict);
    assert_eq!(report["verdict"], verdict);
    let candidate = job["candidate"].as_str().unwrap();
    let cache = dir.join("state/mlflow-cache").join(id.to_string());
    assert_eq!(
        candidate,
        format!("smollm2+{}", cache.join("adapter").display()),
        "the adapter was downloaded into the job's cache"
    );
    assert!(
        !cache.exists(),
        "the downloaded candidate is removed after the job"
    );
    assert_eq!(report["diff"]["family"], "low_rank_adapter", "{report}");

    // The fingerprint tag is the report's and the fixture's: the bytes MLflow
    // stored are the bytes checked.
    let expected = Checkpoint::open_str(&format!("{}+{}", base.display(), adapter.display()))
        .unwrap()
        .fingerprint()
        .unwrap();
    assert_eq!(report["candidate"]["fingerprint"], expected.as_str());
    assert_eq!(
        tags.get(probegate::adapters::serve::FINGERPRINT_TAG),
        Some(&expected),
        "{tags:?}"
    );
    assert_eq!(
        tags["probegate.report"],
        format!("http://probegate.test/jobs/{id}/report.md")
    );
    assert_eq!(tags["probegate.summary"], job["summary"].as_str().unwrap());
    eprintln!(
        "real MLflow: env {:.1} s, server up {:.1} s, log+register {:.1} s, webhook to verdict tag {:.1} s, total {:.1} s ({verdict})",
        t_env.as_secs_f64(),
        t_mlflow_up.as_secs_f64(),
        t_reg.as_secs_f64(),
        t_gate.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    drop(serve);
    drop(mlflow);
}

// ---------------------------------------------------------------- fake MLflow

/// An MLflow API that answers from tables set before it starts and records
/// every request as `METHOD path?query`.
#[derive(Default)]
struct Fake {
    /// (name, version) -> source
    versions: HashMap<(String, String), String>,
    /// run id -> artifact_uri
    runs: HashMap<String, String>,
    /// proxied directory -> its listing entries, as the server writes them
    dirs: HashMap<String, Vec<Value>>,
    /// proxied file -> its bytes
    blobs: HashMap<String, Vec<u8>>,
    seen: Mutex<Vec<String>>,
}

const PROXY: &str = "/api/2.0/mlflow-artifacts/artifacts";

async fn fake_any(
    State(s): State<Arc<Fake>>,
    method: Method,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    s.seen.lock().unwrap().push(format!(
        "{method} {}?{}",
        uri.path(),
        uri.query().unwrap_or("")
    ));
    let arg = |k: &str| q.get(k).cloned().unwrap_or_default();
    let missing = || {
        (
            StatusCode::NOT_FOUND,
            Json(json!({"error_code": "RESOURCE_DOES_NOT_EXIST"})),
        )
            .into_response()
    };
    let path = uri.path();
    if path == "/api/2.0/mlflow/model-versions/get" {
        let (name, version) = (arg("name"), arg("version"));
        return match s.versions.get(&(name.clone(), version.clone())) {
            Some(src) => Json(json!({"model_version": {"name": name, "version": version,
                "source": src, "status": "READY"}}))
            .into_response(),
            None => missing(),
        };
    }
    if path == "/api/2.0/mlflow/runs/get" {
        return match s.runs.get(&arg("run_id")) {
            Some(a) => Json(json!({"run": {"info": {"artifact_uri": a}}})).into_response(),
            None => missing(),
        };
    }
    if path == PROXY {
        return match s.dirs.get(&arg("path")) {
            Some(files) => Json(json!({ "files": files })).into_response(),
            None => Json(json!({})).into_response(),
        };
    }
    if let Some(file) = path.strip_prefix(&format!("{PROXY}/")) {
        return match s.blobs.get(file) {
            Some(b) => b.clone().into_response(),
            None => missing(),
        };
    }
    missing()
}

fn start_fake(f: Fake) -> (String, Arc<Fake>) {
    let state = Arc::new(f);
    let addr = crate::fakes::spawn(
        Router::new()
            .fallback(any(fake_any))
            .with_state(state.clone()),
    );
    (format!("http://{addr}"), state)
}

fn file(name: &str, size: usize) -> Value {
    json!({"path": name, "is_dir": false, "file_size": size})
}

fn subdir(name: &str) -> Value {
    json!({"path": name, "is_dir": true})
}

/// A fake serving the r4 adapter fixture as a pyfunc model under `root`.
fn pyfunc_fake(root: &str) -> Fake {
    let a = fixture("adapters/smollm2-lora-r4");
    let cfg = std::fs::read(a.join("adapter_config.json")).unwrap();
    let w = std::fs::read(a.join("adapter_model.safetensors")).unwrap();
    let mut f = Fake::default();
    f.dirs.insert(
        root.into(),
        vec![
            file("MLmodel", 10),
            file("python_model.pkl", 10),
            subdir("artifacts"),
        ],
    );
    f.dirs
        .insert(format!("{root}/artifacts"), vec![subdir("smollm2-lora-r4")]);
    f.dirs.insert(
        format!("{root}/artifacts/smollm2-lora-r4"),
        vec![
            file("adapter_config.json", cfg.len()),
            file("adapter_model.safetensors", w.len()),
        ],
    );
    f.blobs.insert(
        format!("{root}/artifacts/smollm2-lora-r4/adapter_config.json"),
        cfg,
    );
    f.blobs.insert(
        format!("{root}/artifacts/smollm2-lora-r4/adapter_model.safetensors"),
        w,
    );
    f
}

/// The pyfunc fake, registered as version 1 of `m` with its proxied root as source.
fn registered(root: &str) -> Fake {
    let mut f = pyfunc_fake(root);
    f.versions.insert(
        ("m".into(), "1".into()),
        format!("mlflow-artifacts:/{root}"),
    );
    f
}

/// Local sources are read under the temporary directory and the model cache.
fn fetch(
    url: &str,
    name: &str,
    version: &str,
    cache: &Path,
    limits: ArtifactLimits,
) -> Result<String, String> {
    let roots = vec![
        std::env::temp_dir(),
        model_path("smollm2").parent().unwrap().to_path_buf(),
    ];
    fetch_in(url, name, version, cache, limits, roots)
}

fn fetch_in(
    url: &str,
    name: &str,
    version: &str,
    cache: &Path,
    limits: ArtifactLimits,
    artifact_roots: Vec<PathBuf>,
) -> Result<String, String> {
    let cfg = probegate::adapters::serve::config::MlflowConfig {
        tracking_uri: url.to_string(),
        webhook_secret: "unused".into(),
        token: None,
        max_skew_seconds: 300,
        artifact_roots,
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(mlflow_fetch(&cfg, name, version, "smollm2", cache, &limits))
        .map_err(|e| e.to_string())
}

fn downloads(f: &Fake) -> Vec<String> {
    f.seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.starts_with(&format!("GET {PROXY}/")))
        .cloned()
        .collect()
}

#[test]
fn models_and_runs_sources_are_followed_to_the_proxied_adapter() {
    let root = "0/r1/artifacts/model";
    let mut f = pyfunc_fake(root);
    // copy_model_version's `models:/<name>/<version>`, then MLflow 2's `runs:/`.
    f.versions
        .insert(("prod".into(), "3".into()), "models:/staging/7".into());
    f.versions
        .insert(("staging".into(), "7".into()), "runs:/r1/model".into());
    f.runs
        .insert("r1".into(), "mlflow-artifacts:/0/r1/artifacts".into());
    f.versions
        .insert(("s3".into(), "1".into()), "s3://bucket/models/1".into());
    f.versions.insert(
        ("elsewhere".into(), "1".into()),
        "mlflow-artifacts://10.0.0.9:5000/0/x".into(),
    );
    let (url, f) = start_fake(f);
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("job-1");

    let r = fetch(&url, "prod", "3", &cache, ArtifactLimits::default()).unwrap();
    assert_eq!(r, format!("smollm2+{}", cache.join("adapter").display()));
    let a = fixture("adapters/smollm2-lora-r4");
    for name in ["adapter_config.json", "adapter_model.safetensors"] {
        assert_eq!(
            std::fs::read(cache.join("adapter").join(name)).unwrap(),
            std::fs::read(a.join(name)).unwrap(),
            "{name}"
        );
    }
    // Only the candidate's files were downloaded, not the pickle or MLmodel.
    let got = downloads(&f);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got.iter()
            .all(|r| r.contains("/artifacts/smollm2-lora-r4/")),
        "{got:?}"
    );
    assert!(f
        .seen
        .lock()
        .unwrap()
        .iter()
        .any(|r| r == "GET /api/2.0/mlflow/runs/get?run_id=r1"));

    let e = fetch(&url, "s3", "1", &cache, ArtifactLimits::default()).unwrap_err();
    assert!(
        e.contains("`s3` artifacts are not read") && e.contains("s3://bucket"),
        "{e}"
    );
    let e = fetch(&url, "elsewhere", "1", &cache, ArtifactLimits::default()).unwrap_err();
    assert!(e.contains("10.0.0.9:5000"), "{e}");
    let e = fetch(&url, "nope", "1", &cache, ArtifactLimits::default()).unwrap_err();
    assert!(e.contains("404"), "{e}");
}

#[test]
fn hostile_listings_are_refused_before_any_download_or_write() {
    for evil in [
        "..",
        "../../etc",
        "/etc/passwd",
        "a/../../b",
        "x\\..\\y",
        "c:",
        "nul\u{0}",
    ] {
        let root = "0/m-1/artifacts";
        let mut f = registered(root);
        // The hostile name sits beside a valid adapter, listed first.
        f.dirs
            .get_mut(&format!("{root}/artifacts"))
            .unwrap()
            .insert(0, file(evil, 4));
        let (url, f) = start_fake(f);
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("job");
        let e = fetch(&url, "m", "1", &cache, ArtifactLimits::default()).unwrap_err();
        assert!(e.contains("refused"), "{evil:?}: {e}");
        assert!(downloads(&f).is_empty(), "{evil:?}: {:?}", downloads(&f));
        assert!(!cache.exists(), "{evil:?}: nothing written");
        // No request ever named the hostile path.
        let seen = f.seen.lock().unwrap().clone();
        assert!(!seen.iter().any(|r| r.contains("etc")), "{seen:?}");
    }
}

#[test]
fn the_byte_cap_holds_whatever_the_listing_claims() {
    let root = "0/m-2/artifacts";
    let small = ArtifactLimits {
        max_bytes: 100_000,
        ..ArtifactLimits::default()
    };
    // Honest listing over the cap: refused before any download.
    let f = registered(root);
    let (url, f) = start_fake(f);
    let tmp = tempfile::tempdir().unwrap();
    let e = fetch(&url, "m", "1", &tmp.path().join("a"), small).unwrap_err();
    assert!(e.contains("100000 byte cap"), "{e}");
    assert!(downloads(&f).is_empty());

    // A listing that understates the size: the download stops at the cap,
    // and its partial file is gone.
    let mut f = registered(root);
    f.dirs
        .get_mut(&format!("{root}/artifacts/smollm2-lora-r4"))
        .unwrap()[1] = file("adapter_model.safetensors", 10);
    let (url, f) = start_fake(f);
    let cache = tmp.path().join("b");
    let e = fetch(&url, "m", "1", &cache, small).unwrap_err();
    assert!(e.contains("exceed 100000 bytes"), "{e}");
    assert!(!downloads(&f).is_empty());
    let left: Vec<_> = walk(&cache);
    assert!(
        !left
            .iter()
            .any(|p| p.ends_with("adapter_model.safetensors") || p.ends_with(".partial")),
        "{left:?}"
    );

    // Under a generous cap the understated listing is still caught: a
    // truncated or swapped file never passes as the one listed.
    let mut f = registered(root);
    f.dirs
        .get_mut(&format!("{root}/artifacts/smollm2-lora-r4"))
        .unwrap()[1] = file("adapter_model.safetensors", 10);
    let (url, _f) = start_fake(f);
    let e = fetch(
        &url,
        "m",
        "1",
        &tmp.path().join("c"),
        ArtifactLimits::default(),
    )
    .unwrap_err();
    assert!(e.contains("the listing says 10"), "{e}");
}

#[test]
fn two_adapters_in_one_version_is_an_error_naming_both() {
    let root = "0/m-3/artifacts";
    let mut f = registered(root);
    f.dirs.get_mut(root).unwrap().push(subdir("peft"));
    f.dirs.insert(
        format!("{root}/peft"),
        vec![
            file("adapter_config.json", 10),
            file("adapter_model.safetensors", 10),
        ],
    );
    let (url, f) = start_fake(f);
    let tmp = tempfile::tempdir().unwrap();
    let e = fetch(
        &url,
        "m",
        "1",
        &tmp.path().join("x"),
        ArtifactLimits::default(),
    )
    .unwrap_err();
    assert!(
        e.contains("2 PEFT adapters")
            && e.contains("`artifacts/smollm2-lora-r4/`")
            && e.contains("`peft/`"),
        "{e}"
    );
    assert!(downloads(&f).is_empty());
}

#[test]
fn local_sources_are_linked_in_place_with_the_same_layout_rules() {
    // A file:// store laid out as the transformers flavor's PEFT save.
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = fixture("adapters/smollm2-lora-r4");
    std::fs::create_dir_all(store.join("peft")).unwrap();
    for name in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(a.join(name), store.join("peft").join(name)).unwrap();
    }
    std::fs::write(store.join("MLmodel"), "flavors: {}\n").unwrap();
    let mut f = Fake::default();
    f.versions.insert(
        ("m".into(), "1".into()),
        format!("file://{}", store.display()),
    );
    let gguf = model_path("smollm2");
    f.versions
        .insert(("m".into(), "2".into()), gguf.display().to_string());
    let (url, f) = start_fake(f);
    let cache = tmp.path().join("cache");
    let r = fetch(&url, "m", "1", &cache, ArtifactLimits::default()).unwrap();
    assert_eq!(r, format!("smollm2+{}", cache.join("adapter").display()));
    assert_eq!(
        std::fs::canonicalize(cache.join("adapter/adapter_model.safetensors")).unwrap(),
        std::fs::canonicalize(store.join("peft/adapter_model.safetensors")).unwrap()
    );
    let r = fetch(&url, "m", "2", &cache, ArtifactLimits::default()).unwrap();
    let name = gguf.file_name().unwrap();
    assert_eq!(r, cache.join(name).display().to_string());
    assert!(
        !cache.join("adapter").exists(),
        "the cache is emptied per fetch"
    );
    assert!(downloads(&f).is_empty());
}

/// A version's source is the registrant's word: before artifact_roots, any
/// path the server could read was fetched and gated (a source of /etc, or a
/// link or `..` out of the artifact store, became the "candidate").
#[test]
fn local_sources_outside_the_artifact_roots_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("artifacts");
    let store = root.join("m1");
    std::fs::create_dir_all(&store).unwrap();
    let a = fixture("adapters/smollm2-lora-r4");
    for name in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(a.join(name), store.join(name)).unwrap();
    }
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    for name in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(a.join(name), outside.join(name)).unwrap();
    }
    std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
    let mut f = Fake::default();
    let sources = [
        ("1", format!("file://{}", store.display())),
        ("2", outside.display().to_string()),
        ("3", root.join("link").display().to_string()),
        ("4", format!("{}/../outside", root.display())),
    ];
    for (v, s) in &sources {
        f.versions.insert(("m".into(), v.to_string()), s.clone());
    }
    let (url, _f) = start_fake(f);
    let cache = tmp.path().join("cache");
    let get = |v: &str, roots: Vec<PathBuf>| {
        fetch_in(&url, "m", v, &cache, ArtifactLimits::default(), roots)
    };
    let r = get("1", vec![root.clone()]).unwrap();
    assert_eq!(r, format!("smollm2+{}", cache.join("adapter").display()));
    for v in ["2", "3", "4"] {
        let e = get(v, vec![root.clone()]).unwrap_err();
        assert!(e.contains("outside [mlflow] artifact_roots"), "{v}: {e}");
    }
    let e = get("1", vec![]).unwrap_err();
    assert!(e.contains("artifact_roots names no directory"), "{e}");

    // A source spelled `<store>+<other adapter>` (as a reference joins a
    // base and an adapter) is one directory: the adapter gated is the one
    // registered there, never the one after the '+'.
    let plus = PathBuf::from(format!(
        "{}+{}",
        root.join("x").display(),
        outside.display()
    ));
    std::fs::create_dir_all(&plus).unwrap();
    let rs = fixture("adapters/smollm2-rslora-r4");
    for name in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(rs.join(name), plus.join(name)).unwrap();
    }
    let mut f = Fake::default();
    f.versions
        .insert(("m".into(), "5".into()), plus.display().to_string());
    let (url, _f) = start_fake(f);
    let r = fetch_in(
        &url,
        "m",
        "5",
        &cache,
        ArtifactLimits::default(),
        vec![root.clone()],
    )
    .unwrap();
    assert_eq!(r, format!("smollm2+{}", cache.join("adapter").display()));
    assert_eq!(
        std::fs::read(cache.join("adapter/adapter_config.json")).unwrap(),
        std::fs::read(rs.join("adapter_config.json")).unwrap(),
        "the registered adapter is gated"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
