//! The gate: one pipeline of stages, each a module taking and returning
//! plain data, declared in the order they run —
//!
//! [`prepare`] (open both models, check the suite, read the corpus) →
//! [`diff`] (name the update) → [`features`] (pre-deployment features on
//! paired corpus activations) → [`risk`] (P(stale) per monitor) →
//! [`policy`] (what the run is judged by) → [`shard`] (which concepts this
//! run judges, when a suite is spread over CI jobs) → [`revalidate`] (labeled data,
//! riskiest first, within the budget) → [`repair`] (the ladder: realign,
//! recalibrate, retrain, each verified; under `budget.stop_at_verdict`
//! it climbs as monitors settle stale, and [`deferred`] holds back the
//! concept features outside the critical concepts until revalidation
//! reaches them) → [`verdict`] → [`report`] (the
//! report's types and its JSON, Markdown, HTML and JUnit writers);
//! [`replay`] replays a full revalidation as the budgeted gate would run it.
//!
//! [`run`] calls them in that order; the CLI, the git hook, the GitHub
//! adapter, the webhook server and the lab's grid all call it (through
//! [`run_and_record`] when they keep the outputs).

pub mod prepare;
pub mod diff;
pub mod features;
pub mod risk;
pub mod policy;
pub mod shard;
pub mod revalidate;
pub mod repair;
pub mod deferred;
mod unlabeled;
pub mod verdict;
pub mod report;
pub mod replay;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::activations::cache::{ActCache, Kept};
use crate::error::Result;
use crate::monitor::{self as mon, BaseCheck, Monitor};
use policy::Policy;
pub use prepare::{Corpus, Progress};
use report::{BudgetUse, DiffSummary, ModelInfo, REPORT_SCHEMA, REPORT_VERSION};
pub use report::{Outcome, Report, Status, Verdict};
use revalidate::{data::DataSource, LabeledData};
use risk::RiskModel;
use unlabeled::{corpus_of, load_and_diff, reads_train, timed, unlabeled};
pub use unlabeled::{features_only, predict_only, FeaturesOnly, Predicted};
use verdict::Decision;

/// What one gate run is asked to check.
pub struct GateRequest {
    pub base: String,
    pub candidate: String,
    pub monitors: PathBuf,
    /// Where the labeled sets are found (`<root>/<concept>/test.jsonl`).
    pub data: DataSource,
    pub policy: Policy,
    pub risk_model: RiskModel,
    /// Revalidate every monitor regardless of the budget (ground truth for the grid).
    pub full_revalidation: bool,
    /// The study's grid: every rung of the ladder tried alone on each stale
    /// monitor, recorded for the study, never read by the verdict.
    pub every_rung: bool,
    /// A name for the candidate (the zoo's condition), recorded in history.
    pub condition: Option<String>,
    /// A key naming this run (serve: its job), recorded in history so a
    /// retried run appends its rows once.
    pub run: Option<String>,
    /// Judge only this shard's concepts (`--shard I/N`); `report merge`
    /// combines the shards' reports.
    pub shard: Option<shard::Shard>,
}

/// The report and the repaired monitors to write beside it.
pub struct GateOutput {
    pub report: Report,
    pub repaired: Vec<Monitor>,
}

impl GateOutput {
    /// report.json, report.md, report.html and `repaired/<name>` under `out`.
    pub fn write(&self, out: &Path) -> Result<()> {
        report::write_outputs(out, &self.report, &self.repaired)
    }
}

