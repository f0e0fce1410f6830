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
mod tests {
    use super::*;
    use crate::gate::diff::Family;
    use crate::gate::features::MonitorFeatures;
    use crate::gate::risk::Outcome;

    fn row(
        model: &str,
        cond: &str,
        family: Family,
        i: usize,
        d_auroc: f64,
        d_ba: f64,
    ) -> HistoryRow {
        let change = -d_auroc + (i % 3) as f64 * 0.01;
        let f = MonitorFeatures {
            layer: i,
            depth_fraction: i as f64 / 10.0,
            base_auroc: 0.95,
            weight_norm: 1.0 + i as f64,
            change_below: change,
            max_stable_rank: 4.0,
            act_cosine: Some(1.0 - change),
            projected_shift: Some(change),
            score_ks: Some(change.min(1.0)),
            flip_rate: Some(change / 2.0),
            ..MonitorFeatures::example(&format!("c{}-l{i}", i % 2), family)
        };
        HistoryRow::new(
            model,
            cond,
            "fp",
            Some(cond.into()),
            f,
            Outcome {
                auroc: 0.95 + d_auroc,
                delta_auroc: d_auroc,
                balanced_accuracy: 0.9 + d_ba,
                delta_balanced_accuracy: d_ba,
                stale_auroc: d_auroc <= -0.05,
                stale_policy: d_auroc <= -0.05 || d_ba < -0.05,
                stale_operating_point: None,
                trials: Default::default(),
            },
        )
    }

    /// Two models × {identical, int8, nf4, lora-a, merged-lora-a,
    /// merged-bf16-lora-a, lora-b, full}, four monitors each.
    fn grid() -> Vec<HistoryRow> {
        use Family::*;
        let conds: [(&str, Family, f64); 8] = [
            ("identical", Identical, 0.0),
            ("int8", Quantization, -0.001),
            ("nf4", Quantization, -0.025),
            ("lora-a", LowRankAdapter, -0.08),
            ("merged-lora-a", MergedLowRank, -0.08),
            ("merged-bf16-lora-a", MergedLowRank, -0.07),
            ("lora-b", LowRankAdapter, -0.04),
            ("full", FullFineTune, -0.01),
        ];
        let mut out = Vec::new();
        for m in ["a", "b"] {
            for (c, fam, d) in conds {
                for i in 0..4 {
                    let d = d - i as f64 * 0.01;
                    out.push(row(m, c, fam, i, d, if i == 0 { -0.1 } else { 0.0 }));
                }
            }
        }
        out
    }

    #[test]
    fn family_folds_hold_merged_out_with_its_source() {
        let rows = grid();
        let keys = family_folds(&rows);
        for (r, k) in rows.iter().zip(&keys) {
            let want = match condition(r) {
                "lora-a" | "merged-lora-a" | "merged-bf16-lora-a" | "lora-b" => "LowRankAdapter",
                "int8" | "nf4" => "Quantization",
                "full" => "FullFineTune",
                _ => "Identical",
            };
            assert_eq!(k, want, "{}", condition(r));
        }
        // A merge whose source is not in the history keeps its own family.
        let alone: Vec<HistoryRow> = rows
            .into_iter()
            .filter(|r| condition(r) != "lora-a")
            .collect();
        let keys = family_folds(&alone);
        let (_, k) = alone
            .iter()
            .zip(&keys)
            .find(|(r, _)| condition(r) == "merged-lora-a")
            .unwrap();
        assert_eq!(k, "MergedLowRank");
    }

    #[test]
    fn grouped_folds_never_split_a_source_group() {
        let rows = grid();
        for k in [1, 2, 3, 5, 50] {
            let keys = grouped_kfold(&rows, k, SEED);
            let mut fold_of: BTreeMap<String, &str> = BTreeMap::new();
            for (r, f) in rows.iter().zip(&keys) {
                let g = source_group(condition(r));
                assert_eq!(
                    *fold_of.entry(g.clone()).or_insert(f),
                    f.as_str(),
                    "{g} split at k={k}"
                );
            }
            // 6 source groups: every fold used, never more than asked.
            let folds: BTreeSet<&String> = keys.iter().collect();
            assert_eq!(folds.len(), k.min(6), "k={k}");
        }
        assert_eq!(grouped_kfold(&rows, 3, 1), grouped_kfold(&rows, 3, 1));
    }

    #[test]
    fn bootstrap_is_seeded_and_brackets_its_estimate() {
        let clusters = [(1, 10), (4, 10), (0, 10), (7, 10), (2, 10), (3, 10)];
        let a = bootstrap(&clusters, 1000, 5);
        assert_eq!(a, bootstrap(&clusters, 1000, 5));
        assert_eq!((a.stale, a.cells), (17, 60));
        assert!((a.rate - 17.0 / 60.0).abs() < 1e-12);
        assert!(a.lo < a.rate && a.rate < a.hi, "{a:?}");
        assert!(a.lo >= 0.0 && a.hi <= 0.7, "{a:?}");
        // No spread in the clusters, no spread in the interval.
        let flat = bootstrap(&[(2, 4), (2, 4)], 100, 1);
        assert_eq!((flat.lo, flat.rate, flat.hi), (0.5, 0.5, 0.5));
        let none = bootstrap(&[], 100, 1);
        assert_eq!((none.cells, none.rate), (0, 0.0));
    }

