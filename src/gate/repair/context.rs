//! What every rung of the ladder reads: the run's inputs, the training
//! texts' activations (computed once per concept, shared across rungs and
//! monitors), and the verifier that judges a repaired monitor on the
//! labeled test data revalidation already ran.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::activations::cache::{cached_activations_parts, ActCache, ActSpec};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::gate::features::LazyCorpus;
use crate::gate::policy::{Policy, Rung};
use crate::gate::prepare::Prepared;
use crate::gate::revalidate::{self, EvalResult, Kept, Revalidated};
use crate::model::{Model, Pool, Precision};
pub use crate::monitor::data::{part_ends, train_order, FIRST_PART, PART};
use crate::monitor::{data::Labeled, Monitor};

/// The run's inputs, as the rungs need them.
pub struct Context<'a> {
    pub policy: &'a Policy,
    pub models: &'a Prepared,
    pub cache: &'a ActCache,
    /// Run by the ladder before its first realignment unless the features stage ran it.
    pub corpus_acts: &'a LazyCorpus<'a>,
    /// Training splits per concept (present when a rung that spends labels is on).
    pub trains: &'a BTreeMap<String, (PathBuf, Labeled)>,
    /// Sequential revalidation: more test examples for a repair not yet settled.
    pub extend: Option<&'a revalidate::Extender<'a>>,
    /// Whole-set revalidation: labeled examples the rungs may still spend,
    /// what revalidation left of the budget (sequential runs count in `extend`).
    pub rung_budget: std::cell::Cell<usize>,
    /// Study runs: try every rung alone on each stale monitor ([`super::Trial`]).
    pub every_rung: bool,
}

impl Context<'_> {
    /// Whether the ladder's first rung runs: realignment on, over a corpus
    /// of at least `min_prompts`.
    pub fn realigns(&self) -> bool {
        self.policy.realignment.enabled
            && self.models.corpus.len() >= self.policy.realignment.min_prompts
    }

    /// Labeled examples a rung may still spend: the budget is a hard cap in
    /// both modes, so a rung never takes the run past `budget.examples`.
    pub fn labels_left(&self) -> usize {
        match self.extend {
            Some(e) => e.left(),
            None => self.rung_budget.get(),
        }
    }

    /// Counts `n` labeled examples a rung ran through the candidate.
    pub fn spend(&self, n: usize) {
        match self.extend {
            Some(e) => e.spend(n),
            None => self
                .rung_budget
                .set(self.rung_budget.get().saturating_sub(n)),
        }
    }

    /// The concept's training split, or why it is missing.
    pub fn train(&self, m: &Monitor) -> Result<&Labeled> {
        self.trains
            .get(&m.meta.concept)
            .map(|(_, d)| d)
            .ok_or_else(|| {
                Error::Usage(format!(
                    "no training split read for concept {}",
                    m.meta.concept
                ))
            })
    }
}

/// What one rung measured: the labeled examples it spent, the threshold it
/// chose, and the repaired monitor's figures on the test data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RungReport {
    /// Labeled training examples this rung ran through the candidate.
    pub examples: usize,
    pub threshold: Option<f64>,
    pub after: EvalResult,
    pub stale_reasons_after: Vec<String>,
}

/// A rung's result: its report, the monitor it produced (if any) and
/// whether that monitor passes the policy's limits.
pub struct Attempt<R> {
    pub report: R,
    pub fixed: Option<Monitor>,
    pub repaired: bool,
}

impl<R> Attempt<R> {
    /// Recalibration and retraining: a monitor that passes becomes the one
    /// the ladder ends with, repaired by `as_rung`; one that does not is
    /// dropped. Returns the report either way.
    pub fn adopt(self, as_rung: Rung, rung: &mut Rung, current: &mut Monitor) -> R {
        if let (true, Some(f)) = (self.repaired, self.fixed) {
            *rung = as_rung;
            *current = f;
        }
        self.report
    }
}

