//! Memory-bounded forward on a model of real 7B shape: peak RSS and tokens/s
//! of `probegate activations` with every block's weights expanded to f32 at
//! load (`--weights resident`) against one block at a time
//! (`--weights streamed`), for the model stored as GGUF Q4_K and as bf16
//! safetensors. See BENCHMARKS.md, "Models bigger than memory".
//!
//!   cargo bench --bench memory                       # 2 and 4 blocks
//!   PROBEGATE_BENCH_BLOCKS=4 cargo bench --bench memory
//!
//! The model is generated (seeded uniform weights, std 0.02; norms 1) with
//! Mistral-7B's shape: d_model 4096, 32 query heads and 8 key/value heads of
//! 128, MLP 14336, SmolLM2's tokenizer and its 49,152-row vocabulary. Values
//! do not matter here, only sizes; correctness of both paths is tested on
//! the real models (tests/it/model.rs). Files go to
//! `$PROBEGATE_CACHE/bench/7b-shaped-<blocks>` and are reused.
//! Each run is a fresh process under /usr/bin/time (max RSS), 32 prompts of
//! 64 tokens in batches of 16, every block captured.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use probegate::checkpoint::Checkpoint;

const D: usize = 4096;
const HEADS: usize = 32;
const KV_HEADS: usize = 8;
const HEAD_DIM: usize = 128;
const FF: usize = 14336;
const PROMPTS: usize = 32;
const TOKENS: usize = 64;

/// Seeded weights without a second RNG crate: a 64-bit LCG's top bits,
/// uniform with the std of N(0, 0.02).
fn weights(shape: &[usize], seed: u64) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let half = 0.02 * 3f32.sqrt();
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * half
        })
        .collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

/// (transformers name, GGUF name, [out, in]) for every weight of `blocks` blocks.
fn layout(blocks: usize) -> Vec<(String, String, Vec<usize>)> {
    let mut v = Vec::new();
    for l in 0..blocks {
        let hf = |m: &str| format!("model.layers.{l}.{m}.weight");
        let gg = |m: &str| format!("blk.{l}.{m}.weight");
        for (h, g, s) in [
            ("self_attn.q_proj", "attn_q", vec![HEADS * HEAD_DIM, D]),
            ("self_attn.k_proj", "attn_k", vec![KV_HEADS * HEAD_DIM, D]),
            ("self_attn.v_proj", "attn_v", vec![KV_HEADS * HEAD_DIM, D]),
            ("self_attn.o_proj", "attn_output", vec![D, HEADS * HEAD_DIM]),
            ("mlp.gate_proj", "ffn_gate", vec![FF, D]),
            ("mlp.up_proj", "ffn_up", vec![FF, D]),
            ("mlp.down_proj", "ffn_down", vec![D, FF]),
            ("input_layernorm", "attn_norm", vec![D]),
            ("post_attention_layernorm", "ffn_norm", vec![D]),
        ] {
            v.push((hf(h), gg(g), s));
        }
    }
    v.push((
        "model.norm.weight".into(),
        "output_norm.weight".into(),
        vec![D],
    ));
    v
}

fn tensor_for(shape: &[usize], seed: u64) -> Result<Tensor> {
    Ok(if shape.len() == 1 {
        Tensor::ones(shape, DType::F32, &Device::Cpu)?
    } else {
        weights(shape, seed)?
    })
}

/// Writes the GGUF (Q4_K matrices, f32 norms) and the bf16 directory once.
fn generate(dir: &Path, blocks: usize) -> Result<(PathBuf, PathBuf)> {
    let gguf = dir.join("model-q4_k.gguf");
    let hf = dir.join("bf16");
    if gguf.exists() && hf.join("model.safetensors").exists() {
        return Ok((gguf, hf));
    }
    std::fs::create_dir_all(dir)?;
    let small = Checkpoint::open_str("smollm2").context("scripts/fetch-models.sh smollm2 first")?;
    let vocab = small.config.vocab_size;
    let (content, _) = small.gguf_parts().context("SmolLM2 is a GGUF")?;
    let mut meta: HashMap<String, gguf_file::Value> = content.metadata.clone();
    meta.remove("general.file_type");
    for (k, v) in [
        ("llama.embedding_length", D),
        ("llama.block_count", blocks),
        ("llama.feed_forward_length", FF),
        ("llama.attention.head_count", HEADS),
        ("llama.attention.head_count_kv", KV_HEADS),
        ("llama.rope.dimension_count", HEAD_DIM),
    ] {
        meta.insert(k.into(), gguf_file::Value::U32(v as u32));
    }
    meta.insert(
        "general.name".into(),
        gguf_file::Value::String(format!("probegate 7B-shaped bench model, {blocks} blocks")),
    );

    let mut all = layout(blocks);
    all.push((
        "model.embed_tokens.weight".into(),
        "token_embd.weight".into(),
        vec![vocab, D],
    ));
    let mut q = Vec::new();
    let mut bf = Vec::new();
    for (i, (h, g, shape)) in all.iter().enumerate() {
        let t = tensor_for(shape, 20261127 + i as u64)?;
        let qt = if shape.len() == 1 {
            QTensor::quantize(&t, GgmlDType::F32)?
        } else {
            QTensor::quantize(&t, GgmlDType::Q4K)?
        };
        q.push((g.clone(), qt));
        bf.push((h.clone(), t.to_dtype(DType::BF16)?));
    }
    let mut keys: Vec<(&str, &gguf_file::Value)> =
        meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    keys.sort_by(|a, b| a.0.cmp(b.0));
    let refs: Vec<(&str, &QTensor)> = q.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let tmp = gguf.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    gguf_file::write(&mut f, &keys, &refs)?;
    drop(f);
    std::fs::rename(&tmp, &gguf)?;
    drop(q);

    let mut cfg = small.config.clone();
    cfg.hidden_size = D;
    cfg.intermediate_size = FF;
    cfg.num_layers = blocks;
    cfg.num_heads = HEADS;
    cfg.num_kv_heads = KV_HEADS;
    cfg.head_dim = HEAD_DIM;
    cfg.layer_types.truncate(blocks);
    while cfg.layer_types.len() < blocks {
        cfg.layer_types.push(cfg.layer_types[0]);
    }
    cfg.attn_scale = 1.0 / (HEAD_DIM as f64).sqrt();
    probegate::export::write_hf_dir(
        &hf,
        bf,
        &cfg,
        &small.tokenizer,
        HashMap::new(),
        probegate::export::OutDtype::Bf16,
    )?;
    Ok((gguf, hf))
}

