//! What the gate spends: the repair ladder within the budget left, the stop
//! at the first monitor beyond repair, the example and seconds caps,
//! sequential revalidation, and which runs read the corpus.

use super::*;

/// With `concept_texts_until = "stable"` realignment grows the concept's
/// texts from 64 beyond the 96 held out, doubling, and stops at the first
/// step whose held-out error moved by at most 10% (or at the split's end);
/// the report shows every step, and the repair is still verified on labels.
#[test]
fn realignment_grows_its_texts_until_the_choice_is_stable() {
    let tmp = tempfile::tempdir().unwrap();
    let suite = suite_of(tmp.path(), &["self_harm-l22"]);
    let policy = test_policy(
        tmp.path(),
        &[(
            "concept_texts_until = \"all\"",
            "concept_texts_until = \"stable\"",
        )],
    );
    let out = tmp.path().join("out");
    let status = check_suite(&lora_candidate(), &suite, &policy, &out)
        .output()
        .unwrap()
        .status;
    let r = report(&out);
    assert!(matches!(status.code(), Some(0 | 1)), "{r}");
    let re = &r["monitors"][0]["realignment"];
    let steps = re["steps"].as_array().expect("steps reported");
    let n: Vec<u64> = steps
        .iter()
        .map(|s| s["concept_texts"].as_u64().unwrap())
        .collect();
    let err: Vec<f64> = steps
        .iter()
        .map(|s| s["heldout_error"].as_f64().unwrap())
        .collect();
    assert_eq!(n[0], 96 + 64, "{re}");
    for w in n.windows(2) {
        assert_eq!(w[1], (96 + 2 * (w[0] - 96)).min(420), "doubling: {n:?}");
    }
    // Every step but the last moved the error by more than the rule allows;
    // the last either did not or reached the split's end.
    let moved = |a: f64, b: f64| (b - a).abs() > (0.1 * a).max(0.01);
    for i in 1..err.len() - 1 {
        assert!(moved(err[i - 1], err[i]), "stopped late: {err:?}");
    }
    let last = err.len() - 1;
    assert!(
        *n.last().unwrap() == 420 || (last > 0 && !moved(err[last - 1], err[last])),
        "stopped early: {n:?} {err:?}"
    );
    assert_eq!(re["concept_texts"], *n.last().unwrap());
    assert_eq!(
        re["heldout_error"].as_f64().unwrap().to_bits(),
        err[last].to_bits(),
        "the reported choice is the last step's"
    );
    assert!(
        re["after"]["auroc"].as_f64().is_some(),
        "verified on labels: {re}"
    );
}

/// The budget is a hard cap in whole-set mode too: recalibration's labels
/// come out of what revalidation left, never on top of it (the README's demo
/// once spent 780 of 720).
#[test]
fn the_repair_ladder_spends_only_what_the_budget_left() {
    let tmp = tempfile::tempdir().unwrap();
    let suite = suite_of(tmp.path(), &["refusal_compliance-l7"]);
    let cand = lora_candidate();
    // Realignment off, so a stale monitor goes straight to recalibration.
    let run = |examples: u64| -> serde_json::Value {
        let dir = tmp.path().join(format!("b{examples}"));
        std::fs::create_dir_all(&dir).unwrap();
        let policy = test_policy(
            &dir,
            &[
                (
                    "folded into the monitor.\nenabled = true",
                    "folded into the monitor.\nenabled = false",
                ),
                (
                    "redeployed with the model).\nmay_pass = true",
                    "redeployed with the model).\nmay_pass = false",
                ),
                ("examples = 720", &format!("examples = {examples}")),
                ("mode = \"sequential\"", "mode = \"whole\""),
            ],
        );
        let out = dir.join("out");
        let code = check_suite(&cand, &suite, &policy, &out)
            .output()
            .unwrap()
            .status
            .code();
        assert!(matches!(code, Some(0) | Some(1)), "exit {code:?}");
        report(&out)
    };
    let roomy = run(10_000);
    let full = roomy["budget"]["examples_full"].as_u64().unwrap();
    let m = &roomy["monitors"][0];
    assert_eq!(
        m["status"], "repaired",
        "the LoRA shifts refusal_compliance-l7's threshold: {m}"
    );
    assert_eq!(m["recalibration"]["examples"], 60, "{m}");
    assert_eq!(roomy["budget"]["examples_used"].as_u64(), Some(full + 60));

    // 25 left after the test set: recalibration takes those 25.
    let tight = run(full + 25);
    assert_eq!(tight["monitors"][0]["recalibration"]["examples"], 25);
    assert_eq!(tight["budget"]["examples_used"].as_u64(), Some(full + 25));

    // 5 left cannot hold both classes' thresholds: the rung is skipped.
    let spent = run(full + 5);
    let m = &spent["monitors"][0];
    assert!(m["recalibration"].is_null(), "{m}");
    assert_eq!(m["status"], "stale", "{m}");
    assert_eq!(m["rung"], "beyond repair", "{m}");
    assert_eq!(spent["budget"]["examples_used"].as_u64(), Some(full));
    assert_eq!(spent["verdict"], "fail");
    // ... and the report says why it was not tried, not just "beyond repair".
    assert_eq!(
        m["skipped"][0],
        format!("recalibration: 5 labeled example(s) left under budget.examples ({}), at least 10 needed", full + 5),
        "{m}"
    );
    let why = spent["reasons"][0].as_str().unwrap();
    assert!(
        why.contains("raise budget.examples or budget.repair_reserve"),
        "{why}"
    );
}

