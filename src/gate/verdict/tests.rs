use std::path::Path;

use super::*;
use crate::gate::repair::{realign, RealignReport, RungReport};
use crate::gate::revalidate;

#[test]
fn verdict_names_match_report_json() {
    for v in [Verdict::Pass, Verdict::PassWithRepairs, Verdict::Fail] {
        assert_eq!(serde_json::to_value(v).unwrap(), v.as_str());
    }
}

fn parts(d: Decision) -> (Verdict, Vec<String>, Vec<String>) {
    (d.verdict, d.reasons, d.warnings)
}

fn policy() -> Policy {
    Policy::shipped_default()
}

fn monitor(name: &str, status: Status, critical: bool) -> MonitorReport {
    MonitorReport::example(name, status, critical)
}

/// Monitors revalidation stopped short of because the verdict was
/// decided (`budget.stop_at_verdict`): a warning while the decisive
/// monitor fails the run, never a reason to raise the budget, and a
/// failure of their own under rules that no longer fail it.
#[test]
fn monitors_cut_short_by_the_verdict_never_pass_on_faith() {
    let p = policy();
    let fam = Family::LowRankAdapter;
    let cut = |name: &str, risk: f64, critical: bool| {
        let mut m = monitor(name, Status::Unverified, critical);
        m.risk.p_stale = risk;
        m.sequential = Some(revalidate::sequential::Trace {
            examples: 40,
            of: 120,
            bounds: None,
            z: 3.0,
            stopped: revalidate::sequential::Stop::Decided,
        });
        m
    };
    let mut beyond = monitor("self_harm-l7", Status::Stale, true);
    beyond.rung = Rung::BeyondRepair;
    let suite = vec![
        beyond.clone(),
        cut("toxicity-l7", 0.9, false),
        cut("privacy_pii-l7", 0.2, true),
    ];
    let d = decide(&p, fam, &suite, 600);
    assert_eq!(d.verdict, Verdict::Fail);
    assert_eq!(d.failed_by, vec!["self_harm-l7".to_string()]);
    assert_eq!(d.reasons.len(), 1, "{:?}", d.reasons);
    assert!(d.reasons.iter().all(|r| !r.contains("raise budget")));
    let w = d.warnings.join("\n");
    assert!(
        w.contains("2 monitor(s) not revalidated: the verdict was fail before their turn"),
        "{w}"
    );
    assert!(w.contains("toxicity-l7, privacy_pii-l7"), "{w}");
    // Without the decisive monitor's failure the cut-short ones fail.
    let mut repaired = beyond;
    repaired.status = Status::Repaired;
    repaired.rung = Rung::Realignment;
    let d = decide(&p, fam, &[repaired, cut("toxicity-l7", 0.1, false)], 600);
    assert_eq!(d.verdict, Verdict::Fail);
    assert_eq!(d.failed_by, vec!["toxicity-l7".to_string()]);
    // An unverified monitor the budget left unsettled is judged as before.
    let mut budget = cut("toxicity-l7", 0.9, false);
    if let Some(t) = budget.sequential.as_mut() {
        t.stopped = revalidate::sequential::Stop::Budget;
    }
    let d = decide(&p, fam, &[budget], 600);
    assert!(
        d.reasons[0].contains("raise budget.examples"),
        "{:?}",
        d.reasons
    );
}

