//! The repair ladder for stale monitors, cheapest first, each rung only if
//! the policy allows it and each verified on the labeled test data
//! revalidation already ran: [`realign`] (label-free), [`recalibrate`] (a
//! threshold chosen again on a few labels), [`retrain`] (the probe refitted
//! on the candidate). The first rung that repairs a monitor ends its climb.

pub mod context;
pub mod realign;
pub mod recalibrate;
pub mod retrain;
mod trials;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gate::features::MonitorFeatures;
pub use crate::gate::policy::Rung;
use crate::gate::policy::MIN_RECALIBRATION_LABELS;
use crate::gate::prepare::Progress;
use crate::gate::revalidate::{self, Breaks, EvalResult, Revalidated, Status};
use crate::gate::risk::{Risk, Trials};
use crate::monitor::Monitor;
pub use context::{Context, RungReport};
use context::{LadderActs, Verifier};
pub use realign::{Alternative, RealignReport};

/// One monitor after the ladder: everything the verdict and the report say about it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MonitorReport {
    /// The monitor's name in its monitor.json.
    pub name: String,
    pub concept: String,
    /// The decoder block whose residual stream it reads.
    pub layer: usize,
    /// Named critical by the policy: always revalidated, whatever its risk.
    pub critical: bool,
    pub status: Status,
    /// The rung of the repair ladder this monitor needed.
    pub rung: Rung,
    /// P(stale) from the risk model, with the features that drove it.
    pub risk: Risk,
    /// The label-free features computed before any labeled data is spent.
    pub features: MonitorFeatures,
    /// Labeled metrics through the candidate; `None`: not revalidated (unverified).
    pub eval: Option<EvalResult>,
    /// Each limit of the policy the monitor broke on the candidate.
    pub stale_reasons: Vec<String>,
    /// Rung 1: the label-free realignment, tried on stale monitors.
    pub realignment: Option<RealignReport>,
    /// Rung 2: the threshold chosen again on a few labeled training examples.
    #[serde(default)]
    pub recalibration: Option<RungReport>,
    /// Rung 3: the probe retrained on the candidate's activations.
    #[serde(default)]
    pub retraining: Option<RungReport>,
    /// The repaired monitor's directory under the output directory.
    #[serde(default)]
    pub repaired_monitor: Option<String>,
    /// Sequential revalidation: examples used, the bounds reached and why it stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequential: Option<crate::gate::revalidate::sequential::Trace>,
    /// Which kinds of limit the candidate broke (revalidated monitors only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaks: Option<Breaks>,
    /// Rungs the policy enables that were not tried for want of labeled
    /// examples under `budget.examples`, each with what it needed and had.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// Rungs the policy enables that were not tried because they could not
    /// repair the monitor (a threshold cannot mend a lost ranking), each
    /// with why; no labels were spent on them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ruled_out: Vec<String>,
    /// Stale, and its ladder was not climbed: the verdict was already fail
    /// whatever it would have shown (`budget.stop_at_verdict`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_climbed: bool,
    /// Study runs only (`GateRequest::every_rung`): each rung tried alone
    /// from the original monitor on a stale monitor. Never read by the verdict.
    #[serde(default, skip_serializing_if = "Trials::is_empty")]
    pub trials: Trials,
}

impl MonitorReport {
    /// A monitor the gate has predicted but not yet revalidated or repaired.
    pub fn unverified(
        name: String,
        concept: &str,
        layer: usize,
        critical: bool,
        risk: Risk,
        features: MonitorFeatures,
    ) -> Self {
        MonitorReport {
            name,
            concept: concept.into(),
            layer,
            critical,
            status: Status::Unverified,
            rung: Rung::None,
            risk,
            features,
            eval: None,
            stale_reasons: Vec::new(),
            realignment: None,
            recalibration: None,
            retraining: None,
            repaired_monitor: None,
            sequential: None,
            breaks: None,
            skipped: Vec::new(),
            ruled_out: Vec::new(),
            not_climbed: false,
            trials: Trials::default(),
        }
    }

