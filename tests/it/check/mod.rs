//! `probegate check` end to end on the real SmolLM2: verdict paths, exit
//! codes, reports, and every bad input failing closed.

use std::path::{Path, PathBuf};

use predicates::prelude::*;

use crate::harness::*;

mod screened;
mod spending;

/// The default policy with a smaller corpus and budget, so a test run stays short.
pub(crate) fn test_policy(dir: &Path, edit: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(repo().join("policies/default.toml")).unwrap();
    text = text
        .replace("max_prompts = 600", "max_prompts = 300")
        .replace("min_prompts = 256", "min_prompts = 200");
    // These tests were written for sequential revalidation's confidence
    // bounds, which the default's screening replaces; screening has tests
    // of its own (`screened`), and so has the stop at the verdict.
    // Their first look is sequential's own (a sample size for its bounds),
    // not screening's first batch of labels.
    if !edit.iter().any(|(from, _)| from.contains("screen")) {
        text = text
            .replace("\nscreen = true", "\nscreen = false")
            .replace("\nfirst_look = 20", "\nfirst_look = 40");
    }
    // These tests watch the repair ladder work on failing candidates; the
    // default's stop at the verdict has tests of its own.
    if !edit
        .iter()
        .any(|(from, _)| from.contains("stop_at_verdict"))
    {
        text = text.replace("stop_at_verdict = true", "stop_at_verdict = false");
    }
    for (from, to) in edit {
        assert!(text.contains(from), "{from}");
        text = text.replace(from, to);
    }
    // The default's repair reserve is for sequential revalidation only (a
    // policy error otherwise): whole-set mode leaves the ladder what it did
    // not spend.
    if text.contains("\nmode = \"whole\"") {
        text = text.replace("repair_reserve = 120", "repair_reserve = 0");
    }
    let p = dir.join("policy.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// A suite of some of the shipped SmolLM2 monitors, copied under `dir/suite`.
pub(crate) fn suite_of(dir: &Path, names: &[&str]) -> PathBuf {
    let suite = dir.join("suite");
    for name in names {
        let src = repo().join("monitors/smollm2").join(name);
        std::fs::create_dir_all(suite.join(name)).unwrap();
        for f in ["monitor.json", "monitor.safetensors"] {
            std::fs::copy(src.join(f), suite.join(name).join(f)).unwrap();
        }
    }
    suite
}

/// `probegate check` on a suite of one's own, from the repository.
pub(crate) fn check_suite(
    cand: &str,
    suite: &Path,
    policy: &Path,
    out: &Path,
) -> assert_cmd::Command {
    let base = model_path("smollm2").display().to_string();
    check_with(&base, cand, suite, policy, out)
}

/// `probegate check` on the shipped SmolLM2 suite, from the repository.
pub(crate) fn check(base: &str, cand: &str, policy: &Path, out: &Path) -> assert_cmd::Command {
    check_with(base, cand, Path::new("monitors/smollm2"), policy, out)
}

fn check_with(
    base: &str,
    cand: &str,
    suite: &Path,
    policy: &Path,
    out: &Path,
) -> assert_cmd::Command {
    let mut c = bin();
    c.current_dir(repo())
        .args(["check", "--base", base, "--candidate", cand])
        .args(["--no-history", "--quiet"])
        .arg("--monitors")
        .arg(suite)
        .arg("--policy")
        .arg(policy)
        .arg("--out")
        .arg(out);
    c
}

/// SmolLM2 with the committed LoRA adapter (the README's demo candidate).
pub(crate) fn lora_candidate() -> String {
    format!(
        "{}+{}",
        model_path("smollm2").display(),
        repo()
            .join("fixtures/zoo/smollm2-lora-r8-attn-support")
            .display()
    )
}

pub(crate) fn report(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
}

#[test]
fn identical_candidate_passes_with_all_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = test_policy(tmp.path(), &[]);
    let out = tmp.path().join("out");
    let base = model_path("smollm2").display().to_string();
    check(&base, &base, &policy, &out)
        .args(["--format", "json"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("\"verdict\": \"pass\""));
    let r = report(&out);
    assert_eq!(r["schema"], "probegate.report");
    assert_eq!(r["verdict"], "pass");
    assert_eq!(r["diff"]["family"], "identical");
    let ms = r["monitors"].as_array().unwrap();
    assert_eq!(ms.len(), 18);
    // The same forward pass as the base: every monitor healthy with every
    // change exactly zero, on no labeled example.
    for m in ms {
        assert_eq!(m["status"], "healthy", "{m}");
        assert_eq!(m["eval"]["delta_auroc"].as_f64().unwrap(), 0.0, "{m}");
        assert_eq!(m["sequential"]["stopped"], "same_forward", "{m}");
        assert_eq!(m["sequential"]["examples"], 0, "{m}");
    }
    assert_eq!(r["budget"]["examples_used"], 0);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.starts_with("## ✅ probegate: PASS"), "{md}");
    assert!(md.contains("same forward pass as the base"), "{md}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("Weight change by block"));
    assert!(!out.join("repaired").exists());
    // `--full` still measures it (the grid's ground truth) on labeled
    // examples, and finds the same zero change the shortcut reported.
    let full = tmp.path().join("full");
    check(&base, &base, &policy, &full)
        .arg("--full")
        .assert()
        .code(0);
    let f = report(&full);
    assert!(f["budget"]["examples_used"].as_u64().unwrap() > 0, "{f}");
    for m in f["monitors"].as_array().unwrap() {
        assert_eq!(m["status"], "healthy", "{m}");
        assert_ne!(m["sequential"]["stopped"], "same_forward", "{m}");
        assert!(
            m["eval"]["delta_auroc"].as_f64().unwrap().abs() < 1e-12,
            "{m}"
        );
    }
}

/// A full disk or a read-only home under the activation cache costs time,
/// never the verdict: the run computes what it reads, reaches its verdict
/// and says in the report why the next run will compute it again.
#[test]
fn a_cache_that_cannot_be_written_is_a_warning_not_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = test_policy(tmp.path(), &[]);
    let home = tmp.path().join("cache");
    std::fs::create_dir_all(&home).unwrap();
    // A file where the activation cache's folder goes: every write fails.
    std::fs::write(home.join("activations"), b"").unwrap();
    let out = tmp.path().join("out");
    let base = model_path("smollm2").display().to_string();
    check(&base, &base, &policy, &out)
        .env("PROBEGATE_CACHE", &home)
        .assert()
        .code(0);
    let r = report(&out);
    assert_eq!(r["verdict"], "pass", "{r}");
    let w = r["warnings"].to_string();
    assert!(
        w.contains("activation cache could not be written") && w.contains("activations"),
        "{w}"
    );
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("activation cache could not be written"), "{md}");
}