/// `budget.stop_at_verdict`, on in the default policy: on the README's
/// LoRA adapter a monitor settled stale climbs the repair ladder at once,
/// and the first one beyond repair decides the verdict, so revalidation
/// stops there: the monitors not yet settled say so (not the budget's
/// doing), the decisive one shows every rung it tried, far fewer labels are
/// spent than the same run without the stop, and the run cannot be
/// rejudged into another verdict. (That the verdict is the one a complete
/// run gives is the rule's unit test in src/gate/verdict.rs.)
#[test]
fn the_gate_stops_at_the_first_monitor_beyond_repair() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = test_policy(
        tmp.path(),
        &[("stop_at_verdict = true", "stop_at_verdict = true")],
    );
    let out = tmp.path().join("out");
    check("smollm2", &lora_candidate(), &policy, &out)
        .assert()
        .code(1);
    let r = report(&out);
    assert_eq!(r["verdict"], "fail");
    assert!(
        r["warnings"].as_array().unwrap().iter().any(|w| w
            .as_str()
            .unwrap()
            .contains("not revalidated: the verdict was fail before their turn")),
        "{r}"
    );
    let ms = r["monitors"].as_array().unwrap();
    let stopped = |m: &serde_json::Value| m["sequential"]["stopped"].as_str().unwrap().to_string();
    // The decisive monitor: settled stale, every rung the policy enables tried.
    let beyond: Vec<&serde_json::Value> =
        ms.iter().filter(|m| m["rung"] == "beyond repair").collect();
    assert!(!beyond.is_empty(), "{r}");
    for m in &beyond {
        assert_eq!(m["status"], "stale", "{m}");
        assert_eq!(stopped(m), "stale", "{m}");
        assert!(
            !m["realignment"].is_null() && !m["recalibration"].is_null(),
            "{m}"
        );
    }
    let failed_by: Vec<&str> = r["failed_by"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(beyond
        .iter()
        .all(|m| failed_by.contains(&m["name"].as_str().unwrap())));
    // The rest were cut short by the verdict, not by the budget: a warning
    // each, never a failure reason asking for a larger budget.
    let cut: Vec<&serde_json::Value> = ms.iter().filter(|m| stopped(m) == "decided").collect();
    assert!(!cut.is_empty(), "{r}");
    for m in &cut {
        assert_eq!(m["status"], "unverified", "{m}");
        assert!(!failed_by.contains(&m["name"].as_str().unwrap()), "{m}");
    }
    // Concepts outside the critical ones never reached: their concept texts
    // were never run (the saving), and the report says their risk did
    // without them; the critical concepts' were run first.
    let critical = |m: &serde_json::Value| {
        let c = m["concept"].as_str().unwrap();
        c.starts_with("privacy_pii") || c.starts_with("self_harm")
    };
    assert!(ms.iter().any(|m| !critical(m)), "{r}");
    for m in ms {
        assert_eq!(
            m["features"]["concept_ks"].is_number(),
            critical(m),
            "{}",
            m["name"]
        );
    }
    assert!(
        r["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("reads no concept features")),
        "{r}"
    );
    for reason in r["reasons"].as_array().unwrap() {
        assert!(
            !reason.as_str().unwrap().contains("raise budget"),
            "{reason}"
        );
    }
    // Against the same run without the stop (every concept revalidated
    // within the budget, every stale monitor up the ladder).
    let ns = tmp.path().join("ns");
    std::fs::create_dir_all(&ns).unwrap();
    let no_stop = test_policy(&ns, &[]);
    let all = tmp.path().join("all");
    check("smollm2", &lora_candidate(), &no_stop, &all)
        .assert()
        .code(1);
    let all = report(&all);
    let (used, used_all) = (
        r["budget"]["examples_used"].as_u64().unwrap(),
        all["budget"]["examples_used"].as_u64().unwrap(),
    );
    assert!(2 * used <= used_all, "{used} of {used_all}");
    // Without the stop every monitor's concept features are computed up
    // front, and the critical concepts' risks are the ones the stop run
    // ordered them by.
    let risk_of = |r: &serde_json::Value, name: &str| {
        r["monitors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .map(|m| m["risk"]["p_stale"].as_f64().unwrap())
            .unwrap()
    };
    for m in all["monitors"].as_array().unwrap() {
        assert!(m["features"]["concept_ks"].is_number(), "{m}");
    }
    for m in ms.iter().filter(|m| critical(m)) {
        let name = m["name"].as_str().unwrap();
        let (a, b) = (risk_of(&r, name), risk_of(&all, name));
        assert!((a - b).abs() < 1e-6, "{name}: {a} against {b}");
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("verdict decided"), "{md}");
    bin()
        .current_dir(tmp.path())
        .args(["report", "rejudge", "--quiet", "--policy"])
        .arg(&policy)
        .arg(&out)
        .arg("--out")
        .arg(tmp.path().join("again"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("policy.budget.stop_at_verdict"));
}

#[test]
fn a_budget_of_zero_on_the_command_line_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = test_policy(tmp.path(), &[]);
    let out = tmp.path().join("out");
    check("smollm2", "smollm2", &policy, &out)
        .args(["--budget", "0"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--budget"));
    let r = report(&out);
    assert_eq!(r["verdict"], "error");
}

/// A seconds budget stops revalidation once spent: critical monitors are
/// still revalidated, the rest reported unverified (a warning under the
/// default policy), and budget.seconds is recorded in the report.
#[test]
fn a_seconds_budget_leaves_the_rest_unverified() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = test_policy(
        tmp.path(),
        &[
            // Whole-set mode, where critical concepts run whatever the budget.
            ("mode = \"sequential\"", "mode = \"whole\""),
            ("examples = 720", "examples = 100000"),
            ("# seconds = 900", "seconds = 0.000001"),
        ],
    );
    let out = tmp.path().join("out");
    // A candidate that changed something (the base as its own candidate is
    // healthy on no example at all): its stale self_harm-l7 fails it.
    check("smollm2", &lora_candidate(), &policy, &out)
        .assert()
        .code(1);
    let r = report(&out);
    assert_eq!(r["budget"]["seconds_limit"], 0.000001);
    let ms = r["monitors"].as_array().unwrap();
    let unverified = ms.iter().filter(|m| m["status"] == "unverified").count();
    for m in ms {
        if m["critical"] == true {
            assert!(!m["eval"].is_null(), "{m}");
            assert_ne!(m["status"], "unverified", "{m}");
        }
    }
    // Only the first concept could start before the clock ran out; criticals always run.
    let critical = ms.iter().filter(|m| m["critical"] == true).count();
    assert!(
        unverified >= ms.len() - critical - 3,
        "{unverified} unverified"
    );
    assert!(unverified > 0);
    assert!(
        r["budget"]["examples_used"].as_u64().unwrap()
            < r["budget"]["examples_full"].as_u64().unwrap()
    );
}

/// Sequential revalidation on the real model and the committed LoRA
/// adapter: the budget is a hard cap (the repair ladder's labels included),
/// every concept gets its first look, each monitor's report says how many
/// examples settled it and why it stopped, and the verdict is a verdict.
#[test]
fn sequential_revalidation_keeps_the_cap_and_says_why_each_monitor_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let budget = 400;
    let policy = test_policy(
        tmp.path(),
        &[("examples = 720", &format!("examples = {budget}"))],
    );
    let out = tmp.path().join("out");
    let cand = lora_candidate();
    let code = check("smollm2", &cand, &policy, &out)
        .output()
        .unwrap()
        .status
        .code();
    assert!(matches!(code, Some(0) | Some(1)), "exit {code:?}");
    let r = report(&out);
    let used = r["budget"]["examples_used"].as_u64().unwrap();
    assert!(used <= budget, "{used} > {budget}");
    let ms = r["monitors"].as_array().unwrap();
    let concepts: std::collections::BTreeSet<&str> =
        ms.iter().map(|m| m["concept"].as_str().unwrap()).collect();
    for m in ms {
        let t = &m["sequential"];
        let (seen, of) = (t["examples"].as_u64().unwrap(), t["of"].as_u64().unwrap());
        // The first look reached every concept: 6 × 40 fits in 400.
        assert!(seen >= 40 && seen <= of, "{m}");
        let stopped = t["stopped"].as_str().unwrap();
        match m["status"].as_str().unwrap() {
            "healthy" => assert!(["healthy", "whole_set"].contains(&stopped), "{m}"),
            "unverified" => assert!(["budget", "seconds"].contains(&stopped), "{m}"),
            "stale" | "repaired" => {
                assert!(["stale", "whole_set"].contains(&stopped), "{m}");
                assert!(!m["stale_reasons"].as_array().unwrap().is_empty(), "{m}");
            }
            s => panic!("status {s}"),
        }
        if stopped == "healthy" {
            let b = &t["bounds"];
            assert!(b["auroc"]["lo"].as_f64().unwrap() > -0.05, "{m}");
        }
    }
    assert_eq!(concepts.len(), 6);
    // This adapter makes monitors stale (STUDY.md; the README demo): some are
    // settled stale before their whole test set.
    assert!(
        ms.iter().any(|m| m["sequential"]["stopped"] == "stale"
            && m["sequential"]["examples"].as_u64() < m["sequential"]["of"].as_u64()),
        "no monitor settled stale early"
    );
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains(" examples, settled "), "{md}");
    // The repair reserve: once a monitor is stale, revalidation leaves it
    // to the ladder.
    let reserve = r["policy"]["budget"]["repair_reserve"].as_u64().unwrap();
    assert_eq!(reserve, 120);
    let mut per_concept = std::collections::BTreeMap::<&str, u64>::new();
    for m in ms {
        let e = per_concept
            .entry(m["concept"].as_str().unwrap())
            .or_default();
        *e = (*e).max(m["sequential"]["examples"].as_u64().unwrap());
    }
    let revalidated: u64 = per_concept.values().sum();
    // Held from the first stale monitor on: revalidation stops at
    // budget - reserve, or at once if it was already past that (the
    // arithmetic is a unit test of `revalidation_left`).
    assert!(
        revalidated < budget,
        "revalidation ran {revalidated} of {budget} with {reserve} reserved"
    );
    // The reserve went to the ladder: a stale monitor realignment did not
    // repair was recalibrated (the adapter moves thresholds), and none was
    // left beyond repair without saying which rung the budget starved.
    let ladder: u64 = ms
        .iter()
        .filter_map(|m| m["recalibration"]["examples"].as_u64())
        .sum();
    assert!(ladder > 0, "no rung spent the reserve");
    assert!(used > revalidated, "{used} vs {revalidated}");
    for m in ms.iter().filter(|m| m["rung"] == "beyond repair") {
        assert!(
            !m["recalibration"].is_null() || m["skipped"].as_array().is_some_and(|a| !a.is_empty()),
            "stale without recalibration and without saying why: {m}"
        );
    }
    assert!(
        md.contains("left to the repair ladder once a monitor is stale"),
        "{md}"
    );
}

/// A risk model that reads no corpus feature: the gate runs the corpus only
/// when its ladder realigns a monitor, and the maps are then fitted on all
/// of it, as when the features stage ran it.
#[test]
fn the_corpus_runs_only_when_the_risk_model_or_the_ladder_reads_it() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("no-corpus.json");
    crate::risk::fit(
        &[
            &repo().join("study/v2/history-smollm2.jsonl"),
            &repo().join("study/v2/history-gemma3.jsonl"),
        ],
        &["--features", &crate::risk::without_corpus()],
        &model,
    );
    let policy = test_policy(
        tmp.path(),
        &[("stop_at_verdict = true", "stop_at_verdict = true")],
    );
    // Not --quiet: in a pipe every stage prints one line on stderr.
    let run = |cand: &str, suite: &Path, out: &Path| {
        let o = bin()
            .current_dir(repo())
            .args(["check", "--base", "smollm2", "--candidate", cand])
            .arg("--no-history")
            .arg("--monitors")
            .arg(suite)
            .arg("--policy")
            .arg(&policy)
            .arg("--risk-model")
            .arg(&model)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    // The base as its own candidate: no monitor is stale, nothing
    // realigns, and the corpus never runs.
    let out = tmp.path().join("identical");
    let (code, err) = run("smollm2", Path::new("monitors/smollm2"), &out);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("concept activations"), "{err}");
    assert!(!err.contains("corpus activations"), "{err}");
    let r = report(&out);
    for m in r["monitors"].as_array().unwrap() {
        assert!(m["features"].get("act_cosine").is_none(), "{m}");
        assert!(m["features"]["concept_ks"].is_number(), "{m}");
    }
    // Two monitors the adapter makes stale, both revalidated: the ladder
    // climbs, and runs the corpus before its first realignment.
    let suite = suite_of(tmp.path(), &["self_harm-l22", "privacy_pii-l22"]);
    let out = tmp.path().join("climbed");
    let (code, err) = run(&lora_candidate(), &suite, &out);
    assert!(matches!(code, Some(0 | 1)), "{err}");
    assert!(err.contains("corpus activations"), "{err}");
    let r = report(&out);
    let corpus = r["corpus_prompts"].as_u64().unwrap();
    assert_eq!(corpus, 300, "{r}");
    let realigned: Vec<&serde_json::Value> = r["monitors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m.get("realignment").filter(|x| !x.is_null()))
        .collect();
    assert!(!realigned.is_empty(), "{r}");
    for a in realigned {
        let (prompts, own) = (
            a["prompts"].as_u64().unwrap(),
            a["concept_texts"].as_u64().unwrap(),
        );
        assert_eq!(prompts - own, corpus, "{a}");
    }
}

/// A threshold does not move AUROC: a stale monitor whose ranking is past
/// the limit both as it was and as realigned is not recalibrated, and no
/// label is spent on it. Q4_0 requantization loses self_harm-l7's ranking
/// (on the zoo's Q4_0: AUROC 0.939 → 0.863 after realignment), in both
/// revalidation modes.
#[test]
fn recalibration_is_not_paid_for_when_a_threshold_cannot_repair() {
    let tmp = tempfile::tempdir().unwrap();
    let suite = suite_of(
        tmp.path(),
        &["self_harm-l7", "self_harm-l15", "self_harm-l22"],
    );
    let cand = format!("q4_0({})", model_path("smollm2").display());
    for mode in ["sequential", "whole"] {
        let dir = tmp.path().join(mode);
        std::fs::create_dir_all(&dir).unwrap();
        let policy = test_policy(
            &dir,
            &[("mode = \"sequential\"", &format!("mode = \"{mode}\""))],
        );
        let out = dir.join("out");
        check_suite(&cand, &suite, &policy, &out).assert().code(1);
        let r = report(&out);
        let ms = r["monitors"].as_array().unwrap();
        let ruled: Vec<&serde_json::Value> =
            ms.iter().filter(|m| m["ruled_out"].is_array()).collect();
        assert!(!ruled.is_empty(), "{mode}: no rung ruled out: {ms:#?}");
        for m in &ruled {
            assert_eq!(m["rung"], "beyond repair", "{mode}: {m}");
            assert!(m["recalibration"].is_null(), "{mode}: {m}");
            assert!(
                m["ruled_out"][0]
                    .as_str()
                    .unwrap()
                    .starts_with("recalibration: AUROC"),
                "{mode}: {m}"
            );
            // The premise, on figures the report shows: the realigned
            // monitor's ranking is past the limit too.
            let after = m["realignment"]["after"]["delta_auroc"].as_f64().unwrap();
            assert!(after <= -0.05, "{mode}: realigned ΔAUROC {after}");
            let name = m["name"].as_str().unwrap();
            assert!(
                r["reasons"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|x| x.as_str().unwrap().contains(name)
                        && x.as_str().unwrap().contains("ruled out: recalibration")),
                "{mode}: {}",
                r["reasons"]
            );
        }
        // No monitor was recalibrated, so every label spent is a test
        // example of the one concept.
        assert!(ms.iter().all(|m| m["recalibration"].is_null()), "{mode}");
        let test_examples = ms
            .iter()
            .flat_map(|m| {
                [
                    m["sequential"]["examples"].as_u64(),
                    m["eval"]["n"].as_u64(),
                    m["realignment"]["after"]["n"].as_u64(),
                ]
            })
            .flatten()
            .max()
            .unwrap();
        assert_eq!(r["budget"]["examples_used"], test_examples, "{mode}");
    }
}