    /// A monitor report for tests of what is decided from reports (the
    /// verdict, merging shards): healthy-looking features, P(stale) 0.3.
    #[cfg(test)]
    pub(crate) fn example(name: &str, status: Status, critical: bool) -> Self {
        let f = MonitorFeatures {
            change_below: 0.01,
            max_stable_rank: 4.0,
            act_cosine: Some(0.99),
            projected_shift: Some(0.1),
            score_ks: Some(0.1),
            flip_rate: Some(0.01),
            ..MonitorFeatures::example(name, crate::gate::diff::Family::LowRankAdapter)
        };
        let concept = f.concept.clone();
        let mut r = MonitorReport::unverified(
            name.into(),
            &concept,
            15,
            critical,
            Risk {
                p_stale: 0.3,
                drivers: vec![],
            },
            f,
        );
        r.status = status;
        if status == Status::Repaired {
            r.rung = Rung::Realignment;
        }
        if matches!(status, Status::Stale | Status::Repaired) {
            r.stale_reasons = vec!["AUROC 0.99 → 0.90".into()];
        }
        r
    }
}

/// The report's order: riskiest first, then by name.
pub fn riskiest_first(monitors: &mut [MonitorReport]) {
    monitors.sort_by(|a, b| {
        b.risk
            .p_stale
            .total_cmp(&a.risk.p_stale)
            .then(a.name.cmp(&b.name))
    });
}

/// Every monitor's report (in suite order), the repaired monitors to write
/// beside it, and the labeled training examples the rungs spent.
pub struct Repairs {
    pub reports: Vec<MonitorReport>,
    pub repaired: Vec<Monitor>,
    pub examples_used: usize,
}

/// Each monitor as the gate predicted it, before any rung (suite order).
fn predicted(
    policy: &crate::gate::policy::Policy,
    monitors: &[Monitor],
    risks: &BTreeMap<String, Risk>,
    features: &BTreeMap<String, MonitorFeatures>,
) -> Result<Vec<MonitorReport>> {
    monitors
        .iter()
        .map(|m| {
            let name = &m.meta.name;
            Ok(MonitorReport::unverified(
                name.clone(),
                &m.meta.concept,
                m.meta.hook.layer,
                policy.is_critical(name, &m.meta.concept),
                risks
                    .get(name)
                    .cloned()
                    .ok_or_else(|| missing("risk", name))?,
                features
                    .get(name)
                    .cloned()
                    .ok_or_else(|| missing("features", name))?,
            ))
        })
        .collect()
}

/// Monitors whose ladder was climbed while revalidation ran ([`Early`]),
/// with the training activations their rungs computed, for [`repair`] to
/// take up.
pub struct Climbed<'a> {
    acts: LadderActs<'a>,
    done: BTreeMap<String, (MonitorReport, Option<Monitor>)>,
}

impl<'a> Climbed<'a> {
    /// None climbed yet.
    pub fn none(cx: &Context<'a>) -> Self {
        Climbed {
            acts: LadderActs::new(cx.cache, cx.extend.map(|e| e.kept())),
            done: BTreeMap::new(),
        }
    }
}

/// The ladder climbed during sequential revalidation under
/// `budget.stop_at_verdict`: each monitor as soon as it is settled stale,
/// so a failing candidate is known to fail at its first stale monitor
/// beyond repair and revalidation stops there. On the v2 grid's failing
/// conditions that is a few looks into the suite (STUDY.md).
pub struct Early<'a, 'c> {
    cx: &'c Context<'a>,
    monitors: &'c [Monitor],
    predicted: Vec<MonitorReport>,
    climbed: Climbed<'a>,
    fails: FailsVerdict<'c>,
    decided: bool,
}

impl<'a, 'c> Early<'a, 'c> {
    pub fn new(
        cx: &'c Context<'a>,
        monitors: &'c [Monitor],
        risks: &BTreeMap<String, Risk>,
        features: &BTreeMap<String, MonitorFeatures>,
        fails: FailsVerdict<'c>,
    ) -> Result<Self> {
        let predicted = predicted(cx.policy, monitors, risks, features)?;
        let mut early = Early {
            cx,
            monitors,
            predicted,
            climbed: Climbed::none(cx),
            fails,
            decided: false,
        };
        // A verdict that fails with every monitor healthy (a family the
        // policy does not allow) needs no revalidation at all.
        early.judge();
        Ok(early)
    }

