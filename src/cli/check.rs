//! `probegate check`, `probegate risk …` and `probegate study grid`: thin
//! adapters over the `check` pipeline and the risk model.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::progress::stage_progress;
use super::{emit_json, Format, Global, EXIT_OK};
use probegate::adapters::project::{GateSettings, Overrides, ProjectConfig, RunOptions};
use probegate::error::{Error, Result};
use probegate::gate;
use probegate::gate::policy::Policy;
use probegate::gate::report::{junit, Outcome};
use probegate::gate::revalidate::DataSource;
use probegate::gate::risk;

/// What every gate run is configured with (`check` and the pre-push hook);
/// each left out comes from probegate.toml, then the built-in defaults.
#[derive(Args, Debug, Clone, Default)]
pub struct GateArgs {
    /// Base model reference (default: `base` in probegate.toml). A .gguf file, a Hugging Face
    /// model directory, hf:org/name[@revision], or a fetched short name: smollm2, gemma3.
    #[arg(long)]
    pub base: Option<String>,
    /// Monitor suite directory, trained on the base (default: `monitors` in probegate.toml).
    #[arg(long)]
    pub monitors: Option<PathBuf>,
    /// A shipped policy (default, strict, quantization-only) or a policy file
    /// (default: `policy` in probegate.toml, else the built-in `default`).
    #[arg(long)]
    pub policy: Option<String>,
    /// Labeled data, <DATA>/<concept>/{test,train}.jsonl, used instead of any other
    /// (default: the suite's own data/, then the data built into probegate, matched by hash).
    #[arg(long)]
    pub data: Option<PathBuf>,
}

impl GateArgs {
    /// These flags (and `out`, `risk_model`) over probegate.toml over the
    /// built-in defaults.
    pub fn settings(
        &self,
        config: &ConfigArgs,
        out: Option<PathBuf>,
        risk_model: Option<PathBuf>,
    ) -> Result<GateSettings> {
        GateSettings::resolve(
            Overrides {
                base: self.base.clone(),
                monitors: self.monitors.clone(),
                policy: self.policy.clone(),
                data: self.data.clone(),
                out,
                risk_model,
            },
            config.load()?.as_ref(),
        )
    }
}

/// Which probegate.toml a command reads.
#[derive(Args, Debug, Clone, Default)]
pub struct ConfigArgs {
    /// The probegate.toml to read (default: the nearest one at or above the working directory).
    #[arg(long, conflicts_with = "no_config")]
    pub config: Option<PathBuf>,
    /// Read no probegate.toml.
    #[arg(long)]
    pub no_config: bool,
}

impl ConfigArgs {
    pub fn load(&self) -> Result<Option<ProjectConfig>> {
        if self.no_config {
            Ok(None)
        } else if let Some(p) = &self.config {
            ProjectConfig::load(p).map(Some)
        } else {
            let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
            ProjectConfig::find(&cwd)
        }
    }
}

