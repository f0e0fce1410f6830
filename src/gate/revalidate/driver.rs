//! Sequential revalidation run on the models: each concept's test set in
//! the seeded stratified order; critical concepts until settled (the first
//! looks the others are owed held back from them), a first look for every
//! other concept, then batches for the riskiest concept with unsettled
//! monitors until each is settled or the budget is spent. Under
//! `budget.stop_at_verdict` a monitor settled stale climbs its repair
//! ladder at once ([`OnSettled`]), and revalidation stops as soon as one is
//! beyond repair. The rule itself is pure ([`super::sequential`]); this
//! file spends forward passes on it.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::activations::cache::{cached_activations_parts, ActCache, ActSpec};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::gate::policy::Policy;
use crate::gate::prepare::Progress;
use crate::model::Model;
use crate::monitor::{self as mon, by_pooling, Monitor};

use super::ledger::{revalidation_left, Extender};
use super::sequential::{
    bounds, concept_z, settle, stratified_order, Bounds, Paired, Population, Settled, Stop,
    Thresholds, Trace,
};
use super::{
    floor_applies, EvalResult, Inputs, PairedBase, Revalidated, Revalidation, ScreenedSet,
};

mod screen;

/// A monitor's scores on a batch and the activations behind them.
type Scored = (Vec<f64>, Vec<Vec<f32>>);

/// Scores of `monitors` on `texts` through `ck` (one forward pass per
/// pooling), with the activations each read when `keep_x`; the model stays
/// in `kept` for the next look.
fn scores_through<'ck>(
    ck: &'ck Checkpoint,
    cache: &ActCache,
    monitors: &[&Monitor],
    texts: &[String],
    keep_x: bool,
    kept: &mut Option<Model<'ck>>,
) -> Result<Vec<Scored>> {
    let mut out: Vec<Option<Scored>> = vec![None; monitors.len()];
    for (pool, group, layers) in by_pooling(monitors.iter().copied()) {
        let spec = ActSpec {
            pool,
            precision: crate::model::Precision::F32,
            batch_size: crate::util::DEFAULT_BATCH_SIZE,
        };
        let acts = cached_activations_parts(
            ck,
            cache,
            &[texts],
            &layers,
            spec,
            &mut |_| {},
            Some(&mut *kept),
        )?
        .pop()
        .unwrap_or_default();
        for m in group {
            let l = m.meta.hook.layer;
            let x = acts
                .get(&l)
                .ok_or_else(|| Error::Usage(format!("no activations at block {l}")))?;
            let i = monitors
                .iter()
                .position(|o| std::ptr::eq(*o, m))
                .ok_or_else(|| Error::Usage("internal: monitor not in its group".into()))?;
            let rows = if keep_x { x.to_vec2()? } else { Vec::new() };
            out[i] = Some((m.scores(x)?, rows));
        }
    }
    out.into_iter()
        .map(|o| o.ok_or_else(|| Error::Usage("internal: a monitor got no scores".into())))
        .collect()
}

/// One monitor's examples so far, paired.
struct Seen<'a> {
    m: &'a Monitor,
    /// Whether `min_auroc` applies ([`super::floor_applies`]).
    floor: bool,
    base: Vec<f64>,
    cand: Vec<f64>,
    labels: Vec<u8>,
    x: Vec<Vec<f32>>,
    bounds: Option<Bounds>,
    stop: Option<Stop>,
}

/// One concept's test set being consumed.
struct Concept<'a> {
    name: String,
    critical: bool,
    data: &'a mon::data::Labeled,
    order: Vec<usize>,
    used: usize,
    pop: Population,
    z: f64,
    monitors: Vec<Seen<'a>>,
    /// Screened revalidation: every monitor's scores (base, candidate) and
    /// candidate activations on every example, in the test set's order,
    /// once the concept's first look has run them.
    screen: Option<Vec<Scored2>>,
}

/// A monitor's scores through base and candidate on every example, and the
/// candidate activations behind them.
type Scored2 = (Vec<f64>, Vec<f64>, Vec<Vec<f32>>);

