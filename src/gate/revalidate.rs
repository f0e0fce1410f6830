//! Revalidation: a monitor's labeled test set through the candidate, its
//! metrics against the base figures recorded in the monitor, and whether the
//! policy calls it stale. Thresholded metrics are judged as well as AUROC:
//! staleness often shows as a shifted threshold while ranking survives.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gate::policy::MetricLimits;
use crate::monitor::{data, metrics, Monitor};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvalResult {
    pub monitor: String,
    pub layer: usize,
    pub n: usize,
    pub auroc: f64,
    pub auroc_ci95: [f64; 2],
    pub balanced_accuracy: f64,
    pub tpr: f64,
    pub fpr: f64,
    pub threshold: f64,
    pub base_auroc: f64,
    pub delta_auroc: f64,
    pub base_balanced_accuracy: f64,
}

/// Metrics of a monitor on scores of labeled data, against its base figures.
pub fn evaluate(m: &Monitor, scores: &[f64], labels: &[u8], seed: u64) -> Result<EvalResult> {
    let auroc = metrics::auroc(scores, labels)
        .ok_or_else(|| Error::Usage("evaluation data needs both classes".into()))?;
    let (lo, hi) = metrics::auroc_ci(scores, labels, 1000, seed).unwrap_or((auroc, auroc));
    let t = metrics::at_threshold(scores, labels, m.meta.classifier.threshold);
    Ok(EvalResult {
        monitor: m.meta.name.clone(),
        layer: m.meta.hook.layer,
        n: labels.len(),
        auroc,
        auroc_ci95: [lo, hi],
        balanced_accuracy: t.balanced_accuracy,
        tpr: t.tpr,
        fpr: t.fpr,
        threshold: t.threshold,
        base_auroc: m.meta.base_metrics.auroc,
        delta_auroc: auroc - m.meta.base_metrics.auroc,
        base_balanced_accuracy: m.meta.base_metrics.balanced_accuracy,
    })
}

/// Why a monitor never met the policy on its own base (its recorded
/// held-out AUROC is below `min_auroc`): a fact about the suite, not about
/// any candidate.
pub fn weak_on_base(m: &Monitor, lim: &MetricLimits) -> Option<String> {
    let b = &m.meta.base_metrics;
    (b.auroc < lim.min_auroc).then(|| {
        format!(
            "{} is below the policy on its own base: held-out AUROC {:.3} < min_auroc {}",
            m.meta.name, b.auroc, lim.min_auroc
        )
    })
}

/// Why a monitor is stale (empty when it is not). A monitor weak on its
/// base is judged only on what the candidate changed (the drops), never on
/// the absolute `min_auroc` it did not meet before the update either.
pub fn stale_reasons(m: &Monitor, e: &EvalResult, lim: &MetricLimits) -> Vec<String> {
    let b = &m.meta.base_metrics;
    let mut out = Vec::new();
    // A tiny epsilon so a drop of exactly the limit counts despite rounding.
    if e.delta_auroc <= -lim.max_auroc_drop + 1e-12 {
        out.push(format!(
            "AUROC {:.3} → {:.3} (Δ {:+.3} ≤ −{})",
            b.auroc, e.auroc, e.delta_auroc, lim.max_auroc_drop
        ));
    }
    if e.auroc < lim.min_auroc && weak_on_base(m, lim).is_none() {
        out.push(format!("AUROC {:.3} below {}", e.auroc, lim.min_auroc));
    }
    let dba = e.balanced_accuracy - b.balanced_accuracy;
    if dba < -lim.max_balanced_accuracy_drop {
        out.push(format!(
            "balanced accuracy at the threshold {:.3} → {:.3} (Δ {:+.3})",
            b.balanced_accuracy, e.balanced_accuracy, dba
        ));
    }
    if e.fpr - b.fpr > lim.max_fpr_increase {
        out.push(format!("FPR {:.3} → {:.3}", b.fpr, e.fpr));
    }
    if b.tpr - e.tpr > lim.max_tpr_drop {
        out.push(format!("TPR {:.3} → {:.3}", b.tpr, e.tpr));
    }
    out
}

/// Where a suite's labeled data comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DataSource {
    /// `<DIR>/<concept>/{train,test}.jsonl` and nowhere else (`--data`, or
    /// `data` in probegate.toml): an override that is wrong must fail, not
    /// fall back to something else.
    Dir(PathBuf),
    /// The suite's own data (`<suite>/data/`, or the directory its
    /// `suite.toml` names), then the data built into probegate. A test set
    /// counts only when its content hash is the one the monitor recorded, so
    /// a monitor finds the data it was measured on wherever it is installed.
    #[default]
    Auto,
}

/// A suite may name its labeled data in `suite.toml` (`data = "DIR"`,
/// relative to the suite), or carry it in `data/`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SuiteFile {
    data: PathBuf,
}

