//! Reports of a `check` run: report.json (schema `probegate.report` v1,
//! docs/report.md), report.md (GitHub-flavoured: verdict first, fits a
//! job summary or PR comment) and a self-contained report.html with plots.
//! The plots are small hand-written SVG: no plotting crate emits
//! dependency-free inline SVG, and three charts do not justify one.

use std::fmt::Write as _;
use std::path::Path;

use crate::error::{Error, Result};
use crate::gate::revalidate::EvalResult;
use crate::monitor::Monitor;

pub mod junit;
pub mod merge;
pub mod rejudge;
mod types;

pub use types::*;

/// report.md, report.html and report.json under `out`, each written
/// atomically and report.json last: what readers check first is never
/// newer than the pages beside it.
pub fn write_all(out: &Path, r: &Report) -> Result<()> {
    let write = |name: &str, text: String| -> Result<()> {
        crate::util::write_atomic(&out.join(name), text.as_bytes())
    };
    write("report.md", markdown(r))?;
    write("report.html", html(r))?;
    write(
        "report.json",
        serde_json::to_string_pretty(r).unwrap_or_default(),
    )
}

/// What a run publishes in its output directory, report.json last: the
/// only names probegate ever removes there (`--out .` is allowed).
pub const OUTPUTS: &[&str] = &["repaired", "report.html", "report.md", "report.json"];

/// Where a run's outputs are assembled before they are moved into place.
const STAGING: &str = ".probegate-staging";

/// Removes an earlier run's outputs, so a run that crashes or is killed
/// leaves no verdict it did not reach. A link is removed, not followed.
pub fn clear_outputs(out: &Path) -> Result<()> {
    for name in OUTPUTS.iter().chain(&[STAGING]) {
        let p = out.join(name);
        let r = match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p),
            Ok(_) => std::fs::remove_file(&p),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => Err(e),
        };
        r.map_err(|e| Error::io(&p, e))?;
    }
    Ok(())
}

/// Writes report.json, report.md, report.html and the repaired monitors
/// (each under `repaired/<name>`): assembled in a staging directory, then
/// moved in with report.json last, so a reader never sees a report.json
/// beside another run's files.
pub fn write_outputs(out: &Path, report: &Report, repaired: &[Monitor]) -> Result<()> {
    let stage = out.join(STAGING);
    clear_outputs(out)?;
    std::fs::create_dir_all(&stage).map_err(|e| Error::io(&stage, e))?;
    for m in repaired {
        m.save(&stage.join("repaired").join(&m.meta.name))?;
    }
    write_all(&stage, report)?;
    for name in OUTPUTS {
        let from = stage.join(name);
        if from.exists() {
            let to = out.join(name);
            std::fs::rename(&from, &to).map_err(|e| Error::io(&to, e))?;
        }
    }
    std::fs::remove_dir(&stage).map_err(|e| Error::io(&stage, e))
}

/// What is written when the gate could not evaluate: never a file that
/// reads like a pass. Every output of an earlier run is removed first.
pub fn write_error_report(out: &Path, err: &str) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    clear_outputs(out)?;
    let json = ErrorReport::new(err);
    crate::util::write_atomic(
        &out.join("report.json"),
        serde_json::to_string_pretty(&json)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    // The error quotes user input (paths, tensor names): a fence longer than
    // any backtick run in it, so it cannot close early and forge a heading.
    let md = format!(
        "## probegate: could not evaluate\n\n{}\n\nThis is not a pass.\n",
        fenced(err)
    );
    crate::util::write_atomic(&out.join("report.md"), md.as_bytes())
}

pub fn verdict_line(r: &Report) -> String {
    let c = r.counts();
    let n = |k: &str| c.get(k).copied().unwrap_or(0);
    let v = match r.verdict {
        Verdict::Pass => "PASS",
        Verdict::PassWithRepairs => "PASS with repaired monitors",
        Verdict::Fail => "FAIL",
    };
    format!(
        "{v}: {} healthy, {} repaired, {} stale, {} unverified of {} monitors ({:?} update)",
        n("healthy"),
        n("repaired"),
        n("stale"),
        n("unverified"),
        r.monitors.len(),
        r.diff.family
    )
}

fn stop_word(s: crate::gate::revalidate::sequential::Stop) -> &'static str {
    use crate::gate::revalidate::sequential::Stop;
    match s {
        Stop::Healthy => "settled healthy",
        Stop::Stale => "settled stale",
        Stop::WholeSet => "whole set",
        Stop::Budget => "budget spent",
        Stop::Seconds => "time spent",
        Stop::Decided => "verdict decided",
        Stop::SameForward => "same forward pass as the base",
    }
}

