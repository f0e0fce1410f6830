//! The model tools beside the gate: `activations`, `convert`, `inspect`,
//! `diff` and `features`, each one library call and its printing.

use std::path::PathBuf;

use clap::Args;

use super::choice::choice;
use super::progress::progress;
use super::{emit_json, parse_layers, Format, Global, EXIT_OK, MODEL_HELP};
use probegate::activations::{self, ExtractOptions};
use probegate::checkpoint::Checkpoint;
use probegate::error::{Error, Result};
use probegate::export::{self, OutDtype};
use probegate::model::{Model, Pool, Precision, Residency};

#[derive(Args, Debug)]
pub struct ActivationsArgs {
    #[arg(long, help = MODEL_HELP)]
    pub model: String,
    /// Comma-separated block indices, 0-based (`all` for every block).
    #[arg(long)]
    pub layers: String,
    #[arg(long, value_parser = choice::<Pool>(), default_value_t = Pool::Last)]
    pub pool: Pool,
    /// JSONL prompts with a "text" field.
    #[arg(long)]
    pub input: PathBuf,
    /// Output safetensors file.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_parser = choice::<Precision>(), default_value_t = Precision::F32)]
    pub precision: Precision,
    #[arg(long, default_value_t = probegate::util::DEFAULT_BATCH_SIZE)]
    pub batch_size: usize,
    /// Prompts longer than this many tokens are truncated (recorded in the metadata).
    #[arg(long, default_value_t = 2048)]
    pub max_tokens: usize,
    /// Where expanded weights live; the same values as PROBEGATE_WEIGHTS, which
    /// every other command reads (default auto). Results do not depend on it.
    #[arg(long, value_parser = choice::<Residency>())]
    pub weights: Option<Residency>,
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    #[arg(long, help = MODEL_HELP)]
    pub model: String,
    /// Output directory (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_parser = choice::<OutDtype>(), default_value_t = OutDtype::F32)]
    pub dtype: OutDtype,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The base model reference.
    pub base: String,
    /// The candidate model reference (any form, adapters and what-if quantizations included).
    pub candidate: String,
    /// Also list every tensor in the human table.
    #[arg(long)]
    pub tensors: bool,
}

#[derive(Args, Debug)]
pub struct FeaturesArgs {
    #[arg(long, help = MODEL_HELP)]
    pub base: String,
    #[arg(long, help = MODEL_HELP)]
    pub candidate: String,
    /// A monitor directory or a suite of them.
    #[arg(long)]
    pub monitors: PathBuf,
    /// Unlabeled JSONL prompts (default: the shipped realignment corpus).
    #[arg(long, default_value = probegate::assets::DEFAULT_CORPUS)]
    pub corpus: PathBuf,
    /// Use the first N prompts of the corpus.
    #[arg(long, default_value_t = 256)]
    pub limit: usize,
    #[arg(long)]
    pub allow_base_mismatch: bool,
    /// Labeled data, <DATA>/<concept>/train.jsonl, whose texts (labels unread) give the
    /// concept features (default: the suite's own data/, then the data built into
    /// probegate; without either, those features are left out).
    #[arg(long)]
    pub data: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[arg(long, help = MODEL_HELP)]
    pub model: String,
    /// Also list every tensor.
    #[arg(long)]
    pub tensors: bool,
}

