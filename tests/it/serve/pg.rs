//! Several `probegate serve` processes sharing one PostgreSQL queue
//! (`[queue] url_env`), each with its own state directory as on separate
//! machines: they drain deliveries together, each job gated once; a server
//! SIGKILLed mid-check loses its lease and another finishes the job; a
//! webhook redelivered to a different server is still one job.
//!
//! The server is the one scripts/postgres-env.sh starts (scripts/test.sh
//! sets `PROBEGATE_TEST_POSTGRES_URL`); each test makes its own database.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;
use crate::fakes::FakeMlflow;
use crate::harness::*;

use probegate::adapters::serve::store::test_database as queue_url;

/// One server of `n` on the shared queue, in `dir/{n}` with its own state directory.
fn server(dir: &Path, n: usize, ml: &str, url: &str, env: &[(&str, &str)]) -> Server {
    let home = dir.join(format!("server{n}"));
    std::fs::create_dir_all(&home).unwrap();
    // Two-second leases: a killed server's job is free again within about three.
    let extra = "\n[queue]\nurl_env = \"PG_TEST_QUEUE_URL\"\nlease_secs = 2\n";
    let cfg = config_with(&home, "http://127.0.0.1:9", ml, 2, extra);
    let mut all = vec![("PG_TEST_QUEUE_URL", url)];
    all.extend_from_slice(env);
    start_with(&cfg, &home.join("serve.log"), &all)
}

fn jobs(s: &Server) -> Vec<Value> {
    let (code, list) = get(&format!("{}/jobs", s.url));
    assert_eq!(code, 200, "{list}");
    let v: Value = serde_json::from_str(&list).unwrap();
    v["jobs"].as_array().unwrap().clone()
}