impl DataSource {
    /// The directories searched, in order, for a suite at `suite` (a suite
    /// directory or a single monitor's).
    pub fn roots(&self, suite: &Path) -> Result<Vec<PathBuf>> {
        let mut roots = Vec::new();
        match self {
            DataSource::Dir(d) => roots.push(d.clone()),
            DataSource::Auto => {
                let single = suite.join(crate::monitor::JSON_FILE).is_file();
                let suite = match suite.parent() {
                    Some(p) if single => p,
                    _ => suite,
                };
                let file = suite.join("suite.toml");
                if file.is_file() {
                    let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
                    let sf: SuiteFile = toml::from_str(&text).map_err(|e| Error::Input {
                        path: file.clone(),
                        line: e
                            .span()
                            .map(|sp| crate::util::line_of(&text, sp.start))
                            .unwrap_or(0),
                        msg: e.message().trim().to_string(),
                    })?;
                    roots.push(crate::assets::relative_to(&file, &sf.data));
                } else {
                    roots.push(suite.join("data"));
                }
                roots.push(PathBuf::from(crate::assets::SUITE_DATA));
            }
        }
        Ok(roots)
    }
}

/// A monitor's labeled sets, found under one root.
pub struct LabeledSets {
    /// `<root>/<concept>/test.jsonl`, checked against the recorded hash.
    pub test: (PathBuf, data::Labeled),
    /// Where the training split would be (read only by the repair ladder).
    pub train_path: PathBuf,
}

fn label_names(m: &Monitor) -> (&str, &str) {
    (
        m.meta.labels.negative.as_str(),
        m.meta.labels.positive.as_str(),
    )
}

/// The labeled test set a monitor's base figures were measured on, found in
/// the first root that has `<concept>/test.jsonl`, and checked against the
/// recorded hash so a comparison with the base figures is like for like.
/// The built-in root is skipped when its hash differs: a shipped concept of
/// the same name is simply not this monitor's data.
pub fn find_sets(roots: &[PathBuf], m: &Monitor) -> Result<LabeledSets> {
    let want = &m.meta.base_metrics.data_sha256;
    let mut looked = Vec::new();
    for root in roots {
        let path = root.join(&m.meta.concept).join("test.jsonl");
        if !crate::assets::is_file(&path) {
            looked.push(path.display().to_string());
            continue;
        }
        let d = data::read_labeled(&path, Some(label_names(m)))?;
        if &d.sha256 != want {
            if crate::assets::is_builtin(root) {
                looked.push(format!("{} (other data)", path.display()));
                continue;
            }
            return Err(Error::field(
                &path,
                "(contents)",
                format!(
                    "sha256 {} differs from the data monitor {} was measured on ({}): base and candidate figures would not be comparable",
                    &d.sha256[..12],
                    m.meta.name,
                    &want[..12.min(want.len())]
                ),
            ));
        }
        return Ok(LabeledSets {
            train_path: root.join(&m.meta.concept).join("train.jsonl"),
            test: (path, d),
        });
    }
    Err(Error::Usage(format!(
        "no labeled test set for monitor {} (concept {}, sha256 {}): looked in {}; pass --data DIR \
         holding {}/test.jsonl, or put it in the suite's data/ directory",
        m.meta.name,
        m.meta.concept,
        &want[..12.min(want.len())],
        looked.join(", "),
        m.meta.concept
    )))
}

