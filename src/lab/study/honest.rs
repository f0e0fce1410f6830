//! Held-out figures that do not flatter the predictor, and the two kinds of
//! staleness side by side, from history rows alone (`study grid --history`,
//! `study/v2/history-*.jsonl`): a fresh clone has those, not the grid's reports.

use std::collections::{BTreeMap, BTreeSet};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::{source_group, study_family, FAMILIES};
use crate::gate::risk::{self, HeldOut, HistoryRow, Target, Trial, Trials, FEATURE_NAMES_V1};

/// One seed for the fold shuffle and every bootstrap, so a rerun on the
/// same history writes the same figures.
pub const SEED: u64 = 17;
pub const RESAMPLES: usize = 2000;
/// Folds of the grouped cross-validation (fewer when there are fewer groups).
pub const K_FOLDS: usize = 5;
/// The L2 strength the shipped model and `risk eval` are fitted with.
const L2: f64 = 1.0;
/// A derived cell whose ΔAUROC is within this of its source's is a copy.
const COPY_TOL: f64 = 1e-6;

/// The condition a row was measured on (its candidate when the caller
/// named no condition, as a user's own gate history does).
pub fn condition(r: &HistoryRow) -> &str {
    r.condition.as_deref().unwrap_or(&r.candidate)
}

/// Derived from another condition (merged from an adapter), not trained itself.
fn derived(r: &HistoryRow) -> bool {
    source_group(condition(r)) != condition(r)
}

fn diff_family(r: &HistoryRow) -> String {
    format!("{:?}", r.features.family)
}

/// Leave-one-family-out folds in which a derived condition is held out with
/// its source's family (merged LoRA with LoRA), so no fold trains on a copy
/// of what it predicts. A derived condition whose source is not in the
/// history keeps its own family.
pub fn family_folds(rows: &[HistoryRow]) -> Vec<String> {
    let family: BTreeMap<&str, String> = rows
        .iter()
        .filter(|r| !derived(r))
        .map(|r| (condition(r), diff_family(r)))
        .collect();
    rows.iter()
        .map(|r| {
            family
                .get(source_group(condition(r)).as_str())
                .cloned()
                .unwrap_or_else(|| diff_family(r))
        })
        .collect()
}

/// Grouped k-fold: source groups (across models: the same recipe on another
/// base is not independent evidence either) shuffled with `seed` and dealt
/// round-robin, so a group's rows always share one fold.
pub fn grouped_kfold(rows: &[HistoryRow], k: usize, seed: u64) -> Vec<String> {
    let groups: BTreeSet<String> = rows.iter().map(|r| source_group(condition(r))).collect();
    let mut groups: Vec<String> = groups.into_iter().collect();
    groups.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let k = k.clamp(1, groups.len().max(1));
    let fold: BTreeMap<String, usize> = groups
        .into_iter()
        .enumerate()
        .map(|(i, g)| (g, i % k))
        .collect();
    rows.iter()
        .map(|r| {
            let f = fold.get(&source_group(condition(r))).copied().unwrap_or(0);
            format!("fold {}", f + 1)
        })
        .collect()
}

/// What `probegate risk eval` prints: the model refitted out of fold on
/// the honest folds (one family with merged conditions held out beside their
/// source, one model, source groups in [`K_FOLDS`] folds), never the naive
/// family folds that let a merged copy predict its own original.
pub fn honest_evaluation(
    rows: &[HistoryRow],
    target: Target,
    l2: f64,
    names: &[&str],
) -> risk::Evaluation {
    let models: Vec<String> = rows.iter().map(|r| r.model.clone()).collect();
    let held_out = vec![
        risk::held_out_on(
            rows,
            &family_folds(rows),
            "family, merged with its source",
            target,
            l2,
            names,
        ),
        risk::held_out_on(rows, &models, "model", target, l2, names),
        risk::held_out_on(
            rows,
            &grouped_kfold(rows, K_FOLDS, SEED),
            &format!("source group ({K_FOLDS}-fold)"),
            target,
            l2,
            names,
        ),
    ];
    risk::Evaluation {
        target,
        rows: rows.len(),
        stale: rows.iter().filter(|r| target.stale(&r.outcome)).count(),
        held_out,
    }
}

/// A rate with its percentile bootstrap interval.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Interval {
    pub stale: usize,
    pub cells: usize,
    pub rate: f64,
    pub lo: f64,
    pub hi: f64,
}