#[derive(Args, Debug, Clone, Default)]
pub struct CheckArgs {
    #[command(flatten)]
    pub gate: GateArgs,
    /// The candidate: any model reference, including `nf4(BASE)`, `BASE+ADAPTER_DIR`,
    /// a bitsandbytes directory or a GGUF file.
    #[arg(long)]
    pub candidate: String,
    /// Output directory: report.json, report.md, report.html, repaired/ (default: probegate-report).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write JUnit XML here: one test case per monitor (stale fails, unverified is skipped).
    #[arg(long)]
    pub junit: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Risk model JSON (default: `risk_model` in probegate.toml, else the one shipped, fitted
    /// on the zoo grid).
    #[arg(long)]
    pub risk_model: Option<PathBuf>,
    /// Append features and measured outcomes here (default: $PROBEGATE_CACHE/history.jsonl).
    #[arg(long)]
    pub history: Option<PathBuf>,
    #[arg(long)]
    pub no_history: bool,
    /// Revalidate every monitor, ignoring the policy's budget.
    #[arg(long)]
    pub full: bool,
    /// Override the policy's `budget.examples` (labeled examples run through the candidate).
    #[arg(long)]
    pub budget: Option<usize>,
    /// Judge only shard I of N of the suite (whole concepts, 1-based, e.g. 2/4), with that
    /// shard's share of the budget; combine the N reports with `probegate report merge`.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<gate::shard::Shard>,
}

impl CheckArgs {
    /// The command line over probegate.toml over the built-in defaults.
    pub fn settings(&self) -> Result<GateSettings> {
        self.gate
            .settings(&self.config, self.out.clone(), self.risk_model.clone())
    }
}

#[derive(Subcommand, Debug)]
pub enum StudyCommand {
    /// Full revalidation of a monitor suite on every condition of a built zoo: the ground-truth grid.
    Grid {
        /// A zoo directory holding zoo.json (see `probegate zoo build`).
        #[arg(long)]
        zoo: PathBuf,
        #[arg(long)]
        monitors: PathBuf,
        /// A shipped policy (default, strict, quantization-only) or a policy file.
        #[arg(long, default_value = "default")]
        policy: String,
        /// Labeled test sets, <DATA>/<concept>/test.jsonl (default: the suite's own data/,
        /// then the data built into probegate).
        #[arg(long)]
        data: Option<PathBuf>,
        /// History file the grid's rows are appended to (not with --budgeted).
        #[arg(
            long,
            required_unless_present = "budgeted",
            conflicts_with = "budgeted"
        )]
        history: Option<PathBuf>,
        /// Run each condition under the policy as a user's gate would (budget, sequential
        /// looks) instead of full revalidation, to compare with the grid's ground truth
        /// (`study summarize --budgeted`). Writes no history.
        #[arg(long, requires = "reports")]
        budgeted: bool,
        /// Per-condition reports go under this directory.
        #[arg(long)]
        reports: Option<PathBuf>,
        /// Only these conditions (exact names, comma-separated; `identical` is the base itself).
        #[arg(long)]
        only: Option<String>,
    },
    /// Write STUDY.md (and study/*.svg) from grid reports: the published study's tables, the
    /// predictor's held-out quality, realignment and the gate's figures on the zoo. With
    /// --history instead, only the sections history rows support (honest folds, both kinds
    /// of staleness), so a fresh clone can rebuild them from the committed grid.
    #[command(
        after_help = "Examples:\n  probegate study report --reports study/v2/reports-smollm2 --reports study/v2/reports-gemma3 --budgeted study/v2/budgeted-seq-smollm2 --budgeted study/v2/budgeted-seq-gemma3 --out STUDY.md\n  probegate study report --history risk/zoo-grid-v1.jsonl --out study/v1-honest.md"
    )]
    Report {
        /// Directories of per-condition report directories (`study grid --reports`), one per model.
        #[arg(long, required_unless_present = "history", conflicts_with = "history")]
        reports: Vec<PathBuf>,
        /// The same conditions run under the policy (`study grid --budgeted --reports DIR`), one
        /// directory per model: the gate's real verdicts and costs beside the whole-set replay
        /// (needed for a sequential policy, whose looks a replay cannot redo).
        #[arg(long, conflicts_with = "history")]
        budgeted: Vec<PathBuf>,
        /// History files (`study grid --history`, e.g. risk/zoo-grid-v1.jsonl), read together.
        #[arg(long)]
        history: Vec<PathBuf>,
        /// Where the Markdown goes (default with --reports: STUDY.md; required with --history,
        /// whose few sections must not replace a whole STUDY.md by default).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The policy the budgeted gate is replayed under, and whose balanced-accuracy
        /// limit defines operating-point staleness.
        /// A shipped policy (default, strict, quantization-only) or a policy file.
        #[arg(long, default_value = "default")]
        policy: String,
        /// The risk model the budgeted replay uses (--reports only).
        #[arg(long, conflicts_with = "history")]
        risk_model: Option<PathBuf>,
    },
    /// Summarise a grid's full-revalidation reports and replay each as the budgeted gate would run it.
    Summarize {
        /// Directory of per-condition report directories (`study grid --reports`).
        reports: PathBuf,
        /// The same conditions run under the policy (`study grid --budgeted --reports`):
        /// their real verdicts and costs instead of a replay (needed for a sequential policy).
        #[arg(long)]
        budgeted: Option<PathBuf>,
        /// A shipped policy (default, strict, quantization-only) or a policy file.
        #[arg(long, default_value = "default")]
        policy: String,
        #[arg(long)]
        risk_model: Option<PathBuf>,
    },
}

pub fn cmd_check(g: &Global, a: &CheckArgs) -> Result<i32> {
    gate(g, a).map(Outcome::exit_code)
}

