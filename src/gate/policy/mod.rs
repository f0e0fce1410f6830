//! The gate's policy: one TOML file (policies/*.toml) that says when a
//! monitor is stale, what revalidation may spend, which monitors are
//! critical, and what label-free realignment may do. Every error names the
//! file, the line and the field.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gate::diff::Family;

mod layers;
mod parse;

crate::util::choices! {
    /// The rung of the repair ladder a monitor needed, in the order they are
    /// tried (report.json: "none", "realignment", "recalibration", "retraining",
    /// "beyond repair").
    #[derive(PartialOrd, Ord)]
    pub enum Rung {
        /// Healthy, or not reached: no rung was needed.
        None = "none",
        /// Label-free realignment of the monitor to the candidate's activations.
        Realignment = "realignment",
        /// The threshold chosen again on a few labeled training examples.
        Recalibration = "recalibration",
        /// The probe retrained on the candidate's activations.
        Retraining = "retraining",
        /// Stale, and no rung the policy allows repaired it.
        BeyondRepair = "beyond repair",
    }
}

/// What a monitor that never met the policy on its own base means for a
/// check: the suite's problem, so never a reason to fail a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WeakMonitors {
    /// Reported as a finding about the suite; judged only on what the
    /// candidate changed (its drops), not on the absolute `min_auroc`.
    #[default]
    Warn,
    /// Reported and left out of the check.
    Exclude,
    /// The check cannot evaluate (exit 2) until the suite is fixed.
    Refuse,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SuitePolicy {
    #[serde(default)]
    pub weak_monitors: WeakMonitors,
}

/// How a concept's labeled test set is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RevalidationMode {
    /// A concept's whole test set or none of it, riskiest concepts first
    /// (what a policy without `[revalidation]` gets: unchanged behaviour).
    #[default]
    Whole,
    /// Batches, each monitor settled healthy or stale by confidence bounds
    /// on its paired change ([`crate::gate::revalidate::sequential`]).
    Sequential,
}

/// How the error rate is shared across the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Correction {
    /// `alpha` is each monitor's own false-healthy rate.
    None,
    /// `alpha` is the suite's: the chance that any monitor is settled
    /// healthy wrongly is at most alpha (each gets alpha / monitors).
    #[default]
    Bonferroni,
}

/// Fewer labels than this and recalibration is not tried: a threshold
/// needs both classes. Also the floor of `recalibration.labels`.
pub const MIN_RECALIBRATION_LABELS: usize = 10;

/// `[revalidation]`: how labeled examples are spent and the error rates
/// that are controlled while doing so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevalidationPolicy {
    pub mode: RevalidationMode,
    /// The chance of settling a monitor healthy when its full-set change is
    /// past a limit (and of settling a healthy one stale): per monitor, or
    /// for the whole suite under `correction = "bonferroni"`.
    pub alpha: f64,
    pub correction: Correction,
    /// Examples every concept gets before the budget is split by risk, so a
    /// stale monitor the predictor missed is still looked at.
    pub first_look: usize,
    /// Examples per further look.
    pub batch: usize,
    /// Sequential mode: run a concept's whole test set through both models
    /// before reading labels, read them where they can move a bound, and
    /// judge on worst-case bounds instead of confidence bounds
    /// ([`crate::gate::revalidate::screened`]): no error rate, far fewer
    /// labels, every example's forward passes. Absent from reports written
    /// before it existed.
    #[serde(default)]
    pub screen: bool,
}

impl Default for RevalidationPolicy {
    fn default() -> Self {
        RevalidationPolicy {
            mode: RevalidationMode::Whole,
            alpha: 0.05,
            correction: Correction::Bonferroni,
            first_look: 40,
            batch: 20,
            screen: false,
        }
    }
}