/// Σhits/Σcells over `clusters` of (hits, cells), with a 95% interval from
/// resampling whole clusters with replacement, seeded.
pub fn bootstrap(clusters: &[(usize, usize)], resamples: usize, seed: u64) -> Interval {
    let sum = |it: &mut dyn Iterator<Item = (usize, usize)>| {
        it.fold((0, 0), |(h, n), (a, b)| (h + a, n + b))
    };
    let (stale, cells) = sum(&mut clusters.iter().copied());
    let ratio = |h: usize, n: usize| h as f64 / n.max(1) as f64;
    let rate = ratio(stale, cells);
    if clusters.is_empty() || resamples == 0 {
        return Interval {
            stale,
            cells,
            rate,
            lo: rate,
            hi: rate,
        };
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut rates: Vec<f64> = (0..resamples)
        .map(|_| {
            let (h, n) = sum(
                &mut (0..clusters.len()).map(|_| clusters[rng.random_range(0..clusters.len())])
            );
            ratio(h, n)
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    let at = |q: f64| rates[((q * resamples as f64) as usize).min(resamples - 1)];
    Interval {
        stale,
        cells,
        rate,
        lo: at(0.025),
        hi: at(0.975),
    }
}

/// Stale at the operating point: as the run recorded it (balanced
/// accuracy, TPR or FPR past the policy's limits), or, in history written
/// before that was recorded, balanced accuracy alone past `op_limit`.
pub fn op_stale(r: &HistoryRow, op_limit: f64) -> bool {
    r.outcome
        .stale_operating_point
        .unwrap_or(r.outcome.delta_balanced_accuracy < -op_limit)
}

/// The two definitions of stale the study reports side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Definition {
    /// ΔAUROC ≤ −0.05.
    Ranking,
    /// Balanced accuracy, TPR or FPR at the monitor's threshold past the policy.
    OperatingPoint,
}

impl Definition {
    pub fn name(self) -> &'static str {
        match self {
            Definition::Ranking => "ranking",
            Definition::OperatingPoint => "operating point",
        }
    }

    fn stale(self, r: &HistoryRow, op_limit: f64) -> bool {
        match self {
            Definition::Ranking => r.outcome.stale_auroc,
            Definition::OperatingPoint => op_stale(r, op_limit),
        }
    }

    /// Whether a repair meets the limit this definition broke.
    fn fixed(self, t: &Trial) -> bool {
        match self {
            Definition::Ranking => !t.ranking_after,
            Definition::OperatingPoint => !t.operating_point_after,
        }
    }
}

/// Repairs judged on what made the cell stale, for one definition.
#[derive(Debug, Clone, Serialize)]
pub struct RepairTable {
    pub definition: Definition,
    /// Stale cells with every rung tried (study history).
    pub stale: usize,
    /// Of those, cells where a probe retrained on the candidate's
    /// activations meets the limit: the information is still linearly there.
    pub relevant: usize,
    /// Per method: repaired on the repair-relevant cells, and on every stale cell.
    pub methods: Vec<(String, Interval, Interval)>,
    /// Realignment against the policy (all its limits), on the stale cells:
    /// the label-free choice passes, and some map would have (hindsight).
    pub choice_passes: usize,
    pub hindsight_passes: usize,
}

/// Which trial of a row a method's column reads.
type Pick = dyn Fn(&Trials) -> Option<&Trial>;

fn repair_table(rows: &[HistoryRow], d: Definition, op_limit: f64) -> RepairTable {
    let cells: Vec<&HistoryRow> = rows
        .iter()
        .filter(|r| !r.outcome.trials.is_empty() && d.stale(r, op_limit))
        .collect();
    let relevant: Vec<&HistoryRow> = cells
        .iter()
        .copied()
        .filter(|r| {
            r.outcome
                .trials
                .retraining
                .as_ref()
                .is_some_and(|t| d.fixed(t))
        })
        .collect();
    let rate = |set: &[&HistoryRow], pick: &Pick| {
        let mut by: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
        for r in set {
            let e = by
                .entry((r.model.clone(), source_group(condition(r))))
                .or_default();
            e.0 += pick(&r.outcome.trials).is_some_and(|t| d.fixed(t)) as usize;
            e.1 += 1;
        }
        bootstrap(&by.into_values().collect::<Vec<_>>(), RESAMPLES, SEED)
    };
    let methods: [(&str, &Pick); 3] = [
        ("label-free realignment", &|t| t.realignment.as_ref()),
        ("recalibration (threshold on 60 labels)", &|t| {
            t.recalibration.as_ref()
        }),
        ("retraining (whole training split)", &|t| {
            t.retraining.as_ref()
        }),
    ];
    let realigned = cells
        .iter()
        .filter_map(|r| r.outcome.trials.realignment.as_ref());
    RepairTable {
        definition: d,
        stale: cells.len(),
        relevant: relevant.len(),
        methods: methods
            .iter()
            .map(|(n, pick)| (n.to_string(), rate(&relevant, pick), rate(&cells, pick)))
            .collect(),
        choice_passes: realigned.clone().filter(|t| t.passes_policy).count(),
        hindsight_passes: realigned
            .filter(|t| t.passes_policy || t.any_alternative_passes == Some(true))
            .count(),
    }
}

/// One row of a staleness table: the same cells under both definitions.
#[derive(Debug, Clone, Serialize)]
pub struct StaleRow {
    pub name: String,
    pub cells: usize,
    /// Independent updates the cells come from (model × source group).
    pub clusters: usize,
    /// ΔAUROC ≤ −0.05 (`stale_auroc`): the monitor no longer ranks.
    pub ranking: Interval,
    /// Balanced accuracy at the monitor's own threshold dropped beyond the
    /// policy's limit, recomputed from the outcome.
    pub operating_point: Interval,
    /// Stale under the policy the run used, as recorded (`stale_policy`:
    /// every limit, TPR and FPR included, which the history does not keep).
    pub policy: Interval,
    /// Cells stale by one of ranking and operating point but not the other.
    pub disagree: usize,
}

/// Both definitions over `cells`, each with an interval. Resampling is by
/// model × source group, not by cell: the 18 monitors of one update share
/// that update, and a merged copy repeats its source, so cells are not
/// independent and a cell bootstrap would give intervals far too narrow.
fn stale_row(name: &str, cells: &[&HistoryRow], op_limit: f64) -> StaleRow {
    let op = |r: &HistoryRow| op_stale(r, op_limit);
    let mut by: BTreeMap<(String, String), [usize; 4]> = BTreeMap::new();
    let mut disagree = 0;
    for r in cells {
        let e = by
            .entry((r.model.clone(), source_group(condition(r))))
            .or_default();
        e[0] += 1;
        e[1] += r.outcome.stale_auroc as usize;
        e[2] += op(r) as usize;
        e[3] += r.outcome.stale_policy as usize;
        disagree += (r.outcome.stale_auroc != op(r)) as usize;
    }
    let interval = |j: usize| {
        let c: Vec<(usize, usize)> = by.values().map(|v| (v[j], v[0])).collect();
        bootstrap(&c, RESAMPLES, SEED)
    };
    StaleRow {
        name: name.into(),
        cells: cells.len(),
        clusters: by.len(),
        ranking: interval(1),
        operating_point: interval(2),
        policy: interval(3),
        disagree,
    }
}

/// Everything the honest sections show.
#[derive(Debug, Clone, Serialize)]
pub struct Honest {
    pub rows: usize,
    pub stale: usize,
    /// Derived (merged) cells, and those whose ΔAUROC equals their source's.
    pub derived: usize,
    pub derived_copies: usize,
    /// Today's folds (`risk eval`): a family out, a model out.
    pub naive: Vec<HeldOut>,
    /// Folds that keep a source and what is derived from it together.
    pub honest: Vec<HeldOut>,
    pub k_folds: usize,
    pub seed: u64,
    pub resamples: usize,
    /// The policy's `max_balanced_accuracy_drop`.
    pub operating_point_limit: f64,
    pub by_family: Vec<StaleRow>,
    /// Each source update once (derived conditions left out), identical left out.
    pub by_concept: Vec<StaleRow>,
    pub all_updates: StaleRow,
    /// The honest folds again with the first version's 14 features only:
    /// what the concept-aware features add.
    pub honest_v1_features: Vec<HeldOut>,
    /// The honest folds predicting the policy's staleness (what the gate
    /// fails on, and what the shipped model is fitted for).
    pub honest_policy: Vec<HeldOut>,
    /// The same, fitted without the corpus features ([`risk::CORPUS_FEATURES`]):
    /// what a model that lets the gate skip the corpus gives up.
    pub honest_policy_no_corpus: Vec<HeldOut>,
    pub stale_policy: usize,
    /// Per definition, each method's repairs (study history only; empty
    /// when no row has its trials).
    pub repairs: Vec<RepairTable>,
}

/// Held-out figures and staleness tables from history rows; `op_limit` is
/// the policy's balanced-accuracy limit.
pub fn analyse(rows: &[HistoryRow], op_limit: f64) -> Honest {
    let source: BTreeMap<(&str, &str, &str), f64> = rows
        .iter()
        .filter(|r| !derived(r))
        .map(|r| {
            (
                (r.model.as_str(), condition(r), r.features.monitor.as_str()),
                r.outcome.delta_auroc,
            )
        })
        .collect();
    let derived_rows: Vec<&HistoryRow> = rows.iter().filter(|r| derived(r)).collect();
    let derived_copies = derived_rows
        .iter()
        .filter(|r| {
            let src = source_group(condition(r));
            source
                .get(&(r.model.as_str(), src.as_str(), r.features.monitor.as_str()))
                .is_some_and(|d| (d - r.outcome.delta_auroc).abs() <= COPY_TOL)
        })
        .count();
    let kept: Vec<HistoryRow> = rows.iter().filter(|r| !derived(r)).cloned().collect();
    let models =
        |rs: &[HistoryRow]| -> Vec<String> { rs.iter().map(|r| r.model.clone()).collect() };
    // Each fold assignment is made once and serves both targets.
    let (by_family, by_model) = (family_folds(rows), models(rows));
    let by_group = grouped_kfold(rows, K_FOLDS, SEED);
    let (family_out, group_out) = (
        "family, merged with its source",
        format!("source group ({K_FOLDS}-fold)"),
    );
    let held = |rows: &[HistoryRow], keys: &[String], by: &str, t: Target| {
        risk::held_out(rows, keys, by, t, L2)
    };
    let honest = vec![
        held(rows, &by_family, family_out, Target::Ranking),
        held(
            &kept,
            &family_folds(&kept),
            "family, merged copies dropped",
            Target::Ranking,
        ),
        held(rows, &by_model, "model", Target::Ranking),
        held(
            &kept,
            &models(&kept),
            "model, merged copies dropped",
            Target::Ranking,
        ),
        held(rows, &by_group, &group_out, Target::Ranking),
    ];
    let honest_v1_features = vec![
        risk::held_out_on(
            rows,
            &by_family,
            family_out,
            Target::Ranking,
            L2,
            FEATURE_NAMES_V1,
        ),
        risk::held_out_on(
            rows,
            &by_model,
            "model",
            Target::Ranking,
            L2,
            FEATURE_NAMES_V1,
        ),
    ];
    // What the shipped model is fitted for: the policy's staleness, which
    // the gate fails on (ranking and operating point), on the same folds.
    let refs: Vec<&HistoryRow> = rows.iter().collect();
    let present = risk::features_present(&refs);
    let honest_policy = honest_evaluation(rows, Target::Policy, L2, &present).held_out;
    let no_corpus: Vec<&str> = present
        .iter()
        .copied()
        .filter(|f| !risk::CORPUS_FEATURES.contains(f))
        .collect();
    let honest_policy_no_corpus = if no_corpus.len() < present.len() {
        honest_evaluation(rows, Target::Policy, L2, &no_corpus).held_out
    } else {
        Vec::new()
    };
    let repairs = if rows.iter().any(|r| !r.outcome.trials.is_empty()) {
        [Definition::Ranking, Definition::OperatingPoint]
            .iter()
            .map(|&d| repair_table(rows, d, op_limit))
            .collect()
    } else {
        Vec::new()
    };
    let by_family = FAMILIES
        .iter()
        .filter_map(|f| {
            let cells: Vec<&HistoryRow> = rows
                .iter()
                .filter(|r| study_family(condition(r)) == *f)
                .collect();
            (!cells.is_empty()).then(|| stale_row(f, &cells, op_limit))
        })
        .collect();
    let updates: Vec<&HistoryRow> = rows
        .iter()
        .filter(|r| !derived(r) && study_family(condition(r)) != "identical")
        .collect();
    let concepts: BTreeSet<&str> = updates
        .iter()
        .map(|r| r.features.concept.as_str())
        .collect();
    let by_concept = concepts
        .iter()
        .map(|k| {
            let cells: Vec<&HistoryRow> = updates
                .iter()
                .copied()
                .filter(|r| r.features.concept == *k)
                .collect();
            stale_row(k, &cells, op_limit)
        })
        .collect();
    Honest {
        rows: rows.len(),
        stale: rows.iter().filter(|r| r.outcome.stale_auroc).count(),
        derived: derived_rows.len(),
        derived_copies,
        naive: risk::evaluate(rows, Target::Ranking, L2).held_out,
        honest,
        k_folds: K_FOLDS,
        seed: SEED,
        resamples: RESAMPLES,
        operating_point_limit: op_limit,
        by_family,
        by_concept,
        all_updates: stale_row("all updates", &updates, op_limit),
        honest_v1_features,
        honest_policy,
        honest_policy_no_corpus,
        stale_policy: rows.iter().filter(|r| r.outcome.stale_policy).count(),
        repairs,
    }
}

#[cfg(test)]
mod tests;