/// A repair's worst-case bounds under screening, which labels were read,
/// and its candidate scores on every example.
type ScreenedLook = (revalidate::sequential::Bounds, Vec<bool>, Vec<f64>);

/// Judges a repaired monitor by the original's base figures on the
/// candidate's test activations, without another forward pass; under
/// sequential revalidation, by the same paired rule, asking for more of
/// the test set while the repair is not settled.
pub struct Verifier<'a, 'm> {
    original: &'m Monitor,
    x: RefCell<Tensor>,
    labels: RefCell<Vec<u8>>,
    policy: &'a Policy,
    /// Sequential revalidation: the base side of the same examples, the
    /// test set's class sizes and the look's quantile.
    paired: Option<(RefCell<Vec<f64>>, revalidate::sequential::Population, f64)>,
    extend: Option<&'a revalidate::Extender<'a>>,
    /// Screened revalidation: the whole test set, and its activations as a tensor.
    screened: Option<(&'m revalidate::ScreenedSet, Tensor)>,
}

impl<'a, 'm> Verifier<'a, 'm> {
    pub fn new(original: &'m Monitor, rv: &'m Revalidated, cx: &Context<'a>) -> Result<Self> {
        Ok(Verifier {
            original,
            x: RefCell::new(Tensor::new(rv.x.clone(), &candle_core::Device::Cpu)?),
            labels: RefCell::new(rv.labels.clone()),
            policy: cx.policy,
            paired: rv
                .paired
                .as_ref()
                .map(|p| (RefCell::new(p.base_scores.clone()), p.population, p.z)),
            extend: cx.extend,
            screened: match rv.paired.as_ref().and_then(|p| p.screened.as_ref()) {
                Some(set) => Some((set, Tensor::new(set.x.clone(), &candle_core::Device::Cpu)?)),
                None => None,
            },
        })
    }

    /// Screened revalidation: `fixed`'s worst-case bounds on the whole test
    /// set with the labels read so far, and which those are. The base side
    /// is cut at the original's threshold, the candidate side at `fixed`'s.
    fn screened_bounds(&self, fixed: &Monitor) -> Result<Option<ScreenedLook>> {
        let Some((set, x)) = &self.screened else {
            return Ok(None);
        };
        let n = set.labels.len();
        let known = self
            .extend
            .map_or_else(|| vec![true; n], |e| e.known(&set.concept, n));
        let cand = fixed.scores(x)?;
        let b = revalidate::screened::bounds(
            &set.base_scores,
            &cand,
            &set.labels,
            &known,
            self.cuts(fixed),
        )
        .ok_or_else(|| {
            Error::Usage(format!(
                "{}: verification data needs both classes",
                fixed.meta.name
            ))
        })?;
        Ok(Some((b, known, cand)))
    }

    /// [`Verifier::verify`] under screening: labels read where they move
    /// `fixed`'s bounds most, a batch at a time within the budget, until it
    /// is settled or nothing is left to read.
    fn verify_screened(&self, fixed: &Monitor) -> Result<Option<(EvalResult, Vec<String>)>> {
        use revalidate::sequential::{settle, Settled};
        let Some((set, _)) = &self.screened else {
            return Ok(None);
        };
        let lim = &self.policy.metrics;
        let floor = revalidate::floor_applies(self.original, lim);
        let n = set.labels.len();
        loop {
            let Some((b, known, cand)) = self.screened_bounds(fixed)? else {
                return Ok(None);
            };
            let state = settle(&b, self.original.meta.base_metrics.auroc, floor, lim);
            let mut unread: Vec<usize> = (0..n).filter(|&i| !known[i]).collect();
            let left = self.extend.map_or(0, |e| e.left());
            if state == Settled::Open && !unread.is_empty() && left > 0 {
                let pop = revalidate::sequential::Population::of(&set.labels);
                let inf = revalidate::screened::influence(
                    &[(
                        set.base_scores.as_slice(),
                        cand.as_slice(),
                        self.cuts(fixed),
                    )],
                    pop,
                    lim,
                );
                revalidate::screened::most_influential_first(&mut unread, &inf);
                let take = self.policy.revalidation.batch.min(left).min(unread.len());
                if let Some(e) = self.extend {
                    e.read_labels(&set.concept, n, &unread[..take], true);
                }
                continue;
            }
            let labels: Vec<u8> = (0..n)
                .filter(|&i| known[i])
                .map(|i| set.labels[i])
                .collect();
            return self.judged(fixed, &labels, &b, state).map(Some);
        }
    }

