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

mod fake;

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
