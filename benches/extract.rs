//! Activation-extraction benchmark, probegate against Hugging Face
//! transformers, side by side on the same machine and thread count.
//!
//!   cargo bench --bench extract                       # SmolLM2, 2 threads
//!   PROBEGATE_BENCH_MODEL=gemma3 cargo bench --bench extract
//!
//! Work: 64 prompts of exactly 32 tokens, batch 16; (a) every block,
//! (b) one mid-depth block. PROBEGATE_BENCH_PROMPTS / _TOKENS change the
//! shape (bench/scaling.sh sweeps them), PROBEGATE_BENCH_ROWS=all keeps only
//! the every-block row and PROBEGATE_BENCH_NATIVE=0 drops the quantized rows. The peer is bench/hf_extract.py run from the
//! pinned reference venv (scripts/reference/setup-venv.sh); without it the
//! peer column is skipped and says so.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use probegate::checkpoint::{Checkpoint, ModelRef};
use probegate::model::{Model, Pool, Precision};

const BATCH: usize = 16;
const REPEATS: usize = 3;

const SENTENCES: &[&str] = &[
    "The committee reviewed the quarterly budget and asked for a revised plan covering travel, hiring and the new office lease before the end of the month.",
    "To bake sourdough bread you need an active starter, strong flour, water and salt, plus a long cold fermentation that develops flavour overnight.",
    "Our support team can help you reset your password, update billing details, or transfer your subscription to another account within a few minutes.",
    "In 1969 the Apollo 11 mission landed two astronauts on the Moon while a third orbited above, and the whole world watched the grainy broadcast.",
    "Write a Python function that reads a CSV file, skips malformed rows, and returns the average of the third column as a floating point number.",
    "The hiking trail climbs steadily through pine forest for six kilometres before opening onto a ridge with views of the lake and the glacier beyond.",
    "Please summarise the attached contract, highlighting any clauses about termination, liability limits, and how disputes between the parties are resolved.",
    "Photosynthesis converts light energy into chemical energy, producing glucose and oxygen from carbon dioxide and water inside the chloroplasts of plant cells.",
];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

fn prompts(ck: &Checkpoint, n: usize, tokens: usize) -> Result<Vec<Vec<u32>>> {
    let mut out = Vec::new();
    let mut i = 0;
    while out.len() < n {
        // Vary the text so batches are not identical rows; add sentences
        // until the prompt is long enough.
        let mut text = format!("(#{i})");
        let mut k = 0;
        let ids = loop {
            text.push(' ');
            text.push_str(SENTENCES[(i * 3 + k) % SENTENCES.len()]);
            let ids = ck.tokenizer.encode(&text)?;
            if ids.len() >= tokens {
                break ids;
            }
            k += 1;
            anyhow::ensure!(k < 1000, "prompt too short");
        };
        out.push(ids[..tokens].to_vec());
        i += 1;
    }
    Ok(out)
}

