//! The zoo: real update conditions made from a base model, deterministic
//! given a seed, to test and calibrate the gate against. Each condition is a
//! model reference usable wherever a model is accepted.
//!
//! Families: quantization (INT8 and NF4 in bitsandbytes' safetensors layout,
//! GGUF Q8_0 and Q4_0), LoRA (rank 8/32, attention or attention+MLP, two
//! corpora) served unmerged, the same adapters merged and stored as served
//! (bf16, and the base's GGUF types), QLoRA (trained
//! against the NF4 base, served as `nf4(BASE)+ADAPTER`) and full fine-tunes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::lab::finetune::{self, LossPoint, Mode, Targets, TrainConfig, TrainModel, TrainReport};
use crate::util::read_prompts;

pub const MANIFEST: &str = "zoo.json";

/// The update family a condition belongs to, as the study groups them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Quantization,
    Lora,
    MergedLora,
    Qlora,
    FullFineTune,
}

/// How one condition is made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "recipe", rename_all = "snake_case")]
pub enum Recipe {
    /// bitsandbytes-layout safetensors directory (`nf4` or `int8`).
    Bnb { scheme: String },
    /// A GGUF file with block projections requantized (`q8_0` or `q4_0`).
    Gguf { scheme: String },
    /// A LoRA adapter trained on `corpus`; `quantized_base` for QLoRA.
    Lora {
        r: usize,
        targets: Targets,
        corpus: String,
        quantized_base: bool,
    },
    /// `of` (a LoRA condition's name) merged and stored as `storage`.
    Merge {
        of: String,
        /// Absent in manifests written before storage was recorded: f32.
        #[serde(default)]
        storage: Storage,
    },
    /// Every weight trained on `corpus`.
    Full { corpus: String },
}

/// How a merged adapter is stored, as it would be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Storage {
    /// An f32 checkpoint: exactly the unmerged adapter (a copy of its
    /// source in every figure, so not in the default grid).
    #[default]
    F32,
    /// A bf16 checkpoint, as most merged models ship.
    Bf16,
    /// The base's GGUF with every tensor back in the base file's own type.
    BaseGguf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Condition {
    pub name: String,
    pub family: Family,
    pub recipe: Recipe,
}

/// Training budget for the zoo's runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Budget {
    pub lora_steps: usize,
    pub full_steps: usize,
    pub batch_size: usize,
    pub seq_len: usize,
    pub lora_lr: f64,
    pub full_lr: f64,
    pub eval_windows: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            lora_steps: 30,
            full_steps: 20,
            batch_size: 4,
            seq_len: 64,
            lora_lr: 1e-3,
            full_lr: 5e-5,
            eval_windows: 16,
        }
    }
}

/// The default grid: 4 quantizations, 8 LoRA adapters (2 ranks × 2 target
/// sets × 2 corpora), their 16 merges (bf16 and base-GGUF storage), 2 QLoRA
/// and 2 full fine-tunes.
pub fn default_grid(corpora: &[&str]) -> Vec<Condition> {
    let mut out = Vec::new();
    for scheme in ["int8", "nf4"] {
        out.push(Condition {
            name: scheme.into(),
            family: Family::Quantization,
            recipe: Recipe::Bnb {
                scheme: scheme.into(),
            },
        });
    }
    for scheme in ["q8_0", "q4_0"] {
        out.push(Condition {
            name: scheme.into(),
            family: Family::Quantization,
            recipe: Recipe::Gguf {
                scheme: scheme.into(),
            },
        });
    }
    let mut loras = Vec::new();
    for corpus in corpora {
        for r in [8, 32] {
            for targets in [Targets::Attn, Targets::AttnMlp] {
                let t = targets.as_str();
                let name = format!("lora-r{r}-{t}-{corpus}");
                loras.push(name.clone());
                out.push(Condition {
                    name,
                    family: Family::Lora,
                    recipe: Recipe::Lora {
                        r,
                        targets,
                        corpus: corpus.to_string(),
                        quantized_base: false,
                    },
                });
            }
        }
    }
    // Merges stored as they are served: an f32 merge equals its source to
    // 1e-6 (287 of 288 v1 cells), so it measured nothing of its own.
    for (tag, storage) in [("bf16", Storage::Bf16), ("gguf", Storage::BaseGguf)] {
        for of in &loras {
            out.push(Condition {
                name: format!("merged-{tag}-{of}"),
                family: Family::MergedLora,
                recipe: Recipe::Merge {
                    of: of.clone(),
                    storage,
                },
            });
        }
    }
    for corpus in corpora {
        out.push(Condition {
            name: format!("qlora-r8-attn-mlp-{corpus}"),
            family: Family::Qlora,
            recipe: Recipe::Lora {
                r: 8,
                targets: Targets::AttnMlp,
                corpus: corpus.to_string(),
                quantized_base: true,
            },
        });
    }
    for corpus in corpora {
        out.push(Condition {
            name: format!("full-{corpus}"),
            family: Family::FullFineTune,
            recipe: Recipe::Full {
                corpus: corpus.to_string(),
            },
        });
    }
    out
}

