//! The CI slice of the study (#8): `study grid` over a small zoo of real
//! conditions on SmolLM2 (the base itself, GGUF Q8_0 requantization, the
//! committed LoRA adapter), then `study report` writing STUDY.md from it.
//! The full grid is the documented command in STUDY.md.

use crate::harness::*;

#[test]
fn a_small_grid_and_its_study_report() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = crate::check::test_policy(tmp.path(), &[]);
    let zoo = tmp.path().join("zoo");
    std::fs::create_dir_all(&zoo).unwrap();
    let adapter = fixture("zoo/smollm2-lora-r8-attn-support");
    let manifest = serde_json::json!({
        "format": 1, "base": "smollm2", "base_fingerprint": "", "seed": 0,
        "budget": {"lora_steps": 30, "full_steps": 20, "batch_size": 4, "seq_len": 64,
                   "lora_lr": 0.001, "full_lr": 5e-05, "eval_windows": 16},
        "conditions": [
            {"name": "q8_0", "family": "quantization", "recipe": {"recipe": "gguf", "scheme": "q8_0"},
             "reference": "q8_0(smollm2)", "seconds": 0.0},
            {"name": "lora-r8-attn-support", "family": "lora",
             "recipe": {"recipe": "lora", "r": 8, "targets": "attn", "corpus": "support", "quantized_base": false},
             "reference": format!("smollm2+{}", adapter.display()), "seconds": 0.0}
        ]
    });
    std::fs::write(zoo.join("zoo.json"), manifest.to_string()).unwrap();
    let reports = tmp.path().join("reports");
    let history = tmp.path().join("grid.jsonl");
    bin()
        .current_dir(repo())
        .args([
            "study",
            "grid",
            "--quiet",
            "--monitors",
            "monitors/smollm2",
            "--zoo",
        ])
        .arg(&zoo)
        .arg("--policy")
        .arg(&policy)
        .arg("--history")
        .arg(&history)
        .arg("--reports")
        .arg(&reports)
        .assert()
        .success();
    // Every monitor revalidated on every condition: 3 × 18 history rows.
    let rows = probegate::gate::risk::read_history(&history).unwrap();
    assert_eq!(rows.len(), 54);
    assert!(rows.iter().all(|r| r.condition.is_some()));

    // The same conditions under the default policy (sequential), run for
    // real: a replay of full reports cannot redo sequential looks.
    let budgeted = tmp.path().join("budgeted");
    bin()
        .current_dir(repo())
        .args([
            "study",
            "grid",
            "--quiet",
            "--budgeted",
            "--monitors",
            "monitors/smollm2",
            "--zoo",
        ])
        .arg(&zoo)
        .arg("--policy")
        .arg(&policy)
        .arg("--reports")
        .arg(&budgeted)
        .assert()
        .success();
    let md = tmp.path().join("STUDY.md");
    let report = |extra: &[&std::ffi::OsStr]| {
        let mut c = bin();
        c.current_dir(repo())
            .args(["study", "report", "--reports"])
            .arg(&reports)
            .args(extra)
            .arg("--out")
            .arg(&md)
            .arg("--policy")
            .arg(&policy);
        c
    };
    report(&[])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("sequentially"));
    report(&["--budgeted".as_ref(), budgeted.as_os_str()])
        .assert()
        .success();
    let text = std::fs::read_to_string(&md).unwrap();
    assert!(
        text.contains("3 model × condition runs, 54 cells"),
        "{text}"
    );
    for row in [
        "| identical | 18 | +0.0000 | 0/18 = 0.0% |",
        "| quantization 8-bit | 18 |",
        "| LoRA | 18 |",
    ] {
        assert!(text.contains(row), "missing {row}:\n{text}");
    }
    // The LoRA-on-support adapter makes monitors stale (see tests/it/check/).
    let lora = text
        .lines()
        .find(|l| l.starts_with("| LoRA | 18 |"))
        .unwrap();
    assert!(!lora.contains("| 0/18 = 0.0% |"), "{lora}");
    // Both the real runs and the whole-set replay: no candidate passed with
    // a stale monitor left.
    assert!(text.contains("### The `default` policy, run"), "{text}");
    assert!(
        text.contains("### Whole-set revalidation, replayed"),
        "{text}"
    );
    assert!(
        text.matches("False passes: 0 of 3 (0 with a critical monitor left stale). False fails: ")
            .count()
            == 2,
        "{text}"
    );
    for svg in ["families.svg", "concepts.svg", "triage.svg"] {
        let s = std::fs::read_to_string(tmp.path().join("study").join(svg)).unwrap();
        assert!(s.starts_with("<svg"), "{svg}");
    }
    // The grid tried every rung on every stale cell: the v2 sections.
    for section in [
        "## Against the published figures",
        "| quantization barely moves probes |",
        "## Repairs judged on what broke",
        "### ranking: ",
        "### operating point: ",
        "| retraining (whole training split) |",
    ] {
        assert!(text.contains(section), "missing {section}:\n{text}");
    }
    let stale_rows: Vec<_> = rows.iter().filter(|r| r.outcome.stale_policy).collect();
    assert!(!stale_rows.is_empty());
    for r in &stale_rows {
        let t = &r.outcome.trials;
        assert!(
            t.realignment.is_some() && t.recalibration.is_some() && t.retraining.is_some(),
            "every rung tried alone on {}: {t:?}",
            r.features.monitor
        );
    }

    bin()
        .args(["study", "summarize"])
        .arg(&reports)
        .arg("--policy")
        .arg(&policy)
        .assert()
        .code(2)
        .stderr(predicates::str::contains("sequentially"));
    let out = bin()
        .args(["study", "summarize", "--format", "json"])
        .arg(&reports)
        .arg("--budgeted")
        .arg(&budgeted)
        .arg("--policy")
        .arg(&policy)
        .assert()
        .success();
    let rows: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for r in rows {
        assert_eq!(r["ran"], true, "{r}");
        assert!(r["examples_used"].as_u64().unwrap() <= 720, "{r}");
        assert_eq!(r["false_pass"], false, "{r}");
    }
    let identical = rows.iter().find(|r| r["condition"] == "identical").unwrap();
    assert_eq!(identical["budgeted_verdict"], "pass", "{identical}");
}

