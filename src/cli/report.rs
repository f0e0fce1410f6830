//! `probegate report merge`: one verdict from the reports of a sharded check.

use std::path::PathBuf;

use clap::Subcommand;

use super::check::{print_verdict, write_error_outputs};
use super::Global;
use probegate::error::Result;
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
}

pub fn run_report(g: &Global, c: &ReportCommand) -> Result<i32> {
    let ReportCommand::Merge { shards, out, junit } = c;
    if let Some(j) = junit {
        let _ = std::fs::remove_file(j);
    }
    let merged = gate::merge_shards(shards).and_then(|m| {
        m.write(out)?;
        Ok(m)
    });
    let m = match merged {
        Ok(m) => m,
        Err(e) => {
            write_error_outputs(out, junit.as_deref(), "merged shards", &e);
            return Err(e);
        }
    };
    if let Some(j) = junit {
        junit::write(j, &junit::from_report(&m.report))?;
    }
    print_verdict(g, &m.report, out)?;
    Ok(Outcome::from(m.report.verdict).exit_code())
}
