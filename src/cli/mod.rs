//! Command-line adapter: parses arguments, calls the library, prints.
//!
//! Exit codes (stable, documented in the README):
//! * 0 — success (for `check`: the gate passed)
//! * 1 — the gate ran and failed the candidate
//! * 2 — the gate could not evaluate: bad input, missing files, any error

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub mod adapters;
pub mod choice;
pub mod check;
pub mod monitor;
pub mod progress;
pub mod report;
pub mod risk;
pub mod tools;
pub mod zoo;

use probegate::error::{Error, Result};

// The library's outcome decides the process exit code; the CLI only names them.
pub const EXIT_OK: i32 = probegate::gate::report::Outcome::EXIT_OK;
pub const EXIT_ERROR: i32 = probegate::gate::report::Outcome::EXIT_ERROR;

pub(crate) const MODEL_HELP: &str =
    "Model reference: a .gguf file, a Hugging Face model directory, \
hf:org/name[@revision] (read from the Hugging Face cache; HF_HOME, HF_HUB_CACHE and \
HF_HUB_OFFLINE are honoured), or a fetched short name: smollm2, gemma3";

#[derive(Parser, Debug)]
#[command(
    name = "probegate",
    version,
    about = "A deployment gate that checks activation monitors survive model updates",
    after_help = "Examples:\n  \
      scripts/fetch-models.sh                      # fetch SmolLM2 and Gemma 3 into the cache\n  \
      probegate activations --model smollm2 --layers 3,14,25 --pool last \\\n      \
        --input fixtures/reference/prompts.jsonl --out acts.safetensors\n  \
      probegate convert --model smollm2 --out smollm2-hf\n  \
      probegate inspect --model gemma3 --format json\n\n\
    Exit codes: 0 success or gate passed, 1 gate failed, 2 could not evaluate (any error)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub global: Global,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// No progress bars or human summaries on stderr.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Output format on stdout.
    #[arg(long, global = true, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Worker threads for tensor kernels (default: all cores).
    #[arg(long, global = true, env = "PROBEGATE_THREADS")]
    pub threads: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Extract pooled residual-stream activations for a set of prompts.
    #[command(
        after_help = "Example:\n  probegate activations --model smollm2 --layers 3,14,25 --pool last \\\n    \
        --input prompts.jsonl --out acts.safetensors\n\n\
        Input: JSONL, one object per line with a \"text\" field (other fields ignored).\n\
        Output: safetensors with one f32 tensor layer.{L} of shape [n_prompts, d_model] per layer,\n\
        rows in input order; __metadata__ records the model fingerprint, layers, pooling,\n\
        precision and token counts. Layer L is the residual stream after block L (0-based)."
    )]
    Activations(tools::ActivationsArgs),
    /// Write a checkpoint as a Hugging Face model directory (safetensors, config.json, tokenizer.json).
    #[command(
        after_help = "Example:\n  probegate convert --model smollm2 --out smollm2-hf --dtype f32"
    )]
    Convert(tools::ConvertArgs),
    /// Diff a candidate against its base, tensor by tensor, and name the update family.
    #[command(after_help = "Examples:\n  probegate diff smollm2 'q4_0(smollm2)'\n  \
        probegate diff smollm2 smollm2+fixtures/adapters/smollm2-lora-r4 --format json")]
    Diff(tools::DiffArgs),
    /// Pre-deployment features per monitor: weight diff plus label-free activation shift.
    #[command(
        after_help = "Example:\n  probegate features --base smollm2 --candidate 'q4_0(smollm2)' --monitors monitors/smollm2 --format json"
    )]
    Features(tools::FeaturesArgs),
    /// Train and evaluate activation monitors.
    #[command(subcommand)]
    Monitor(monitor::MonitorCommand),
    /// Inspect or clear the activation cache.
    #[command(subcommand)]
    Cache(monitor::CacheCommand),
    /// Run the gate: diff, risk, budgeted revalidation, realignment, verdict and reports.
    #[command(after_help = "Examples:\n  \
        probegate check --base smollm2 --candidate smollm2+path/to/adapter --monitors monitors/smollm2\n  \
        probegate check --base gemma3 --candidate 'nf4(gemma3)' --monitors monitors/gemma3 \\\n    \
          --policy policies/quantization-only.toml --out report --format json\n\n\
        Exit codes: 0 pass (or pass with repaired monitors), 1 the gate failed the candidate,\n\
        2 the gate could not evaluate (bad input, missing files, any error). report.json,\n\
        report.md and report.html are written to --out in every case; after an error\n\
        report.json says \"verdict\": \"error\".")]
    Check(check::CheckArgs),
    /// Combine the reports of a sharded check (`check --shard I/N`) into one verdict.
    #[command(subcommand)]
    Report(report::ReportCommand),
    /// Predicted risk per monitor (`risk`), refit from a history (`risk fit`), or evaluate it (`risk eval`).
    #[command(after_help = "Examples:\n  \
        probegate risk --base smollm2 --candidate 'q4_0(smollm2)' --monitors monitors/smollm2\n  \
        probegate risk fit ~/.cache/probegate/history.jsonl --out my-risk.json\n  \
        probegate risk eval study/v2/history-smollm2.jsonl study/v2/history-gemma3.jsonl")]
    Risk(risk::RiskArgs),
    /// Reproduce the staleness study: full revalidation over a zoo.
    #[command(subcommand)]
    Study(check::StudyCommand),
    /// Fine-tune models and build the zoo of real update conditions.
    #[command(subcommand)]
    Zoo(zoo::ZooCommand),
    /// Show a checkpoint's architecture, tokenizer and tensors.
    #[command(after_help = "Example:\n  probegate inspect --model gemma3 --format json")]
    Inspect(tools::InspectArgs),
    /// Webhook server for model registries (Hugging Face Hub, MLflow) with a durable job queue.
    #[command(after_help = "Example:\n  \
        PROBEGATE_HF_WEBHOOK_SECRET=... probegate serve --config examples/serve.toml\n\n\
        Endpoints: POST /webhooks/huggingface, POST /webhooks/mlflow, GET /jobs/{id},\n\
        GET /jobs/{id}/report.md, GET /healthz. SIGTERM or Ctrl-C stops accepting and lets\n\
        running checks finish; a job cut off by a crash is rerun on the next start.")]
    Serve(adapters::ServeArgs),
    /// Publish a report to GitHub: a check run and one sticky pull-request comment.
    #[command(subcommand)]
    Github(adapters::GithubCommand),
    /// A git pre-push hook that runs the gate on changed adapters and checkpoints.
    #[command(subcommand)]
    Hook(adapters::HookCommand),
    /// Set up a repository: a starter probegate.toml, a policy and a GitHub workflow.
    #[command(after_help = "Example:\n  \
        probegate init --base smollm2 --monitors monitors/smollm2\n  \
        probegate check --candidate smollm2+adapters/new   # then, anywhere in the repository\n\n\
        Writes probegate.toml, .probegate/policy.toml (a copy of the built-in default policy)\n\
        and .github/workflows/probegate.yml; refuses to overwrite unless --force.")]
    Init(InitArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    #[command(after_help = "Examples:\n  \
        probegate completions bash > ~/.local/share/bash-completion/completions/probegate\n  \
        probegate completions zsh > \"${fpath[1]}/_probegate\"")]
    Completions { shell: clap_complete::Shell },
    /// Write man pages (probegate.1 and one per subcommand) into a directory.
    #[command(after_help = "Example:\n  probegate man --out ~/.local/share/man/man1")]
    Man {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// The repository root to write into.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// The base model the monitors were trained on (written into probegate.toml).
    #[arg(long, default_value = "smollm2")]
    pub base: String,
    /// The monitor suite, relative to the repository root.
    #[arg(long, default_value = "monitors")]
    pub monitors: String,
    /// Replace files that exist.
    #[arg(long)]
    pub force: bool,
}