fn time_probegate(
    ck: &Checkpoint,
    precision: Precision,
    layers: &[usize],
    ids: &[Vec<u32>],
) -> Result<f64> {
    let deepest = *layers.iter().max().context("no layers")?;
    let model = Model::load(ck, precision, deepest)?;
    let run = || -> Result<()> {
        for chunk in ids.chunks(BATCH) {
            model.forward_capture(chunk, layers, &[Pool::Last])?;
        }
        Ok(())
    };
    run()?; // warm-up
    let mut best = f64::MAX;
    for _ in 0..REPEATS {
        let t = Instant::now();
        run()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(ids.iter().map(Vec::len).sum::<usize>() as f64 / best)
}

fn time_transformers(
    model_path: &std::path::Path,
    shape: (usize, usize),
    threads: usize,
    layers: &str,
    mode: &str,
) -> Result<f64> {
    let venv = std::env::var("PYREF_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| probegate::checkpoint::cache_root().join("pyref"));
    let python = venv.join("bin").join("python");
    anyhow::ensure!(
        python.exists(),
        "no reference venv at {} (run scripts/reference/setup-venv.sh)",
        venv.display()
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/hf_extract.py");
    let out = Command::new(&python)
        .arg(&script)
        .args(["--model", &model_path.display().to_string()])
        .args(["--threads", &threads.to_string()])
        .args([
            "--prompts",
            &shape.0.to_string(),
            "--tokens",
            &shape.1.to_string(),
        ])
        .args([
            "--batch-size",
            &BATCH.to_string(),
            "--repeats",
            &REPEATS.to_string(),
        ])
        .args(["--layers", layers, "--mode", mode])
        // The peer runs where probegate runs: on the GPU when PROBEGATE_DEVICE names one.
        .args(["--device", &peer_device()])
        .env("OMP_NUM_THREADS", threads.to_string())
        .output()
        .context("running bench/hf_extract.py")?;
    anyhow::ensure!(
        out.status.success(),
        "hf_extract.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .context("no JSON line")?;
    let v: serde_json::Value = serde_json::from_str(line)?;
    v.get("tokens_per_s")
        .and_then(|x| x.as_f64())
        .context("no tokens_per_s")
}

/// torch's name for the device `PROBEGATE_DEVICE` names.
fn peer_device() -> String {
    match probegate::model::cuda_ordinal(
        &std::env::var(probegate::model::DEVICE_ENV).unwrap_or_default(),
    ) {
        Ok(Some(n)) => format!("cuda:{n}"),
        _ => "cpu".into(),
    }
}

fn main() -> Result<()> {
    // `cargo bench` passes --bench; under `cargo test` this target only smoke-builds.
    if !std::env::args().any(|a| a == "--bench") {
        println!("extract: benchmark skipped (run it with `cargo bench --bench extract`)");
        return Ok(());
    }
    let alias = std::env::var("PROBEGATE_BENCH_MODEL").unwrap_or_else(|_| "smollm2".into());
    let threads: usize = std::env::var("PROBEGATE_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let reference = ModelRef::parse(&alias)?;
    let ck = Checkpoint::open(&reference)?;
    let path = match &reference {
        ModelRef::Gguf { path } => path.clone(),
        _ => anyhow::bail!("the benchmark runs on a GGUF model"),
    };
    let (n_prompts, tokens) = (
        env_usize("PROBEGATE_BENCH_PROMPTS", 64),
        env_usize("PROBEGATE_BENCH_TOKENS", 32),
    );
    let only_all = std::env::var("PROBEGATE_BENCH_ROWS").is_ok_and(|v| v == "all");
    let precisions: &[Precision] =
        if std::env::var("PROBEGATE_BENCH_NATIVE").is_ok_and(|v| v == "0") {
            &[Precision::F32]
        } else {
            &[Precision::F32, Precision::Native]
        };
    let ids = prompts(&ck, n_prompts, tokens)?;
    let n = ck.config.num_layers;
    let mid = n / 2;
    let all: Vec<usize> = (0..n).collect();
    println!(
        "model {alias}: {n_prompts} prompts x {tokens} tokens, batch {BATCH}, {threads} threads, best of {REPEATS}"
    );
    println!(
        "{:<34} {:>14} {:>14} {:>8}",
        "work", "probegate tok/s", "transformers", "ratio"
    );
    for (label, layers, hf_layers, hf_mode) in [
        ("all blocks", all.clone(), "all".to_string(), "full"),
        (
            "one mid block (early stop)",
            vec![mid],
            mid.to_string(),
            "full",
        ),
        (
            "one mid block vs truncated HF",
            vec![mid],
            mid.to_string(),
            "truncated",
        ),
    ]
    .into_iter()
    .take(if only_all { 1 } else { 3 })
    {
        let hf = time_transformers(&path, (n_prompts, tokens), threads, &hf_layers, hf_mode);
        for &precision in precisions {
            let ours = time_probegate(&ck, precision, &layers, &ids)?;
            let (peer, ratio) = match &hf {
                Ok(p) => (format!("{p:.0}"), format!("{:.2}x", ours / p)),
                Err(e) => (format!("n/a ({e})"), "-".into()),
            };
            println!(
                "{:<34} {:>14.0} {:>14} {:>8}",
                format!("{label} [{precision}]"),
                ours,
                peer,
                ratio
            );
        }
    }
    Ok(())
}
