//! `probegate zoo …`: fine-tune one model, or build the zoo of update conditions.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::choice::choice;
use super::progress::progress;
use super::{emit_json, Format, Global};
use probegate::error::{Error, Result};
use probegate::lab::finetune::{Mode, Targets, TrainConfig};
use probegate::lab::zoo::{self, Built, Manifest, Recipe, RunSpec};

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
    let root = a
        .out
        .clone()
        .unwrap_or_else(|| probegate::checkpoint::cache_root().join("zoo"));
    let corpora: Vec<PathBuf> = a
        .corpora
        .split(',')
        .map(|s| PathBuf::from(s.trim()))
        .collect();
    let mut names = Vec::new();
    for c in &corpora {
        if !c.join("train.jsonl").is_file() || !c.join("heldout.jsonl").is_file() {
            return Err(Error::Usage(format!(
                "corpus {} needs train.jsonl and heldout.jsonl",
                c.display()
            )));
        }
        names.push(
            c.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_else(|| c.display().to_string()),
        );
    }
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let only: Vec<String> = a
        .only
        .as_deref()
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect())
        .unwrap_or_default();
    let mut budget = zoo::Budget::default();
    if let Some(s) = a.lora_steps {
        budget.lora_steps = s;
    }
    if let Some(s) = a.full_steps {
        budget.full_steps = s;
    }
    let mut manifests = Vec::new();
    for model in a.models.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let base_ck = probegate::checkpoint::Checkpoint::open_str(model)?;
        let base_ref = base_ck.spec.clone();
        let dir = root.join(model.replace(['/', '\\', ':', '(', ')', '+'], "_"));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let mpath = dir.join(zoo::MANIFEST);
        let fingerprint = base_ck.fingerprint()?;
        let mut manifest = if mpath.is_file() {
            let m = Manifest::load(&mpath)?;
            if m.base_fingerprint != fingerprint || m.seed != a.seed {
                return Err(Error::Usage(format!(
                    "{} was built from another base or seed; choose another --out or remove it",
                    mpath.display()
                )));
            }
            m
        } else {
            Manifest {
                format: 1,
                base: base_ref.clone(),
                base_fingerprint: fingerprint,
                seed: a.seed,
                budget: budget.clone(),
                conditions: Vec::new(),
            }
        };
        drop(base_ck);
        let grid = zoo::default_grid(&name_refs);
        // Each condition's seed is the base seed plus its index in the full
        // grid, so building a subset (--only) reproduces the same files.
        let todo: Vec<_> = grid
            .into_iter()
            .enumerate()
            .filter(|(_, c)| only.is_empty() || only.iter().any(|o| c.name.contains(o.as_str())))
            .collect();
        let total = todo.len();
        for (k, (i, cond)) in todo.iter().enumerate() {
            let done = manifest.conditions.iter().any(|b| b.name == cond.name);
            if done && !a.force {
                continue;
            }
            if !g.quiet {
                eprintln!("[{}/{total}] {model}: {}", k + 1, cond.name);
            }
            let out = dir.join(&cond.name);
            let seed = a.seed.wrapping_add(*i as u64);
            let (built, secs) = zoo::timed(|| {
                build_one(
                    g, &base_ref, cond, &out, &corpora, &names, &budget, seed, &manifest,
                )
            })?;
            let (reference, training) = built;
            manifest.conditions.retain(|b| b.name != cond.name);
            manifest.conditions.push(Built {
                name: cond.name.clone(),
                family: cond.family,
                recipe: cond.recipe.clone(),
                reference,
                seconds: secs,
                training,
            });
            manifest.save(&mpath)?;
        }
        manifests.push(manifest);
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

#[allow(clippy::too_many_arguments)]
fn build_one(
    g: &Global,
    base: &str,
    cond: &zoo::Condition,
    out: &std::path::Path,
    corpora: &[PathBuf],
    names: &[String],
    budget: &zoo::Budget,
    seed: u64,
    manifest: &Manifest,
) -> Result<(String, Option<probegate::lab::finetune::TrainReport>)> {
    let corpus_dir = |name: &str| -> Result<&PathBuf> {
        names
            .iter()
            .position(|n| n == name)
            .map(|i| &corpora[i])
            .ok_or_else(|| Error::Usage(format!("no corpus named {name}")))
    };
    let train = |mode: Mode, corpus: &str, quantized: bool, steps: usize, lr: f64| {
        let config = TrainConfig {
            mode: mode.clone(),
            steps,
            batch_size: budget.batch_size,
            seq_len: budget.seq_len,
            lr,
            weight_decay: 0.0,
            warmup_steps: (steps / 10).max(1),
            max_grad_norm: 1.0,
            seed,
            eval_windows: budget.eval_windows,
            eval_every: 10,
        };
        let pb = progress(g, steps as u64, "training");
        let r = zoo::run_training(
            &RunSpec {
                base,
                corpus_dir: corpus_dir(corpus)?,
                mode,
                quantized_base: quantized,
                config,
                out,
            },
            &mut |p| {
                pb.set_message(format!("loss {:.3}", p.train_loss));
                pb.inc(1);
            },
        );
        pb.finish_and_clear();
        r.map(|o| o.report)
    };
    let abs = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    match &cond.recipe {
        Recipe::Lora {
            r,
            targets,
            corpus,
            quantized_base,
        } => {
            let mode = Mode::Lora {
                r: *r,
                alpha: 2.0 * *r as f64,
                targets: *targets,
            };
            let rep = train(
                mode,
                corpus,
                *quantized_base,
                budget.lora_steps,
                budget.lora_lr,
            )?;
            let served = if *quantized_base {
                format!("nf4({base})+{}", abs(out).display())
            } else {
                format!("{base}+{}", abs(out).display())
            };
            Ok((served, Some(rep)))
        }
        Recipe::Full { corpus } => {
            let rep = train(Mode::Full, corpus, false, budget.full_steps, budget.full_lr)?;
            Ok((abs(out).display().to_string(), Some(rep)))
        }
        Recipe::Merge { of } => {
            let src = manifest
                .conditions
                .iter()
                .find(|b| &b.name == of)
                .ok_or_else(|| Error::Usage(format!("merge needs {of} built first")))?;
            let ck = probegate::checkpoint::Checkpoint::open_str(&src.reference)?;
            probegate::export::convert(&ck, out, probegate::export::OutDtype::F32, &mut || {})?;
            Ok((abs(out).display().to_string(), None))
        }
        Recipe::Bnb { scheme } => {
            let ck = probegate::checkpoint::Checkpoint::open_str(base)?;
            probegate::export::bnb::write_dir(&ck, scheme, out)?;
            Ok((abs(out).display().to_string(), None))
        }
        Recipe::Gguf { scheme } => {
            let ck = probegate::checkpoint::Checkpoint::open_str(&format!("{scheme}({base})"))?;
            let file = out.with_extension("gguf");
            probegate::export::gguf::write_gguf(&ck, &file)?;
            Ok((abs(&file).display().to_string(), None))
        }
    }
}
