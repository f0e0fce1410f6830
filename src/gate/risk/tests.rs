use super::*;
use crate::monitor::metrics::auroc;

fn row(i: usize, model: &str, family: Family, change: f64, stale: bool) -> HistoryRow {
    let f = MonitorFeatures {
        concept: "c".into(),
        layer: i % 20,
        depth_fraction: (i % 20) as f64 / 20.0,
        base_auroc: 0.95 + (i % 5) as f64 * 0.01,
        weight_norm: 1.0 + (i % 7) as f64,
        change_below: change,
        max_stable_rank: 4.0,
        act_cosine: Some(1.0 - change),
        projected_shift: Some(change * 10.0),
        score_ks: Some(change.min(1.0)),
        flip_rate: Some(change / 2.0),
        ..MonitorFeatures::example(&format!("m{i}"), family)
    };
    let d = if stale { -0.1 } else { -0.01 };
    HistoryRow::new(
        model,
        "cand",
        "fp",
        None,
        f,
        Outcome {
            auroc: 0.9,
            delta_auroc: d,
            balanced_accuracy: 0.9,
            delta_balanced_accuracy: d,
            stale_auroc: stale,
            stale_policy: stale,
            stale_operating_point: None,
            trials: Default::default(),
        },
    )
}

/// A model predicts the target it was fitted for: where the policy calls
/// a moderate change stale and ranking does not, the two models disagree
/// on it, and a model file without a target reads as ranking.
#[test]
fn the_target_decides_what_p_stale_means() {
    let rows: Vec<HistoryRow> = (0..200)
        .map(|i| {
            let change = (i % 40) as f64 / 100.0;
            let mut r = row(i, "a", Family::LowRankAdapter, change, change > 0.3);
            r.outcome.stale_policy = change > 0.1;
            r
        })
        .collect();
    let refs: Vec<&HistoryRow> = rows.iter().collect();
    let ranking = fit(&refs, Target::Ranking, 1.0, "t").unwrap();
    let policy = fit(&refs, Target::Policy, 1.0, "t").unwrap();
    let mid = &rows[20].features; // change 0.2
    assert!(ranking.predict(mid).p_stale < 0.5, "{ranking:?}");
    assert!(policy.predict(mid).p_stale > 0.5, "{policy:?}");
    assert_eq!(
        policy.fitted_stale,
        rows.iter().filter(|r| r.outcome.stale_policy).count()
    );
    let mut v = serde_json::to_value(&policy).unwrap();
    assert_eq!(v["target"], "policy");
    v.as_object_mut().unwrap().remove("target");
    let old = RiskModel::parse(&v.to_string(), Path::new("old.json")).unwrap();
    assert_eq!(old.target, Target::Ranking);
}

/// Staleness driven by the size of the change: the fitted model must rank
/// by it, on held-out models too, and beat the family-alone baseline.
#[test]
fn fits_predicts_and_evaluates_held_out() {
    let mut rows = Vec::new();
    for i in 0..200 {
        let change = (i % 40) as f64 / 100.0;
        let family = [
            Family::Quantization,
            Family::LowRankAdapter,
            Family::FullFineTune,
        ][i % 3];
        let model = if i % 2 == 0 { "a" } else { "b" };
        rows.push(row(i, model, family, change, change > 0.2));
    }
    let refs: Vec<&HistoryRow> = rows.iter().collect();
    let m = fit(&refs, Target::Ranking, 1.0, "test").unwrap();
    let lo = m.predict(&rows[1].features).p_stale; // change 0.01
    let hi = m.predict(&rows[35].features).p_stale; // change 0.35
    assert!(hi > 0.8 && lo < 0.2, "{lo} {hi}");
    let ev = evaluate(&rows, Target::Ranking, 1.0);
    let by_model = ev.held_out.iter().find(|h| h.by == "model").unwrap();
    let au = by_model.auroc["risk_model"].unwrap();
    assert!(au > 0.95, "{au}");
    assert!(au > by_model.auroc["family_alone"].unwrap());
    // Triage: revalidating the top half catches every stale cell (they are 45%).
    assert_eq!(by_model.triage[4].1, 1.0);
    // One class only: a clear error, not a model.
    let healthy: Vec<&HistoryRow> = rows.iter().filter(|r| !r.outcome.stale_auroc).collect();
    assert!(fit(&healthy, Target::Ranking, 1.0, "t")
        .unwrap_err()
        .to_string()
        .contains("all healthy"));
}

#[test]
fn corrupt_history_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("h.jsonl");
    let good = serde_json::to_string(&row(0, "a", Family::Quantization, 0.1, false)).unwrap();
    std::fs::write(
        &p,
        format!("{good}\n{{\"format\": \"probegate.history\"}}\n"),
    )
    .unwrap();
    let e = read_history(&p).unwrap_err().to_string();
    assert!(e.contains("h.jsonl:2:"), "{e}");
    std::fs::write(&p, format!("{good}\nnot json\n")).unwrap();
    assert!(read_history(&p)
        .unwrap_err()
        .to_string()
        .contains("h.jsonl:2:"));
    assert_eq!(
        read_history(&{
            std::fs::write(&p, format!("{good}\n")).unwrap();
            p.clone()
        })
        .unwrap()
        .len(),
        1
    );
}