/// One built condition, as recorded in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Built {
    pub name: String,
    pub family: Family,
    pub recipe: Recipe,
    /// A model reference for the candidate, usable wherever one is accepted.
    pub reference: String,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub base: String,
    pub base_fingerprint: String,
    pub seed: u64,
    pub budget: Budget,
    pub conditions: Vec<Built>,
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Self> {
        crate::util::read_json(path)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        crate::util::write_atomic(path, text.as_bytes())
    }
}

/// A corpus directory holds train.jsonl and heldout.jsonl.
/// Token windows of a corpus: (train, held-out).
pub type Windows = (Vec<Vec<u32>>, Vec<Vec<u32>>);

pub fn corpus_windows(ck: &Checkpoint, dir: &Path, seq_len: usize) -> Result<Windows> {
    let train = read_prompts(&dir.join("train.jsonl"))?;
    let heldout = read_prompts(&dir.join("heldout.jsonl"))?;
    Ok((
        finetune::windows(ck, &train, seq_len)?,
        finetune::windows(ck, &heldout, seq_len)?,
    ))
}

pub struct RunSpec<'a> {
    pub base: &'a str,
    pub corpus_dir: &'a Path,
    pub mode: Mode,
    pub quantized_base: bool,
    pub config: TrainConfig,
    pub out: &'a Path,
}

/// What a training run leaves in memory: its report and the trained
/// tensors as written (LoRA: `<module>.lora_A` / `.lora_B`).
pub struct TrainOutput {
    pub report: TrainReport,
    pub trained: Vec<(String, candle_core::Tensor)>,
}

/// Trains one LoRA adapter (PEFT directory) or full fine-tune (HF
/// directory) and writes `training.json` with the loss curve beside it.
pub fn run_training(spec: &RunSpec, on_step: &mut dyn FnMut(&LossPoint)) -> Result<TrainOutput> {
    let train_base = if spec.quantized_base {
        format!("nf4({})", spec.base)
    } else {
        spec.base.to_string()
    };
    let ck = Checkpoint::open_str(&train_base)?;
    let (train_w, heldout_w) = corpus_windows(&ck, spec.corpus_dir, spec.config.seq_len)?;
    let model = TrainModel::load(&ck, &spec.mode, spec.config.seed)?;
    let report = finetune::train(
        &model,
        &train_base,
        &train_w,
        &heldout_w,
        &spec.config,
        on_step,
    )?;
    let mut meta = std::collections::BTreeMap::new();
    meta.insert("probegate_trained_on".to_string(), train_base.clone());
    meta.insert(
        "probegate_corpus".to_string(),
        spec.corpus_dir.display().to_string(),
    );
    meta.insert("probegate_seed".to_string(), spec.config.seed.to_string());
    match spec.mode {
        Mode::Lora { .. } => model.save_adapter(spec.out, &train_base, &meta)?,
        Mode::Full => {
            let meta = meta.into_iter().collect();
            crate::export::write_hf_dir(
                spec.out,
                model.trained(),
                &ck.config,
                &ck.tokenizer,
                meta,
                crate::export::OutDtype::F32,
            )?;
        }
    }
    let p = spec.out.join("training.json");
    std::fs::write(
        &p,
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    )
    .map_err(|e| Error::io(&p, e))?;
    Ok(TrainOutput {
        report,
        trained: model.trained(),
    })
}