/// Q4_0 requantization of the Q4_1 SmolLM2 makes the self-harm probe at
/// block 22 stale (measured: AUROC 0.996 → 0.942); the gate must fail it
/// with exit code 1 and say why, and no report may read like a pass.
#[test]
fn stale_critical_monitor_fails_the_candidate() {
    let tmp = tempfile::tempdir().unwrap();
    // Critical only: the budget reaches nothing else.
    let policy = test_policy(
        tmp.path(),
        &[
            // Whole-set mode: a critical concept runs whatever the budget.
            ("mode = \"sequential\"", "mode = \"whole\""),
            ("examples = 720", "examples = 1"),
            (
                "critical = [\"privacy_pii*\", \"self_harm*\"]",
                "critical = [\"self_harm*\"]",
            ),
            // No repair ladder: this test is about the stale path.
            ("enabled = true", "enabled = false"),
            ("may_pass = true", "may_pass = false"),
        ],
    );
    let out = tmp.path().join("out");
    let cand = format!("q4_0({})", model_path("smollm2").display());
    check("smollm2", &cand, &policy, &out)
        .assert()
        .code(1)
        .stdout(
            predicate::str::contains("FAIL").and(predicate::str::contains(
                "self_harm-l22 (critical) is stale",
            )),
        );
    let r = report(&out);
    assert_eq!(r["verdict"], "fail");
    assert_eq!(r["diff"]["family"], "quantization");
    assert_eq!(
        r["budget"]["examples_used"], 180,
        "only the critical concept's test set"
    );
    let unverified = r["monitors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["status"] == "unverified")
        .count();
    assert_eq!(unverified, 15);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.starts_with("## ❌ probegate: FAIL"));
}

