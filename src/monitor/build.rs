//! Making monitors: what every new monitor file holds besides its probe
//! (a [`Draft`]), one monitor per block trained on a model's activations
//! ([`train_layers`]), and a repeng direction calibrated into a monitor
//! ([`import_direction`]). The CLI only parses flags and prints.

use crate::activations::cache::{cached_activations, ActCache, ActSpec};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::model::{Pool, Precision};
use crate::monitor::data::Labeled;
use crate::monitor::eval::{evaluate, held_out_metrics};
use crate::monitor::import::calibrate;
use crate::monitor::metrics::{ThresholdRule, Thresholded};
use crate::monitor::train::{train, Probe, TrainOptions};
use crate::monitor::{
    BaseModel, Classifier, Hook, Labels, Metrics, Monitor, MonitorMeta, Provenance, FORMAT,
    FORMAT_VERSION,
};

/// Who a new monitor is and what it reads: everything in monitor.json but
/// the probe and its figures.
#[derive(Debug, Clone)]
pub struct Draft {
    pub name: String,
    pub concept: String,
    pub description: String,
    /// (negative, positive) label names.
    pub labels: (String, String),
    pub base: BaseModel,
    pub pooling: Pool,
    pub seed: u64,
}

/// How the probe was fitted, for its provenance and base figures.
pub struct Fit<'a> {
    pub data: &'a Labeled,
    pub n_train: usize,
    pub n_validation: usize,
    /// `validation` or `calibration`: the split the base figures come from,
    /// and its size (positives, when counted).
    pub split: &'a str,
    pub n: usize,
    pub n_positive: usize,
    pub auroc: f64,
    pub threshold: Thresholded,
    /// The rule the threshold was chosen by.
    pub threshold_rule: ThresholdRule,
}

/// The base model as a new monitor's file records it.
pub fn base_model(ck: &Checkpoint, id: &str) -> Result<BaseModel> {
    let fingerprint = ck.fingerprint()?;
    let forward = ck.forward_identity()?;
    Ok(BaseModel {
        id: id.to_string(),
        forward_identity: (forward != fingerprint).then_some(forward),
        fingerprint,
        architecture: ck.config.model_type.clone(),
        num_layers: ck.config.num_layers,
        d_model: ck.config.hidden_size,
    })
}

impl Draft {
    /// The monitor reading block `layer`, with figures from its own fit
    /// (replaced by [`held_out_metrics`] when a test set is given).
    pub fn finish(&self, name: String, layer: usize, probe: Probe, fit: Fit) -> Monitor {
        Monitor {
            meta: MonitorMeta {
                format: FORMAT.into(),
                format_version: FORMAT_VERSION,
                name,
                concept: self.concept.clone(),
                description: self.description.clone(),
                labels: Labels {
                    negative: self.labels.0.clone(),
                    positive: self.labels.1.clone(),
                },
                base_model: self.base.clone(),
                hook: Hook::resid_post(layer),
                pooling: self.pooling,
                classifier: Classifier {
                    kind: "logistic".into(),
                    bias: probe.bias,
                    l2: probe.l2,
                    threshold: fit.threshold.threshold,
                    threshold_rule: fit.threshold_rule,
                },
                provenance: Provenance {
                    train_data_sha256: fit.data.sha256.clone(),
                    n_train: fit.n_train,
                    n_validation: fit.n_validation,
                    seed: self.seed,
                    probegate_version: env!("CARGO_PKG_VERSION").into(),
                    repaired_for: None,
                },
                base_metrics: Metrics {
                    split: fit.split.into(),
                    data_sha256: fit.data.sha256.clone(),
                    n: fit.n,
                    n_positive: fit.n_positive,
                    auroc: fit.auroc,
                    auroc_ci95: [fit.auroc, fit.auroc],
                    balanced_accuracy: fit.threshold.balanced_accuracy,
                    tpr: fit.threshold.tpr,
                    fpr: fit.threshold.fpr,
                },
            },
            w: probe.w,
            mean: probe.mean,
            std: probe.std,
            dir: None,
        }
    }
}

/// Progress callbacks: (stage, done, total).
pub type Progress<'a> = &'a mut dyn FnMut(&str, usize, usize);