    #[test]
    fn staleness_tables_count_both_definitions() {
        let rows = grid();
        let h = analyse(&rows, 0.05);
        assert_eq!((h.rows, h.derived), (64, 16));
        // merged-lora-a repeats lora-a exactly; the bf16 one does not.
        assert_eq!(h.derived_copies, 8);
        let fam = |n: &str| h.by_family.iter().find(|r| r.name == n).unwrap();
        // int8 8-bit, nf4 4-bit, split.
        assert_eq!(fam("quantization 8-bit").cells, 8);
        assert_eq!(fam("quantization 4-bit").cells, 8);
        assert!(h.by_family.iter().all(|r| r.name != "quantization"));
        // nf4: ΔAUROC −0.025 … −0.055: one monitor in four ranks worse than the limit.
        assert_eq!(fam("quantization 4-bit").ranking.stale, 2);
        // int8: never by ranking; by operating point monitor 0 (ΔBA −0.1) on both models.
        let q8 = fam("quantization 8-bit");
        assert_eq!(
            (q8.ranking.stale, q8.operating_point.stale, q8.disagree),
            (0, 2, 2)
        );
        assert_eq!(q8.clusters, 2);
        assert_eq!(fam("identical").ranking.stale, 0);
        // Merged copies by how they ship: the v1 f32 merge and the bf16 one.
        assert_eq!(fam("merged LoRA").cells, 8);
        assert_eq!(fam("merged LoRA, bf16").cells, 8);
        // Concepts pool each source update once: no identical, no merged.
        let c0 = &h.by_concept[0];
        assert_eq!((c0.name.as_str(), c0.cells), ("c0", 20));
        assert_eq!(h.all_updates.cells, 40);
        for r in h.by_family.iter().chain(&h.by_concept) {
            for i in [&r.ranking, &r.operating_point, &r.policy] {
                assert!(
                    0.0 <= i.lo && i.lo <= i.rate && i.rate <= i.hi && i.hi <= 1.0,
                    "{r:?}"
                );
            }
        }
        assert_eq!(h.honest.len(), 5);
    }

    /// Repairs count per definition, and the repair-relevant denominator is
    /// the cells whose retrained probe meets that definition's limit.
    #[test]
    fn repairs_are_judged_on_what_broke() {
        let t = |ranking_after: bool, op_after: bool| Trial {
            examples: 0,
            auroc: 0.9,
            balanced_accuracy: 0.9,
            ranking_after,
            operating_point_after: op_after,
            passes_policy: !ranking_after && !op_after,
            any_alternative_passes: Some(true),
        };
        let mut rows = Vec::new();
        // Stale by ranking only; retraining recovers ranking; realignment
        // fixes ranking but leaves the threshold off.
        let mut a = row("m", "lora-a", Family::LowRankAdapter, 0, -0.2, 0.0);
        a.outcome.stale_operating_point = Some(false);
        a.outcome.trials = Trials {
            realignment: Some(t(false, true)),
            recalibration: Some(t(true, false)),
            retraining: Some(t(false, false)),
        };
        rows.push(a);
        // Stale by both; retraining cannot recover ranking (not relevant
        // there), recovers the operating point, as recalibration does.
        let mut b = row("m", "lora-b", Family::LowRankAdapter, 1, -0.2, -0.2);
        b.outcome.stale_operating_point = Some(true);
        b.outcome.trials = Trials {
            realignment: Some(t(true, true)),
            recalibration: Some(t(true, false)),
            retraining: Some(t(true, false)),
        };
        rows.push(b);
        // Healthy: in no table.
        rows.push(row("m", "lora-c", Family::LowRankAdapter, 2, 0.0, 0.0));
        let rk = repair_table(&rows, Definition::Ranking, 0.05);
        assert_eq!((rk.stale, rk.relevant), (2, 1));
        let by = |t: &RepairTable, i: usize| (t.methods[i].1.stale, t.methods[i].2.stale);
        // Realignment: fixes ranking on a (relevant), not on b.
        assert_eq!(by(&rk, 0), (1, 1));
        // Recalibration never fixes ranking.
        assert_eq!(by(&rk, 1), (0, 0));
        let op = repair_table(&rows, Definition::OperatingPoint, 0.05);
        assert_eq!((op.stale, op.relevant), (1, 1));
        assert_eq!(by(&op, 0), (0, 0));
        assert_eq!(by(&op, 1), (1, 1));
        assert_eq!(by(&op, 2), (1, 1));
        // Against the whole policy: neither choice passed; both had a map that would.
        assert_eq!((rk.choice_passes, rk.hindsight_passes), (0, 2));
    }
}