#[test]
fn bad_input_is_an_error_never_a_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let good = test_policy(tmp.path(), &[]);
    let base = model_path("smollm2").display().to_string();
    // The line the error must name, read from the policy rather than written
    // here, so a comment added above it does not break the test.
    let good_text = std::fs::read_to_string(&good).unwrap();
    let line = good_text
        .lines()
        .position(|l| l == "examples = 720")
        .expect("the test policy sets examples = 720")
        + 1;
    let bad_line = format!("bad.toml:{line}: field `budget.examples`");
    let cases: Vec<(Vec<String>, &str)> = vec![
        // A policy error names the file, the line and the field.
        (
            vec!["--policy".into(), {
                let p = tmp.path().join("bad.toml");
                std::fs::write(&p, good_text.replace("examples = 720", "examples = 0")).unwrap();
                p.display().to_string()
            }],
            &bad_line,
        ),
        (
            vec![
                "--policy".into(),
                tmp.path().join("missing.toml").display().to_string(),
            ],
            "missing.toml",
        ),
        (
            vec!["--candidate".into(), "no-such-model.gguf".into()],
            "no-such-model.gguf",
        ),
        (
            vec!["--monitors".into(), "monitors/gemma3".into()],
            "base_model",
        ),
        (
            vec!["--monitors".into(), "no/such/dir".into()],
            "no/such/dir",
        ),
        (vec!["--data".into(), "data/realign".into()], "test.jsonl"),
    ];
    for (i, (args, needle)) in cases.into_iter().enumerate() {
        let out = tmp.path().join(format!("out{i}"));
        let mut c = bin();
        c.current_dir(repo())
            .args(["check", "--quiet", "--no-history"]);
        let mut base_args = vec![
            ("--base", base.clone()),
            ("--candidate", base.clone()),
            ("--monitors", "monitors/smollm2".to_string()),
            ("--policy", good.display().to_string()),
        ];
        let mut it = args.iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            match base_args.iter_mut().find(|(bk, _)| bk == k) {
                Some(slot) => slot.1 = v.clone(),
                None => base_args.push((k.as_str(), v.clone())),
            }
        }
        for (k, v) in &base_args {
            c.arg(k).arg(v);
        }
        c.arg("--out").arg(&out);
        c.assert().code(2).stderr(predicate::str::contains(needle));
        let r = report(&out);
        assert_eq!(r["verdict"], "error", "case {i}: {r}");
        assert!(!out.join("report.html").exists());
    }
    // An output directory that cannot be created.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    bin()
        .current_dir(repo())
        .args([
            "check",
            "--quiet",
            "--no-history",
            "--base",
            &base,
            "--candidate",
            &base,
        ])
        .args(["--monitors", "monitors/smollm2"])
        .arg("--out")
        .arg(file.join("out"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("a-file"));
}

