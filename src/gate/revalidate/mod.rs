//! Revalidation: a monitor's labeled test set through the candidate, its
//! metrics against the base figures recorded in the monitor, and whether the
//! policy calls it stale. Thresholded metrics are judged as well as AUROC:
//! staleness often shows as a shifted threshold while ranking survives.
//!
//! Concepts are revalidated in [`plan`] order (critical first, then by
//! predicted risk) until the policy's budget is spent; a concept's test set
//! serves all its monitors with one forward pass per pooling.

pub mod data;
mod driver;
mod ledger;
pub mod screened;
pub mod sequential;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::activations::cache::ActCache;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::gate::policy::{MetricLimits, Policy, RevalidationMode, WeakMonitors};
use crate::gate::prepare::Progress;
pub use crate::monitor::eval::{evaluate, evaluate_suite, EvalOptions, EvalResult};
use crate::monitor::{self as mon, Monitor};
pub use data::{DataSource, LabeledSets};
pub use driver::{paired_eval, OnSettled};
pub use ledger::{left_under, Batch, Extender, Kept};

/// A monitor's state after revalidation and the repair ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Revalidated and within the policy's limits.
    Healthy,
    /// Stale, repaired by a rung of the ladder (verified if the policy says so).
    Repaired,
    /// Stale and not repaired.
    Stale,
    /// Outside the budget: not revalidated.
    Unverified,
}

/// Why a monitor never met the policy on its own base (its recorded
/// held-out AUROC is below `min_auroc`): a fact about the suite, not about
/// any candidate.
pub fn weak_on_base(m: &Monitor, lim: &MetricLimits) -> Option<String> {
    let b = &m.meta.base_metrics;
    (b.auroc < lim.min_auroc).then(|| {
        format!(
            "{} is below the policy on its own base: held-out AUROC {:.3} < min_auroc {}",
            m.meta.name, b.auroc, lim.min_auroc
        )
    })
}

/// Why the suite cannot show a monitor clears `min_auroc` on its own base:
/// its recorded AUROC does, but the lower end of its 95% interval does not
/// (0.805 on 180 examples reads [0.740, 0.866]). A candidate that reads such a
/// monitor just under the floor has not been shown to have moved it there,
/// so, as for a weak monitor, only its drops count. Always a finding, never
/// refused or left out: the monitor may well meet the policy.
pub fn floor_unproven(m: &Monitor, lim: &MetricLimits) -> Option<String> {
    let b = &m.meta.base_metrics;
    (b.auroc >= lim.min_auroc && b.auroc_ci95[0] < lim.min_auroc).then(|| {
        format!(
            "{} is not clearly above min_auroc {} on its own base: held-out AUROC {:.3}, \
             95% interval [{:.3}, {:.3}] on {} examples",
            m.meta.name, lim.min_auroc, b.auroc, b.auroc_ci95[0], b.auroc_ci95[1], b.n
        )
    })
}

/// Whether `min_auroc` can make `m` stale: only when its base shows it
/// clears that floor ([`weak_on_base`], [`floor_unproven`]).
pub fn floor_applies(m: &Monitor, lim: &MetricLimits) -> bool {
    weak_on_base(m, lim).is_none() && floor_unproven(m, lim).is_none()
}

/// Which kind of limit a monitor's evaluation breaks: the study reports
/// the two definitions of stale side by side (#17).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breaks {
    /// Ranking: AUROC dropped by 0.05 or more (the study's definition,
    /// what the risk model predicts).
    pub ranking: bool,
    /// Operating point: balanced accuracy, TPR or FPR at the monitor's own
    /// threshold beyond the policy's limits.
    pub operating_point: bool,
}

/// [`Breaks`] of `e` under the limits `lim`.
pub fn breaks(m: &Monitor, e: &EvalResult, lim: &MetricLimits) -> Breaks {
    let b = &m.meta.base_metrics;
    Breaks {
        ranking: e.delta_auroc <= -RANKING_DROP + 1e-12,
        operating_point: e.balanced_accuracy - b.balanced_accuracy
            < -lim.max_balanced_accuracy_drop
            || e.fpr - b.fpr > lim.max_fpr_increase
            || b.tpr - e.tpr > lim.max_tpr_drop,
    }
}

/// The study's ranking definition of stale: ΔAUROC ≤ −0.05.
pub const RANKING_DROP: f64 = 0.05;