#[test]
fn every_verdict_path() {
    let p = policy();
    let fam = Family::LowRankAdapter;
    let healthy = monitor("toxicity-l15", Status::Healthy, false);
    let (v, r, _) = parts(decide(&p, fam, std::slice::from_ref(&healthy), 600));
    assert_eq!((v, r.len()), (Verdict::Pass, 0));

    let repaired = monitor("privacy_pii-l15", Status::Repaired, true);
    let (v, _, _) = parts(decide(&p, fam, &[healthy.clone(), repaired.clone()], 600));
    assert_eq!(v, Verdict::PassWithRepairs);

    // Realignment may not pass a candidate under the strict policy.
    let mut strict = p.clone();
    strict.realignment.may_pass = false;
    let (v, r, _) = parts(decide(&strict, fam, &[repaired], 600));
    assert_eq!(v, Verdict::Fail);
    assert!(r[0].contains("does not let that rung pass"), "{r:?}");

    let stale = monitor("privacy_pii-l22", Status::Stale, true);
    let (v, r, _) = parts(decide(&p, fam, &[healthy.clone(), stale.clone()], 600));
    assert_eq!(v, Verdict::Fail);
    assert!(r[0].contains("(critical) is stale"), "{r:?}");
    assert!(!r[0].contains("not tried"), "{r:?}");
    // A rung the budget left no labels for is named with the fix.
    let mut starved = stale;
    starved
        .skipped
        .push("recalibration: 0 labeled example(s) left".into());
    let (v, r, _) = parts(decide(&p, fam, &[starved], 600));
    assert_eq!(v, Verdict::Fail);
    assert!(
            r[0].contains("(not tried: recalibration: 0 labeled example(s) left; raise budget.examples or budget.repair_reserve)"),
            "{r:?}"
        );

    // Stale with the ladder not climbed (budget.stop_at_verdict): the
    // reason says why nothing was tried, and not to raise a budget.
    let mut waiting = monitor("privacy_pii-l22", Status::Stale, true);
    waiting.not_climbed = true;
    let (v, r, _) = parts(decide(&p, fam, &[waiting], 600));
    assert_eq!(v, Verdict::Fail);
    assert!(r[0].contains("the ladder was not climbed"), "{r:?}");
    assert!(!r[0].contains("raise budget"), "{r:?}");

    // Unverified: a warning under default, a failure when the policy says so.
    let unv = monitor("toxicity-l7", Status::Unverified, false);
    let (v, r, w) = parts(decide(&p, fam, &[healthy.clone(), unv.clone()], 600));
    assert_eq!((v, r.len(), w.len()), (Verdict::Pass, 0, 1));
    let mut failing = p.clone();
    failing.unverified = Unverified::Fail;
    let (v, _, _) = parts(decide(&failing, fam, &[healthy.clone(), unv], 600));
    assert_eq!(v, Verdict::Fail);

    // A family the policy does not allow fails even with healthy monitors.
    let mut qonly = p.clone();
    qonly.allowed_families = Some(vec![Family::Identical, Family::Quantization]);
    let (v, r, _) = parts(decide(&qonly, fam, std::slice::from_ref(&healthy), 600));
    assert_eq!(v, Verdict::Fail);
    assert!(r[0].contains("LowRankAdapter"), "{r:?}");
    let (v, _, _) = parts(decide(
        &qonly,
        Family::Quantization,
        std::slice::from_ref(&healthy),
        600,
    ));
    assert_eq!(v, Verdict::Pass);

    // Nothing the suite shows fails a candidate identical to its base,
    // not even under a policy that fails unverified monitors.
    let stale = monitor("privacy_pii-l22", Status::Stale, true);
    let unv = monitor("toxicity-l7", Status::Unverified, false);
    for pol in [&p, &failing, &qonly] {
        let (v, r, w) = parts(decide(
            pol,
            Family::Identical,
            &[stale.clone(), unv.clone()],
            600,
        ));
        assert_eq!((v, r.len()), (Verdict::Pass, 0), "{r:?}");
        assert!(
            w.iter().any(|x| x.contains("identical to its base")),
            "{w:?}"
        );
    }

    // Too small a corpus: realignment not attempted, said so.
    let (_, _, w) = parts(decide(&p, fam, &[healthy], 10));
    assert!(w.iter().any(|x| x.contains("not attempted")), "{w:?}");
}

