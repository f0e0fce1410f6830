//! `probegate.toml`: a repository's gate settings (base, monitors, policy,
//! data, output), found by walking up from the working directory as cargo
//! finds Cargo.toml, so that in a configured repository
//! `probegate check --candidate X` is the whole command. Every path in it is
//! relative to the file, as cargo-deny resolves its config, so the same file
//! works from any subdirectory, in CI and in a pre-push hook.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::gate::policy::Policy;
use crate::gate::prepare::Progress;
use crate::gate::revalidate::DataSource;
use crate::gate::risk::RiskModel;
use crate::gate::{self, GateOutput, GateRequest};

pub const FILE: &str = "probegate.toml";

/// The settings of one `probegate.toml`, its paths already resolved.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProjectConfig {
    /// The file these settings came from.
    pub path: PathBuf,
    /// The file's settings: the base model reference with its local parts
    /// rebased onto the file's directory, every path relative to the file,
    /// and the policy file (or a shipped policy's `builtin:` path when the
    /// file names one).
    pub settings: Overrides<PathBuf>,
}

/// The nearest `probegate.toml` at or above `start`.
pub fn discover(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|d| d.join(FILE))
        .find(|p| p.is_file())
}

impl ProjectConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::assets::read_config(path)?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        // The file holds what a command line would give, relative to the file.
        let raw: Overrides = crate::util::parse_toml(text, path)?;
        let dir = path.parent().unwrap_or(Path::new(""));
        let rel = |p: PathBuf| crate::assets::relative_to(path, &p);
        for (field, v) in [("base", &raw.base), ("policy", &raw.policy)] {
            if v.as_deref().is_some_and(|s| s.trim().is_empty()) {
                return Err(Error::field(path, field, "is empty"));
            }
        }
        Ok(ProjectConfig {
            path: path.to_path_buf(),
            settings: Overrides {
                base: raw.base.map(|b| rebase_reference(&b, dir)),
                monitors: raw.monitors.map(rel),
                policy: raw
                    .policy
                    .map(|p| crate::gate::policy::Policy::resolve(&p, Some(dir))),
                data: raw.data.map(rel),
                out: raw.out.map(rel),
                risk_model: raw.risk_model.map(rel),
            },
        })
    }

    /// The nearest config at or above `start`, if any.
    pub fn find(start: &Path) -> Result<Option<Self>> {
        discover(start).map(|p| Self::load(&p)).transpose()
    }
}

/// The settings a gate runs with: the command line over `probegate.toml`
/// over the defaults built into probegate.
#[derive(Debug, Clone, PartialEq)]
pub struct GateSettings {
    pub base: String,
    pub monitors: PathBuf,
    pub policy: PathBuf,
    pub data: DataSource,
    pub out: PathBuf,
    pub risk_model: Option<PathBuf>,
    /// The config file used, if any (reported so a user sees where settings came from).
    pub config: Option<PathBuf>,
}

/// The gate settings the command line or a `probegate.toml` gives, each
/// optional: `None` defers to the config, then the default. `P` holds the
/// policy: as written (`String`, a shipped policy's name or a path relative
/// to the working directory; in a file, to the file), or resolved to a file
/// (`PathBuf`, in a [`ProjectConfig`]).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides<P = String> {
    /// The base model reference.
    pub base: Option<String>,
    /// The monitor suite's directory.
    pub monitors: Option<PathBuf>,
    pub policy: Option<P>,
    /// Labeled test sets, `<data>/<concept>/test.jsonl`; `None`: the suite's
    /// own data, then the data built into probegate.
    pub data: Option<PathBuf>,
    /// Where report.json, report.md, report.html and repaired monitors go.
    pub out: Option<PathBuf>,
    /// A fitted risk model (JSON) in place of the built-in one.
    pub risk_model: Option<PathBuf>,
}

/// How one run departs from the settings.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Labeled examples to spend instead of the policy's budget (at least 1).
    pub budget: Option<usize>,
    /// Revalidate every monitor regardless of the budget.
    pub full: bool,
    /// Append history rows here.
    pub history: Option<PathBuf>,
    /// Judge only this shard of the suite (`--shard I/N`).
    pub shard: Option<gate::shard::Shard>,
}

impl GateSettings {
    /// The gate request for `candidate` under these settings.
    pub fn request(&self, candidate: &str, opts: &RunOptions) -> Result<GateRequest> {
        let mut policy = Policy::load(&self.policy)?;
        if let Some(b) = opts.budget {
            if b == 0 {
                return Err(Error::Usage(
                    "--budget: a budget of 0 examples cannot revalidate anything (critical \
                     monitors are always revalidated; use at least 1)"
                        .into(),
                ));
            }
            policy.budget.examples = b;
        }
        Ok(GateRequest {
            base: self.base.clone(),
            candidate: candidate.to_string(),
            monitors: self.monitors.clone(),
            data: self.data.clone(),
            policy,
            risk_model: RiskModel::load_or_default(self.risk_model.as_deref())?,
            full_revalidation: opts.full,
            every_rung: false,
            condition: None,
            run: None,
            shard: opts.shard,
        })
    }