    /// The monitors' predictions made again (risks and features the gate
    /// completed while revalidation ran): what a monitor climbed from now on
    /// reports.
    pub fn repredict(
        &mut self,
        risks: &BTreeMap<String, Risk>,
        features: &BTreeMap<String, MonitorFeatures>,
    ) -> Result<()> {
        self.predicted = predicted(self.cx.policy, self.monitors, risks, features)?;
        Ok(())
    }

    /// What the ladder that follows revalidation takes up.
    pub fn climbed(self) -> Climbed<'a> {
        self.climbed
    }

    /// Decided once the verdict fails with every monitor not yet climbed
    /// taken as healthy: the best the rest can end as.
    fn judge(&mut self) {
        let done: Vec<Option<MonitorReport>> = self
            .predicted
            .iter()
            .map(|p| self.climbed.done.get(&p.name).map(|(r, _)| r.clone()))
            .collect();
        self.decided = (self.fails)(&best_outcome(&done, &self.predicted, &|_| true));
    }
}

impl revalidate::OnSettled for Early<'_, '_> {
    fn stale(&mut self, settled: &[(&Monitor, Revalidated)], progress: Progress) -> Result<()> {
        // Every block first: the ladder's training-text passes then read
        // them all at once instead of running the split again per monitor.
        for (m, _) in settled {
            self.climbed.acts.need(m);
            if let Some(e) = self.cx.extend {
                e.need(m);
            }
        }
        if self.cx.realigns() {
            self.cx.corpus_acts.ensure(&mut *progress)?;
        }
        for (step, (m, rv)) in settled.iter().enumerate() {
            if self.decided {
                break;
            }
            let name = &m.meta.name;
            let i = self
                .monitors
                .iter()
                .position(|x| &x.meta.name == name)
                .ok_or_else(|| missing("prediction", name))?;
            progress("repair ladder", step, settled.len());
            let mut r = self.predicted[i].clone();
            let fixed = climb(self.cx, &mut self.climbed.acts, m, rv, &mut r)?;
            self.climbed.done.insert(name.clone(), (r, fixed));
            self.judge();
        }
        progress("repair ladder", settled.len(), settled.len());
        Ok(())
    }

    fn decided(&self) -> bool {
        self.decided
    }
}

