//! Sequential revalidation run on the models: each concept's test set in
//! the seeded stratified order, a first look for every concept, then
//! batches for the riskiest concept with unsettled monitors until each is
//! settled or the budget is spent. The rule itself is pure
//! ([`super::sequential`]); this file spends forward passes on it.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use crate::activations::cache::{cached_activations_parts, ActCache, ActSpec};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::gate::policy::Policy;
use crate::gate::prepare::Progress;
use crate::model::{Model, Pool};
use crate::monitor::{self as mon, by_pooling, Monitor};

use super::sequential::{
    bounds, look_z, planned_looks, settle, stratified_order, Bounds, Paired, Population, Settled,
    Stop, Thresholds, Trace,
};
use super::{evaluate, floor_applies, EvalResult, Inputs, PairedBase, Revalidated, Revalidation};

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

/// Both models, kept from one look to the next: a look is a batch of a few
/// dozen prompts, and loading a model (about 0.5 s for SmolLM2) cost more
/// than its forward pass. Two models are held at once here; under
/// `PROBEGATE_WEIGHTS=auto` the second load sees the first's memory gone
/// and streams when it must.
#[derive(Default)]
pub struct Kept<'ck> {
    base: Option<Model<'ck>>,
    cand: Option<Model<'ck>>,
}

impl<'ck> Kept<'ck> {
    /// The slot of the base model, or of the candidate's.
    pub fn side(&mut self, on_base: bool) -> &mut Option<Model<'ck>> {
        if on_base {
            &mut self.base
        } else {
            &mut self.cand
        }
    }
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
}

impl Concept<'_> {
    /// Whether a monitor of the concept is settled stale.
    fn any_stale(&self) -> bool {
        self.monitors.iter().any(|s| s.stop == Some(Stop::Stale))
    }

    fn open(&self) -> bool {
        self.used < self.order.len() && self.monitors.iter().any(|s| s.stop.is_none())
    }

    /// The next `k` examples through both models for the unsettled
    /// monitors, then each judged again.
    fn look<'ck>(
        &mut self,
        k: usize,
        (base, cand): (&'ck Checkpoint, &'ck Checkpoint),
        cache: &ActCache,
        policy: &Policy,
        kept: &mut Kept<'ck>,
    ) -> Result<()> {
        let k = k.min(self.order.len() - self.used);
        if k == 0 {
            return Ok(());
        }
        let idx = &self.order[self.used..self.used + k];
        let texts: Vec<String> = idx.iter().map(|&i| self.data.texts[i].clone()).collect();
        let labels: Vec<u8> = idx.iter().map(|&i| self.data.labels[i]).collect();
        let open: Vec<usize> = (0..self.monitors.len())
            .filter(|&i| self.monitors[i].stop.is_none())
            .collect();
        let ms: Vec<&Monitor> = open.iter().map(|&i| self.monitors[i].m).collect();
        // A look is a few batches: the two models run side by side on
        // rayon's pool rather than both threads on one small GEMM at a time.
        // Each mostly runs its kernels on its own thread; a side that ends
        // first (read from the cache) steals the other's kernel tasks.
        let (kb, kc) = (&mut kept.base, &mut kept.cand);
        let (through_base, through_cand) = rayon::join(
            || scores_through(base, cache, &ms, &texts, false, kb),
            || scores_through(cand, cache, &ms, &texts, true, kc),
        );
        let (through_base, through_cand) = (through_base?, through_cand?);
        self.used += k;
        let whole = self.used == self.order.len();
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
            s.stop = match state {
                Settled::Healthy => Some(Stop::Healthy),
                Settled::Stale => Some(Stop::Stale),
                Settled::Open if whole => Some(Stop::WholeSet),
                Settled::Open => None,
            };
        }
        Ok(())
    }
}

