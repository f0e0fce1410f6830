//! `probegate serve`, `probegate github …` and `probegate hook …`: the thin
//! adapters that put the `check` pipeline where its users are.

use std::io::Read;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::check::{CheckArgs, GateArgs};
use super::choice::choice;
use super::progress::stage_progress;
use super::{emit_json, Format, Global, EXIT_OK};
use probegate::adapters::github::{self, CheckRun, CommentMode, Publish};
use probegate::adapters::hook::{self, HookConfig};
use probegate::adapters::serve::ServeConfig;
use probegate::error::{Error, Result};
use probegate::gate::report::verdict_line;
use probegate::gate::report::Outcome;

#[derive(Args, Debug)]
#[command(subcommand_negates_reqs = true, args_conflicts_with_subcommands = true)]
pub struct ServeArgs {
    /// Server configuration (TOML; see docs/serve.md and examples/serve.toml).
    #[arg(long, short, required = true)]
    pub config: Option<PathBuf>,
    /// Override the configuration's `listen` address.
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    #[command(subcommand)]
    pub child: Option<ServeChild>,
}

/// What the server starts itself as; not for people.
#[derive(Subcommand, Debug)]
pub enum ServeChild {
    /// Run one job's check from DIR/request.json, writing DIR/outcome.json.
    #[command(hide = true)]
    RunJob { dir: PathBuf },
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Usage(format!("cannot start the async runtime: {e}")))
}

pub fn cmd_serve(g: &Global, a: &ServeArgs) -> Result<i32> {
    if let Some(ServeChild::RunJob { dir }) = &a.child {
        // The check's own diagnostics go to stderr, which the server keeps.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
            .with_writer(std::io::stderr)
            .try_init();
        probegate::adapters::serve::run_job(dir)?;
        return Ok(EXIT_OK);
    }
    let Some(config) = &a.config else {
        return Err(Error::Usage("serve needs --config".into()));
    };
    let mut cfg = ServeConfig::load(config)?;
    if let Some(l) = a.listen {
        cfg.listen = l;
    }
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("PROBEGATE_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(if g.quiet { "warn" } else { "info" })
        });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let quiet = g.quiet;
    runtime()?.block_on(probegate::adapters::serve::serve(cfg, move |addr| {
        // One line on stdout, so scripts (and the tests) learn the port.
        println!("probegate serve: listening on http://{addr}");
        if !quiet {
            eprintln!("webhooks: POST /webhooks/huggingface, POST /webhooks/mlflow; jobs: GET /jobs/{{id}}");
        }
    }))?;
    Ok(EXIT_OK)
}

#[derive(Subcommand, Debug)]
pub enum GithubCommand {
    /// Create an in-progress check run for a commit; prints its id.
    Start {
        #[command(flatten)]
        repo: GithubRepo,
        #[arg(long)]
        sha: String,
        #[arg(long)]
        details_url: Option<String>,
        #[arg(long, alias = "job", help = NAME_HELP)]
        name: Option<String>,
    },
    /// Publish a `check --out` directory: complete the check run and write the PR comment.
    Publish {
        #[command(flatten)]
        repo: GithubRepo,
        /// The report directory `check --out` wrote.
        #[arg(long)]
        report: PathBuf,
        #[arg(long)]
        sha: String,
        /// Pull request number; without it no comment is written.
        #[arg(long)]
        pr: Option<u64>,
        #[arg(long, value_parser = choice::<CommentMode>(), default_value_t = CommentMode::Sticky)]
        comment: CommentMode,
        /// Complete this check run (from `github start`) instead of creating one.
        #[arg(long)]
        check_run_id: Option<u64>,
        /// Do not touch check runs (comment only).
        #[arg(long)]
        no_check_run: bool,
        #[arg(long)]
        details_url: Option<String>,
        /// The monitor suite's path in the repository, for annotations.
        #[arg(long)]
        monitors: Option<String>,
        #[arg(long, alias = "job", help = NAME_HELP)]
        name: Option<String>,
        /// The account the token comments as, whose comment alone is edited as the
        /// sticky one (default: the check run's app, `<slug>[bot]`, else `GET /user`;
        /// for Actions' GITHUB_TOKEN without a check run: github-actions[bot]).
        #[arg(long, env = github::AUTHOR_ENV)]
        comment_author: Option<String>,
    },
    /// List model references for the adapters and checkpoints changed since a revision.
    #[command(
        after_help = "Example (a pull request's changes; needs its base commit, e.g. fetch-depth: 0):\n  \
        probegate github candidates --base smollm2 --since \"$BASE_SHA\"\n\n\
        Files are those `git diff --name-only BASE...HEAD` lists, mapped as the pre-push hook maps them:\n\
        an adapter directory becomes BASE+DIR, a .gguf file or a model directory itself."
    )]
    Candidates {
        #[arg(long, help = super::MODEL_HELP)]
        base: String,
        /// The git revision changes are counted from (a pull request's base commit).
        #[arg(long)]
        since: String,
        /// The repository (default: the current directory).
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// End each reference with NUL instead of a newline (paths may hold any character).
        #[arg(short = 'z', long)]
        null: bool,
    },
}

