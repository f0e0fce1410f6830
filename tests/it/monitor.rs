//! Monitors: training on a real slice, the artifact's round trip and loading
//! checks, base-fingerprint refusal, and bad datasets.

use std::path::{Path, PathBuf};

use predicates::prelude::*;
use probegate::activations::cache::{cached_activations, ActCache, ActSpec};
use probegate::checkpoint::Checkpoint;
use probegate::model::{Pool, Precision};
use probegate::monitor::data::read_labeled;
use probegate::monitor::metrics::auroc;
use probegate::monitor::train::{train, TrainOptions};
use probegate::monitor::{BaseCheck, Monitor};

use crate::harness::*;

fn data(concept: &str, split: &str) -> PathBuf {
    repo()
        .join("data/suite")
        .join(concept)
        .join(format!("{split}.jsonl"))
}

/// Trains a PII monitor on a 120-example slice of the real data through SmolLM2.
#[test]
fn training_on_a_real_slice_separates_held_out_pii() {
    let ck = open("smollm2");
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = ActCache::at(cache_dir.path().to_path_buf(), 1 << 30);
    let tr = read_labeled(&data("privacy_pii", "train"), None).unwrap();
    let te = read_labeled(&data("privacy_pii", "test"), None).unwrap();
    let (tx, ty): (Vec<String>, Vec<u8>) = tr
        .texts
        .iter()
        .cloned()
        .zip(tr.labels.iter().copied())
        .take(120)
        .unzip();
    let (ex, ey): (Vec<String>, Vec<u8>) = te
        .texts
        .iter()
        .cloned()
        .zip(te.labels.iter().copied())
        .take(80)
        .unzip();
    let layer = 15;
    let a = cached_activations(
        &ck,
        &cache,
        &tx,
        &[layer],
        ActSpec {
            pool: Pool::Last,
            precision: Precision::F32,
            batch_size: 16,
        },
        &mut |_| {},
    )
    .unwrap();
    let x = a[&layer].to_vec2::<f32>().unwrap();
    let t = train(&x, &ty, &TrainOptions::default()).unwrap().probe;
    assert_eq!(t.w.len(), 576);
    // Score held-out rows with the folded probe.
    let b = cached_activations(
        &ck,
        &cache,
        &ex,
        &[layer],
        ActSpec {
            pool: Pool::Last,
            precision: Precision::F32,
            batch_size: 16,
        },
        &mut |_| {},
    )
    .unwrap();
    let rows = b[&layer].to_vec2::<f32>().unwrap();
    let scores: Vec<f64> = rows
        .iter()
        .map(|r| {
            let z: f64 = r
                .iter()
                .zip(t.w.iter().zip(t.mean.iter().zip(&t.std)))
                .map(|(x, (w, (m, s)))| (*x as f64 - *m as f64) / *s as f64 * *w as f64)
                .sum::<f64>()
                + t.bias;
            z
        })
        .collect();
    let auc = auroc(&scores, &ey).unwrap();
    eprintln!(
        "held-out AUROC from 120 training examples: {auc:.3} (l2 {})",
        t.l2
    );
    assert!(auc > 0.85, "AUROC {auc}");
    // The second request is served from the cache (same tensor, no model load).
    let again = cached_activations(
        &ck,
        &cache,
        &ex,
        &[layer],
        ActSpec {
            pool: Pool::Last,
            precision: Precision::F32,
            batch_size: 16,
        },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(rel_max_diff(&again[&layer], &b[&layer]), 0.0);
    assert_eq!(cache.info().entries, 2);
}

fn shipped(model: &str, name: &str) -> PathBuf {
    repo().join("monitors").join(model).join(name)
}

fn copy_dir(src: &Path) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for f in ["monitor.json", "monitor.safetensors"] {
        std::fs::copy(src.join(f), d.path().join(f)).unwrap();
    }
    d
}

