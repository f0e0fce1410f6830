//! `probegate serve` as a real process on loopback, against fake Hugging Face
//! and MLflow servers: the helpers every serve test starts it with, and one
//! module per area (webhooks and real checks, HTTP, limits, a full disk, the
//! shared PostgreSQL queue).

mod disk;
mod http;
mod limits;
mod pg;
mod queue;
mod webhooks;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::fakes::{FakeHub, FakeMlflow, HfRepo};
use crate::harness::*;

pub(crate) const HF_SECRET: &str = "hf-test-secret-of-16+";
pub(crate) const ML_SECRET: &str = "mlflow-test-secret";
/// What `GET /jobs` and the reports need.
pub(crate) const READ_TOKEN: &str = "read-token-for-the-tests";
pub(crate) const SHA: &str = "5f1e0c7a2b3d4e5f60718293a4b5c6d7e8f90a1b";

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn start(cfg: &Path, log: &Path) -> Server {
    start_with(cfg, log, &[])
}

/// [`start`] with more environment variables.
pub(crate) fn start_with(cfg: &Path, log: &Path, env: &[(&str, &str)]) -> Server {
    let err = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("probegate"))
        .current_dir(repo())
        .args(["serve", "--config"])
        .arg(cfg)
        .env("PG_TEST_HF_SECRET", HF_SECRET)
        .env("PG_TEST_MLFLOW_SECRET", ML_SECRET)
        .env("PG_TEST_READ_TOKEN", READ_TOKEN)
        .env("PROBEGATE_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("probegate serve: listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}; log in {}", log.display()))
        .to_string();
    Server { child, url }
}

pub(crate) fn config(dir: &Path, hub: &str, mlflow: &str, workers: usize) -> PathBuf {
    config_with(dir, hub, mlflow, workers, "")
}

/// [`config`] with `extra` TOML appended (more targets, `[limits]`).
pub(crate) fn config_with(
    dir: &Path,
    hub: &str,
    mlflow: &str,
    workers: usize,
    extra: &str,
) -> PathBuf {
    let policy = crate::check::test_policy(dir, &[]);
    let r = repo();
    let text = format!(
        r#"
listen = "127.0.0.1:0"
state_dir = "state"
read_token_env = "PG_TEST_READ_TOKEN"
workers = {workers}
max_body_bytes = 65536
callback_retries = 3
public_url = "http://probegate.test"

[huggingface]
endpoint = "{hub}"
webhook_secret_env = "PG_TEST_HF_SECRET"

[mlflow]
tracking_uri = "{mlflow}"
webhook_secret_env = "PG_TEST_MLFLOW_SECRET"
artifact_roots = ["{models}"]

[[target]]
registry = "huggingface"
name = "acme/smollm2-support"
base = "smollm2"
monitors = "{m}"
policy = "{p}"
data = "{d}"

[[target]]
registry = "mlflow"
name = "smollm2-chat"
base = "smollm2"
monitors = "{m}"
policy = "{p}"
data = "{d}"
"#,
        m = r.join("monitors/smollm2").display(),
        p = policy.display(),
        d = r.join("data/suite").display(),
        models = model_path("smollm2").parent().unwrap().display(),
    ) + extra;
    let p = dir.join("serve.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// POST and return (status, JSON body).
pub(crate) fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
    let mut req = ureq::post(url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let resp = match req.send_bytes(body) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("POST {url}: {e}"),
    };
    let status = resp.status();
    let v = resp.into_json().unwrap_or(Value::Null);
    (status, v)
}

/// GET with the read token; (status, body).
pub(crate) fn get(url: &str) -> (u16, String) {
    get_as(url, Some(READ_TOKEN))
}

/// GET with `token` as the bearer, or none.
pub(crate) fn get_as(url: &str, token: Option<&str>) -> (u16, String) {
    let mut req = ureq::get(url);
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    match req.call() {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap_or_default()),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

pub(crate) fn job(s: &Server, id: u64) -> Value {
    let (code, body) = get(&format!("{}/jobs/{id}", s.url));
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

pub(crate) fn wait_for(
    s: &Server,
    id: u64,
    limit: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let t = Instant::now();
    loop {
        let j = job(s, id);
        if pred(&j["job"]) {
            return j;
        }
        assert!(t.elapsed() < limit, "job {id} timed out: {j}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

pub(crate) fn done(j: &Value) -> bool {
    (j["state"] == "finished" || j["state"] == "error") && j["callback"] != "pending"
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub(crate) fn mlflow_body(name: &str, version: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"entity": "model_version", "action": "created",
        "timestamp": "2026-11-27T10:00:00Z",
        "data": {"name": name, "version": version, "source": "ignored: re-read from the registry",
                 "run_id": "r1", "tags": {}, "description": null}}))
    .unwrap()
}

pub(crate) fn mlflow_post(
    s: &Server,
    delivery: &str,
    ts: i64,
    secret: &str,
    body: &[u8],
) -> (u16, Value) {
    let ts = ts.to_string();
    let sig = probegate::adapters::serve::webhook::mlflow_signature(secret, delivery, &ts, body);
    post(
        &format!("{}/webhooks/mlflow", s.url),
        &[
            ("Content-Type", "application/json"),
            ("X-MLflow-Signature", &sig),
            ("X-MLflow-Delivery-Id", delivery),
            ("X-MLflow-Timestamp", &ts),
        ],
        body,
    )
}

pub(crate) fn hf_body(repo: &str, scope: &str, git_ref: &str) -> Vec<u8> {
    hf_body_at(repo, scope, git_ref, SHA)
}

/// A Hub delivery for a push of `sha` to `git_ref`.
pub(crate) fn hf_body_at(repo: &str, scope: &str, git_ref: &str, sha: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "event": {"action": "update", "scope": scope},
        "repo": {"type": "model", "name": repo, "id": "6570a1", "private": false, "headSha": sha},
        "webhook": {"id": "wh-1", "version": 3},
        "updatedRefs": [{"ref": git_ref, "oldSha": null, "newSha": sha}]
    }))
    .unwrap()
}

pub(crate) fn hf_post(s: &Server, secret: &str, body: &[u8]) -> (u16, Value) {
    post(
        &format!("{}/webhooks/huggingface", s.url),
        &[
            ("Content-Type", "application/json"),
            ("X-Webhook-Secret", secret),
        ],
        body,
    )
}