/// Why a monitor is stale (empty when it is not). A monitor weak on its
/// base, or not clearly above the floor there, is judged only on what the
/// candidate changed (the drops), never on the absolute `min_auroc` its base
/// did not show it meets either ([`floor_applies`]).
pub fn stale_reasons(m: &Monitor, e: &EvalResult, lim: &MetricLimits) -> Vec<String> {
    let b = &m.meta.base_metrics;
    let mut out = ranking_reasons(m, e, lim);
    let dba = e.balanced_accuracy - b.balanced_accuracy;
    if dba < -lim.max_balanced_accuracy_drop {
        out.push(format!(
            "balanced accuracy at the threshold {:.3} → {:.3} (Δ {:+.3})",
            b.balanced_accuracy, e.balanced_accuracy, dba
        ));
    }
    if e.fpr - b.fpr > lim.max_fpr_increase {
        out.push(format!("FPR {:.3} → {:.3}", b.fpr, e.fpr));
    }
    if b.tpr - e.tpr > lim.max_tpr_drop {
        out.push(format!("TPR {:.3} → {:.3}", b.tpr, e.tpr));
    }
    out
}

/// The limits on AUROC `e` breaks for `m`: the part of [`stale_reasons`] no
/// threshold can change.
pub fn ranking_reasons(m: &Monitor, e: &EvalResult, lim: &MetricLimits) -> Vec<String> {
    let b = &m.meta.base_metrics;
    let mut out = Vec::new();
    // A tiny epsilon so a drop of exactly the limit counts despite rounding.
    if e.delta_auroc <= -lim.max_auroc_drop + 1e-12 {
        out.push(format!(
            "AUROC {:.3} → {:.3} (Δ {:+.3} ≤ −{})",
            b.auroc, e.auroc, e.delta_auroc, lim.max_auroc_drop
        ));
    }
    if e.auroc < lim.min_auroc && floor_applies(m, lim) {
        out.push(format!("AUROC {:.3} below {}", e.auroc, lim.min_auroc));
    }
    out
}

/// What starts a warning that is a finding about the suite, not about the
/// candidate: what a merge or a rejudge carries over as it was, while the
/// verdict's own warnings are decided again.
pub const SUITE_FINDING: &str = "suite: ";

/// The suite as the policy lets it be checked, and what the policy makes
/// of monitors below it on their own base: a finding about the suite, never
/// a reason to fail the candidate (warned, left out, or refused).
pub fn triage_suite(
    mut suite: Vec<Monitor>,
    policy: &Policy,
) -> Result<(Vec<Monitor>, Vec<String>)> {
    let unproven: Vec<String> = suite
        .iter()
        .filter_map(|m| floor_unproven(m, &policy.metrics))
        .map(|w| format!("{SUITE_FINDING}{w}; judged only on what the candidate changed"))
        .collect();
    let weak: Vec<String> = suite
        .iter()
        .filter_map(|m| weak_on_base(m, &policy.metrics))
        .collect();
    if weak.is_empty() {
        return Ok((suite, unproven));
    }
    let mut findings: Vec<String> = match policy.suite.weak_monitors {
        WeakMonitors::Refuse => {
            return Err(Error::Usage(format!(
                "the monitor suite does not meet policy `{}` on its own base (suite.weak_monitors = \"refuse\"): {}",
                policy.name,
                weak.join("; ")
            )))
        }
        WeakMonitors::Exclude => {
            suite.retain(|m| weak_on_base(m, &policy.metrics).is_none());
            if suite.is_empty() {
                return Err(Error::Usage(format!(
                    "every monitor is below policy `{}` on its own base and suite.weak_monitors excludes them: {}",
                    policy.name,
                    weak.join("; ")
                )));
            }
            weak.iter()
                .map(|w| format!("{SUITE_FINDING}{w}; left out of this check"))
                .collect()
        }
        WeakMonitors::Warn => weak
            .iter()
            .map(|w| format!("{SUITE_FINDING}{w}; judged only on what the candidate changed"))
            .collect(),
    };
    findings.extend(unproven);
    Ok((suite, findings))
}

/// Labeled data per concept: the test sets (always) and the training splits
/// the repair ladder may spend (only when a rung that reads them is on).
pub struct LabeledData {
    pub tests: BTreeMap<String, (PathBuf, mon::data::Labeled)>,
    pub trains: BTreeMap<String, (PathBuf, mon::data::Labeled)>,
}

impl LabeledData {
    /// Read (and hash-checked) before any compute, so a wrong data directory fails fast.
    pub fn find(
        suite: &[Monitor],
        suite_dir: &Path,
        source: &DataSource,
        with_train: bool,
    ) -> Result<Self> {
        let roots = source.roots(suite_dir)?;
        let mut out = LabeledData {
            tests: BTreeMap::new(),
            trains: BTreeMap::new(),
        };
        for m in suite {
            if out.tests.contains_key(&m.meta.concept) {
                continue;
            }
            let sets: LabeledSets = data::find_sets(&roots, m)?;
            if with_train {
                out.trains
                    .insert(m.meta.concept.clone(), data::train_set(&sets, m)?);
            }
            out.tests.insert(m.meta.concept.clone(), sets.test);
        }
        Ok(out)
    }

