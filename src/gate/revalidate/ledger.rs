//! The labels ledger of a sequential run ([`Extender`]): revalidation's
//! looks and the repair ladder's spending counted in one place, the
//! budget's arithmetic, and more of a test set for a repair's verification.
//! It also holds both models between looks ([`Kept`]).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::activations::cache::{cached_activations_parts, ActCache, ActSpec};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::gate::policy::Policy;
use crate::model::Pool;
use crate::monitor::{self as mon, Monitor};

use super::sequential::stratified_order;
use super::Inputs;

pub use crate::activations::cache::Kept;

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

/// Examples `start..end` of a concept's order that are new to the
/// candidate when the first `consumed` of it have already run through it.
fn newly_run(consumed: usize, start: usize, end: usize) -> usize {
    end.saturating_sub(consumed.max(start))
}

/// The labels ledger of a sequential run, and more of a monitor's test set
/// for the repair ladder: a repair whose verification is not settled yet
/// asks for the next batch, under the same budget, so a repair is judged by
/// the same sequential rule as the monitor it replaces. Revalidation's
/// looks and the ladder's spending are counted here alike, so an example
/// run through the candidate once is never charged twice, and a ladder
/// climbed during revalidation leaves revalidation less.
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
    /// features stage and the repair ladder ([`Extender::kept`]): a load
    /// costs more than a batch.
    kept: &'a RefCell<Kept<'a>>,
    /// Screened revalidation: per concept, which examples' labels have been
    /// read (by revalidation or a repair's verification), in the test
    /// set's order.
    read: RefCell<BTreeMap<String, Vec<bool>>>,
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
    /// An empty ledger for a run on `inputs`, before revalidation, with
    /// the models the run keeps loaded.
    pub fn new(inputs: &Inputs<'a>, kept: &'a RefCell<Kept<'a>>) -> Self {
        Extender {
            base: inputs.base,
            cand: inputs.cand,
            cache: inputs.cache,
            policy: inputs.policy,
            tests: inputs.tests,
            full: inputs.schedule.full,
            consumed: RefCell::new(BTreeMap::new()),
            used: Cell::new(0),
            extra: Cell::new(0),
            blocks: RefCell::new(BTreeMap::new()),
            kept,
            read: RefCell::new(BTreeMap::new()),
        }
    }

    /// Screened revalidation: which of `concept`'s `n` examples have had
    /// their labels read.
    pub fn known(&self, concept: &str, n: usize) -> Vec<bool> {
        self.read
            .borrow()
            .get(concept)
            .cloned()
            .unwrap_or_else(|| vec![false; n])
    }

    /// Screened revalidation: reads the labels of `concept`'s examples
    /// `idx` (of `n`); returns how many were new, each charged once
    /// whoever reads it. `by_ladder` counts them as verification's.
    pub fn read_labels(&self, concept: &str, n: usize, idx: &[usize], by_ladder: bool) -> usize {
        let mut read = self.read.borrow_mut();
        let mask = read
            .entry(concept.to_string())
            .or_insert_with(|| vec![false; n]);
        let mut new = 0;
        for &i in idx {
            if let Some(k) = mask.get_mut(i) {
                if !*k {
                    *k = true;
                    new += 1;
                }
            }
        }
        self.used.set(self.used.get() + new);
        if by_ladder {
            self.extra.set(self.extra.get() + new);
        }
        new
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
    pub fn kept(&self) -> &'a RefCell<Kept<'a>> {
        self.kept
    }

    /// Labeled examples run through the candidate for verification, beyond revalidation's.
    pub fn extra(&self) -> usize {
        self.extra.get()
    }

    /// Labeled examples counted so far, revalidation's and the ladder's.
    pub fn used(&self) -> usize {
        self.used.get()
    }

    /// Labeled examples the budget still allows (unlimited under full revalidation).
    pub fn left(&self) -> usize {
        left_under(self.policy, self.full, self.used.get())
    }

    /// Counts `n` labeled examples a rung spent (recalibration's training labels).
    pub fn spend(&self, n: usize) {
        self.used.set(self.used.get() + n);
    }

    /// Revalidation ran `concept`'s order from `start` to `end` through the
    /// candidate; returns the examples that were new (the ladder may have
    /// run some of them already to verify a repair).
    pub(super) fn record(&self, concept: &str, start: usize, end: usize) -> usize {
        let mut consumed = self.consumed.borrow_mut();
        let before = consumed.get(concept).copied().unwrap_or(0);
        let new = newly_run(before, start, end);
        consumed.insert(concept.to_string(), before.max(end));
        self.used.set(self.used.get() + new);
        new
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
    use super::{newly_run, revalidation_left};

    /// Revalidation and the ladder's verification read the same order of a
    /// test set: an example either ran before is never charged twice.
    #[test]
    fn an_example_is_charged_once_whoever_runs_it() {
        // Nothing run yet: the whole look is new.
        assert_eq!(newly_run(0, 0, 40), 40);
        // Revalidation's next batch after its own first look.
        assert_eq!(newly_run(40, 40, 60), 20);
        // A repair's verification ran the concept to 100; revalidation's
        // next look (60..80) was already run, the one after only in part.
        assert_eq!(newly_run(100, 60, 80), 0);
        assert_eq!(newly_run(100, 80, 120), 20);
    }
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