/// `study report ARGS --out MD` run from the repository, its JSON summary.
fn study_report(args: &[&std::ffi::OsStr], md: &std::path::Path) -> serde_json::Value {
    let out = bin()
        .current_dir(repo())
        .args(["study", "report", "--quiet", "--format", "json"])
        .args(args)
        .arg("--out")
        .arg(md)
        .assert()
        .success();
    serde_json::from_slice(&out.get_output().stdout).unwrap()
}

/// `study report --history` on the committed v1 grid: no models, no
/// reports, the honest-fold and staleness sections with figures that are
/// rates and AUROCs, the same on a rerun (#17).
#[test]
fn study_report_from_the_committed_history() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str| {
        let md = tmp.path().join(name);
        let v = study_report(
            &["--history".as_ref(), "risk/zoo-grid-v1.jsonl".as_ref()],
            &md,
        );
        (std::fs::read_to_string(&md).unwrap(), v)
    };
    let (text, v) = run("honest.md");
    for section in [
        "## Honest folds",
        "| one family, merged with its source |",
        "| one family, merged copies dropped |",
        "| one model |",
        "| one source group (5-fold) |",
        "Triage on the honest folds",
        "## Two kinds of staleness",
        "### By family",
        "| quantization 8-bit |",
        "| quantization 4-bit |",
        "### By concept",
        "| privacy_pii |",
    ] {
        assert!(text.contains(section), "missing {section}:\n{text}");
    }
    assert_eq!(v["rows"], 900);
    let unit = |x: &serde_json::Value, what: &str| {
        let f = x.as_f64().unwrap_or_else(|| panic!("{what}: {x}"));
        assert!((0.0..=1.0).contains(&f), "{what}: {f}");
        f
    };
    let held = v["honest"].as_array().unwrap();
    assert_eq!(held.len(), 5);
    for h in held {
        unit(&h["auroc"]["risk_model"], "risk model AUROC");
        for t in h["triage"].as_array().unwrap() {
            unit(&t[0], "triage share");
            unit(&t[1], "triage caught");
        }
    }
    for table in ["by_family", "by_concept"] {
        for r in v[table].as_array().unwrap() {
            for k in ["ranking", "operating_point", "policy"] {
                let (lo, rate, hi) = (
                    unit(&r[k]["lo"], k),
                    unit(&r[k]["rate"], k),
                    unit(&r[k]["hi"], k),
                );
                assert!(lo <= rate && rate <= hi, "{table} {}: {k}", r["name"]);
            }
        }
    }
    // Seeded folds and bootstrap: a rerun writes the same figures (the
    // command line in the header names the other file).
    let (again, _) = run("again.md");
    let body = |t: &str| t.split_once("## Honest folds").unwrap().1.to_string();
    assert_eq!(body(&text), body(&again));
    // The few sections never replace a whole STUDY.md by default.
    bin()
        .current_dir(repo())
        .args(["study", "report", "--history", "risk/zoo-grid-v1.jsonl"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("--out"));
}