/// A monitor's metrics from its paired estimates: the base figures it
/// records moved by the change measured on the examples it saw, so the
/// point estimates agree with the settled state and a full look is exact.
pub fn paired_eval(m: &Monitor, cand: &[f64], labels: &[u8], b: &Bounds) -> Result<EvalResult> {
    let mut e = evaluate(m, cand, labels, crate::util::DEFAULT_SEED)?;
    let base = &m.meta.base_metrics;
    e.delta_auroc = b.auroc.estimate;
    e.auroc = base.auroc + b.auroc.estimate;
    e.auroc_ci95 = [base.auroc + b.auroc.lo, base.auroc + b.auroc.hi];
    // The recorded base rates and the sample's change can add up past the
    // ends when the sample's base side differs from the whole set's.
    e.tpr = (base.tpr + b.tpr.estimate).clamp(0.0, 1.0);
    e.fpr = (base.fpr + b.fpr.estimate).clamp(0.0, 1.0);
    e.balanced_accuracy = (base.balanced_accuracy + b.balanced_accuracy.estimate).clamp(0.0, 1.0);
    Ok(e)
}

/// Labeled examples the policy's budget still allows after `used`
/// (unlimited under full revalidation, the grid's ground truth).
pub fn left_under(policy: &Policy, full: bool, used: usize) -> usize {
    if full {
        usize::MAX
    } else {
        policy.budget.examples.saturating_sub(used)
    }
}

/// Labeled examples sequential revalidation itself may still spend: the
/// budget less `budget.repair_reserve` once a monitor is settled stale
/// (`stale_found`), which the repair ladder then has to itself.
pub fn revalidation_left(policy: &Policy, full: bool, used: usize, stale_found: bool) -> usize {
    let reserve = if stale_found && !full {
        policy.budget.repair_reserve
    } else {
        0
    };
    left_under(policy, full, used).saturating_sub(reserve)
}

/// Sequential revalidation over the suite; see the module doc.
pub fn run(inputs: &Inputs, progress: Progress) -> Result<Revalidation> {
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
        let looks = planned_looks(d.labels.len(), rp.first_look, rp.batch);
        concepts.push(Concept {
            name: name.clone(),
            critical: *critical,
            data: d,
            order: stratified_order(&d.labels, crate::util::DEFAULT_SEED),
            used: 0,
            pop: Population::of(&d.labels),
            z: look_z(rp.alpha, rp.correction, schedule.suite_monitors, looks),
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
        });
    }
    let full = schedule.full;
    let mut kept = Kept::default();
    let mut used = 0usize;
    // The cap is hard for every concept; critical ones come first in the
    // plan, and one the cap leaves unsettled fails the candidate (verdict).
    // Once a monitor is settled stale the candidate fails unless the ladder
    // repairs it, so the policy's reserve is left to the ladder from then on:
    // spent all on revalidation, it failed candidates that recalibration
    // repairs under full revalidation (STUDY.md, the false fails).
    let stale_found = |cs: &[Concept]| cs.iter().any(Concept::any_stale);
    let left = |used: usize, stale: bool| revalidation_left(policy, full, used, stale);
    let over_time = |t: &Instant| {
        !full
            && policy
                .budget
                .seconds
                .is_some_and(|s| t.elapsed().as_secs_f64() > s)
    };
    let total: usize = concepts.iter().map(|c| c.order.len()).sum();
    // The first look, for every concept in plan order.
    for i in 0..concepts.len() {
        let stale = stale_found(&concepts);
        let c = &mut concepts[i];
        let k = rp.first_look.min(c.order.len()).min(left(used, stale));
        if k == 0 || over_time(&t) {
            continue;
        }
        // Said before the look as well as after: a stage is timed from its
        // first report, so one said only at its end took the next one's time.
        let stage = format!("revalidating {} (first look)", c.name);
        progress(&stage, used, total);
        c.look(k, (base, cand), cache, policy, &mut kept)?;
        used += k;
        progress(&stage, used, total);
    }
    // Then batches while the budget lasts: critical concepts until settled,
    // then the rest, riskiest first.
    loop {
        let stale = stale_found(&concepts);
        if left(used, stale) == 0 || over_time(&t) {
            break;
        }
        let next = concepts
            .iter()
            .position(|c| c.open() && c.critical)
            .or_else(|| concepts.iter().position(|c| c.open()));
        let Some(i) = next else { break };
        let c = &mut concepts[i];
        let k = rp.batch.min(left(used, stale));
        let before = c.used;
        let stage = format!("revalidating {}", c.name);
        progress(&stage, used, total);
        c.look(k, (base, cand), cache, policy, &mut kept)?;
        used += c.used - before;
        progress(&stage, used, total);
    }
    let out_of_time = over_time(&t);
    let mut evals = BTreeMap::new();
    let mut traces = BTreeMap::new();
    let consumed = concepts.iter().map(|c| (c.name.clone(), c.used)).collect();
    for c in concepts {
        for s in c.monitors {
            let stopped = s.stop.unwrap_or(if out_of_time {
                Stop::Seconds
            } else {
                Stop::Budget
            });
            traces.insert(
                s.m.meta.name.clone(),
                Trace {
                    examples: s.labels.len(),
                    of: c.order.len(),
                    bounds: s.bounds,
                    z: c.z,
                    stopped,
                },
            );
            let (Some(b), Some(_)) = (s.bounds, s.stop) else {
                continue;
            };
            let eval = paired_eval(s.m, &s.cand, &s.labels, &b)?;
            evals.insert(
                s.m.meta.name.clone(),
                Revalidated {
                    eval,
                    labels: s.labels,
                    x: s.x,
                    paired: Some(PairedBase {
                        base_scores: s.base,
                        population: c.pop,
                        z: c.z,
                    }),
                },
            );
        }
    }
    Ok(Revalidation {
        evals,
        examples_used: used,
        traces,
        consumed,
    })
}

