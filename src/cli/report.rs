//! `probegate report merge`: one verdict from the reports of a sharded check;
//! `probegate report rejudge`: a run's report decided again under another
//! policy's verdict rules.

use std::path::PathBuf;

use clap::Subcommand;

use super::check::{print_verdict, write_error_outputs};
use super::Global;
use probegate::error::Result;
use probegate::gate::policy::Policy;
use probegate::gate::{self, report::junit, Outcome};

#[derive(Subcommand, Debug)]
pub enum ReportCommand {
    /// Combine the reports of `check --shard I/N` (one output directory per shard) into the
    /// report and verdict of the whole suite.
    #[command(
        after_help = "Example (a CI matrix of 3 jobs, then one merge job):\n  \
        probegate check --candidate smollm2+adapters/new --shard 1/3 --out shard-1\n  \
        probegate check --candidate smollm2+adapters/new --shard 2/3 --out shard-2\n  \
        probegate check --candidate smollm2+adapters/new --shard 3/3 --out shard-3\n  \
        probegate report merge shard-1 shard-2 shard-3 --out probegate-report\n\n\
        Exit codes as for check: 0 pass, 1 the gate failed the candidate, 2 could not evaluate\n\
        (a shard missing, given twice, from another candidate, base or policy, or one that\n\
        could not evaluate). report.json is written to --out in every case."
    )]
    Merge {
        /// The shards' output directories (each holding report.json and repaired/).
        #[arg(required = true)]
        shards: Vec<PathBuf>,
        /// Where the merged report.json, report.md, report.html and repaired/ go.
        #[arg(long, default_value = "probegate-report")]
        out: PathBuf,
        /// Also write JUnit XML here: one test case per monitor.
        #[arg(long)]
        junit: Option<PathBuf>,
    },
    /// Decide a run's report again under a policy that differs from the one it ran under only
    /// in what the verdict reads (`unverified`, `unverified_fail_risk`,
    /// `unverified_fail_as_risky_as_stale`, `allowed_families`; `budget.stop_at_verdict`
    /// too, for a run that left no stale monitor off the ladder), without running the models
    /// again: what a stricter rule would have said.
    #[command(after_help = "Example:\n  \
        probegate report rejudge probegate-report --policy my-policy.toml --out rejudged\n\n\
        A policy that changes what is run (a budget, a limit, the critical list, the repair\n\
        ladder) is refused, naming the field: run `probegate check` under it instead.\n\
        Exit codes as for check: 0 pass, 1 the gate failed the candidate, 2 could not evaluate.")]
    Rejudge {
        /// The run's output directory (report.json and repaired/).
        run: PathBuf,
        /// A shipped policy (default, strict, quantization-only) or a policy file.
        #[arg(long)]
        policy: String,
        /// Where the new report.json, report.md, report.html and repaired/ go (may be the run's
        /// own directory).
        #[arg(long, default_value = "probegate-report")]
        out: PathBuf,
        /// Also write JUnit XML here: one test case per monitor.
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Decide report.json alone when the run's repaired monitors are not beside it (an
        /// archived report): the new report is written without repaired/.
        #[arg(long)]
        report_only: bool,
    },
}

pub fn run_report(g: &Global, c: &ReportCommand) -> Result<i32> {
    let (out, junit) = match c {
        ReportCommand::Merge { out, junit, .. } | ReportCommand::Rejudge { out, junit, .. } => {
            (out, junit)
        }
    };
    if let Some(j) = junit {
        let _ = std::fs::remove_file(j);
    }
    // `in_place`: a rejudge written over its own run.
    let (what, result, in_place) = match c {
        ReportCommand::Merge { shards, .. } => ("merged shards", gate::merge_shards(shards), false),
        ReportCommand::Rejudge {
            run,
            policy,
            report_only,
            ..
        } => (
            "rejudged report",
            Policy::load(&Policy::resolve(policy, None))
                .and_then(|p| gate::rejudge(run, &p, *report_only)),
            same_dir(run, out),
        ),
    };
    let m = match result.and_then(|m| {
        if in_place {
            // Only the reports change; the run's repaired monitors stay
            // (with --report-only they were never read, so never rewritten).
            gate::report::write_all(out, &m.report)?;
        } else {
            m.write(out)?;
        }
        Ok(m)
    }) {
        Ok(m) => m,
        Err(e) => {
            // A refused rejudge in place leaves the run's own report as it was.
            if !in_place {
                write_error_outputs(out, junit.as_deref(), what, &e);
            }
            return Err(e);
        }
    };
    if let Some(j) = junit {
        junit::write(j, &junit::from_report(&m.report))?;
    }
    print_verdict(g, &m.report, out)?;
    Ok(Outcome::from(m.report.verdict).exit_code())
}

fn same_dir(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