/// The v2 grid committed under study/v2 (scripts/study-v2.sh) reads back
/// with today's binary, and its history rows and reports name the same
/// conditions: STUDY.md is rebuilt from these files, so a format change
/// that orphans them, or a row without its report, fails here (#17).
#[test]
fn the_committed_v2_grid_reads_back() {
    let dir = repo().join("study/v2");
    let tmp = tempfile::tempdir().unwrap();
    let mut models = 0;
    for model in ["smollm2", "gemma3"] {
        let reports = dir.join(format!("reports-{model}"));
        if !reports.is_dir() {
            continue;
        }
        models += 1;
        let mut on_disk: Vec<String> = std::fs::read_dir(&reports)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        on_disk.sort();
        let history = std::fs::read_to_string(dir.join(format!("history-{model}.jsonl"))).unwrap();
        let mut in_history: Vec<String> = history
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                assert_eq!(v["model"], model, "{l}");
                v["condition"].as_str().unwrap().to_string()
            })
            .collect();
        in_history.sort();
        in_history.dedup();
        assert_eq!(
            in_history, on_disk,
            "{model}: history rows and reports differ"
        );
        // The default policy revalidates sequentially: its real runs are
        // committed beside the full reports, one per condition.
        let runs = dir.join(format!("budgeted-seq-{model}"));
        let v = study_report(
            &[
                "--reports".as_ref(),
                reports.as_os_str(),
                "--budgeted".as_ref(),
                runs.as_os_str(),
            ],
            &tmp.path().join(format!("{model}.md")),
        );
        let mut reported: Vec<String> = v["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["condition"].as_str().unwrap().to_string())
            .collect();
        reported.sort();
        assert_eq!(reported, on_disk, "{model}");
    }
    assert!(models > 0, "no committed grid under {}", dir.display());
    if models < 2 {
        return;
    }
    // Both models together: the budgeted replay orders monitors with a risk
    // model fitted without the condition's own model (the shipped one is
    // fitted on this grid). Critical monitors are revalidated whatever the
    // budget, so no false pass may hide a stale critical monitor, and
    // STUDY.md's count is the conditions' (#18). The default policy, run for
    // real (sequential), passes no candidate full revalidation leaves with
    // a stale monitor: #18's criterion, on the committed runs.
    let md = tmp.path().join("both.md");
    let v = study_report(
        &[
            "--reports".as_ref(),
            dir.join("reports-smollm2").as_os_str(),
            "--reports".as_ref(),
            dir.join("reports-gemma3").as_os_str(),
            "--budgeted".as_ref(),
            dir.join("budgeted-seq-smollm2").as_os_str(),
            "--budgeted".as_ref(),
            dir.join("budgeted-seq-gemma3").as_os_str(),
        ],
        &md,
    );
    assert_eq!(v["replay_model"], "leave_model_out");
    let text = std::fs::read_to_string(&md).unwrap();
    assert!(text.contains("without the condition's own model"), "{text}");
    let conds = v["conditions"].as_array().unwrap();
    let false_passes = conds.iter().filter(|c| c["false_pass"] == true).count();
    for c in conds.iter().filter(|c| c["false_pass"] == true) {
        assert_eq!(c["critical_stale_unrepaired"], 0, "{c}");
    }
    let line = format!(
        "False passes: {false_passes} of {} (0 with a critical",
        conds.len()
    );
    assert!(text.contains(&line), "{line}");
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), conds.len());
    for r in runs {
        assert_eq!(r["false_pass"], false, "{r}");
        assert!(
            r["examples_used"].as_u64() <= r["examples_full"].as_u64(),
            "{r}"
        );
    }
    let line = format!(
        "False passes: 0 of {} (0 with a critical monitor left stale).",
        runs.len()
    );
    assert!(text.contains(&line), "{line}");

    // The replay at smaller budgets: six budgets with the critical list and
    // without, every one spending no more than it may, and at the policy's
    // own budget the replay above.
    let sweep = v["sweep"].as_array().unwrap();
    assert_eq!(sweep.len(), 12, "{sweep:?}");
    let n = |x: &serde_json::Value| x.as_u64().unwrap();
    for r in sweep {
        assert!(n(&r["used"]) <= n(&r["full"]), "{r}");
    }
    let at_720 = sweep
        .iter()
        .find(|r| r["examples"] == 720 && r["critical"] == true)
        .unwrap();
    let used: u64 = conds.iter().map(|c| n(&c["examples_used"])).sum();
    assert_eq!(n(&at_720["used"]), used);
    assert_eq!(n(&at_720["false_passes"]), false_passes as u64);
    assert!(text.contains("### Smaller budgets, replayed"), "{text}");
}