/// What `zoo build` is asked for.
pub struct BuildRequest {
    /// Base model references (short names or paths).
    pub models: Vec<String>,
    /// Fine-tuning corpora, each a directory with train.jsonl and heldout.jsonl.
    pub corpora: Vec<PathBuf>,
    /// Where each base's zoo goes (`<root>/<base>/`).
    pub root: PathBuf,
    /// Build only conditions whose name contains one of these.
    pub only: Vec<String>,
    pub budget: Budget,
    pub seed: u64,
    /// Rebuild conditions the manifest already lists.
    pub force: bool,
}

/// Progress of a build.
pub enum BuildEvent<'a> {
    /// A condition starts (`index` of `total` for this base).
    Condition {
        model: &'a str,
        index: usize,
        total: usize,
        name: &'a str,
    },
    /// One training step of the condition under way, of `steps`.
    Step { point: &'a LossPoint, steps: usize },
}

/// Builds every requested condition for every base, resuming from each
/// base's manifest (saved after each condition, so an interrupted build
/// loses at most the condition under way).
pub fn build(req: &BuildRequest, on: &mut dyn FnMut(BuildEvent)) -> Result<Vec<Manifest>> {
    let mut names = Vec::new();
    for c in &req.corpora {
        if !c.join("train.jsonl").is_file() || !c.join("heldout.jsonl").is_file() {
            return Err(Error::Usage(format!(
                "corpus {} needs train.jsonl and heldout.jsonl",
                c.display()
            )));
        }
        names.push(
            c.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_else(|| c.display().to_string()),
        );
    }
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut manifests = Vec::new();
    for model in &req.models {
        let base_ck = Checkpoint::open_str(model)?;
        let base_ref = base_ck.spec.clone();
        let dir = req
            .root
            .join(model.replace(['/', '\\', ':', '(', ')', '+'], "_"));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let mpath = dir.join(MANIFEST);
        let fingerprint = base_ck.fingerprint()?;
        let mut manifest = if mpath.is_file() {
            let m = Manifest::load(&mpath)?;
            if m.base_fingerprint != fingerprint || m.seed != req.seed {
                return Err(Error::Usage(format!(
                    "{} was built from another base or seed; choose another --out or remove it",
                    mpath.display()
                )));
            }
            m
        } else {
            Manifest {
                format: 1,
                base: base_ref.clone(),
                base_fingerprint: fingerprint,
                seed: req.seed,
                budget: req.budget.clone(),
                conditions: Vec::new(),
            }
        };
        drop(base_ck);
        // Each condition's seed is the base seed plus its index in the full
        // grid, so building a subset (--only) reproduces the same files.
        let todo: Vec<_> = default_grid(&name_refs)
            .into_iter()
            .enumerate()
            .filter(|(_, c)| {
                req.only.is_empty() || req.only.iter().any(|o| c.name.contains(o.as_str()))
            })
            .collect();
        let total = todo.len();
        for (k, (i, cond)) in todo.iter().enumerate() {
            let done = manifest.conditions.iter().any(|b| b.name == cond.name);
            if done && !req.force {
                continue;
            }
            on(BuildEvent::Condition {
                model,
                index: k,
                total,
                name: &cond.name,
            });
            let one = One {
                base: &base_ref,
                out: &dir.join(&cond.name),
                corpora: &req.corpora,
                names: &names,
                budget: &req.budget,
                seed: req.seed.wrapping_add(*i as u64),
            };
            let ((reference, training), secs) = timed(|| one.build(cond, &manifest, on))?;
            manifest.conditions.retain(|b| b.name != cond.name);
            manifest.conditions.push(Built {
                name: cond.name.clone(),
                family: cond.family,
                recipe: cond.recipe.clone(),
                reference,
                seconds: secs,
                training,
            });
            manifest.save(&mpath)?;
        }
        manifests.push(manifest);
    }
    Ok(manifests)
}

/// One condition's inputs.
struct One<'a> {
    base: &'a str,
    out: &'a Path,
    corpora: &'a [PathBuf],
    names: &'a [String],
    budget: &'a Budget,
    seed: u64,
}

