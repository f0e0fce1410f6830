//! Training a logistic-regression probe on pooled activations with
//! linfa-logistic: standardisation, L2 strength chosen by stratified k-fold
//! cross-validation, and a threshold chosen on a held-out validation split.

use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2, Axis};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::metrics::{self, ThresholdRule, Thresholded};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Seeds the validation split and the cross-validation folds.
    pub seed: u64,
    /// Share of the training data held out to choose the threshold.
    pub validation_share: f64,
    /// Cross-validation folds; each class needs at least this many examples.
    pub folds: usize,
    /// L2 strengths tried, ascending: ties in CV AUROC go to the later one.
    pub l2_grid: Vec<f64>,
    pub threshold_rule: ThresholdRule,
    /// The optimiser's iteration cap per fit.
    pub max_iterations: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            seed: crate::util::DEFAULT_SEED,
            validation_share: 0.2,
            folds: 5,
            l2_grid: vec![0.01, 0.1, 1.0, 10.0, 100.0],
            threshold_rule: ThresholdRule::MaxBalancedAccuracy,
            max_iterations: 200,
        }
    }
}

/// A linear probe on standardised activations:
/// score = sigmoid(w · (x − mean) / std + bias).
#[derive(Debug, Clone)]
pub struct Probe {
    pub w: Vec<f32>,
    pub bias: f64,
    /// Standardisation statistics (a std ≤ 1e-6 becomes 1).
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// The L2 strength it was fitted with.
    pub l2: f64,
}

/// A trained probe and the figures it was chosen by.
#[derive(Debug, Clone)]
pub struct Trained {
    /// Standardised on the fitting split, at the L2 strength cross-validation chose.
    pub probe: Probe,
    /// Mean out-of-fold AUROC at that strength.
    pub cv_auroc: f64,
    /// AUROC on the held-out validation split (NaN when it has one class).
    pub validation_auroc: f64,
    /// The threshold chosen on the validation split, with its rates there.
    pub threshold: Thresholded,
    /// Examples fitted on and held out.
    pub n_fit: usize,
    pub n_validation: usize,
}

/// Stratified split of indices into (first, second) with `share` in the second.
pub fn stratified_split(labels: &[u8], share: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for class in [0u8, 1u8] {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        idx.shuffle(&mut rng);
        let k = ((idx.len() as f64) * share).round() as usize;
        let k = k.clamp(
            1.min(idx.len()),
            idx.len().saturating_sub(1).max(1).min(idx.len()),
        );
        b.extend_from_slice(&idx[..k]);
        a.extend_from_slice(&idx[k..]);
    }
    a.sort_unstable();
    b.sort_unstable();
    (a, b)
}

fn stratified_folds(labels: &[usize], k: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x9e37_79b9);
    let mut folds = vec![Vec::new(); k];
    for class in [0usize, 1] {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        idx.shuffle(&mut rng);
        for (j, i) in idx.into_iter().enumerate() {
            folds[j % k].push(i);
        }
    }
    folds
}

pub(crate) struct Fitted {
    pub(crate) w: Array1<f64>,
    pub(crate) b: f64,
}

impl Fitted {
    fn scores(&self, x: &Array2<f64>) -> Vec<f64> {
        x.dot(&self.w)
            .iter()
            .map(|z| 1.0 / (1.0 + (-(z + self.b)).exp()))
            .collect()
    }
}

/// L2-regularised logistic regression with label 1 as the positive class.
pub(crate) fn fit(x: &Array2<f64>, y: &[usize], l2: f64, max_iter: u64) -> Result<Fitted> {
    let ds = Dataset::new(x.clone(), Array1::from_vec(y.to_vec()));
    let model = LogisticRegression::default()
        .alpha(l2)
        .max_iterations(max_iter)
        .fit(&ds)
        .map_err(|e| Error::Usage(format!("logistic regression did not fit: {e}")))?;
    // linfa takes the first label it sees as positive; we want label 1.
    let sign = if model.labels().pos.class == 1 {
        1.0
    } else {
        -1.0
    };
    Ok(Fitted {
        w: model.params().mapv(|v| v * sign),
        b: model.intercept() * sign,
    })
}