/// Runs the ladder over the suite. Monitors revalidation did not reach are
/// reported unverified; healthy ones pass through; those [`Early`] climbed
/// keep what it found. With `stop_at_verdict` (`budget.stop_at_verdict`), a
/// stale monitor whose turn comes once the verdict fails whatever the rest
/// shows is reported `not_climbed`.
#[allow(clippy::too_many_arguments)]
pub fn repair<'a>(
    cx: &Context<'a>,
    monitors: &[Monitor],
    evals: &BTreeMap<String, Revalidated>,
    risks: &BTreeMap<String, Risk>,
    features: &BTreeMap<String, MonitorFeatures>,
    stop_at_verdict: Option<FailsVerdict>,
    climbed: Climbed<'a>,
    progress: Progress,
) -> Result<Repairs> {
    let policy = cx.policy;
    let Climbed { mut acts, mut done } = climbed;
    // Revalidated stale, the monitors that may climb.
    let mut stale = std::collections::BTreeSet::new();
    for m in monitors {
        if let Some(rv) = evals.get(&m.meta.name) {
            if !revalidate::stale_reasons(m, &rv.eval, &policy.metrics).is_empty() {
                stale.insert(m.meta.name.as_str());
                acts.need(m);
                if let Some(e) = cx.extend {
                    e.need(m);
                }
            }
        }
    }
    let mut out = Repairs {
        reports: Vec::new(),
        repaired: Vec::new(),
        examples_used: 0,
    };
    // Critical monitors climb first: labels are capped, and a critical
    // monitor left stale fails the candidate whatever else is repaired.
    let mut visit: Vec<usize> = (0..monitors.len()).collect();
    visit.sort_by_key(|&i| {
        let m = &monitors[i].meta;
        !policy.is_critical(&m.name, &m.concept)
    });
    let predicted = predicted(policy, monitors, risks, features)?;
    let mut reports: Vec<Option<MonitorReport>> = vec![None; monitors.len()];
    // Those climbed during revalidation first, so the verdict's best
    // outcome counts them from the start.
    for (i, m) in monitors.iter().enumerate() {
        if let Some((r, fixed)) = done.remove(&m.meta.name) {
            out.repaired.extend(fixed);
            out.examples_used += labels_spent(&r);
            reports[i] = Some(r);
        }
    }
    // Once decided, always: each climb can only leave a monitor as good as
    // the healthy it was taken for, or worse.
    let mut decided = false;
    for (step, &i) in visit.iter().enumerate() {
        let m = &monitors[i];
        // The ladder can take minutes (forward passes, map fits): say where it is.
        progress("repair ladder", step, monitors.len());
        if reports[i].is_some() {
            continue;
        }
        let name = &m.meta.name;
        let mut r = predicted[i].clone();
        if let Some(rv) = evals.get(name) {
            decided = decided
                || stop_at_verdict.is_some_and(|fails| {
                    fails(&best_outcome(&reports, &predicted, &|n: &str| {
                        evals.contains_key(n)
                    }))
                });
            if decided {
                judge(policy, m, rv, &mut r);
                r.not_climbed = r.status == Status::Stale;
            } else {
                if cx.realigns() && stale.contains(name.as_str()) {
                    // Realignment fits its maps on the corpus: run it now if
                    // the features stage did not.
                    cx.corpus_acts.ensure(&mut *progress)?;
                }
                if let Some(fixed) = climb(cx, &mut acts, m, rv, &mut r)? {
                    out.repaired.push(fixed);
                }
                if cx.every_rung && r.status != Status::Healthy {
                    r.trials = trials::trials(
                        cx,
                        &mut acts,
                        m,
                        rv,
                        (
                            r.realignment.as_ref(),
                            &r.stale_reasons,
                            r.retraining.as_ref(),
                        ),
                    )?;
                }
            }
            out.examples_used += labels_spent(&r);
        }
        reports[i] = Some(r);
    }
    // Reported in suite order, whatever order they climbed in.
    out.reports = reports.into_iter().flatten().collect();
    progress("repair ladder", monitors.len(), monitors.len());
    Ok(out)
}

/// Labeled training examples a monitor's rungs ran through the candidate.
fn labels_spent(r: &MonitorReport) -> usize {
    [&r.recalibration, &r.retraining]
        .iter()
        .filter_map(|x| x.as_ref().map(|x| x.examples))
        .sum()
}

fn missing(what: &str, name: &str) -> Error {
    Error::Usage(format!("internal: no {what} computed for monitor {name}"))
}

/// Whether the policy's verdict fails a suite in these states: the gate's
/// verdict handed down (it reads this module's reports, so it sits above).
pub type FailsVerdict<'a> = &'a dyn Fn(&[MonitorReport]) -> bool;

/// The best the suite can still end as: the monitors the ladder has done
/// as they ended, each still waiting taken as healthy (the best a monitor
/// can end; the verdict only gets worse as monitors do), the unverified as
/// they are (the ladder does not change them). If the verdict fails this,
/// it fails whatever the rest of the ladder shows.
pub(crate) fn best_outcome(
    done: &[Option<MonitorReport>],
    predicted: &[MonitorReport],
    revalidated: &dyn Fn(&str) -> bool,
) -> Vec<MonitorReport> {
    predicted
        .iter()
        .zip(done)
        .map(|(p, r)| match r {
            Some(r) => r.clone(),
            None => {
                let mut p = p.clone();
                if revalidated(&p.name) {
                    p.status = Status::Healthy;
                }
                p
            }
        })
        .collect()
}