#[test]
fn three_servers_drain_1000_deliveries_each_gated_once_and_dedupe_redeliveries() {
    const N: usize = 1000;
    const CLIENTS: usize = 6;
    let Some(url) = queue_url() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // No versions registered: every job fails fast at the registry re-read
    // ("could not evaluate"), so the test measures the queue, not the gate;
    // that re-read is the job's first step, so its count is the runs' count.
    let ml = FakeMlflow::start();
    let servers: Vec<Server> = (0..3)
        .map(|n| server(tmp.path(), n, &ml.url(), &url, &[]))
        .collect();
    let t = Instant::now();
    let accepted: Vec<(usize, u64)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let servers = &servers;
                sc.spawn(move || {
                    (c..N)
                        .step_by(CLIENTS)
                        .map(|i| {
                            let body = mlflow_body("smollm2-chat", &format!("{}", 100 + i));
                            // Delivery i goes to server i mod 3.
                            let (code, v) = mlflow_post(
                                &servers[i % 3],
                                &format!("pg-{i}"),
                                now(),
                                ML_SECRET,
                                &body,
                            );
                            assert_eq!(code, 202, "delivery {i}: {v}");
                            (i, v["jobs"][0]["id"].as_u64().unwrap())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let accept_secs = t.elapsed().as_secs_f64();
    let ids: BTreeMap<usize, u64> = accepted.into_iter().collect();
    assert_eq!(
        ids.values().collect::<BTreeSet<_>>().len(),
        N,
        "one job per delivery"
    );
    // Every third delivery again, each to a server it did not reach first:
    // known, same job, nothing new.
    for i in (0..N).step_by(3) {
        let body = mlflow_body("smollm2-chat", &format!("{}", 100 + i));
        let (code, v) = mlflow_post(
            &servers[(i + 1) % 3],
            &format!("pg-{i}"),
            now(),
            ML_SECRET,
            &body,
        );
        assert_eq!(code, 200, "redelivery {i}: {v}");
        assert_eq!(v["jobs"][0]["duplicate"], true, "{v}");
        assert_eq!(v["jobs"][0]["id"].as_u64(), Some(ids[&i]));
    }
    let all = loop {
        let all = jobs(&servers[0]);
        assert_eq!(all.len(), N);
        if all.iter().all(done) {
            break all;
        }
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "the queue did not drain"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let drain_secs = t.elapsed().as_secs_f64();
    assert!(
        all.iter()
            .all(|j| j["state"] == "error" && j["attempts"] == 1 && j["callback"] == "sent"),
        "{:?}",
        all.iter().find(|j| j["attempts"] != 1)
    );
    // Each server ran a share.
    let mut per_server: BTreeMap<String, usize> = BTreeMap::new();
    for j in &all {
        *per_server
            .entry(j["worker"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(per_server.len(), 3, "{per_server:?}");
    // Gated exactly once: one registry re-read and one verdict per version.
    let reads = ml
        .log()
        .matching("GET", "/api/2.0/mlflow/model-versions/get");
    let mut per_version: BTreeMap<String, usize> = BTreeMap::new();
    for r in &reads {
        let v = r
            .query
            .split('&')
            .find_map(|kv| kv.strip_prefix("version="))
            .unwrap()
            .to_string();
        *per_version.entry(v).or_default() += 1;
    }
    assert_eq!(per_version.len(), N);
    assert!(
        per_version.values().all(|&n| n == 1),
        "{:?}",
        per_version.iter().find(|(_, &n)| n != 1)
    );
    let tags = ml
        .log()
        .matching("POST", "/api/2.0/mlflow/model-versions/set-tag");
    let verdicts: Vec<&str> = tags
        .iter()
        .filter(|t| t.body["key"] == "probegate.verdict")
        .map(|t| t.body["version"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts.len(), N);
    assert_eq!(verdicts.iter().collect::<BTreeSet<_>>().len(), N);
    eprintln!(
        "shared queue: {N} deliveries to 3 servers (2 workers each) accepted in {accept_secs:.1} s, drained in {drain_secs:.1} s; jobs per server {:?}; every job 1 attempt, 1 registry read, 1 verdict; {} redeliveries to another server deduplicated",
        per_server.values().collect::<Vec<_>>(),
        N.div_ceil(3)
    );
}

/// The pid of a process whose parent is `parent`, if any.
fn child_of(parent: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // pid (comm) state ppid …: comm may hold spaces, so after the last ')'.
        let ppid: u32 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        (ppid == parent).then_some(pid)
    })
}

#[test]
fn a_server_killed_mid_check_loses_its_lease_and_another_finishes_the_job() {
    let Some(url) = queue_url() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let ml = FakeMlflow::start();
    // The base itself as the candidate: a real check with a verdict.
    let base = model_path("smollm2").display().to_string();
    ml.add_version("smollm2-chat", "1", &format!("file://{base}"));
    // Server A's checks hang long enough to be killed in the middle.
    let mut a = server(
        tmp.path(),
        0,
        &ml.url(),
        &url,
        &[(
            probegate::adapters::serve::child::FAULT_ENV,
            "smollm2-chat=sleep:600",
        )],
    );
    let body = mlflow_body("smollm2-chat", "1");
    let (code, v) = mlflow_post(&a, "kill-1", now(), ML_SECRET, &body);
    assert_eq!(code, 202, "{v}");
    let id = v["jobs"][0]["id"].as_u64().unwrap();
    let pid = a.child.id();
    let j = wait_for(&a, id, Duration::from_secs(60), |j| j["state"] == "running");
    assert!(
        j["job"]["worker"]
            .as_str()
            .unwrap()
            .contains(&format!(":{pid}:")),
        "{j}"
    );
    // B joins the queue while A's check is under way.
    let b = server(tmp.path(), 1, &ml.url(), &url, &[]);
    let t = Instant::now();
    let check = loop {
        if let Some(c) = child_of(pid) {
            break c;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "A started no check");
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(job(&b, id)["job"]["state"], "running", "A's lease holds");
    // A's machine is lost: the server and its check, SIGKILL.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{check}")])
        .status();
    let killed = Instant::now();
    // The registry retries its delivery, to B: the same job.
    let (code, v) = mlflow_post(&b, "kill-1", now(), ML_SECRET, &body);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["jobs"][0]["id"].as_u64(), Some(id));
    let taken = wait_for(&b, id, Duration::from_secs(60), |j| j["attempts"] == 2);
    let takeover_secs = killed.elapsed().as_secs_f64();
    assert!(
        taken["job"]["worker"]
            .as_str()
            .unwrap()
            .contains(&format!(":{}:", b.child.id())),
        "{taken}"
    );
    let j = wait_for(&b, id, Duration::from_secs(1500), done);
    let jj = &j["job"];
    assert_eq!(jj["state"], "finished", "{j}");
    assert_eq!(jj["attempts"], 2, "run once on A, once on B: {j}");
    assert_eq!(jj["verdict"], "pass", "{j}");
    assert_eq!(jj["callback"], "sent");
    assert_eq!(j["report"]["diff"]["family"], "identical", "{j}");
    // One job, one verdict told to the registry.
    assert_eq!(jobs(&b).len(), 1);
    let verdicts = ml
        .log()
        .matching("POST", "/api/2.0/mlflow/model-versions/set-tag")
        .into_iter()
        .filter(|t| t.body["key"] == "probegate.verdict")
        .count();
    assert_eq!(verdicts, 1);
    eprintln!(
        "shared queue: server A SIGKILLed mid-check; B took the job over {takeover_secs:.1} s later (2 s lease) and finished it: {}",
        jj["summary"]
    );
}
