//! `probegate monitor train|eval` and `probegate cache info|clear`.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::choice::choice;
use super::progress::{progress, stage_progress};
use super::{emit_json, parse_layers, Format, Global, EXIT_OK, MODEL_HELP};
use probegate::activations::cache::{ActCache, ActSpec};
use probegate::checkpoint::Checkpoint;
use probegate::error::{Error, Result};
use probegate::model::{Pool, Precision};
use probegate::monitor::build::{self, Draft};
use probegate::monitor::eval::{evaluate_suite, EvalOptions, EvalResult};
use probegate::monitor::metrics::ThresholdRule;
use probegate::monitor::train::TrainOptions;
use probegate::monitor::{self as mon, data, BaseCheck, Monitor};

#[derive(Subcommand, Debug)]
pub enum MonitorCommand {
    /// Train a logistic-regression monitor on a model's activations.
    #[command(after_help = "Examples:\n  \
        probegate monitor train --model smollm2 --data data/suite/privacy_pii/train.jsonl \\\n    \
          --test data/suite/privacy_pii/test.jsonl --layer 15 --out monitors/pii-l15\n  \
        probegate monitor train --model smollm2 --data train.jsonl --layers 7,15,22 --pick-best --out best/\n\n\
        Data: JSONL with \"text\" and \"label\" (0/1, or names mapped with --labels NEG,POS).\n\
        Regularisation is chosen by 5-fold cross-validation; the threshold on a 20% validation split.")]
    Train(TrainArgs),
    /// Evaluate monitors on labeled data through a model.
    #[command(
        after_help = "Example:\n  probegate monitor eval --model smollm2 --monitor monitors/smollm2 \\\n    \
        --data data/suite/privacy_pii/test.jsonl --format json"
    )]
    Eval(EvalArgs),
    /// Import a repeng control vector (GGUF) as a monitor, calibrated on labeled data.
    #[command(
        after_help = "Example:\n  probegate monitor import-repeng --vector honesty.gguf --layer 15 --model smollm2 \\\n    \
        --data calib.jsonl --test test.jsonl --out monitors/honesty-l15\n\n\
        direction.L in the file is read as the residual stream after block L (0-based)."
    )]
    ImportRepeng(ImportArgs),
}

/// What a monitor is fitted on and what it is called: `train` fits a probe
/// on the labeled data, `import-repeng` calibrates an imported direction.
#[derive(Args, Debug)]
pub struct FitArgs {
    #[arg(long, help = MODEL_HELP)]
    pub model: String,
    /// Labeled JSONL (text, label) to train or calibrate on.
    #[arg(long)]
    pub data: PathBuf,
    /// Held-out labeled JSONL for the base metrics stored in the monitor.
    #[arg(long)]
    pub test: Option<PathBuf>,
    /// Names of label 0 and label 1; also maps string labels in the data.
    #[arg(long, default_value = "negative,positive")]
    pub labels: String,
    #[arg(long, value_parser = choice::<Pool>(), default_value_t = Pool::Last)]
    pub pool: Pool,
    /// Choose the threshold for this validation false-positive rate instead of max balanced accuracy.
    #[arg(long)]
    pub target_fpr: Option<f64>,
    /// Output directory (`train` with several layers: one subdirectory per monitor).
    #[arg(long)]
    pub out: PathBuf,
    /// Monitor name (default: the data file's parent directory name, or the vector file's stem).
    #[arg(long)]
    pub name: Option<String>,
    /// Concept tag, e.g. privacy_pii (default: the name).
    #[arg(long)]
    pub concept: Option<String>,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// repeng / llama.cpp control-vector GGUF.
    #[arg(long)]
    pub vector: PathBuf,
    /// Which direction to use (default: the only one in the file).
    #[arg(long)]
    pub layer: Option<usize>,
    #[command(flatten)]
    pub set: FitArgs,
}