/// Runs one gate; errors are returned (and written as an error report).
pub fn gate(g: &Global, a: &CheckArgs) -> Result<Outcome> {
    let settings = a.settings();
    // Where a report goes even when the settings themselves are wrong.
    let out = match &settings {
        Ok(s) => s.out.clone(),
        Err(_) => a.out.clone().unwrap_or_else(|| "probegate-report".into()),
    };
    // A JUnit file of an earlier run must not outlive this one's crash; it
    // is rewritten below either way, so a failed removal only leaves it to that.
    if let Some(j) = &a.junit {
        let _ = std::fs::remove_file(j);
    }
    let r = settings.and_then(|s| run_check(g, a, &s));
    // Whatever happens below, the output directory never keeps a stale report.
    if let Err(e) = &r {
        write_error_outputs(&out, a.junit.as_deref(), &a.candidate, e);
    }
    r
}

/// What a run that could not evaluate leaves: an error report in `out` and,
/// when asked for, a JUnit file saying so; never an earlier run's verdict.
/// Best effort: the error itself is what the caller returns.
pub(crate) fn write_error_outputs(out: &Path, junit: Option<&Path>, subject: &str, e: &Error) {
    let _ = gate::report::write_error_report(out, &e.to_string());
    if let Some(j) = junit {
        let _ = junit::write(j, &junit::for_error(subject, &e.to_string()));
    }
}

fn run_check(g: &Global, a: &CheckArgs, s: &GateSettings) -> Result<Outcome> {
    if let Some(c) = &s.config {
        if !g.quiet {
            eprintln!("probegate: settings from {}", c.display());
        }
    }
    let opts = RunOptions {
        budget: a.budget,
        full: a.full,
        shard: a.shard,
        history: (!a.no_history).then(|| {
            a.history
                .clone()
                .unwrap_or_else(|| probegate::checkpoint::cache_root().join("history.jsonl"))
        }),
    };
    let mut prog = stage_progress(g);
    let out = s.run(&a.candidate, &opts, &mut prog)?;
    // Close the last stage's log line before the verdict is printed.
    drop(prog);
    if let Some(j) = &a.junit {
        junit::write(j, &junit::from_report(&out.report))?;
    }
    print_verdict(g, &out.report, &s.out)?;
    Ok(Outcome::from(out.report.verdict))
}

/// The verdict on stdout (the report itself with `--format json`), the
/// warnings and where the reports are on stderr.
pub(crate) fn print_verdict(g: &Global, r: &gate::Report, out: &Path) -> Result<()> {
    match g.format {
        Format::Json => emit_json(r)?,
        Format::Human => {
            println!("{}", probegate::gate::report::verdict_line(r));
            for x in &r.reasons {
                println!("  - {x}");
            }
            if !g.quiet {
                for x in &r.warnings {
                    eprintln!("  warning: {x}");
                }
                eprintln!("reports in {}", out.display());
            }
        }
    }
    Ok(())
}

fn cmd_summarize(
    g: &Global,
    (reports, budgeted): (&Path, Option<&Path>),
    policy: &str,
    model: Option<&Path>,
) -> Result<i32> {
    let policy = Policy::load(&Policy::resolve(policy, None))?;
    let rows = probegate::lab::study::grid::summarize(
        reports,
        budgeted,
        &policy,
        &risk::RiskModel::load_or_default(model)?,
    )?;
    match g.format {
        Format::Json => emit_json(&rows)?,
        Format::Human => {
            println!(
                "{:<28} {:<24} {:>5} {:>5} {:>5} {:>5} {:>6}  {:<17} {:<17} {:>9}",
                "condition",
                "family",
                "stAU",
                "stPol",
                "rep",
                "left",
                "missed",
                "full verdict",
                "budgeted",
                "examples"
            );
            for r in &rows {
                println!(
                    "{:<28} {:<24} {:>5} {:>5} {:>5} {:>5} {:>6}  {:<17} {:<17} {:>4}/{:<4}{}",
                    r.condition,
                    format!("{:?}", r.family),
                    r.stale_auroc,
                    r.compared.stale_policy,
                    r.compared.repaired,
                    r.compared.stale_unrepaired,
                    r.compared.repairs_missed,
                    r.compared.full_verdict.as_str(),
                    r.compared.budgeted_verdict.as_str(),
                    r.compared.examples_used,
                    r.compared.examples_full,
                    if r.compared.false_pass {
                        "  FALSE PASS"
                    } else if r.compared.false_fail {
                        "  FALSE FAIL"
                    } else {
                        ""
                    }
                );
            }
        }
    }
    Ok(EXIT_OK)
}

