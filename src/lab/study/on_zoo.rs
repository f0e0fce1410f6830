//! "The gate on the zoo": each condition's full revalidation (the truth)
//! against the budgeted gate under a policy, either replayed from the full
//! report (whole-set mode) or run for real under the policy
//! (`study grid --budgeted`). A sequential policy needs the real runs: a
//! replay of full reports cannot redo its looks.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use super::grid::{self, Comparison};
use super::{ladder, study_family, Loaded, ReplayModel, Study};
use crate::error::{Error, Result};
use crate::gate::policy::{Policy, RevalidationMode};
use crate::gate::risk::RiskModel;
use crate::gate::{self, Report};

#[derive(Debug, Clone, Serialize)]
pub struct Condition {
    pub model: String,
    pub condition: String,
    pub family: &'static str,
    pub diff_family: String,
    #[serde(flatten)]
    pub compared: Comparison,
    pub seconds: f64,
    pub ladder: String,
    /// The policy file a run was made under, when `report rejudge` decided
    /// it again under the study's policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejudged_from: Option<String>,
    /// A complete run judged under a policy that stops at its verdict: the
    /// labeled examples it would have spent, when that is before the ladder
    /// ([`gate::replay::stopped_before_the_ladder`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_verdict: Option<usize>,
    /// With `at_verdict`: the run's seconds less its repair ladder's, which
    /// a run stopped before the ladder does not spend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_verdict_seconds: Option<f64>,
    /// Monitors the run left unsettled because a monitor beyond repair had
    /// already decided its verdict (`budget.stop_at_verdict`).
    #[serde(skip_serializing_if = "is_zero")]
    pub cut_short: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One condition's row: the full report is the truth, `b` the budgeted
/// gate's report (replayed or run), `seconds` the time shown beside it.
fn row(cond: &str, full: &Report, b: &Report, policy: &Policy, seconds: f64) -> Condition {
    let at_verdict = (policy.budget.stop_at_verdict && !b.policy.budget.stop_at_verdict)
        .then(|| gate::replay::stopped_before_the_ladder(b))
        .flatten();
    Condition {
        model: full.model_id(),
        condition: cond.to_string(),
        family: study_family(cond),
        diff_family: serde_json::to_value(full.diff.family)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        compared: Comparison::of(full, b, policy),
        seconds,
        ladder: ladder(full),
        rejudged_from: b.rejudged.as_ref().map(|j| j.source.clone()),
        at_verdict,
        at_verdict_seconds: at_verdict
            .map(|_| seconds - b.seconds.get("realignment").copied().unwrap_or(0.0)),
        cut_short: b
            .monitors
            .iter()
            .filter(|m| {
                m.sequential.as_ref().is_some_and(|t| {
                    t.stopped == crate::gate::revalidate::sequential::Stop::Decided
                })
            })
            .count(),
    }
}

fn total_seconds(r: &Report) -> f64 {
    r.seconds.get("total").copied().unwrap_or(0.0)
}

/// Each condition replayed as the budgeted gate would run it in whole-set
/// mode, with the risk model `model_for` gives for the report's model.
pub fn conditions<'m>(
    l: &Loaded,
    policy: &Policy,
    model_for: &dyn Fn(&str) -> &'m RiskModel,
) -> Vec<Condition> {
    l.reports
        .iter()
        .map(|(cond, _, full)| {
            let b = gate::replay::replay_budgeted(full, policy, model_for(&full.model_id()));
            row(cond, full, &b, policy, total_seconds(full))
        })
        .collect()
}

/// Budgets the whole-set replay is also run at (labeled examples per
/// condition; the shipped suites' full revalidations take 968).
pub const SWEEP_BUDGETS: &[usize] = &[120, 240, 360, 480, 600, 720];

/// The whole-set replay of every condition at one budget.
#[derive(Debug, Clone, Serialize)]
pub struct SweepRow {
    pub examples: usize,
    /// The policy's critical list kept (its concepts run whatever the
    /// budget), or emptied (every concept by risk alone).
    pub critical: bool,
    pub used: usize,
    pub full: usize,
    /// With the replay's own risk models (held out where they could be fitted).
    pub false_passes: usize,
    pub false_fails: usize,
    /// With the shipped (in-sample) model.
    pub given_false_passes: usize,
    pub given_false_fails: usize,
}