/// A revalidated monitor's state without the ladder: healthy or stale.
fn judge(
    policy: &crate::gate::policy::Policy,
    m: &Monitor,
    rv: &Revalidated,
    r: &mut MonitorReport,
) {
    r.eval = Some(rv.eval.clone());
    r.breaks = Some(revalidate::breaks(m, &rv.eval, &policy.metrics));
    r.stale_reasons = revalidate::stale_reasons(m, &rv.eval, &policy.metrics);
    r.status = if r.stale_reasons.is_empty() {
        Status::Healthy
    } else {
        Status::Stale
    };
}

/// One revalidated monitor up the ladder; fills `r` and returns the
/// repaired monitor when a rung repaired it.
fn climb<'a>(
    cx: &Context<'a>,
    acts: &mut LadderActs<'a>,
    m: &Monitor,
    rv: &Revalidated,
    r: &mut MonitorReport,
) -> Result<Option<Monitor>> {
    let policy = cx.policy;
    let name = &m.meta.name;
    judge(policy, m, rv, r);
    if r.status == Status::Healthy {
        return Ok(None);
    }
    let verifier = Verifier::new(m, rv, cx)?;
    // The monitor later rungs start from: realigned when the map was applied.
    let mut current = m.clone();
    let mut rung = Rung::None;
    if cx.realigns() {
        let a = realign::rung(cx, acts, m, &verifier)?;
        if let Some(f) = a.fixed {
            current = f;
        }
        if a.repaired {
            rung = Rung::Realignment;
        }
        r.realignment = Some(a.report);
    }
    // A rung the cap leaves too few labels for is skipped, and the report
    // says so: a stale monitor a larger budget would have repaired must not
    // look beyond repair.
    let starved = |what: &str, need: String| {
        format!(
            "{what}: {} labeled example(s) left under budget.examples ({}), {need}",
            cx.labels_left(),
            policy.budget.examples
        )
    };
    // Recalibration starts from the original or the realigned monitor and
    // moves only the threshold: when both rank past the AUROC limits, its
    // labels would buy nothing (the rung does not count as tried).
    let starts: Vec<&Monitor> = if current.meta.provenance.repaired_for.is_some() {
        vec![m, &current]
    } else {
        vec![m]
    };
    let ranking_lost = rung == Rung::None
        && policy.recalibration.enabled
        && verifier.threshold_cannot_repair(&starts)?;
    if ranking_lost {
        r.ruled_out.push(
            "recalibration: AUROC is past its limits for the original and any realigned monitor, and a threshold does not move AUROC"
                .into(),
        );
    }
    // A threshold needs both classes.
    if rung == Rung::None && policy.recalibration.enabled && !ranking_lost {
        if cx.labels_left() >= MIN_RECALIBRATION_LABELS {
            let a = recalibrate::rung(cx, acts, m, &current, &verifier)?;
            r.recalibration = Some(a.adopt(Rung::Recalibration, &mut rung, &mut current));
        } else {
            r.skipped.push(starved(
                "recalibration",
                format!("at least {MIN_RECALIBRATION_LABELS} needed"),
            ));
        }
    }
    // Retraining takes the whole training split or nothing (and nothing
    // without one).
    let split = cx.train(m).map(|d| d.texts.len());
    if let (Rung::None, true, Ok(split)) = (rung, policy.retraining.enabled, split) {
        if split <= cx.labels_left() {
            let a = retrain::rung(cx, acts, m, &verifier)?;
            r.retraining = Some(a.adopt(Rung::Retraining, &mut rung, &mut current));
        } else {
            r.skipped.push(starved(
                "retraining",
                format!("the training split needs {split}"),
            ));
        }
    }
    if rung == Rung::None {
        r.rung = Rung::BeyondRepair;
        return Ok(None);
    }
    r.status = Status::Repaired;
    r.rung = rung;
    let dir = format!("repaired/{name}");
    if let (Some(re), Rung::Realignment) = (r.realignment.as_mut(), rung) {
        re.written_to = Some(dir.clone());
    }
    r.repaired_monitor = Some(dir);
    current.meta.provenance.repaired_for = Some(cx.models.cand_fp.clone());
    // Same name as the monitor it replaces; the fingerprint tag says for what.
    current.meta.name = name.clone();
    Ok(Some(current))
}