impl One<'_> {
    fn corpus_dir(&self, name: &str) -> Result<&PathBuf> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| &self.corpora[i])
            .ok_or_else(|| Error::Usage(format!("no corpus named {name}")))
    }

    fn train(
        &self,
        mode: Mode,
        corpus: &str,
        quantized_base: bool,
        steps: usize,
        lr: f64,
        on: &mut dyn FnMut(BuildEvent),
    ) -> Result<TrainReport> {
        let b = self.budget;
        let config = TrainConfig {
            mode: mode.clone(),
            steps,
            batch_size: b.batch_size,
            seq_len: b.seq_len,
            lr,
            weight_decay: 0.0,
            warmup_steps: (steps / 10).max(1),
            max_grad_norm: 1.0,
            seed: self.seed,
            eval_windows: b.eval_windows,
            eval_every: 10,
        };
        let spec = RunSpec {
            base: self.base,
            corpus_dir: self.corpus_dir(corpus)?,
            mode,
            quantized_base,
            config,
            out: self.out,
        };
        let r = run_training(&spec, &mut |p| on(BuildEvent::Step { point: p, steps }))?;
        Ok(r.report)
    }

    /// The condition's model reference and, for trained ones, the training report.
    fn build(
        &self,
        cond: &Condition,
        manifest: &Manifest,
        on: &mut dyn FnMut(BuildEvent),
    ) -> Result<(String, Option<TrainReport>)> {
        let (base, out, budget) = (self.base, self.out, self.budget);
        let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        match &cond.recipe {
            Recipe::Lora {
                r,
                targets,
                corpus,
                quantized_base,
            } => {
                let mode = Mode::Lora {
                    r: *r,
                    alpha: 2.0 * *r as f64,
                    targets: *targets,
                };
                let rep = self.train(
                    mode,
                    corpus,
                    *quantized_base,
                    budget.lora_steps,
                    budget.lora_lr,
                    on,
                )?;
                let served = if *quantized_base {
                    format!("nf4({base})+{}", abs(out).display())
                } else {
                    format!("{base}+{}", abs(out).display())
                };
                Ok((served, Some(rep)))
            }
            Recipe::Full { corpus } => {
                let rep = self.train(
                    Mode::Full,
                    corpus,
                    false,
                    budget.full_steps,
                    budget.full_lr,
                    on,
                )?;
                Ok((abs(out).display().to_string(), Some(rep)))
            }
            Recipe::Merge { of, storage } => {
                let src = manifest
                    .conditions
                    .iter()
                    .find(|b| &b.name == of)
                    .ok_or_else(|| Error::Usage(format!("merge needs {of} built first")))?;
                let ck = Checkpoint::open_str(&src.reference)?;
                Ok((merge_stored(&ck, out, *storage)?, None))
            }
            Recipe::Bnb { scheme } => {
                let ck = Checkpoint::open_str(base)?;
                crate::export::bnb::write_dir(&ck, scheme, out)?;
                Ok((abs(out).display().to_string(), None))
            }
            Recipe::Gguf { scheme } => {
                let ck = Checkpoint::open_str(&format!("{scheme}({base})"))?;
                let file = out.with_extension("gguf");
                crate::export::gguf::write_gguf(&ck, &file)?;
                Ok((abs(&file).display().to_string(), None))
            }
        }
    }
}

/// Merges `ck`'s adapter into its base and stores the result as `storage`
/// under `out` (a directory, or `out.gguf`); the model reference to it.
pub fn merge_stored(ck: &Checkpoint, out: &Path, storage: Storage) -> Result<String> {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let dtype = match storage {
        Storage::F32 => crate::export::OutDtype::F32,
        Storage::Bf16 => crate::export::OutDtype::Bf16,
        Storage::BaseGguf => {
            let file = out.with_extension("gguf");
            crate::export::gguf::write_gguf_as_base(ck, &file)?;
            return Ok(abs(&file).display().to_string());
        }
    };
    crate::export::convert(ck, out, dtype, &mut || {})?;
    Ok(abs(out).display().to_string())
}

/// Where a model's zoo lives by default.
pub fn default_dir(base_alias: &str) -> PathBuf {
    crate::checkpoint::cache_root().join("zoo").join(base_alias)
}

pub fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    let t = Instant::now();
    let v = f()?;
    Ok((v, t.elapsed().as_secs_f64()))
}

#[cfg(test)]
mod tests;
