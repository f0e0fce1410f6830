//! What one sender can make `probegate serve` do: only the configured refs
//! become jobs, a newer push to a ref replaces its still-queued job, and a
//! full queue answers 503 with Retry-After.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::limits::{adapter_repo, hf_targets, sha};
use super::*;
use crate::fakes::{FakeHub, FakeMlflow};

#[test]
fn refs_coalescing_and_the_queue_cap_bound_one_senders_work() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = FakeHub::start();
    hub.add_repo("acme/slow1", adapter_repo(&sha(1)));
    let ml = FakeMlflow::start();
    let extra = hf_targets(tmp.path(), &["acme/slow1"]) + "\n[limits]\nmax_queued_jobs = 2\n";
    let cfg = config_with(tmp.path(), &hub.url(), &ml.url(), 1, &extra);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "webhook_secret_env = \"PG_TEST_HF_SECRET\"",
        "webhook_secret_env = \"PG_TEST_HF_SECRET\"\nrefs = [\"refs/heads/main\", \"refs/pr/*\"]",
    );
    std::fs::write(&cfg, text).unwrap();
    let s = start_with(
        &cfg,
        &tmp.path().join("serve.log"),
        &[(
            probegate::adapters::serve::child::FAULT_ENV,
            "acme/slow1=sleep:5",
        )],
    );
    // The one worker is busy with a slow check.
    let body = hf_body_at("acme/slow1", "repo.content", "refs/heads/main", &sha(1));
    let (code, v) = hf_post(&s, HF_SECRET, &body);
    assert_eq!(code, 202, "{v}");
    let busy = v["jobs"][0]["id"].as_u64().unwrap();
    wait_for(&s, busy, Duration::from_secs(60), |j| {
        j["state"] == "running"
    });

    // Two pushes to one pull request while it waits: the second replaces the first.
    let repo = "acme/smollm2-support";
    let push = |n: u8, git_ref: &str| {
        let (code, v) = hf_post(
            &s,
            HF_SECRET,
            &hf_body_at(repo, "repo.content", git_ref, &sha(n)),
        );
        (code, v)
    };
    let (code, v) = push(10, "refs/pr/3");
    assert_eq!(code, 202, "{v}");
    let first = v["jobs"][0]["id"].as_u64().unwrap();
    let (code, v) = push(11, "refs/pr/3");
    assert_eq!(code, 202, "{v}");
    let second = v["jobs"][0]["id"].as_u64().unwrap();
    let j = job(&s, first);
    assert_eq!(j["job"]["state"], "superseded", "{j}");
    assert!(
        j["job"]["error"]
            .as_str()
            .unwrap()
            .contains(&format!("job {second}")),
        "{j}"
    );
    // A branch outside `refs` is authentic but makes no job.
    let (code, v) = push(12, "refs/heads/dev");
    assert_eq!(code, 200, "{v}");
    assert!(v["ignored"].is_string(), "{v}");

    // The queue holds two (the pull request's job and one MLflow version): the next waits.
    let (code, v) = mlflow_post(
        &s,
        "q-1",
        now(),
        ML_SECRET,
        &mlflow_body("smollm2-chat", "1"),
    );
    assert_eq!(code, 202, "{v}");
    let ts = now().to_string();
    let b = mlflow_body("smollm2-chat", "2");
    let sig = probegate::adapters::serve::webhook::mlflow_signature(ML_SECRET, "q-2", &ts, &b);
    let full = ureq::post(&format!("{}/webhooks/mlflow", s.url))
        .set("X-MLflow-Signature", &sig)
        .set("X-MLflow-Delivery-Id", "q-2")
        .set("X-MLflow-Timestamp", &ts)
        .send_bytes(&b);
    match full {
        Err(ureq::Error::Status(503, r)) => {
            assert_eq!(r.header("retry-after"), Some("60"));
        }
        other => panic!("expected 503 with Retry-After, got {other:?}"),
    }

    // Everything admitted runs; the superseded job never does.
    let t = Instant::now();
    loop {
        let (_, list) = get(&format!("{}/jobs", s.url));
        let jobs: Value = serde_json::from_str(&list).unwrap();
        let jobs = jobs["jobs"].as_array().unwrap().clone();
        assert_eq!(jobs.len(), 4, "{jobs:?}");
        let ended = |j: &Value| done(j) || j["state"] == "superseded";
        if jobs.iter().all(ended) {
            let sup = jobs.iter().find(|j| j["id"] == first).unwrap();
            assert_eq!(sup["attempts"], 0, "{sup}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(300), "{jobs:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let (_, h) = get(&format!("{}/healthz", s.url));
    assert!(h.contains("\"superseded\":1"), "{h}");
}