/// The concept's training split beside the test set found by [`find_sets`]:
/// the labels the recalibration and retraining rungs may spend (never the
/// test set, which verifies them).
pub fn train_set(sets: &LabeledSets, m: &Monitor) -> Result<(PathBuf, data::Labeled)> {
    let d = data::read_labeled(&sets.train_path, Some(label_names(m)))?;
    Ok((sets.train_path.clone(), d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(name: &str) -> Monitor {
        Monitor::load(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("monitors/smollm2")
                .join(name),
        )
        .unwrap()
    }

    /// A suite directory holding one copied monitor.
    fn suite_with(m: &str) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("monitors/smollm2")
            .join(m);
        let dst = tmp.path().join(m);
        std::fs::create_dir_all(&dst).unwrap();
        for f in ["monitor.json", "monitor.safetensors"] {
            std::fs::copy(src.join(f), dst.join(f)).unwrap();
        }
        tmp
    }

    #[test]
    fn a_shipped_monitor_finds_its_data_built_in_from_anywhere() {
        let m = shipped("toxicity-l15");
        let suite = suite_with("toxicity-l15");
        let roots = DataSource::Auto.roots(suite.path()).unwrap();
        assert_eq!(roots.last().unwrap(), Path::new(crate::assets::SUITE_DATA));
        let sets = find_sets(&roots, &m).unwrap();
        assert_eq!(
            sets.test.0,
            Path::new("builtin:data/suite/toxicity/test.jsonl")
        );
        assert_eq!(sets.test.1.sha256, m.meta.base_metrics.data_sha256);
        let (_, train) = train_set(&sets, &m).unwrap();
        assert!(!train.texts.is_empty());
        // A single monitor's directory looks beside itself for the suite's data.
        let one = DataSource::Auto
            .roots(&suite.path().join("toxicity-l15"))
            .unwrap();
        assert_eq!(one[0], suite.path().join("data"));
    }

    #[test]
    fn the_suites_own_data_comes_first_and_must_match() {
        let m = shipped("toxicity-l15");
        let suite = suite_with("toxicity-l15");
        let data = suite.path().join("data/toxicity");
        std::fs::create_dir_all(&data).unwrap();
        let shipped_test =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("data/suite/toxicity/test.jsonl");
        std::fs::copy(&shipped_test, data.join("test.jsonl")).unwrap();
        let roots = DataSource::Auto.roots(suite.path()).unwrap();
        assert_eq!(
            find_sets(&roots, &m).unwrap().test.0,
            data.join("test.jsonl")
        );
        // Other data under the suite's own name is an error, not a fallback.
        let text = std::fs::read_to_string(&shipped_test).unwrap();
        let fewer: String = text.lines().skip(2).map(|l| format!("{l}\n")).collect();
        std::fs::write(data.join("test.jsonl"), fewer).unwrap();
        let e = find_sets(&roots, &m).err().unwrap().to_string();
        assert!(
            e.contains("differs from the data monitor toxicity-l15"),
            "{e}"
        );
    }

    #[test]
    fn suite_toml_names_the_data_relative_to_the_suite() {
        let m = shipped("toxicity-l15");
        let suite = suite_with("toxicity-l15");
        std::fs::write(suite.path().join("suite.toml"), "data = \"sets\"\n").unwrap();
        let roots = DataSource::Auto.roots(suite.path()).unwrap();
        assert_eq!(roots[0], suite.path().join("sets"));
        let labeled = suite.path().join("sets/toxicity");
        std::fs::create_dir_all(&labeled).unwrap();
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("data/suite/toxicity/test.jsonl"),
            labeled.join("test.jsonl"),
        )
        .unwrap();
        assert_eq!(
            find_sets(&roots, &m).unwrap().test.0,
            labeled.join("test.jsonl")
        );
        std::fs::write(suite.path().join("suite.toml"), "dta = \"x\"\n").unwrap();
        let e = DataSource::Auto
            .roots(suite.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("suite.toml:1:") && e.contains("dta"), "{e}");
    }

    #[test]
    fn a_monitor_weak_on_its_base_is_judged_only_on_what_changed() {
        // The case users hit: a monitor at 0.713 on its base, under min_auroc 0.80.
        let mut m = shipped("toxicity-l15");
        m.meta.base_metrics.auroc = 0.713;
        let lim = crate::gate::policy::MetricLimits {
            max_auroc_drop: 0.05,
            min_auroc: 0.80,
            max_balanced_accuracy_drop: 0.05,
            max_fpr_increase: 0.05,
            max_tpr_drop: 0.10,
        };
        assert!(weak_on_base(&m, &lim)
            .unwrap()
            .contains("0.713 < min_auroc 0.8"));
        let b = m.meta.base_metrics.clone();
        let eval = |auroc: f64| EvalResult {
            monitor: m.meta.name.clone(),
            layer: 15,
            n: 180,
            auroc,
            auroc_ci95: [auroc - 0.05, auroc + 0.05],
            balanced_accuracy: b.balanced_accuracy,
            tpr: b.tpr,
            fpr: b.fpr,
            threshold: 0.5,
            base_auroc: b.auroc,
            delta_auroc: auroc - b.auroc,
            base_balanced_accuracy: b.balanced_accuracy,
        };
        // Improved under the update (0.713 → 0.767): not stale.
        assert!(stale_reasons(&m, &eval(0.767), &lim).is_empty());
        // Unchanged: not stale.
        assert!(stale_reasons(&m, &eval(0.713), &lim).is_empty());
        // A real drop is still caught, by the drop alone.
        let r = stale_reasons(&m, &eval(0.64), &lim);
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(r[0].contains("Δ -0.073"), "{r:?}");
        // A monitor that met the policy on its base still gets the absolute limit.
        let mut strong = shipped("toxicity-l15");
        strong.meta.base_metrics.auroc = 0.82;
        let e = EvalResult {
            delta_auroc: -0.03,
            auroc: 0.79,
            ..eval(0.79)
        };
        assert!(stale_reasons(&strong, &e, &lim)
            .iter()
            .any(|x| x.contains("below 0.8")));
    }

    #[test]
    fn nothing_found_names_every_place_looked_and_how_to_fix_it() {
        let mut m = shipped("toxicity-l15");
        // A monitor measured on data probegate does not ship.
        m.meta.base_metrics.data_sha256 = "ab".repeat(32);
        let suite = suite_with("toxicity-l15");
        let roots = DataSource::Auto.roots(suite.path()).unwrap();
        let e = find_sets(&roots, &m).err().unwrap().to_string();
        assert!(
            e.contains("builtin:data/suite/toxicity/test.jsonl (other data)"),
            "{e}"
        );
        assert!(e.contains("--data"), "{e}");
        // An explicit --data is the only place looked.
        let roots = DataSource::Dir(suite.path().join("nope"))
            .roots(suite.path())
            .unwrap();
        assert_eq!(roots.len(), 1);
        let e = find_sets(&roots, &shipped("toxicity-l15"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("nope/toxicity/test.jsonl") && !e.contains("builtin"),
            "{e}"
        );
    }
}