#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// Where the activation cache is and how big.
    Info,
    /// Remove cached activations: all of them, or one model's.
    Clear {
        /// Only the entries computed through this model (any model reference).
        #[arg(long)]
        model: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub set: FitArgs,
    /// One block to train at.
    #[arg(long, conflicts_with = "layers")]
    pub layer: Option<usize>,
    /// Several blocks (comma-separated or `all`): one monitor per block, or the best with --pick-best.
    #[arg(long)]
    pub layers: Option<String>,
    /// With --layers: keep only the block with the best validation AUROC.
    #[arg(long)]
    pub pick_best: bool,
    #[arg(long, default_value = "")]
    pub description: String,
    #[arg(long, default_value_t = probegate::util::DEFAULT_SEED)]
    pub seed: u64,
    #[arg(long, value_parser = choice::<Precision>(), default_value_t = Precision::F32)]
    pub precision: Precision,
    #[arg(long, default_value_t = probegate::util::DEFAULT_BATCH_SIZE)]
    pub batch_size: usize,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[arg(long, help = MODEL_HELP)]
    pub model: String,
    /// A monitor directory, or a suite directory holding several.
    #[arg(long)]
    pub monitor: PathBuf,
    /// Labeled JSONL to evaluate on.
    #[arg(long)]
    pub data: PathBuf,
    /// Use monitors trained on a different base (fingerprint mismatch).
    #[arg(long)]
    pub allow_base_mismatch: bool,
    /// Map string labels: NEGATIVE,POSITIVE.
    #[arg(long)]
    pub labels: Option<String>,
    #[arg(long, value_parser = choice::<Precision>(), default_value_t = Precision::F32)]
    pub precision: Precision,
    #[arg(long, default_value_t = probegate::util::DEFAULT_BATCH_SIZE)]
    pub batch_size: usize,
}

fn label_pair(s: &str) -> Result<(String, String)> {
    match s.split_once(',') {
        Some((a, b)) if !a.trim().is_empty() && !b.trim().is_empty() && a.trim() != b.trim() => {
            Ok((a.trim().to_string(), b.trim().to_string()))
        }
        _ => Err(Error::Usage(format!(
            "--labels: expected NEGATIVE,POSITIVE, found `{s}`"
        ))),
    }
}

/// The set a monitor is fitted on and its optional held-out test set, both
/// with string labels mapped to `names` (train and import read them alike).
fn labeled_sets(
    data: &Path,
    test: Option<&Path>,
    names: (&str, &str),
) -> Result<(data::Labeled, Option<data::Labeled>)> {
    let fit = data::read_labeled(data, Some(names))?;
    let test = test
        .map(|p| data::read_labeled(p, Some(names)))
        .transpose()?;
    Ok((fit, test))
}

/// `--target-fpr` when given, else the maximum balanced accuracy.
fn threshold_rule(target_fpr: Option<f64>) -> ThresholdRule {
    match target_fpr {
        Some(fpr) => ThresholdRule::TargetFpr { fpr },
        None => ThresholdRule::MaxBalancedAccuracy,
    }
}

pub fn run_monitor(g: &Global, cmd: &MonitorCommand) -> Result<i32> {
    match cmd {
        MonitorCommand::Train(a) => cmd_train(g, a),
        MonitorCommand::Eval(a) => cmd_eval(g, a),
        MonitorCommand::ImportRepeng(a) => cmd_import(g, a),
    }
}

/// A cache that could not be written only costs the next run time: said
/// once on stderr, never an error.
fn warn_unwritten(g: &Global, cache: &ActCache) {
    if let (Some(e), false) = (cache.write_error(), g.quiet) {
        eprintln!(
            "warning: the activation cache could not be written ({e}); the next run computes \
             these activations again"
        );
    }
}

