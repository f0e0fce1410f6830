//! Activation monitors: the artifact, its loading checks, and scoring.
//!
//! A monitor is a directory in the JSON-sidecar + safetensors pattern that
//! PEFT and SAELens use:
//!
//! * `monitor.json` — everything a reader needs to trust and apply the probe
//!   (schema: `docs/monitor.schema.json`);
//! * `monitor.safetensors` — f32 tensors `w`, `mean` and `std`, each [d_model].
//!
//! The score of a pooled activation x is `sigmoid(w · (x − mean) / std + b)`;
//! the monitor fires when the score is at least `threshold`.

pub mod data;
pub mod metrics;
pub mod train;
pub mod eval;
pub mod build;
pub mod import;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::model::Pool;
use metrics::ThresholdRule;

pub const FORMAT: &str = "probegate.monitor";
pub const FORMAT_VERSION: u32 = 1;
pub const JSON_FILE: &str = "monitor.json";
pub const TENSOR_FILE: &str = "monitor.safetensors";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseModel {
    /// How the base was referred to when the monitor was trained.
    pub id: String,
    /// sha256 of the base's weight files.
    pub fingerprint: String,
    /// What else decides the base's forward pass, when the weight files do
    /// not hold it (a Hugging Face directory's config and tokenizer, an
    /// adapter's scales): [`Checkpoint::forward_identity`]. Absent when it is
    /// the fingerprint itself, as for a GGUF base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_identity: Option<String>,
    pub architecture: String,
    pub num_layers: usize,
    pub d_model: usize,
}

/// What a monitor's base is checked against: the model it is about to read.
#[derive(Debug, Clone)]
pub struct BaseFacts {
    pub fingerprint: String,
    pub forward_identity: String,
    pub d_model: usize,
    pub num_layers: usize,
}

