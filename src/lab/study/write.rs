//! The study's Markdown and its inline SVG charts.

use std::fmt::Write as _;
use std::path::Path;

use super::claims::claims_section;
use super::honest::{Honest, Interval, StaleRow};
use super::*;
use crate::gate::risk::HeldOut;

fn f3(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else {
        format!("{x:+.4}")
    }
}

/// A rate's cells and median ΔAUROC: two columns of the family tables.
fn cells_median(r: &Rate) -> String {
    format!("{} | {}", r.cells, f3(r.median_delta))
}

/// A rate's big drops as `k/n = p%`.
fn drops(r: &Rate) -> String {
    format!("{}/{} = {:.1}%", r.big_drops, r.cells, r.pct())
}

/// One table row per fold of `first`: the risk model's held-out AUROC
/// fitted on one feature set and, beside it, on another (`second`, the
/// same folds).
fn model_auroc_rows(s: &mut String, first: &[HeldOut], second: &[HeldOut]) {
    let get = |x: &HeldOut| auc(x.auroc.get("risk_model").unwrap_or(&None));
    for a in first {
        let b = second.iter().find(|x| x.by == a.by);
        let _ = writeln!(
            s,
            "| one {} | {} | {} |",
            a.by,
            get(a),
            b.map(get).unwrap_or_default()
        );
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

/// One held-out scheme as a table row: risk model, baselines, folds.
fn held_out_row(label: &str, h: &HeldOut) -> String {
    let get = |k: &str| auc(h.auroc.get(k).unwrap_or(&None));
    format!(
        "| {label} | {} | {} | {} | {} |\n",
        get("risk_model"),
        get("weight_change_alone"),
        get("family_alone"),
        h.folds.join(", ")
    )
}

/// Triage curves as a table, one column per held-out scheme.
fn triage_table(cols: &[(String, &HeldOut)]) -> String {
    let mut s = format!(
        "| k | {} |\n| --- |{}\n",
        cols.iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(" | "),
        " ---: |".repeat(cols.len())
    );
    for i in 0..10 {
        let k = cols
            .first()
            .and_then(|(_, h)| h.triage.get(i))
            .map(|t| t.0)
            .unwrap_or(0.0);
        let cells: Vec<String> = cols
            .iter()
            .map(|(_, h)| {
                h.triage
                    .get(i)
                    .map(|t| format!("{:.0}%", 100.0 * t.1))
                    .unwrap_or_default()
            })
            .collect();
        let _ = writeln!(s, "| {:.0}% | {} |", 100.0 * k, cells.join(" | "));
    }
    s
}

/// A rate and its interval, in percent.
fn interval(i: &Interval) -> String {
    format!(
        "{}/{} = {:.1}% [{:.1}, {:.1}]",
        i.stale,
        i.cells,
        100.0 * i.rate,
        100.0 * i.lo,
        100.0 * i.hi
    )
}

fn stale_table(s: &mut String, first: &str, rows: &[&StaleRow]) {
    let _ = writeln!(
        s,
        "| {first} | cells | updates | ranking: ΔAUROC ≤ −0.05 | operating point: BA, TPR or FPR at the threshold | policy, as recorded | one but not the other |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            r.cells,
            r.clusters,
            interval(&r.ranking),
            interval(&r.operating_point),
            interval(&r.policy),
            r.disagree
        );
    }
}

/// The honest-fold and two-staleness sections, from history rows alone.
pub fn honest_sections(h: &Honest) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## Honest folds\n\n\
         The same predictor (`src/gate/risk/`, the fitting `probegate risk fit` uses, L2 1.0) \
         out of fold on {} cells ({} stale), with folds that keep every condition derived from an \
         adapter (merged, in any storage) with the adapter it comes from. {} cells are merged \
         conditions; in {} of them ΔAUROC equals their source's within 1e-6, so under the naive \
         folds a merged copy in training predicts its own original. Grouped k-fold deals source \
         groups (one recipe on every model) into {} folds, shuffled with seed {}.\n\n\
         | held out | risk model | weight change alone | family alone | folds |\n| --- | ---: | ---: | ---: | --- |",
        h.rows, h.stale, h.derived, h.derived_copies, h.k_folds, h.seed
    );
    for n in &h.naive {
        s.push_str(&held_out_row(&format!("naive: one {}", n.by), n));
    }
    for n in &h.honest {
        s.push_str(&held_out_row(&format!("one {}", n.by), n));
    }
    let _ = write!(
        s,
        "\nTriage on the honest folds: share of stale cells caught when only the top k% by \
         predicted risk are revalidated.\n\n{}",
        triage_table(
            &h.honest
                .iter()
                .map(|n| (format!("one {}", n.by), n))
                .collect::<Vec<_>>()
        )
    );
    if !h.honest_policy.is_empty() {
        let stale = h.stale_policy;
        let _ = writeln!(
            s,
            "\nThe gate fails a monitor on the policy's staleness, which also counts a moved \
             operating point, so the gate's model is fitted to predict that (`probegate risk fit \
             --target policy`, the default): the same folds with that target \
             ({stale} of {} cells stale).\n\n\
             | held out | risk model | weight change alone | family alone | folds |\n| --- | ---: | ---: | ---: | --- |",
            h.rows
        );
        for n in &h.honest_policy {
            s.push_str(&held_out_row(&format!("one {}", n.by), n));
        }
    }
    if !h.honest_policy_no_corpus.is_empty() {
        let _ = writeln!(
            s,
            "\n### What the corpus features add\n\n\
             Five features (`{}`) read the unlabeled corpus: two forward passes over it per run. \
             A model fitted without them (`probegate risk fit --features …`) lets `check` skip \
             the corpus unless its ladder realigns a monitor. The same folds, policy target:\n\n\
             | held out | all features | without the corpus's |\n| --- | ---: | ---: |",
            risk::CORPUS_FEATURES.join("`, `")
        );
        model_auroc_rows(&mut s, &h.honest_policy, &h.honest_policy_no_corpus);
    }
    let _ = writeln!(
        s,
        "\n## Two kinds of staleness\n\n\
         **Ranking**: ΔAUROC ≤ −0.05, the study's big drop and what the honest folds above predict. \
         **Operating point**: balanced accuracy, TPR or FPR at the monitor's own threshold past \
         the policy's limits, as the run recorded it (history written before that was recorded: \
         balanced accuracy alone falling by more than {}, the policy's \
         `max_balanced_accuracy_drop`). **Policy, as recorded**: stale under any limit of the \
         policy the run used (AUROC drop, minimum AUROC, balanced accuracy, TPR, FPR). Rates carry a 95% percentile bootstrap interval \
         ({} resamples, seed {}) that resamples updates (model × source group), not cells: \
         the monitors of one update share it and a merged copy repeats its source, so cells are \
         not independent and resampling them would give intervals too narrow. \
         `updates` counts those clusters.\n\n### By family\n",
        h.operating_point_limit, h.resamples, h.seed
    );
    stale_table(&mut s, "family", &h.by_family.iter().collect::<Vec<_>>());
    let _ = writeln!(
        s,
        "\n### By concept\n\nEvery update but the identical base, each source update once \
         (merged conditions left out: they are in their family's row above).\n"
    );
    let concepts: Vec<&StaleRow> = h.by_concept.iter().chain([&h.all_updates]).collect();
    stale_table(&mut s, "concept", &concepts);
    if !h.honest_v1_features.is_empty() {
        let n = crate::gate::risk::FEATURE_NAMES.len();
        let _ = writeln!(
            s,
            "\n### What the concept-aware features add\n\n\
             The same honest folds, fitted on the first version's 14 features (no `change_at`, \
             no score change on the concept's own texts) and on all {n}.\n\n\
             | held out | 14 features | {n} features |\n| --- | ---: | ---: |"
        );
        model_auroc_rows(&mut s, &h.honest_v1_features, &h.honest);
    }
    if !h.repairs.is_empty() {
        let _ = writeln!(
            s,
            "\n## Repairs judged on what broke\n\n\
             Every rung of the ladder was tried alone from the original monitor on every stale \
             cell (`study grid` runs with `every_rung`). A repair counts for a definition when the \
             repaired monitor meets the limit that definition broke: ranking when its ΔAUROC \
             against the base figures is above −0.05 again, operating point when balanced \
             accuracy, TPR and FPR at its threshold are within the policy's limits again. \
             A cell is **repair-relevant** when a probe retrained on the candidate's activations \
             (the whole training split, with labels) meets that limit: the concept is still \
             linearly readable at that block, so a cheaper repair can exist. Intervals as above."
        );
        for t in &h.repairs {
            let _ = writeln!(
                s,
                "\n### {}: {} stale cells, {} repair-relevant\n\n\
                 | method | repair-relevant cells repaired | all stale cells repaired |\n\
                 | --- | ---: | ---: |",
                t.definition.name(),
                t.stale,
                t.relevant
            );
            for (m, rel, all) in &t.methods {
                let _ = writeln!(s, "| {m} | {} | {} |", interval(rel), interval(all));
            }
            let _ = writeln!(
                s,
                "\nRealignment against the whole policy on these {} cells: the label-free \
                 choice passes on {}, the best of its maps in hindsight (chosen with the \
                 test labels, which the gate never does) on {}.",
                t.stale, t.choice_passes, t.hindsight_passes
            );
        }
    }
    s
}