    /// Examples a full revalidation of every concept would run.
    pub fn examples_full(&self) -> usize {
        self.tests.values().map(|(_, d)| d.texts.len()).sum()
    }
}

/// Revalidation order over concepts (a concept's test set serves all its
/// monitors): those holding a critical monitor first, then by their riskiest
/// monitor. Input: (concept, critical, p_stale) per monitor.
pub fn plan<'a>(monitors: impl IntoIterator<Item = (&'a str, bool, f64)>) -> Vec<(String, bool)> {
    let mut by: BTreeMap<&str, (bool, f64)> = BTreeMap::new();
    for (c, crit, risk) in monitors {
        let e = by.entry(c).or_insert((false, 0.0));
        e.0 |= crit;
        e.1 = e.1.max(risk);
    }
    let mut v: Vec<(&str, bool, f64)> = by.into_iter().map(|(c, (k, r))| (c, k, r)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.total_cmp(&a.2)));
    v.into_iter().map(|(c, k, _)| (c.to_string(), k)).collect()
}

/// [`plan`] for a suite under `policy`, each monitor at its predicted risk
/// (1.0, first, for one without a prediction).
pub fn plan_suite(
    monitors: &[Monitor],
    policy: &Policy,
    risks: &BTreeMap<String, crate::gate::risk::Risk>,
) -> Vec<(String, bool)> {
    plan(monitors.iter().map(|m| {
        (
            m.meta.concept.as_str(),
            policy.is_critical(&m.meta.name, &m.meta.concept),
            risks.get(&m.meta.name).map_or(1.0, |r| r.p_stale),
        )
    }))
}

/// The concepts revalidated with the critical ones: those holding a
/// critical monitor ([`plan`] puts them first).
pub fn critical_concepts<'m>(
    monitors: &'m [Monitor],
    policy: &Policy,
) -> std::collections::BTreeSet<&'m str> {
    monitors
        .iter()
        .filter(|m| policy.is_critical(&m.meta.name, &m.meta.concept))
        .map(|m| m.meta.concept.as_str())
        .collect()
}

/// The order concepts are revalidated in ([`plan`]) and whether the budget
/// applies (`full`: every concept, the grid's ground truth).
pub struct Schedule {
    pub order: Vec<(String, bool)>,
    pub full: bool,
    /// Monitors the suite's error rate is shared over (`[revalidation]
    /// correction`): the whole suite's, also when one shard runs part of it.
    pub suite_monitors: usize,
}

/// One revalidated monitor: its metrics, and the labels and candidate test
/// activations behind them (kept so a repair is verified without another
/// forward pass).
pub struct Revalidated {
    pub eval: EvalResult,
    pub labels: Vec<u8>,
    pub x: Vec<Vec<f32>>,
    /// Sequential revalidation: the base side of the same examples, so a
    /// repair is verified by the same paired rule.
    pub paired: Option<PairedBase>,
}

/// The base side of a monitor's examples under sequential revalidation.
pub struct PairedBase {
    pub base_scores: Vec<f64>,
    pub population: sequential::Population,
    pub z: f64,
    /// Screened revalidation: the whole test set, so a repair is judged on
    /// worst-case bounds and reads the labels it needs.
    pub screened: Option<ScreenedSet>,
}

/// A concept's whole test set as screening ran it, in the set's order: the
/// original monitor's base scores, the candidate activations at its block,
/// and the labels, which count as read only through the ledger
/// ([`Extender::read_labels`]).
pub struct ScreenedSet {
    pub concept: String,
    pub base_scores: Vec<f64>,
    pub x: Vec<Vec<f32>>,
    pub labels: Vec<u8>,
}

/// What revalidation measured, by monitor name, and what it spent.
pub struct Revalidation {
    pub evals: BTreeMap<String, Revalidated>,
    pub examples_used: usize,
    /// Sequential revalidation: per monitor, the examples, bounds and why it stopped.
    pub traces: BTreeMap<String, sequential::Trace>,
}

/// What revalidation reads: both models (the base side of sequential
/// revalidation's pairs), the suite, its test sets, the plan and the policy.
#[derive(Clone, Copy)]
pub struct Inputs<'a> {
    pub base: &'a Checkpoint,
    pub cand: &'a Checkpoint,
    pub cache: &'a ActCache,
    pub monitors: &'a [Monitor],
    pub tests: &'a BTreeMap<String, (PathBuf, mon::data::Labeled)>,
    pub schedule: &'a Schedule,
    pub policy: &'a Policy,
}