/// More of a monitor's test set after revalidation: a repair whose
/// verification is not settled yet asks for the next batch, under the same
/// budget (critical monitors whatever it says), so a repair is judged by
/// the same sequential rule as the monitor it replaces.
pub struct Extender<'a> {
    pub base: &'a Checkpoint,
    pub cand: &'a Checkpoint,
    pub cache: &'a ActCache,
    pub policy: &'a Policy,
    pub tests: &'a BTreeMap<String, (PathBuf, mon::data::Labeled)>,
    /// Revalidate everything whatever the budget (the grid's ground truth).
    pub full: bool,
    /// Per concept: how far into its order the candidate has been run.
    consumed: RefCell<BTreeMap<String, usize>>,
    used: Cell<usize>,
    extra: Cell<usize>,
    /// Per (concept, pooling): the blocks of the monitors whose repairs may
    /// ask for more, so one batch runs once for all of them.
    blocks: RefCell<BTreeMap<(String, Pool), Vec<usize>>>,
    /// Both models, kept from one batch to the next and shared with the
    /// repair ladder ([`Extender::kept`]): a load costs more than a batch.
    kept: RefCell<Kept<'a>>,
}

/// The next examples of a monitor's test set, paired.
pub struct Batch {
    /// The original monitor's scores through the base.
    pub base_scores: Vec<f64>,
    /// Candidate activations at the monitor's block.
    pub x: Vec<Vec<f32>>,
    pub labels: Vec<u8>,
}

impl<'a> Extender<'a> {
    /// Continues where `reval` (run on `inputs`) stopped, under the same budget.
    pub fn new(inputs: &Inputs<'a>, reval: &Revalidation) -> Self {
        Extender {
            base: inputs.base,
            cand: inputs.cand,
            cache: inputs.cache,
            policy: inputs.policy,
            tests: inputs.tests,
            full: inputs.schedule.full,
            consumed: RefCell::new(reval.consumed.clone()),
            used: Cell::new(reval.examples_used),
            extra: Cell::new(0),
            blocks: RefCell::new(BTreeMap::new()),
            kept: RefCell::new(Kept::default()),
        }
    }

    /// Announces that `m`'s repair may ask for more of its test set: its
    /// block is computed with every batch of its concept from then on.
    pub fn need(&self, m: &Monitor) {
        let mut b = self.blocks.borrow_mut();
        let e = b
            .entry((m.meta.concept.clone(), m.meta.pooling))
            .or_default();
        if !e.contains(&m.meta.hook.layer) {
            e.push(m.meta.hook.layer);
        }
    }