fn edit_json(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("monitor.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, v.to_string()).unwrap();
}

fn load_err(dir: &Path) -> String {
    Monitor::load(dir)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_else(|| panic!("{} loaded", dir.display()))
}

#[test]
fn shipped_monitors_load_and_round_trip() {
    let m = Monitor::load(&shipped("smollm2", "privacy_pii-l15")).unwrap();
    assert_eq!(m.meta.hook.transformer_lens, "blocks.15.hook_resid_post");
    assert!(m.meta.base_metrics.auroc >= 0.9);
    let out = tempfile::tempdir().unwrap();
    m.save(out.path()).unwrap();
    let back = Monitor::load(out.path()).unwrap();
    assert_eq!(back.meta, m.meta);
    assert_eq!((back.w, back.mean, back.std), (m.w, m.mean, m.std));
}

#[test]
fn schema_lists_exactly_the_fields_the_format_writes() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("docs/monitor.schema.json")).unwrap(),
    )
    .unwrap();
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(shipped("smollm2", "privacy_pii-l15").join("monitor.json"))
            .unwrap(),
    )
    .unwrap();
    fn keys(v: &serde_json::Value) -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    }
    assert_eq!(keys(&schema["properties"]), keys(&m));
    for (k, v) in m.as_object().unwrap() {
        if v.is_object() && k != "threshold_rule" {
            let props = &schema["properties"][k]["properties"];
            // Optional fields the shipped monitors do not carry.
            let optional = |f: &String| f != "repaired_for" && f != "forward_identity";
            let mut written = keys(v);
            written.retain(optional);
            let mut documented = keys(props);
            documented.retain(optional);
            assert_eq!(documented, written, "schema for {k}");
        }
    }
}

#[test]
fn malformed_monitors_are_refused_with_the_field() {
    let src = shipped("smollm2", "privacy_pii-l15");

    let d = copy_dir(&src);
    edit_json(d.path(), |v| {
        v.as_object_mut().unwrap().remove("hook");
    });
    assert!(
        load_err(d.path()).contains("hook"),
        "{}",
        load_err(d.path())
    );

    let d = copy_dir(&src);
    edit_json(d.path(), |v| v["hook"]["layer"] = 30.into());
    let e = load_err(d.path());
    assert!(e.contains("hook.layer") && e.contains("beyond"), "{e}");

    let d = copy_dir(&src);
    edit_json(d.path(), |v| v["base_model"]["d_model"] = 512.into());
    let e = load_err(d.path());
    assert!(
        e.contains("monitor.safetensors") && e.contains("expected f32 [512]"),
        "{e}"
    );

    let d = copy_dir(&src);
    edit_json(d.path(), |v| v["classifier"]["threshold"] = 3.0.into());
    assert!(load_err(d.path()).contains("classifier.threshold"));

    // NaN weight.
    let d = copy_dir(&src);
    let m = Monitor::load(&src).unwrap();
    let mut w = m.w.clone();
    w[7] = f32::NAN;
    let t = candle_core::Tensor::from_vec(w, (576,), &candle_core::Device::Cpu).unwrap();
    let mean =
        candle_core::Tensor::from_vec(m.mean.clone(), (576,), &candle_core::Device::Cpu).unwrap();
    let std =
        candle_core::Tensor::from_vec(m.std.clone(), (576,), &candle_core::Device::Cpu).unwrap();
    let mut map = std::collections::HashMap::new();
    map.insert("w".to_string(), t);
    map.insert("mean".to_string(), mean);
    map.insert("std".to_string(), std);
    candle_core::safetensors::save(&map, d.path().join("monitor.safetensors")).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("`w`") && e.contains("element 7"), "{e}");
}

#[test]
fn a_monitor_for_another_base_is_refused_unless_allowed() {
    let m = Monitor::load(&shipped("smollm2", "privacy_pii-l15")).unwrap();
    let facts = |d_model, num_layers| probegate::monitor::BaseFacts {
        fingerprint: "0".repeat(64),
        forward_identity: "0".repeat(64),
        d_model,
        num_layers,
    };
    let e = m
        .check_base(&facts(576, 30), BaseCheck::Require)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("base_model.fingerprint") && e.contains("--allow-base-mismatch"),
        "{e}"
    );
    m.check_base(&facts(576, 30), BaseCheck::AllowMismatch)
        .unwrap();
    // Width or depth mismatches are never allowed.
    assert!(m
        .check_base(&facts(640, 18), BaseCheck::AllowMismatch)
        .is_err());
    // Through the CLI: gemma3 with a SmolLM2 monitor exits 2.
    bin()
        .args([
            "monitor",
            "eval",
            "--model",
            "gemma3",
            "--allow-base-mismatch",
        ])
        .arg("--monitor")
        .arg(shipped("smollm2", "privacy_pii-l15"))
        .arg("--data")
        .arg(data("privacy_pii", "test"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("d_model 576"));
}