    /// The gate on `candidate`, its reports written under `out`. Whatever
    /// happens, `out` never keeps an earlier run's report: a run that could
    /// not evaluate leaves an error report there.
    pub fn run(
        &self,
        candidate: &str,
        opts: &RunOptions,
        progress: Progress,
    ) -> Result<GateOutput> {
        let r = self.run_inner(candidate, opts, progress);
        if let Err(e) = &r {
            let _ = gate::report::write_error_report(&self.out, &e.to_string());
        }
        r
    }

    fn run_inner(
        &self,
        candidate: &str,
        opts: &RunOptions,
        progress: Progress,
    ) -> Result<GateOutput> {
        std::fs::create_dir_all(&self.out).map_err(|e| Error::io(&self.out, e))?;
        // Probe writability first: failing after an hour of compute is worse.
        let probe = self.out.join(".probegate-write-test");
        std::fs::write(&probe, b"").map_err(|e| Error::io(&self.out, e))?;
        let _ = std::fs::remove_file(&probe);
        let _ = std::fs::remove_file(self.out.join("report.json"));
        let req = self.request(candidate, opts)?;
        gate::run_and_record(&req, Some(&self.out), opts.history.as_deref(), progress)
    }

    pub fn resolve(cli: Overrides, cfg: Option<&ProjectConfig>) -> Result<Self> {
        let missing = |flag: &str, key: &str| {
            Error::Usage(format!(
                "{flag} is required: pass it, or set `{key}` in {FILE} ({})",
                match cfg {
                    Some(c) => format!("{} has none", c.path.display()),
                    None => "none found here or above; `probegate init` writes one".into(),
                }
            ))
        };
        let c = cfg.map(|c| c.settings.clone()).unwrap_or_default();
        Ok(GateSettings {
            base: cli
                .base
                .or(c.base)
                .ok_or_else(|| missing("--base", "base"))?,
            monitors: cli
                .monitors
                .or(c.monitors)
                .ok_or_else(|| missing("--monitors", "monitors"))?,
            policy: cli
                .policy
                .map(|p| crate::gate::policy::Policy::resolve(&p, None))
                .or(c.policy)
                .unwrap_or_else(|| PathBuf::from(crate::assets::DEFAULT_POLICY)),
            data: DataSource::named(cli.data.or(c.data)),
            out: cli
                .out
                .or(c.out)
                .unwrap_or_else(|| PathBuf::from("probegate-report")),
            risk_model: cli.risk_model.or(c.risk_model),
            config: cfg.map(|c| c.path.clone()),
        })
    }
}

/// A model reference written in a config file, with its relative paths made
/// relative to the file's directory. Short names (`smollm2`), `hf:`
/// references and absolute paths stay as they are; what-if wrappers
/// (`nf4(X)`) and adapters (`X+DIR`) are rebased part by part.
pub fn rebase_reference(s: &str, dir: &Path) -> String {
    let s = s.trim();
    if dir.as_os_str().is_empty() || s.starts_with("hf:") {
        return s.to_string();
    }
    // BASE+ADAPTER, where ADAPTER (relative to the file) is a PEFT directory.
    if let Some(i) = s.rfind('+') {
        let tail = Path::new(&s[i + 1..]);
        let adapter = if tail.is_absolute() {
            tail.to_path_buf()
        } else {
            dir.join(tail)
        };
        if i > 0
            && adapter
                .join(crate::checkpoint::adapter::CONFIG_FILE)
                .is_file()
        {
            return format!("{}+{}", rebase_reference(&s[..i], dir), adapter.display());
        }
    }
    if let (Some(open), true) = (s.find('('), s.ends_with(')')) {
        let name = &s[..open];
        if crate::checkpoint::whatif::WhatIf::parse(name).is_some() {
            return format!(
                "{name}({})",
                rebase_reference(&s[open + 1..s.len() - 1], dir)
            );
        }
    }
    let p = Path::new(s);
    let local = dir.join(p);
    if p.is_absolute() || (crate::checkpoint::known_model_path(s).is_some() && !local.exists()) {
        return s.to_string();
    }
    local.display().to_string()
}

/// What `probegate init` writes into a repository.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub base: String,
    pub monitors: String,
    /// Replace files that exist (never done silently).
    pub force: bool,
}

