//! Import of repeng control vectors (GGUF, `general.architecture =
//! controlvector`, one f32 tensor `direction.{L}` per layer) as monitors.
//!
//! A control vector is a bare direction: it has no bias, no scale and no
//! threshold. Importing one picks a layer's direction, orients it so the
//! positive class projects higher, fits a one-dimensional logistic calibration
//! of the projection on labeled data, and chooses the threshold there.
//! `direction.L` is read as the residual stream after block L (0-based),
//! the index repeng's `ControlModel` hooks.

use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::Device;

use super::metrics::{self, ThresholdRule, Thresholded};
use super::train::{train, TrainOptions};
use crate::error::{Error, Result};

pub struct ControlVector {
    pub model_hint: Option<String>,
    /// (layer, direction)
    pub directions: Vec<(usize, Vec<f32>)>,
}

pub fn read_control_vector(path: &Path) -> Result<ControlVector> {
    let (content, mut f) = crate::checkpoint::gguf_guard::read_content(path)?;
    match content.metadata.get("general.architecture") {
        Some(gguf_file::Value::String(s)) if s == "controlvector" => {}
        _ => {
            return Err(Error::field(
                path,
                "general.architecture",
                "expected \"controlvector\" (a repeng/llama.cpp control vector)",
            ))
        }
    }
    let model_hint = match content.metadata.get("controlvector.model_hint") {
        Some(gguf_file::Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    let mut directions = Vec::new();
    for (name, info) in &content.tensor_infos {
        let Some(layer) = name
            .strip_prefix("direction.")
            .and_then(|l| l.parse::<usize>().ok())
        else {
            continue;
        };
        let q = info
            .read(&mut f, content.tensor_data_offset, &Device::Cpu)
            .map_err(|e| Error::tensor(path, name, crate::error::candle_msg(&e)))?;
        let t = q.dequantize(&Device::Cpu)?.flatten_all()?;
        let v = t.to_vec1::<f32>()?;
        if v.iter().any(|x| !x.is_finite()) {
            return Err(Error::tensor(path, name, "contains non-finite values"));
        }
        directions.push((layer, v));
    }
    if directions.is_empty() {
        return Err(Error::tensor(
            path,
            "direction.*",
            "the file has no direction tensors",
        ));
    }
    directions.sort_by_key(|d| d.0);
    Ok(ControlVector {
        model_hint,
        directions,
    })
}

pub struct Calibrated {
    pub w: Vec<f32>,
    pub bias: f64,
    pub flipped: bool,
    pub calibration_auroc: f64,
    pub threshold: Thresholded,
}

/// Calibrates `direction` on labeled activations `x`: score = sigmoid(a·(x·d) + c).
pub fn calibrate(
    direction: &[f32],
    x: &[Vec<f32>],
    labels: &[u8],
    rule: ThresholdRule,
    seed: u64,
) -> Result<Calibrated> {
    let proj: Vec<f64> = x
        .iter()
        .map(|r| {
            r.iter()
                .zip(direction)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum()
        })
        .collect();
    let auc = metrics::auroc(&proj, labels)
        .ok_or_else(|| Error::Usage("calibration data needs both classes".into()))?;
    // The logistic fit on the 1-D projection learns sign and scale together.
    let rows: Vec<Vec<f32>> = proj.iter().map(|p| vec![*p as f32]).collect();
    let opts = TrainOptions {
        seed,
        l2_grid: vec![1e-4],
        folds: 2,
        validation_share: 0.0001,
        threshold_rule: rule,
        ..TrainOptions::default()
    };
    let t = train(&rows, labels, &opts)?.probe;
    // Fold standardisation of the 1-D projection back onto the direction.
    let a = t.w[0] as f64 / t.std[0] as f64;
    let c = t.bias - a * t.mean[0] as f64;
    let w: Vec<f32> = direction.iter().map(|d| (*d as f64 * a) as f32).collect();
    let scores: Vec<f64> = proj
        .iter()
        .map(|p| 1.0 / (1.0 + (-(a * p + c)).exp()))
        .collect();
    let threshold = metrics::choose_threshold(&scores, labels, rule);
    Ok(Calibrated {
        w,
        bias: c,
        flipped: a < 0.0,
        calibration_auroc: auc.max(1.0 - auc),
        threshold,
    })
}
