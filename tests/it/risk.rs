//! `probegate risk`: the prediction a user sees matches what the gate's risk
//! stage computes, and fitted models say what they predict.

use crate::harness::{bin, fixture, repo};

#[test]
fn risk_reads_the_concept_features_and_ranks_an_adapter() {
    let out = bin()
        .current_dir(std::env::temp_dir())
        .args(["risk", "--base", "smollm2", "--format", "json", "--quiet"])
        .arg("--candidate")
        .arg(format!(
            "smollm2+{}",
            fixture("adapters/smollm2-lora-r4").display()
        ))
        .arg("--monitors")
        .arg(repo().join("monitors/smollm2/self_harm-l22"))
        .assert()
        .success();
    let rows: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    let (f, r) = (&rows[0][0], &rows[0][1]);
    // Run from outside the clone: the suite's training texts come from the
    // data built into the binary, as `check` finds them.
    let d = f["concept_decision_auroc"].as_f64().unwrap();
    assert!(d > 0.5 && d < 1.0, "{f}");
    let p = r["p_stale"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p), "{r}");
}

#[test]
fn fitted_models_record_their_target() {
    let tmp = tempfile::tempdir().unwrap();
    let history = repo().join("study/v2/history-smollm2.jsonl");
    for (args, target) in [(vec![], "policy"), (vec!["--target", "ranking"], "ranking")] {
        let out = tmp.path().join(format!("{target}.json"));
        bin()
            .args(["risk", "fit", "--quiet"])
            .arg(&history)
            .args(&args)
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(m["target"], target);
        let rows = std::fs::read_to_string(&history).unwrap();
        let key = if target == "policy" {
            "\"stale_policy\":true"
        } else {
            "\"stale_auroc\":true"
        };
        assert_eq!(
            m["fitted_stale"].as_u64().unwrap() as usize,
            rows.lines().filter(|l| l.contains(key)).count()
        );
    }
    // Several histories are read together, and judged on the honest folds
    // only: a merged condition is held out with the adapter it came from.
    let gemma = repo().join("study/v2/history-gemma3.jsonl");
    let out = bin()
        .args(["risk", "eval", "--target", "ranking"])
        .arg(&history)
        .arg(&gemma)
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    let lines = |p: &std::path::Path| std::fs::read_to_string(p).unwrap().lines().count();
    let cells = format!("{} cells, ", lines(&history) + lines(&gemma));
    assert!(text.starts_with(&cells), "{cells}: {text}");
    assert!(text.contains("stale by ranking"), "{text}");
    for folds in [
        "held out: one family, merged with its source (",
        "held out: one model (2 folds)",
        "held out: one source group (5-fold)",
    ] {
        assert!(text.contains(folds), "{folds}: {text}");
    }
}