pub fn run_cache(g: &Global, cmd: &CacheCommand) -> Result<i32> {
    let cache = ActCache::from_env();
    match cmd {
        CacheCommand::Info => {
            let info = cache.info();
            match g.format {
                Format::Json => emit_json(&info)?,
                Format::Human => println!(
                    "{}: {} entries, {:.1} MB (limit {:.1} MB)",
                    info.path,
                    info.entries,
                    info.bytes as f64 / 1e6,
                    info.max_bytes as f64 / 1e6
                ),
            }
        }
        CacheCommand::Clear { model } => {
            let n = match model {
                Some(r) => cache.clear_model(&Checkpoint::open_str(r)?.fingerprint()?)?,
                None => cache.clear()?,
            };
            match g.format {
                Format::Json => emit_json(&serde_json::json!({"removed": n}))?,
                Format::Human if !g.quiet => eprintln!("removed {n} cached activation files"),
                Format::Human => {}
            }
        }
    }
    Ok(EXIT_OK)
}

fn cmd_train(g: &Global, a: &TrainArgs) -> Result<i32> {
    let (neg, pos) = label_pair(&a.set.labels)?;
    if a.batch_size == 0 {
        return Err(Error::Usage("--batch-size must be at least 1".into()));
    }
    let (train_data, test_data) = labeled_sets(&a.set.data, a.set.test.as_deref(), (&neg, &pos))?;
    if let Some(t) = a.set.target_fpr {
        if !(0.0..1.0).contains(&t) {
            return Err(Error::Usage(format!(
                "--target-fpr must be in [0, 1), found {t}"
            )));
        }
    }
    let ck = Checkpoint::open_str(&a.set.model)?;
    let layers = match (&a.layer, &a.layers) {
        (Some(l), _) => parse_layers(&l.to_string(), ck.config.num_layers)?,
        (None, Some(s)) => parse_layers(s, ck.config.num_layers)?,
        (None, None) => return Err(Error::Usage("give --layer L or --layers L1,L2,...".into())),
    };
    let name = a.set.name.clone().unwrap_or_else(|| {
        a.set
            .data
            .parent()
            .and_then(|p| p.file_name())
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| "monitor".into())
    });
    let concept = a.set.concept.clone().unwrap_or_else(|| name.clone());
    let draft = Draft {
        name,
        concept,
        description: a.description.clone(),
        labels: (neg, pos),
        base: build::base_model(&ck, &a.set.model)?,
        pooling: a.set.pool,
        seed: a.seed,
    };
    let opts = TrainOptions {
        seed: a.seed,
        threshold_rule: threshold_rule(a.set.target_fpr),
        ..TrainOptions::default()
    };
    let spec = ActSpec {
        pool: a.set.pool,
        precision: a.precision,
        batch_size: a.batch_size,
    };
    let cache = ActCache::from_env();
    let mut prog = stage_progress(g);
    let trained = build::train_layers(
        &ck,
        &cache,
        &draft,
        &layers,
        layers.len() > 1 && !a.pick_best,
        spec,
        &opts,
        &train_data,
        test_data.as_ref(),
        &mut prog,
    )?;
    drop(prog);
    warn_unwritten(g, &cache);
    let results: Vec<(usize, f64, Monitor)> = trained
        .into_iter()
        .map(|t| (t.layer, t.validation_auroc, t.monitor))
        .collect();

    let mut written = Vec::new();
    if a.pick_best || results.len() == 1 {
        let best = results
            .iter()
            .max_by(|x, y| x.1.total_cmp(&y.1))
            .ok_or_else(|| Error::Usage("no layers trained".into()))?;
        best.2.save(&a.set.out)?;
        written.push((a.set.out.clone(), best));
    } else {
        for r in &results {
            let dir = a.set.out.join(&r.2.meta.name);
            r.2.save(&dir)?;
            written.push((dir, r));
        }
    }
    let summary: Vec<serde_json::Value> = results
        .iter()
        .map(|(layer, val, m)| {
            serde_json::json!({
                "name": m.meta.name, "layer": layer, "validation_auroc": val,
                "test_auroc": m.meta.base_metrics.auroc, "test_auroc_ci95": m.meta.base_metrics.auroc_ci95,
                "balanced_accuracy": m.meta.base_metrics.balanced_accuracy,
                "written": written.iter().any(|(_, r)| r.0 == *layer),
            })
        })
        .collect();
    match g.format {
        Format::Json => emit_json(
            &serde_json::json!({"monitors": summary, "out": a.set.out.display().to_string()}),
        )?,
        Format::Human if !g.quiet => {
            for (layer, val, m) in &results {
                eprintln!(
                    "{:<28} layer {:>2}  validation AUROC {:.3}  {} AUROC {:.3} [{:.3}, {:.3}]  bal.acc {:.3}",
                    m.meta.name,
                    layer,
                    val,
                    m.meta.base_metrics.split,
                    m.meta.base_metrics.auroc,
                    m.meta.base_metrics.auroc_ci95[0],
                    m.meta.base_metrics.auroc_ci95[1],
                    m.meta.base_metrics.balanced_accuracy
                );
            }
            for (dir, _) in &written {
                eprintln!("wrote {}", dir.display());
            }
            weak_warning(written.iter().map(|(_, r)| &r.2));
        }
        Format::Human => {}
    }
    Ok(EXIT_OK)
}