pub fn cmd_activations(g: &Global, a: &ActivationsArgs) -> Result<i32> {
    let ck = Checkpoint::open_str(&a.model)?;
    let layers = parse_layers(&a.layers, ck.config.num_layers)?;
    let texts = probegate::util::read_prompts(&a.input)?;
    if a.batch_size == 0 {
        return Err(Error::Usage("--batch-size must be at least 1".into()));
    }
    let deepest = layers.iter().copied().max().unwrap_or(0);
    let residency = match a.weights {
        Some(r) => r,
        None => Residency::from_env()?,
    };
    let model = Model::load_with(&ck, a.precision, deepest, residency)?;
    let opts = ExtractOptions {
        layers,
        pools: vec![a.pool],
        precision: a.precision,
        batch_size: a.batch_size,
        max_tokens: a.max_tokens,
    };
    let pb = progress(g, texts.len() as u64, "prompts");
    let start = std::time::Instant::now();
    let acts = activations::extract(&ck, &model, &texts, &opts, &mut |n| pb.inc(n as u64))?;
    pb.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let act = acts
        .into_iter()
        .next()
        .ok_or_else(|| Error::Usage("no activations produced".into()))?;
    act.save(&a.out)?;
    let tokens: usize = act.token_counts.iter().sum();
    let summary = serde_json::json!({
        "out": a.out.display().to_string(),
        "model": act.model_ref,
        "model_fingerprint": act.model_fingerprint,
        "layers": act.layers,
        "pool": act.pool,
        "precision": act.precision,
        "weights": model.residency(),
        "device": probegate::model::device_name(model.device()),
        "prompts": act.token_counts.len(),
        "tokens": tokens,
        "truncated_prompts": act.truncated,
        "seconds": secs,
        "tokens_per_second": tokens as f64 / secs.max(1e-9),
    });
    match g.format {
        Format::Json => emit_json(&summary)?,
        Format::Human if !g.quiet => eprintln!(
            "wrote {} ({} prompts, {} tokens, {} layer(s), {:.1} tokens/s)",
            a.out.display(),
            act.token_counts.len(),
            tokens,
            act.layers.len(),
            tokens as f64 / secs.max(1e-9)
        ),
        Format::Human => {}
    }
    Ok(EXIT_OK)
}

pub fn cmd_convert(g: &Global, a: &ConvertArgs) -> Result<i32> {
    let ck = Checkpoint::open_str(&a.model)?;
    let pb = progress(g, ck.tensors().len() as u64, "tensors");
    let summary = export::convert(&ck, &a.out, a.dtype, &mut || pb.inc(1))?;
    pb.finish_and_clear();
    match g.format {
        Format::Json => emit_json(&summary)?,
        Format::Human if !g.quiet => eprintln!(
            "wrote {} ({} tensors, {} q/k un-permuted, {} norms unbaked, {} MB)",
            summary.out_dir,
            summary.tensors,
            summary.unpermuted_qk,
            summary.unbaked_norms,
            summary.bytes / 1_000_000
        ),
        Format::Human => {}
    }
    Ok(EXIT_OK)
}

pub fn cmd_inspect(g: &Global, a: &InspectArgs) -> Result<i32> {
    let ck = Checkpoint::open_str(&a.model)?;
    let tensors = ck.tensors();
    let fp = ck.fingerprint()?;
    let v = serde_json::json!({
        "model": ck.spec.clone(),
        "format": ck.format,
        "fingerprint": fp,
        "config": ck.config,
        "layout": ck.layout,
        "tokenizer": ck.tokenizer.special,
        "tensor_count": tensors.len(),
        "tensors": if a.tensors { serde_json::to_value(&tensors).unwrap_or_default() } else { serde_json::Value::Null },
    });
    match g.format {
        Format::Json => emit_json(&v)?,
        Format::Human => {
            let c = &ck.config;
            println!("model        {}", ck.reference);
            println!("fingerprint  {fp}");
            println!("architecture {} ({:?})", c.model_type, c.arch);
            println!(
                "shape        {} blocks, d_model {}, {} heads ({} kv) x {}, ffn {}, vocab {}",
                c.num_layers,
                c.hidden_size,
                c.num_heads,
                c.num_kv_heads,
                c.head_dim,
                c.intermediate_size,
                c.vocab_size
            );
            println!("tensors      {}", tensors.len());
            if a.tensors {
                for t in &tensors {
                    println!("  {:<55} {:<6} {:?}", t.name, t.dtype, t.shape);
                }
            }
        }
    }
    Ok(EXIT_OK)
}