/// The whole-set replay at each of [`SWEEP_BUDGETS`], with `policy`'s
/// critical list and without: what a smaller labeled budget costs in wrong
/// verdicts, against the same truth. `model_for` is the replay's model per
/// base model, `given` the shipped one.
pub fn sweep<'m>(
    l: &Loaded,
    policy: &Policy,
    model_for: &dyn Fn(&str) -> &'m RiskModel,
    given: &'m RiskModel,
) -> Vec<SweepRow> {
    let mut out = Vec::new();
    for critical in [true, false] {
        for &examples in SWEEP_BUDGETS {
            let mut p = policy.clone();
            p.budget.examples = examples;
            p.budget.repair_reserve = 0;
            if !critical {
                p.critical.clear();
            }
            let held = conditions(l, &p, model_for);
            let shipped = conditions(l, &p, &|_: &str| given);
            let count = |cs: &[Condition], f: fn(&Comparison) -> bool| {
                cs.iter().filter(|c| f(&c.compared)).count()
            };
            out.push(SweepRow {
                examples,
                critical,
                used: held.iter().map(|c| c.compared.examples_used).sum(),
                full: held.iter().map(|c| c.compared.examples_full).sum(),
                false_passes: count(&held, |c| c.false_pass),
                false_fails: count(&held, |c| c.false_fail),
                given_false_passes: count(&shipped, |c| c.false_pass),
                given_false_fails: count(&shipped, |c| c.false_fail),
            });
        }
    }
    out
}

/// STUDY.md's table of [`sweep`], and the cheapest row without a false pass.
fn sweep_table(study: &Study) -> String {
    let mut s = format!(
        "### Smaller budgets, replayed\n\nThe same replay with `budget.examples` at each value \
         below, with the `{}` policy's critical list (its concepts run whatever the budget) and \
         with none (every concept by predicted risk alone). Figures as above; \"in sample\" \
         replays with the shipped risk model.\n\n\
         | budget.examples | critical list | examples used | false passes | false fails | in sample: false passes | in sample: false fails |\n\
         | ---: | --- | ---: | ---: | ---: | ---: | ---: |\n",
        study.policy_name
    );
    let share = |r: &SweepRow| 100.0 * r.used as f64 / r.full.max(1) as f64;
    for r in &study.sweep {
        let _ = writeln!(
            s,
            "| {} | {} | {:.1}% | {} | {} | {} | {} |",
            r.examples,
            if r.critical { "the policy's" } else { "none" },
            share(r),
            r.false_passes,
            r.false_fails,
            r.given_false_passes,
            r.given_false_fails
        );
    }
    let best = study
        .sweep
        .iter()
        .filter(|r| r.false_passes == 0 && r.given_false_passes == 0)
        .min_by(|a, b| share(a).total_cmp(&share(b)));
    match best {
        Some(r) => {
            let _ = writeln!(
                s,
                "\nThe cheapest without a false pass (either model): {:.1}% of a full \
                 revalidation's labeled examples (budget {}, {} critical list), with {} false \
                 fail(s) ({} in sample).\n",
                share(r),
                r.examples,
                if r.critical { "the policy's" } else { "no" },
                r.false_fails,
                r.given_false_fails
            );
        }
        None => s.push_str("\nEvery budget here has a false pass.\n\n"),
    }
    s
}

/// The conditions run for real under a policy (`study grid --budgeted`),
/// keyed by model and condition.
#[derive(Default)]
pub struct Runs {
    by_key: BTreeMap<(String, String), (PathBuf, Report)>,
}