    /// The repaired monitor's metrics and why it would still be stale.
    pub fn verify(&self, fixed: &Monitor) -> Result<(EvalResult, Vec<String>)> {
        if let Some(judged) = self.verify_screened(fixed)? {
            return Ok(judged);
        }
        let lim = &self.policy.metrics;
        let Some((base_scores, pop, z)) = &self.paired else {
            let scores = fixed.scores(&self.x.borrow())?;
            let after = revalidate::evaluate(
                fixed,
                &scores,
                &self.labels.borrow(),
                crate::util::DEFAULT_SEED,
            )?;
            let reasons = revalidate::stale_reasons(self.original, &after, lim);
            return Ok((after, reasons));
        };
        use revalidate::sequential::{settle, Settled};
        let floor = revalidate::floor_applies(self.original, lim);
        loop {
            let scores = fixed.scores(&self.x.borrow())?;
            let labels = self.labels.borrow();
            let b = self
                .paired_bounds(fixed, &scores, &labels, (base_scores, *pop, *z))
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "{}: verification data needs both classes",
                        fixed.meta.name
                    ))
                })?;
            let state = settle(&b, self.original.meta.base_metrics.auroc, floor, lim);
            if state == Settled::Open {
                let seen = labels.len();
                drop(labels);
                if let Some(more) = self
                    .extend
                    .map(|e| e.more(self.original, seen))
                    .transpose()?
                    .flatten()
                {
                    let add = Tensor::new(more.x, &candle_core::Device::Cpu)?;
                    let x = Tensor::cat(&[&*self.x.borrow(), &add], 0)?;
                    *self.x.borrow_mut() = x;
                    self.labels.borrow_mut().extend(more.labels);
                    base_scores.borrow_mut().extend(more.base_scores);
                    continue;
                }
                return self.judged(fixed, &self.labels.borrow(), &b, state);
            }
            return self.judged(fixed, &labels, &b, state);
        }
    }

    /// Whether no threshold can repair any of `starts` (the monitors a
    /// recalibration may start from): each one's AUROC is past its limits
    /// on the examples seen so far, settled by the sequential rule (or
    /// measured, on a whole set). A threshold does not move AUROC, so
    /// verifying any recalibration of them would find it stale on these
    /// same examples, after spending its labels.
    pub fn threshold_cannot_repair(&self, starts: &[&Monitor]) -> Result<bool> {
        use revalidate::sequential::ranking_settled_stale;
        let lim = &self.policy.metrics;
        let floor = revalidate::floor_applies(self.original, lim);
        let labels = self.labels.borrow();
        for s in starts {
            if let Some((b, _, _)) = self.screened_bounds(s)? {
                if !ranking_settled_stale(&b, self.original.meta.base_metrics.auroc, floor, lim) {
                    return Ok(false);
                }
                continue;
            }
            let scores = s.scores(&self.x.borrow())?;
            let past = match &self.paired {
                // Without both classes `verify` reports the error.
                Some((base_scores, pop, z)) => self
                    .paired_bounds(s, &scores, &labels, (base_scores, *pop, *z))
                    .is_some_and(|b| {
                        ranking_settled_stale(&b, self.original.meta.base_metrics.auroc, floor, lim)
                    }),
                None => {
                    let after =
                        revalidate::evaluate(s, &scores, &labels, crate::util::DEFAULT_SEED)?;
                    !revalidate::ranking_reasons(self.original, &after, lim).is_empty()
                }
            };
            if !past {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Where a repair is judged against the original: the base side cut
    /// where the original's base rates were measured, the candidate side at
    /// `fixed`'s own threshold (one threshold for both read a recalibrated
    /// monitor's new cut on base scores as flips, and failed good repairs).
    fn cuts(&self, fixed: &Monitor) -> revalidate::sequential::Thresholds {
        revalidate::sequential::Thresholds {
            base: self.original.meta.classifier.threshold,
            cand: fixed.meta.classifier.threshold,
        }
    }

    /// `fixed`'s scores through the candidate against the original's through
    /// the base, on the examples seen so far, at [`Verifier::cuts`]. `None`
    /// without both classes.
    fn paired_bounds(
        &self,
        fixed: &Monitor,
        scores: &[f64],
        labels: &[u8],
        (base_scores, pop, z): (&RefCell<Vec<f64>>, revalidate::sequential::Population, f64),
    ) -> Option<revalidate::sequential::Bounds> {
        use revalidate::sequential::{bounds, Paired};
        let paired = Paired {
            base: &base_scores.borrow(),
            cand: scores,
            labels,
        };
        bounds(&paired, self.cuts(fixed), pop, z)
    }

    /// The repaired monitor's paired figures and why it is not settled
    /// healthy (empty when it is).
    fn judged(
        &self,
        fixed: &Monitor,
        labels: &[u8],
        b: &revalidate::sequential::Bounds,
        state: revalidate::sequential::Settled,
    ) -> Result<(EvalResult, Vec<String>)> {
        use revalidate::sequential::Settled;
        // The repair's own threshold in the figures; the base figures it is
        // moved from are the original's, which the repair keeps.
        let after = revalidate::paired_eval(fixed, labels, b);
        let mut reasons = revalidate::stale_reasons(self.original, &after, &self.policy.metrics);
        match state {
            Settled::Healthy => reasons.clear(),
            Settled::Stale => {}
            Settled::Open if reasons.is_empty() => reasons.push(format!(
                "the repair is not settled healthy on {} examples (ΔAUROC ≥ {:+.3}, ΔTPR ≥ {:+.3}, ΔFPR ≤ {:+.3})",
                labels.len(),
                b.auroc.lo,
                b.tpr.lo,
                b.fpr.hi
            )),
            Settled::Open => {}
        }
        Ok((after, reasons))
    }
}

type Key = (String, Pool);

fn key(m: &Monitor) -> Key {
    (m.meta.concept.clone(), m.meta.pooling)
}

/// Rows computed so far for one (side, concept, pooling): the first `n`
/// texts of the order, per block.
#[derive(Default)]
struct Grown {
    n: usize,
    rows: BTreeMap<usize, Tensor>,
}

/// Training-text activations for the ladder, per (side, concept, pooling),
/// in [`train_order`] and grown part by part: realignment asks for as many
/// texts as its stopping rule needs, recalibration for the few it picks,
/// retraining for all, and each part runs once through each side, at every
/// block any of the concept's stale monitors reads.
pub struct LadderActs<'a> {
    cache: &'a ActCache,
    layers: BTreeMap<Key, Vec<usize>>,
    memo: BTreeMap<(bool, Key), Grown>,
    /// The model last used, kept while the next part is for the same
    /// checkpoint (one at a time: peak memory stays one model's).
    kept: Option<Model<'a>>,
    /// Sequential revalidation's two models, used instead of `kept` when
    /// given: they are loaded anyway, and no part reloads either.
    shared: Option<&'a RefCell<Kept<'a>>>,
}

impl<'a> LadderActs<'a> {
    pub fn new(cache: &'a ActCache, shared: Option<&'a RefCell<Kept<'a>>>) -> Self {
        LadderActs {
            cache,
            layers: BTreeMap::new(),
            memo: BTreeMap::new(),
            kept: None,
            shared,
        }
    }

    /// Announces that `m` will need its concept's training activations.
    pub fn need(&mut self, m: &Monitor) {
        let e = self.layers.entry(key(m)).or_default();
        if !e.contains(&m.meta.hook.layer) {
            e.push(m.meta.hook.layer);
        }
    }

    /// `m`'s activations of the first `n` texts of `train` in
    /// [`train_order`], through `ck` (the base when `on_base`): [n, d].
    pub fn prefix(
        &mut self,
        ck: &'a Checkpoint,
        on_base: bool,
        train: &Labeled,
        n: usize,
        m: &Monitor,
    ) -> Result<Tensor> {
        let len = train.texts.len();
        let n = n.min(len);
        let l = m.meta.hook.layer;
        let mut layers = self.layers.get(&key(m)).cloned().unwrap_or_default();
        if !layers.contains(&l) {
            layers.push(l);
        }
        layers.sort_unstable();
        let g = self.memo.entry((on_base, key(m))).or_default();
        if g.n < n || !g.rows.contains_key(&l) {
            // Whole parts from where this side stopped (from the start when
            // this block was not computed yet) up to the part holding `n`.
            let ends = part_ends(len);
            let from = if g.rows.contains_key(&l) { g.n } else { 0 };
            let mut to = ends.iter().copied().find(|&e| e >= n).unwrap_or(len);
            if from == 0 {
                // A block asked for late is computed as far as the others.
                to = to.max(g.n);
            }
            let order = train_order(len);
            let mut parts: Vec<Vec<String>> = Vec::new();
            let mut start = from;
            for &e in ends.iter().filter(|&&e| e > from && e <= to) {
                parts.push(
                    order[start..e]
                        .iter()
                        .map(|&i| train.texts[i].clone())
                        .collect(),
                );
                start = e;
            }
            let refs: Vec<&[String]> = parts.iter().map(Vec::as_slice).collect();
            let mut shared = self.shared.map(|s| s.borrow_mut());
            let slot = match shared.as_mut() {
                Some(k) => k.side(on_base),
                None => &mut self.kept,
            };
            let got = cached_activations_parts(
                ck,
                self.cache,
                &refs,
                &layers,
                spec(m),
                &mut |_| {},
                Some(slot),
            )?;
            let mut fresh: BTreeMap<usize, Vec<Tensor>> = BTreeMap::new();
            for part in got {
                for (layer, t) in part {
                    fresh.entry(layer).or_default().push(t);
                }
            }
            for (layer, mut ts) in fresh {
                if from > 0 {
                    if let Some(old) = g.rows.get(&layer) {
                        ts.insert(0, old.clone());
                    }
                }
                g.rows.insert(layer, Tensor::cat(&ts, 0)?);
            }
            g.n = to;
        }
        let t = g
            .rows
            .get(&l)
            .ok_or_else(|| Error::Usage(format!("no activations at block {l}")))?;
        Ok(t.narrow(0, 0, n)?)
    }
}

fn spec(m: &Monitor) -> ActSpec {
    ActSpec {
        pool: m.meta.pooling,
        precision: Precision::F32,
        batch_size: crate::util::DEFAULT_BATCH_SIZE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_is_a_seeded_permutation_that_never_sees_labels() {
        let a = train_order(420);
        assert_eq!(a, train_order(420), "same seed, same order");
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..420).collect::<Vec<_>>());
        assert_ne!(a, sorted, "shuffled");
        // It takes only a length: no label can move a text in it.
        assert!(train_order(0).is_empty());
    }

    #[test]
    fn parts_end_at_fixed_places_whatever_is_asked() {
        assert_eq!(part_ends(420), vec![96, 160, 224, 288, 352, 416, 420]);
        assert_eq!(part_ends(96), vec![96]);
        assert_eq!(part_ends(50), vec![50]);
        assert_eq!(part_ends(0), vec![0]);
    }
}
