//! Probe metrics: AUROC (with a bootstrap interval), balanced accuracy and
//! TPR/FPR at a threshold, and threshold selection. Plain functions over
//! scores and 0/1 labels so every later stage (eval, revalidation, study)
//! computes them the same way.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// AUROC by the Mann–Whitney statistic, ties counted half. None when a class is absent.
pub fn auroc(scores: &[f64], labels: &[u8]) -> Option<f64> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let n_pos = labels.iter().filter(|&&l| l == 1).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    // Average ranks over tie groups.
    let mut rank_sum_pos = 0f64;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if labels[k] == 1 {
                rank_sum_pos += avg_rank;
            }
        }
        i = j + 1;
    }
    let u = rank_sum_pos - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Some(u / (n_pos as f64 * n_neg as f64))
}

/// Percentile bootstrap 95% interval of AUROC, stratified so every resample has both classes.
pub fn auroc_ci(scores: &[f64], labels: &[u8], resamples: usize, seed: u64) -> Option<(f64, f64)> {
    let pos: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == 1).collect();
    let neg: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] != 1).collect();
    if pos.is_empty() || neg.is_empty() || resamples == 0 {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut stats = Vec::with_capacity(resamples);
    let mut s = Vec::with_capacity(labels.len());
    let mut l = Vec::with_capacity(labels.len());
    for _ in 0..resamples {
        s.clear();
        l.clear();
        for _ in 0..pos.len() {
            s.push(scores[pos[rng.random_range(0..pos.len())]]);
            l.push(1);
        }
        for _ in 0..neg.len() {
            s.push(scores[neg[rng.random_range(0..neg.len())]]);
            l.push(0);
        }
        if let Some(a) = auroc(&s, &l) {
            stats.push(a);
        }
    }
    stats.sort_by(f64::total_cmp);
    let q = |p: f64| stats[((stats.len() - 1) as f64 * p).round() as usize];
    Some((q(0.025), q(0.975)))
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholded {
    pub threshold: f64,
    pub balanced_accuracy: f64,
    pub tpr: f64,
    pub fpr: f64,
}

/// Positive when score >= threshold.
pub fn at_threshold(scores: &[f64], labels: &[u8], threshold: f64) -> Thresholded {
    let (mut tp, mut fp, mut pos, mut neg) = (0usize, 0usize, 0usize, 0usize);
    for (s, l) in scores.iter().zip(labels) {
        let pred = *s >= threshold;
        if *l == 1 {
            pos += 1;
            tp += pred as usize;
        } else {
            neg += 1;
            fp += pred as usize;
        }
    }
    let tpr = if pos > 0 {
        tp as f64 / pos as f64
    } else {
        f64::NAN
    };
    let fpr = if neg > 0 {
        fp as f64 / neg as f64
    } else {
        f64::NAN
    };
    Thresholded {
        threshold,
        balanced_accuracy: (tpr + (1.0 - fpr)) / 2.0,
        tpr,
        fpr,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum ThresholdRule {
    /// The threshold that maximises balanced accuracy on validation data.
    MaxBalancedAccuracy,
    /// The lowest threshold whose validation false-positive rate is at most `fpr`.
    TargetFpr { fpr: f64 },
}

/// Chooses a threshold on validation scores; candidates are midpoints between
/// consecutive distinct scores, so the choice does not sit on a training point.
pub fn choose_threshold(scores: &[f64], labels: &[u8], rule: ThresholdRule) -> Thresholded {
    let mut sorted: Vec<f64> = scores.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.dedup();
    let mut cands = Vec::with_capacity(sorted.len() + 1);
    cands.push(sorted.first().copied().unwrap_or(0.5) - 1e-6);
    for w in sorted.windows(2) {
        cands.push((w[0] + w[1]) / 2.0);
    }
    cands.push(sorted.last().copied().unwrap_or(0.5) + 1e-6);
    let mut best: Option<Thresholded> = None;
    for t in cands {
        let m = at_threshold(scores, labels, t);
        let better = match (rule, &best) {
            (_, None) => true,
            (ThresholdRule::MaxBalancedAccuracy, Some(b)) => {
                m.balanced_accuracy > b.balanced_accuracy
            }
            (ThresholdRule::TargetFpr { fpr }, Some(b)) => {
                (m.fpr <= fpr && (b.fpr > fpr || m.tpr > b.tpr)) || (b.fpr > fpr && m.fpr < b.fpr)
            }
        };
        if better {
            best = Some(m);
        }
    }
    best.unwrap_or_else(|| at_threshold(scores, labels, 0.5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_known_values() {
        assert_eq!(auroc(&[0.1, 0.2, 0.8, 0.9], &[0, 0, 1, 1]), Some(1.0));
        assert_eq!(auroc(&[0.9, 0.8, 0.2, 0.1], &[0, 0, 1, 1]), Some(0.0));
        assert_eq!(auroc(&[0.5, 0.5, 0.5, 0.5], &[0, 1, 0, 1]), Some(0.5));
        // sklearn.metrics.roc_auc_score([0,0,1,1,0,1],[.1,.4,.35,.8,.5,.2]) == 0.5555...
        let a = auroc(&[0.1, 0.4, 0.35, 0.8, 0.5, 0.2], &[0, 0, 1, 1, 0, 1]).unwrap();
        assert!((a - 5.0 / 9.0).abs() < 1e-12, "{a}");
        assert_eq!(auroc(&[0.1, 0.2], &[1, 1]), None);
    }

    #[test]
    fn bootstrap_interval_brackets_the_estimate_and_is_seeded() {
        let scores: Vec<f64> = (0..200)
            .map(|i| (i as f64 * 0.37).sin() + if i % 2 == 0 { 0.8 } else { 0.0 })
            .collect();
        let labels: Vec<u8> = (0..200).map(|i| (i % 2 == 0) as u8).collect();
        let a = auroc(&scores, &labels).unwrap();
        let (lo, hi) = auroc_ci(&scores, &labels, 500, 7).unwrap();
        assert!(lo < a && a < hi && hi - lo < 0.3, "{lo} {a} {hi}");
        assert_eq!(auroc_ci(&scores, &labels, 500, 7), Some((lo, hi)));
    }

    #[test]
    fn thresholds() {
        let s = [0.1, 0.2, 0.3, 0.6, 0.7, 0.9];
        let l = [0, 0, 1, 0, 1, 1];
        let m = choose_threshold(&s, &l, ThresholdRule::MaxBalancedAccuracy);
        assert!(
            (m.balanced_accuracy - (2.0 / 3.0 + 2.0 / 3.0) / 2.0).abs() < 1e-9
                || m.balanced_accuracy > 0.66
        );
        let f = choose_threshold(&s, &l, ThresholdRule::TargetFpr { fpr: 0.0 });
        assert_eq!(f.fpr, 0.0);
        assert!((f.tpr - 2.0 / 3.0).abs() < 1e-9, "{f:?}");
        let t = at_threshold(&s, &l, 0.65);
        assert_eq!((t.tpr, t.fpr), (2.0 / 3.0, 0.0));
    }
}
