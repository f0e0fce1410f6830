//! Streamed weights (one block expanded at a time, per batch) give the same
//! activations as resident ones, bit for bit, on every kind of checkpoint the
//! gate reads; a wrong checkpoint still fails at load; the flag and the
//! environment variable reach the binary.

use candle_core::Tensor;
use probegate::checkpoint::Checkpoint;
use probegate::model::{Model, Pool, Precision, Residency};

use crate::harness::*;

fn forward(ck: &Checkpoint, precision: Precision, residency: Residency) -> Vec<Tensor> {
    let layers = [0, 3, 7];
    let model = Model::load_with(ck, precision, 7, residency).expect("load");
    assert_eq!(model.residency(), residency);
    let ids: Vec<Vec<u32>> = prompts()
        .iter()
        .take(6)
        .map(|p| ck.tokenizer.encode(p).expect("encode"))
        .collect();
    let pools = [Pool::Last, Pool::Mean];
    // One batch alone, then two as a group (block-major when streamed: each
    // block expanded once, both residual streams through it).
    let mut out: Vec<Tensor> = model
        .forward_capture(&ids[..3], &layers, &pools)
        .expect("forward")
        .outputs
        .into_iter()
        .flatten()
        .collect();
    let mut blocks_done = Vec::new();
    let group = model
        .forward_capture_group(&[&ids[..2], &ids[2..6]], &layers, &pools, &mut |n| {
            blocks_done.push(n)
        })
        .expect("forward group");
    assert_eq!(group.len(), 2);
    // A streamed group reports each block as the whole group passes it.
    match residency {
        Residency::Streamed => assert_eq!(blocks_done, (1..=8).collect::<Vec<_>>()),
        _ => assert!(blocks_done.is_empty()),
    }
    for cap in group {
        out.extend(cap.outputs.into_iter().flatten());
    }
    out
}

fn assert_identical(spec: &str, precision: Precision) {
    let ck = Checkpoint::open_str(spec).expect("open");
    let a = forward(&ck, precision, Residency::Resident);
    let b = forward(&ck, precision, Residency::Streamed);
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let d = (x - y)
            .and_then(|t| t.abs())
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.max(0))
            .and_then(|t| t.to_scalar::<f32>())
            .expect("diff");
        assert_eq!(
            d, 0.0,
            "{spec} ({precision}), output {i}: streamed differs by {d}"
        );
    }
}

#[test]
fn streamed_weights_match_resident_bit_for_bit() {
    let smol = model_path("smollm2").display().to_string();
    let gemma = model_path("gemma3").display().to_string();
    let adapter = fixture("zoo/smollm2-lora-r8-attn-support");
    // GGUF dequantized and GGUF kept quantized; Gemma 3's norms and
    // sliding windows; an unmerged adapter; a what-if quantizer applied at
    // read; a safetensors directory (f32, as converted), a bf16 one and a
    // bitsandbytes NF4 one.
    assert_identical(&smol, Precision::F32);
    assert_identical(&smol, Precision::Native);
    assert_identical(&gemma, Precision::F32);
    assert_identical(&format!("{smol}+{}", adapter.display()), Precision::F32);
    assert_identical(&format!("nf4({smol})"), Precision::F32);
    assert_identical(&converted_smollm2().display().to_string(), Precision::F32);

    let bf16 = tempfile::tempdir().expect("tempdir");
    probegate::export::convert(
        &open("smollm2"),
        bf16.path(),
        probegate::export::OutDtype::Bf16,
        &mut || {},
    )
    .expect("convert to bf16");
    assert_identical(&bf16.path().display().to_string(), Precision::F32);

    // bitsandbytes NF4 (double-quantized, as QLoRA stores it): dequantized
    // from the mapped file block by block when streamed.
    let nf4 = tempfile::tempdir().expect("tempdir");
    probegate::export::bnb::write_dir(&open("smollm2"), "nf4", nf4.path()).expect("write nf4");
    assert_identical(&nf4.path().display().to_string(), Precision::F32);
}

#[test]
fn a_wrong_shape_fails_at_load_when_streamed() {
    // A config that promises a wider MLP than the weights have: streamed
    // loading expands nothing at load, yet still names the tensor there.
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(converted_smollm2(), dir.path());
    let cfg_path = dir.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).expect("config")).expect("json");
    cfg["intermediate_size"] = serde_json::json!(2048);
    std::fs::write(&cfg_path, cfg.to_string()).expect("write config");
    let ck = Checkpoint::open_str(&dir.path().display().to_string()).expect("open");
    for r in [Residency::Streamed, Residency::Resident] {
        let err = match Model::load_with(&ck, Precision::F32, 3, r) {
            Ok(_) => panic!("{r}: a wrong-shaped checkpoint loaded"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("model.layers.0.mlp.gate_proj.weight") && err.contains("2048"),
            "{r}: {err}"
        );
    }
}

