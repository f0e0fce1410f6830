//! Where a monitor's labeled data is found: `--data`, the suite's own
//! `data/` (or the directory its `suite.toml` names), then the data built
//! into probegate, each test set checked against the hash the monitor
//! recorded so base and candidate figures are measured on the same examples.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::monitor::{data, Monitor};

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
    /// What a `--data` flag (or a config's `data`) means: that directory and
    /// nowhere else when given, the suite's own lookup otherwise.
    pub fn named(dir: Option<PathBuf>) -> Self {
        dir.map_or(DataSource::Auto, DataSource::Dir)
    }

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
                    let sf: SuiteFile = crate::util::parse_toml(&text, &file)?;
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

    use crate::monitor::shipped;

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