/// The starter files `init` writes, relative to the repository root.
pub fn starter_files(o: &InitOptions) -> Vec<(PathBuf, String)> {
    let policy = starter_policy();
    let config = format!(
        r#"# probegate.toml: settings for `probegate check` in this repository. It is
# found by walking up from the working directory, and every path in it is
# relative to this file, so `probegate check --candidate X` is the whole
# command from anywhere in the repository (and in CI, and in the pre-push hook).

# TODO: the base model your monitors were trained on: a .gguf file, a Hugging
# Face model directory, hf:org/name[@revision], or smollm2 / gemma3.
base = {base}

# TODO: your monitor suite (one directory per monitor: monitor.json +
# monitor.safetensors; `probegate monitor train` makes them).
monitors = {monitors}

# The gate's policy: a file, or a shipped policy (default, strict,
# quantization-only).
policy = ".probegate/policy.toml"

# Labeled test sets, <data>/<concept>/test.jsonl. Left out, the suite's own
# data/ directory is used, then the data built into probegate (matched by the
# hash each monitor recorded).
# data = "labeled"

# Where report.json, report.md, report.html and repaired monitors go.
out = "probegate-report"
"#,
        // TOML string literals, quoted and escaped by the TOML writer.
        base = toml::Value::String(o.base.clone()),
        monitors = toml::Value::String(o.monitors.clone()),
    );
    let workflow = format!(
        r#"# Gate model updates on their activation monitors (written by `probegate init`).
# probegate reads base, monitors and policy from probegate.toml.
name: probegate
on:
  pull_request:
    paths:
      - "**/adapter_config.json"
      - "**/adapter_model.*"
      - "**/*.gguf"
      - "**/*.safetensors"
      - "probegate.toml"
      - ".probegate/**"
permissions:
  contents: read
  checks: write
  pull-requests: write
jobs:
  gate:
    runs-on: ubuntu-latest
    steps:
      # Third-party actions pinned by commit (the tag in the comment).
      - uses: actions/checkout@11d5960a326750d5838078e36cf38b85af677262 # v4.4.0
        with:
          fetch-depth: 0
      # TODO: pin to a release of probegate (and its commit SHA).
      - uses: probegate/probegate@v{version}
        with:
          base: {base}
          monitors: {monitors}
          policy: .probegate/policy.toml
          # Gate every adapter or checkpoint the pull request changes.
          candidates-from-changes: "true"
"#,
        version = env!("CARGO_PKG_VERSION"),
        // JSON strings are valid YAML scalars, escaped.
        base = serde_json::Value::String(o.base.clone()),
        monitors = serde_json::Value::String(o.monitors.clone()),
    );
    vec![
        (PathBuf::from(FILE), config),
        (PathBuf::from(".probegate/policy.toml"), policy),
        (PathBuf::from(".github/workflows/probegate.yml"), workflow),
    ]
}