/// The whole gate on one candidate.
pub fn run(req: &GateRequest, progress: Progress) -> Result<GateOutput> {
    let t0 = Instant::now();
    let mut secs = BTreeMap::new();
    let (suite, findings) = revalidate::triage_suite(mon::load_suite(&req.monitors)?, &req.policy)?;
    // Labeled data is read (and hash-checked) before any compute, so a wrong
    // data directory fails in seconds.
    let data = LabeledData::find(&suite, &req.monitors, &req.data, reads_train(&req.policy))?;
    let suite_monitors = suite.len();
    let Sharded {
        suite,
        data,
        policy,
        info: shard_info,
    } = select_shard(req.shard, suite, data, &req.policy)?;
    let policy = &policy;
    let cache = ActCache::from_env();
    let sequential = policy.revalidation.mode == policy::RevalidationMode::Sequential;
    // Full revalidation and study runs are the whole picture: never cut short.
    let stops = policy.budget.stop_at_verdict && !req.every_rung && !req.full_revalidation;
    // Study runs record every feature, for the risk fits that learn from them.
    let with_corpus = req.risk_model.reads_corpus() || req.every_rung;
    let (models, diff) = load_and_diff(
        (&req.base, &req.candidate),
        &suite,
        corpus_of(policy),
        BaseCheck::Require,
        &mut secs,
        progress,
    )?;
    // A candidate that runs its base's very forward pass (same weights,
    // config, tokenizer, adapter scales) changes no score on any example:
    // every monitor is healthy on no labeled example (revalidate::unchanged).
    // `--full` and study runs still measure it.
    let same_forward = !req.full_revalidation
        && !req.every_rung
        && models.base.forward_identity()? == models.cand.forward_identity()?;
    // Under the stop, the concept features outside the critical concepts
    // wait until revalidation gets past them ([`deferred`]).
    let (now, later): (Vec<Monitor>, Vec<Monitor>) = if stops && sequential && !same_forward {
        let critical = revalidate::critical_concepts(&suite, policy);
        suite
            .iter()
            .cloned()
            .partition(|m| critical.contains(m.meta.concept.as_str()))
    } else {
        (suite.clone(), Vec::new())
    };
    // One base and one candidate model, loaded once for every stage.
    let kept = RefCell::new(Kept::default());
    let (corpus_acts, mut features) = unlabeled(
        (&models, &diff),
        (&suite, &now, &data.trains),
        with_corpus,
        (&cache, Some(&kept)),
        &mut secs,
        progress,
    )?;
    let mut risks = req.risk_model.predict_each(&features);
    let schedule = revalidate::Schedule {
        order: revalidate::plan_suite(&suite, policy, &risks),
        full: req.full_revalidation,
        suite_monitors,
    };
    let inputs = revalidate::Inputs {
        base: &models.base,
        cand: &models.cand,
        cache: &cache,
        monitors: &suite,
        tests: &data.tests,
        schedule: &schedule,
        policy,
    };
    let extender = sequential.then(|| revalidate::Extender::new(&inputs, &kept));
    let corpus = features::LazyCorpus::new(&models, &suite, (&cache, Some(&kept)), corpus_acts);
    let fails = |ms: &[repair::MonitorReport]| {
        verdict::decide(policy, diff.family, ms, models.corpus.len()).verdict == Verdict::Fail
    };
    let cx = repair::Context {
        policy,
        models: &models,
        cache: &cache,
        corpus_acts: &corpus,
        trains: &data.trains,
        extend: extender.as_ref(),
        // Whole-set mode: set to what revalidation leaves of the budget.
        rung_budget: std::cell::Cell::new(0),
        every_rung: req.every_rung,
    };
    let stop = stops.then_some(&fails as repair::FailsVerdict);
    // Under sequential revalidation a stale monitor climbs as soon as it is
    // settled, and revalidation stops once one is beyond repair.
    let mut early = match (stop, &extender) {
        (Some(f), Some(_)) => Some(deferred::Deferred::new(
            repair::Early::new(&cx, &suite, &risks, &features, f)?,
            deferred::Sources {
                models: &models,
                suite: &suite,
                trains: &data.trains,
                cache: &cache,
                kept: Some(&kept),
                diff: &diff,
                corpus: &corpus,
                with_corpus,
                risk_model: &req.risk_model,
                policy,
            },
            later,
            std::mem::take(&mut features),
            std::mem::take(&mut risks),
        )),
        _ => None,
    };
    let reval = timed(&mut secs, "revalidation", || {
        if same_forward {
            return revalidate::unchanged(&inputs);
        }
        let hook = early.as_mut().map(|e| e as &mut dyn revalidate::OnSettled);
        revalidate::revalidate(&inputs, progress, extender.as_ref().map(|e| (e, hook)))
    })?;
    cx.rung_budget.set(revalidate::left_under(
        policy,
        req.full_revalidation,
        reval.examples_used,
    ));
    let climbed = match early {
        Some(d) => {
            let (e, f, r, later_secs) = d.finish();
            (features, risks) = (f, r);
            // The deferred features are the features stage's, run later.
            *secs.entry("features".into()).or_insert(0.0) += later_secs;
            if let Some(r) = secs.get_mut("revalidation") {
                *r -= later_secs;
            }
            e.climbed()
        }
        None => repair::Climbed::none(&cx),
    };
    let mut repairs = timed(&mut secs, "realignment", || {
        repair::repair(
            &cx,
            &suite,
            &reval.evals,
            &risks,
            &features,
            stop,
            climbed,
            progress,
        )
    })?;
    let mut traces = reval.traces;
    for r in repairs.reports.iter_mut() {
        r.sequential = traces.remove(&r.name);
    }
    repair::riskiest_first(&mut repairs.reports);
    let extra = extender.as_ref().map_or(0, |e| e.extra());
    let Decision {
        verdict,
        reasons,
        mut warnings,
        failed_by,
    } = verdict::decide(policy, diff.family, &repairs.reports, models.corpus.len());
    warnings.splice(0..0, findings);
    if let Some(e) = cache.write_error() {
        // Not the candidate's doing and not the verdict's business: the run
        // computed every activation it read; only the next run is slower.
        warnings.push(format!(
            "the activation cache could not be written ({e}); this run computed \
             what it needed and its verdict stands, but the next run computes it again"
        ));
    }
    secs.insert("total".into(), t0.elapsed().as_secs_f64());
    let report = Report {
        schema: REPORT_SCHEMA.into(),
        version: REPORT_VERSION,
        probegate_version: env!("CARGO_PKG_VERSION").into(),
        verdict,
        reasons,
        failed_by,
        warnings,
        base: ModelInfo {
            reference: models.base.spec.clone(),
            fingerprint: models.base_fp.clone(),
        },
        candidate: ModelInfo {
            reference: models.cand.spec.clone(),
            fingerprint: models.cand_fp.clone(),
        },
        condition: req.condition.clone(),
        // The policy as given; a shard's share of its budget is in `budget`.
        policy: req.policy.clone(),
        diff: DiffSummary {
            family: diff.family,
            evidence: diff.evidence,
            blocks: diff.blocks,
            kinds: diff.kinds,
        },
        budget: BudgetUse {
            examples_limit: policy.budget.examples,
            examples_used: reval.examples_used + repairs.examples_used + extra,
            examples_full: data.examples_full(),
            seconds_limit: policy.budget.seconds,
            full_revalidation: req.full_revalidation,
        },
        monitors: repairs.reports,
        corpus_prompts: models.corpus.len(),
        seconds: secs,
        shard: shard_info,
        rejudged: None,
    };
    Ok(GateOutput {
        report,
        repaired: repairs.repaired,
    })
}

