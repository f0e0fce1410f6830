//! `probegate report merge`: shard reports (`check --shard I/N`) combined
//! into the one report the whole suite would have given.
//!
//! The parts must make one whole, or there is nothing to merge: every
//! shard of one split once, all from the same base, candidate, policy and
//! probegate, their concepts disjoint and covering the suite. Anything else
//! is an error (the gate could not evaluate), never a verdict on part of
//! the suite. The verdict is decided again by the policy over every
//! monitor, so a merged fail names the same reasons an unsharded run would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::types::{BudgetUse, Report, ReportFile, ShardInfo};
use crate::error::{Error, Result};
use crate::gate::repair::riskiest_first;
use crate::gate::verdict::{self, Decision};

/// One shard's report.json and where it was read from (named in errors).
pub struct Part {
    pub path: PathBuf,
    pub report: ReportFile,
}

fn mismatch(path: &Path, field: &str, msg: String) -> Error {
    Error::field(path.join("report.json"), field, msg)
}

/// The merged report of `parts`, or why they are not one whole.
pub fn merge(parts: &[Part]) -> Result<Report> {
    let Some(first) = parts.first() else {
        return Err(Error::Usage("report merge: no shard reports given".into()));
    };
    let mut decided: Vec<(&Path, &Report, &ShardInfo)> = Vec::new();
    for p in parts {
        let r = match &p.report {
            ReportFile::Decided(r) => r.as_ref(),
            ReportFile::Error(e) => {
                return Err(mismatch(
                    &p.path,
                    "verdict",
                    format!(
                        "this shard could not evaluate, so neither can the whole: {}",
                        e.error
                    ),
                ))
            }
        };
        let Some(s) = &r.shard else {
            return Err(mismatch(
                &p.path,
                "shard",
                "not a shard report (write one with `probegate check --shard I/N`)".into(),
            ));
        };
        decided.push((&p.path, r, s));
    }
    let (_, head, head_shard) = decided[0];
    let same = |path: &Path, field: &str, a: String, b: String| -> Result<()> {
        if a == b {
            return Ok(());
        }
        let other = first.path.join("report.json");
        // A whole policy in an error is unreadable: long values are only named.
        let msg = if a.len() + b.len() > 160 {
            format!(
                "differs from {}: shards of one check must agree",
                other.display()
            )
        } else {
            format!(
                "{b}, but {} has {a}: shards of one check must agree",
                other.display()
            )
        };
        Err(mismatch(path, field, msg))
    };
    // What every shard of one check agrees on, as text to compare and show.
    type Key = fn(&Report, &ShardInfo) -> String;
    let agree: [(&str, Key); 9] = [
        ("shard.count", |_, s| s.count.to_string()),
        ("shard.suite_concepts", |_, s| s.suite_concepts.join(", ")),
        ("probegate_version", |r, _| r.probegate_version.clone()),
        ("base.fingerprint", |r, _| r.base.fingerprint.clone()),
        ("candidate.fingerprint", |r, _| {
            r.candidate.fingerprint.clone()
        }),
        ("policy", |r, _| {
            serde_json::to_string(&r.policy).unwrap_or_default()
        }),
        ("diff.family", |r, _| format!("{:?}", r.diff.family)),
        ("budget.full_revalidation", |r, _| {
            r.budget.full_revalidation.to_string()
        }),
        ("corpus_prompts", |r, _| r.corpus_prompts.to_string()),
    ];
    let mut by_index: BTreeMap<usize, &Path> = BTreeMap::new();
    let mut owner: BTreeMap<&str, &Path> = BTreeMap::new();
    for &(path, r, s) in &decided {
        for (field, key) in agree {
            same(path, field, key(head, head_shard), key(r, s))?;
        }
        if let Some(other) = by_index.insert(s.index, path) {
            return Err(mismatch(
                path,
                "shard.index",
                format!(
                    "shard {}/{} is given twice (also {})",
                    s.index,
                    s.count,
                    other.join("report.json").display()
                ),
            ));
        }
        for c in &s.concepts {
            if let Some(other) = owner.insert(c, path) {
                return Err(mismatch(
                    path,
                    "shard.concepts",
                    format!(
                        "concept `{c}` is also judged in {}",
                        other.join("report.json").display()
                    ),
                ));
            }
        }
    }
    let missing: Vec<String> = (1..=head_shard.count)
        .filter(|i| !by_index.contains_key(i))
        .map(|i| format!("{i}/{}", head_shard.count))
        .collect();
    if !missing.is_empty() {
        return Err(Error::Usage(format!(
            "report merge: shard {} missing; every shard of the split is needed for a verdict on the suite",
            missing.join(", ")
        )));
    }
    let uncovered: Vec<&str> = head_shard
        .suite_concepts
        .iter()
        .map(String::as_str)
        .filter(|c| !owner.contains_key(c))
        .collect();
    if !uncovered.is_empty() {
        return Err(Error::Usage(format!(
            "report merge: no shard judged concept {}",
            uncovered.join(", ")
        )));
    }
    Ok(combine(
        &decided.iter().map(|&(_, r, _)| r).collect::<Vec<_>>(),
    ))
}

