//! Rung 2: the threshold chosen again on a few labeled training examples
//! through the candidate, starting from the original monitor or the
//! realigned one, whichever separates those labels better.

use candle_core::Tensor;

use crate::error::Result;
use crate::gate::repair::context::{
    train_order, Attempt, Context, LadderActs, RungReport, Verifier,
};
use crate::monitor::{metrics::choose_threshold, Monitor};

pub fn rung<'a>(
    cx: &Context<'a>,
    acts: &mut LadderActs<'a>,
    m: &Monitor,
    current: &Monitor,
    verifier: &Verifier,
) -> Result<Attempt<RungReport>> {
    let train = cx.train(m)?;
    // The budget is a hard cap for the rungs too.
    let want = cx.policy.recalibration.labels.min(cx.labels_left());
    // The first examples of each class in the ladder's order, so they are
    // mostly texts realignment already ran through the candidate.
    let order = train_order(train.texts.len());
    let pick = balanced_prefix_pick(&order, &train.labels, want);
    let labels: Vec<u8> = pick.iter().map(|&p| train.labels[order[p]]).collect();
    let upto = pick.iter().max().map_or(0, |p| p + 1);
    let all = acts.prefix(&cx.models.cand, false, train, upto, m)?;
    let idx: Vec<u32> = pick.iter().map(|&p| p as u32).collect();
    let x = all.index_select(&Tensor::new(idx, all.device())?, 0)?;
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
    cx.spend(labels.len());
    let (after, reasons_after) = verifier.verify(&fixed)?;
    let repaired = reasons_after.is_empty();
    Ok(Attempt {
        report: RungReport {
            examples: labels.len(),
            threshold: Some(t.threshold),
            after,
            stale_reasons_after: reasons_after,
        },
        fixed: repaired.then_some(fixed),
        repaired,
    })
}

/// Positions in `order` of `want` examples, half of each class where the
/// split allows (the smaller class's shortfall from the other), each class
/// taken from the front of the order.
pub fn balanced_prefix_pick(order: &[usize], labels: &[u8], want: usize) -> Vec<usize> {
    let want = want.min(order.len());
    let have = |c: u8| order.iter().filter(|&&i| labels[i] == c).count();
    let (n1, n0) = (have(1), have(0));
    let ones = (want / 2 + want % 2).min(n1).max(want.saturating_sub(n0));
    let mut quota = [want - ones, ones];
    let mut pick = Vec::with_capacity(want);
    for (p, &i) in order.iter().enumerate() {
        let c = usize::from(labels[i] == 1);
        if quota[c] > 0 {
            quota[c] -= 1;
            pick.push(p);
        }
    }
    pick
}

#[cfg(test)]
mod tests {
    use super::balanced_prefix_pick;

    #[test]
    fn the_pick_is_exact_balanced_and_from_the_front() {
        let labels = [0, 0, 0, 1, 0, 1, 1, 0, 1, 1];
        let order: Vec<usize> = (0..labels.len()).collect();
        let p = balanced_prefix_pick(&order, &labels, 4);
        assert_eq!(p, vec![0, 1, 3, 5]);
        // Odd: the extra goes to the positive class.
        let p = balanced_prefix_pick(&order, &labels, 5);
        assert_eq!(p.len(), 5);
        assert_eq!(p.iter().filter(|&&i| labels[i] == 1).count(), 3);
        // A class that runs short is filled from the other.
        let labels = [1, 0, 0, 0, 0, 0];
        let order: Vec<usize> = (0..6).collect();
        let p = balanced_prefix_pick(&order, &labels, 4);
        assert_eq!(p, vec![0, 1, 2, 3]);
        // Never more than asked or than there is.
        assert_eq!(balanced_prefix_pick(&order, &labels, 60).len(), 6);
        assert!(balanced_prefix_pick(&order, &labels, 0).is_empty());
    }
}
