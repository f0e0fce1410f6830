//! `probegate zoo …`: fine-tune one model, or build the zoo of update conditions.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::choice::choice;
use super::progress::progress;
use super::{emit_json, Format, Global};
use probegate::error::{Error, Result};
use probegate::lab::finetune::{Mode, Targets, TrainConfig};
use probegate::lab::zoo::{self, RunSpec};

#[derive(Subcommand, Debug)]
pub enum ZooCommand {
    /// Fine-tune a model on a corpus: a LoRA adapter (PEFT directory) or, without --rank, every weight (HF directory).
    #[command(after_help = "Examples:\n  \
        probegate zoo train --model smollm2 --corpus data/finetune/support --rank 8 --targets attn --out lora-support\n  \
        probegate zoo train --model 'nf4(smollm2)' --corpus data/finetune/chat --rank 8 --out qlora-chat\n  \
        probegate zoo train --model smollm2 --corpus data/finetune/chat --lr 3e-5 --out full-chat\n\n\
        The corpus directory holds train.jsonl and heldout.jsonl (a \"text\" field per line).\n\
        The output directory also gets training.json: the configuration, the loss curve\n\
        (train loss every step, held-out loss every --eval-every steps) and timings.")]
    Train(TrainArgs),
    /// Build the zoo: quantized, LoRA, merged, QLoRA and fully fine-tuned candidates of a base.
    #[command(after_help = "Examples:\n  \
        probegate zoo build                          # SmolLM2 and Gemma 3, full grid, into the cache\n  \
        probegate zoo build --models smollm2 --only lora-r8 --lora-steps 20\n  \
        probegate zoo build --format json            # the manifests on stdout\n\n\
        Each model's zoo is written to $PROBEGATE_CACHE/zoo/<model>/ with zoo.json, its manifest:\n\
        every condition's name, family, recipe, model reference, build time and loss curve.\n\
        Building is resumable: conditions already in the manifest are kept unless --force.")]
    Build(BuildArgs),
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[arg(long, help = super::MODEL_HELP)]
    pub model: String,
    /// Directory with train.jsonl and heldout.jsonl.
    #[arg(long)]
    pub corpus: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    /// LoRA rank; without it every weight is trained.
    #[arg(long)]
    pub rank: Option<usize>,
    /// LoRA alpha (default: 2 × rank).
    #[arg(long)]
    pub alpha: Option<f64>,
    #[arg(long, value_parser = choice::<Targets>(), default_value_t = Targets::Attn)]
    pub targets: Targets,
    #[arg(long, default_value_t = 40)]
    pub steps: usize,
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 64)]
    pub seq_len: usize,
    /// Peak learning rate (default: 1e-3 for LoRA, 3e-5 for full fine-tunes).
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 16)]
    pub eval_windows: usize,
    #[arg(long, default_value_t = 10)]
    pub eval_every: usize,
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Comma-separated base models.
    #[arg(long, default_value = "smollm2,gemma3")]
    pub models: String,
    /// Output root (default: $PROBEGATE_CACHE/zoo); each model gets a subdirectory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Fine-tuning corpora: directories with train.jsonl and heldout.jsonl.
    #[arg(long, default_value = "data/finetune/chat,data/finetune/support")]
    pub corpora: String,
    /// Build only conditions whose name contains one of these (comma-separated).
    #[arg(long)]
    pub only: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub lora_steps: Option<usize>,
    #[arg(long)]
    pub full_steps: Option<usize>,
    /// Rebuild conditions already in the manifest.
    #[arg(long)]
    pub force: bool,
}

pub fn run_zoo(g: &Global, c: &ZooCommand) -> Result<i32> {
    match c {
        ZooCommand::Train(a) => cmd_train(g, a),
        ZooCommand::Build(a) => cmd_build(g, a),
    }
}

fn mode_for(rank: Option<usize>, alpha: Option<f64>, targets: Targets) -> Mode {
    match rank {
        Some(r) => Mode::Lora {
            r,
            alpha: alpha.unwrap_or(2.0 * r as f64),
            targets,
        },
        None => Mode::Full,
    }
}

