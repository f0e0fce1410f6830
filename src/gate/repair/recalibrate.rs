//! Rung 2: the threshold chosen again on a few labeled training examples
//! through the candidate, starting from the original monitor or the
//! realigned one, whichever separates those labels better.

use candle_core::Tensor;

use crate::error::Result;
use crate::gate::repair::context::{
    monitor_acts, Attempt, Context, LadderActs, RungReport, Verifier,
};
use crate::monitor::{metrics::choose_threshold, train::stratified_split, Monitor};

pub fn rung(
    cx: &Context,
    acts: &LadderActs,
    m: &Monitor,
    current: &Monitor,
    verifier: &Verifier,
) -> Result<Attempt<RungReport>> {
    let train = cx.train(m)?;
    // The budget is a hard cap for the rungs too.
    let want = cx.policy.recalibration.labels.min(cx.labels_left());
    let share = (want as f64 / train.labels.len().max(1) as f64).min(1.0);
    let (_, mut pick) = stratified_split(&train.labels, share, crate::util::DEFAULT_SEED);
    // Rounding each class's share can pick one more than asked; the cap is
    // exact, so the extra comes off the larger class (never empty).
    while pick.len() > want {
        let ones = pick.iter().filter(|&&i| train.labels[i] == 1).count();
        let class = u8::from(2 * ones > pick.len());
        let Some(at) = pick.iter().rposition(|&i| train.labels[i] == class) else {
            break;
        };
        pick.remove(at);
    }
    let texts: Vec<String> = pick.iter().map(|&i| train.texts[i].clone()).collect();
    let labels: Vec<u8> = pick.iter().map(|&i| train.labels[i]).collect();
    let x = match acts.peek(false, m) {
        Some(all) => {
            let idx: Vec<u32> = pick.iter().map(|&i| i as u32).collect();
            all.index_select(&Tensor::new(idx, all.device())?, 0)?
        }
        None => monitor_acts(&cx.models.cand, cx.cache, &texts, m)?,
    };
    // Start from the original or the realigned monitor, whichever separates
    // the calibration labels better at its new threshold: a map fitted on
    // off-distribution prompts can cost ranking.
    let rule = m.meta.classifier.threshold_rule;
    let mut best = (m, choose_threshold(&m.scores(&x)?, &labels, rule));
    if current.meta.provenance.repaired_for.is_some() {
        let t = choose_threshold(&current.scores(&x)?, &labels, rule);
        if t.balanced_accuracy > best.1.balanced_accuracy {
            best = (current, t);
        }
    }
    let (start, t) = best;
    let mut fixed = start.clone();
    fixed.meta.classifier.threshold = t.threshold;
    fixed.meta.provenance.repaired_for = Some(cx.models.cand_fp.clone());
    cx.spend(texts.len());
    let (after, reasons_after) = verifier.verify(&fixed)?;
    let repaired = reasons_after.is_empty();
    Ok(Attempt {
        report: RungReport {
            examples: texts.len(),
            threshold: Some(t.threshold),
            after,
            stale_reasons_after: reasons_after,
        },
        fixed: repaired.then_some(fixed),
        repaired,
    })
}
