//! The staleness study, reproduced from probegate's own grid: every zoo
//! condition's full-revalidation report (`study grid --reports`) becomes
//! cells (model × condition × monitor), and this module turns them into the
//! published study's tables, the predictor's held-out quality, the
//! realignment figures and the gate's own figures on the zoo. Plain data in,
//! plain data and Markdown out.

pub mod grid;
pub mod honest;
pub mod on_zoo;
mod claims;
mod write;

pub use on_zoo::{load_runs, Condition, Runs};
pub use write::{honest_sections, svg_bars, svg_triage, write, write_history};

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::gate::policy::{Policy, RevalidationMode};
use crate::gate::repair::realign::Method;
use crate::gate::risk::{self, RiskModel};
use crate::gate::{Report, Status};

/// The study's threshold for a "big drop".
pub const BIG_DROP: f64 = -0.05;

/// Update families as the study groups them (by zoo condition, not by what
/// the diff names: the identical condition is its own row). Quantization is
/// split by bit width: on the v1 grid every stale quantization cell is
/// 4-bit, and pooling hid that 8-bit gives none.
pub fn study_family(condition: &str) -> &'static str {
    if condition == "identical" {
        "identical"
    } else if condition.starts_with("merged-bf16-") {
        "merged LoRA, bf16"
    } else if condition.starts_with("merged-gguf-") {
        "merged LoRA, GGUF"
    } else if condition.starts_with(MERGED) {
        "merged LoRA"
    } else if condition.starts_with("qlora") {
        "QLoRA"
    } else if condition.starts_with("lora") {
        "LoRA"
    } else if condition.starts_with("full") {
        "full fine-tune"
    } else {
        match quant_bits(condition) {
            Some(8) => "quantization 8-bit",
            Some(4) => "quantization 4-bit",
            _ => "quantization",
        }
    }
}