impl Concept<'_> {
    /// Whether a monitor of the concept is settled stale.
    fn any_stale(&self) -> bool {
        self.monitors.iter().any(|s| s.stop == Some(Stop::Stale))
    }

    fn open(&self) -> bool {
        self.used < self.order.len() && self.monitors.iter().any(|s| s.stop.is_none())
    }

    /// The monitors (indices) not settled yet.
    fn unsettled(&self) -> Vec<usize> {
        (0..self.monitors.len())
            .filter(|&i| self.monitors[i].stop.is_none())
            .collect()
    }

    /// The next `k` examples through both models for the unsettled
    /// monitors, then each judged again.
    /// Returns the monitors (indices) this look settled stale.
    fn look<'ck>(
        &mut self,
        k: usize,
        (base, cand): (&'ck Checkpoint, &'ck Checkpoint),
        cache: &ActCache,
        policy: &Policy,
        ledger: &Extender<'ck>,
    ) -> Result<Vec<usize>> {
        if policy.revalidation.screen {
            return self.look_screened(k, (base, cand), (cache, policy), ledger);
        }
        let kept = ledger.kept();
        let k = k.min(self.order.len() - self.used);
        if k == 0 {
            return Ok(Vec::new());
        }
        let idx = &self.order[self.used..self.used + k];
        let texts: Vec<String> = idx.iter().map(|&i| self.data.texts[i].clone()).collect();
        let labels: Vec<u8> = idx.iter().map(|&i| self.data.labels[i]).collect();
        let open = self.unsettled();
        let ms: Vec<&Monitor> = open.iter().map(|&i| self.monitors[i].m).collect();
        // A look is a few batches: the two models run side by side on
        // rayon's pool rather than both threads on one small GEMM at a time.
        // Each mostly runs its kernels on its own thread; a side that ends
        // first (read from the cache) steals the other's kernel tasks.
        let (through_base, through_cand) = {
            let mut kept = kept.borrow_mut();
            let (kb, kc) = kept.both();
            rayon::join(
                || scores_through(base, cache, &ms, &texts, false, kb),
                || scores_through(cand, cache, &ms, &texts, true, kc),
            )
        };
        let (through_base, through_cand) = (through_base?, through_cand?);
        self.used += k;
        let whole = self.used == self.order.len();
        let mut stale = Vec::new();
        for ((i, (b, _)), (c, x)) in open.iter().zip(through_base).zip(through_cand) {
            let s = &mut self.monitors[*i];
            s.base.extend(b);
            s.cand.extend(c);
            s.labels.extend(&labels);
            s.x.extend(x);
            let p = Paired {
                base: &s.base,
                cand: &s.cand,
                labels: &s.labels,
            };
            s.bounds = bounds(
                &p,
                Thresholds::same(s.m.meta.classifier.threshold),
                self.pop,
                self.z,
            );
            let state = s.bounds.as_ref().map_or(Settled::Open, |bd| {
                settle(bd, s.m.meta.base_metrics.auroc, s.floor, &policy.metrics)
            });
            s.stop = stop(state, whole);
            if s.stop == Some(Stop::Stale) {
                stale.push(*i);
            }
        }
        Ok(stale)
    }

    /// A settled monitor's figures and the examples behind them.
    fn revalidated(&self, i: usize) -> Result<Option<Revalidated>> {
        let s = &self.monitors[i];
        let (Some(b), Some(_)) = (s.bounds, s.stop) else {
            return Ok(None);
        };
        Ok(Some(Revalidated {
            eval: paired_eval(s.m, &s.labels, &b),
            labels: s.labels.clone(),
            x: s.x.clone(),
            paired: Some(PairedBase {
                base_scores: s.base.clone(),
                population: self.pop,
                z: self.z,
                screened: self.screen.as_ref().map(|screen| ScreenedSet {
                    concept: self.name.clone(),
                    base_scores: screen[i].0.clone(),
                    x: screen[i].2.clone(),
                    labels: self.data.labels.clone(),
                }),
            }),
        }))
    }
}