/// The status cell; a monitor the verdict fails on for a reason other than
/// staleness (unverified under a rule that fails it, a repair the policy
/// does not accept) is marked as failing, as a stale one is.
fn status_word(s: Status, fails: bool) -> &'static str {
    match (s, fails) {
        (Status::Healthy, _) => "healthy",
        (Status::Repaired, false) => "repaired",
        (Status::Repaired, true) => "**repaired, not accepted**",
        (Status::Stale, _) => "**stale**",
        (Status::Unverified, false) => "unverified",
        (Status::Unverified, true) => "**unverified, fails**",
    }
}

/// Text from model files, adapters and error messages, made inert in
/// Markdown: one line (a newline could start a forged `## PASS` heading in a
/// PR comment), HTML and Markdown punctuation escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\r' => out.push(' '),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '#' | '|' | '~' | '!' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// An inline code span that no backtick in `text` can close early.
pub fn code(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    let ticks = "`".repeat(longest_backtick_run(&one_line) + 1);
    format!("{ticks} {one_line} {ticks}")
}

/// A fenced code block whose fence is longer than any backtick run inside.
pub fn fenced(text: &str) -> String {
    let fence = "`".repeat((longest_backtick_run(text) + 1).max(3));
    format!("{fence}\n{text}\n{fence}")
}