/// [`run`], then the outputs written under `out` (when given) and the
/// history rows appended to `history` (when given): the one sequence the
/// CLI, the server and the lab's grid share.
pub fn run_and_record(
    req: &GateRequest,
    out: Option<&Path>,
    history: Option<&Path>,
    progress: Progress,
) -> Result<GateOutput> {
    // An earlier run's verdict goes before any work: if this run dies, the
    // directory says nothing rather than something stale.
    if let Some(dir) = out {
        report::clear_outputs(dir)?;
    }
    let output = run(req, progress)?;
    if let Some(dir) = out {
        output.write(dir)?;
    }
    if let Some(path) = history {
        let r = &output.report;
        let mut rows = r.history(&r.model_id());
        rows.iter_mut().for_each(|row| row.run.clone_from(&req.run));
        risk::append_history(path, &rows)?;
    }
    Ok(output)
}

/// The shard runs written under `dirs` (`check --shard I/N --out DIR`),
/// merged into one report with every shard's repaired monitors.
pub fn merge_shards(dirs: &[PathBuf]) -> Result<GateOutput> {
    let parts = dirs
        .iter()
        .map(|d| {
            Ok(report::merge::Part {
                path: d.clone(),
                report: report::ReportFile::read(d)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let report = report::merge::merge(&parts)?;
    let mut repaired = Vec::new();
    for p in &parts {
        if let report::ReportFile::Decided(r) = &p.report {
            repaired.extend(repaired_of(&p.path, r)?);
        }
    }
    Ok(GateOutput { report, repaired })
}

/// The run written under `dir` decided again under `policy`'s verdict
/// rules (`probegate report rejudge`), with its repaired monitors, which
/// must be there unless `report_only` (an archived report.json alone: the
/// new report then names repaired monitors it does not carry).
pub fn rejudge(dir: &Path, policy: &Policy, report_only: bool) -> Result<GateOutput> {
    let report::ReportFile::Decided(r) = report::ReportFile::read(dir)? else {
        return Err(crate::error::Error::field(
            dir.join("report.json"),
            "verdict",
            "the run could not evaluate, so there is no verdict to decide again",
        ));
    };
    let report = report::rejudge::rejudge(dir, &r, policy)?;
    let repaired = if report_only {
        Vec::new()
    } else {
        repaired_of(dir, &r).map_err(|e| match e {
            crate::error::Error::Io { path, .. } if !path.exists() => crate::error::Error::field(
                dir.join("report.json"),
                "monitors[].repaired_monitor",
                format!(
                    "{} is missing: the run's repaired monitors are not beside its report (an archived report.json?); pass --report-only to decide the report alone",
                    path.display()
                ),
            ),
            e => e,
        })?
    };
    Ok(GateOutput { report, repaired })
}

/// The repaired monitors a run wrote beside its report.json.
fn repaired_of(dir: &Path, r: &Report) -> Result<Vec<Monitor>> {
    let mut repaired = Vec::new();
    for m in r.monitors.iter().filter(|m| m.repaired_monitor.is_some()) {
        // Only ever `repaired/<monitor>` inside the run's directory,
        // whatever the file says.
        if !mon::is_valid_name(&m.name) {
            return Err(crate::error::Error::field(
                dir.join("report.json"),
                "monitors[].name",
                format!("`{}` is not a monitor name", m.name),
            ));
        }
        repaired.push(Monitor::load(&dir.join("repaired").join(&m.name))?);
    }
    Ok(repaired)
}

/// The part of the suite one run judges, and the policy it runs under.
struct Sharded {
    suite: Vec<Monitor>,
    data: LabeledData,
    /// The request's policy, with a shard's share of the example budget.
    policy: Policy,
    info: Option<shard::ShardInfo>,
}

/// Keeps the shard's concepts of `suite` and `data` ([`shard::partition`]);
/// without a shard, everything.
fn select_shard(
    which: Option<shard::Shard>,
    mut suite: Vec<Monitor>,
    mut data: LabeledData,
    policy: &Policy,
) -> Result<Sharded> {
    let Some(which) = which else {
        return Ok(Sharded {
            suite,
            data,
            policy: policy.clone(),
            info: None,
        });
    };
    let sizes: Vec<(String, usize)> = data
        .tests
        .iter()
        .map(|(c, (_, d))| (c.clone(), d.texts.len()))
        .collect();
    let parts = shard::partition(&sizes, which.count);
    let mine = parts[which.index - 1].clone();
    if mine.is_empty() {
        return Err(crate::error::Error::Usage(format!(
            "--shard {which}: the suite has {} concepts, so shard {} of {} would judge none; \
             use at most {} shards",
            sizes.len(),
            which.index,
            which.count,
            sizes.len()
        )));
    }
    let suite_monitors = suite.len();
    let suite_examples = data.examples_full();
    suite.retain(|m| mine.contains(&m.meta.concept));
    data.tests.retain(|c, _| mine.contains(c));
    data.trains.retain(|c, _| mine.contains(c));
    let mut policy = policy.clone();
    policy.budget.examples =
        shard::budget_share(policy.budget.examples, data.examples_full(), suite_examples);
    // The ladder's reserve shrinks with the budget it is part of.
    policy.budget.repair_reserve = shard::budget_share(
        policy.budget.repair_reserve,
        data.examples_full(),
        suite_examples,
    );
    Ok(Sharded {
        suite,
        data,
        policy,
        info: Some(shard::ShardInfo {
            index: which.index,
            count: which.count,
            concepts: mine,
            suite_concepts: sizes.into_iter().map(|(c, _)| c).collect(),
            suite_monitors,
        }),
    })
}