/// Runs concepts in `order` through the candidate until the policy's
/// budget (examples, seconds) is spent; a concept holding a critical
/// monitor always runs, and `full` ignores the budget (the grid's ground
/// truth). Under `[revalidation] mode = "sequential"` each concept is spent
/// in batches until its monitors are settled ([`sequential`]), its labels
/// counted in `ledger` (which the ladder then shares) and each monitor
/// settled stale handed to `hook` ([`OnSettled`]).
pub fn revalidate<'a>(
    inputs: &Inputs<'a>,
    progress: Progress,
    sequential: Option<(&Extender<'a>, Option<&mut dyn OnSettled>)>,
) -> Result<Revalidation> {
    match (inputs.policy.revalidation.mode, sequential) {
        (RevalidationMode::Sequential, Some((ledger, hook))) => {
            driver::run(inputs, progress, ledger, hook)
        }
        (RevalidationMode::Sequential, None) => Err(Error::Usage(
            "internal: sequential revalidation without its ledger".into(),
        )),
        (RevalidationMode::Whole, _) => whole(inputs, progress),
    }
}

/// Revalidation of a candidate that runs its base's very forward pass (the
/// same [`Checkpoint::forward_identity`]): every monitor's scores are its
/// base's on every example, so its change in every metric is exactly zero
/// and it is healthy on no labeled example at all. What a full
/// revalidation would find, without running it.
pub fn unchanged(inputs: &Inputs) -> Result<Revalidation> {
    let rp = &inputs.policy.revalidation;
    let mut evals = BTreeMap::new();
    let mut traces = BTreeMap::new();
    for m in inputs.monitors {
        let Some((_, d)) = inputs.tests.get(&m.meta.concept) else {
            continue;
        };
        let b = &m.meta.base_metrics;
        let eval = EvalResult {
            monitor: m.meta.name.clone(),
            layer: m.meta.hook.layer,
            n: 0,
            auroc: b.auroc,
            auroc_ci95: [b.auroc, b.auroc],
            balanced_accuracy: b.balanced_accuracy,
            tpr: b.tpr,
            fpr: b.fpr,
            threshold: m.meta.classifier.threshold,
            base_auroc: b.auroc,
            delta_auroc: 0.0,
            base_balanced_accuracy: b.balanced_accuracy,
        };
        traces.insert(
            m.meta.name.clone(),
            sequential::Trace {
                examples: 0,
                of: d.labels.len(),
                bounds: Some(sequential::Bounds::zero()),
                z: sequential::concept_z(rp, inputs.schedule.suite_monitors, d.labels.len()),
                stopped: sequential::Stop::SameForward,
            },
        );
        evals.insert(
            m.meta.name.clone(),
            Revalidated {
                eval,
                labels: Vec::new(),
                x: Vec::new(),
                paired: None,
            },
        );
    }
    Ok(Revalidation {
        evals,
        examples_used: 0,
        traces,
    })
}

/// A concept's whole test set or none of it, riskiest first.
fn whole(inputs: &Inputs, progress: Progress) -> Result<Revalidation> {
    let (cand, cache, tests, policy) = (inputs.cand, inputs.cache, inputs.tests, inputs.policy);
    let Schedule { order, full, .. } = inputs.schedule;
    let t = Instant::now();
    let mut used = 0usize;
    let mut evals = BTreeMap::new();
    for (concept, critical) in order {
        let Some((_, d)) = tests.get(concept) else {
            continue;
        };
        let n = d.texts.len();
        let over_examples = used + n > policy.budget.examples;
        let over_time = policy
            .budget
            .seconds
            .is_some_and(|s| t.elapsed().as_secs_f64() > s);
        if !*full && !critical && (over_examples || over_time) {
            continue;
        }
        used += n;
        let group = inputs
            .monitors
            .iter()
            .filter(|m| &m.meta.concept == concept);
        let mut seen = 0;
        let done = evaluate_suite(cand, cache, group, d, EvalOptions::default(), &mut |k| {
            seen += k;
            progress(&format!("revalidating {concept}"), seen, n)
        })?;
        for e in done {
            evals.insert(
                e.monitor.meta.name.clone(),
                Revalidated {
                    eval: e.eval,
                    labels: d.labels.clone(),
                    x: e.x.to_vec2()?,
                    paired: None,
                },
            );
        }
    }
    Ok(Revalidation {
        evals,
        examples_used: used,
        traces: BTreeMap::new(),
    })
}

#[cfg(test)]
mod tests;