/// `study report --budgeted` fails closed on runs it cannot pair with the
/// ground truth: a condition without its run, a run under another policy,
/// a full report passed as a run. No model needed: committed reports.
#[test]
fn study_report_checks_its_budgeted_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let v2 = repo().join("study/v2");
    let (reports, runs) = (tmp.path().join("reports"), tmp.path().join("runs"));
    for c in ["identical", "q8_0"] {
        for (from, to) in [
            ("reports-smollm2", &reports),
            ("budgeted-seq-smollm2", &runs),
        ] {
            std::fs::create_dir_all(to.join(c)).unwrap();
            std::fs::copy(
                v2.join(from).join(c).join("report.json"),
                to.join(c).join("report.json"),
            )
            .unwrap();
        }
    }
    let md = tmp.path().join("STUDY.md");
    let report = |policy: &str, runs: &std::path::Path| {
        let mut c = bin();
        c.current_dir(repo())
            .args([
                "study",
                "report",
                "--quiet",
                "--policy",
                policy,
                "--reports",
            ])
            .arg(&reports)
            .arg("--budgeted")
            .arg(runs)
            .arg("--out")
            .arg(&md);
        c
    };
    report("default", &runs).assert().success();
    let text = std::fs::read_to_string(&md).unwrap();
    assert!(
        text.contains("False passes: 0 of 2 (0 with a critical"),
        "{text}"
    );
    // Runs under the default policy are not runs under the strict one.
    report("strict", &runs)
        .assert()
        .code(2)
        .stderr(predicates::str::contains("policy"))
        .stderr(predicates::str::contains("report.json"));
    // A full report is the truth, not a run.
    report("default", &reports)
        .assert()
        .code(2)
        .stderr(predicates::str::contains("budget.full_revalidation"));
    // A condition without its run would vanish from the count.
    std::fs::remove_dir_all(runs.join("q8_0")).unwrap();
    report("default", &runs)
        .assert()
        .code(2)
        .stderr(predicates::str::contains("q8_0"))
        .stderr(predicates::str::contains("no budgeted run"));
}