pub fn cmd_diff(g: &Global, a: &DiffArgs) -> Result<i32> {
    let base = Checkpoint::open_str(&a.base)?;
    let cand = Checkpoint::open_str(&a.candidate)?;
    let pb = progress(g, base.tensors().len() as u64, "tensors");
    let report = probegate::gate::diff::diff(&base, &cand, &mut || pb.inc(1))?;
    pb.finish_and_clear();
    match g.format {
        Format::Json => emit_json(&report)?,
        Format::Human => {
            println!("base       {}", report.base);
            println!("candidate  {}", report.candidate);
            println!("family     {:?}", report.family);
            for e in &report.evidence {
                println!("           {e}");
            }
            println!("\n{:<10} {:>12}", "kind", "‖ΔW‖/‖W‖");
            for (k, v) in &report.kinds {
                println!("{k:<10} {v:>12.5}");
            }
            println!("\n{:<6} {:>12} {:>8}", "block", "‖ΔW‖/‖W‖", "changed");
            for b in &report.blocks {
                println!(
                    "{:<6} {:>12.5} {:>8}",
                    b.block, b.rel_change, b.changed_tensors
                );
            }
            if a.tensors {
                println!(
                    "\n{:<52} {:>10} {:>9} {:>8}",
                    "tensor", "‖ΔW‖/‖W‖", "cosine", "s.rank"
                );
                for t in &report.tensors {
                    println!(
                        "{:<52} {:>10.5} {:>9.6} {:>8.1}",
                        t.name, t.rel_change, t.cosine, t.stable_rank
                    );
                }
            }
        }
    }
    Ok(EXIT_OK)
}

pub fn cmd_features(g: &Global, a: &FeaturesArgs) -> Result<i32> {
    let check = if a.allow_base_mismatch {
        probegate::monitor::BaseCheck::AllowMismatch
    } else {
        probegate::monitor::BaseCheck::Require
    };
    let pb = progress(g, 1, "features");
    let data = probegate::gate::revalidate::DataSource::named(a.data.clone());
    let probegate::gate::FeaturesOnly {
        diff: report,
        corpus_prompts: n_prompts,
        features: mut out,
        note,
    } = probegate::gate::features_only(
        (&a.base, &a.candidate, &a.monitors),
        Some(&data),
        // `features` shows every feature, the corpus's included.
        (
            probegate::gate::Corpus {
                path: &a.corpus,
                max_prompts: a.limit,
            },
            true,
        ),
        check,
        &mut |stage, done, total| {
            pb.set_message(stage.to_string());
            pb.set_length(total as u64);
            pb.set_position(done as u64);
        },
    )?;
    pb.finish_and_clear();
    if let Some(n) = note {
        eprintln!("note: {n}");
    }
    out.sort_by(|x, y| x.monitor.cmp(&y.monitor));
    match g.format {
        Format::Json => emit_json(
            &serde_json::json!({"base": report.base, "candidate": report.candidate, "family": report.family, "corpus_prompts": n_prompts, "monitors": out}),
        )?,
        Format::Human => {
            println!(
                "{} -> {} ({:?}), {} corpus prompts",
                report.base, report.candidate, report.family, n_prompts
            );
            println!(
                "{:<26} {:>6} {:>9} {:>8} {:>8} {:>6} {:>6}",
                "monitor", "depth", "Δbelow", "act cos", "shift σ", "KS", "flips"
            );
            // Always run here (above); a missing value would be a bug, shown as such.
            let v = |x: Option<f64>, show: fn(f64) -> String| x.map_or("-".into(), show);
            for f in &out {
                println!(
                    "{:<26} {:>6.2} {:>9.5} {:>8} {:>8} {:>6} {:>6}",
                    f.monitor,
                    f.depth_fraction,
                    f.change_below,
                    v(f.act_cosine, |x| format!("{x:.5}")),
                    v(f.projected_shift, |x| format!("{x:+.3}")),
                    v(f.score_ks, |x| format!("{x:.3}")),
                    v(f.flip_rate, |x| format!("{x:.3}"))
                );
            }
        }
    }
    Ok(EXIT_OK)
}
