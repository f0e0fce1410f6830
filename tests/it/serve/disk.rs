//! `probegate serve` on a full disk: its state directory is a small tmpfs,
//! filled while deliveries arrive. Every delivery answered 2xx is processed
//! and called back once space returns; every one refused got a 5xx (so the
//! sender retries), and the server recovers without a restart.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::limits::{adapter_repo, hf_targets, sha};
use super::*;
use crate::fakes::{FakeHub, FakeMlflow};

/// A mounted tmpfs, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(dir: &Path, size: &str) -> Option<Tmpfs> {
    std::fs::create_dir_all(dir).unwrap();
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .output();
    match out {
        Ok(o) if o.status.success() => Some(Tmpfs(dir.to_path_buf())),
        Ok(o) => {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs here (needs root): {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            None
        }
        Err(e) => {
            eprintln!("SKIPPED: no mount command: {e}");
            None
        }
    }
}

/// Fill the filesystem holding `path` until it refuses a write.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 16 << 10];
    while f.write_all(&chunk).and_then(|_| f.sync_data()).is_ok() {}
}

fn jobs(s: &Server) -> Vec<Value> {
    let (code, list) = get(&format!("{}/jobs", s.url));
    assert_eq!(code, 200, "{list}");
    serde_json::from_str::<Value>(&list).unwrap()["jobs"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn a_full_disk_loses_no_accepted_delivery() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(_mount) = mount_tmpfs(&tmp.path().join("state"), "16m") else {
        return;
    };
    // Checks that are under way when the disk fills: they cannot write
    // their reports or record their outcome until space returns.
    let hub = FakeHub::start();
    for n in 1..=2 {
        hub.add_repo(&format!("acme/slow{n}"), adapter_repo(&sha(n)));
    }
    // No MLflow versions: those jobs fail fast at the registry re-read,
    // write their error report and are called back.
    let ml = FakeMlflow::start();
    let extra = hf_targets(tmp.path(), &["acme/slow1", "acme/slow2"]);
    let cfg = config_with(tmp.path(), &hub.url(), &ml.url(), 2, &extra);
    let s = start_with(
        &cfg,
        &tmp.path().join("serve.log"),
        &[(
            probegate::adapters::serve::child::FAULT_ENV,
            "acme/slow1=sleep:4,acme/slow2=sleep:4",
        )],
    );
    let deliver = |i: usize| -> u16 {
        let body = mlflow_body("smollm2-chat", &format!("{}", 100 + i));
        mlflow_post(&s, &format!("disk-{i}"), now(), ML_SECRET, &body).0
    };
    assert_eq!(deliver(0), 202);
    let mut slow = Vec::new();
    for n in 1..=2 {
        let repo = format!("acme/slow{n}");
        let body = hf_body_at(&repo, "repo.content", "refs/heads/main", &sha(n));
        let (code, v) = hf_post(&s, HF_SECRET, &body);
        assert_eq!(code, 202, "{v}");
        slow.push(v["jobs"][0]["id"].as_u64().unwrap());
    }
    // Both checks started (their request written, their child asleep).
    let t = Instant::now();
    for id in &slow {
        let req = tmp.path().join(format!("state/jobs/{id}/request.json"));
        while !req.exists() {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "job {id} never started"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    let filler = tmp.path().join("state/filler");
    fill(&filler);
    let t = Instant::now();
    let mut accepted = vec![0];
    let mut refused = Vec::new();
    for i in 1..=20 {
        match deliver(i) {
            200 | 202 => accepted.push(i),
            c if c >= 500 => refused.push(i),
            c => panic!("delivery {i} while the disk is full: {c}"),
        }
    }
    eprintln!(
        "disk full: {} deliveries accepted, {} refused with 5xx",
        accepted.len() - 1,
        refused.len()
    );
    assert!(!refused.is_empty(), "the disk never filled");
    // The slow checks end meanwhile and cannot record; nothing is dropped.
    std::thread::sleep(Duration::from_secs(6));
    for id in &slow {
        let j = job(&s, *id);
        assert_eq!(j["job"]["state"], "running", "{j}");
    }
    std::fs::remove_file(&filler).unwrap();

    // The sender retries what was refused; now it is accepted. A liveness
    // bound, not a timing: the slow checks run a real gate after their
    // sleep, which took over 120 s on a 2-core machine under other builds.
    let limit = Duration::from_secs(600);
    for &i in &refused {
        loop {
            let c = deliver(i);
            if c == 202 || c == 200 {
                break;
            }
            assert!(
                t.elapsed() < limit,
                "delivery {i} still refused ({c}) after space returned"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    loop {
        let all = jobs(&s);
        if all.len() == 23 && all.iter().all(done) {
            assert!(
                all.iter()
                    .all(|j| j["callback"] == "sent" && j["attempts"] == 1),
                "{all:?}"
            );
            break;
        }
        assert!(
            t.elapsed() < limit,
            "not every accepted delivery was processed: {all:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "full disk: every delivery processed {:.1} s after the disk filled",
        t.elapsed().as_secs_f64()
    );
    // One verdict tag per delivery: none lost, none doubled.
    let tags = ml
        .log()
        .matching("POST", "/api/2.0/mlflow/model-versions/set-tag");
    let mut verdicts: Vec<String> = tags
        .iter()
        .filter(|t| t.body["key"] == "probegate.verdict")
        .map(|t| t.body["version"].as_str().unwrap().to_string())
        .collect();
    verdicts.sort();
    let n = verdicts.len();
    verdicts.dedup();
    assert_eq!((n, verdicts.len()), (21, 21), "{verdicts:?}");
    for n in 1..=2 {
        let comments = hub
            .log()
            .matching("POST", &format!("/api/models/acme/slow{n}/discussions"));
        assert_eq!(comments.len(), 1, "{comments:?}");
    }
}

/// A Hub whose comment endpoint records the first comment, then stalls
/// before answering: the window in which a server can die after posting and
/// before recording that it did. It serves the discussion back, as the Hub does.
#[derive(Default)]
struct StallingHub {
    comments: std::sync::Mutex<Vec<String>>,
}

fn stalling_hub() -> (String, std::sync::Arc<StallingHub>) {
    use axum::extract::{Path as UrlPath, State};
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use std::sync::Arc;
    let state = Arc::new(StallingHub::default());
    let r = Router::new()
        // Every revision is unknown: the job fails fast and is called back.
        .route(
            "/api/models/{org}/{name}/revision/{rev}",
            get(|| async { (axum::http::StatusCode::NOT_FOUND, "Revision Not Found") }),
        )
        .route(
            "/api/models/{org}/{name}/discussions/{num}/comment",
            post(
                |State(s): State<Arc<StallingHub>>, Json(v): Json<Value>| async move {
                    let c = v["comment"].as_str().unwrap_or_default().to_string();
                    let first = {
                        let mut all = s.comments.lock().unwrap();
                        all.push(c);
                        all.len() == 1
                    };
                    if first {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    Json(serde_json::json!({}))
                },
            ),
        )
        .route(
            "/api/models/{org}/{name}/discussions/{num}",
            get(
                |State(s): State<Arc<StallingHub>>, UrlPath(p): UrlPath<(String, String, u64)>| async move {
                    let events: Vec<Value> = s
                        .comments
                        .lock()
                        .unwrap()
                        .iter()
                        .map(|c| serde_json::json!({"type": "comment", "data": {"latest": {"raw": c}}}))
                        .collect();
                    Json(serde_json::json!({"num": p.2, "isPullRequest": true, "events": events}))
                },
            ),
        )
        .with_state(state.clone());
    let addr = crate::fakes::spawn(r);
    (format!("http://{addr}"), state)
}

#[test]
fn a_crash_between_posting_and_recording_never_posts_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let (hub, state) = stalling_hub();
    let ml = FakeMlflow::start();
    let cfg = config(tmp.path(), &hub, &ml.url(), 1);
    let log = tmp.path().join("serve.log");
    let s = start(&cfg, &log);
    let body = hf_body("acme/smollm2-support", "repo.content", "refs/pr/5");
    let (code, v) = hf_post(&s, HF_SECRET, &body);
    assert_eq!(code, 202, "{v}");
    let id = v["jobs"][0]["id"].as_u64().unwrap();
    // The comment reached the Hub; the server dies before hearing back.
    let t = Instant::now();
    while state.comments.lock().unwrap().is_empty() {
        assert!(t.elapsed() < Duration::from_secs(60), "no comment posted");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(s); // SIGKILL
    let s = start(&cfg, &log);
    let j = wait_for(&s, id, Duration::from_secs(60), done);
    assert_eq!(j["job"]["callback"], "sent", "{j}");
    let comments = state.comments.lock().unwrap().clone();
    assert_eq!(comments.len(), 1, "posted twice: {comments:?}");
}