const NAME_HELP: &str = "Job name, for several candidates in one pull request: keys the check run's \
    name (`probegate (NAME)`) and the sticky comment, so each keeps its own. A-Z a-z 0-9 . _ - only.";

#[derive(Args, Debug)]
pub struct GithubRepo {
    /// owner/name.
    #[arg(long, env = "GITHUB_REPOSITORY")]
    pub repository: String,
    #[arg(long, env = "GITHUB_API_URL", default_value = "https://api.github.com")]
    pub api_url: String,
    /// Token with checks:write and pull-requests:write.
    #[arg(long, env = "GITHUB_TOKEN", hide_env_values = true)]
    pub token: String,
}

pub fn cmd_github(g: &Global, c: &GithubCommand) -> Result<i32> {
    let rt = runtime()?;
    match c {
        GithubCommand::Start {
            repo,
            sha,
            details_url,
            name,
        } => {
            let id = rt.block_on(async {
                github::Client::new(&repo.api_url, &repo.token, &repo.repository)?
                    .with_name(name.as_deref())?
                    .start_check_run(sha, details_url.as_deref())
                    .await
            })?;
            match g.format {
                Format::Json => emit_json(&serde_json::json!({"check_run_id": id}))?,
                Format::Human => println!("{id}"),
            }
            Ok(EXIT_OK)
        }
        GithubCommand::Publish {
            repo,
            report,
            sha,
            pr,
            comment,
            check_run_id,
            no_check_run,
            details_url,
            monitors,
            name,
            comment_author,
        } => {
            // Refuse a bad name or author before reading anything.
            if let Some(n) = name {
                github::validate_name(n)?;
            }
            if let Some(a) = comment_author {
                github::validate_author(a)?;
            }
            let s = github::summarize(report, monitors.as_deref());
            let p = Publish {
                api_url: &repo.api_url,
                token: &repo.token,
                repository: &repo.repository,
                sha,
                pr: *pr,
                comment: *comment,
                details_url: details_url.as_deref(),
                check_run: match (no_check_run, check_run_id) {
                    (true, _) => CheckRun::Off,
                    (false, Some(id)) => CheckRun::Existing(*id),
                    (false, None) => CheckRun::Create,
                },
                name: name.as_deref(),
                comment_author: comment_author.as_deref(),
            };
            let out = rt.block_on(github::publish(&p, &s))?;
            // A forged sticky comment is worth a look whatever the format.
            for c in &out.ignored_comments {
                eprintln!(
                    "warning: comment {} on #{} carries probegate's marker but was written by {}, \
                     not {}; left untouched",
                    c.id,
                    pr.unwrap_or_default(),
                    c.author,
                    out.comment_author
                        .as_deref()
                        .unwrap_or("this token's account")
                );
            }
            match g.format {
                Format::Json => emit_json(&out)?,
                Format::Human if !g.quiet => println!(
                    "published {} (check run {:?}, comment {:?}{})",
                    out.verdict.as_str(),
                    out.check_run_id,
                    out.comment_id,
                    if out.comment_created { ", created" } else { "" }
                ),
                Format::Human => {}
            }
            Ok(EXIT_OK)
        }
        GithubCommand::Candidates {
            base,
            since,
            repo,
            null,
        } => {
            let c = github::changed_candidates(repo, since, base)?;
            match g.format {
                Format::Json => emit_json(&c)?,
                Format::Human => {
                    use std::io::Write;
                    let end = if *null { "\0" } else { "\n" };
                    let mut out = std::io::stdout().lock();
                    for r in &c.candidates {
                        // A newline inside a path would split it: only -z can carry it.
                        if !*null && r.contains('\n') {
                            return Err(Error::Usage(format!(
                                "candidate `{}` holds a newline; list with -z",
                                r.escape_debug()
                            )));
                        }
                        write!(out, "{r}{end}").map_err(|e| Error::io("<stdout>", e))?;
                    }
                    out.flush().map_err(|e| Error::io("<stdout>", e))?;
                }
            }
            Ok(EXIT_OK)
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum HookCommand {
    /// Install a git pre-push hook that gates adapters and checkpoints a push changes.
    #[command(after_help = "Example:\n  \
        probegate hook install --base smollm2 --monitors monitors/smollm2\n\n\
        Skip it for one push with PROBEGATE_SKIP=1 git push (or git push --no-verify);\n\
        delete .git/hooks/pre-push to uninstall.")]
    Install {
        #[command(flatten)]
        cfg: HookArgs,
        /// The repository (default: the current directory).
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// Replace an existing pre-push hook that is not probegate's.
        #[arg(long)]
        force: bool,
    },
    /// What the installed hook runs (reads git's pre-push lines on stdin).
    Run {
        #[command(flatten)]
        cfg: HookArgs,
        /// The remote's name, as git passes it.
        #[arg(long, default_value = "")]
        remote: String,
        /// Changed files, as pre-commit passes them (`.pre-commit-hooks.yaml`); without
        /// them, git's pre-push lines are read on stdin.
        files: Vec<String>,
    },
}

/// Settings the hook passes to each check; any left out come from
/// probegate.toml (found from the repository), then the built-in defaults.
#[derive(Args, Debug, Clone)]
pub struct HookArgs {
    #[command(flatten)]
    pub gate: GateArgs,
    /// Report directories go under this path (one per candidate).
    #[arg(long, default_value = ".probegate/pre-push")]
    pub out: PathBuf,
}

impl HookArgs {
    fn config(&self) -> HookConfig {
        HookConfig {
            base: self.gate.base.clone(),
            monitors: self.gate.monitors.clone(),
            policy: self.gate.policy.clone(),
            data: self.gate.data.clone(),
            out: self.out.clone(),
        }
    }

    /// The check for one candidate: these flags over probegate.toml.
    fn check(&self, candidate: &str, out: PathBuf) -> CheckArgs {
        CheckArgs {
            gate: self.gate.clone(),
            candidate: candidate.to_string(),
            out: Some(out),
            ..Default::default()
        }
    }
}

pub fn cmd_hook(g: &Global, c: &HookCommand) -> Result<i32> {
    match c {
        HookCommand::Install { cfg, repo, force } => {
            let exe = std::env::current_exe()
                .map_err(|e| Error::Usage(format!("cannot locate this probegate binary: {e}")))?;
            let path = hook::install(repo, &cfg.config(), &exe, *force)?;
            match g.format {
                Format::Json => emit_json(&serde_json::json!({"installed": path}))?,
                Format::Human => println!(
                    "installed {}\nskip once with {}=1 git push",
                    path.display(),
                    hook::SKIP_ENV
                ),
            }
            Ok(EXIT_OK)
        }
        HookCommand::Run { cfg, remote, files } => {
            let root = std::env::current_dir().map_err(|e| Error::io(".", e))?;
            let settings = cfg.check("", cfg.out.clone()).settings()?;
            // The base names adapter candidates (`BASE+DIR`): resolved as check will.
            let base = &settings.base;
            // Dropping `pushed` removes the scratch copy of the pushed files.
            let (cands, pushed) = if files.is_empty() {
                let mut stdin = String::new();
                std::io::stdin()
                    .read_to_string(&mut stdin)
                    .map_err(|e| Error::io("<stdin>", e))?;
                let mut p = hook::pushed_candidates(&root, &stdin, base, &settings.out)?;
                (std::mem::take(&mut p.candidates), Some(p))
            } else {
                let named = hook::candidates(&root, files, base);
                (
                    named.into_iter().map(hook::Candidate::plain).collect(),
                    None,
                )
            };
            if cands.is_empty() {
                return Ok(EXIT_OK);
            }
            eprintln!(
                "probegate: checking {} candidate(s) before pushing to {remote} (skip: {}=1 git push)",
                cands.len(),
                hook::SKIP_ENV
            );
            for w in pushed.iter().flat_map(|p| &p.warnings) {
                eprintln!("probegate: warning: {w}");
            }
            let history = Some(probegate::checkpoint::cache_root().join("history.jsonl"));
            let mut prog = stage_progress(g);
            let worst = hook::gate_push(
                &settings,
                &cands,
                history,
                &mut prog,
                &mut |cand, out, r| {
                    let cand = &cand.label;
                    match r {
                        Ok(o) => eprintln!("probegate: {cand}: {}", verdict_line(&o.report)),
                        Err(e) => eprintln!("probegate: {cand}: error: {e}"),
                    }
                    match r.as_ref().map(|o| Outcome::from(o.report.verdict)) {
                    Ok(Outcome::Pass | Outcome::PassWithRepairs) => {}
                    Ok(_) => eprintln!(
                        "probegate: the gate FAILED {cand}; push blocked. Report: {}/report.md",
                        out.display()
                    ),
                    Err(_) => eprintln!(
                        "probegate: could not evaluate {cand} (this is not a pass); push blocked. Report: {}/report.md",
                        out.display()
                    ),
                }
                },
            )?;
            drop(prog);
            drop(pushed);
            if worst.exit_code() != EXIT_OK {
                eprintln!(
                    "probegate: to push anyway: {}=1 git push (or git push --no-verify)",
                    hook::SKIP_ENV
                );
            }
            Ok(worst.exit_code())
        }
    }
}
