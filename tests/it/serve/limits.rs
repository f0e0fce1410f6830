//! `probegate serve` under hostile candidates: each check runs in its own
//! process within the job's limits, so a repository that makes the check
//! abort or exhaust memory ends as one `error` job and the server goes on.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;
use crate::fakes::{FakeHub, FakeMlflow, HfRepo};
use crate::harness::*;

/// `[[target]]` lines for more Hub repositories, gated like the others.
pub(crate) fn hf_targets(dir: &Path, names: &[&str]) -> String {
    let policy = crate::check::test_policy(dir, &[]);
    names
        .iter()
        .map(|n| {
            format!(
                "\n[[target]]\nregistry = \"huggingface\"\nname = \"{n}\"\nbase = \"smollm2\"\nmonitors = \"{}\"\npolicy = \"{}\"\ndata = \"{}\"\n",
                repo().join("monitors/smollm2").display(),
                policy.display(),
                repo().join("data/suite").display()
            )
        })
        .collect()
}

pub(crate) fn sha(n: u8) -> String {
    format!("{:040x}", n as u128 + 0xabc0)
}

/// A repository with the zoo adapter's files at `sha`.
pub(crate) fn adapter_repo(sha: &str) -> HfRepo {
    let a = fixture("zoo/smollm2-lora-r8-attn-support");
    HfRepo {
        sha: sha.into(),
        files: vec![
            ("adapter_config.json".into(), a.join("adapter_config.json")),
            (
                "adapter_model.safetensors".into(),
                a.join("adapter_model.safetensors"),
            ),
        ],
    }
}

#[test]
fn a_check_that_aborts_or_exhausts_memory_fails_its_job_and_the_server_goes_on() {
    const MEMORY_MIB: u64 = 8192;
    let tmp = tempfile::tempdir().unwrap();
    let hub = FakeHub::start();
    let ml = FakeMlflow::start();
    // A model directory whose config.json asks for 10^15 layers.
    let crafted = tmp.path().join("crafted");
    std::fs::create_dir_all(&crafted).unwrap();
    std::fs::write(
        crafted.join("config.json"),
        serde_json::to_vec(&json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": 576, "intermediate_size": 1536,
            "num_hidden_layers": 1_000_000_000_000_000u64,
            "num_attention_heads": 9, "num_key_value_heads": 3,
            "vocab_size": 49152, "rms_norm_eps": 1e-5, "tie_word_embeddings": true
        }))
        .unwrap(),
    )
    .unwrap();
    let weights = fixture("zoo/smollm2-lora-r8-attn-support/adapter_model.safetensors");
    hub.add_repo(
        "acme/huge-layers",
        HfRepo {
            sha: sha(1),
            files: vec![
                ("config.json".into(), crafted.join("config.json")),
                ("model.safetensors".into(), weights),
            ],
        },
    );
    hub.add_repo("acme/aborts", adapter_repo(&sha(2)));
    hub.add_repo("acme/hogs", adapter_repo(&sha(3)));
    let base = model_path("smollm2").display().to_string();
    ml.add_version("smollm2-chat", "1", &format!("file://{base}"));
    let extra = hf_targets(
        tmp.path(),
        &["acme/huge-layers", "acme/aborts", "acme/hogs"],
    ) + &format!("\n[limits]\njob_memory_mib = {MEMORY_MIB}\n");
    let cfg = config_with(tmp.path(), &hub.url(), &ml.url(), 1, &extra);
    let mut s = start_with(
        &cfg,
        &tmp.path().join("serve.log"),
        &[(
            probegate::adapters::serve::child::FAULT_ENV,
            "acme/aborts=abort,acme/hogs=hog",
        )],
    );
    let t = Instant::now();
    let mut ids = Vec::new();
    for (n, repo) in [
        (1, "acme/huge-layers"),
        (2, "acme/aborts"),
        (3, "acme/hogs"),
    ] {
        let body = hf_body_at(repo, "repo.content", "refs/heads/main", &sha(n));
        let (code, v) = hf_post(&s, HF_SECRET, &body);
        assert_eq!(code, 202, "{v}");
        ids.push(v["jobs"][0]["id"].as_u64().unwrap());
    }
    let (code, v) = mlflow_post(
        &s,
        "d-1",
        now(),
        ML_SECRET,
        &mlflow_body("smollm2-chat", "1"),
    );
    assert_eq!(code, 202, "{v}");
    let next = v["jobs"][0]["id"].as_u64().unwrap();

    // The server answers all along, and every job ends.
    let limit = Duration::from_secs(900);
    let end = |id: u64| -> serde_json::Value {
        loop {
            let (code, h) = get(&format!("{}/healthz", s.url));
            assert_eq!(code, 200, "{h}");
            let j = job(&s, id);
            if done(&j["job"]) {
                return j;
            }
            assert!(t.elapsed() < limit, "job {id} did not end: {j}");
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let mut errors = Vec::new();
    for &id in &ids {
        let j = end(id);
        assert_eq!(j["job"]["state"], "error", "{j}");
        assert_eq!(j["job"]["attempts"], 1, "{j}");
        assert_eq!(j["job"]["callback"], "sent", "{j}");
        errors.push(j["job"]["error"].as_str().unwrap().to_string());
    }
    eprintln!(
        "hostile jobs ended in {:.1} s: {errors:?}",
        t.elapsed().as_secs_f64()
    );
    assert!(
        errors[1].contains("killed by signal 6 (SIGABRT)"),
        "{}",
        errors[1]
    );
    assert_eq!(
        errors[2],
        format!("the check exceeded the memory limit of {MEMORY_MIB} MiB")
    );
    let j = end(next);
    assert_eq!(j["job"]["state"], "finished", "{j}");
    assert_eq!(j["job"]["verdict"], "pass", "{j}");
    assert!(s.child.try_wait().unwrap().is_none(), "the server died");
    let (_, h) = get(&format!("{}/healthz", s.url));
    assert!(
        h.contains("\"finished\":1") && h.contains("\"error\":3"),
        "{h}"
    );
    eprintln!(
        "isolation e2e: 3 hostile jobs and 1 passing job in {:.1} s, memory limit {MEMORY_MIB} MiB",
        t.elapsed().as_secs_f64()
    );
}