#[test]
fn models_name_their_features_and_a_missing_one_reads_as_its_mean() {
    // Rows with the concept features on half of them, the signal in
    // concept_ks: the fit imputes the rest with the mean of those given.
    let rows: Vec<HistoryRow> = (0..40)
        .map(|i| {
            let stale = i % 2 == 0;
            let mut r = row(i, "a", Family::LowRankAdapter, 0.01, stale);
            if i < 20 {
                r.features.concept_ks = Some(if stale { 0.6 } else { 0.1 });
                r.features.concept_shift = Some(0.0);
                r.features.concept_flip_rate = Some(0.0);
            }
            r
        })
        .collect();
    let refs: Vec<&HistoryRow> = rows.iter().collect();
    let m = fit(&refs, Target::Ranking, 1.0, "test").unwrap();
    // Every feature the rows have: all but the one none of them has.
    assert!(rows
        .iter()
        .all(|r| r.features.concept_decision_auroc.is_none()));
    assert_eq!(m.features, FEATURE_NAMES[..FEATURE_NAMES.len() - 1]);
    let j = m.features.iter().position(|f| f == "concept_ks").unwrap();
    assert!((m.mean[j] - 0.35).abs() < 1e-9, "{}", m.mean[j]);
    assert!(
        m.coef[j] > 0.0,
        "concept_ks must push risk up: {}",
        m.coef[j]
    );
    // Without the feature a row scores as if it sat at the mean.
    let mut lacking = rows[1].features.clone();
    lacking.concept_ks = None;
    let mut at_mean = lacking.clone();
    at_mean.concept_ks = Some(m.mean[j]);
    assert_eq!(m.predict(&lacking).p_stale, m.predict(&at_mean).p_stale);
    // A model over the first version's 14 features still loads and predicts.
    let v1 = fit_on(&refs, FEATURE_NAMES_V1, Target::Ranking, 1.0, "test").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v1.json");
    v1.save(&p).unwrap();
    assert_eq!(RiskModel::load(&p).unwrap().features.len(), 14);
    // A feature this version does not compute is refused by name.
    let mut bad = v1.clone();
    bad.features[3] = "moon_phase".into();
    bad.save(&p).unwrap();
    let e = RiskModel::load(&p).unwrap_err().to_string();
    assert!(e.contains("features") && e.contains("moon_phase"), "{e}");
    // Rows from runs that skipped the corpus: `fit` leaves its features
    // out (a model reading them would make every run compute them), and
    // naming one no row has is refused.
    assert!(m.reads_corpus() && v1.reads_corpus());
    let skipped: Vec<HistoryRow> = rows
        .iter()
        .cloned()
        .map(|mut r| {
            r.features.act_cosine = None;
            r.features.projected_shift = None;
            r.features.score_ks = None;
            r.features.flip_rate = None;
            r.features.base_margin = None;
            r
        })
        .collect();
    let refs: Vec<&HistoryRow> = skipped.iter().collect();
    let m = fit(&refs, Target::Ranking, 1.0, "test").unwrap();
    assert!(!m.reads_corpus(), "{:?}", m.features);
    // (concept_decision_loss is in none of these rows either.)
    assert_eq!(
        m.features.len(),
        FEATURE_NAMES.len() - CORPUS_FEATURES.len() - 1
    );
    let e = fit_on(
        &refs,
        &["base_auroc", "score_ks"],
        Target::Ranking,
        1.0,
        "test",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("`score_ks`"), "{e}");
    let mut short = v1;
    short.coef.pop();
    short.save(&p).unwrap();
    let e = RiskModel::load(&p).unwrap_err().to_string();
    assert!(e.contains("coef") && e.contains("13 values for 14"), "{e}");
}

#[test]
fn the_shipped_model_parses_and_ranks_its_grid() {
    let m = RiskModel::default_model().unwrap();
    assert!(m
        .features
        .iter()
        .all(|f| FEATURE_NAMES.contains(&f.as_str())));
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let grid: Vec<HistoryRow> = ["smollm2", "gemma3"]
        .iter()
        .flat_map(|m| read_history(&root.join(format!("study/v2/history-{m}.jsonl"))).unwrap())
        .collect();
    assert_eq!(m.target, Target::Policy);
    assert_eq!(m.features.len(), FEATURE_NAMES.len());
    assert_eq!(
        (m.fitted_rows, m.fitted_stale),
        (
            grid.len(),
            grid.iter().filter(|r| m.target.stale(&r.outcome)).count()
        )
    );
    let p: Vec<f64> = grid
        .iter()
        .map(|r| m.predict(&r.features).p_stale)
        .collect();
    let y: Vec<u8> = grid
        .iter()
        .map(|r| m.target.stale(&r.outcome) as u8)
        .collect();
    let au = auroc(&p, &y).unwrap();
    assert!(au > 0.85, "in-sample AUROC {au}");
}

/// A serve job rerun after a crash between its history append and the
/// job's record appended its rows twice; keyed rows now go in once.
#[test]
fn a_run_key_appends_its_rows_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("h.jsonl");
    let keyed = |k: &str| {
        let mut r = vec![
            row(1, "smollm2", Family::LowRankAdapter, 0.1, false),
            row(2, "smollm2", Family::LowRankAdapter, 0.2, true),
        ];
        r.iter_mut().for_each(|x| x.run = Some(k.into()));
        r
    };
    append_history(&p, &keyed("serve:7:100")).unwrap();
    append_history(&p, &keyed("serve:7:100")).unwrap();
    append_history(&p, &keyed("serve:8:101")).unwrap();
    let unkeyed = [row(3, "smollm2", Family::LowRankAdapter, 0.1, false)];
    append_history(&p, &unkeyed).unwrap();
    append_history(&p, &unkeyed).unwrap();
    let rows = read_history(&p).unwrap();
    assert_eq!(rows.len(), 6);
    let n = |k: &str| rows.iter().filter(|r| r.run.as_deref() == Some(k)).count();
    assert_eq!((n("serve:7:100"), n("serve:8:101")), (2, 2));
}