/// Every `<dir>/<condition>/report.json` under the given directories; each
/// must be a budgeted run (a full report would compare the truth with itself).
pub fn load_runs(dirs: &[PathBuf]) -> Result<Runs> {
    let mut runs = Runs::default();
    for d in dirs {
        for s in grid::report_dirs(d)? {
            let r = grid::decided(&s)?;
            let path = s.join("report.json");
            if r.budget.full_revalidation {
                return Err(Error::field(
                    &path,
                    "budget.full_revalidation",
                    "a full-revalidation report: --budgeted takes runs made by `study grid --budgeted`",
                ));
            }
            let cond = r.condition.clone().unwrap_or_else(|| {
                s.file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default()
            });
            let key = (r.model_id(), cond);
            if let Some((first, _)) = runs.by_key.get(&key) {
                return Err(Error::field(
                    &path,
                    "condition",
                    format!(
                        "{} / {} was run twice (also {})",
                        key.0,
                        key.1,
                        first.display()
                    ),
                ));
            }
            runs.by_key.insert(key, (path, r));
        }
    }
    Ok(runs)
}

/// Each condition's real budgeted run against its full report. Every
/// condition must have one, run under `policy` itself, and every run must
/// have its full report: a condition left out would vanish from the
/// false-pass count unseen.
pub fn run_conditions(l: &Loaded, policy: &Policy, runs: &Runs) -> Result<Vec<Condition>> {
    // Whether a run stops at its verdict changes what it leaves undone,
    // never the verdict: complete runs serve a policy that stops, and what
    // the stop would have saved is replayed (`Condition::at_verdict`).
    let mut want = policy.clone();
    want.source.clear();
    want.budget.stop_at_verdict = false;
    let mut missing = Vec::new();
    let mut out = Vec::new();
    for (cond, _, full) in &l.reports {
        let key = (full.model_id(), cond.clone());
        let Some((path, b)) = runs.by_key.get(&key) else {
            missing.push(format!("{} / {}", key.0, key.1));
            continue;
        };
        let mut got = b.policy.clone();
        got.source.clear();
        got.budget.stop_at_verdict = false;
        if got != want {
            return Err(Error::field(
                path,
                "policy",
                format!(
                    "run under policy `{}` (from {}), not the `{}` policy the study is written \
                     for ({}): rerun it under that policy, or pass that one with --policy",
                    b.policy.name, b.policy.source, policy.name, policy.source
                ),
            ));
        }
        out.push(row(cond, full, b, policy, total_seconds(b)));
    }
    if !missing.is_empty() {
        return Err(Error::Usage(format!(
            "{} condition(s) have no budgeted run: {}; run them with `study grid --budgeted`",
            missing.len(),
            missing.join(", ")
        )));
    }
    let known: std::collections::BTreeSet<(String, String)> = l
        .reports
        .iter()
        .map(|(c, _, r)| (r.model_id(), c.clone()))
        .collect();
    if let Some((_, (path, _))) = runs.by_key.iter().find(|(k, _)| !known.contains(*k)) {
        return Err(Error::field(
            path,
            "condition",
            "a budgeted run whose condition has no full-revalidation report among --reports",
        ));
    }
    Ok(out)
}

/// What a column of conditions adds up to.
struct Totals {
    n: usize,
    used: usize,
    full: usize,
    false_passes: usize,
    false_passes_critical: usize,
    false_fails: usize,
    repaired: usize,
}

fn totals(cs: &[Condition]) -> Totals {
    Totals {
        n: cs.len(),
        used: cs.iter().map(|c| c.compared.examples_used).sum(),
        full: cs.iter().map(|c| c.compared.examples_full).sum(),
        false_passes: cs.iter().filter(|c| c.compared.false_pass).count(),
        false_passes_critical: cs.iter().filter(|c| c.compared.false_pass_critical).count(),
        false_fails: cs.iter().filter(|c| c.compared.false_fail).count(),
        repaired: cs.iter().map(|c| c.compared.repaired).sum(),
    }
}

impl Totals {
    fn share(&self) -> f64 {
        100.0 * self.used as f64 / self.full.max(1) as f64
    }

    fn line(&self, spent: &str) -> String {
        format!(
            "False passes: {} of {} ({} with a critical monitor left stale). False fails: {}. \
             {spent} {} of {} labeled examples a full revalidation would run ({:.1}%).",
            self.false_passes,
            self.n,
            self.false_passes_critical,
            self.false_fails,
            self.used,
            self.full,
            self.share()
        )
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "**yes**"
    } else {
        "no"
    }
}