/// The zoo's LoRA adapter trained on PII-rich support chats keeps the
/// toxicity probe at block 15 ranking (ΔAUROC −0.018) but shifts its
/// threshold (balanced accuracy 0.883 → 0.572, TPR 0.867 → 0.144): the
/// repair ladder must fix it, verify the fix on labeled data, write the
/// repaired monitor and pass the candidate with repairs.
#[test]
fn threshold_shift_is_repaired_and_passes_with_repairs() {
    let tmp = tempfile::tempdir().unwrap();
    let suite = suite_of(tmp.path(), &["toxicity-l15"]);
    let policy = test_policy(tmp.path(), &[]);
    let out = tmp.path().join("out");
    let cand = lora_candidate();
    check_suite(&cand, &suite, &policy, &out)
        .assert()
        .code(0)
        .stdout(predicate::str::contains("PASS with repaired monitors"));
    let r = report(&out);
    assert_eq!(r["verdict"], "pass_with_repairs");
    let m = &r["monitors"][0];
    assert_eq!(m["status"], "repaired");
    let rung = m["rung"].as_str().unwrap();
    assert!(["realignment", "recalibration"].contains(&rung), "{rung}");
    // Before: ranking kept, threshold off.
    assert!(m["eval"]["delta_auroc"].as_f64().unwrap() > -0.05, "{m}");
    assert!(!m["stale_reasons"].as_array().unwrap().is_empty());
    assert_eq!(m["repaired_monitor"], "repaired/toxicity-l15");
    let written: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("repaired/toxicity-l15/monitor.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        written["provenance"]["repaired_for"], r["candidate"]["fingerprint"],
        "the repaired monitor is tagged with the candidate"
    );
    // The repaired monitor loads and, on the candidate, is within the policy's limits.
    let after = if rung == "recalibration" {
        &m["recalibration"]["after"]
    } else {
        &m["realignment"]["after"]
    };
    let base_ba = m["eval"]["base_balanced_accuracy"].as_f64().unwrap();
    assert!(
        after["balanced_accuracy"].as_f64().unwrap() >= base_ba - 0.05,
        "{after}"
    );
    assert!(m[rung]["stale_reasons_after"]
        .as_array()
        .unwrap()
        .is_empty());
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.starts_with("## 🛠️ probegate: PASS with repaired monitors"),
        "{md}"
    );
    // The default reads the concept's whole training split (420 texts), in one step.
    let re = &m["realignment"];
    assert_eq!(re["concept_texts"], 420, "{re}");
    assert_eq!(
        re["prompts"].as_u64().unwrap(),
        r["corpus_prompts"].as_u64().unwrap() + 420
    );
    assert_eq!(re["steps"].as_array().map(Vec::len), Some(1), "{re}");
}

/// A suite holding monitors that never met the policy on the base (here
/// those of the shipped SmolLM2 suite under a policy asking AUROC ≥ 0.85,
/// read from their files: harmful_request-l7 at 0.807 and two
/// prompt_injection monitors at the time of writing) is a fact about the
/// suite. Before the fix, the base checked against itself failed for them.
/// Now an identical candidate passes with the finding reported; the policy
/// can instead leave them out or refuse to evaluate.
#[test]
fn monitors_weak_on_the_base_never_fail_the_candidate() {
    let tmp = tempfile::tempdir().unwrap();
    let base = model_path("smollm2").display().to_string();
    let suite = probegate::monitor::load_suite(&repo().join("monitors/smollm2")).unwrap();
    let weak: Vec<String> = suite
        .iter()
        .filter(|m| m.meta.base_metrics.auroc < 0.85)
        .map(|m| m.meta.name.clone())
        .collect();
    assert!(weak.len() >= 2, "the test needs weak monitors: {weak:?}");
    let weak: Vec<&str> = weak.iter().map(String::as_str).collect();
    let policy_with = |mode: &str| {
        let dir = tmp.path().join(mode);
        std::fs::create_dir_all(&dir).unwrap();
        let p = test_policy(
            &dir,
            &[
                ("min_auroc = 0.80", "min_auroc = 0.85"),
                (
                    "critical = [\"privacy_pii*\", \"self_harm*\"]",
                    "critical = [\"harmful_request*\", \"prompt_injection*\"]",
                ),
                ("examples = 720", "examples = 1"),
                // Whole-set mode: the critical concepts (the weak monitors')
                // run whatever the budget, so each weak monitor is judged.
                ("mode = \"sequential\"", "mode = \"whole\""),
            ],
        );
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, format!("{text}\n[suite]\nweak_monitors = \"{mode}\"\n")).unwrap();
        p
    };

    let out = tmp.path().join("warn-out");
    check(&base, &base, &policy_with("warn"), &out)
        .assert()
        .code(0);
    let r = report(&out);
    assert_eq!(r["verdict"], "pass");
    let warnings: Vec<&str> = r["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    for &name in &weak {
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("suite: ") && w.contains(name)),
            "{name}: {warnings:?}"
        );
        let m = r["monitors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap();
        assert_eq!(m["status"], "healthy", "{m}");
    }

    let out = tmp.path().join("exclude-out");
    check(&base, &base, &policy_with("exclude"), &out)
        .assert()
        .code(0);
    let r = report(&out);
    let names: Vec<&str> = r["monitors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 18 - weak.len(), "{names:?}");
    assert!(weak.iter().all(|w| !names.contains(w)), "{names:?}");

    let out = tmp.path().join("refuse-out");
    check(&base, &base, &policy_with("refuse"), &out)
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains(weak[0]).and(predicate::str::contains("suite.weak_monitors")),
        );
    assert_eq!(report(&out)["verdict"], "error");

    // The default policy as shipped revalidates sequentially, critical
    // concepts included, within a hard cap: the identical candidate still
    // passes, and the weak monitors are reported as the suite's, however
    // far revalidation got with them (#18).
    let dir = tmp.path().join("sequential");
    std::fs::create_dir_all(&dir).unwrap();
    let p = test_policy(&dir, &[("min_auroc = 0.80", "min_auroc = 0.85")]);
    assert!(std::fs::read_to_string(&p)
        .unwrap()
        .contains("mode = \"sequential\""));
    let out = tmp.path().join("sequential-out");
    check(&base, &base, &p, &out).assert().code(0);
    let r = report(&out);
    assert_eq!(r["verdict"], "pass");
    let warnings = r["warnings"].to_string();
    for &name in &weak {
        assert!(warnings.contains(name), "{name}: {warnings}");
    }
}

