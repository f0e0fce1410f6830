//! `probegate risk`: predicted risk per monitor, and fitting or evaluating
//! a risk model on a history.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::check::{ConfigArgs, GateArgs};
use super::choice::choice;
use super::progress::stage_progress;
use super::{emit_json, Format, Global, EXIT_OK};
use probegate::error::{Error, Result};
use probegate::gate;
use probegate::gate::policy::Policy;
use probegate::gate::risk::{self, RiskModel, Target};
use probegate::lab::study::honest;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RiskArgs {
    #[command(subcommand)]
    pub command: Option<RiskCommand>,
    #[command(flatten)]
    pub predict: PredictArgs,
}

/// The risk a check would predict, from the same settings a check reads:
/// these flags over probegate.toml. Without labeled data the concept
/// features (read from train.jsonl's texts, labels unread) are left out.
#[derive(Args, Debug)]
pub struct PredictArgs {
    #[command(flatten)]
    pub gate: GateArgs,
    /// The candidate, as `check --candidate` takes it.
    #[arg(long)]
    pub candidate: Option<String>,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Risk model JSON (default: `risk_model` in probegate.toml, else the one shipped).
    #[arg(long)]
    pub risk_model: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum RiskCommand {
    /// Refit the risk model from history files (JSONL rows of features and outcomes), read together.
    Fit {
        #[arg(required = true)]
        history: Vec<PathBuf>,
        #[arg(long, default_value = "risk-model.json")]
        out: PathBuf,
        #[command(flatten)]
        fit: FitArgs,
    },
    /// How good the risk model is on history files: held-out AUROC on honest folds (a family
    /// with merged conditions beside their source, a model, source groups), triage curve, baselines.
    Eval {
        #[arg(required = true)]
        history: Vec<PathBuf>,
        #[command(flatten)]
        fit: FitArgs,
    },
}

/// How a risk model is fitted, by `risk fit` and by `risk eval`'s folds.
#[derive(Args, Debug)]
pub struct FitArgs {
    /// L2 strength.
    #[arg(long, default_value_t = 1.0)]
    l2: f64,
    /// What the model predicts.
    #[arg(long, value_parser = choice::<Target>(), default_value = "policy")]
    target: Target,
    /// The features the model reads, comma-separated (default: every feature the history's
    /// rows have). A model that reads no corpus feature (act_distance, abs_projected_shift,
    /// score_ks, flip_rate, base_margin) lets `check` skip the corpus's forward passes unless
    /// its ladder realigns a monitor.
    #[arg(long, value_delimiter = ',', value_parser = feature_name)]
    features: Vec<String>,
}

/// One of [`risk::FEATURE_NAMES`], or clap's error listing them.
fn feature_name(s: &str) -> std::result::Result<String, String> {
    if risk::FEATURE_NAMES.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{s}` is not a risk feature; one of: {}",
            risk::FEATURE_NAMES.join(", ")
        ))
    }
}

/// `--features` as names; when none were given, every feature a row has.
fn feature_list<'a>(given: &'a [String], rows: &[&risk::HistoryRow]) -> Vec<&'a str> {
    if given.is_empty() {
        risk::features_present(rows)
    } else {
        given.iter().map(String::as_str).collect()
    }
}

/// Every row of every file, in order.
fn read_histories(paths: &[PathBuf]) -> Result<Vec<risk::HistoryRow>> {
    let mut rows = Vec::new();
    for p in paths {
        rows.extend(risk::read_history(p)?);
    }
    Ok(rows)
}

fn joined(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The model `--risk-model` names, else the shipped one.
pub fn cmd_risk(g: &Global, a: &RiskArgs) -> Result<i32> {
    match &a.command {
        Some(RiskCommand::Fit { history, out, fit }) => {
            let rows = read_histories(history)?;
            let refs: Vec<&risk::HistoryRow> = rows.iter().collect();
            let m = risk::fit_on(
                &refs,
                &feature_list(&fit.features, &refs),
                fit.target,
                fit.l2,
                &joined(history),
            )?;
            m.save(out)?;
            match g.format {
                Format::Json => emit_json(&m)?,
                Format::Human => println!(
                    "fitted on {} rows ({} stale by {}) from {}; wrote {}",
                    m.fitted_rows,
                    m.fitted_stale,
                    m.target,
                    joined(history),
                    out.display()
                ),
            }
            Ok(EXIT_OK)
        }
        Some(RiskCommand::Eval { history, fit }) => {
            let rows = read_histories(history)?;
            let refs: Vec<&risk::HistoryRow> = rows.iter().collect();
            let ev = honest::honest_evaluation(
                &rows,
                fit.target,
                fit.l2,
                &feature_list(&fit.features, &refs),
            );
            match g.format {
                Format::Json => emit_json(&ev)?,
                Format::Human => {
                    println!("{} cells, {} stale by {}", ev.rows, ev.stale, ev.target);
                    for h in &ev.held_out {
                        let f = |k: &str| {
                            h.auroc
                                .get(k)
                                .copied()
                                .flatten()
                                .map(|v| format!("{v:.3}"))
                                .unwrap_or_else(|| "n/a".into())
                        };
                        println!(
                            "held out: one {} ({} folds{}): risk model {}, weight change alone {}, family alone {}",
                            h.by,
                            h.folds.len(),
                            if h.skipped_folds.is_empty() {
                                String::new()
                            } else {
                                format!(", skipped {:?}", h.skipped_folds)
                            },
                            f("risk_model"),
                            f("weight_change_alone"),
                            f("family_alone")
                        );
                        let t: Vec<String> = h
                            .triage
                            .iter()
                            .map(|(k, c)| format!("{:.0}%→{:.0}%", k * 100.0, c * 100.0))
                            .collect();
                        println!(
                            "  triage (top k% revalidated → share of stale caught): {}",
                            t.join(" ")
                        );
                    }
                }
            }
            Ok(EXIT_OK)
        }
        None => {
            let p = &a.predict;
            let Some(cand) = &p.candidate else {
                return Err(Error::Usage(
                    "probegate risk needs --candidate (or a subcommand: fit, eval)".into(),
                ));
            };
            let s = p.gate.settings(&p.config, None, p.risk_model.clone())?;
            let model = RiskModel::load_or_default(s.risk_model.as_deref())?;
            let policy = Policy::load(&s.policy)?;
            let gate::Predicted {
                monitors: rows,
                note,
            } = gate::predict_only(
                (&s.base, cand, &s.monitors),
                &s.data,
                &policy,
                &model,
                &mut stage_progress(g),
            )?;
            if let Some(n) = note {
                eprintln!("note: {n}");
            }
            match g.format {
                Format::Json => emit_json(&rows)?,
                Format::Human => {
                    println!(
                        "{:<26} {:>6} {:>8}  drivers",
                        "monitor", "block", "P(stale)"
                    );
                    for (f, r) in &rows {
                        let d: Vec<String> = r
                            .drivers
                            .iter()
                            .map(|(n, c)| format!("{n} {c:+.2}"))
                            .collect();
                        println!(
                            "{:<26} {:>6} {:>8.3}  {}",
                            f.monitor,
                            f.layer,
                            r.p_stale,
                            d.join(", ")
                        );
                    }
                }
            }
            Ok(EXIT_OK)
        }
    }
}
