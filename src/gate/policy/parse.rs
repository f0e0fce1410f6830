//! Reading a policy file: the raw TOML layers as written (spans kept), and
//! their validation into a [`Policy`], every mistake collected and reported
//! at its line.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    /// Followed by `layers::Layers::read`; here so that it is a known field.
    #[serde(default)]
    #[allow(dead_code)]
    extends: Option<String>,
    name: String,
    #[serde(default)]
    description: String,
    metrics: RawMetrics,
    budget: RawBudget,
    #[serde(default)]
    critical: Vec<String>,
    unverified: Unverified,
    #[serde(default)]
    unverified_fail_risk: Option<Spanned<f64>>,
    #[serde(default)]
    unverified_fail_as_risky_as_stale: bool,
    realignment: RawRealign,
    #[serde(default)]
    recalibration: Option<RawRung>,
    #[serde(default)]
    retraining: Option<RawRung>,
    #[serde(default)]
    allowed_families: Option<Vec<Family>>,
    #[serde(default)]
    suite: SuitePolicy,
    #[serde(default)]
    revalidation: Option<RawRevalidation>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRevalidation {
    mode: RevalidationMode,
    #[serde(default)]
    alpha: Option<Spanned<f64>>,
    #[serde(default)]
    correction: Option<Correction>,
    #[serde(default)]
    first_look: Option<Spanned<i64>>,
    #[serde(default)]
    batch: Option<Spanned<i64>>,
    #[serde(default)]
    screen: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRung {
    enabled: bool,
    #[serde(default)]
    labels: Option<Spanned<i64>>,
    may_pass: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    max_auroc_drop: Spanned<f64>,
    min_auroc: Spanned<f64>,
    max_balanced_accuracy_drop: Spanned<f64>,
    max_fpr_increase: Spanned<f64>,
    max_tpr_drop: Spanned<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    examples: Spanned<i64>,
    #[serde(default)]
    seconds: Option<Spanned<f64>>,
    #[serde(default)]
    repair_reserve: Option<Spanned<i64>>,
    #[serde(default)]
    stop_at_verdict: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRealign {
    enabled: bool,
    may_pass: bool,
    verify: bool,
    /// Relative to the policy file; absent means the corpus built into probegate.
    #[serde(default)]
    corpus: Option<Spanned<PathBuf>>,
    min_prompts: Spanned<i64>,
    max_prompts: Spanned<i64>,
    #[serde(default)]
    concept_texts: bool,
    #[serde(default)]
    concept_texts_until: TextsUntil,
}

impl RawPolicy {
    pub(super) fn validate(self, layers: &layers::Layers) -> Result<Policy> {
        let path = layers.path();
        // Every mistake in the file at once, each at its line (as cargo-deny
        // reports a config): a value found bad is replaced by a stand-in so
        // the checks after it still run, and nothing is built from them.
        let errors = std::cell::RefCell::new(Vec::new());
        let fault = |field: &str, span: std::ops::Range<usize>, msg: String| {
            errors.borrow_mut().push(layers.error(field, span, msg));
        };
        let unit = |field: &str, v: &Spanned<f64>| -> f64 {
            let x = *v.get_ref();
            if !(0.0..=1.0).contains(&x) {
                fault(
                    field,
                    v.span(),
                    format!("must be between 0 and 1, found {x}"),
                );
                return f64::NAN;
            }
            x
        };
        let m = &self.metrics;
        let metrics = MetricLimits {
            max_auroc_drop: unit("metrics.max_auroc_drop", &m.max_auroc_drop),
            min_auroc: unit("metrics.min_auroc", &m.min_auroc),
            max_balanced_accuracy_drop: unit(
                "metrics.max_balanced_accuracy_drop",
                &m.max_balanced_accuracy_drop,
            ),
            max_fpr_increase: unit("metrics.max_fpr_increase", &m.max_fpr_increase),
            max_tpr_drop: unit("metrics.max_tpr_drop", &m.max_tpr_drop),
        };
        if metrics.max_auroc_drop == 0.0 {
            fault(
                "metrics.max_auroc_drop",
                m.max_auroc_drop.span(),
                "must be above 0: sampling noise alone moves AUROC".into(),
            );
        }
        let unverified_fail_risk = match &self.unverified_fail_risk {
            // Zero would fail every unverified monitor: that is `unverified = "fail"`.
            Some(v) if *v.get_ref() == 0.0 => {
                fault(
                    "unverified_fail_risk",
                    v.span(),
                    "must be above 0 (to fail every unverified monitor, write `unverified = \"fail\"`)"
                        .into(),
                );
                None
            }
            Some(v) => Some(unit("unverified_fail_risk", v)),
            None => None,
        };
        let ex = *self.budget.examples.get_ref();
        if ex <= 0 {
            fault(
                "budget.examples",
                self.budget.examples.span(),
                format!("must be positive, found {ex}: a gate that may not look at any labeled data cannot verify anything"),
            );
        }
        let seconds = match &self.budget.seconds {
            Some(s) if *s.get_ref() <= 0.0 => {
                fault(
                    "budget.seconds",
                    s.span(),
                    format!("must be positive, found {}", s.get_ref()),
                );
                None
            }
            Some(s) => Some(*s.get_ref()),
            None => None,
        };
        let r = &self.realignment;
        let (minp, maxp) = (*r.min_prompts.get_ref(), *r.max_prompts.get_ref());
        if minp < 2 {
            fault(
                "realignment.min_prompts",
                r.min_prompts.span(),
                format!("must be at least 2, found {minp}"),
            );
        }
        if maxp < minp {
            fault(
                "realignment.max_prompts",
                r.max_prompts.span(),
                format!("must be at least min_prompts ({minp}), found {maxp}"),
            );
        }
        if r.may_pass && !r.enabled {
            fault(
                "realignment.may_pass",
                r.min_prompts.span(),
                "true while realignment is disabled".into(),
            );
        }
        let recalibration = match &self.recalibration {
            None => RungPolicy::off(),
            Some(r) => {
                let labels = match &r.labels {
                    Some(l) if *l.get_ref() < MIN_RECALIBRATION_LABELS as i64 => {
                        fault(
                            "recalibration.labels",
                            l.span(),
                            format!(
                                "must be at least {MIN_RECALIBRATION_LABELS} (a threshold needs both classes), found {}",
                                l.get_ref()
                            ),
                        );
                        0
                    }
                    Some(l) => *l.get_ref() as usize,
                    None if r.enabled => {
                        errors.borrow_mut().push(Error::input(
                            path,
                            0,
                            "field `recalibration.labels`: required when recalibration is enabled",
                        ));
                        0
                    }
                    None => 0,
                };
                RungPolicy {
                    enabled: r.enabled,
                    labels,
                    may_pass: r.may_pass,
                }
            }
        };
        let revalidation = match &self.revalidation {
            None => RevalidationPolicy::default(),
            Some(r) => {
                let d = RevalidationPolicy::default();
                let alpha = match &r.alpha {
                    Some(a) if !(*a.get_ref() > 0.0 && *a.get_ref() <= 0.5) => {
                        fault(
                            "revalidation.alpha",
                            a.span(),
                            format!("must be above 0 and at most 0.5, found {}", a.get_ref()),
                        );
                        d.alpha
                    }
                    Some(a) => *a.get_ref(),
                    None => d.alpha,
                };
                let count = |field: &str, v: &Option<Spanned<i64>>, dflt: usize| match v {
                    Some(x) if *x.get_ref() < 1 => {
                        fault(
                            field,
                            x.span(),
                            format!("must be at least 1, found {}", x.get_ref()),
                        );
                        dflt
                    }
                    Some(x) => *x.get_ref() as usize,
                    None => dflt,
                };
                RevalidationPolicy {
                    mode: r.mode,
                    alpha,
                    correction: r.correction.unwrap_or(d.correction),
                    first_look: count("revalidation.first_look", &r.first_look, d.first_look),
                    batch: count("revalidation.batch", &r.batch, d.batch),
                    screen: match &r.screen {
                        Some(v) if *v.get_ref() && r.mode != RevalidationMode::Sequential => {
                            fault(
                                "revalidation.screen",
                                v.span(),
                                "applies to `revalidation.mode = \"sequential\"` only".into(),
                            );
                            false
                        }
                        Some(v) => *v.get_ref(),
                        None => d.screen,
                    },
                }
            }
        };
        let repair_reserve = match &self.budget.repair_reserve {
            None => 0,
            // Against a bad budget there is nothing to compare (it is reported).
            Some(v) if *v.get_ref() < 0 || (ex > 0 && *v.get_ref() >= ex) => {
                fault(
                    "budget.repair_reserve",
                    v.span(),
                    format!(
                        "must be at least 0 and below budget.examples ({ex}), found {}",
                        v.get_ref()
                    ),
                );
                0
            }
            // Whole-set revalidation already leaves the ladder what it did not
            // spend; a reserve there would be read as doing something it does not.
            Some(v) if *v.get_ref() > 0 && revalidation.mode != RevalidationMode::Sequential => {
                fault(
                    "budget.repair_reserve",
                    v.span(),
                    "applies to `revalidation.mode = \"sequential\"` only".into(),
                );
                0
            }
            Some(v) => *v.get_ref() as usize,
        };
        let mut errors = errors.into_inner();
        // In the order a reader meets them: by file, then line.
        errors.sort_by_key(|e| match e {
            Error::Input { path, line, .. } => (Some(path.clone()), *line),
            _ => (None, 0),
        });
        if errors.len() > 1 {
            return Err(Error::Several(errors));
        }
        if let Some(e) = errors.pop() {
            return Err(e);
        }
        let retraining = match &self.retraining {
            None => RungPolicy::off(),
            Some(r) => RungPolicy {
                enabled: r.enabled,
                labels: 0,
                may_pass: r.may_pass,
            },
        };
        Ok(Policy {
            name: self.name,
            description: self.description,
            metrics,
            budget: BudgetLimits {
                examples: ex as usize,
                seconds,
                repair_reserve,
                stop_at_verdict: self.budget.stop_at_verdict,
            },
            critical: self.critical,
            unverified: self.unverified,
            unverified_fail_risk,
            unverified_fail_as_risky_as_stale: self.unverified_fail_as_risky_as_stale,
            realignment: RealignPolicy {
                enabled: r.enabled,
                may_pass: r.may_pass,
                verify: r.verify,
                corpus: match &r.corpus {
                    // Relative to the file that wrote it, which may be a policy this one extends.
                    Some(c) => {
                        crate::assets::relative_to(layers.locate(c.span().start).0, c.get_ref())
                    }
                    None => PathBuf::from(crate::assets::DEFAULT_CORPUS),
                },
                min_prompts: minp as usize,
                max_prompts: maxp as usize,
                concept_texts: r.concept_texts,
                concept_texts_until: r.concept_texts_until,
            },
            recalibration,
            retraining,
            allowed_families: self.allowed_families,
            suite: self.suite,
            revalidation,
            source: path.display().to_string(),
        })
    }
}