/// The honest sections alone, from history files (no reports needed).
pub fn write_history(h: &Honest, md_path: &Path, command: &str) -> Result<()> {
    let text = format!(
        "# Honest folds and both kinds of staleness\n\n\
         Generated by `{command}` from {} history rows (model × condition × monitor, \
         the rows `probegate study grid --history` writes). Rerunning the command writes \
         the same figures: every fold and bootstrap is seeded.\n\n{}",
        h.rows,
        honest_sections(h)
    );
    if let Some(dir) = md_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::write(md_path, text).map_err(|e| Error::io(md_path, e))
}

/// STUDY.md, with its plots written beside it under `study/`.
pub fn write(study: &Study, md_path: &Path, command: &str) -> Result<()> {
    let dir = md_path.parent().unwrap_or(Path::new(".")).join("study");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let published = |f: &str| match f {
        f if f.starts_with("quantization") => Some(1.46),
        f if f == "LoRA" || f.starts_with("merged LoRA") => Some(48.5),
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
        "From a clean clone this file is rebuilt in seconds from the grid's reports, which are \
         committed under study/v2:\n\n```sh\n{command} --out STUDY.md\n```\n\n\
         To rerun the grid itself, `scripts/study-v2.sh` fetches the models, builds the zoo where \
         it is missing (about 16 and 37 minutes on 2 cores), and runs it one condition at a time \
         so an interrupted run resumes (about 2–4 minutes per SmolLM2 condition and 4–9 per \
         Gemma 3 condition on 2 cores), then writes this file.\n"
    );

    s.push_str(&claims_section(study, &dir)?);
    s.push('\n');
    let _ = writeln!(s, "## Update families\n\n![families](study/families.svg)\n");
    let _ = writeln!(
        s,
        "| family | cells | median ΔAUROC | big drops | published |\n| --- | ---: | ---: | ---: | --- |"
    );
    for (f, r) in &study.by_family {
        let _ = writeln!(
            s,
            "| {f} | {} | {} | {} |",
            cells_median(r),
            drops(r),
            published_family(f)
        );
    }
    let _ = writeln!(
        s,
        "\nBy model:\n\n| family | model | cells | median ΔAUROC | big drops |\n| --- | --- | ---: | ---: | ---: |"
    );
    for (f, m, r) in &study.by_family_model {
        let _ = writeln!(s, "| {f} | {m} | {} | {:.1}% |", cells_median(r), r.pct());
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
        let _ = writeln!(s, "| {k} | {} | {} | {p} |", drops(ft), drops(all));
    }

    let _ = writeln!(
        s,
        "\n## NF4 alone against QLoRA\n\n| condition | cells | median ΔAUROC | big drops |\n| --- | ---: | ---: | ---: |"
    );
    for (k, r) in &study.nf4_vs_qlora {
        let _ = writeln!(s, "| {k} | {} | {:.1}% |", cells_median(r), r.pct());
    }
    let _ = writeln!(s, "\nPublished: QLoRA hurts more than NF4 alone.\n");

    let p = &study.predictor;
    let _ = writeln!(
        s,
        "## The predictor\n\nLogistic regression from pre-deployment features to P(stale) \
         (`src/gate/risk/`), evaluated out of fold on these cells ({} cells, {} stale): \
         pooled held-out AUROC, against weight change alone and family alone.\n\n\
         | held out | risk model | weight change alone | family alone | folds |\n| --- | ---: | ---: | ---: | --- |",
        p.rows, p.stale
    );
    for h in &p.held_out {
        s.push_str(&held_out_row(&format!("one {}", h.by), h));
    }
    let _ = write!(
        s,
        "\n![triage](study/triage.svg)\n\nTriage: share of stale cells caught when only the top k% by predicted risk are revalidated.\n\n{}",
        triage_table(&p.held_out.iter().map(|h| (format!("leave one {} out", h.by), h)).collect::<Vec<_>>())
    );
    s.push('\n');
    s.push_str(&honest_sections(&study.honest));

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

    s.push_str(&super::on_zoo::section(study));
    std::fs::write(md_path, s).map_err(|e| Error::io(md_path, e))?;
    Ok(())
}