/// Trains on rows of `x` (pooled activations) with 0/1 `labels`.
pub fn train(x: &[Vec<f32>], labels: &[u8], opts: &TrainOptions) -> Result<Trained> {
    let n = x.len();
    let d = x.first().map(Vec::len).unwrap_or(0);
    if n != labels.len() || n < 10 || d == 0 {
        return Err(Error::Usage(format!(
            "training needs at least 10 examples with activations ({n} rows, {} labels)",
            labels.len()
        )));
    }
    let pos = labels.iter().filter(|&&l| l == 1).count();
    if pos < opts.folds || n - pos < opts.folds {
        return Err(Error::Usage(format!(
            "too few examples of a class for {}-fold cross-validation ({pos} positive, {} negative)",
            opts.folds,
            n - pos
        )));
    }
    let (fit_idx, val_idx) = stratified_split(labels, opts.validation_share, opts.seed);

    // Standardise with statistics of the fitting split only.
    let xa = Array2::from_shape_fn((n, d), |(i, j)| x[i][j] as f64);
    let xf = xa.select(Axis(0), &fit_idx);
    let mean = xf.mean_axis(Axis(0)).unwrap_or_else(|| Array1::zeros(d));
    let std = xf
        .std_axis(Axis(0), 0.0)
        .mapv(|s| if s > 1e-6 { s } else { 1.0 });
    let z = (&xa - &mean) / &std;
    let zf = z.select(Axis(0), &fit_idx);
    let zv = z.select(Axis(0), &val_idx);
    let yf: Vec<usize> = fit_idx.iter().map(|&i| labels[i] as usize).collect();
    let yv: Vec<u8> = val_idx.iter().map(|&i| labels[i]).collect();

    let folds = stratified_folds(&yf, opts.folds, opts.seed);
    let mut best = (
        f64::NEG_INFINITY,
        opts.l2_grid.first().copied().unwrap_or(1.0),
    );
    for &l2 in &opts.l2_grid {
        let mut aucs = Vec::new();
        for held in &folds {
            let train_i: Vec<usize> = (0..yf.len()).filter(|i| !held.contains(i)).collect();
            let m = fit(
                &zf.select(Axis(0), &train_i),
                &train_i.iter().map(|&i| yf[i]).collect::<Vec<_>>(),
                l2,
                opts.max_iterations,
            )?;
            let s = m.scores(&zf.select(Axis(0), held));
            let l: Vec<u8> = held.iter().map(|&i| yf[i] as u8).collect();
            if let Some(a) = metrics::auroc(&s, &l) {
                aucs.push(a);
            }
        }
        let mean_auc = aucs.iter().sum::<f64>() / aucs.len().max(1) as f64;
        // Ties go to the stronger regulariser (later in an ascending grid).
        if mean_auc >= best.0 - 1e-12 {
            best = (mean_auc, l2);
        }
    }
    let model = fit(&zf, &yf, best.1, opts.max_iterations)?;
    let sv = model.scores(&zv);
    let validation_auroc = metrics::auroc(&sv, &yv).unwrap_or(f64::NAN);
    let threshold = metrics::choose_threshold(&sv, &yv, opts.threshold_rule);
    Ok(Trained {
        probe: Probe {
            w: model.w.iter().map(|v| *v as f32).collect(),
            bias: model.b,
            mean: mean.iter().map(|v| *v as f32).collect(),
            std: std.iter().map(|v| *v as f32).collect(),
            l2: best.1,
        },
        cv_auroc: best.0,
        validation_auroc,
        threshold,
        n_fit: fit_idx.len(),
        n_validation: val_idx.len(),
    })
}