/// What a monitor the budget did not reach means for the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unverified {
    /// The candidate fails while any monitor is unverified.
    Fail,
    /// Reported with its predicted risk; does not fail the candidate.
    Warn,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricLimits {
    /// Stale when AUROC through the candidate drops by at least this much.
    pub max_auroc_drop: f64,
    /// Stale when AUROC through the candidate is below this.
    pub min_auroc: f64,
    /// Stale when balanced accuracy at the monitor's own threshold drops by more.
    pub max_balanced_accuracy_drop: f64,
    /// Stale when the false-positive rate at the threshold rises by more.
    pub max_fpr_increase: f64,
    /// Stale when the true-positive rate at the threshold drops by more.
    pub max_tpr_drop: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetLimits {
    /// Labeled examples that may be run through the candidate (a concept's
    /// test set serves all its monitors with one forward pass).
    pub examples: usize,
    /// Wall-clock seconds for revalidation, if limited.
    pub seconds: Option<f64>,
    /// Sequential revalidation: examples of `examples` it leaves to the
    /// repair ladder (recalibration's labels, a repair's verification) once
    /// a monitor is settled stale. Held back only then, so a candidate with
    /// nothing stale gets the whole budget for revalidation.
    #[serde(default)]
    pub repair_reserve: usize,
    /// Stop spending once the verdict is fail whatever the rest would show:
    /// the ladder is not climbed for the stale monitors still waiting, and
    /// they are reported stale with `not_climbed`. A cheaper fail, a less
    /// complete report; never a different verdict.
    #[serde(default)]
    pub stop_at_verdict: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RealignPolicy {
    pub enabled: bool,
    /// Whether a monitor repaired by realignment counts as passing.
    pub may_pass: bool,
    /// Whether a repair must be verified on labeled data to count.
    pub verify: bool,
    /// Unlabeled prompts the map is fitted on (paired through both models).
    pub corpus: PathBuf,
    /// Fewer prompts than this and realignment is not attempted: maps fitted
    /// on too few prompts were seen to wreck monitors.
    pub min_prompts: usize,
    /// How many corpus prompts to use at most (cost bound).
    pub max_prompts: usize,
    /// Also fit on the monitor's own training texts, unlabeled: maps fitted
    /// only on a generic corpus were seen to transfer badly to a concept's
    /// distribution. Costs one forward pass per training text.
    #[serde(default)]
    pub concept_texts: bool,
    /// How many of the training texts: all of them, or as many as the
    /// label-free choice needs before its held-out error is stable.
    #[serde(default)]
    pub concept_texts_until: TextsUntil,
}

/// How far realignment reads a concept's own texts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextsUntil {
    /// The whole training split: measured on the shipped suites, the
    /// held-out error still fell at the split's end for most monitors.
    #[default]
    All,
    /// Doubling from a first part until a doubling moves the held-out error
    /// by at most 10%: fewer forward passes where the curve flattens (large
    /// splits), a few more map fits where it does not.
    Stable,
}

/// A rung of the repair ladder beyond realignment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RungPolicy {
    pub enabled: bool,
    /// Labeled training examples the rung may run through the candidate
    /// (recalibration; retraining uses the whole training split).
    #[serde(default)]
    pub labels: usize,
    /// Whether a monitor repaired at this rung counts as passing.
    pub may_pass: bool,
}

impl RungPolicy {
    pub fn off() -> Self {
        RungPolicy {
            enabled: false,
            labels: 0,
            may_pass: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub name: String,
    pub description: String,
    pub metrics: MetricLimits,
    pub budget: BudgetLimits,
    /// Monitor names or `concept*` patterns that are always revalidated and
    /// whose staleness fails the candidate unless repaired.
    pub critical: Vec<String>,
    pub unverified: Unverified,
    /// Under `unverified = "warn"`: an unverified monitor whose predicted
    /// risk is at least this fails the candidate all the same (the risk
    /// model thinks it more likely stale than not, and nothing has shown
    /// otherwise). None: every unverified monitor is only a warning.
    #[serde(default)]
    pub unverified_fail_risk: Option<f64>,
    /// Under `unverified = "warn"`: an unverified monitor the risk model
    /// ranks at least as risky as a monitor this run measured stale
    /// (repaired or not) fails the candidate. The measured ones show where
    /// the model's scale stands on this candidate; one ranked above them has
    /// nothing but the model's word for it.
    #[serde(default)]
    pub unverified_fail_as_risky_as_stale: bool,
    pub realignment: RealignPolicy,
    /// RungPolicy 2: recalibrate the threshold on a few labeled training examples.
    #[serde(default = "RungPolicy::off")]
    pub recalibration: RungPolicy,
    /// RungPolicy 3: retrain the probe on the candidate's activations.
    #[serde(default = "RungPolicy::off")]
    pub retraining: RungPolicy,
    /// Update families this pipeline accepts; others fail the candidate.
    pub allowed_families: Option<Vec<Family>>,
    /// What the suite itself must meet.
    #[serde(default)]
    pub suite: SuitePolicy,
    /// How labeled examples are spent (whole test sets, or sequentially).
    #[serde(default)]
    pub revalidation: RevalidationPolicy,
    /// Where the policy was read from.
    pub source: String,
}

impl Policy {
    /// Whether a monitor repaired at `rung` counts as passing.
    pub fn may_pass(&self, rung: Rung) -> bool {
        match rung {
            Rung::Realignment => self.realignment.may_pass,
            Rung::Recalibration => self.recalibration.may_pass,
            Rung::Retraining => self.retraining.may_pass,
            Rung::None | Rung::BeyondRepair => false,
        }
    }

    pub fn is_critical(&self, monitor: &str, concept: &str) -> bool {
        self.critical.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => monitor.starts_with(prefix) || concept.starts_with(prefix),
            None => p == monitor || p == concept,
        })
    }