#[test]
fn the_binary_takes_the_flag_and_the_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("p.jsonl");
    std::fs::write(
        &input,
        "{\"text\": \"Hello there\"}\n{\"text\": \"Reset my password\"}\n",
    )
    .expect("write prompts");
    let run = |flag: Option<&str>, env: Option<&str>| {
        let mut c = bin();
        c.current_dir(dir.path())
            .args(["--format", "json", "activations", "--layers", "2"])
            .arg("--model")
            .arg(model_path("smollm2"))
            .arg("--input")
            .arg(&input)
            .arg("--out")
            .arg(dir.path().join("a.safetensors"));
        c.env("PROBEGATE_LOG", "info");
        if let Some(f) = flag {
            c.args(["--weights", f]);
        }
        match env {
            Some(v) => c.env("PROBEGATE_WEIGHTS", v),
            None => c.env_remove("PROBEGATE_WEIGHTS"),
        };
        c.output().expect("run")
    };
    let weights = |o: &std::process::Output| -> String {
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json summary");
        v["weights"].as_str().unwrap_or_default().to_string()
    };
    let o = run(Some("streamed"), None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(weights(&o), "streamed");
    let o = run(None, Some("streamed"));
    assert_eq!(weights(&o), "streamed");
    // The flag wins over the variable; auto resolves to one of the two.
    let o = run(Some("resident"), Some("streamed"));
    assert_eq!(weights(&o), "resident");
    let o = run(None, None);
    let w = weights(&o);
    assert!(["resident", "streamed"].contains(&w.as_str()));
    // With PROBEGATE_LOG=info, auto says which way it went and why.
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("weights {w} (blocks 0..=2 take")) && err.contains("available"),
        "{err}"
    );
    assert_exit_2_naming(&run(None, Some("lots")), &["PROBEGATE_WEIGHTS", "lots"]);
}

/// The whole gate, as a user runs it, gives the same report with streamed
/// weights: each run with its own cold cache, so both compute every activation.
#[test]
fn the_gate_reports_the_same_with_streamed_weights() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let suite = crate::check::suite_of(tmp.path(), &["self_harm-l22", "privacy_pii-l15"]);
    let cand = crate::check::lora_candidate();
    // A smaller corpus than the default's, so two cold runs stay cheap.
    let policy = crate::check::test_policy(
        tmp.path(),
        &[("concept_texts = true", "concept_texts = false")],
    );
    let run = |weights: &str| -> serde_json::Value {
        let out = tmp.path().join(format!("out-{weights}"));
        let o = crate::check::check_suite(&cand, &suite, &policy, &out)
            .current_dir(tmp.path())
            .env("PROBEGATE_WEIGHTS", weights)
            .env(
                "PROBEGATE_CACHE",
                tmp.path().join(format!("cache-{weights}")),
            )
            .output()
            .expect("run");
        assert!(
            matches!(o.status.code(), Some(0) | Some(1)),
            "{weights}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).expect("report"))
            .expect("json")
    };
    let (a, b) = (run("resident"), run("streamed"));
    assert_eq!(a["verdict"], b["verdict"]);
    assert_eq!(a["budget"], b["budget"]);
    let ms = |r: &serde_json::Value| -> Vec<serde_json::Value> {
        r["monitors"]
            .as_array()
            .expect("monitors")
            .iter()
            .map(|m| {
                serde_json::json!([m["name"], m["status"], m["rung"], m["eval"], m["features"]])
            })
            .collect()
    };
    assert_eq!(ms(&a), ms(&b));
}

/// A streamed group's prompts finish together, so extraction reports them
/// block by block: a bar that moves during a long 7B pass, and still adds up
/// to every prompt once.
#[test]
fn streamed_extraction_reports_progress_block_by_block() {
    use probegate::activations::{extract, ExtractOptions};
    let ck = open("smollm2");
    let texts = prompts();
    let opts = ExtractOptions {
        layers: vec![9],
        pools: vec![Pool::Last],
        precision: Precision::F32,
        batch_size: 4,
        max_tokens: 2048,
    };
    let mut steps = Vec::new();
    for r in [Residency::Resident, Residency::Streamed] {
        let model = Model::load_with(&ck, Precision::F32, 9, r).expect("load");
        let mut seen = Vec::new();
        extract(&ck, &model, &texts, &opts, &mut |n| seen.push(n)).expect("extract");
        assert_eq!(seen.iter().sum::<usize>(), texts.len(), "{r}: {seen:?}");
        steps.push(seen.len());
    }
    // Resident: one step per batch. Streamed: every prompt in one group, one step per block or so.
    assert_eq!(steps[0], texts.len().div_ceil(4));
    assert!(steps[1] >= 5, "{steps:?}");
}

/// Resident weights with more batches than threads run several batches at
/// once, each on its share of the threads: the activations must be the same
/// bit for bit as one batch after another on every thread.
#[test]
fn batches_side_by_side_give_the_same_activations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("p.jsonl");
    // 200 prompts of varied length: 13 batches of 16, enough to go side by side.
    let corpus = std::fs::read_to_string(repo().join("data/realign/corpus.jsonl")).expect("corpus");
    let lines: Vec<&str> = corpus.lines().take(200).collect();
    assert_eq!(lines.len(), 200);
    std::fs::write(&input, lines.join("\n")).expect("write prompts");
    let run = |threads: &str| {
        let out = dir.path().join(format!("a{threads}.safetensors"));
        bin()
            .current_dir(dir.path())
            .env("PROBEGATE_NO_ACT_CACHE", "1")
            .args([
                "--quiet",
                "--threads",
                threads,
                "activations",
                "--layers",
                "3,9",
            ])
            .args(["--weights", "resident", "--model"])
            .arg(model_path("smollm2"))
            .arg("--input")
            .arg(&input)
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        std::fs::read(&out).expect("read activations")
    };
    let one = run("1");
    let two = run("2");
    assert!(one.len() > 200 * 576 * 4, "{}", one.len());
    assert!(one == two, "activations differ between 1 and 2 threads");
}