/// The one report of shards already checked to be one whole.
fn combine(shards: &[&Report]) -> Report {
    let head = shards[0];
    let mut monitors: Vec<_> = shards.iter().flat_map(|r| r.monitors.clone()).collect();
    riskiest_first(&mut monitors);
    let Decision {
        verdict,
        reasons,
        mut warnings,
        failed_by,
    } = verdict::decide(
        &head.policy,
        head.diff.family,
        &monitors,
        head.corpus_prompts,
    );
    // Findings about the suite are the suite's, so every shard carries them;
    // each is said once.
    let mut findings: Vec<String> = Vec::new();
    for w in shards.iter().flat_map(|r| r.suite_findings()) {
        if !findings.contains(w) {
            findings.push(w.clone());
        }
    }
    warnings.splice(0..0, findings);
    // Shards run side by side: a stage took as long as its slowest shard.
    let mut seconds: BTreeMap<String, f64> = BTreeMap::new();
    for (k, v) in shards.iter().flat_map(|r| &r.seconds) {
        let e = seconds.entry(k.clone()).or_insert(0.0);
        *e = e.max(*v);
    }
    let sum = |f: fn(&BudgetUse) -> usize| shards.iter().map(|r| f(&r.budget)).sum::<usize>();
    Report {
        verdict,
        reasons,
        failed_by,
        warnings,
        budget: BudgetUse {
            examples_limit: head.policy.budget.examples,
            examples_used: sum(|b| b.examples_used),
            examples_full: sum(|b| b.examples_full),
            seconds_limit: head.budget.seconds_limit,
            full_revalidation: head.budget.full_revalidation,
        },
        monitors,
        seconds,
        shard: None,
        ..head.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::policy::Policy;
    use crate::gate::repair::MonitorReport;
    use crate::gate::report::{ErrorReport, ModelInfo};
    use crate::gate::revalidate::Status;
    use crate::gate::verdict::Verdict;

    const SUITE: [&str; 3] = ["harmful_request", "privacy_pii", "toxicity"];

    fn policy() -> Policy {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/default.toml");
        Policy::parse(&std::fs::read_to_string(&path).unwrap(), &path).unwrap()
    }

    /// Shard `index` of 2 holding `concepts`, one monitor each, in `status`.
    fn shard(index: usize, concepts: &[&str], status: Status) -> Part {
        let monitors: Vec<MonitorReport> = concepts
            .iter()
            .map(|c| MonitorReport::example(&format!("{c}-l15"), status, false))
            .collect();
        let report = Report {
            warnings: vec![
                "suite: toxicity-l15 is weak on its base".into(),
                "shard-only".into(),
            ],
            candidate: ModelInfo {
                reference: format!("/job{index}/cand"),
                fingerprint: "c".into(),
            },
            policy: policy(),
            budget: BudgetUse {
                examples_limit: 300,
                examples_used: 180 * concepts.len(),
                examples_full: 180 * concepts.len(),
                seconds_limit: None,
                full_revalidation: false,
            },
            monitors,
            seconds: BTreeMap::from([("total".into(), 10.0 * index as f64)]),
            shard: Some(ShardInfo {
                index,
                count: 2,
                concepts: concepts.iter().map(|c| c.to_string()).collect(),
                suite_concepts: SUITE.iter().map(|c| c.to_string()).collect(),
                suite_monitors: 3,
            }),
            ..Report::example()
        };
        Part {
            path: PathBuf::from(format!("shard-{index}")),
            report: ReportFile::Decided(Box::new(report)),
        }
    }

    fn decided(p: &mut Part) -> &mut Report {
        match &mut p.report {
            ReportFile::Decided(r) => r,
            ReportFile::Error(_) => unreachable!(),
        }
    }

    #[test]
    fn shards_merge_into_the_verdict_of_the_whole_suite() {
        let parts = [
            shard(1, &["privacy_pii"], Status::Stale),
            shard(2, &["harmful_request", "toxicity"], Status::Healthy),
        ];
        let r = merge(&parts).unwrap();
        // Shard 2 alone would pass; the suite fails on shard 1's stale monitor.
        assert_eq!(r.verdict, Verdict::Fail);
        assert!(r.reasons[0].contains("privacy_pii-l15"), "{:?}", r.reasons);
        assert_eq!(r.monitors.len(), 3);
        assert_eq!(r.budget.examples_used, 540);
        assert_eq!(r.budget.examples_limit, policy().budget.examples);
        assert_eq!(r.seconds["total"], 20.0, "the slowest shard's wall time");
        assert_eq!(r.shard, None);
        // The suite's findings once each; a shard's own warnings are decided again.
        assert_eq!(r.suite_findings().count(), 1);
        assert!(!r.warnings.iter().any(|w| w == "shard-only"));
        // The order of the arguments does not matter.
        let swapped = [
            shard(2, &["harmful_request", "toxicity"], Status::Healthy),
            shard(1, &["privacy_pii"], Status::Stale),
        ];
        let s = merge(&swapped).unwrap();
        let names = |r: &Report| {
            r.monitors
                .iter()
                .map(|m| m.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!((s.verdict, names(&s)), (r.verdict, names(&r)));
    }

    fn err(parts: &[Part]) -> String {
        merge(parts).unwrap_err().to_string()
    }

    #[test]
    fn parts_that_are_not_one_whole_are_errors_naming_the_file_and_field() {
        let healthy = |i, c: &[&str]| shard(i, c, Status::Healthy);
        let e = err(&[healthy(1, &["privacy_pii"])]);
        assert!(e.contains("shard 2/2 missing"), "{e}");
        let e = err(&[healthy(1, &["privacy_pii"]), healthy(1, &["toxicity"])]);
        assert!(
            e.contains("shard-1/report.json: field `shard.index`: shard 1/2 is given twice"),
            "{e}"
        );
        let e = err(&[
            healthy(1, &["privacy_pii"]),
            healthy(2, &["privacy_pii", "toxicity"]),
        ]);
        assert!(
            e.contains("field `shard.concepts`: concept `privacy_pii` is also judged"),
            "{e}"
        );
        let e = err(&[healthy(1, &["privacy_pii"]), healthy(2, &["toxicity"])]);
        assert!(e.contains("no shard judged concept harmful_request"), "{e}");
        assert!(err(&[]).contains("no shard reports given"));

        let mut other = healthy(2, &["harmful_request", "toxicity"]);
        decided(&mut other).candidate.fingerprint = "another".into();
        let e = err(&[healthy(1, &["privacy_pii"]), other]);
        assert!(
            e.contains("shard-2/report.json: field `candidate.fingerprint`"),
            "{e}"
        );
        let mut other = healthy(2, &["harmful_request", "toxicity"]);
        decided(&mut other).policy.budget.examples += 1;
        let e = err(&[healthy(1, &["privacy_pii"]), other]);
        assert!(
            e.contains("field `policy`: differs from shard-1/report.json"),
            "{e}"
        );
        assert!(e.len() < 300, "{e}");
        let mut other = healthy(2, &["harmful_request", "toxicity"]);
        decided(&mut other).shard.as_mut().unwrap().count = 3;
        assert!(err(&[healthy(1, &["privacy_pii"]), other]).contains("field `shard.count`"));
        let mut whole = healthy(2, &["harmful_request", "toxicity"]);
        decided(&mut whole).shard = None;
        let e = err(&[healthy(1, &["privacy_pii"]), whole]);
        assert!(e.contains("field `shard`: not a shard report"), "{e}");

        let failed = Part {
            path: PathBuf::from("shard-2"),
            report: ReportFile::Error(ErrorReport::new("out of memory")),
        };
        let e = err(&[healthy(1, &["privacy_pii"]), failed]);
        assert!(
            e.contains("could not evaluate") && e.contains("out of memory"),
            "{e}"
        );
    }
}