impl BaseFacts {
    pub fn of(ck: &Checkpoint) -> Result<Self> {
        Ok(BaseFacts {
            fingerprint: ck.fingerprint()?,
            forward_identity: ck.forward_identity()?,
            d_model: ck.config.hidden_size,
            num_layers: ck.config.num_layers,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hook {
    /// 0-based decoder block; the residual stream after it.
    pub layer: usize,
    /// Always `resid_post`.
    pub point: String,
    /// `blocks.{layer}.hook_resid_post`
    pub transformer_lens: String,
    /// `model.layers.{layer}` (output), i.e. transformers `hidden_states[layer + 1]`.
    pub hf_module: String,
}

impl Hook {
    pub fn resid_post(layer: usize) -> Self {
        Hook {
            layer,
            point: "resid_post".into(),
            transformer_lens: format!("blocks.{layer}.hook_resid_post"),
            hf_module: format!("model.layers.{layer}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Labels {
    /// Name of label 0.
    pub negative: String,
    /// Name of label 1, the class the monitor fires on.
    pub positive: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Classifier {
    /// Always `logistic`.
    pub kind: String,
    pub bias: f64,
    /// L2 strength chosen by cross-validation (linfa-logistic's `alpha`).
    pub l2: f64,
    pub threshold: f64,
    pub threshold_rule: ThresholdRule,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// sha256 of the training texts in order, NUL-separated (labels not included).
    pub train_data_sha256: String,
    /// Examples the probe was fitted on.
    pub n_train: usize,
    /// Examples held out to choose the threshold.
    pub n_validation: usize,
    /// The seed of the splits and cross-validation folds.
    pub seed: u64,
    /// The probegate that made the monitor.
    pub probegate_version: String,
    /// Set when the monitor was repaired for a candidate (realignment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repaired_for: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// What the metrics were measured on: `held-out test`, or the fit's
    /// own `validation` or `calibration` split when no test set was given.
    pub split: String,
    /// sha256 of the data set the split came from (as `train_data_sha256`):
    /// revalidation takes a test set only when its hash matches.
    pub data_sha256: String,
    /// Examples in the split, and how many are positive.
    pub n: usize,
    pub n_positive: usize,
    pub auroc: f64,
    /// 95% stratified percentile bootstrap of `auroc`, 1000 resamples;
    /// `[auroc, auroc]` when measured on the fit's own split.
    pub auroc_ci95: [f64; 2],
    pub balanced_accuracy: f64,
    pub tpr: f64,
    pub fpr: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorMeta {
    pub format: String,
    pub format_version: u32,
    pub name: String,
    pub concept: String,
    pub description: String,
    pub labels: Labels,
    pub base_model: BaseModel,
    pub hook: Hook,
    pub pooling: Pool,
    pub classifier: Classifier,
    pub provenance: Provenance,
    pub base_metrics: Metrics,
}

/// A loaded monitor: metadata plus its vectors.
#[derive(Debug, Clone)]
pub struct Monitor {
    pub meta: MonitorMeta,
    pub w: Vec<f32>,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub dir: Option<PathBuf>,
}

/// What to do when a monitor's base fingerprint differs from the model it is used with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseCheck {
    Require,
    AllowMismatch,
}

/// A monitor name is a directory (`repaired/<name>`) and a cell in reports
/// and PR comments: 1-128 of A-Z a-z 0-9 . _ -, and not `.` or `..`.
pub fn is_valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && n != "."
        && n != ".."
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

impl Monitor {
    pub fn d_model(&self) -> usize {
        self.w.len()
    }

    /// The probe as one linear map on raw activations: score = sigmoid(x·w' + b').
    pub fn folded(&self) -> (Vec<f64>, f64) {
        let mut b = self.meta.classifier.bias;
        let w: Vec<f64> = self
            .w
            .iter()
            .zip(self.mean.iter().zip(&self.std))
            .map(|(w, (m, s))| {
                let wf = *w as f64 / *s as f64;
                b -= wf * *m as f64;
                wf
            })
            .collect();
        (w, b)
    }

    /// Probability scores for rows of `x` ([n, d_model]).
    pub fn scores(&self, x: &Tensor) -> Result<Vec<f64>> {
        let rows = x.to_vec2::<f32>()?;
        let (w, b) = self.folded();
        rows.iter()
            .map(|r| {
                if r.len() != w.len() {
                    return Err(Error::Usage(format!(
                        "monitor {} expects d_model {}, activations have {}",
                        self.meta.name,
                        w.len(),
                        r.len()
                    )));
                }
                let z: f64 = r.iter().zip(&w).map(|(x, w)| *x as f64 * w).sum::<f64>() + b;
                Ok(1.0 / (1.0 + (-z).exp()))
            })
            .collect()
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let d = self.w.len();
        let t = |v: &Vec<f32>| Tensor::from_vec(v.clone(), (d,), &Device::Cpu);
        let tensors = vec![
            ("w".to_string(), t(&self.w)?),
            ("mean".to_string(), t(&self.mean)?),
            ("std".to_string(), t(&self.std)?),
        ];
        let mut md = HashMap::new();
        md.insert("format".to_string(), FORMAT.to_string());
        crate::util::save_safetensors(tensors, md, &dir.join(TENSOR_FILE))?;
        let json = serde_json::to_string_pretty(&self.meta)
            .map_err(|e| Error::Usage(format!("serialising monitor: {e}")))?;
        let p = dir.join(JSON_FILE);
        crate::util::write_atomic(&p, (json + "\n").as_bytes())
    }

    /// Loads and checks every field and shape.
    pub fn load(dir: &Path) -> Result<Self> {
        let jp = dir.join(JSON_FILE);
        let meta: MonitorMeta = crate::util::read_json(&jp)?;
        let bad = |field: &str, msg: String| Err(Error::field(&jp, field, msg));
        if meta.format != FORMAT {
            return bad(
                "format",
                format!("expected \"{FORMAT}\", found \"{}\"", meta.format),
            );
        }
        if meta.format_version != FORMAT_VERSION {
            return bad(
                "format_version",
                format!(
                    "this probegate reads version {FORMAT_VERSION}, found {}",
                    meta.format_version
                ),
            );
        }
        // The name becomes a path (`repaired/<name>`) and a cell in reports and
        // PR comments: only characters that are safe in all three.
        let n = &meta.name;
        if !is_valid_name(n) {
            return bad(
                "name",
                format!("{n:?} must be 1-128 characters of A-Z a-z 0-9 . _ - (it names a directory), and not . or .."),
            );
        }
        if meta.hook.point != "resid_post" {
            return bad(
                "hook.point",
                format!("only resid_post is supported, found {}", meta.hook.point),
            );
        }
        if meta.hook.layer >= meta.base_model.num_layers {
            return bad(
                "hook.layer",
                format!(
                    "block {} is beyond the base model's depth ({} blocks)",
                    meta.hook.layer, meta.base_model.num_layers
                ),
            );
        }
        if meta.classifier.kind != "logistic" {
            return bad(
                "classifier.kind",
                format!("only logistic is supported, found {}", meta.classifier.kind),
            );
        }
        for (field, v) in [
            ("classifier.bias", meta.classifier.bias),
            ("classifier.threshold", meta.classifier.threshold),
            ("classifier.l2", meta.classifier.l2),
        ] {
            if !v.is_finite() {
                return bad(field, format!("{v} is not a finite number"));
            }
        }
        if !(0.0..=1.0).contains(&meta.classifier.threshold) {
            return bad(
                "classifier.threshold",
                "must be a probability in [0, 1]".into(),
            );
        }
        if meta.base_model.fingerprint.len() != 64
            || !meta
                .base_model
                .fingerprint
                .chars()
                .all(|c| c.is_ascii_hexdigit())
        {
            return bad(
                "base_model.fingerprint",
                "expected a sha256 hex digest".into(),
            );
        }

        let tp = dir.join(TENSOR_FILE);
        let bytes =
            crate::assets::read_bounded(&tp, crate::assets::MAX_SMALL_FILE_BYTES, "monitor")?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::Safetensors {
            path: tp.clone(),
            msg: e.to_string(),
        })?;
        let d = meta.base_model.d_model;
        let vec = |name: &str| -> Result<Vec<f32>> {
            let v = st
                .tensor(name)
                .map_err(|_| Error::tensor(&tp, name, "missing"))?;
            if v.dtype() != safetensors::Dtype::F32 || v.shape() != [d] {
                return Err(Error::tensor(
                    &tp,
                    name,
                    format!(
                        "expected f32 [{d}] (base_model.d_model), found {:?} {:?}",
                        v.dtype(),
                        v.shape()
                    ),
                ));
            }
            let out: Vec<f32> = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            if let Some(i) = out.iter().position(|x| !x.is_finite()) {
                return Err(Error::tensor(
                    &tp,
                    name,
                    format!("element {i} is {} (not finite)", out[i]),
                ));
            }
            Ok(out)
        };
        let (w, mean, std) = (vec("w")?, vec("mean")?, vec("std")?);
        if let Some(i) = std.iter().position(|s| *s <= 0.0) {
            return Err(Error::tensor(
                &tp,
                "std",
                format!("element {i} is not positive"),
            ));
        }
        Ok(Monitor {
            meta,
            w,
            mean,
            std,
            dir: Some(dir.to_path_buf()),
        })
    }

    /// Refuses a monitor trained on another base unless the caller allows it.
    pub fn check_base(&self, base: &BaseFacts, check: BaseCheck) -> Result<()> {
        let where_ = self.dir.clone().unwrap_or_default().join(JSON_FILE);
        let (d_model, num_layers) = (base.d_model, base.num_layers);
        if self.d_model() != d_model || self.meta.hook.layer >= num_layers {
            return Err(Error::field(
                where_,
                "base_model",
                format!(
                    "monitor `{}` reads block {} with d_model {}, but the model has {} blocks of width {}",
                    self.meta.name,
                    self.meta.hook.layer,
                    self.d_model(),
                    num_layers,
                    d_model
                ),
            ));
        }
        if check == BaseCheck::AllowMismatch {
            return Ok(());
        }
        let short = |s: &str| s[..12.min(s.len())].to_string();
        let mine = &self.meta.base_model;
        if mine.fingerprint != base.fingerprint {
            return Err(Error::field(
                where_,
                "base_model.fingerprint",
                format!(
                    "monitor `{}` was trained on base {} but is used with {}; pass --allow-base-mismatch to use it anyway",
                    self.meta.name,
                    short(&mine.fingerprint),
                    short(&base.fingerprint)
                ),
            ));
        }
        match &mine.forward_identity {
            Some(f) if *f != base.forward_identity => Err(Error::field(
                where_,
                "base_model.forward_identity",
                format!(
                    "monitor `{}` was trained on these weights under another config, tokenizer or \
                     adapter scale ({} here, {} at training); pass --allow-base-mismatch to use it anyway",
                    self.meta.name,
                    short(&base.forward_identity),
                    short(f)
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// Checks every monitor of a suite against the model it is about to read.
pub fn check_suite_base(monitors: &[Monitor], base: &BaseFacts, check: BaseCheck) -> Result<()> {
    monitors.iter().try_for_each(|m| m.check_base(base, check))
}

/// Monitors grouped by pooling, with the sorted blocks each group reads, so
/// one forward pass per pooling serves the whole group.
pub fn by_pooling<'a>(
    monitors: impl IntoIterator<Item = &'a Monitor>,
) -> Vec<(Pool, Vec<&'a Monitor>, Vec<usize>)> {
    let all: Vec<&Monitor> = monitors.into_iter().collect();
    let mut out = Vec::new();
    for pool in [Pool::Last, Pool::Mean] {
        let group: Vec<&Monitor> = all
            .iter()
            .copied()
            .filter(|m| m.meta.pooling == pool)
            .collect();
        if group.is_empty() {
            continue;
        }
        let mut layers: Vec<usize> = group.iter().map(|m| m.meta.hook.layer).collect();
        layers.sort_unstable();
        layers.dedup();
        out.push((pool, group, layers));
    }
    out
}

/// Loads every monitor directory under `dir` (a suite), sorted by name.
pub fn load_suite(dir: &Path) -> Result<Vec<Monitor>> {
    if names_a_monitor(dir) {
        return Ok(vec![Monitor::load(dir)?]);
    }
    // A monitor's own monitor.json names that monitor; any other file is a
    // mistake worth more than the OS's "Not a directory".
    if dir.is_file() {
        return match (dir.file_name(), dir.parent()) {
            (Some(f), Some(parent)) if f == JSON_FILE => Ok(vec![Monitor::load(parent)?]),
            _ => Err(not_a_suite(dir, "this is a file")),
        };
    }
    let mut out: Vec<Monitor> = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    // Symlinked directories are followed (a suite may link its monitors in),
    // each real directory once, so a link to an ancestor cannot loop.
    let mut seen = std::collections::HashSet::new();
    let mut where_from: HashMap<String, PathBuf> = HashMap::new();
    while let Some(d) = stack.pop() {
        let real = std::fs::canonicalize(&d).map_err(|e| Error::io(&d, e))?;
        if !seen.insert(real) {
            continue;
        }
        let entries = std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))?;
        for e in entries {
            let p = e.map_err(|e| Error::io(&d, e))?.path();
            if p.is_dir() {
                if names_a_monitor(&p) {
                    let m = Monitor::load(&p)?;
                    // Two monitors of one name would share repaired/<name> and a report row.
                    if let Some(first) = where_from.insert(m.meta.name.clone(), p.clone()) {
                        if std::fs::canonicalize(&first).ok() == std::fs::canonicalize(&p).ok() {
                            continue;
                        }
                        return Err(Error::field(
                            p.join(JSON_FILE),
                            "name",
                            format!(
                                "{:?} is also the name of the monitor in {}: names must be unique in a suite",
                                m.meta.name,
                                first.display()
                            ),
                        ));
                    }
                    out.push(m);
                } else {
                    stack.push(p);
                }
            }
        }
    }
    if out.is_empty() {
        return Err(not_a_suite(dir, "no monitor here"));
    }
    out.sort_by(|a, b| a.meta.name.cmp(&b.meta.name));
    Ok(out)
}

/// Whether `dir` holds a monitor.json of any kind: one that is a link to a
/// device or dangles is that monitor's error, not a folder to walk into.
fn names_a_monitor(dir: &Path) -> bool {
    std::fs::symlink_metadata(dir.join(JSON_FILE)).is_ok()
}

fn not_a_suite(dir: &Path, what: &str) -> Error {
    Error::io(
        dir,
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{what}: a suite is a directory of monitors (directories holding {JSON_FILE}, \
                 at any depth), or one monitor's directory or its {JSON_FILE}"
            ),
        ),
    )
}

/// A monitor shipped in monitors/smollm2, for tests.
#[cfg(test)]
pub(crate) fn shipped(name: &str) -> Monitor {
    Monitor::load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("monitors/smollm2")
            .join(name),
    )
    .unwrap()
}

#[cfg(test)]
mod tests;
