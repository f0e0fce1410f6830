//! The staleness study, reproduced from probegate's own grid: every zoo
//! condition's full-revalidation report (`study grid --reports`) becomes
//! cells (model × condition × monitor), and this module turns them into the
//! published study's tables, the predictor's held-out quality, the
//! realignment figures and the gate's own figures on the zoo. Plain data in,
//! plain data and Markdown out.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::gate::policy::Policy;
use crate::gate::repair::realign::Method;
use crate::gate::risk::{self, RiskModel};
use crate::gate::{self, Report, Status, Verdict};

/// The study's threshold for a "big drop".
pub const BIG_DROP: f64 = -0.05;

/// Update families as the study groups them (by zoo condition, not by what
/// the diff names: the identical condition is its own row).
pub fn study_family(condition: &str) -> &'static str {
    if condition == "identical" {
        "identical"
    } else if condition.starts_with("qlora") {
        "QLoRA"
    } else if condition.starts_with("merged-lora") {
        "merged LoRA"
    } else if condition.starts_with("lora") {
        "LoRA"
    } else if condition.starts_with("full") {
        "full fine-tune"
    } else {
        "quantization"
    }
}

const FAMILIES: [&str; 6] = [
    "identical",
    "quantization",
    "LoRA",
    "merged LoRA",
    "QLoRA",
    "full fine-tune",
];