/// The starter policy: the built-in `default` extended, with every field of
/// it shown commented out. A copy would freeze the default of the day (the
/// fixes that come with later versions never reach it); extending it keeps
/// a repository's policy to the lines it changes.
fn starter_policy() -> String {
    let default = crate::assets::read_to_string(Path::new(crate::assets::DEFAULT_POLICY))
        .map(|c| c.into_owned())
        .unwrap_or_default();
    let mut out = String::from(
        "# This repository's gate policy, written by `probegate init`. It extends\n\
         # probegate's built-in `default`: a field written here replaces the\n\
         # default's (tables merge key by key, lists are replaced whole), and every\n\
         # field left out follows the default of the probegate version that runs\n\
         # the gate (report.json records that version). Below, the default's fields\n\
         # as they stand, commented out (`#key = value`): to change one, uncomment\n\
         # its table's header and its line.\n\
         \n\
         # Reports and history call the policy by this name.\n\
         name = \"repository\"\n\
         extends = \"default\"\n",
    );
    // The default's own header, name and description are replaced above.
    let body = default
        .lines()
        .skip_while(|l| !l.starts_with("name = "))
        .filter(|l| !l.starts_with("name = ") && !l.starts_with("description = "));
    for line in body {
        if !line.trim().is_empty() && !line.starts_with('#') {
            out.push('#');
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Write the starter files under `root`; refuses (writing nothing) when
/// any exists, unless `force`. Returns the paths written.
pub fn init(root: &Path, o: &InitOptions) -> Result<Vec<PathBuf>> {
    let files = starter_files(o);
    if !o.force {
        let existing: Vec<String> = files
            .iter()
            .map(|(p, _)| root.join(p))
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            return Err(Error::Usage(format!(
                "{} already exist{}; nothing written (pass --force to replace)",
                existing.join(", "),
                if existing.len() == 1 { "s" } else { "" }
            )));
        }
    }
    let mut written = Vec::new();
    for (rel, text) in files {
        let p = root.join(&rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
        std::fs::write(&p, text).map_err(|e| Error::io(&p, e))?;
        written.push(p);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_against_the_file_and_discovery_walks_up() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        crate::util::write_tree(
            root,
            &[
                ("adapters/x/adapter_config.json", "{}"),
                (
                    FILE,
                    "base = \"smollm2\"\nmonitors = \"suite\"\npolicy = \"ci/gate.toml\"\n\
                     data = \"labeled\"\nout = \"reports\"\n",
                ),
            ],
        );
        let found = discover(&root.join("a/b/c")).unwrap();
        assert_eq!(found, root.join(FILE));
        let c = ProjectConfig::load(&found).unwrap().settings;
        assert_eq!(c.base.as_deref(), Some("smollm2"));
        assert_eq!(c.monitors, Some(root.join("suite")));
        assert_eq!(c.policy, Some(root.join("ci/gate.toml")));
        assert_eq!(c.data, Some(root.join("labeled")));
        assert_eq!(c.out, Some(root.join("reports")));

        // Shipped policies by name; model references rebased part by part.
        let c = ProjectConfig::parse("policy = \"strict\"", &root.join(FILE))
            .unwrap()
            .settings;
        assert_eq!(
            c.policy,
            Some(PathBuf::from("builtin:policies/strict.toml"))
        );
        assert_eq!(
            rebase_reference("nf4(models/b.gguf)+adapters/x", root),
            format!(
                "nf4({})+{}",
                root.join("models/b.gguf").display(),
                root.join("adapters/x").display()
            )
        );
        assert_eq!(
            rebase_reference("hf:org/name@main", root),
            "hf:org/name@main"
        );
        assert_eq!(rebase_reference("/abs/m.gguf", root), "/abs/m.gguf");
    }

    #[test]
    fn the_command_line_wins_and_missing_settings_say_where_to_put_them() {
        let cfg = ProjectConfig {
            path: PathBuf::from("/r/probegate.toml"),
            settings: Overrides {
                base: Some("smollm2".into()),
                monitors: Some("/r/suite".into()),
                ..Default::default()
            },
        };
        let s = GateSettings::resolve(
            Overrides {
                monitors: Some("other".into()),
                policy: Some("strict".into()),
                ..Default::default()
            },
            Some(&cfg),
        )
        .unwrap();
        assert_eq!(s.base, "smollm2");
        assert_eq!(s.monitors, Path::new("other"));
        assert_eq!(s.policy, Path::new("builtin:policies/strict.toml"));
        assert_eq!(s.data, DataSource::Auto);
        assert_eq!(s.out, Path::new("probegate-report"));
        let e = GateSettings::resolve(Overrides::default(), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--base") && e.contains("probegate init"), "{e}");
    }

    #[test]
    fn bad_files_name_the_line_and_field() {
        let e = ProjectConfig::parse(
            "base = \"smollm2\"\nmonitor = \"x\"\n",
            Path::new("p/probegate.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("p/probegate.toml:2:") && e.contains("monitor"),
            "{e}"
        );
        let e = ProjectConfig::parse("base = \"\"\n", Path::new("probegate.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("base") && e.contains("empty"), "{e}");
    }

    #[test]
    fn init_writes_a_config_that_loads_and_never_overwrites() {
        let tmp = tempfile::tempdir().unwrap();
        let o = InitOptions {
            base: "smollm2".into(),
            monitors: "monitors/smollm2".into(),
            force: false,
        };
        let written = init(tmp.path(), &o).unwrap();
        assert_eq!(written.len(), 3);
        let c = ProjectConfig::load(&tmp.path().join(FILE))
            .unwrap()
            .settings;
        assert_eq!(c.base.as_deref(), Some("smollm2"));
        assert_eq!(c.monitors, Some(tmp.path().join("monitors/smollm2")));
        let policy = c.policy.unwrap();
        // The default's every field, under its own name.
        let p = crate::gate::policy::Policy::load(&policy).unwrap();
        let mut want = crate::gate::policy::Policy::shipped_default();
        want.name = "repository".into();
        want.source = policy.display().to_string();
        assert_eq!(p, want);
        // Uncommenting a table's header and one of its lines changes that field alone.
        let text = std::fs::read_to_string(&policy).unwrap();
        assert!(text.contains("\n#[budget]\n") && text.contains("\n#examples = 720\n"));
        let edited = text
            .replace("\n#[budget]\n", "\n[budget]\n")
            .replace("\n#examples = 720\n", "\nexamples = 968\n");
        let p = crate::gate::policy::Policy::parse(&edited, &policy).unwrap();
        want.budget.examples = 968;
        assert_eq!(p, want);
        std::fs::write(tmp.path().join(FILE), "# mine\n").unwrap();
        let e = init(tmp.path(), &o).unwrap_err().to_string();
        assert!(e.contains("already exist") && e.contains("--force"), "{e}");
        assert_eq!(
            std::fs::read_to_string(tmp.path().join(FILE)).unwrap(),
            "# mine\n"
        );
    }
}