pub fn parse_layers(spec: &str, num_layers: usize) -> Result<Vec<usize>> {
    if spec.trim() == "all" {
        return Ok((0..num_layers).collect());
    }
    let mut out = Vec::new();
    for part in spec.split(',') {
        let part = part.trim();
        let l: usize = part.parse().map_err(|_| {
            Error::Usage(format!(
                "--layers: `{part}` is not a block index (expected e.g. 3,14,25 or all)"
            ))
        })?;
        if l >= num_layers {
            return Err(Error::Usage(format!(
                "--layers: layer {l} is out of range: the model has {num_layers} blocks (0..={})",
                num_layers - 1
            )));
        }
        if !out.contains(&l) {
            out.push(l);
        }
    }
    if out.is_empty() {
        return Err(Error::Usage("--layers: no layers given".into()));
    }
    Ok(out)
}

pub(crate) fn emit_json(v: &impl serde::Serialize) -> Result<()> {
    let s = serde_json::to_string_pretty(v).map_err(|e| Error::Usage(e.to_string()))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{s}").map_err(|e| Error::io("<stdout>", e))
}

/// Runs a parsed command; returns the process exit code.
pub fn run(cli: Cli) -> Result<i32> {
    // Must happen before the first kernel touches the rayon pool. Without
    // RAYON_NUM_THREADS, candle works its default out again on every matmul
    // by opening and parsing /proc/cpuinfo (7,321 times in one demo gate
    // run); fixing it once here keeps the same count.
    let threads = match cli.global.threads {
        Some(n) => Some(n.max(1)),
        None if std::env::var_os("RAYON_NUM_THREADS").is_none() => {
            Some(candle_core::utils::get_num_threads())
        }
        None => None,
    };
    if let Some(n) = threads {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        // candle's elementwise pool spins ~1 ms after each op before parking,
        // taking a core from the GEMM threads and the map fits between ops; a
        // short spin made a 2-core gate run 11% faster (122 s -> 109 s).
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "1000");
    }
    if !matches!(cli.command, Command::Serve(_)) {
        // serve sets up its own logging (info by default). Elsewhere the
        // library's diagnostics, such as which way a model's weights are
        // held, show with PROBEGATE_LOG=info; warnings always do.
        let filter = tracing_subscriber::EnvFilter::try_from_env("PROBEGATE_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init();
    }
    match &cli.command {
        Command::Activations(a) => tools::cmd_activations(&cli.global, a),
        Command::Convert(a) => tools::cmd_convert(&cli.global, a),
        Command::Inspect(a) => tools::cmd_inspect(&cli.global, a),
        Command::Diff(a) => tools::cmd_diff(&cli.global, a),
        Command::Features(a) => tools::cmd_features(&cli.global, a),
        Command::Monitor(c) => monitor::run_monitor(&cli.global, c),
        Command::Cache(c) => monitor::run_cache(&cli.global, c),
        Command::Zoo(c) => zoo::run_zoo(&cli.global, c),
        Command::Check(a) => check::cmd_check(&cli.global, a),
        Command::Report(c) => report::run_report(&cli.global, c),
        Command::Risk(a) => risk::cmd_risk(&cli.global, a),
        Command::Study(c) => check::cmd_study(&cli.global, c),
        Command::Serve(a) => adapters::cmd_serve(&cli.global, a),
        Command::Github(c) => adapters::cmd_github(&cli.global, c),
        Command::Hook(c) => adapters::cmd_hook(&cli.global, c),
        Command::Init(a) => cmd_init(&cli.global, a),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(*shell, &mut cmd, "probegate", &mut std::io::stdout());
            Ok(EXIT_OK)
        }
        Command::Man { out } => {
            use clap::CommandFactory;
            std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
            clap_mangen::generate_to(Cli::command(), out).map_err(|e| Error::io(out, e))?;
            if !cli.global.quiet {
                eprintln!("wrote man pages to {}", out.display());
            }
            Ok(EXIT_OK)
        }
    }
}

fn cmd_init(g: &Global, a: &InitArgs) -> Result<i32> {
    let opts = probegate::adapters::project::InitOptions {
        base: a.base.clone(),
        monitors: a.monitors.clone(),
        force: a.force,
    };
    let written = probegate::adapters::project::init(&a.dir, &opts)?;
    match g.format {
        Format::Json => emit_json(&serde_json::json!({ "written": written }))?,
        Format::Human => {
            for p in &written {
                println!("wrote {}", p.display());
            }
            println!(
                "\nFill in the lines marked TODO:\n  \
                 - probegate.toml: `base` (the model your monitors were trained on) and `monitors` (your suite);\n  \
                 - .github/workflows/probegate.yml: the probegate release to use.\n\
                 Then, anywhere in the repository:  probegate check --candidate <model or BASE+ADAPTER_DIR>\n\
                 A pre-push gate:  probegate hook install   (or pre-commit's `probegate` hook)"
            );
        }
    }
    Ok(EXIT_OK)
}
