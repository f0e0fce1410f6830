//! The zoo: bitsandbytes layouts against files the real bitsandbytes wrote,
//! LoRA training with candle's autograd, and what the zoo writes reloading
//! as real candidates.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use probegate::checkpoint::adapter::LoraAdapter;
use probegate::checkpoint::safetensors_dir::SafetensorsDir;
use probegate::checkpoint::{bnb, Checkpoint};
use probegate::lab::finetune::{Mode, Targets, TrainConfig};
use probegate::lab::zoo::{run_training, RunSpec};

use crate::harness::*;

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

/// fixtures/bnb holds weights serialized by bitsandbytes 0.48.2 itself, with
/// the values bitsandbytes dequantizes them to.
#[test]
fn bitsandbytes_nf4_and_int8_files_dequantize_bit_exactly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("bnb/bnb_reference.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let st = SafetensorsDir::open(dir.path()).unwrap();
    // candle cannot load int8 tensors; read the f32 ones through safetensors.
    let bytes = std::fs::read(fixture("bnb/bnb_reference.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let expected: HashMap<String, Tensor> = file
        .iter()
        .filter(|(_, v)| v.dtype() == safetensors::Dtype::F32)
        .map(|(n, v)| {
            let t =
                Tensor::from_raw_buffer(v.data(), candle_core::DType::F32, v.shape(), &Device::Cpu)
                    .unwrap();
            (n.to_string(), t)
        })
        .collect();
    let mut checked = 0;
    for m in [
        "model.layers.0.mlp.rand_proj",
        "model.layers.0.self_attn.v_proj",
    ] {
        for suffix in ["", "_dq", "_int8"] {
            let got = st.load(&format!("{m}{suffix}.weight")).unwrap();
            let want = &expected[&format!("expected.{m}{suffix}")];
            assert_eq!(got.dims(), want.dims(), "{m}{suffix}");
            assert_eq!(
                bits(&got),
                bits(want),
                "{m}{suffix} differs from bitsandbytes"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 6);
    // Side tensors are not weights of their own; quantized weights report their layout.
    let names: Vec<_> = st
        .summaries()
        .into_iter()
        .map(|s| (s.name, s.dtype, s.shape))
        .collect();
    assert!(names.iter().all(|(n, _, _)| !bnb::is_aux(n)), "{names:?}");
    assert!(names.contains(&(
        "model.layers.0.self_attn.v_proj_dq.weight".into(),
        "bnb_nf4".into(),
        vec![64, 576]
    )));
    // The double-quantization code is bitsandbytes' dynamic map, entry for entry.
    let map = &expected["model.layers.0.self_attn.v_proj_dq.weight.nested_quant_map"];
    let ours = Tensor::new(bnb::dynamic_map(), &Device::Cpu).unwrap();
    assert_eq!(bits(&ours), bits(map));
}

/// Our NF4 writer's output read back equals the what-if NF4 weights up to
/// double quantization of absmax, and int8 equals int8(BASE) exactly.
#[test]
fn zoo_bitsandbytes_dirs_reload_as_candidates() {
    let base = open("smollm2");
    let tmp = tempfile::tempdir().unwrap();
    let name = "model.layers.3.mlp.down_proj.weight";
    for scheme in ["nf4", "int8"] {
        let out = tmp.path().join(scheme);
        probegate::export::bnb::write_dir(&base, scheme, &out).unwrap();
        let ck = Checkpoint::open_str(&out.display().to_string()).unwrap();
        let whatif =
            Checkpoint::open_str(&format!("{scheme}({})", model_path("smollm2").display()))
                .unwrap();
        let got = ck.get_f32(name).unwrap();
        let want = whatif.get_f32(name).unwrap();
        let rel = rel_max_diff(&got, &want);
        eprintln!("{scheme}: max rel diff to the what-if = {rel:.2e}");
        match scheme {
            "int8" => assert_eq!(bits(&got), bits(&want)),
            // absmax stored in 8 bits: bitsandbytes measured ~2% absmax error.
            _ => assert!(rel < 0.05 && rel > 0.0, "{rel}"),
        }
        let summaries = ck.tensors();
        let s = summaries.iter().find(|s| s.name == name).unwrap();
        assert_eq!(s.dtype, format!("bnb_{scheme}"));
        // Embeddings stay dense and exact.
        let e = ck.get_f32("model.embed_tokens.weight").unwrap();
        let eb = base.get_f32("model.embed_tokens.weight").unwrap();
        assert_eq!(bits(&e), bits(&eb));
    }
}

/// Mean-pooled activations at blocks 10 and 20 on the shared prompts.
fn mean_acts(ck: &Checkpoint) -> HashMap<usize, Tensor> {
    let model = probegate::model::Model::load(ck, probegate::model::Precision::F32, 20).unwrap();
    let opts = probegate::activations::ExtractOptions {
        layers: vec![10, 20],
        pools: vec![probegate::model::Pool::Mean],
        precision: probegate::model::Precision::F32,
        batch_size: 8,
        max_tokens: 256,
    };
    probegate::activations::extract(ck, &model, &prompts(), &opts, &mut |_| {})
        .unwrap()
        .remove(0)
        .data
        .into_iter()
        .collect()
}

fn lora_run(out: &std::path::Path, steps: usize, seed: u64) -> probegate::lab::zoo::TrainOutput {
    run_training(
        &RunSpec {
            base: &model_path("smollm2").display().to_string(),
            corpus_dir: &repo().join("data/finetune/support"),
            mode: Mode::Lora {
                r: 8,
                alpha: 16.0,
                targets: Targets::Attn,
            },
            quantized_base: false,
            config: TrainConfig {
                mode: Mode::Lora {
                    r: 8,
                    alpha: 16.0,
                    targets: Targets::Attn,
                },
                steps,
                batch_size: 4,
                seq_len: 64,
                lr: 1e-3,
                weight_decay: 0.0,
                warmup_steps: 1,
                max_grad_norm: 1.0,
                seed,
                eval_windows: 8,
                eval_every: steps,
            },
            out,
        },
        &mut |_| {},
    )
    .unwrap()
}

/// A LoRA run trained with candle's autograd lowers held-out loss on its own
/// corpus; the adapter it writes reloads bit-identically, is deterministic
/// given a seed, and served unmerged equals the merged checkpoint.
#[test]
fn lora_training_lowers_heldout_loss_and_reloads_bit_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("lora");
    let run = lora_run(&out, 8, 7);
    let r = &run.report;
    eprintln!(
        "LoRA r8 attn on support: held-out loss {:.4} -> {:.4} in {} steps ({:.2} s/step)",
        r.heldout_loss_before, r.heldout_loss_after, r.config.steps, r.seconds_per_step
    );
    assert!(
        r.heldout_loss_after < r.heldout_loss_before - 0.05,
        "held-out loss did not fall: {} -> {}",
        r.heldout_loss_before,
        r.heldout_loss_after
    );
    assert_eq!(r.curve.len(), 8);
    assert_eq!(
        r.trainable_params,
        30 * 8 * (576 + 576 + 576 + 192 + 576 + 192 + 576 + 576)
    );

    // Reload through the PEFT loader: every A and B bit for bit.
    let ad = LoraAdapter::load(&out).unwrap();
    assert_eq!(ad.modules.len(), 30 * 4);
    let trained: HashMap<String, Tensor> = run.trained.into_iter().collect();
    for (module, pair) in &ad.modules {
        assert_eq!(
            bits(&pair.a),
            bits(&trained[&format!("{module}.lora_A")]),
            "{module} A"
        );
        assert_eq!(
            bits(&pair.b),
            bits(&trained[&format!("{module}.lora_B")]),
            "{module} B"
        );
        assert_eq!(pair.scale, 2.0);
    }
    let training: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("training.json")).unwrap()).unwrap();
    assert_eq!(training["curve"].as_array().unwrap().len(), 8);

    // Same seed, same bytes.
    let again = tmp.path().join("again");
    lora_run(&again, 2, 7);
    let first2 = tmp.path().join("first2");
    lora_run(&first2, 2, 7);
    assert_eq!(
        std::fs::read(again.join("adapter_model.safetensors")).unwrap(),
        std::fs::read(first2.join("adapter_model.safetensors")).unwrap(),
        "training is not deterministic given a seed"
    );

    // Served unmerged on the GGUF base == merged into a full checkpoint.
    let spec = format!("{}+{}", model_path("smollm2").display(), out.display());
    let unmerged = Checkpoint::open_str(&spec).unwrap();
    let merged_dir = tmp.path().join("merged");
    probegate::export::convert(
        &unmerged,
        &merged_dir,
        probegate::export::OutDtype::F32,
        &mut || {},
    )
    .unwrap();
    let merged = Checkpoint::open_str(&merged_dir.display().to_string()).unwrap();
    let base = open("smollm2");
    let acts = mean_acts;
    let (u, m, b) = (acts(&unmerged), acts(&merged), acts(&base));
    for l in [10, 20] {
        let d = rel_max_diff(&u[&l], &m[&l]);
        assert!(d < 1e-4, "block {l}: unmerged vs merged rel diff {d}");
        // And the adapter did move the model.
        assert!(
            rel_max_diff(&u[&l], &b[&l]) > 1e-3,
            "block {l}: adapter had no effect"
        );
    }
}

#[test]
fn zoo_train_cli_reports_and_refuses_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    // A corpus without heldout.jsonl names the missing file.
    std::fs::write(tmp.path().join("train.jsonl"), "{\"text\": \"hello\"}\n").unwrap();
    bin()
        .args([
            "zoo", "train", "--model", "smollm2", "--rank", "8", "--steps", "1",
        ])
        .arg("--corpus")
        .arg(tmp.path())
        .arg("--out")
        .arg(tmp.path().join("o"))
        .assert()
        .code(2)
        .stderr(predicates::str::contains("heldout.jsonl"));
    // QLoRA needs nf4, not another what-if.
    bin()
        .args([
            "zoo",
            "train",
            "--model",
            "q4_0(smollm2)",
            "--rank",
            "8",
            "--steps",
            "1",
        ])
        .args(["--corpus", "data/finetune/chat", "--out"])
        .arg(tmp.path().join("q"))
        .current_dir(repo())
        .assert()
        .code(2)
        .stderr(predicates::str::contains("nf4(BASE)"));
}