/// What the gate does while sequential revalidation runs, under
/// `budget.stop_at_verdict`: a monitor settled stale climbs its repair
/// ladder at once, and once one is beyond repair the verdict is fail
/// whatever the monitors not yet settled would show, so revalidation stops
/// there instead of spending the rest of the budget on a failed candidate.
pub trait OnSettled {
    /// These monitors were just settled stale, each on its examples, by
    /// one look (so their ladders can share their training texts' passes).
    fn stale(&mut self, settled: &[(&Monitor, Revalidated)], progress: Progress) -> Result<()>;
    /// Whether the verdict is fail whatever the rest would show.
    fn decided(&self) -> bool;
    /// Called once, when the critical concepts are done and the verdict is
    /// still open, before any other concept's first look: the order of the
    /// other concepts, when the caller only knows it now (their risk reads
    /// texts it runs only if a run gets this far). `None` keeps the plan's.
    fn before_the_rest(&mut self, _progress: Progress) -> Result<Option<Vec<String>>> {
        Ok(None)
    }
}

/// The items that are not critical put in `order` (by name; one it does not
/// name keeps its place after those it does); critical ones stay first, in
/// the order they had.
fn reorder<T>(items: &mut [T], name_critical: impl Fn(&T) -> (&str, bool), order: &[String]) {
    // A stable sort: critical items keep their order among themselves.
    items.sort_by_key(|x| {
        let (name, critical) = name_critical(x);
        let at = order.iter().position(|n| n == name).unwrap_or(order.len());
        (!critical, if critical { 0 } else { at })
    });
}

/// Why a monitor stops asking for examples after a look: settled either
/// way, or unsettled once the whole test set is read (`None`: go on).
fn stop(state: Settled, whole: bool) -> Option<Stop> {
    match state {
        Settled::Healthy => Some(Stop::Healthy),
        Settled::Stale => Some(Stop::Stale),
        Settled::Open if whole => Some(Stop::WholeSet),
        Settled::Open => None,
    }
}

/// A monitor's metrics from its paired estimates: the base figures it
/// records moved by the change measured on the examples it saw, so the
/// point estimates agree with the settled state and a full look is exact.
pub fn paired_eval(m: &Monitor, labels: &[u8], b: &Bounds) -> EvalResult {
    // Built from the bounds alone: the examples read may hold one class
    // only (screening reads the most influential first), and every figure
    // a sample evaluation would give is replaced by the paired one anyway.
    let base = &m.meta.base_metrics;
    EvalResult {
        monitor: m.meta.name.clone(),
        layer: m.meta.hook.layer,
        n: labels.len(),
        auroc: base.auroc + b.auroc.estimate,
        auroc_ci95: [base.auroc + b.auroc.lo, base.auroc + b.auroc.hi],
        // The recorded base rates and the sample's change can add up past the
        // ends when the sample's base side differs from the whole set's.
        balanced_accuracy: (base.balanced_accuracy + b.balanced_accuracy.estimate).clamp(0.0, 1.0),
        tpr: (base.tpr + b.tpr.estimate).clamp(0.0, 1.0),
        fpr: (base.fpr + b.fpr.estimate).clamp(0.0, 1.0),
        threshold: m.meta.classifier.threshold,
        base_auroc: base.auroc,
        delta_auroc: b.auroc.estimate,
        base_balanced_accuracy: base.balanced_accuracy,
    }
}

