//! Rung 3: the probe retrained on the candidate's activations of the
//! concept's labeled training split (the test split verifies it).

use crate::error::Result;
use crate::gate::repair::context::{
    train_order, Attempt, Context, LadderActs, RungReport, Verifier,
};
use crate::monitor::{
    train::{train, TrainOptions},
    Monitor,
};

pub fn rung<'a>(
    cx: &Context<'a>,
    acts: &mut LadderActs<'a>,
    m: &Monitor,
    verifier: &Verifier,
) -> Result<Attempt<RungReport>> {
    let data = cx.train(m)?;
    // The whole split, in the ladder's order (the parts realignment and
    // recalibration ran are not run again).
    let x = acts.prefix(&cx.models.cand, false, data, data.texts.len(), m)?;
    let labels: Vec<u8> = train_order(data.labels.len())
        .iter()
        .map(|&i| data.labels[i])
        .collect();
    let tr = train(
        &x.to_vec2::<f32>()?,
        &labels,
        &TrainOptions {
            threshold_rule: m.meta.classifier.threshold_rule,
            ..Default::default()
        },
    )?;
    cx.spend(data.texts.len());
    let mut fixed = m.clone();
    fixed.w = tr.probe.w;
    fixed.mean = tr.probe.mean;
    fixed.std = tr.probe.std;
    fixed.meta.classifier.bias = tr.probe.bias;
    fixed.meta.classifier.l2 = tr.probe.l2;
    fixed.meta.classifier.threshold = tr.threshold.threshold;
    fixed.meta.provenance.repaired_for = Some(cx.models.cand_fp.clone());
    let (after, reasons_after) = verifier.verify(&fixed)?;
    let repaired = reasons_after.is_empty();
    Ok(Attempt {
        report: RungReport {
            examples: data.texts.len(),
            threshold: Some(tr.threshold.threshold),
            after,
            stale_reasons_after: reasons_after,
        },
        fixed: repaired.then_some(fixed),
        repaired,
    })
}