    /// The models this run keeps loaded, for the repair ladder to share:
    /// sequential revalidation holds two models anyway, and the ladder then
    /// never reloads one to alternate between base and candidate.
    pub fn kept(&self) -> &RefCell<Kept<'a>> {
        &self.kept
    }

    /// Labeled examples run through the candidate for verification, beyond revalidation's.
    pub fn extra(&self) -> usize {
        self.extra.get()
    }

    /// Labeled examples the budget still allows (unlimited under full revalidation).
    pub fn left(&self) -> usize {
        left_under(self.policy, self.full, self.used.get())
    }

    /// Counts `n` labeled examples a rung spent (recalibration's training labels).
    pub fn spend(&self, n: usize) {
        self.used.set(self.used.get() + n);
    }

    /// The batch after the first `seen` examples of `m`'s test set, or
    /// `None` when the set or the budget is spent.
    pub fn more(&self, m: &Monitor, seen: usize) -> Result<Option<Batch>> {
        let concept = &m.meta.concept;
        let Some((_, d)) = self.tests.get(concept) else {
            return Ok(None);
        };
        let order = stratified_order(&d.labels, crate::util::DEFAULT_SEED);
        if seen >= order.len() {
            return Ok(None);
        }
        let before = self.consumed.borrow().get(concept).copied().unwrap_or(0);
        // Examples already run through the candidate cost nothing more.
        let end = (seen + self.policy.revalidation.batch)
            .min(order.len())
            .min(before.max(seen).saturating_add(self.left()));
        if end <= seen {
            return Ok(None);
        }
        let idx = &order[seen..end];
        let texts: Vec<String> = idx.iter().map(|&i| d.texts[i].clone()).collect();
        let labels: Vec<u8> = idx.iter().map(|&i| d.labels[i]).collect();
        // Every announced block of the concept in the same pass: the next
        // monitor's verification finds this batch in the cache.
        let l = m.meta.hook.layer;
        let mut layers = self
            .blocks
            .borrow()
            .get(&(m.meta.concept.clone(), m.meta.pooling))
            .cloned()
            .unwrap_or_default();
        if !layers.contains(&l) {
            layers.push(l);
        }
        layers.sort_unstable();
        let spec = ActSpec {
            pool: m.meta.pooling,
            precision: crate::model::Precision::F32,
            batch_size: crate::util::DEFAULT_BATCH_SIZE,
        };
        let at = |on_base: bool| -> Result<candle_core::Tensor> {
            let ck = if on_base { self.base } else { self.cand };
            let mut kept = self.kept.borrow_mut();
            cached_activations_parts(
                ck,
                self.cache,
                &[&texts],
                &layers,
                spec,
                &mut |_| {},
                Some(kept.side(on_base)),
            )?
            .pop()
            .and_then(|mut p| p.remove(&l))
            .ok_or_else(|| Error::Usage(format!("no activations at block {l}")))
        };
        let base_scores = m.scores(&at(true)?)?;
        let x = at(false)?.to_vec2::<f32>()?;
        let new = end.saturating_sub(before);
        if new > 0 {
            self.consumed.borrow_mut().insert(concept.clone(), end);
            self.used.set(self.used.get() + new);
            self.extra.set(self.extra.get() + new);
        }
        Ok(Some(Batch {
            base_scores,
            x,
            labels,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::revalidation_left;
    use crate::gate::policy::Policy;

    #[test]
    fn the_repair_reserve_is_held_back_only_once_something_is_stale() {
        let mut p = Policy::shipped_default();
        p.budget.examples = 720;
        p.budget.repair_reserve = 120;
        // Nothing stale: revalidation may spend the whole budget.
        assert_eq!(revalidation_left(&p, false, 0, false), 720);
        assert_eq!(revalidation_left(&p, false, 650, false), 70);
        // A stale monitor: the reserve is the ladder's.
        assert_eq!(revalidation_left(&p, false, 0, true), 600);
        assert_eq!(revalidation_left(&p, false, 580, true), 20);
        assert_eq!(revalidation_left(&p, false, 650, true), 0);
        // Full revalidation (the grid's ground truth) has no cap to reserve from.
        assert_eq!(revalidation_left(&p, true, 10_000, true), usize::MAX);
        // No reserve: unchanged behaviour.
        p.budget.repair_reserve = 0;
        assert_eq!(revalidation_left(&p, false, 650, true), 70);
    }
}
