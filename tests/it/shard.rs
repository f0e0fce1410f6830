//! `check --shard I/N` and `report merge` on the real SmolLM2 and the
//! committed LoRA adapter: the shards of a full revalidation merge into the
//! report the unsharded run gives, and parts that are not one whole fail
//! closed.

use std::collections::BTreeMap;
use std::path::Path;

use predicates::prelude::*;

use crate::check::{check, lora_candidate, report, test_policy};
use crate::harness::*;

/// Per monitor: status, rung and the labeled figures behind them.
fn monitors(r: &serde_json::Value) -> BTreeMap<String, (String, String, Vec<f64>)> {
    r["monitors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let e = &m["eval"];
            let figs = ["auroc", "delta_auroc", "balanced_accuracy", "tpr", "fpr"]
                .iter()
                .map(|k| e[k].as_f64().unwrap_or(f64::NAN))
                .collect();
            (
                m["name"].as_str().unwrap().to_string(),
                (
                    m["status"].as_str().unwrap().to_string(),
                    m["rung"].as_str().unwrap().to_string(),
                    figs,
                ),
            )
        })
        .collect()
}

fn merge(shards: &[&Path], out: &Path) -> assert_cmd::Command {
    let mut c = bin();
    c.args(["report", "merge", "--quiet"])
        .args(shards)
        .arg("--out")
        .arg(out);
    c
}

#[test]
fn shards_of_a_full_revalidation_merge_into_the_unsharded_report() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = test_policy(tmp.path(), &[]);
    let cand = lora_candidate();
    let whole = tmp.path().join("whole");
    let code = check("smollm2", &cand, &policy, &whole)
        .arg("--full")
        .output()
        .unwrap()
        .status
        .code();
    assert!(matches!(code, Some(0 | 1)), "{code:?}");
    let parts: Vec<_> = (1..=2)
        .map(|i| tmp.path().join(format!("shard-{i}")))
        .collect();
    for (i, out) in parts.iter().enumerate() {
        let c = check("smollm2", &cand, &policy, out)
            .args(["--full", "--shard", &format!("{}/2", i + 1)])
            .output()
            .unwrap();
        assert!(matches!(c.status.code(), Some(0 | 1)), "{c:?}");
    }
    let (s1, s2) = (report(&parts[0]), report(&parts[1]));
    let w = report(&whole);
    // Whole concepts, disjoint, covering the suite; the budget split by examples.
    let concepts = |r: &serde_json::Value| -> Vec<String> {
        serde_json::from_value(r["shard"]["concepts"].clone()).unwrap()
    };
    let (c1, c2) = (concepts(&s1), concepts(&s2));
    assert!(!c1.is_empty() && !c2.is_empty());
    assert!(c1.iter().all(|c| !c2.contains(c)), "{c1:?} {c2:?}");
    assert_eq!(c1.len() + c2.len(), 6);
    assert_eq!(s1["shard"]["suite_monitors"], 18);
    for s in [&s1, &s2] {
        for m in s["monitors"].as_array().unwrap() {
            assert!(concepts(s).contains(&m["concept"].as_str().unwrap().to_string()));
        }
        let (full, limit) = (
            s["budget"]["examples_full"].as_u64().unwrap(),
            s["budget"]["examples_limit"].as_u64().unwrap(),
        );
        let suite_full = w["budget"]["examples_full"].as_u64().unwrap();
        assert_eq!(
            limit,
            720 * full / suite_full,
            "the shard's share of the budget"
        );
    }

    let merged = tmp.path().join("merged");
    let out = merge(&[&parts[1], &parts[0]], &merged).output().unwrap();
    assert_eq!(out.status.code(), code, "{out:?}");
    let m = report(&merged);
    assert_eq!(m["verdict"], w["verdict"]);
    assert_eq!(m["reasons"], w["reasons"]);
    assert_eq!(m["budget"]["examples_used"], w["budget"]["examples_used"]);
    assert_eq!(m["budget"]["examples_full"], w["budget"]["examples_full"]);
    assert!(m.get("shard").is_none());
    let (mm, wm) = (monitors(&m), monitors(&w));
    assert_eq!(mm.len(), 18);
    for (name, (status, rung, figs)) in &wm {
        let (s, r, f) = &mm[name];
        assert_eq!((s, r), (status, rung), "{name}");
        for (a, b) in f.iter().zip(figs) {
            assert!(
                (a - b).abs() < 1e-6 || (a.is_nan() && b.is_nan()),
                "{name}: {f:?} vs {figs:?}"
            );
        }
    }
    // Every repaired monitor of the shards is beside the merged report.
    for mon in m["monitors"].as_array().unwrap() {
        if let Some(dir) = mon["repaired_monitor"].as_str() {
            assert!(merged.join(dir).join("monitor.json").is_file(), "{dir}");
        }
    }
    assert!(std::fs::read_to_string(merged.join("report.md"))
        .unwrap()
        .contains("probegate:"));

    // One shard is not the suite: no verdict, an error report, exit 2.
    let bad = tmp.path().join("bad");
    merge(&[&parts[0]], &bad)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("shard 2/2 missing"));
    assert_eq!(report(&bad)["verdict"], "error");
    // A whole-suite report is not a shard.
    merge(&[&parts[0], &whole], &bad)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "field `shard`: not a shard report",
        ));
}

#[test]
fn a_shard_that_would_judge_nothing_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = test_policy(tmp.path(), &[]);
    let out = tmp.path().join("out");
    let base = model_path("smollm2").display().to_string();
    check(&base, &base, &policy, &out)
        .args(["--shard", "7/7"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("the suite has 6 concepts"));
    assert_eq!(report(&out)["verdict"], "error");
    for bad in ["0/2", "3/2", "two/3"] {
        check(&base, &base, &policy, &out)
            .args(["--shard", bad])
            .assert()
            .code(2)
            .stderr(predicate::str::contains("is not I/N"));
    }
}
