//! Screened revalidation (the default policy's): every test example
//! through both models, labels read only where they can move a bound, and
//! worst-case bounds that must hold the figures a full revalidation
//! measures.

use super::*;

/// On a requantized SmolLM2 (Q8_0: decisions barely move), the default
/// policy settles every monitor of two concepts on a few of their labels,
/// and the worst-case bounds it reports hold the changes `--full`
/// measures on every example.
#[test]
fn screening_reads_few_labels_and_its_bounds_hold_the_full_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let names = [
        "self_harm-l7",
        "self_harm-l15",
        "self_harm-l22",
        "toxicity-l7",
        "toxicity-l15",
        "toxicity-l22",
    ];
    let suite = suite_of(tmp.path(), &names);
    let policy = test_policy(tmp.path(), &[("\nscreen = true", "\nscreen = true")]);
    let cand = format!("q8_0({})", model_path("smollm2").display());
    let out = tmp.path().join("screened");
    check_suite(&cand, &suite, &policy, &out).assert().code(0);
    let full_out = tmp.path().join("full");
    check_suite(&cand, &suite, &policy, &full_out)
        .arg("--full")
        .assert()
        .code(0);
    let (r, full) = (report(&out), report(&full_out));
    let of: u64 = ["self_harm", "toxicity"]
        .iter()
        .map(|c| {
            r["monitors"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["concept"] == *c)
                .unwrap()["sequential"]["of"]
                .as_u64()
                .unwrap()
        })
        .sum();
    let used = r["budget"]["examples_used"].as_u64().unwrap();
    assert!(used < of / 2, "{used} labels of {of}");
    for m in r["monitors"].as_array().unwrap() {
        let name = m["name"].as_str().unwrap();
        let s = &m["sequential"];
        assert_eq!(m["status"], "healthy", "{name}: {m}");
        assert_eq!(s["z"], 0.0, "{name}: worst-case bounds have no quantile");
        assert!(s["examples"].as_u64().unwrap() < s["of"].as_u64().unwrap());
        let f = full["monitors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name)
            .unwrap();
        // The full revalidation's changes against the base figures the
        // monitor records (measured on the same whole test set).
        let rec: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(suite.join(name).join("monitor.json")).unwrap(),
        )
        .unwrap();
        let (e, b) = (&f["eval"], &rec["base_metrics"]);
        let delta = |k: &str| e[k].as_f64().unwrap() - b[k].as_f64().unwrap();
        for (metric, truth) in [
            ("auroc", delta("auroc")),
            ("tpr", delta("tpr")),
            ("fpr", delta("fpr")),
            ("balanced_accuracy", delta("balanced_accuracy")),
        ] {
            let (lo, hi) = (
                s["bounds"][metric]["lo"].as_f64().unwrap(),
                s["bounds"][metric]["hi"].as_f64().unwrap(),
            );
            assert!(
                lo - 1e-9 <= truth && truth <= hi + 1e-9,
                "{name}: full {metric} change {truth} outside [{lo}, {hi}]"
            );
        }
    }
}
