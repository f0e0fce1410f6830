use super::*;
use crate::gate::diff::Family;
use crate::gate::features::MonitorFeatures;
use crate::gate::risk::Outcome;

fn row(model: &str, cond: &str, family: Family, i: usize, d_auroc: f64, d_ba: f64) -> HistoryRow {
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