/// Hostile bitsandbytes files: each lie is an error naming the tensor, never
/// a panic or silently wrong weights.
#[test]
fn hostile_bitsandbytes_files_are_refused() {
    let w = Tensor::randn(0f32, 0.02, (8, 128), &Device::Cpu).unwrap();
    let name = "model.layers.0.mlp.up_proj.weight";
    type Tamper<'a> = Box<dyn Fn(&mut Vec<bnb::RawEntry>) + 'a>;
    let cases: Vec<(&str, Tamper)> = vec![
        (
            "quant_type `fp4`",
            Box::new(|e: &mut Vec<bnb::RawEntry>| {
                let qs = e.iter_mut().find(|x| x.0.ends_with(bnb::QS_NF4)).unwrap();
                qs.3 = br#"{"quant_type":"fp4","blocksize":64,"shape":[8,128]}"#.to_vec();
                qs.2 = vec![qs.3.len()];
            }),
        ),
        (
            "not JSON",
            Box::new(|e: &mut Vec<bnb::RawEntry>| {
                let qs = e.iter_mut().find(|x| x.0.ends_with(bnb::QS_NF4)).unwrap();
                qs.3 = b"{oops".to_vec();
                qs.2 = vec![5];
            }),
        ),
        (
            "needs 512",
            Box::new(|e: &mut Vec<bnb::RawEntry>| {
                let p = e.iter_mut().find(|x| x.0 == name).unwrap();
                p.3.truncate(100);
                p.2 = vec![100, 1];
            }),
        ),
        (
            "nested statistics do not fit",
            Box::new(|e: &mut Vec<bnb::RawEntry>| {
                let p = e
                    .iter_mut()
                    .find(|x| x.0.ends_with("nested_quant_map"))
                    .unwrap();
                p.3.truncate(40);
                p.2 = vec![10];
            }),
        ),
        (
            "up_proj.weight.absmax`: missing",
            Box::new(|e: &mut Vec<bnb::RawEntry>| {
                e.retain(|x| !x.0.ends_with(".absmax"));
            }),
        ),
    ];
    for (needle, tamper) in cases {
        let mut entries = bnb::encode_nf4(name, &w, true).unwrap();
        tamper(&mut entries);
        let dir = tempfile::tempdir().unwrap();
        let views: Vec<(String, safetensors::tensor::TensorView)> = entries
            .iter()
            .map(|(n, d, s, b)| {
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, &dir.path().join("model.safetensors")).unwrap();
        let err = SafetensorsDir::open(dir.path())
            .and_then(|st| st.load(name))
            .expect_err(needle)
            .to_string();
        assert!(err.contains(needle), "expected `{needle}` in: {err}");
    }
}

/// Merged LoRA stored as it is served (#17): the committed adapter merged
/// into SmolLM2 and written as bf16 and as the base's GGUF. The GGUF keeps
/// every tensor in the base file's own type, the tensors the adapter does
/// not touch byte for byte, and both stored merges differ from the exact
/// (unmerged) candidate: the rounding a real merge does is in the zoo now.
#[test]
fn merged_adapters_are_stored_as_served() {
    use candle_core::quantized::gguf_file;
    use probegate::lab::zoo::{merge_stored, Storage};
    let tmp = tempfile::tempdir().unwrap();
    let spec = format!(
        "{}+{}",
        model_path("smollm2").display(),
        fixture("zoo/smollm2-lora-r8-attn-support").display()
    );
    let unmerged = Checkpoint::open_str(&spec).unwrap();
    let gguf = merge_stored(
        &unmerged,
        &tmp.path().join("merged-gguf"),
        Storage::BaseGguf,
    )
    .unwrap();
    let bf16 = merge_stored(&unmerged, &tmp.path().join("merged-bf16"), Storage::Bf16).unwrap();
    let read = |p: &std::path::Path| {
        let mut f = std::fs::File::open(p).unwrap();
        gguf_file::Content::read(&mut f).unwrap()
    };
    let (base_c, merged_c) = (
        read(&model_path("smollm2")),
        read(std::path::Path::new(&gguf)),
    );
    assert_eq!(base_c.tensor_infos.len(), merged_c.tensor_infos.len());
    let (mut same_type, mut changed) = (0, 0);
    for (name, b) in &base_c.tensor_infos {
        let m = &merged_c.tensor_infos[name];
        assert_eq!(b.shape.dims(), m.shape.dims(), "{name}");
        if b.ggml_dtype == m.ggml_dtype {
            same_type += 1;
        }
        let bytes = |c: &gguf_file::Content, p: &std::path::Path| {
            let mut f = std::fs::File::open(p).unwrap();
            let q = c.tensor_infos[name]
                .read(&mut f, c.tensor_data_offset, &Device::Cpu)
                .unwrap();
            q.data().unwrap().to_vec()
        };
        let adapted = name.contains("attn_q")
            || name.contains("attn_v")
            || name.contains("attn_k")
            || name.contains("attn_output");
        let differ =
            bytes(&base_c, &model_path("smollm2")) != bytes(&merged_c, std::path::Path::new(&gguf));
        if differ {
            changed += 1;
            assert!(adapted, "{name} changed but the adapter does not touch it");
        }
    }
    assert_eq!(
        same_type,
        base_c.tensor_infos.len(),
        "a tensor changed its stored type"
    );
    assert!(changed > 0, "the merge changed no tensor");
    // The diff must not call a requantized merge a quantization, which a
    // quantization-only policy would let through: by ΔW's low rank, or where
    // rounding hid it (the zoo's r32 merges) by the modules it touched
    // (src/gate/diff.rs, an_update_requantized_to_the_base_types_...).
    let d = probegate::gate::diff::diff(
        &open("smollm2"),
        &Checkpoint::open_str(&gguf).unwrap(),
        &mut || {},
    )
    .unwrap();
    assert_eq!(
        d.family,
        probegate::gate::diff::Family::MergedLowRank,
        "{:?}",
        d.evidence
    );
    let acts = mean_acts;
    let u = acts(&unmerged);
    let g = acts(&Checkpoint::open_str(&gguf).unwrap());
    let h = acts(&Checkpoint::open_str(&bf16).unwrap());
    let b = acts(&open("smollm2"));
    for l in [10, 20] {
        let (dg, dh, db) = (
            rel_max_diff(&u[&l], &g[&l]),
            rel_max_diff(&u[&l], &h[&l]),
            rel_max_diff(&u[&l], &b[&l]),
        );
        eprintln!(
            "block {l}: vs unmerged: base-GGUF storage {dg:.2e}, bf16 {dh:.2e}; base {db:.2e}"
        );
        assert!(
            dg > 1e-5 && dh > 1e-5,
            "block {l}: storage did not round ({dg}, {dh})"
        );
        assert!(dg.is_finite() && dh < 0.1, "block {l}: {dg} {dh}");
    }
}
