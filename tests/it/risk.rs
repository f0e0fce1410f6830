//! `probegate risk`: the prediction a user sees matches what the gate's risk
//! stage computes, and fitted models say what they predict.

use std::path::Path;

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
fn risk_reads_base_and_suite_from_probegate_toml_as_check_does() {
    let tmp = tempfile::tempdir().unwrap();
    let suite = repo().join("monitors/smollm2/self_harm-l22");
    std::fs::write(
        tmp.path().join("probegate.toml"),
        format!(
            "base = \"smollm2\"\nmonitors = {:?}\n",
            suite.display().to_string()
        ),
    )
    .unwrap();
    let sub = tmp.path().join("some/dir");
    std::fs::create_dir_all(&sub).unwrap();
    let candidate = format!("smollm2+{}", fixture("adapters/smollm2-lora-r4").display());
    let out = bin()
        .current_dir(&sub)
        .args([
            "risk",
            "--format",
            "json",
            "--quiet",
            "--candidate",
            &candidate,
        ])
        .assert()
        .success();
    let rows: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    assert_eq!(rows[0][0]["monitor"], "self_harm-l22");
    // --no-config reads none, and says which flag is missing and where it may go.
    let out = bin()
        .current_dir(&sub)
        .args(["risk", "--no-config", "--quiet", "--candidate", &candidate])
        .assert()
        .code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        err.contains("--base is required") && err.contains("probegate.toml"),
        "{err}"
    );
}

#[test]
fn fitted_models_record_their_target() {
    let tmp = tempfile::tempdir().unwrap();
    let history = repo().join("study/v2/history-smollm2.jsonl");
    for (args, target) in [(vec![], "policy"), (vec!["--target", "ranking"], "ranking")] {
        let out = tmp.path().join(format!("{target}.json"));
        let m = fit(&[&history], &args, &out);
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

/// `probegate risk fit` on `history` with `args`, written to `out`; the model as JSON.
pub(crate) fn fit(history: &[&Path], args: &[&str], out: &Path) -> serde_json::Value {
    bin()
        .args(["risk", "fit", "--quiet"])
        .args(history)
        .args(args)
        .arg("--out")
        .arg(out)
        .assert()
        .success();
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

/// The features the corpus gives, which a model may leave out.
const CORPUS: [&str; 5] = [
    "act_distance",
    "abs_projected_shift",
    "score_ks",
    "flip_rate",
    "base_margin",
];

/// Every feature but the corpus's, comma-separated for `--features`.
pub(crate) fn without_corpus() -> String {
    probegate::gate::risk::FEATURE_NAMES
        .iter()
        .filter(|f| !CORPUS.contains(f))
        .copied()
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn a_model_reads_only_the_features_it_is_given() {
    let tmp = tempfile::tempdir().unwrap();
    let history = repo().join("study/v2/history-smollm2.jsonl");
    let m = fit(
        &[&history],
        &["--features", &without_corpus()],
        &tmp.path().join("m.json"),
    );
    let names: Vec<&str> = m["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(names.join(","), without_corpus());
    // The held-out folds are fitted on the same features.
    let ev = bin()
        .args([
            "risk",
            "eval",
            "--format",
            "json",
            "--features",
            &without_corpus(),
        ])
        .arg(&history)
        .assert()
        .success();
    let ev: serde_json::Value = serde_json::from_slice(&ev.get_output().stdout).unwrap();
    let auc = ev["held_out"][0]["auroc"]["risk_model"].as_f64().unwrap();
    assert!(auc > 0.5 && auc <= 1.0, "{ev}");
    // A name that is no feature is refused, listing the ones there are.
    bin()
        .args(["risk", "fit", "--features", "act_distance,nope"])
        .arg(&history)
        .assert()
        .code(2)
        .stderr(predicates::str::contains(
            "`nope` is not a risk feature; one of: depth_fraction",
        ));
}