/// `--flag a --flag b`, as the report's header quotes the command.
fn repeated(flag: &str, paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| format!("{flag} {}", p.display()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `study report --history`: the honest sections from history rows alone.
fn cmd_study_history(
    g: &Global,
    history: &[PathBuf],
    out: Option<&Path>,
    policy: &Policy,
) -> Result<i32> {
    let out = out.ok_or_else(|| {
        Error::Usage(
            "--history needs --out FILE: it writes the honest-fold and staleness sections, not a whole STUDY.md".into(),
        )
    })?;
    let mut rows = Vec::new();
    for h in history {
        rows.extend(risk::read_history(h)?);
    }
    let honest =
        probegate::lab::study::honest::analyse(&rows, policy.metrics.max_balanced_accuracy_drop);
    let command = format!(
        "probegate study report {} --out {}",
        repeated("--history", history),
        out.display()
    );
    probegate::lab::study::write_history(&honest, out, &command)?;
    match g.format {
        Format::Json => emit_json(&honest)?,
        Format::Human => println!("wrote {} ({} history rows)", out.display(), honest.rows),
    }
    Ok(EXIT_OK)
}

pub fn cmd_study(g: &Global, c: &StudyCommand) -> Result<i32> {
    if let StudyCommand::Report {
        reports,
        budgeted,
        history,
        out,
        policy,
        risk_model: rm,
    } = c
    {
        let policy = Policy::load(&Policy::resolve(policy, None))?;
        if !history.is_empty() {
            return cmd_study_history(g, history, out.as_deref(), &policy);
        }
        let out = out.clone().unwrap_or_else(|| PathBuf::from("STUDY.md"));
        let model = risk::RiskModel::load_or_default(rm.as_deref())?;
        let loaded = probegate::lab::study::load(reports)?;
        let runs = if budgeted.is_empty() {
            None
        } else {
            Some(probegate::lab::study::load_runs(budgeted)?)
        };
        let study = probegate::lab::study::build(&loaded, &policy, &model, runs.as_ref())?;
        let mut command = format!("probegate study report {}", repeated("--reports", reports));
        if !budgeted.is_empty() {
            command = format!("{command} {}", repeated("--budgeted", budgeted));
        }
        probegate::lab::study::write(&study, &out, &command)?;
        match g.format {
            Format::Json => emit_json(&study)?,
            Format::Human => println!(
                "wrote {} ({} runs, {} cells)",
                out.display(),
                study.conditions.len(),
                study.cells.len()
            ),
        }
        return Ok(EXIT_OK);
    }
    if let StudyCommand::Summarize {
        reports,
        budgeted,
        policy,
        risk_model,
    } = c
    {
        return cmd_summarize(
            g,
            (reports, budgeted.as_deref()),
            policy,
            risk_model.as_deref(),
        );
    }
    let StudyCommand::Grid {
        zoo,
        monitors,
        policy,
        data,
        history,
        budgeted,
        reports,
        only,
    } = c
    else {
        return Ok(EXIT_OK);
    };
    let policy = Policy::load(&Policy::resolve(policy, None))?;
    let model = risk::RiskModel::load_or_default(None)?;
    let req = probegate::lab::study::grid::GridRequest {
        zoo,
        monitors,
        policy: &policy,
        risk_model: &model,
        data: DataSource::named(data.clone()),
        history: history.as_deref(),
        budgeted: *budgeted,
        reports: reports.as_deref(),
        only: only
            .as_deref()
            .map(|s| s.split(',').map(|x| x.trim().to_string()).collect())
            .unwrap_or_default(),
    };
    let mut summary = Vec::new();
    let mut prog = stage_progress(g);
    probegate::lab::study::grid::grid(&req, &mut prog, &mut |i, n, name, r| {
        let c = r.counts();
        let stale_auroc = r
            .history(&r.model_id())
            .iter()
            .filter(|h| h.outcome.stale_auroc)
            .count();
        summary.push(serde_json::json!({
            "condition": name, "family": r.diff.family, "verdict": r.verdict,
            "counts": c, "stale_auroc": stale_auroc, "seconds": r.seconds.get("total"),
        }));
        if !g.quiet {
            eprintln!(
                "[{}/{n}] {name}: {}",
                i + 1,
                probegate::gate::report::verdict_line(r)
            );
        }
    })?;
    drop(prog);
    match g.format {
        Format::Json => emit_json(&summary)?,
        Format::Human => match history {
            Some(h) => println!("appended {} conditions to {}", summary.len(), h.display()),
            None => println!("ran {} conditions under the policy", summary.len()),
        },
    }
    Ok(EXIT_OK)
}
