//! Candidate forms: what-if quantizations of a base, PEFT LoRA adapters applied
//! unmerged (on a GGUF base too), merged adapters, and what is refused.

use std::path::{Path, PathBuf};

use predicates::prelude::*;
use probegate::activations::{extract, ExtractOptions};
use probegate::checkpoint::Checkpoint;
use probegate::model::{Model, Pool, Precision};

use crate::harness::*;

fn acts_of(ck: &Checkpoint, layers: &[usize], pool: Pool) -> Vec<candle_core::Tensor> {
    let model = Model::load(ck, Precision::F32, *layers.iter().max().unwrap()).unwrap();
    let opts = ExtractOptions {
        layers: layers.to_vec(),
        pools: vec![pool],
        precision: Precision::F32,
        batch_size: 8,
        max_tokens: 2048,
    };
    extract(ck, &model, &prompts(), &opts, &mut |_| {})
        .unwrap()
        .remove(0)
        .data
        .into_values()
        .collect()
}

fn min_cos(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f64 {
    rows(a)
        .iter()
        .zip(rows(b))
        .map(|(x, y)| cosine(x, &y))
        .fold(1.0, f64::min)
}

#[test]
fn what_if_quantizations_are_ordered_by_precision() {
    let base = open("smollm2");
    let b = &acts_of(&base, &[20], Pool::Mean)[0];
    let mut cos = Vec::new();
    let mut fps = vec![base.fingerprint().unwrap()];
    for q in ["int8", "q8_0", "nf4", "q4_0"] {
        let ck = Checkpoint::open_str(&format!("{q}(smollm2)")).unwrap();
        fps.push(ck.fingerprint().unwrap());
        let c = min_cos(&acts_of(&ck, &[20], Pool::Mean)[0], b);
        eprintln!("{q}(smollm2): min cosine to base at block 20 = {c:.5}");
        assert!(c > 0.98 && c < 1.0, "{q}: {c}");
        cos.push(c);
    }
    // 8-bit forms are closer to the base than 4-bit ones.
    assert!(cos[0].min(cos[1]) > cos[2].max(cos[3]), "{cos:?}");
    fps.sort();
    fps.dedup();
    assert_eq!(fps.len(), 5, "every candidate has its own fingerprint");
    bin()
        .args(["inspect", "--model", "fp3(smollm2)"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "unknown what-if quantization `fp3`",
        ));
}

fn adapter(name: &str) -> PathBuf {
    fixture(&format!("adapters/{name}"))
}

fn check_peft(adapter_name: &str) {
    let spec = format!("smollm2+{}", adapter(adapter_name).display());
    let ck = Checkpoint::open_str(&spec).unwrap();
    let n = ck.config.num_layers;
    let reference = reference(&format!(
        "smollm2-{}",
        adapter_name.trim_start_matches("smollm2-")
    ));
    let mut worst = 1.0f64;
    for pool in [Pool::Last, Pool::Mean] {
        let acts = acts_of(&ck, &(0..n).collect::<Vec<_>>(), pool);
        for (l, t) in acts.iter().enumerate() {
            let r = &reference[&format!("{pool}.layer.{l}")];
            let c = min_cos(t, r);
            worst = worst.min(c);
            assert!(c >= 0.999, "{adapter_name} {pool} layer {l}: cosine {c}");
        }
    }
    eprintln!("{adapter_name} on the GGUF base vs transformers+PEFT: worst cosine {worst:.6}");
}

#[test]
fn real_peft_adapter_on_gguf_base_matches_transformers_peft() {
    check_peft("smollm2-lora-r4");
}

#[test]
fn rslora_scaling_matches_transformers_peft() {
    check_peft("smollm2-rslora-r4");
}

#[test]
fn unmerged_adapter_equals_the_merged_checkpoint() {
    let spec = format!("smollm2+{}", adapter("smollm2-lora-r4").display());
    let unmerged = Checkpoint::open_str(&spec).unwrap();
    let out = tempfile::tempdir().unwrap();
    probegate::export::convert(
        &unmerged,
        out.path(),
        probegate::export::OutDtype::F32,
        &mut || {},
    )
    .unwrap();
    let merged = Checkpoint::open_str(&out.path().display().to_string()).unwrap();
    let layers = [3, 15, 29];
    let (a, b) = (
        acts_of(&unmerged, &layers, Pool::Mean),
        acts_of(&merged, &layers, Pool::Mean),
    );
    for (l, (x, y)) in layers.iter().zip(a.iter().zip(&b)) {
        let d = rel_max_diff(x, y);
        assert!(d <= 1e-4, "layer {l}: {d:e}");
    }
}

fn copy_adapter(src: &Path) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(src.join(f), d.path().join(f)).unwrap();
    }
    d
}

#[test]
fn unsupported_adapters_are_refused_not_ignored() {
    let src = adapter("smollm2-lora-r4");
    let inspect = |spec: String, needle: &str| {
        bin()
            .args(["inspect", "--model", &spec])
            .assert()
            .code(2)
            .stderr(predicate::str::contains(needle.to_string()))
            .stderr(predicate::str::contains("panicked").not());
    };
    // DoRA.
    let d = copy_adapter(&src);
    let p = d.path().join("adapter_config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    cfg["use_dora"] = true.into();
    std::fs::write(&p, cfg.to_string()).unwrap();
    inspect(format!("smollm2+{}", d.path().display()), "DoRA");

    // An embedding adapter tensor, and an unknown tensor.
    for (extra, needle) in [
        (
            "base_model.model.model.embed_tokens.lora_embedding_A",
            "embedding adapters",
        ),
        (
            "base_model.model.model.layers.0.mlp.up_proj.weight",
            "refusing to ignore",
        ),
    ] {
        let d = copy_adapter(&src);
        let wp = d.path().join("adapter_model.safetensors");
        let mut t = candle_core::safetensors::load(&wp, &candle_core::Device::Cpu).unwrap();
        t.insert(
            extra.to_string(),
            candle_core::Tensor::zeros((4, 4), candle_core::DType::F32, &candle_core::Device::Cpu)
                .unwrap(),
        );
        candle_core::safetensors::save(&t, &wp).unwrap();
        inspect(format!("smollm2+{}", d.path().display()), needle);
    }
    // A SmolLM2 adapter on Gemma 3.
    inspect(format!("gemma3+{}", src.display()), "another base");
    // Not an adapter directory.
    inspect("smollm2+/tmp".to_string(), "not a PEFT adapter directory");
}