/// Sequential revalidation over the suite; see the module doc. Labels are
/// counted in `ledger`, which the repair ladder shares (its spending leaves
/// revalidation less); `hook`, when given, is told of each monitor as it
/// settles stale and stops revalidation once the verdict is decided.
pub fn run<'a>(
    inputs: &Inputs<'a>,
    progress: Progress,
    ledger: &Extender<'a>,
    mut hook: Option<&mut dyn OnSettled>,
) -> Result<Revalidation> {
    let Inputs {
        base,
        cand,
        cache,
        monitors,
        tests,
        schedule,
        policy,
    } = *inputs;
    let rp = &policy.revalidation;
    let t = Instant::now();
    let mut concepts: Vec<Concept> = Vec::new();
    for (name, critical) in &schedule.order {
        let Some((_, d)) = tests.get(name) else {
            continue;
        };
        concepts.push(Concept {
            name: name.clone(),
            critical: *critical,
            data: d,
            order: stratified_order(&d.labels, crate::util::DEFAULT_SEED),
            used: 0,
            pop: Population::of(&d.labels),
            // Screened bounds are worst cases: no quantile.
            z: if rp.screen {
                0.0
            } else {
                concept_z(rp, schedule.suite_monitors, d.labels.len())
            },
            monitors: monitors
                .iter()
                .filter(|m| &m.meta.concept == name)
                .map(|m| Seen {
                    m,
                    floor: floor_applies(m, &policy.metrics),
                    base: Vec::new(),
                    cand: Vec::new(),
                    labels: Vec::new(),
                    x: Vec::new(),
                    bounds: None,
                    stop: None,
                })
                .collect(),
            screen: None,
        });
    }
    let full = schedule.full;
    // Labels revalidation's own looks ran (the ladder's are in the ledger too).
    let mut looked = 0usize;
    // The cap is hard for every concept; critical ones come first in the
    // plan, and one the cap leaves unsettled fails the candidate (verdict).
    // Once a monitor is settled stale the candidate fails unless the ladder
    // repairs it, so the policy's reserve is left to the ladder from then on:
    // spent all on revalidation, it failed candidates that recalibration
    // repairs under full revalidation (STUDY.md, the false fails).
    // With the ladder climbed as each monitor settles stale (`hook`),
    // nothing waits for it, so nothing is held back: on the v2 grid the
    // reserve, held for ladders already climbed, left a monitor at risk
    // 0.52 unverified and failed a candidate full revalidation passes with
    // repairs (SmolLM2 merged-gguf-lora-r32-attn-chat). A monitor settled
    // stale on the budget's last examples gets what is left, and its report
    // names any rung that got too few (`skipped`).
    let ladder_waits = hook.is_none();
    let stale_found = |cs: &[Concept]| ladder_waits && cs.iter().any(Concept::any_stale);
    let left = |stale: bool| revalidation_left(policy, full, ledger.used(), stale);
    let over_time = |t: &Instant| {
        !full
            && policy
                .budget
                .seconds
                .is_some_and(|s| t.elapsed().as_secs_f64() > s)
    };
    let decided = |hook: &Option<&mut dyn OnSettled>| hook.as_ref().is_some_and(|h| h.decided());
    let total: usize = concepts.iter().map(|c| c.order.len()).sum();
    // One look at concept `i`: its labels counted, and each monitor it
    // settled stale handed to the hook.
    let mut look = |c: &mut Concept,
                    k: usize,
                    stage: String,
                    hook: &mut Option<&mut dyn OnSettled>,
                    progress: Progress|
     -> Result<()> {
        // Said before the look as well as after: a stage is timed from its
        // first report, so one said only at its end took the next one's time.
        progress(&stage, ledger.used(), total);
        let before = c.used;
        let charged = ledger.used();
        // Full revalidation (`--full`, the grid's ground truth) reads every
        // label at once under screening too: its figures must be exact, not
        // only its verdict.
        let k = if full && rp.screen { usize::MAX } else { k };
        let stale = c.look(k, (base, cand), cache, policy, ledger)?;
        looked += if rp.screen {
            // Screening charged its reads itself (labels once, whoever reads them).
            ledger.used() - charged
        } else {
            ledger.record(&c.name, before, c.used)
        };
        progress(&stage, ledger.used(), total);
        if let Some(h) = hook.as_mut() {
            if !stale.is_empty() && !h.decided() {
                let mut settled = Vec::new();
                for i in stale {
                    if let Some(rv) = c.revalidated(i)? {
                        settled.push((c.monitors[i].m, rv));
                    }
                }
                h.stale(&settled, &mut *progress)?;
            }
        }
        Ok(())
    };
    // Critical concepts first, each until its monitors are settled: the
    // policy promised them whatever the budget, and a critical monitor
    // beyond repair decides a failing candidate soonest. The first looks
    // still owed to every other concept are held back from them, and so is
    // the repair reserve when the ladder waits for revalidation's end.
    let first = |c: &Concept| rp.first_look.min(c.order.len());
    for i in 0..concepts.len() {
        if !concepts[i].critical {
            continue;
        }
        let owed: usize = concepts
            .iter()
            .enumerate()
            .filter(|(j, c)| *j != i && c.used == 0)
            .map(|(_, c)| first(c))
            .sum();
        loop {
            let c = &mut concepts[i];
            let step = if c.used == 0 { first(c) } else { rp.batch };
            let k = step.min(left(ladder_waits).saturating_sub(owed));
            if decided(&hook) || k == 0 || !c.open() || over_time(&t) {
                break;
            }
            let stage = if c.used == 0 {
                format!("revalidating {} (first look)", c.name)
            } else {
                format!("revalidating {}", c.name)
            };
            look(c, k, stage, &mut hook, &mut *progress)?;
        }
    }
    if let Some(h) = hook.as_mut() {
        if !h.decided() {
            if let Some(order) = h.before_the_rest(&mut *progress)? {
                reorder(&mut concepts, |c| (c.name.as_str(), c.critical), &order);
            }
        }
    }
    // The first look, for every other concept in plan order.
    for i in 0..concepts.len() {
        if decided(&hook) {
            break;
        }
        let stale = stale_found(&concepts);
        let c = &mut concepts[i];
        if c.used > 0 {
            continue;
        }
        let k = first(c).min(left(stale));
        if k == 0 || over_time(&t) {
            continue;
        }
        let stage = format!("revalidating {} (first look)", c.name);
        look(c, k, stage, &mut hook, &mut *progress)?;
    }
    // Then batches while the budget lasts: critical concepts until settled,
    // then the rest, riskiest first.
    loop {
        let stale = stale_found(&concepts);
        if decided(&hook) || left(stale) == 0 || over_time(&t) {
            break;
        }
        let next = concepts
            .iter()
            .position(|c| c.open() && c.critical)
            .or_else(|| concepts.iter().position(|c| c.open()));
        let Some(i) = next else { break };
        let c = &mut concepts[i];
        let k = rp.batch.min(left(stale));
        let stage = format!("revalidating {}", c.name);
        look(c, k, stage, &mut hook, &mut *progress)?;
    }
    let unsettled = if decided(&hook) {
        Stop::Decided
    } else if over_time(&t) {
        Stop::Seconds
    } else {
        Stop::Budget
    };
    let mut evals = BTreeMap::new();
    let mut traces = BTreeMap::new();
    for c in &concepts {
        for (i, s) in c.monitors.iter().enumerate() {
            traces.insert(
                s.m.meta.name.clone(),
                Trace {
                    examples: s.labels.len(),
                    of: c.order.len(),
                    bounds: s.bounds,
                    z: c.z,
                    stopped: s.stop.unwrap_or(unsettled),
                },
            );
            if let Some(rv) = c.revalidated(i)? {
                evals.insert(s.m.meta.name.clone(), rv);
            }
        }
    }
    Ok(Revalidation {
        evals,
        examples_used: looked,
        traces,
    })
}

#[cfg(test)]
mod tests {
    use super::reorder;

    #[test]
    fn the_rest_follows_the_late_order_and_critical_concepts_keep_theirs() {
        let mut items = vec![
            ("self_harm", true),
            ("privacy_pii", true),
            ("toxicity", false),
            ("harmful", false),
            ("injection", false),
        ];
        let order: Vec<String> = ["privacy_pii", "injection", "self_harm", "toxicity"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        reorder(&mut items, |x| (x.0, x.1), &order);
        let names: Vec<&str> = items.iter().map(|x| x.0).collect();
        // Critical first as they were (revalidation may be under way there);
        // one the order leaves out goes last.
        assert_eq!(
            names,
            [
                "self_harm",
                "privacy_pii",
                "injection",
                "toxicity",
                "harmful"
            ]
        );
    }
}