/// The published figures (Duan 2026) shown beside ours.
fn published_family(f: &str) -> &'static str {
    match f {
        "quantization" => "median −0.0021, 1.46% big drops",
        "LoRA" | "merged LoRA" => "LoRA family 43.2–53.8% big drops",
        "QLoRA" => "worse than NF4 alone",
        _ => "",
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub model: String,
    pub condition: String,
    pub family: &'static str,
    pub monitor: String,
    pub concept: String,
    pub layer: usize,
    pub base_auroc: f64,
    pub delta_auroc: f64,
    pub stale: bool,
    /// Each realignment method's labeled AUROC, when realignment ran.
    pub methods: Vec<(Method, f64)>,
    pub chosen: Option<Method>,
    /// Final status under the report's policy and the rung that got it there.
    pub status: Status,
    pub rung: String,
    /// The repair ladder that run used (realignment with concept texts, recalibration).
    pub ladder: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Condition {
    pub model: String,
    pub condition: String,
    pub family: &'static str,
    pub diff_family: String,
    pub full_verdict: Verdict,
    pub budgeted_verdict: Verdict,
    pub examples_used: usize,
    pub examples_full: usize,
    pub stale: usize,
    pub repaired: usize,
    pub critical_stale_unrepaired_full: usize,
    pub false_pass: bool,
    pub seconds: f64,
    pub ladder: String,
}

pub struct Loaded {
    pub reports: Vec<(String, PathBuf, Report)>,
}

/// Every `<dir>/<condition>/report.json` under the given directories.
pub fn load(dirs: &[PathBuf]) -> Result<Loaded> {
    let mut reports = Vec::new();
    for d in dirs {
        let mut subs: Vec<PathBuf> = std::fs::read_dir(d)
            .map_err(|e| Error::io(d, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("report.json").is_file())
            .collect();
        subs.sort();
        for s in subs {
            let p = s.join("report.json");
            let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
            let r: Report = serde_json::from_str(&text).map_err(|e| Error::Input {
                path: p.clone(),
                line: e.line(),
                msg: e.to_string(),
            })?;
            if !r.budget.full_revalidation {
                return Err(Error::Input {
                    path: p,
                    line: 1,
                    msg: "not a full-revalidation report (made by `study grid`); the study needs ground truth for every monitor".into(),
                });
            }
            let cond = r.condition.clone().unwrap_or_else(|| {
                s.file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default()
            });
            reports.push((cond, s, r));
        }
    }
    if reports.is_empty() {
        return Err(Error::Usage(
            "no report.json under the given directories".into(),
        ));
    }
    Ok(Loaded { reports })
}

fn ladder(r: &Report) -> String {
    let mut s = String::from("realignment");
    if r.policy.realignment.concept_texts {
        s.push_str(" (+concept texts)");
    }
    if r.policy.recalibration.enabled {
        s.push_str(", recalibration");
    }
    s
}

pub fn cells(l: &Loaded) -> Vec<Cell> {
    let mut out = Vec::new();
    for (cond, _, r) in &l.reports {
        for m in &r.monitors {
            let Some(e) = &m.eval else { continue };
            let (methods, chosen) = match &m.realignment {
                Some(re) => (
                    re.alternatives
                        .iter()
                        .map(|a| (a.method, a.auroc))
                        .collect(),
                    Some(re.method),
                ),
                None => (vec![], None),
            };
            out.push(Cell {
                model: r.model_id(),
                condition: cond.clone(),
                family: study_family(cond),
                monitor: m.name.clone(),
                concept: m.concept.clone(),
                layer: m.layer,
                base_auroc: e.base_auroc,
                delta_auroc: e.delta_auroc,
                stale: e.delta_auroc <= BIG_DROP + 1e-12,
                methods,
                chosen,
                status: m.status,
                rung: m.rung.as_str().to_string(),
                ladder: ladder(r),
            });
        }
    }
    out
}

pub fn conditions(l: &Loaded, policy: &Policy, model: &RiskModel) -> Vec<Condition> {
    l.reports
        .iter()
        .map(|(cond, _, full)| {
            let b = gate::replay::replay_budgeted(full, policy, model);
            let crit = full
                .monitors
                .iter()
                .filter(|m| m.status == Status::Stale && policy.is_critical(&m.name, &m.concept))
                .count();
            let passes = b.verdict != Verdict::Fail;
            Condition {
                model: full.model_id(),
                condition: cond.clone(),
                family: study_family(cond),
                diff_family: serde_json::to_value(full.diff.family)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                full_verdict: full.verdict,
                budgeted_verdict: b.verdict,
                examples_used: b.budget.examples_used,
                examples_full: full.budget.examples_full,
                stale: full
                    .monitors
                    .iter()
                    .filter(|m| !m.stale_reasons.is_empty())
                    .count(),
                repaired: full
                    .monitors
                    .iter()
                    .filter(|m| m.status == Status::Repaired)
                    .count(),
                critical_stale_unrepaired_full: crit,
                false_pass: passes && crit > 0,
                seconds: full.seconds.get("total").copied().unwrap_or(0.0),
                ladder: ladder(full),
            }
        })
        .collect()
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Rate {
    pub cells: usize,
    pub big_drops: usize,
    pub median_delta: f64,
}

impl Rate {
    fn of<'a>(cells: impl Iterator<Item = &'a Cell>) -> Rate {
        let mut d = Vec::new();
        let mut big = 0;
        for c in cells {
            d.push(c.delta_auroc);
            big += c.stale as usize;
        }
        Rate {
            cells: d.len(),
            big_drops: big,
            median_delta: median(&mut d),
        }
    }
    pub fn pct(&self) -> f64 {
        100.0 * self.big_drops as f64 / self.cells.max(1) as f64
    }
}

const FINETUNE: [&str; 4] = ["LoRA", "merged LoRA", "QLoRA", "full fine-tune"];

#[derive(Debug, Clone, Serialize)]
pub struct Study {
    pub models: Vec<String>,
    pub conditions: Vec<Condition>,
    pub by_family: Vec<(String, Rate)>,
    pub by_family_model: Vec<(String, String, Rate)>,
    pub by_concept: Vec<(String, Rate, Rate)>,
    pub nf4_vs_qlora: Vec<(String, Rate)>,
    pub predictor: risk::Evaluation,
    /// Per realignment method: stale cells it brought back within 0.05 of base AUROC.
    pub realign_methods: Vec<(Method, usize, usize)>,
    pub stale_cells: usize,
    pub stale_with_realignment: usize,
    pub chosen_repaired: usize,
    pub any_method_repaired: usize,
    /// Final rung of every stale cell (realignment, recalibration, none).
    pub rungs: BTreeMap<String, usize>,
    pub cells: Vec<Cell>,
}

pub fn build(l: &Loaded, policy: &Policy, model: &RiskModel) -> Study {
    let cells = cells(l);
    let mut models: Vec<String> = cells.iter().map(|c| c.model.clone()).collect();
    models.sort();
    models.dedup();
    let by_family = FAMILIES
        .iter()
        .map(|f| {
            (
                f.to_string(),
                Rate::of(cells.iter().filter(|c| c.family == *f)),
            )
        })
        .filter(|(_, r)| r.cells > 0)
        .collect();
    let mut by_family_model = Vec::new();
    for f in FAMILIES {
        for m in &models {
            let r = Rate::of(cells.iter().filter(|c| c.family == f && &c.model == m));
            if r.cells > 0 {
                by_family_model.push((f.to_string(), m.clone(), r));
            }
        }
    }
    let mut concepts: Vec<String> = cells.iter().map(|c| c.concept.clone()).collect();
    concepts.sort();
    concepts.dedup();
    let by_concept = concepts
        .iter()
        .map(|k| {
            let ft = Rate::of(
                cells
                    .iter()
                    .filter(|c| &c.concept == k && FINETUNE.contains(&c.family)),
            );
            let all = Rate::of(
                cells
                    .iter()
                    .filter(|c| &c.concept == k && c.family != "identical"),
            );
            (k.clone(), ft, all)
        })
        .collect();
    let nf4_vs_qlora = vec![
        (
            "NF4 alone".to_string(),
            Rate::of(cells.iter().filter(|c| c.condition == "nf4")),
        ),
        (
            "QLoRA (adapter on NF4)".to_string(),
            Rate::of(cells.iter().filter(|c| c.family == "QLoRA")),
        ),
        (
            "LoRA, same rank/targets, f32 base".to_string(),
            Rate::of(
                cells
                    .iter()
                    .filter(|c| c.condition.starts_with("lora-r8-attn-mlp-")),
            ),
        ),
    ];
    let rows: Vec<risk::HistoryRow> = l
        .reports
        .iter()
        .flat_map(|(_, _, r)| r.history(&r.model_id()))
        .collect();
    let predictor = risk::evaluate(&rows, 1.0);
    let stale: Vec<&Cell> = cells.iter().filter(|c| c.stale).collect();
    let with_re: Vec<&&Cell> = stale.iter().filter(|c| !c.methods.is_empty()).collect();
    let recovered = |c: &Cell, m: Method| {
        c.methods
            .iter()
            .any(|(mm, a)| *mm == m && *a >= c.base_auroc + BIG_DROP - 1e-12)
    };
    let realign_methods = crate::gate::repair::realign::METHODS
        .iter()
        .map(|&m| {
            (
                m,
                with_re.iter().filter(|c| recovered(c, m)).count(),
                with_re.len(),
            )
        })
        .collect();
    let chosen_repaired = with_re
        .iter()
        .filter(|c| c.chosen.is_some_and(|m| recovered(c, m)))
        .count();
    let any_method_repaired = with_re
        .iter()
        .filter(|c| {
            crate::gate::repair::realign::METHODS
                .iter()
                .any(|&m| recovered(c, m))
        })
        .count();
    let mut rungs = BTreeMap::new();
    for c in &stale {
        let k = if c.status == Status::Stale {
            "not repaired".to_string()
        } else {
            c.rung.clone()
        };
        *rungs.entry(k).or_insert(0) += 1;
    }
    Study {
        models,
        conditions: conditions(l, policy, model),
        by_family,
        by_family_model,
        by_concept,
        nf4_vs_qlora,
        predictor,
        realign_methods,
        stale_cells: stale.len(),
        stale_with_realignment: with_re.len(),
        chosen_repaired,
        any_method_repaired,
        rungs,
        cells,
    }
}

fn f3(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else {
        format!("{x:+.4}")
    }
}

fn auc(v: &Option<f64>) -> String {
    v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "–".into())
}

/// Horizontal bars (0–100%), one per row, with an optional published marker.
/// Hand-written SVG as in report.rs: a plotting crate would add a dependency
/// tree for a few rectangles.
pub fn svg_bars(title: &str, rows: &[(String, f64, Option<f64>)]) -> String {
    let (w, row_h, left) = (620.0, 22.0, 190.0);
    let h = 40.0 + row_h * rows.len() as f64;
    let scale = (w - left - 60.0) / 100.0;
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><title>{title}</title><text x="8" y="16" font-weight="bold">{title}</text>"##
    );
    for (i, (label, pct, published)) in rows.iter().enumerate() {
        let y = 28.0 + i as f64 * row_h;
        let _ = write!(
            s,
            r##"<text x="8" y="{:.1}">{label}</text><rect x="{left}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="#4a78c2"/><text x="{:.1}" y="{:.1}">{pct:.1}%</text>"##,
            y + 14.0,
            (pct * scale).max(0.5),
            row_h - 6.0,
            left + pct * scale + 4.0,
            y + 14.0
        );
        if let Some(p) = published {
            let x = left + p * scale;
            let _ = write!(
                s,
                r##"<line x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}" stroke="#d0402b" stroke-width="3"><title>published {p:.1}%</title></line>"##,
                y - 2.0,
                y + row_h - 4.0
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

/// Triage curves: share of stale cells caught (y) against share revalidated (x).
pub fn svg_triage(curves: &[(String, Vec<(f64, f64)>)]) -> String {
    let (w, h, pad) = (420.0, 300.0, 40.0);
    let colours = ["#4a78c2", "#d0402b", "#3a9a5b"];
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><title>Triage curve</title><rect x="{pad}" y="{pad}" width="{}" height="{}" fill="none" stroke="#999"/><line x1="{pad}" y1="{}" x2="{}" y2="{pad}" stroke="#ccc" stroke-dasharray="4"/>"##,
        w - 2.0 * pad,
        h - 2.0 * pad,
        h - pad,
        w - pad
    );
    let px = |x: f64| pad + x * (w - 2.0 * pad);
    let py = |y: f64| h - pad - y * (h - 2.0 * pad);
    for (i, (name, pts)) in curves.iter().enumerate() {
        let c = colours[i % colours.len()];
        let mut path = format!("M{:.1},{:.1}", px(0.0), py(0.0));
        for (x, y) in pts {
            let _ = write!(path, " L{:.1},{:.1}", px(*x), py(*y));
        }
        let _ = write!(
            s,
            r##"<path d="{path}" fill="none" stroke="{c}" stroke-width="2"/><text x="{:.1}" y="{:.1}" fill="{c}">{name}</text>"##,
            pad + 8.0,
            pad + 16.0 + 14.0 * i as f64
        );
    }
    let _ = write!(
        s,
        r##"<text x="{pad}" y="{:.1}">share of cells revalidated, riskiest first →</text><text x="4" y="{:.1}">caught</text></svg>"##,
        h - 10.0,
        pad - 8.0
    );
    s.push('\n');
    s
}

/// STUDY.md, with its plots written beside it under `study/`.
pub fn write(study: &Study, md_path: &Path, command: &str) -> Result<()> {
    let dir = md_path.parent().unwrap_or(Path::new(".")).join("study");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let published = |f: &str| match f {
        "quantization" => Some(1.46),
        "LoRA" | "merged LoRA" => Some(48.5),
        _ => None,
    };
    let bars: Vec<(String, f64, Option<f64>)> = study
        .by_family
        .iter()
        .map(|(f, r)| (f.clone(), r.pct(), published(f)))
        .collect();
    let save = |name: &str, svg: String| -> Result<()> {
        let p = dir.join(name);
        std::fs::write(&p, svg).map_err(|e| Error::io(&p, e))
    };
    save(
        "families.svg",
        svg_bars("Big-drop rate by update family (red: published)", &bars),
    )?;
    let concept_bars: Vec<(String, f64, Option<f64>)> = study
        .by_concept
        .iter()
        .map(|(k, ft, _)| {
            let p = match k.as_str() {
                "privacy_pii" => Some(57.1),
                "refusal_compliance" => Some(7.9),
                _ => None,
            };
            (k.clone(), ft.pct(), p)
        })
        .collect();
    save(
        "concepts.svg",
        svg_bars(
            "Big-drop rate by concept, fine-tuning-style updates (red: published)",
            &concept_bars,
        ),
    )?;
    let curves: Vec<(String, Vec<(f64, f64)>)> = study
        .predictor
        .held_out
        .iter()
        .map(|h| (format!("leave one {} out", h.by), h.triage.clone()))
        .collect();
    save("triage.svg", svg_triage(&curves))?;

    let mut s = String::new();
    let n_cells = study.cells.len();
    let n_cond = study.conditions.len();
    let _ = writeln!(
        s,
        "# The staleness study, reproduced with probegate\n\n\
         Generated by `{command}` from full-revalidation reports of the zoo \
         (`probegate study grid`): {n_cond} model × condition runs, {n_cells} cells \
         (model × condition × monitor; every monitor of the shipped suites, six concepts at three depths), \
         ground truth from labeled revalidation of every cell. A big drop is ΔAUROC ≤ −0.05. \
         Published figures are Duan (2026), \"Do Activation Monitors Survive Model Updates?\". \
         The grid was not tuned to agree with them.\n"
    );
    let _ = writeln!(s, "Models: {}.\n", study.models.join(", "));
    let _ = writeln!(
        s,
        "To reproduce from a clean clone (the zoo takes about 40 and 60 minutes to build on 2 cores, \
         the grid 3–6 minutes per condition):\n\n```sh\nscripts/fetch-models.sh\nprobegate zoo build\n\
         for m in smollm2 gemma3; do\n  probegate study grid --zoo ~/.cache/probegate/zoo/$m --monitors monitors/$m \\\n    \
         --history grid/$m.jsonl --reports grid/reports-$m\ndone\n\
         probegate study report --reports grid/reports-smollm2 --reports grid/reports-gemma3 --out STUDY.md\n```\n"
    );

    let _ = writeln!(s, "## Update families\n\n![families](study/families.svg)\n");
    let _ = writeln!(
        s,
        "| family | cells | median ΔAUROC | big drops | published |\n| --- | ---: | ---: | ---: | --- |"
    );
    for (f, r) in &study.by_family {
        let _ = writeln!(
            s,
            "| {f} | {} | {} | {}/{} = {:.1}% | {} |",
            r.cells,
            f3(r.median_delta),
            r.big_drops,
            r.cells,
            r.pct(),
            published_family(f)
        );
    }
    let _ = writeln!(
        s,
        "\nBy model:\n\n| family | model | cells | median ΔAUROC | big drops |\n| --- | --- | ---: | ---: | ---: |"
    );
    for (f, m, r) in &study.by_family_model {
        let _ = writeln!(
            s,
            "| {f} | {m} | {} | {} | {:.1}% |",
            r.cells,
            f3(r.median_delta),
            r.pct()
        );
    }

    let _ = writeln!(
        s,
        "\n## Monitor concepts\n\n![concepts](study/concepts.svg)\n\n\
         | concept | fine-tuning-style updates: big drops | all updates: big drops | published |\n| --- | ---: | ---: | --- |"
    );
    for (k, ft, all) in &study.by_concept {
        let p = match k.as_str() {
            "privacy_pii" => "57.1% (most fragile)",
            "refusal_compliance" => "7.9% (most stable)",
            _ => "",
        };
        let _ = writeln!(
            s,
            "| {k} | {}/{} = {:.1}% | {}/{} = {:.1}% | {p} |",
            ft.big_drops,
            ft.cells,
            ft.pct(),
            all.big_drops,
            all.cells,
            all.pct()
        );
    }

    let _ = writeln!(
        s,
        "\n## NF4 alone against QLoRA\n\n| condition | cells | median ΔAUROC | big drops |\n| --- | ---: | ---: | ---: |"
    );
    for (k, r) in &study.nf4_vs_qlora {
        let _ = writeln!(
            s,
            "| {k} | {} | {} | {:.1}% |",
            r.cells,
            f3(r.median_delta),
            r.pct()
        );
    }
    let _ = writeln!(s, "\nPublished: QLoRA hurts more than NF4 alone.\n");

    let p = &study.predictor;
    let _ = writeln!(
        s,
        "## The predictor\n\nLogistic regression from pre-deployment features to P(stale) \
         (`src/risk.rs`), evaluated out of fold on these cells ({} cells, {} stale): \
         pooled held-out AUROC, against weight change alone and family alone.\n\n\
         | held out | risk model | weight change alone | family alone | folds |\n| --- | ---: | ---: | ---: | --- |",
        p.rows, p.stale
    );
    for h in &p.held_out {
        let _ = writeln!(
            s,
            "| one {} | {} | {} | {} | {} |",
            h.by,
            auc(h.auroc.get("risk_model").unwrap_or(&None)),
            auc(h.auroc.get("weight_change_alone").unwrap_or(&None)),
            auc(h.auroc.get("family_alone").unwrap_or(&None)),
            h.folds.join(", ")
        );
    }
    let _ = writeln!(
        s,
        "\n![triage](study/triage.svg)\n\nTriage: share of stale cells caught when only the top k% by predicted risk are revalidated.\n\n| k | {} |\n| --- |{}",
        p.held_out.iter().map(|h| format!("leave one {} out", h.by)).collect::<Vec<_>>().join(" | "),
        " ---: |".repeat(p.held_out.len())
    );
    for i in 0..10 {
        let k = p
            .held_out
            .first()
            .and_then(|h| h.triage.get(i))
            .map(|t| t.0)
            .unwrap_or(0.0);
        let cols: Vec<String> = p
            .held_out
            .iter()
            .map(|h| {
                h.triage
                    .get(i)
                    .map(|t| format!("{:.0}%", 100.0 * t.1))
                    .unwrap_or_default()
            })
            .collect();
        let _ = writeln!(s, "| {:.0}% | {} |", 100.0 * k, cols.join(" | "));
    }

    let _ = writeln!(
        s,
        "\n## Realignment\n\n{} stale cells (ΔAUROC ≤ −0.05); realignment ran on {} of them \
         (it runs on monitors stale under the policy, and the policy's thresholded limits are \
         not the same test as ΔAUROC). A cell counts as repaired by a method when the repaired \
         monitor's labeled AUROC is back within 0.05 of the base AUROC.\n\n\
         | method | stale cells repaired |\n| --- | ---: |",
        study.stale_cells, study.stale_with_realignment
    );
    for (m, k, n) in &study.realign_methods {
        let _ = writeln!(
            s,
            "| {m:?} | {k}/{n} = {:.1}% |",
            100.0 * *k as f64 / (*n).max(1) as f64
        );
    }
    let _ = writeln!(
        s,
        "| the label-free choice | {}/{} = {:.1}% |\n| best method in hindsight (labels) | {}/{} = {:.1}% |\n",
        study.chosen_repaired,
        study.stale_with_realignment,
        100.0 * study.chosen_repaired as f64 / study.stale_with_realignment.max(1) as f64,
        study.any_method_repaired,
        study.stale_with_realignment,
        100.0 * study.any_method_repaired as f64 / study.stale_with_realignment.max(1) as f64
    );
    let _ = writeln!(
        s,
        "Where each stale cell ended up under the ladder its run used (the policy's verdict, \
         thresholded metrics included):\n\n| outcome | cells |\n| --- | ---: |"
    );
    for (k, v) in &study.rungs {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    let _ = writeln!(
        s,
        "\nPublished: every repair-relevant stale cell repaired by label-free realignment.\n"
    );

    let _ = writeln!(
        s,
        "## The gate on the zoo\n\nEach full-revalidation report replayed as the budgeted gate would run it \
         under `policies/default.toml` (riskiest and critical monitors first, within the budget). A false \
         pass is a candidate the budgeted gate passes while a critical monitor is stale and unrepaired \
         under full revalidation.\n\n\
         | model | condition | diff names it | stale | repaired | full verdict | budgeted verdict | examples used / full | false pass | ladder | seconds |\n\
         | --- | --- | --- | ---: | ---: | --- | --- | --- | --- | --- | ---: |"
    );
    let (mut used, mut full, mut fp, mut rep) = (0usize, 0usize, 0usize, 0usize);
    for c in &study.conditions {
        used += c.examples_used;
        full += c.examples_full;
        fp += c.false_pass as usize;
        rep += c.repaired;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {}/{} | {} | {} | {:.0} |",
            c.model,
            c.condition,
            c.diff_family,
            c.stale,
            c.repaired,
            c.full_verdict.as_str(),
            c.budgeted_verdict.as_str(),
            c.examples_used,
            c.examples_full,
            if c.false_pass { "**yes**" } else { "no" },
            c.ladder,
            c.seconds
        );
    }
    let _ = writeln!(
        s,
        "\nFalse passes: {fp} of {}. The default budget spent {used} of {full} labeled examples a full \
         revalidation would run ({:.1}%). Monitors repaired: {rep}.\n",
        study.conditions.len(),
        100.0 * used as f64 / full.max(1) as f64
    );
    std::fs::write(md_path, s).map_err(|e| Error::io(md_path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_follow_condition_names() {
        assert_eq!(study_family("qlora-r8-attn-mlp-chat"), "QLoRA");
        assert_eq!(study_family("merged-lora-r8-attn-chat"), "merged LoRA");
        assert_eq!(study_family("lora-r32-attn-support"), "LoRA");
        assert_eq!(study_family("full-chat"), "full fine-tune");
        assert_eq!(study_family("q4_0"), "quantization");
        assert_eq!(study_family("identical"), "identical");
    }

    #[test]
    fn median_and_rate() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn svg_marks_published_figures() {
        let s = svg_bars("t", &[("LoRA".into(), 40.0, Some(48.5))]);
        assert!(s.starts_with("<svg") && s.contains("published 48.5%") && s.contains("40.0%"));
    }
}