#[test]
fn eval_on_the_base_reproduces_the_stored_metrics() {
    let out = bin()
        .args([
            "monitor", "eval", "--model", "smollm2", "--format", "json", "--quiet",
        ])
        .arg("--monitor")
        .arg(shipped("smollm2", "self_harm-l15"))
        .arg("--data")
        .arg(data("self_harm", "test"))
        .env("PROBEGATE_NO_ACT_CACHE", "1")
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let r = &v["results"][0];
    let m = Monitor::load(&shipped("smollm2", "self_harm-l15")).unwrap();
    assert!(
        (r["auroc"].as_f64().unwrap() - m.meta.base_metrics.auroc).abs() < 1e-9,
        "{r}"
    );
    assert!(
        (r["balanced_accuracy"].as_f64().unwrap() - m.meta.base_metrics.balanced_accuracy).abs()
            < 1e-9
    );
    assert!(r["delta_auroc"].as_f64().unwrap().abs() < 1e-9);
}

#[test]
fn bad_datasets_exit_2_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &str)] = &[
        ("one_class.jsonl", "{\"text\":\"a\",\"label\":1}\n{\"text\":\"b\",\"label\":1}\n", "only one class"),
        ("no_label.jsonl", "{\"text\":\"a\",\"label\":1}\n{\"text\":\"b\"}\n", "no_label.jsonl:2: missing field `label`"),
        ("dupes.jsonl", "{\"text\":\"a\",\"label\":1}\n{\"text\":\"b\",\"label\":0}\n{\"text\":\"a\",\"label\":0}\n", "dupes.jsonl:3: duplicate text (first seen on line 1)"),
        ("empty_text.jsonl", "{\"text\":\"  \",\"label\":1}\n", "empty_text.jsonl:1: field `text` is empty"),
        ("bad_label.jsonl", "{\"text\":\"a\",\"label\":2}\n", "is not 0 or 1"),
        ("named.jsonl", "{\"text\":\"a\",\"label\":\"spam\"}\n", "neither `negative` nor `positive`"),
    ];
    for (name, body, needle) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        bin()
            .args([
                "monitor", "train", "--model", "smollm2", "--layer", "3", "--quiet",
            ])
            .arg("--data")
            .arg(&p)
            .arg("--out")
            .arg(dir.path().join("out"))
            .assert()
            .code(2)
            .stderr(predicate::str::contains(*needle))
            .stderr(predicate::str::contains("panicked").not());
    }
    assert!(!dir.path().join("out").exists());
}

/// Writes a control vector the way repeng's export_gguf lays it out.
fn write_control_vector(path: &Path, layer: usize, dir: &[f32]) {
    use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
    let t = candle_core::Tensor::from_vec(dir.to_vec(), (dir.len(),), &candle_core::Device::Cpu)
        .unwrap();
    let q = QTensor::quantize(&t, GgmlDType::F32).unwrap();
    let arch = gguf_file::Value::String("controlvector".into());
    let hint = gguf_file::Value::String("llama".into());
    let count = gguf_file::Value::I32(1);
    let mut f = std::fs::File::create(path).unwrap();
    let name = format!("direction.{layer}");
    gguf_file::write(
        &mut f,
        &[
            ("general.architecture", &arch),
            ("controlvector.model_hint", &hint),
            ("controlvector.layer_count", &count),
        ],
        &[(name.as_str(), &q)],
    )
    .unwrap();
}

