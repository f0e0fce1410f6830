//! `convert` writes what transformers would load, and every way of reading a
//! checkpoint (GGUF, HF directory, sharded, `hf:` from the hub cache) gives
//! the same activations.

use std::path::Path;

use candle_core::Tensor;
use probegate::activations::{extract, ExtractOptions};
use probegate::checkpoint::Checkpoint;
use probegate::model::{Model, Pool, Precision};

use crate::harness::*;

fn acts(ck: &Checkpoint, layers: &[usize]) -> Vec<Tensor> {
    let model = Model::load(ck, Precision::F32, *layers.iter().max().unwrap()).unwrap();
    let opts = ExtractOptions {
        layers: layers.to_vec(),
        pools: vec![Pool::Mean],
        precision: Precision::F32,
        batch_size: 4,
        max_tokens: 2048,
    };
    let a = extract(ck, &model, &prompts(), &opts, &mut |_| {}).unwrap();
    a[0].data.values().cloned().collect()
}

const LAYERS: &[usize] = &[0, 7, 15, 29];

#[test]
fn converted_directory_matches_gguf_to_1e_5() {
    let gguf = open("smollm2");
    let dir = converted_smollm2();
    let hf = Checkpoint::open_str(&dir.display().to_string()).unwrap();
    assert!(
        !hf.layout.rope_interleaved,
        "a converted directory uses transformers' layout"
    );
    let (a, b) = (acts(&gguf, LAYERS), acts(&hf, LAYERS));
    for (l, (x, y)) in LAYERS.iter().zip(a.iter().zip(&b)) {
        let d = rel_max_diff(x, y);
        eprintln!("layer {l}: max |gguf - converted| / max |gguf| = {d:.2e}");
        assert!(d <= 1e-5, "layer {l}: relative difference {d:e}");
    }
    // The tokenizer written beside it gives the same ids.
    for p in prompts() {
        assert_eq!(
            gguf.tokenizer.encode(&p).unwrap(),
            hf.tokenizer.encode(&p).unwrap(),
            "{p:?}"
        );
    }
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["model_type"], "llama");
    assert_eq!(cfg["num_hidden_layers"], 30);
}

#[test]
fn converted_qk_rows_are_unpermuted_like_transformers() {
    // transformers' GGUF loader reverse-permutes q/k; the converted q_proj
    // must therefore differ from the raw GGUF rows but hold the same values.
    let gguf = open("smollm2");
    let hf = Checkpoint::open_str(&converted_smollm2().display().to_string()).unwrap();
    let name = "model.layers.0.self_attn.q_proj.weight";
    let raw = gguf.get_f32(name).unwrap();
    let conv = hf.get_f32(name).unwrap();
    let same = rel_max_diff(&raw, &conv);
    assert!(same > 1e-3, "rows should have moved");
    let back = probegate::checkpoint::layout::permute_qk(&conv, gguf.config.num_heads).unwrap();
    assert_eq!(rel_max_diff(&back, &raw), 0.0);
}

fn link_or_copy(src: &Path, dst: &Path) {
    std::fs::copy(src, dst).unwrap();
}

#[test]
fn sharded_safetensors_directory_reads_the_same() {
    let dir = converted_smollm2();
    let sharded = tempfile::tempdir().unwrap();
    let all =
        candle_core::safetensors::load(dir.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    let mut names: Vec<&String> = all.keys().collect();
    names.sort();
    let mut map = serde_json::Map::new();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (i, n) in names.iter().enumerate() {
        let shard = if i % 2 == 0 {
            "model-00001-of-00002.safetensors"
        } else {
            "model-00002-of-00002.safetensors"
        };
        map.insert((*n).clone(), shard.into());
        if i % 2 == 0 {
            a.push(((*n).clone(), all[*n].clone()))
        } else {
            b.push(((*n).clone(), all[*n].clone()))
        }
    }
    candle_core::safetensors::save(
        &a.into_iter().collect(),
        sharded.path().join("model-00001-of-00002.safetensors"),
    )
    .unwrap();
    candle_core::safetensors::save(
        &b.into_iter().collect(),
        sharded.path().join("model-00002-of-00002.safetensors"),
    )
    .unwrap();
    std::fs::write(
        sharded.path().join("model.safetensors.index.json"),
        serde_json::json!({"metadata": {}, "weight_map": map}).to_string(),
    )
    .unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        link_or_copy(&dir.join(f), &sharded.path().join(f));
    }
    let one = Checkpoint::open_str(&dir.display().to_string()).unwrap();
    let two = Checkpoint::open_str(&sharded.path().display().to_string()).unwrap();
    assert_eq!(two.weight_files.len(), 2);
    let (x, y) = (acts(&one, &[5]), acts(&two, &[5]));
    assert_eq!(rel_max_diff(&x[0], &y[0]), 0.0);
}

