//! Webhooks end to end: authentication, dedupe and real checks, SIGKILL in
//! the middle of a job, and a bounded load test.

use super::*;

#[test]
fn webhooks_authenticate_dedupe_and_run_real_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = FakeHub::start();
    let ml = FakeMlflow::start();
    let base = model_path("smollm2").display().to_string();
    ml.add_version("smollm2-chat", "1", &format!("file://{base}"));
    ml.add_version("smollm2-chat", "2", "s3://models/smollm2-chat/2");
    let cfg = config(tmp.path(), &hub.url(), &ml.url(), 2);
    let s = start(&cfg, &tmp.path().join("serve.log"));

    // MLflow: forged, stale, unsigned and malformed deliveries are refused.
    let body = mlflow_body("smollm2-chat", "1");
    assert_eq!(mlflow_post(&s, "d-1", now(), "wrong-secret", &body).0, 401);
    assert_eq!(mlflow_post(&s, "d-1", now() - 400, ML_SECRET, &body).0, 401);
    assert_eq!(mlflow_post(&s, "d-1", now() + 400, ML_SECRET, &body).0, 401);
    let mut tampered = body.clone();
    let sig_ts = now();
    let sig = probegate::adapters::serve::webhook::mlflow_signature(
        ML_SECRET,
        "d-1",
        &sig_ts.to_string(),
        &body,
    );
    tampered.extend_from_slice(b" ");
    let (code, _) = post(
        &format!("{}/webhooks/mlflow", s.url),
        &[
            ("X-MLflow-Signature", &sig),
            ("X-MLflow-Delivery-Id", "d-1"),
            ("X-MLflow-Timestamp", &sig_ts.to_string()),
        ],
        &tampered,
    );
    assert_eq!(code, 401, "a body changed after signing");
    assert_eq!(
        post(&format!("{}/webhooks/mlflow", s.url), &[], &body).0,
        401
    );
    assert_eq!(
        mlflow_post(&s, "d-x", now(), ML_SECRET, b"{not json").0,
        400
    );
    let big = vec![b' '; 70_000];
    assert_eq!(mlflow_post(&s, "d-big", now(), ML_SECRET, &big).0, 413);
    let other = mlflow_body("unknown-model", "1");
    assert_eq!(mlflow_post(&s, "d-u", now(), ML_SECRET, &other).0, 422);

    // Hugging Face: wrong or missing secret, malformed, unconfigured repo, other events.
    let hb = hf_body("acme/smollm2-support", "repo.content", "refs/pr/3");
    assert_eq!(hf_post(&s, "nope", &hb).0, 401);
    assert_eq!(
        post(&format!("{}/webhooks/huggingface", s.url), &[], &hb).0,
        401
    );
    assert_eq!(hf_post(&s, HF_SECRET, b"[1,2").0, 400);
    assert_eq!(hf_post(&s, HF_SECRET, &big).0, 413);
    assert_eq!(
        hf_post(
            &s,
            HF_SECRET,
            &hf_body("acme/other", "repo.content", "refs/heads/main")
        )
        .0,
        422
    );
    let (code, v) = hf_post(
        &s,
        HF_SECRET,
        &hf_body("acme/smollm2-support", "discussion", "refs/pr/3"),
    );
    assert_eq!(code, 200, "{v}");
    assert!(v["ignored"].is_string());
    // Nothing above made a job.
    let (_, list) = get(&format!("{}/jobs", s.url));
    assert_eq!(
        serde_json::from_str::<Value>(&list).unwrap()["jobs"],
        json!([])
    );

    // A valid delivery: accepted (202), its retry deduplicated (200), run for real.
    let (code, v) = mlflow_post(&s, "d-1", now(), ML_SECRET, &body);
    assert_eq!(code, 202, "{v}");
    let id = v["jobs"][0]["id"].as_u64().unwrap();
    let (code, v) = mlflow_post(&s, "d-1", now(), ML_SECRET, &body);
    assert_eq!(
        (code, v["jobs"][0]["duplicate"].clone()),
        (200, json!(true))
    );
    assert_eq!(v["jobs"][0]["id"].as_u64(), Some(id));
    // An alias event on a version whose source this server cannot read.
    let alias = serde_json::to_vec(
        &json!({"entity": "model_version_alias", "action": "created",
        "timestamp": "t", "data": {"name": "smollm2-chat", "alias": "prod", "version": "2"}}),
    )
    .unwrap();
    let (code, v) = mlflow_post(&s, "d-2", now(), ML_SECRET, &alias);
    assert_eq!(code, 202, "{v}");
    let id2 = v["jobs"][0]["id"].as_u64().unwrap();

    let j = wait_for(&s, id, Duration::from_secs(600), done);
    assert_eq!(j["job"]["state"], "finished", "{j}");
    assert_eq!(j["job"]["verdict"], "pass", "{j}");
    assert_eq!(j["job"]["callback"], "sent");
    assert_eq!(j["report"]["diff"]["family"], "identical");
    let (code, md) = get(&format!("{}/jobs/{id}/report.md", s.url));
    assert_eq!(code, 200);
    // Reads need the read token: an id is not enough.
    for path in [
        "/jobs".to_string(),
        format!("/jobs/{id}"),
        format!("/jobs/{id}/report.md"),
        format!("/jobs/{id}/report.json"),
    ] {
        let url = format!("{}{path}", s.url);
        match ureq::get(&url).call() {
            // It says how to authenticate (RFC 9110, 11.6.1).
            Err(ureq::Error::Status(401, r)) => {
                assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{path}")
            }
            other => panic!("{path}: expected 401, got {other:?}"),
        }
        assert_eq!(
            get_as(&url, Some("read-token-for-the-testz")).0,
            403,
            "{path}"
        );
        assert_eq!(get_as(&url, Some(READ_TOKEN)).0, 200, "{path}");
    }
    assert!(md.starts_with("## ✅ probegate: PASS"), "{md}");
    let j2 = wait_for(&s, id2, Duration::from_secs(120), done);
    assert_eq!(j2["job"]["state"], "error", "{j2}");
    assert!(
        j2["job"]["error"].as_str().unwrap().contains("s3://"),
        "{j2}"
    );
    assert_eq!(j2["report"]["verdict"], "error");

    // The registry was re-read, then told: three tags per job, no more.
    let gets = ml
        .log()
        .matching("GET", "/api/2.0/mlflow/model-versions/get");
    assert!(gets.iter().any(|r| r.query.contains("version=1")));
    let tags = ml
        .log()
        .matching("POST", "/api/2.0/mlflow/model-versions/set-tag");
    let of = |v: &str| -> Vec<Value> {
        tags.iter()
            .filter(|r| r.body["version"] == v)
            .map(|r| r.body.clone())
            .collect()
    };
    // The registry was re-read, then told: four tags for a verdict (the
    // candidate's fingerprint first, the verdict last), three when the gate
    // could not evaluate.
    assert_eq!(of("1").len(), 4, "{tags:?}");
    assert_eq!(of("1")[0]["key"], "probegate.candidate_fingerprint");
    assert_eq!(of("1")[3]["key"], "probegate.verdict");
    assert!(of("1").contains(&json!({"name": "smollm2-chat", "version": "1", "key": "probegate.verdict", "value": "pass"})));
    assert!(of("1").iter().any(|t| t["key"] == "probegate.report"
        && t["value"] == format!("http://probegate.test/jobs/{id}/report.md")));
    assert_eq!(of("2").len(), 3);
    assert!(of("2")
        .iter()
        .any(|t| t["key"] == "probegate.verdict" && t["value"] == "error"));

    let (code, h) = get(&format!("{}/healthz", s.url));
    assert_eq!(code, 200);
    assert!(
        h.contains("\"finished\":1") && h.contains("\"error\":1"),
        "{h}"
    );
    assert_eq!(get(&format!("{}/jobs/999", s.url)).0, 404);

    // SIGTERM: a clean exit.
    let mut s = s;
    let pid = s.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let t = Instant::now();
    loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            assert!(st.success(), "{st:?}");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_job_killed_mid_check_finishes_after_restart_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = FakeHub::start();
    let ml = FakeMlflow::start();
    let adapter = fixture("zoo/smollm2-lora-r8-attn-support");
    hub.add_repo(
        "acme/smollm2-support",
        HfRepo {
            sha: SHA.into(),
            files: vec![
                ("README.md".into(), repo().join("README.md")),
                (
                    "adapter_config.json".into(),
                    adapter.join("adapter_config.json"),
                ),
                (
                    "adapter_model.safetensors".into(),
                    adapter.join("adapter_model.safetensors"),
                ),
            ],
        },
    );
    let cfg = config(tmp.path(), &hub.url(), &ml.url(), 1);
    let log = tmp.path().join("serve.log");
    let s = start(&cfg, &log);
    let body = hf_body("acme/smollm2-support", "repo.content", "refs/pr/3");
    let (code, v) = hf_post(&s, HF_SECRET, &body);
    assert_eq!(code, 202, "{v}");
    let id = v["jobs"][0]["id"].as_u64().unwrap();
    // Let the check get well under way (the candidate is fetched, the diff
    // runs), then SIGKILL. The whole check takes about 8 s here with its
    // activations cached (7.9 s once looks stopped bootstrapping figures
    // they overwrite, which 8 s of sleep then outlived), so 3 s is mid-check.
    wait_for(&s, id, Duration::from_secs(60), |j| j["state"] == "running");
    std::thread::sleep(Duration::from_secs(3));
    let j = job(&s, id);
    assert_eq!(
        j["job"]["state"], "running",
        "the check ended before the kill: {j}"
    );
    drop(s); // Child::kill is SIGKILL

    let s = start(&cfg, &log);
    // The Hub replays the delivery: still one job.
    let (code, v) = hf_post(&s, HF_SECRET, &body);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["jobs"][0]["id"].as_u64(), Some(id));
    let j = wait_for(&s, id, Duration::from_secs(1500), done);
    let jj = &j["job"];
    assert_eq!(jj["state"], "finished", "{j}");
    assert_eq!(
        jj["attempts"], 2,
        "run once before the kill and once after: {j}"
    );
    assert_eq!(jj["callback"], "sent");
    assert!(["pass", "pass_with_repairs", "fail"].contains(&jj["verdict"].as_str().unwrap()));
    assert!(
        jj["candidate"].as_str().unwrap().starts_with("smollm2+"),
        "{j}"
    );
    assert_eq!(j["report"]["diff"]["family"], "low_rank_adapter", "{j}");
    let (_, list) = get(&format!("{}/jobs", s.url));
    assert_eq!(
        serde_json::from_str::<Value>(&list).unwrap()["jobs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // The Hub's repository state was re-read at the pushed sha, and the PR got one comment.
    assert!(!hub
        .log()
        .matching(
            "GET",
            &format!("/api/models/acme/smollm2-support/revision/{SHA}")
        )
        .is_empty());
    let comments = hub
        .log()
        .matching("POST", "/api/models/acme/smollm2-support/discussions");
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert_eq!(
        comments[0].path,
        "/api/models/acme/smollm2-support/discussions/3/comment"
    );
    let text = comments[0].body["comment"].as_str().unwrap();
    assert!(
        text.contains("probegate") && text.contains(&format!("/jobs/{id}/report.md")),
        "{text}"
    );
}

#[test]
fn load_test_accepts_every_delivery_once() {
    const N: usize = 300;
    const CLIENTS: usize = 8;
    let tmp = tempfile::tempdir().unwrap();
    let hub = FakeHub::start();
    let ml = FakeMlflow::start();
    // No versions registered: every job fails fast at the registry re-read
    // ("could not evaluate"), so the test measures the queue, not the gate.
    let cfg = config(tmp.path(), &hub.url(), &ml.url(), 4);
    let s = start(&cfg, &tmp.path().join("serve.log"));
    let url = s.url.clone();
    let t = Instant::now();
    let handles: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut codes = Vec::new();
                for i in (c..N).step_by(CLIENTS) {
                    let body = mlflow_body("smollm2-chat", &format!("{}", 100 + i));
                    let ts = now().to_string();
                    let id = format!("load-{i}");
                    let sig = probegate::adapters::serve::webhook::mlflow_signature(
                        ML_SECRET, &id, &ts, &body,
                    );
                    let (code, _) = post(
                        &format!("{url}/webhooks/mlflow"),
                        &[
                            ("X-MLflow-Signature", &sig),
                            ("X-MLflow-Delivery-Id", &id),
                            ("X-MLflow-Timestamp", &ts),
                        ],
                        &body,
                    );
                    codes.push(code);
                }
                codes
            })
        })
        .collect();
    let codes: Vec<u16> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(codes.len(), N);
    assert!(codes.iter().all(|&c| c == 202), "{codes:?}");
    eprintln!(
        "load test: {N} signed deliveries from {CLIENTS} clients accepted in {secs:.2} s = {:.0} deliveries/s (each committed to redb before 202)",
        N as f64 / secs
    );
    // Redeliver a third of them: all recognised, no new job.
    for i in (0..N).step_by(3) {
        let body = mlflow_body("smollm2-chat", &format!("{}", 100 + i));
        assert_eq!(
            mlflow_post(&s, &format!("load-{i}"), now(), ML_SECRET, &body).0,
            200
        );
    }
    // Every job reaches a terminal state and calls back once.
    let t = Instant::now();
    loop {
        let (_, list) = get(&format!("{}/jobs", s.url));
        let jobs: Value = serde_json::from_str(&list).unwrap();
        let jobs = jobs["jobs"].as_array().unwrap().clone();
        assert_eq!(jobs.len(), N);
        if jobs.iter().all(done) {
            assert!(jobs
                .iter()
                .all(|j| j["state"] == "error" && j["attempts"] == 1));
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(300), "jobs did not drain");
        std::thread::sleep(Duration::from_millis(500));
    }
    let tags = ml
        .log()
        .matching("POST", "/api/2.0/mlflow/model-versions/set-tag");
    assert_eq!(tags.len(), 3 * N);
    let mut versions: Vec<String> = tags
        .iter()
        .filter(|t| t.body["key"] == "probegate.verdict")
        .map(|t| t.body["version"].as_str().unwrap().to_string())
        .collect();
    versions.sort();
    versions.dedup();
    assert_eq!(versions.len(), N, "one verdict per delivery, none lost");
}