/// A path in the error (here the candidate's, with backticks and a newline)
/// cannot close the report's code fence and forge a PASS heading in a PR
/// comment or job summary.
#[test]
fn an_error_cannot_forge_a_heading_in_report_md() {
    let tmp = tempfile::tempdir().unwrap();
    // A line of bare backticks in the path: it closed the old fixed fence.
    let hostile = tmp.path().join("x\n```\n## ✅ probegate: PASS\n```\ny");
    std::fs::create_dir_all(&hostile).unwrap();
    let out = tmp.path().join("out");
    check(
        "smollm2",
        &format!("smollm2+{}", hostile.display()),
        &test_policy(tmp.path(), &[]),
        &out,
    )
    .assert()
    .code(2);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let lines: Vec<&str> = md.lines().collect();
    assert_eq!(lines[0], "## probegate: could not evaluate", "{md}");
    // CommonMark: a fence closes only on a line of at least as many backticks.
    let fence = lines[2];
    assert!(fence.len() >= 3 && fence.chars().all(|c| c == '`'), "{md}");
    let close = 3 + lines[3..]
        .iter()
        .position(|l| l.trim().len() >= fence.len() && l.trim().chars().all(|c| c == '`'))
        .unwrap();
    // The hostile lines sit inside the block; outside it, the real heading only.
    assert!(
        lines[3..close]
            .iter()
            .any(|l| l.contains("probegate: PASS")),
        "{md}"
    );
    let outside: Vec<&&str> = lines[..2]
        .iter()
        .chain(&lines[close + 1..])
        .filter(|l| l.starts_with('#'))
        .collect();
    assert_eq!(outside, [&"## probegate: could not evaluate"], "{md}");
    assert_eq!(lines[close + 2], "This is not a pass.", "{md}");
}

/// A run killed mid-check (SIGKILL: no chance to write an error report) in
/// an output directory holding an earlier PASS leaves no verdict behind:
/// the old report.md, report.html, report.json and repaired monitors go
/// before any work. They used to survive, still saying PASS.
#[test]
fn a_killed_run_leaves_no_stale_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir_all(out.join("repaired/old")).unwrap();
    for f in ["report.md", "report.html", "report.json"] {
        std::fs::write(out.join(f), "## ✅ probegate: PASS").unwrap();
    }
    let base = model_path("smollm2").display().to_string();
    let policy = test_policy(tmp.path(), &[]);
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("probegate"))
        .current_dir(repo())
        .args([
            "check",
            "--base",
            &base,
            "--candidate",
            &base,
            "--quiet",
            "--no-history",
        ])
        .args(["--monitors", "monitors/smollm2", "--policy"])
        .arg(&policy)
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while out.join("report.md").exists() && t.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let still_running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    for f in ["report.md", "report.html", "report.json", "repaired"] {
        assert!(!out.join(f).exists(), "{f} of the earlier run survived");
    }
    assert!(
        still_running,
        "the check finished before it could be killed"
    );
}