/// Lays the converted model out exactly as huggingface_hub's cache does.
fn fake_hub_cache(root: &Path, repo: &str, commit: &str) {
    let folder = root.join(format!("models--{}", repo.replace('/', "--")));
    let snap = folder.join("snapshots").join(commit);
    std::fs::create_dir_all(folder.join("blobs")).unwrap();
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(folder.join("refs")).unwrap();
    std::fs::write(folder.join("refs").join("main"), commit).unwrap();
    for f in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors",
    ] {
        let blob = folder.join("blobs").join(format!("blob-{f}"));
        std::fs::copy(converted_smollm2().join(f), &blob).unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/blob-{f}"), snap.join(f)).unwrap();
    }
}

#[test]
fn hf_reference_resolves_from_the_hub_cache_offline() {
    let hub = tempfile::tempdir().unwrap();
    let commit = "0123456789abcdef0123456789abcdef01234567";
    fake_hub_cache(hub.path(), "HuggingFaceTB/SmolLM2-135M-Instruct", commit);
    let input = fixture("reference/prompts.jsonl");
    let out = tempfile::tempdir().unwrap();
    for (reference, env) in [
        (
            "hf:HuggingFaceTB/SmolLM2-135M-Instruct",
            ("HF_HUB_CACHE", hub.path().to_path_buf()),
        ),
        (
            &*format!("hf:HuggingFaceTB/SmolLM2-135M-Instruct@{commit}"),
            ("HF_HUB_CACHE", hub.path().to_path_buf()),
        ),
    ] {
        let dst = out.path().join("a.safetensors");
        bin()
            .args([
                "activations",
                "--model",
                reference,
                "--layers",
                "3",
                "--pool",
                "last",
                "--quiet",
            ])
            .arg("--input")
            .arg(&input)
            .arg("--out")
            .arg(&dst)
            .env(env.0, &env.1)
            .env("HF_HUB_OFFLINE", "1")
            .assert()
            .success();
        let a = probegate::activations::Activations::load(&dst).unwrap();
        assert_eq!(a.data[&3].dims(), &[8, 576]);
    }
    // HF_HOME/hub is the fallback when HF_HUB_CACHE is unset.
    let home = tempfile::tempdir().unwrap();
    fake_hub_cache(&home.path().join("hub"), "org/model", commit);
    bin()
        .args(["inspect", "--model", "hf:org/model", "--format", "json"])
        .env("HF_HOME", home.path())
        .env("HF_HUB_OFFLINE", "1")
        .assert()
        .success()
        .stdout(predicates::str::contains("\"num_layers\": 30"));
    // Offline and absent: a clear error, exit 2, no network.
    bin()
        .args(["inspect", "--model", "hf:org/absent"])
        .env("HF_HUB_CACHE", hub.path())
        .env("HF_HUB_OFFLINE", "1")
        .assert()
        .code(2)
        .stderr(predicates::str::contains("HF_HUB_OFFLINE"));
}

#[test]
fn converted_gemma3_matches_gguf_to_1e_5() {
    // Gemma's GGUF stores norms as (1 + w) and q/k unpermuted; convert must
    // unbake the norms and leave q/k alone.
    let gguf = open("gemma3");
    let dir = tempfile::tempdir().unwrap();
    let summary = probegate::export::convert(
        &gguf,
        dir.path(),
        probegate::export::OutDtype::F32,
        &mut || {},
    )
    .unwrap();
    assert_eq!(summary.unpermuted_qk, 0);
    assert!(summary.unbaked_norms >= 18 * 6);
    let hf = Checkpoint::open_str(&dir.path().display().to_string()).unwrap();
    assert_eq!(hf.config.layer_types, gguf.config.layer_types);
    let layers = [0, 8, 17];
    let (a, b) = (acts(&gguf, &layers), acts(&hf, &layers));
    for (l, (x, y)) in layers.iter().zip(a.iter().zip(&b)) {
        let d = rel_max_diff(x, y);
        eprintln!("gemma3 layer {l}: relative difference {d:.2e}");
        assert!(d <= 1e-5, "layer {l}: {d:e}");
    }
    for p in prompts() {
        assert_eq!(
            gguf.tokenizer.encode(&p).unwrap(),
            hf.tokenizer.encode(&p).unwrap()
        );
    }
}
