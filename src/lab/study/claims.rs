//! STUDY.md's table of the published claims against this grid: each claim
//! with its figure under both definitions of stale, a stated agreement rule,
//! and the reason people wrote for a difference (`study/why.toml`).

use std::fmt::Write as _;
use std::path::Path;

use super::honest::{Interval, StaleRow};
use super::*;

/// One published claim against this grid: the published figure, ours
/// under each definition, and whether they agree by a rule stated in the
/// row (so a rerun decides it, not the writer).
struct Claim {
    id: &'static str,
    claim: &'static str,
    published: &'static str,
    ours: String,
    agrees: String,
}

fn pct(i: &Interval) -> String {
    format!(
        "{:.1}% [{:.1}, {:.1}]",
        100.0 * i.rate,
        100.0 * i.lo,
        100.0 * i.hi
    )
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// The published claims (Duan 2026, abstract and relayed figures) checked
/// against this grid, under both definitions of stale.
fn claims(study: &Study) -> Vec<Claim> {
    let h = &study.honest;
    let fam = |f: &str| h.by_family.iter().find(|r| r.name == f);
    let mut out = Vec::new();
    let both = |r: &StaleRow| {
        format!(
            "ranking {}; operating point {}",
            pct(&r.ranking),
            pct(&r.operating_point)
        )
    };
    // 1. Quantization barely moves probes.
    let q: Vec<&StaleRow> = ["quantization 8-bit", "quantization 4-bit"]
        .iter()
        .filter_map(|f| fam(f))
        .collect();
    if !q.is_empty() {
        out.push(Claim {
            id: "quantization",
            claim: "quantization barely moves probes",
            published: "median ΔAUROC −0.0021; 1.46% of cells with a big drop",
            ours: q
                .iter()
                .map(|r| format!("{}: {}", r.name, both(r)))
                .collect::<Vec<_>>()
                .join("<br>"),
            agrees: q
                .iter()
                .map(|r| {
                    format!(
                        "{}: ranking {}, operating point {}",
                        r.name,
                        yes(r.ranking.rate <= 0.05),
                        yes(r.operating_point.rate <= 0.05)
                    )
                })
                .collect::<Vec<_>>()
                .join("<br>")
                + " (rule: ≤ 5% stale)",
        });
    }
    // 2. Fine-tuning-style updates often make probes stale.
    if let Some(r) = fam("LoRA") {
        out.push(Claim {
            id: "lora",
            claim: "fine-tuning-style updates often make probes stale",
            published: "LoRA family: 43.2–53.8% big drops",
            ours: format!("LoRA: {}", both(r)),
            agrees: format!(
                "ranking {}, operating point {} (rule: ≥ 20% stale)",
                yes(r.ranking.rate >= 0.20),
                yes(r.operating_point.rate >= 0.20)
            ),
        });
    }
    // 3, 4. PII the most fragile concept, refusal-compliance the most stable.
    let rank = |k: &str, pick: &dyn Fn(&StaleRow) -> f64| {
        let mut v: Vec<(&str, f64)> = h
            .by_concept
            .iter()
            .map(|r| (r.name.as_str(), pick(r)))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v.iter()
            .position(|(n, _)| *n == k)
            .map(|i| (i + 1, v.len()))
    };
    let concept = |k: &str| h.by_concept.iter().find(|r| r.name == k);
    for (id, k, claim, published, most_fragile) in [
        (
            "pii",
            "privacy_pii",
            "privacy/PII probes are the most fragile",
            "57.1% stale (the most fragile concept)",
            true,
        ),
        (
            "refusal",
            "refusal_compliance",
            "refusal-compliance probes are the most stable",
            "7.9% stale (the most stable concept)",
            false,
        ),
    ] {
        let Some(r) = concept(k) else { continue };
        let rr = rank(k, &|r| r.ranking.rate);
        let ro = rank(k, &|r| r.operating_point.rate);
        let place = |x: Option<(usize, usize)>| {
            x.map(|(i, n)| format!("{i} of {n} by fragility"))
                .unwrap_or_default()
        };
        let ok = |x: Option<(usize, usize)>| {
            x.is_some_and(|(i, n)| if most_fragile { i == 1 } else { i == n })
        };
        out.push(Claim {
            id,
            claim,
            published,
            ours: format!(
                "ranking {} ({}); operating point {} ({})",
                pct(&r.ranking),
                place(rr),
                pct(&r.operating_point),
                place(ro)
            ),
            agrees: format!(
                "ranking {}, operating point {} (rule: {} of the concepts)",
                yes(ok(rr)),
                yes(ok(ro)),
                if most_fragile {
                    "the most fragile"
                } else {
                    "the most stable"
                }
            ),
        });
    }
    // 5. QLoRA hurts more than NF4 alone.
    let nf4 = study.nf4_vs_qlora.iter().find(|(k, _)| k == "NF4 alone");
    let ql = study
        .nf4_vs_qlora
        .iter()
        .find(|(k, _)| k.starts_with("QLoRA"));
    if let (Some((_, a)), Some((_, b))) = (nf4, ql) {
        if a.cells > 0 && b.cells > 0 {
            out.push(Claim {
                id: "qlora",
                claim: "QLoRA hurts more than NF4 alone",
                published: "QLoRA worse than NF4 alone",
                ours: format!(
                    "big drops: NF4 {:.1}% of {}, QLoRA {:.1}% of {}; median ΔAUROC {:+.4} against {:+.4}",
                    a.pct(),
                    a.cells,
                    b.pct(),
                    b.cells,
                    a.median_delta,
                    b.median_delta
                ),
                agrees: format!("ranking {} (rule: QLoRA's rate above NF4's)", yes(b.pct() > a.pct())),
            });
        }
    }
    // 6. Degradation is predictable from pre-deployment features.
    let get = |by: &str| {
        h.honest
            .iter()
            .find(|x| x.by == by)
            .and_then(|x| x.auroc.get("risk_model").cloned().flatten())
    };
    if let (Some(f), Some(m)) = (get("family, merged with its source"), get("model")) {
        out.push(Claim {
            id: "predictable",
            claim: "degradation is predictable from pre-deployment features",
            published: "predictable (figure not available here)",
            ours: format!("held-out AUROC {f:.3} (one family out, merged with its source), {m:.3} (one model out)"),
            agrees: format!("{} (rule: both ≥ 0.80; the issue's goal is 0.90)", yes(f >= 0.80 && m >= 0.80)),
        });
    }
    // 7. Cheap label-free realignment repairs the stale probes.
    if !h.repairs.is_empty() {
        let part = |t: &super::honest::RepairTable| {
            let r = &t.methods[0].1;
            format!(
                "{}: {} of {} repair-relevant cells = {}",
                t.definition.name(),
                r.stale,
                r.cells,
                pct(r)
            )
        };
        out.push(Claim {
            id: "realignment",
            claim: "label-free realignment repairs the stale probes",
            published: "every repair-relevant stale cell repaired",
            ours: h.repairs.iter().map(part).collect::<Vec<_>>().join("<br>"),
            agrees: h
                .repairs
                .iter()
                .map(|t| {
                    format!(
                        "{} {}",
                        t.definition.name(),
                        yes(t.methods[0].1.rate >= 0.90)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
                + " (rule: ≥ 90% of repair-relevant cells)",
        });
    }
    out
}

/// The claim ids `study/why.toml` may explain.
const CLAIM_IDS: [&str; 7] = [
    "quantization",
    "lora",
    "pii",
    "refusal",
    "qlora",
    "predictable",
    "realignment",
];

/// Why ours and the published figures differ, per claim id, from
/// `study/why.toml` beside STUDY.md (written by people, read here so the
/// generated table carries it): `<id> = "text"`. No file: no reasons; a file
/// that does not parse, or names a claim that does not exist, is an error
/// (a typo would otherwise drop a reason silently).
fn why(dir: &Path) -> Result<BTreeMap<String, String>> {
    let path = dir.join("why.toml");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let map: BTreeMap<String, String> = toml::from_str(&text).map_err(|e| Error::Field {
        path: path.clone(),
        field: "(file)".into(),
        msg: format!("expected `<claim id> = \"text\"` lines: {e}"),
    })?;
    if let Some(k) = map.keys().find(|k| !CLAIM_IDS.contains(&k.as_str())) {
        return Err(Error::Field {
            path,
            field: k.clone(),
            msg: format!("no such claim (known: {})", CLAIM_IDS.join(", ")),
        });
    }
    Ok(map)
}

pub(super) fn claims_section(study: &Study, dir: &Path) -> Result<String> {
    let why = why(dir)?;
    let mut s = String::from(
        "## Against the published figures\n\n\
         Each claim of the study's abstract (and the figures relayed from it) with this grid's \
         figure under both definitions of stale, whether they agree by the rule given in the \
         row, and why they may differ (`study/why.toml`).\n\n\
         | claim | published | this grid | agrees | why |\n| --- | --- | --- | --- | --- |\n",
    );
    for c in claims(study) {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            c.claim,
            c.published,
            c.ours,
            c.agrees,
            // One table cell: no line breaks, pipes escaped.
            why.get(c.id)
                .map(|w| w.trim().replace('\n', " ").replace('|', "\\|"))
                .unwrap_or_default()
        );
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn why_toml_is_optional_but_never_silently_wrong() {
        let dir = tempfile::tempdir().unwrap();
        assert!(why(dir.path()).unwrap().is_empty());
        let p = dir.path().join("why.toml");
        std::fs::write(&p, "pii = \"synthetic data\"\n").unwrap();
        assert_eq!(why(dir.path()).unwrap()["pii"], "synthetic data");
        std::fs::write(&p, "piii = \"a typo\"\n").unwrap();
        let e = why(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("why.toml") && e.contains("piii") && e.contains("known: quantization"),
            "{e}"
        );
        std::fs::write(&p, "pii = [1, 2]\n").unwrap();
        let e = why(dir.path()).unwrap_err().to_string();
        assert!(e.contains("why.toml") && e.contains("claim id"), "{e}");
    }
}