/// The bit width a quantization condition names: the first digits of
/// `int8`, `q8_0`, `nf4`, `q4_0`, `q4_k_m`.
fn quant_bits(condition: &str) -> Option<u32> {
    let digits: String = condition
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// The prefix of a condition derived from another by merging (v1:
/// `merged-lora-…`; v2 adds the storage: `merged-bf16-lora-…`).
const MERGED: &str = "merged-";

/// Where a trained update starts its name: a condition derived from one
/// (merged, then stored some way) belongs with it.
const SOURCE_KINDS: [&str; 3] = ["lora", "qlora", "full"];

/// The trained update a condition comes from: `merged-lora-r8-attn-chat`
/// and `merged-bf16-lora-r8-attn-chat` both come from `lora-r8-attn-chat`;
/// every other condition is its own source. Held-out figures must keep a
/// source and everything derived from it in one fold, or a copy in training
/// predicts its own original.
pub fn source_group(condition: &str) -> String {
    let Some(rest) = condition.strip_prefix(MERGED) else {
        return condition.to_string();
    };
    let tokens: Vec<&str> = rest.split('-').collect();
    match tokens.iter().position(|t| SOURCE_KINDS.contains(t)) {
        Some(i) => tokens[i..].join("-"),
        // A merge of something we cannot name: its own group, not a guess.
        None => condition.to_string(),
    }
}

/// Table order; a family with no cells is left out.
const FAMILIES: [&str; 10] = [
    "identical",
    "quantization 8-bit",
    "quantization 4-bit",
    "quantization",
    "LoRA",
    "merged LoRA, bf16",
    "merged LoRA, GGUF",
    "merged LoRA",
    "QLoRA",
    "full fine-tune",
];

/// The published figures (Duan 2026) shown beside ours.
fn published_family(f: &str) -> &'static str {
    match f {
        "quantization 8-bit" | "quantization 4-bit" | "quantization" => {
            "median −0.0021, 1.46% big drops (all bit widths)"
        }
        f if f == "LoRA" || f.starts_with("merged LoRA") => "LoRA family 43.2–53.8% big drops",
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

pub struct Loaded {
    pub reports: Vec<(String, PathBuf, Report)>,
}

/// Every `<dir>/<condition>/report.json` under the given directories.
pub fn load(dirs: &[PathBuf]) -> Result<Loaded> {
    let mut reports = Vec::new();
    for d in dirs {
        for s in grid::report_dirs(d)? {
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

pub(crate) fn ladder(r: &Report) -> String {
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

pub(crate) fn median(v: &mut [f64]) -> f64 {
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

/// The fine-tuning-style families: every family from LoRA on.
const FINETUNE: &[&str] = FAMILIES.split_at(4).1;

/// Which risk model ordered the replayed budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayModel {
    /// Each model's conditions with one fitted on the other models' rows.
    LeaveModelOut,
    /// The model the caller gave (the shipped one), for every condition.
    Given,
}

#[derive(Debug, Clone, Serialize)]
pub struct Study {
    pub models: Vec<String>,
    /// Replayed with [`Study::replay_model`].
    pub conditions: Vec<Condition>,
    pub replay_model: ReplayModel,
    /// The policy's name and revalidation mode; the replay always runs
    /// whole-set mode, which a sequential policy's runs stand beside.
    pub policy_name: String,
    pub mode: RevalidationMode,
    /// The policy's `revalidation.screen`.
    pub screen: bool,
    /// The policy's `budget.stop_at_verdict`: complete runs are replayed as
    /// stopping at their verdict.
    pub stop_at_verdict: bool,
    /// Each condition run for real under the policy (`study grid --budgeted`),
    /// when those runs were given.
    pub runs: Option<Vec<Condition>>,
    /// The same replay with the given model for every condition.
    pub given_false_passes: usize,
    pub given_examples_used: usize,
    /// The same replay at other budgets, with the policy's critical list
    /// and without it.
    pub sweep: Vec<on_zoo::SweepRow>,
    pub by_family: Vec<(String, Rate)>,
    pub by_family_model: Vec<(String, String, Rate)>,
    pub by_concept: Vec<(String, Rate, Rate)>,
    pub nf4_vs_qlora: Vec<(String, Rate)>,
    pub predictor: risk::Evaluation,
    /// Folds that keep merged copies with their source, and both kinds of staleness.
    pub honest: honest::Honest,
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

/// Each name once, sorted.
fn distinct<'a>(names: impl Iterator<Item = &'a String>) -> Vec<String> {
    let set: std::collections::BTreeSet<&String> = names.collect();
    set.into_iter().cloned().collect()
}

/// The study of `l`'s full reports under `policy`; with `runs`, the same
/// conditions run for real under it, which a sequential policy needs.
pub fn build(l: &Loaded, policy: &Policy, model: &RiskModel, runs: Option<&Runs>) -> Result<Study> {
    let sequential = policy.revalidation.mode == RevalidationMode::Sequential;
    let runs = match runs {
        Some(r) => Some(on_zoo::run_conditions(l, policy, r)?),
        None if sequential => return Err(grid::no_replay(policy)),
        None => None,
    };
    // The replay is of whole-set mode, whatever the policy's own mode.
    let mut whole = policy.clone();
    whole.revalidation.mode = RevalidationMode::Whole;
    let (policy_name, mode) = (policy.name.clone(), policy.revalidation.mode);
    let screen = policy.revalidation.screen;
    let stop_at_verdict = policy.budget.stop_at_verdict;
    let policy = &whole;
    let cells = cells(l);
    let models = distinct(cells.iter().map(|c| &c.model));
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
    let concepts = distinct(cells.iter().map(|c| &c.concept));
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
        .flat_map(|(cond, _, r)| {
            // The condition as the cells name it (the report's, else its
            // directory's), so the honest folds group the same rows.
            r.history(&r.model_id()).into_iter().map(|mut h| {
                h.condition.get_or_insert_with(|| cond.clone());
                h
            })
        })
        .collect();
    let predictor = risk::evaluate(&rows, risk::Target::Ranking, 1.0);
    // The shipped model is fitted on this grid, so a replay with it is in
    // sample. The replay that counts uses, for each model's conditions, a
    // model refitted (as `risk fit` does) without that model's rows, as a
    // user's new base would meet it; where that cannot be fitted (one model
    // only), the given model.
    let held_out: BTreeMap<String, RiskModel> = models
        .iter()
        .filter_map(|m| {
            let others: Vec<&risk::HistoryRow> = rows.iter().filter(|r| &r.model != m).collect();
            risk::fit(
                &others,
                risk::Target::Policy,
                1.0,
                &format!("grid without {m}"),
            )
            .ok()
            .map(|f| (m.clone(), f))
        })
        .collect();
    let replay_model = if held_out.len() == models.len() {
        ReplayModel::LeaveModelOut
    } else {
        ReplayModel::Given
    };
    let given = on_zoo::conditions(l, policy, &|_: &str| model);
    let replayed = match replay_model {
        ReplayModel::LeaveModelOut => {
            on_zoo::conditions(l, policy, &|m: &str| held_out.get(m).unwrap_or(model))
        }
        ReplayModel::Given => given.clone(),
    };
    let sweep = on_zoo::sweep(
        l,
        policy,
        &|m: &str| held_out.get(m).unwrap_or(model),
        model,
    );
    let honest = honest::analyse(&rows, policy.metrics.max_balanced_accuracy_drop);
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
    Ok(Study {
        models,
        conditions: replayed,
        replay_model,
        mode,
        screen,
        policy_name,
        stop_at_verdict,
        runs,
        given_false_passes: given.iter().filter(|c| c.compared.false_pass).count(),
        given_examples_used: given.iter().map(|c| c.compared.examples_used).sum(),
        sweep,
        by_family,
        by_family_model,
        by_concept,
        nf4_vs_qlora,
        predictor,
        honest,
        realign_methods,
        stale_cells: stale.len(),
        stale_with_realignment: with_re.len(),
        chosen_repaired,
        any_method_repaired,
        rungs,
        cells,
    })
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
        assert_eq!(study_family("identical"), "identical");
        assert_eq!(FINETUNE.first(), Some(&"LoRA"));
        // v2 merged storage names stay merged, never fall through to quantization.
        // As they ship: rounded to bf16, or requantized to the base's GGUF type.
        assert_eq!(
            study_family("merged-bf16-lora-r8-attn-chat"),
            "merged LoRA, bf16"
        );
        assert_eq!(
            study_family("merged-gguf-lora-r8-attn-chat"),
            "merged LoRA, GGUF"
        );
        assert_eq!(study_family("merged-q8_0-lora-r8-attn-chat"), "merged LoRA");
    }

    #[test]
    fn quantization_splits_into_eight_and_four_bit() {
        for c in ["int8", "q8_0"] {
            assert_eq!(study_family(c), "quantization 8-bit", "{c}");
        }
        for c in ["nf4", "q4_0", "q4_k_m"] {
            assert_eq!(study_family(c), "quantization 4-bit", "{c}");
        }
        assert_eq!(study_family("q5_k"), "quantization");
        assert_eq!(study_family("gptq"), "quantization");
    }

    #[test]
    fn derived_conditions_group_with_their_source() {
        for (c, src) in [
            ("merged-lora-r8-attn-chat", "lora-r8-attn-chat"),
            ("merged-bf16-lora-r8-attn-chat", "lora-r8-attn-chat"),
            (
                "merged-q8_0-lora-r32-attn-mlp-support",
                "lora-r32-attn-mlp-support",
            ),
            (
                "merged-q4_k_m-qlora-r8-attn-mlp-chat",
                "qlora-r8-attn-mlp-chat",
            ),
            ("merged-bf16-full-chat", "full-chat"),
            ("lora-r8-attn-chat", "lora-r8-attn-chat"),
            ("q8_0", "q8_0"),
            ("identical", "identical"),
            ("merged-something", "merged-something"),
        ] {
            assert_eq!(source_group(c), src, "{c}");
        }
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