fn prompts(dir: &Path) -> Result<PathBuf> {
    let p = dir.join("prompts.jsonl");
    let small = Checkpoint::open_str("smollm2")?;
    let words = [
        "budget", "river", "password", "engine", "harvest", "lecture", "signal", "garden",
    ];
    let mut lines = String::new();
    for i in 0..PROMPTS {
        // Grow the text until it tokenizes to exactly TOKENS or just over, then cut.
        let mut text = format!("Prompt {i}:");
        let mut k = i;
        while small.tokenizer.encode(&text)?.len() < TOKENS {
            text.push(' ');
            text.push_str(words[k % words.len()]);
            k += 3;
        }
        lines.push_str(&serde_json::json!({ "text": text }).to_string());
        lines.push('\n');
    }
    std::fs::write(&p, lines)?;
    Ok(p)
}

struct Run {
    max_rss_mib: f64,
    wall_s: f64,
    tokens_per_s: f64,
    residency: String,
}

fn run(model: &Path, input: &Path, weights: &str, precision: &str) -> Result<Run> {
    let out = std::env::temp_dir().join(format!("probegate-bench-mem-{}.st", std::process::id()));
    let o = Command::new("/usr/bin/time")
        .args(["-f", "MAXRSS %M\nWALL %e"])
        .arg(env!("CARGO_BIN_EXE_probegate"))
        .args(["--format", "json", "activations", "--layers", "all"])
        .arg("--model")
        .arg(model)
        .arg("--input")
        .arg(input)
        .arg("--out")
        .arg(&out)
        .args(["--weights", weights, "--precision", precision])
        .args(["--batch-size", "16", "--max-tokens", &TOKENS.to_string()])
        .output()
        .context("running /usr/bin/time probegate activations")?;
    let _ = std::fs::remove_file(&out);
    let stderr = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() {
        bail!("probegate activations failed: {stderr}");
    }
    // /usr/bin/time's own lines, after whatever the binary printed.
    let field = |key: &str| -> Result<f64> {
        let v = stderr
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .with_context(|| format!("no {key}line from /usr/bin/time"))?;
        Ok(v.trim().parse()?)
    };
    let (kib, wall) = (field("MAXRSS ")?, field("WALL ")?);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    Ok(Run {
        max_rss_mib: kib / 1024.0,
        wall_s: wall,
        tokens_per_s: v["tokens_per_second"].as_f64().unwrap_or(0.0),
        residency: v["weights"].as_str().unwrap_or("?").to_string(),
    })
}

fn file_mib(p: &Path) -> f64 {
    let walk = |p: &Path| -> u64 {
        if p.is_dir() {
            std::fs::read_dir(p)
                .map(|d| {
                    d.flatten()
                        .filter_map(|e| e.metadata().ok())
                        .map(|m| m.len())
                        .sum()
                })
                .unwrap_or(0)
        } else {
            std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
        }
    };
    walk(p) as f64 / (1024.0 * 1024.0)
}

fn main() -> Result<()> {
    let blocks: Vec<usize> = std::env::var("PROBEGATE_BENCH_BLOCKS")
        .unwrap_or_else(|_| "2,4".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .context("PROBEGATE_BENCH_BLOCKS: comma-separated block counts")
        })
        .collect::<Result<_>>()?;
    let root = probegate::checkpoint::cache_root().join("bench");
    println!(
        "| blocks | stored as | stored MiB | weights | precision | peak RSS MiB | tokens/s (forward) | wall s (with load) |\n\
         | ---: | --- | ---: | --- | --- | ---: | ---: | ---: |"
    );
    for &n in &blocks {
        let dir = root.join(format!("7b-shaped-{n}"));
        let (gguf, hf) = generate(&dir, n)?;
        let input = prompts(&dir)?;
        for (label, model) in [("GGUF Q4_K", &gguf), ("bf16 safetensors", &hf)] {
            let mut cases = vec![("resident", "f32"), ("streamed", "f32")];
            if model == &gguf {
                cases.push(("resident", "native"));
            }
            for (w, prec) in cases {
                let r = run(model, &input, w, prec)?;
                println!(
                    "| {n} | {label} | {:.0} | {} | {prec} | {:.0} | {:.1} | {:.1} |",
                    file_mib(model),
                    r.residency,
                    r.max_rss_mib,
                    r.tokens_per_s,
                    r.wall_s
                );
            }
        }
    }
    Ok(())
}