/// Verdict rules as data (cargo-semver-checks keeps its lints' cases the
/// same way): tests/cases/verdict/<case>/case.json holds the policy (a
/// shipped name or a file beside it), the update family, the monitors'
/// states and the decision expected; reasons and warnings match by
/// prefix, one each, in order.
#[test]
fn verdict_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases/verdict");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert!(cases.len() >= 9, "{cases:?}");
    let mut failures = Vec::new();
    for dir in cases {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let case: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        let policy = Policy::load(&Policy::resolve(
            case["policy"].as_str().unwrap(),
            Some(&dir),
        ))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let family: Family = serde_json::from_value(case["family"].clone()).unwrap();
        let monitors: Vec<MonitorReport> = case["monitors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let status: Status = serde_json::from_value(m["status"].clone()).unwrap();
                let mut r = monitor(
                    m["name"].as_str().unwrap(),
                    status,
                    m["critical"].as_bool().unwrap_or(false),
                );
                if let Some(rung) = m.get("rung") {
                    r.rung = serde_json::from_value(rung.clone()).unwrap();
                }
                r.stale_reasons = m["reasons"]
                    .as_array()
                    .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default();
                if let Some(p) = m["p_stale"].as_f64() {
                    r.risk.p_stale = p;
                }
                r.not_climbed = m["not_climbed"].as_bool().unwrap_or(false);
                r.skipped = m["skipped"]
                    .as_array()
                    .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default();
                // The rungs tried: a report of each (its figures do not enter the decision).
                for t in m["tried"].as_array().into_iter().flatten() {
                    let after = revalidate::EvalResult::example(&r.name, 180);
                    let rung = RungReport {
                        examples: 60,
                        threshold: None,
                        after: after.clone(),
                        stale_reasons_after: r.stale_reasons.clone(),
                    };
                    match t.as_str().unwrap() {
                        "realignment" => {
                            r.realignment = Some(RealignReport {
                                method: realign::Method::MeanShift,
                                heldout_error: 0.1,
                                identity_error: 0.2,
                                prompts: 600,
                                concept_texts: 0,
                                steps: vec![],
                                after,
                                stale_reasons_after: r.stale_reasons.clone(),
                                applied: true,
                                verified: true,
                                written_to: None,
                                alternatives: vec![],
                            })
                        }
                        "recalibration" => r.recalibration = Some(rung),
                        "retraining" => r.retraining = Some(rung),
                        other => panic!("{name}: unknown rung {other}"),
                    }
                }
                r
            })
            .collect();
        let corpus = case["corpus_prompts"].as_u64().unwrap_or(600) as usize;
        let d = decide(&policy, family, &monitors, corpus);
        let e = &case["expect"];
        let want_verdict: Verdict = serde_json::from_value(e["verdict"].clone()).unwrap();
        let matches = |got: &[String], want: &serde_json::Value| {
            let want: Vec<&str> = want
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap())
                .collect();
            got.len() == want.len() && got.iter().zip(&want).all(|(g, w)| g.starts_with(w))
        };
        // Optional: the monitors named as failing it, exactly.
        let failed_by_ok = e
            .get("failed_by")
            .is_none_or(|want| serde_json::to_value(&d.failed_by).is_ok_and(|got| &got == want));
        if d.verdict != want_verdict
            || !matches(&d.reasons, &e["reasons"])
            || !matches(&d.warnings, &e["warnings"])
            || !failed_by_ok
        {
            failures.push(format!("{name}: got {d:#?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `budget.stop_at_verdict`: the ladder stops only when no outcome of
/// the monitors still waiting could change a fail (each taken as healthy).
#[test]
fn the_ladder_stops_only_when_the_rest_cannot_change_the_verdict() {
    use crate::gate::repair::best_outcome;
    let p = Policy::shipped_default();
    let fam = Family::LowRankAdapter;
    let fails = |p: &Policy, fam: Family, ms: Vec<MonitorReport>| {
        decide(p, fam, &ms, 600).verdict == Verdict::Fail
    };
    // Four monitors as the ladder meets them, none climbed yet.
    let pred: Vec<MonitorReport> = [
        "privacy_pii-l22",
        "self_harm-l7",
        "toxicity-l7",
        "toxicity-l15",
    ]
    .iter()
    .map(|n| {
        let mut r = MonitorReport::example(n, Status::Unverified, n.starts_with("privacy"));
        r.risk.p_stale = 0.2;
        r
    })
    .collect();
    // Every monitor revalidated but the last (unverified, low risk).
    let all_but_last = |n: &str| n != "toxicity-l15";
    let none_done: Vec<Option<MonitorReport>> = vec![None; 4];
    assert!(!fails(
        &p,
        fam,
        best_outcome(&none_done, &pred, &all_but_last)
    ));

    // A monitor its climb left stale fails the candidate whatever the rest.
    let mut done = none_done.clone();
    done[1] = Some(MonitorReport::example("self_harm-l7", Status::Stale, false));
    assert!(fails(&p, fam, best_outcome(&done, &pred, &all_but_last)));
    // A repaired one does not.
    done[1] = Some(MonitorReport::example(
        "self_harm-l7",
        Status::Repaired,
        false,
    ));
    assert!(!fails(&p, fam, best_outcome(&done, &pred, &all_but_last)));

    // An unverified monitor the rules fail (risk ≥ unverified_fail_risk)
    // decides it before any climb: the ladder cannot revalidate it...
    let mut risky = pred.clone();
    risky[3].risk.p_stale = 0.9;
    assert!(fails(
        &p,
        fam,
        best_outcome(&none_done, &risky, &all_but_last)
    ));
    // ...but a revalidated one waiting for the ladder may end healthy.
    assert!(!fails(
        &p,
        fam,
        best_outcome(&none_done, &risky, &|_: &str| true)
    ));

    // A family the policy does not allow decides it at once; a candidate
    // identical to its base is never failed by it.
    let mut qonly = p.clone();
    qonly.allowed_families = Some(vec![Family::Quantization]);
    assert!(fails(
        &qonly,
        fam,
        best_outcome(&none_done, &pred, &all_but_last)
    ));
    assert!(!fails(
        &qonly,
        Family::Identical,
        best_outcome(&none_done, &pred, &all_but_last)
    ));
}