fn cmd_eval(g: &Global, a: &EvalArgs) -> Result<i32> {
    let names = a.labels.as_deref().map(label_pair).transpose()?;
    let monitors = mon::load_suite(&a.monitor)?;
    let names_ref = names.as_ref().map(|(n, p)| (n.as_str(), p.as_str()));
    let d = data::read_labeled(&a.data, names_ref)?;
    let ck = Checkpoint::open_str(&a.model)?;
    let check = if a.allow_base_mismatch {
        BaseCheck::AllowMismatch
    } else {
        BaseCheck::Require
    };
    mon::check_suite_base(&monitors, &mon::BaseFacts::of(&ck)?, check)?;
    let cache = ActCache::from_env();
    let pb = progress(g, d.texts.len() as u64, "eval acts");
    let mut results: Vec<EvalResult> = evaluate_suite(
        &ck,
        &cache,
        &monitors,
        &d,
        EvalOptions {
            precision: a.precision,
            batch_size: a.batch_size,
            seed: probegate::util::DEFAULT_SEED,
        },
        &mut |n| pb.inc(n as u64),
    )?
    .into_iter()
    .map(|e| e.eval)
    .collect();
    pb.finish_and_clear();
    warn_unwritten(g, &cache);
    results.sort_by(|x, y| x.monitor.cmp(&y.monitor));
    match g.format {
        Format::Json => emit_json(
            &serde_json::json!({"model": ck.spec.clone(), "data": a.data.display().to_string(), "results": results}),
        )?,
        Format::Human => {
            println!(
                "{:<28} {:>5} {:>7} {:>17} {:>8} {:>6} {:>6} {:>8}",
                "monitor", "layer", "AUROC", "95% CI", "bal.acc", "TPR", "FPR", "ΔAUROC"
            );
            for r in &results {
                println!(
                    "{:<28} {:>5} {:>7.3} [{:>6.3}, {:>6.3}] {:>8.3} {:>6.3} {:>6.3} {:>+8.3}",
                    r.monitor,
                    r.layer,
                    r.auroc,
                    r.auroc_ci95[0],
                    r.auroc_ci95[1],
                    r.balanced_accuracy,
                    r.tpr,
                    r.fpr,
                    r.delta_auroc
                );
            }
        }
    }
    Ok(EXIT_OK)
}

