//! Study runs (`GateRequest::every_rung`): each rung the policy enables
//! tried alone on a stale monitor, for the study's per-rung figures; never
//! read by the verdict.

use crate::error::Result;
use crate::gate::repair::context::{Context, LadderActs, RungReport, Verifier};
use crate::gate::repair::realign::RealignReport;
use crate::gate::repair::{recalibrate, retrain};
use crate::gate::revalidate::{self, EvalResult, Revalidated};
use crate::gate::risk::{Trial, Trials};
use crate::monitor::Monitor;

/// What the ladder itself found for the monitor: its realignment, its stale
/// reasons before any rung, and its retraining when the ladder got there.
pub(super) type Climb<'r> = (
    Option<&'r RealignReport>,
    &'r [String],
    Option<&'r RungReport>,
);

/// Study runs: every rung the policy enables, each alone from the original
/// monitor (recalibration without realignment's map), reusing what the
/// ladder already measured. Labels are not capped here: the grid runs with
/// full revalidation.
pub(super) fn trials<'a>(
    cx: &Context<'a>,
    acts: &mut LadderActs<'a>,
    m: &Monitor,
    rv: &Revalidated,
    (realignment, stale_reasons, retraining): Climb<'_>,
) -> Result<Trials> {
    let policy = cx.policy;
    let trial = |examples, after: &EvalResult, reasons: &[String]| {
        let b = revalidate::breaks(m, after, &policy.metrics);
        Trial {
            examples,
            auroc: after.auroc,
            balanced_accuracy: after.balanced_accuracy,
            ranking_after: b.ranking,
            operating_point_after: b.operating_point,
            passes_policy: reasons.is_empty(),
            any_alternative_passes: None,
        }
    };
    let verifier = Verifier::new(m, rv, cx)?;
    let mut out = Trials::default();
    if let Some(a) = realignment {
        // A map that was not applied leaves the monitor as it was.
        let mut t = if a.applied {
            trial(0, &a.after, &a.stale_reasons_after)
        } else {
            trial(0, &rv.eval, stale_reasons)
        };
        t.any_alternative_passes = Some(a.alternatives.iter().any(|x| x.would_pass));
        out.realignment = Some(t);
    }
    // The labeled rungs are measured whether or not the policy climbs to
    // them: the study asks what each method can do.
    if cx.trains.contains_key(&m.meta.concept) {
        let rep = recalibrate::rung(cx, acts, m, m, &verifier)?.report;
        out.recalibration = Some(trial(rep.examples, &rep.after, &rep.stale_reasons_after));
        let rep = match retraining {
            Some(rep) => rep.clone(),
            None => retrain::rung(cx, acts, m, &verifier)?.report,
        };
        out.retraining = Some(trial(rep.examples, &rep.after, &rep.stale_reasons_after));
    }
    Ok(out)
}