/// One condition's table row; the replay's table also shows the full run's
/// repairs and ladder.
fn table_row(c: &Condition, replayed: bool) -> String {
    let (repaired, ladder) = if replayed {
        (
            format!(" {} |", c.compared.repaired),
            format!(" {} |", c.ladder),
        )
    } else {
        (String::new(), String::new())
    };
    format!(
        "| {} | {} | {} | {} |{repaired} {} | {} | {}/{} | {} | {} |{ladder} {:.0} |\n",
        c.model,
        c.condition,
        c.diff_family,
        c.compared.stale_policy,
        c.compared.full_verdict.as_str(),
        c.compared.budgeted_verdict.as_str(),
        c.compared.examples_used,
        c.compared.examples_full,
        yes(c.compared.false_pass),
        yes(c.compared.false_fail),
        c.seconds
    )
}

/// Per model, "<model> <median> s" of `secs` over its conditions.
fn median_seconds(
    study: &Study,
    runs: &[Condition],
    secs: impl Fn(&Condition) -> f64,
) -> Vec<String> {
    study
        .models
        .iter()
        .map(|m| {
            let mut v: Vec<f64> = runs.iter().filter(|c| &c.model == m).map(&secs).collect();
            format!("{m} {:.0} s", super::median(&mut v))
        })
        .collect()
}

/// Whether the study's policy stops at its verdict.
fn policy_stops(study: &Study) -> bool {
    study.stop_at_verdict
}