    /// Reads a policy file; `builtin:` paths name the shipped policies.
    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::assets::read_config(path)?;
        Self::parse(&text, path)
    }

    /// A policy as users name it: a shipped policy's name (`default`,
    /// `strict`, `quantization-only`), or a file, relative to `dir` (the
    /// directory of the config file that names it, or the working directory).
    pub fn resolve(name: &str, dir: Option<&Path>) -> PathBuf {
        if let Some(p) = crate::assets::policy_by_name(name) {
            return p;
        }
        let p = PathBuf::from(name);
        match dir {
            Some(d) if p.is_relative() && !crate::assets::is_builtin(&p) => d.join(p),
            _ => p,
        }
    }

    /// The shipped default policy, for tests that check behaviour against it
    /// rather than against a copy of its numbers.
    #[cfg(test)]
    pub(crate) fn shipped_default() -> Self {
        Self::load(Path::new(crate::assets::DEFAULT_POLICY))
            .expect("the shipped default policy parses")
    }

    /// `text` is the policy at `path`; the policies its `extends` names are
    /// read relative to `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let layers = layers::Layers::read(text, path)?;
        let raw: parse::RawPolicy = layers.deserialize()?;
        raw.validate(&layers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "t"
unverified = "warn"
critical = ["privacy_pii*"]

[metrics]
max_auroc_drop = 0.05
min_auroc = 0.8
max_balanced_accuracy_drop = 0.05
max_fpr_increase = 0.05
max_tpr_drop = 0.1

[budget]
examples = 600

[realignment]
enabled = true
may_pass = true
verify = true
corpus = "data/realign/corpus.jsonl"
min_prompts = 256
max_prompts = 600
"#;

    #[test]
    fn parses_and_matches_critical_patterns() {
        let p = Policy::parse(GOOD, Path::new("p.toml")).unwrap();
        assert!(p.is_critical("privacy_pii-l15", "privacy_pii"));
        assert!(!p.is_critical("toxicity-l15", "toxicity"));
        assert_eq!(p.budget.examples, 600);
        // Optional, off unless asked for; on in the shipped default.
        assert!(!p.budget.stop_at_verdict);
        let on = GOOD.replace("examples = 600", "examples = 600\nstop_at_verdict = true");
        assert!(
            Policy::parse(&on, Path::new("p.toml"))
                .unwrap()
                .budget
                .stop_at_verdict
        );
        assert!(Policy::shipped_default().budget.stop_at_verdict);
        // A value of the wrong type: tests/cases/policy/stop-at-verdict-not-a-boolean.toml.
    }

    #[test]
    fn a_repair_reserve_is_for_sequential_revalidation_and_below_the_budget() {
        let seq = format!("{GOOD}\n[revalidation]\nmode = \"sequential\"\n");
        let with = |v: &str, text: &str| -> String {
            text.replace(
                "examples = 600",
                &format!("examples = 600\nrepair_reserve = {v}"),
            )
        };
        let p = Policy::parse(&with("120", &seq), Path::new("p.toml")).unwrap();
        assert_eq!(p.budget.repair_reserve, 120);
        assert_eq!(
            Policy::parse(&seq, Path::new("p.toml"))
                .unwrap()
                .budget
                .repair_reserve,
            0
        );
        for (v, text, want) in [
            (
                "600",
                seq.as_str(),
                "below budget.examples (600), found 600",
            ),
            ("-1", seq.as_str(), "found -1"),
            (
                "60",
                GOOD,
                "applies to `revalidation.mode = \"sequential\"` only",
            ),
        ] {
            let e = Policy::parse(&with(v, text), Path::new("p.toml"))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("p.toml:15: field `budget.repair_reserve`"),
                "{e}"
            );
            assert!(e.contains(want), "{e}");
        }
        // Zero says "none" in either mode.
        assert!(Policy::parse(&with("0", GOOD), Path::new("p.toml")).is_ok());
    }

    #[test]
    fn errors_name_the_line_and_field() {
        let bad = GOOD.replace("max_auroc_drop = 0.05", "max_auroc_drop = 1.5");
        let e = Policy::parse(&bad, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("p.toml:7: field `metrics.max_auroc_drop`"),
            "{e}"
        );
        let bad = GOOD.replace("examples = 600", "examples = 0");
        let e = Policy::parse(&bad, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("p.toml:14: field `budget.examples`"), "{e}");
        let bad = GOOD.replace("min_auroc = 0.8", "min_auroc = 0.8\nmin_aurok = 0.9");
        let e = Policy::parse(&bad, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("p.toml:9:") && e.contains("min_aurok"), "{e}");
        let bad = GOOD.replace("unverified = \"warn\"", "unverified = \"maybe\"");
        let e = Policy::parse(&bad, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("p.toml:3:") && e.contains("maybe"), "{e}");
    }

    #[test]
    fn every_bad_value_is_reported_at_once_in_the_order_of_the_file() {
        let bad = GOOD
            .replace("max_auroc_drop = 0.05", "max_auroc_drop = 1.5")
            .replace("max_tpr_drop = 0.1", "max_tpr_drop = -1")
            .replace("examples = 600", "examples = 0\nrepair_reserve = 50")
            .replace("min_prompts = 256", "min_prompts = 1");
        let e = Policy::parse(&bad, Path::new("p.toml")).unwrap_err();
        let lines: Vec<String> = e.to_string().lines().map(String::from).collect();
        let want = [
            "p.toml:7: field `metrics.max_auroc_drop`: must be between 0 and 1, found 1.5",
            "p.toml:11: field `metrics.max_tpr_drop`: must be between 0 and 1, found -1",
            "p.toml:14: field `budget.examples`: must be positive, found 0",
            // The reserve is judged against a budget only when the budget is valid.
            "p.toml:15: field `budget.repair_reserve`: applies to `revalidation.mode = \"sequential\"` only",
            "p.toml:22: field `realignment.min_prompts`: must be at least 2, found 1",
        ];
        assert_eq!(lines.len(), want.len(), "{e}");
        for (got, want) in lines.iter().zip(want) {
            assert!(got.starts_with(want), "\n got  {got}\n want {want}");
        }
    }

    #[test]
    fn the_corpus_resolves_against_the_policy_file_or_is_built_in() {
        let p = Policy::parse(GOOD, Path::new("/repo/ci/gate.toml")).unwrap();
        assert_eq!(
            p.realignment.corpus,
            Path::new("/repo/ci/data/realign/corpus.jsonl")
        );
        let no_corpus = GOOD.replace("corpus = \"data/realign/corpus.jsonl\"\n", "");
        let p = Policy::parse(&no_corpus, Path::new("/repo/ci/gate.toml")).unwrap();
        assert_eq!(
            p.realignment.corpus,
            Path::new(crate::assets::DEFAULT_CORPUS)
        );
    }

    #[test]
    fn shipped_policies_load_by_name_from_anywhere() {
        for name in crate::assets::policy_names() {
            let path = Policy::resolve(name, Some(Path::new("/elsewhere")));
            let p = Policy::load(&path).unwrap();
            assert_eq!(p.name, name);
            assert!(crate::assets::is_file(&p.realignment.corpus), "{name}");
        }
        assert_eq!(
            Policy::resolve("gate.toml", Some(Path::new("/repo"))),
            Path::new("/repo/gate.toml")
        );
        assert_eq!(
            Policy::resolve("/abs/gate.toml", Some(Path::new("/repo"))),
            Path::new("/abs/gate.toml")
        );
    }

    /// Bad policies and the error each must give, file, line and field:
    /// tests/cases/policy/<case>.toml, whose `# expect:` line holds the text.
    #[test]
    fn bad_policy_cases() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases/policy");
        let mut n = 0;
        for e in std::fs::read_dir(&root).unwrap() {
            let p = e.unwrap().path();
            let text = std::fs::read_to_string(&p).unwrap();
            let want = text
                .lines()
                .find_map(|l| l.strip_prefix("# expect: "))
                .unwrap_or_else(|| panic!("{}: no `# expect:` line", p.display()));
            let name = p.file_name().unwrap();
            let got = Policy::parse(&text, Path::new(name))
                .unwrap_err()
                .to_string();
            assert!(
                got.starts_with(want),
                "{}:\n got  {got}\n want {want}",
                p.display()
            );
            n += 1;
        }
        assert!(n >= 6);
    }
}