fn longest_backtick_run(text: &str) -> usize {
    text.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

/// How a verdict is shown, in one table: its Markdown icon, its HTML colour.
fn looks(v: Verdict) -> (&'static str, &'static str) {
    match v {
        Verdict::Pass => ("✅", "#2a7d2a"),
        Verdict::PassWithRepairs => ("🛠️", "#b07a00"),
        Verdict::Fail => ("❌", "#b22"),
    }
}

/// Where a rejudged report's run came from, for the markdown and HTML
/// reports: `code` writes a name as code in either.
fn rejudged_line(r: &Report, code: &dyn Fn(&str) -> String) -> Option<String> {
    r.rejudged.as_ref().map(|j| {
        format!(
            "Decided again by {}: the models ran under policy {} ({}), whose verdict was {}.",
            code("probegate report rejudge"),
            code(&j.policy),
            code(&j.source),
            j.verdict.as_str()
        )
    })
}

pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let (icon, _) = looks(r.verdict);
    let _ = writeln!(s, "## {icon} probegate: {}\n", verdict_line(r));
    let _ = writeln!(
        s,
        "{} → {} under policy {}\n",
        code(&r.base.reference),
        code(&r.candidate.reference),
        code(&r.policy.name)
    );
    if let Some(line) = rejudged_line(r, &code) {
        let _ = writeln!(s, "{line}\n");
    }
    if !r.reasons.is_empty() {
        let _ = writeln!(s, "**Why it failed**\n");
        for x in &r.reasons {
            let _ = writeln!(s, "- {}", escape(x));
        }
        s.push('\n');
    }
    if !r.warnings.is_empty() {
        let _ = writeln!(s, "**Warnings**\n");
        for x in &r.warnings {
            let _ = writeln!(s, "- {}", escape(x));
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "| monitor | block | risk | status | AUROC base → cand | bal. acc base → cand | repair |"
    );
    let _ = writeln!(s, "|---|---:|---:|---|---|---|---|");
    for m in &r.monitors {
        let crit = if m.critical { " ⚑" } else { "" };
        let (au, ba) = match &m.eval {
            Some(e) => (
                format!("{:.3} → {:.3}", e.base_auroc, e.auroc),
                format!(
                    "{:.3} → {:.3}",
                    e.base_balanced_accuracy, e.balanced_accuracy
                ),
            ),
            None => ("–".into(), "–".into()),
        };
        let repair = repair_summary(m);
        // Sequential revalidation: how many examples settled it, and how.
        let seen = m.sequential.as_ref().map_or(String::new(), |t| {
            format!(
                " ({}/{} examples, {})",
                t.examples,
                t.of,
                stop_word(t.stopped)
            )
        });
        let _ = writeln!(
            s,
            "| {}{crit} | {} | {:.2} | {}{seen} | {au} | {ba} | {repair} |",
            escape(&m.name),
            m.layer,
            m.risk.p_stale,
            status_word(m.status, r.fails(&m.name))
        );
    }
    let _ = writeln!(
        s,
        "\nRevalidation used {} of {} budgeted labeled examples ({} for every monitor){}. ⚑ critical.",
        r.budget.examples_used,
        r.budget.examples_limit,
        r.budget.examples_full,
        match r.policy.budget.repair_reserve {
            0 => String::new(),
            n => format!("; {n} of them are left to the repair ladder once a monitor is stale"),
        }
    );
    let _ = writeln!(s, "\n<details><summary>Diff evidence</summary>\n");
    for e in &r.diff.evidence {
        let _ = writeln!(s, "- {}", escape(e));
    }
    let _ = writeln!(s, "\n</details>");
    s
}

/// What the repair ladder did for one monitor, in a table cell.
fn repair_summary(m: &MonitorReport) -> String {
    // One rung: what it was, the repaired monitor's figures, and whether it passed.
    let rung = |what: String, after: &EvalResult, stale_after: &[String]| {
        let mark = if stale_after.is_empty() { "✓" } else { "✗" };
        format!(
            "{what}: AUROC {:.3}, bal. acc {:.3} {mark}",
            after.auroc, after.balanced_accuracy
        )
    };
    let mut parts = Vec::new();
    if let Some(x) = &m.realignment {
        let what = format!("realignment ({:?})", x.method);
        parts.push(rung(what, &x.after, &x.stale_reasons_after));
    }
    for (what, r) in [
        ("recalibration", &m.recalibration),
        ("retraining", &m.retraining),
    ] {
        if let Some(r) = r {
            let what = format!("{what} ({} labels)", r.examples);
            parts.push(rung(what, &r.after, &r.stale_reasons_after));
        }
    }
    parts.extend(m.skipped.iter().map(|x| format!("not tried: {x}")));
    parts.extend(m.ruled_out.iter().map(|x| format!("ruled out: {x}")));
    if m.not_climbed {
        parts.push(
            "ladder not climbed: the verdict was already fail (budget.stop_at_verdict)".into(),
        );
    }
    parts.join("; ")
}

fn esc(x: &str) -> String {
    x.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Bar chart of per-block relative weight change.
fn svg_blocks(r: &Report) -> String {
    let (w, h, pad) = (640.0, 180.0, 30.0);
    let n = r.diff.blocks.len().max(1) as f64;
    let max = r
        .diff
        .blocks
        .iter()
        .map(|b| b.rel_change)
        .fold(1e-12, f64::max);
    let bw = (w - 2.0 * pad) / n;
    let mut s = format!(
        r##"<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img"><title>Weight change by block</title>"##
    );
    for (i, b) in r.diff.blocks.iter().enumerate() {
        let bh = (h - 2.0 * pad) * b.rel_change / max;
        let _ = write!(
            s,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#4a78c2"><title>block {}: {:.5}</title></rect>"##,
            pad + i as f64 * bw,
            h - pad - bh,
            (bw - 1.0).max(1.0),
            bh,
            b.block,
            b.rel_change
        );
    }
    let _ = write!(
        s,
        r##"<text x="{pad}" y="{}" font-size="11">block 0 … {} — max ‖ΔW‖/‖W‖ {:.4}</text></svg>"##,
        h - 8.0,
        r.diff.blocks.len().saturating_sub(1),
        max
    );
    s
}

/// Scatter: predicted risk (x) against measured ΔAUROC (y).
fn svg_risk(r: &Report) -> String {
    let (w, h, pad) = (420.0, 260.0, 36.0);
    let pts: Vec<(f64, f64, &str, bool)> = r
        .monitors
        .iter()
        .filter_map(|m| {
            m.eval.as_ref().map(|e| {
                (
                    m.risk.p_stale,
                    e.delta_auroc,
                    m.name.as_str(),
                    m.status != Status::Healthy,
                )
            })
        })
        .collect();
    let lo = pts.iter().map(|p| p.1).fold(-0.1, f64::min);
    let hi = pts.iter().map(|p| p.1).fold(0.02, f64::max);
    let y = |v: f64| pad + (hi - v) / (hi - lo) * (h - 2.0 * pad);
    let x = |v: f64| pad + v * (w - 2.0 * pad);
    let mut s = format!(
        r##"<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img"><title>Predicted risk against measured ΔAUROC</title>"##
    );
    let _ = write!(
        s,
        r##"<line x1="{pad}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#c33" stroke-dasharray="4"/>"##,
        w - pad,
        y(-r.policy.metrics.max_auroc_drop),
        y(-r.policy.metrics.max_auroc_drop)
    );
    for (px, py, name, bad) in &pts {
        let _ = write!(
            s,
            r##"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{}"><title>{}: risk {:.2}, ΔAUROC {:+.3}</title></circle>"##,
            x(*px),
            y(*py),
            if *bad { "#c33" } else { "#3a3" },
            esc(name),
            px,
            py
        );
    }
    let _ = write!(
        s,
        r##"<text x="{pad}" y="{}" font-size="11">predicted P(stale) 0 → 1; ΔAUROC {lo:+.2} … {hi:+.2}; dashed: −max_auroc_drop</text></svg>"##,
        h - 8.0
    );
    s
}

/// Paired bars: AUROC before (base), through the candidate, after realignment.
fn svg_realign(r: &Report) -> String {
    let rows: Vec<_> = r
        .monitors
        .iter()
        .filter_map(|m| Some((m, m.eval.as_ref()?, m.realignment.as_ref()?)))
        .collect();
    if rows.is_empty() {
        return "<p>No monitor needed realignment.</p>".into();
    }
    let (w, rh) = (640.0, 22.0);
    let h = rows.len() as f64 * rh * 3.0 + 30.0;
    let mut s = format!(
        r##"<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img"><title>AUROC before and after realignment</title>"##
    );
    for (i, (m, e, x)) in rows.iter().enumerate() {
        let y0 = i as f64 * rh * 3.0;
        let _ = write!(
            s,
            r##"<text x="0" y="{:.1}" font-size="11">{}</text>"##,
            y0 + 12.0,
            esc(&m.name)
        );
        for (j, (v, c, label)) in [
            (e.base_auroc, "#888", "base"),
            (e.auroc, "#c33", "candidate"),
            (x.after.auroc, "#3a3", "realigned"),
        ]
        .iter()
        .enumerate()
        {
            let _ = write!(
                s,
                r##"<rect x="180" y="{:.1}" width="{:.1}" height="{:.1}" fill="{c}"><title>{label}: {v:.3}</title></rect><text x="{:.1}" y="{:.1}" font-size="10">{label} {v:.3}</text>"##,
                y0 + 16.0 + j as f64 * 18.0,
                v * 380.0,
                14.0,
                184.0 + v * 380.0,
                y0 + 27.0 + j as f64 * 18.0
            );
        }
    }
    s.push_str("</svg>");
    s
}

pub fn html(r: &Report) -> String {
    let mut s = String::new();
    let (_, color) = looks(r.verdict);
    let _ = write!(
        s,
        r##"<!doctype html><html><head><meta charset="utf-8"><title>probegate report</title>
<style>body{{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 6px}}
.v{{color:{color};font-size:1.4em;font-weight:600}}</style></head><body>
<p class="v">{}</p><p><code>{}</code> → <code>{}</code>, policy <code>{}</code></p>"##,
        esc(&verdict_line(r)),
        esc(&r.base.reference),
        esc(&r.candidate.reference),
        esc(&r.policy.name)
    );
    if let Some(line) = rejudged_line(r, &|t: &str| format!("<code>{}</code>", esc(t))) {
        let _ = write!(s, "<p>{line}</p>");
    }
    for (title, items) in [("Why it failed", &r.reasons), ("Warnings", &r.warnings)] {
        if !items.is_empty() {
            let _ = write!(s, "<h3>{title}</h3><ul>");
            for x in items {
                let _ = write!(s, "<li>{}</li>", esc(x));
            }
            s.push_str("</ul>");
        }
    }
    s.push_str("<h3>Monitors</h3><table><tr><th>monitor</th><th>block</th><th>critical</th><th>risk</th><th>drivers</th><th>status</th><th>AUROC</th><th>bal. acc</th><th>repair</th></tr>");
    for m in &r.monitors {
        let drivers: Vec<String> = m
            .risk
            .drivers
            .iter()
            .map(|(f, c)| format!("{f} {c:+.2}"))
            .collect();
        let (au, ba) = m
            .eval
            .as_ref()
            .map(|e| {
                (
                    format!("{:.3} → {:.3}", e.base_auroc, e.auroc),
                    format!(
                        "{:.3} → {:.3}",
                        e.base_balanced_accuracy, e.balanced_accuracy
                    ),
                )
            })
            .unwrap_or_default();
        let repair = repair_summary(m);
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{}</td><td>{:?}{}</td><td>{au}</td><td>{ba}</td><td>{}</td></tr>",
            esc(&m.name),
            m.layer,
            if m.critical { "yes" } else { "" },
            m.risk.p_stale,
            esc(&drivers.join(", ")),
            m.status,
            match (m.status, r.fails(&m.name)) {
                (Status::Unverified | Status::Repaired, true) => " <strong>(fails the gate)</strong>",
                _ => "",
            },
            esc(&repair)
        );
    }
    s.push_str("</table>");
    let _ = write!(
        s,
        "<h3>Weight change by block</h3>{}<h3>Predicted risk against measured ΔAUROC</h3>{}<h3>AUROC before and after realignment</h3>{}",
        svg_blocks(r),
        svg_risk(r),
        svg_realign(r)
    );
    let _ = write!(
        s,
        "<h3>Diff</h3><ul>{}</ul><p>Budget: {} of {} labeled examples ({} for a full revalidation).</p></body></html>",
        r.diff
            .evidence
            .iter()
            .map(|e| format!("<li>{}</li>", esc(e)))
            .collect::<String>(),
        r.budget.examples_used,
        r.budget.examples_limit,
        r.budget.examples_full
    );
    s
}

#[cfg(test)]
mod tests;