fn cmd_import(g: &Global, a: &ImportArgs) -> Result<i32> {
    use probegate::monitor::import::read_control_vector;
    let (neg, pos) = label_pair(&a.set.labels)?;
    let cv = read_control_vector(&a.vector)?;
    let (layer, dir) = match a.layer {
        Some(l) => cv
            .directions
            .iter()
            .find(|d| d.0 == l)
            .cloned()
            .ok_or_else(|| Error::tensor(&a.vector, format!("direction.{l}"), "not in the file"))?,
        None if cv.directions.len() == 1 => cv.directions[0].clone(),
        None => {
            let have: Vec<String> = cv.directions.iter().map(|d| d.0.to_string()).collect();
            return Err(Error::Usage(format!(
                "{} has directions for layers {}; pick one with --layer",
                a.vector.display(),
                have.join(",")
            )));
        }
    };
    let (calib, test) = labeled_sets(&a.set.data, a.set.test.as_deref(), (&neg, &pos))?;
    let ck = Checkpoint::open_str(&a.set.model)?;
    if layer >= ck.config.num_layers || dir.len() != ck.config.hidden_size {
        return Err(Error::tensor(
            &a.vector,
            format!("direction.{layer}"),
            format!(
                "width {} at layer {layer} does not fit {} ({} blocks of width {})",
                dir.len(),
                ck.reference,
                ck.config.num_layers,
                ck.config.hidden_size
            ),
        ));
    }
    let rule = threshold_rule(a.set.target_fpr);
    let name = a.set.name.clone().unwrap_or_else(|| {
        a.vector
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| "repeng".into())
    });
    let draft = Draft {
        concept: a.set.concept.clone().unwrap_or_else(|| name.clone()),
        name,
        description: format!(
            "repeng control vector {} (model hint {}), calibrated on {}",
            a.vector.display(),
            cv.model_hint.as_deref().unwrap_or("none"),
            a.set.data.display()
        ),
        labels: (neg, pos),
        base: build::base_model(&ck, &a.set.model)?,
        pooling: a.set.pool,
        seed: probegate::util::DEFAULT_SEED,
    };
    let cache = ActCache::from_env();
    let cal = build::import_direction(
        &ck,
        &cache,
        &draft,
        layer,
        &dir,
        rule,
        &calib,
        test.as_ref(),
    )?;
    warn_unwritten(g, &cache);
    let m = cal.monitor;
    m.save(&a.set.out)?;
    let summary = serde_json::json!({
        "out": a.set.out.display().to_string(), "layer": layer, "flipped": cal.flipped,
        "auroc": m.meta.base_metrics.auroc, "split": m.meta.base_metrics.split,
        "threshold": m.meta.classifier.threshold,
    });
    match g.format {
        Format::Json => emit_json(&summary)?,
        Format::Human if !g.quiet => eprintln!(
            "wrote {} (layer {layer}, {} AUROC {:.3}{})",
            a.set.out.display(),
            m.meta.base_metrics.split,
            m.meta.base_metrics.auroc,
            if cal.flipped {
                ", direction flipped"
            } else {
                ""
            }
        ),
        Format::Human => {}
    }
    Ok(EXIT_OK)
}

/// Say at training time what `check` will say: a monitor below the built-in
/// default policy's `min_auroc` on its own base is weak, reported as a
/// finding about the suite (never a reason to fail a candidate).
fn weak_warning<'a>(monitors: impl Iterator<Item = &'a mon::Monitor>) {
    let Ok(p) = probegate::gate::policy::Policy::load(std::path::Path::new(
        probegate::assets::DEFAULT_POLICY,
    )) else {
        return;
    };
    for m in monitors {
        if let Some(w) = probegate::gate::revalidate::weak_on_base(m, &p.metrics) {
            eprintln!(
                "warning: {w} (the built-in default policy); `probegate check` will report it as a \
                 weak monitor of the suite (policy [suite] weak_monitors = warn | exclude | refuse)"
            );
        } else if let Some(w) = probegate::gate::revalidate::floor_unproven(m, &p.metrics) {
            eprintln!(
                "warning: {w} (the built-in default policy); `probegate check` will judge it only \
                 on its drops, not on min_auroc; a larger test set would narrow the interval"
            );
        }
    }
}