/// STUDY.md's "The gate on the zoo" section.
pub fn section(study: &Study) -> String {
    let mut s = String::from(
        "## The gate on the zoo\n\nFull revalidation of every monitor, with every repair rung, is the \
         truth each budgeted verdict is checked against. A false pass is a candidate the budgeted \
         gate passes while a monitor the candidate made stale, critical or not, ships unrepaired: \
         one full revalidation cannot repair, or one it repairs that the budgeted gate neither \
         repaired nor failed on. A false fail is one it fails that full revalidation passes.\n\n",
    );
    let policy = &study.policy_name;
    if let Some(runs) = &study.runs {
        let _ = writeln!(
            s,
            "### The `{policy}` policy, run\n\nEach condition run through the gate by `study grid \
             --budgeted` and judged under the `{policy}` policy (revalidation mode `{}`): real \
             verdicts and costs, from the reports committed beside the full ones.",
            match (study.mode, study.screen) {
                (RevalidationMode::Sequential, true) => "sequential, screened",
                (RevalidationMode::Sequential, false) => "sequential",
                _ => "whole",
            }
        );
        let mut from: Vec<&str> = runs
            .iter()
            .filter_map(|c| c.rejudged_from.as_deref())
            .collect();
        from.sort();
        from.dedup();
        if !from.is_empty() {
            let n = runs.iter().filter(|c| c.rejudged_from.is_some()).count();
            let _ = writeln!(
                s,
                "\n{} were made under {} (which differs from `{policy}` only in \
                 rules the verdict alone reads) and decided again under `{policy}` by \
                 `probegate report rejudge`: examples, seconds and every monitor's state are the \
                 runs', the verdicts the policy's.",
                if n == runs.len() {
                    format!("All {n} runs")
                } else {
                    format!("{n} of these {} runs", runs.len())
                },
                from.iter()
                    .map(|f| format!("`{f}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let _ = writeln!(
            s,
            "\n| model | condition | diff names it | stale (full) | full verdict | gate verdict | examples used / full | false pass | false fail | gate seconds |\n\
             | --- | --- | --- | ---: | --- | --- | --- | --- | --- | ---: |"
        );
        for c in runs {
            s.push_str(&table_row(c, false));
        }
        let t = totals(runs);
        let _ = writeln!(s, "\n{}", t.line("The gate spent"));
        let decided: Vec<&Condition> = runs.iter().filter(|c| c.cut_short > 0).collect();
        if !decided.is_empty() {
            let failing = runs
                .iter()
                .filter(|c| c.compared.budgeted_verdict == crate::gate::Verdict::Fail)
                .count();
            let _ = writeln!(
                s,
                "{} of the {failing} failing conditions stopped at their first monitor beyond \
                 repair (`budget.stop_at_verdict`: a monitor settled stale climbs the ladder at \
                 once): revalidation ended there, {} monitors in all left unsettled by a decided \
                 verdict.",
                decided.len(),
                decided.iter().map(|c| c.cut_short).sum::<usize>()
            );
        }
        let per_model = median_seconds(study, runs, |c| c.seconds);
        let _ = writeln!(
            s,
            "Median gate time per condition as the grid ran it (2 cores; not a benchmark: \
             activations cached by earlier runs were reused, and other work may have shared the \
             machine): {}. The gate's time against the Python peer is measured side by side by \
             `bench/gate.sh`, in BENCHMARKS.md.\n",
            per_model.join(", ")
        );
        let stops: Vec<&Condition> = runs.iter().filter(|c| c.at_verdict.is_some()).collect();
        if policy_stops(study) && !stops.is_empty() {
            let failing = runs
                .iter()
                .filter(|c| c.compared.budgeted_verdict == crate::gate::Verdict::Fail)
                .count();
            let saved: usize = stops
                .iter()
                .map(|c| {
                    c.compared.examples_used
                        - c.at_verdict.unwrap_or(0).min(c.compared.examples_used)
                })
                .sum();
            let used = t.used - saved;
            let _ = writeln!(
                s,
                "These runs climbed the repair ladder whatever the verdict; the `{policy}` policy \
                 stops at its verdict (`budget.stop_at_verdict`). Replayed on the reports, {} of the \
                 {failing} failing conditions are decided before the ladder (every revalidated \
                 monitor taken as healthy, the verdict is still fail) and would spend only \
                 revalidation's examples: {used} of {} labeled examples ({:.1}%), the verdicts \
                 unchanged. Less their repair ladder's seconds, the median gate time per \
                 condition would be {}.\n",
                stops.len(),
                t.full,
                100.0 * used as f64 / t.full.max(1) as f64,
                median_seconds(study, runs, |c| c.at_verdict_seconds.unwrap_or(c.seconds))
                    .join(", ")
            );
        }
    }
    let whole = if study.mode == RevalidationMode::Sequential {
        format!(" with `mode = \"whole\"` in place of the `{policy}` policy's sequential looks")
    } else {
        String::new()
    };
    let _ = writeln!(
        s,
        "### Whole-set revalidation, replayed\n\nEach full-revalidation report replayed as the budgeted gate would run it \
         under the `{policy}` policy{whole} (riskiest and critical concepts first, whole test sets, \
         within the budget), {}.\n\n\
         | model | condition | diff names it | stale | repaired | full verdict | budgeted verdict | examples used / full | false pass | false fail | ladder | seconds |\n\
         | --- | --- | --- | ---: | ---: | --- | --- | --- | --- | --- | --- | ---: |",
        match study.replay_model {
            ReplayModel::LeaveModelOut =>
                "the riskiest judged by a risk model refitted (`risk fit`, policy target) without the \
                 condition's own model, as a new base would meet it: the shipped model is fitted on \
                 this grid, so replaying with it would be in sample",
            ReplayModel::Given => "the riskiest judged by the given risk model",
        }
    );
    for c in &study.conditions {
        s.push_str(&table_row(c, true));
    }
    let t = totals(&study.conditions);
    let _ = writeln!(
        s,
        "\n{} Monitors repaired: {}. The seconds column is the grid's own run (full \
         revalidation, every rung tried alone).\n",
        t.line("The budget spent"),
        t.repaired
    );
    if study.replay_model == ReplayModel::LeaveModelOut {
        let _ = writeln!(
            s,
            "With the shipped risk model instead (in sample): false passes {}, {:.1}% of the labeled \
             examples.\n",
            study.given_false_passes,
            100.0 * study.given_examples_used as f64 / t.full.max(1) as f64
        );
    }
    s.push_str(&sweep_table(study));
    s
}