#[test]
fn repeng_control_vectors_import_as_calibrated_monitors() {
    let m = Monitor::load(&shipped("smollm2", "toxicity-l15")).unwrap();
    let (w, _) = m.folded();
    let dir: Vec<f32> = w.iter().map(|x| *x as f32).collect();
    let tmp = tempfile::tempdir().unwrap();
    let mut aurocs = Vec::new();
    for (tag, sign) in [("plus", 1.0f32), ("minus", -1.0f32)] {
        let cv = tmp.path().join(format!("{tag}.gguf"));
        write_control_vector(&cv, 15, &dir.iter().map(|x| x * sign).collect::<Vec<_>>());
        let out = tmp.path().join(tag);
        let res = bin()
            .args([
                "monitor",
                "import-repeng",
                "--model",
                "smollm2",
                "--labels",
                "civil,toxic",
                "--format",
                "json",
                "--quiet",
            ])
            .arg("--vector")
            .arg(&cv)
            .arg("--data")
            .arg(data("toxicity", "train"))
            .arg("--test")
            .arg(data("toxicity", "test"))
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        let v: serde_json::Value = serde_json::from_slice(&res.get_output().stdout).unwrap();
        assert_eq!(v["flipped"], (sign < 0.0), "{v}");
        let imported = Monitor::load(&out).unwrap();
        assert_eq!(imported.meta.hook.layer, 15);
        aurocs.push(imported.meta.base_metrics.auroc);
    }
    // Orientation is learned: both signs give the same, good, held-out AUROC.
    assert!(
        (aurocs[0] - aurocs[1]).abs() < 1e-9 && aurocs[0] > 0.9,
        "{aurocs:?}"
    );
    // A file that is not a control vector is refused by field.
    bin()
        .args([
            "monitor",
            "import-repeng",
            "--model",
            "smollm2",
            "--layer",
            "3",
        ])
        .arg("--vector")
        .arg(model_path("smollm2"))
        .arg("--data")
        .arg(data("toxicity", "train"))
        .arg("--out")
        .arg(tmp.path().join("x"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("general.architecture"));
}

/// `cache clear --model` removes one model's entries and keeps the others':
/// how a run with only the base side cached is measured (bench/gate.sh).
#[test]
fn cache_clear_removes_only_the_named_models_entries() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ActCache::at(dir.path().join("activations"), 1 << 30);
    let base_ref = model_path("smollm2").display().to_string();
    let cand_ref = format!(
        "{base_ref}+{}",
        fixture("adapters/smollm2-lora-r4").display()
    );
    let texts: Vec<String> = prompts().into_iter().take(3).collect();
    let spec = ActSpec {
        pool: Pool::Last,
        precision: Precision::F32,
        // Two batches on a miss, one report on a hit.
        batch_size: 2,
    };
    for r in [&base_ref, &cand_ref] {
        let ck = probegate::checkpoint::Checkpoint::open_str(r).unwrap();
        cached_activations(&ck, &cache, &texts, &[1, 2], spec, &mut |_| {}).unwrap();
    }
    assert_eq!(cache.info().entries, 4);
    let out = bin()
        .env("PROBEGATE_CACHE", dir.path())
        .args(["--format", "json", "cache", "clear", "--model", &cand_ref])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["removed"], 2, "{v}");
    assert_eq!(cache.info().entries, 2);
    // The base's entries are the ones left: they are hits, no forward pass.
    let ck = probegate::checkpoint::Checkpoint::open_str(&base_ref).unwrap();
    let mut batches = 0;
    cached_activations(&ck, &cache, &texts, &[1, 2], spec, &mut |_| batches += 1).unwrap();
    assert_eq!(batches, 1, "a miss would have run two batches");
    let fp = ck.fingerprint().unwrap();
    assert_eq!(cache.clear_model(&fp).unwrap(), 2);
    assert_eq!(cache.info().entries, 0);
}

/// A monitor trained on a Hugging Face directory records what the weights'
/// hash does not cover (config, tokenizer), and refuses the same weights
/// under another config: its scores would be read from a different model.
#[test]
fn a_monitor_refuses_its_base_weights_under_another_config() {
    let dir = converted_smollm2();
    let hf = Checkpoint::open(
        &probegate::checkpoint::ModelRef::parse(&dir.display().to_string()).unwrap(),
    )
    .unwrap();
    let gguf = open("smollm2");
    let recorded = probegate::monitor::build::base_model(&hf, "converted").unwrap();
    assert_eq!(recorded.fingerprint, hf.fingerprint().unwrap());
    assert_eq!(
        recorded.forward_identity.as_deref(),
        Some(hf.forward_identity().unwrap().as_str())
    );
    // A GGUF file holds its config and tokenizer: nothing more to record.
    let plain = probegate::monitor::build::base_model(&gguf, "smollm2").unwrap();
    assert_eq!(plain.forward_identity, None);

    let mut m = Monitor::load(&shipped("smollm2", "privacy_pii-l15")).unwrap();
    m.meta.base_model = recorded;
    let facts = probegate::monitor::BaseFacts::of(&hf).unwrap();
    m.check_base(&facts, BaseCheck::Require).unwrap();
    let other = probegate::monitor::BaseFacts {
        forward_identity: "f".repeat(64),
        ..facts.clone()
    };
    let e = m
        .check_base(&other, BaseCheck::Require)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("base_model.forward_identity") && e.contains("another config"),
        "{e}"
    );
    m.check_base(&other, BaseCheck::AllowMismatch).unwrap();
    // The field survives a save and load.
    let out = tempfile::tempdir().unwrap();
    m.save(out.path()).unwrap();
    assert_eq!(
        Monitor::load(out.path()).unwrap().meta.base_model,
        m.meta.base_model
    );
}