fn acts(
    ck: &Checkpoint,
    cache: &ActCache,
    data: &Labeled,
    layers: &[usize],
    spec: ActSpec,
    stage: &str,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<std::collections::BTreeMap<usize, candle_core::Tensor>> {
    let (mut seen, total) = (0, data.texts.len());
    cached_activations(ck, cache, &data.texts, layers, spec, &mut |n| {
        seen += n;
        progress(stage, seen, total)
    })
}

/// One trained monitor and the validation AUROC it was chosen by.
pub struct Trained {
    pub layer: usize,
    pub validation_auroc: f64,
    pub monitor: Monitor,
}

/// Trains one monitor per block of `layers` on `train` (one forward pass
/// for all of them), with base figures from `test` when it is given. Names
/// get an `-l{layer}` suffix when `suffix` is set.
#[allow(clippy::too_many_arguments)]
pub fn train_layers(
    ck: &Checkpoint,
    cache: &ActCache,
    draft: &Draft,
    layers: &[usize],
    suffix: bool,
    spec: ActSpec,
    opts: &TrainOptions,
    train_data: &Labeled,
    test_data: Option<&Labeled>,
    progress: Progress,
) -> Result<Vec<Trained>> {
    let train_acts = acts(ck, cache, train_data, layers, spec, "train acts", progress)?;
    let test_acts = match test_data {
        Some(t) => Some(acts(ck, cache, t, layers, spec, "test acts", progress)?),
        None => None,
    };
    let mut out = Vec::new();
    for &layer in layers {
        let x = train_acts
            .get(&layer)
            .ok_or_else(|| Error::Usage(format!("no activations at block {layer}")))?;
        let tr = train(&x.to_vec2::<f32>()?, &train_data.labels, opts)?;
        let name = if suffix {
            format!("{}-l{layer}", draft.name)
        } else {
            draft.name.clone()
        };
        let validation_auroc = tr.validation_auroc;
        let mut m = draft.finish(
            name,
            layer,
            tr.probe,
            Fit {
                data: train_data,
                n_train: tr.n_fit,
                n_validation: tr.n_validation,
                split: "validation",
                n: tr.n_validation,
                n_positive: 0,
                auroc: tr.validation_auroc,
                threshold: tr.threshold,
                threshold_rule: opts.threshold_rule,
            },
        );
        if let (Some(td), Some(ta)) = (test_data, &test_acts) {
            if let Some(x) = ta.get(&layer) {
                let e = evaluate(&m, &m.scores(x)?, &td.labels, draft.seed)?;
                m.meta.base_metrics = held_out_metrics(&e, td);
            }
        }
        out.push(Trained {
            layer,
            validation_auroc,
            monitor: m,
        });
    }
    Ok(out)
}

/// What calibrating a direction found besides the monitor.
pub struct Imported {
    pub monitor: Monitor,
    /// The direction pointed at the negative class and was turned round.
    pub flipped: bool,
}

/// A bare direction at block `layer` calibrated on `calib` into a monitor
/// (figures from `test` when given).
#[allow(clippy::too_many_arguments)]
pub fn import_direction(
    ck: &Checkpoint,
    cache: &ActCache,
    draft: &Draft,
    layer: usize,
    direction: &[f32],
    rule: ThresholdRule,
    calib: &Labeled,
    test: Option<&Labeled>,
) -> Result<Imported> {
    let spec = ActSpec {
        pool: draft.pooling,
        precision: Precision::F32,
        batch_size: crate::util::DEFAULT_BATCH_SIZE,
    };
    let mut quiet = |_: &str, _: usize, _: usize| {};
    let a = acts(ck, cache, calib, &[layer], spec, "calibration", &mut quiet)?;
    let x = a
        .get(&layer)
        .ok_or_else(|| Error::Usage(format!("no activations at block {layer}")))?;
    let cal = calibrate(
        direction,
        &x.to_vec2::<f32>()?,
        &calib.labels,
        rule,
        draft.seed,
    )?;
    let d = direction.len();
    let mut m = draft.finish(
        draft.name.clone(),
        layer,
        Probe {
            w: cal.w,
            mean: vec![0.0; d],
            std: vec![1.0; d],
            bias: cal.bias,
            l2: 0.0,
        },
        Fit {
            data: calib,
            n_train: 0,
            n_validation: calib.labels.len(),
            split: "calibration",
            n: calib.labels.len(),
            n_positive: calib.n_positive(),
            auroc: cal.calibration_auroc,
            threshold: cal.threshold,
            threshold_rule: rule,
        },
    );
    if let Some(t) = test {
        let ta = acts(ck, cache, t, &[layer], spec, "test", &mut quiet)?;
        if let Some(x) = ta.get(&layer) {
            let e = evaluate(&m, &m.scores(x)?, &t.labels, draft.seed)?;
            m.meta.base_metrics = held_out_metrics(&e, t);
        }
    }
    Ok(Imported {
        monitor: m,
        flipped: cal.flipped,
    })
}