fn cmd_train(g: &Global, a: &TrainArgs) -> Result<i32> {
    if a.rank == Some(0) || a.steps == 0 || a.batch_size == 0 || a.seq_len < 2 {
        return Err(Error::Usage(
            "--rank, --steps and --batch-size must be positive and --seq-len at least 2".into(),
        ));
    }
    let mode = mode_for(a.rank, a.alpha, a.targets);
    let lr = a.lr.unwrap_or(match mode {
        Mode::Lora { .. } => 1e-3,
        Mode::Full => 3e-5,
    });
    // `nf4(B)` as the model trains a QLoRA adapter against the rounded base.
    let spec = probegate::checkpoint::ModelSpec::parse(&a.model)?;
    let quantized = spec.whatif.is_some();
    let config = TrainConfig {
        mode: mode.clone(),
        steps: a.steps,
        batch_size: a.batch_size,
        seq_len: a.seq_len,
        lr,
        weight_decay: 0.0,
        warmup_steps: (a.steps / 10).max(1),
        max_grad_norm: 1.0,
        seed: a.seed,
        eval_windows: a.eval_windows,
        eval_every: a.eval_every,
    };
    let pb = progress(g, a.steps as u64, "training");
    let base_for_run = if quantized {
        spec.base.clone()
    } else {
        a.model.clone()
    };
    if quantized && spec.whatif != Some(probegate::checkpoint::whatif::WhatIf::Nf4) {
        return Err(Error::Usage(
            "training against a quantized base supports nf4(BASE) (QLoRA) only".into(),
        ));
    }
    let report = zoo::run_training(
        &RunSpec {
            base: &base_for_run,
            corpus_dir: &a.corpus,
            mode,
            quantized_base: quantized,
            config,
            out: &a.out,
        },
        &mut |p| {
            pb.set_message(format!("loss {:.3}", p.train_loss));
            pb.inc(1);
        },
    )?
    .report;
    pb.finish_and_clear();
    let mut out = std::io::stdout().lock();
    match g.format {
        Format::Json => return emit_json(&report).map(|_| super::EXIT_OK),
        Format::Human => writeln!(
            out,
            "{}: held-out loss {:.4} -> {:.4} after {} steps ({:.2} s/step, {} trainable parameters); wrote {}",
            a.model,
            report.heldout_loss_before,
            report.heldout_loss_after,
            report.config.steps,
            report.seconds_per_step,
            report.trainable_params,
            a.out.display()
        ),
    }
    .map_err(|e| Error::io("<stdout>", e))?;
    Ok(super::EXIT_OK)
}

fn cmd_build(g: &Global, a: &BuildArgs) -> Result<i32> {
    let mut budget = zoo::Budget::default();
    if let Some(s) = a.lora_steps {
        budget.lora_steps = s;
    }
    if let Some(s) = a.full_steps {
        budget.full_steps = s;
    }
    let req = zoo::BuildRequest {
        models: a
            .models
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(String::from)
            .collect(),
        corpora: a
            .corpora
            .split(',')
            .map(|s| PathBuf::from(s.trim()))
            .collect(),
        root: a
            .out
            .clone()
            .unwrap_or_else(|| probegate::checkpoint::cache_root().join("zoo")),
        only: a
            .only
            .as_deref()
            .map(|s| s.split(',').map(|x| x.trim().to_string()).collect())
            .unwrap_or_default(),
        budget,
        seed: a.seed,
        force: a.force,
    };
    let mut pb: Option<indicatif::ProgressBar> = None;
    let manifests = zoo::build(&req, &mut |ev| match ev {
        zoo::BuildEvent::Condition {
            model,
            index,
            total,
            name,
        } => {
            if let Some(p) = pb.take() {
                p.finish_and_clear();
            }
            if !g.quiet {
                eprintln!("[{}/{total}] {model}: {name}", index + 1);
            }
        }
        zoo::BuildEvent::Step { point, steps } => {
            let p = pb.get_or_insert_with(|| progress(g, steps as u64, "training"));
            p.set_message(format!("loss {:.3}", point.train_loss));
            p.inc(1);
        }
    })?;
    if let Some(p) = pb.take() {
        p.finish_and_clear();
    }
    let mut out = std::io::stdout().lock();
    match g.format {
        Format::Json => return emit_json(&manifests).map(|_| super::EXIT_OK),
        Format::Human => {
            for m in &manifests {
                writeln!(out, "{} ({} conditions)", m.base, m.conditions.len())
                    .map_err(|e| Error::io("<stdout>", e))?;
                for b in &m.conditions {
                    let loss = b
                        .training
                        .as_ref()
                        .map(|t| {
                            format!(
                                "  held-out loss {:.3} -> {:.3}",
                                t.heldout_loss_before, t.heldout_loss_after
                            )
                        })
                        .unwrap_or_default();
                    writeln!(
                        out,
                        "  {:<28} {:<15} {:>7.1} s{loss}",
                        b.name,
                        format!("{:?}", b.family),
                        b.seconds
                    )
                    .map_err(|e| Error::io("<stdout>", e))?;
                }
            }
            Ok(())
        }
    }
    .map_err(|e| Error::io("<stdout>", e))?;
    Ok(super::EXIT_OK)
}
