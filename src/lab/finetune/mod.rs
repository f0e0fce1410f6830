//! Fine-tuning on CPU with candle's autograd, for the zoo: LoRA adapters
//! (written in PEFT's layout), QLoRA (LoRA against an NF4-rounded base) and
//! full fine-tunes of every weight (written as Hugging Face directories).
//!
//! The pass works in transformers' layout (q/k rows un-permuted, Gemma norms
//! as stored `w` with `1 + w` applied), so what it writes needs no conversion.
//! candle's fused rms_norm, softmax and rope have no backward pass, so this
//! uses composed ops; frozen weights go through `model::FrozenMatmul`, which skips
//! the weight gradient candle's matmul backward would otherwise compute.

mod model;

pub use model::TrainModel;

use std::time::Instant;

use candle_core::Var;
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};

crate::util::choices! {
    /// Which projections a LoRA adapter trains, by PEFT module name.
    pub enum Targets {
        /// q, k, v and o projections.
        Attn = "attn",
        /// Attention plus gate, up and down projections.
        AttnMlp = "attn-mlp" | "attn_mlp",
    }
}

impl Targets {
    pub fn modules(&self) -> &'static [&'static str] {
        match self {
            Targets::Attn => &["q_proj", "k_proj", "v_proj", "o_proj"],
            Targets::AttnMlp => &[
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mode {
    Lora {
        r: usize,
        alpha: f64,
        targets: Targets,
    },
    Full,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    pub mode: Mode,
    pub steps: usize,
    pub batch_size: usize,
    /// Tokens per training window (inputs; targets are shifted by one).
    pub seq_len: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup_steps: usize,
    pub max_grad_norm: f64,
    pub seed: u64,
    /// Held-out windows scored before, during and after training.
    pub eval_windows: usize,
    pub eval_every: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LossPoint {
    pub step: usize,
    pub train_loss: f64,
    pub lr: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heldout_loss: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainReport {
    pub config: TrainConfig,
    pub base: String,
    pub trainable_params: usize,
    pub train_windows: usize,
    pub tokens_seen: usize,
    pub heldout_loss_before: f64,
    pub heldout_loss_after: f64,
    pub seconds: f64,
    pub seconds_per_step: f64,
    pub curve: Vec<LossPoint>,
}

/// Tokenizes `texts` into one stream (each text ends with EOS when the model
/// has one) and cuts it into windows of `len + 1` ids.
pub fn windows(ck: &Checkpoint, texts: &[String], len: usize) -> Result<Vec<Vec<u32>>> {
    let mut stream = Vec::new();
    for t in texts {
        stream.extend(ck.tokenizer.encode(t)?);
        if let Some(eos) = ck.config.eos_token_id {
            stream.push(eos);
        }
    }
    Ok(stream.chunks_exact(len + 1).map(<[u32]>::to_vec).collect())
}

/// Trains `model` on `train` windows, scoring `heldout` windows along the way.
pub fn train(
    model: &TrainModel,
    base: &str,
    train: &[Vec<u32>],
    heldout: &[Vec<u32>],
    cfg: &TrainConfig,
    on_step: &mut dyn FnMut(&LossPoint),
) -> Result<TrainReport> {
    if train.len() < cfg.batch_size {
        return Err(Error::Usage(format!(
            "the training corpus gives {} windows of {} tokens, fewer than one batch of {}",
            train.len(),
            cfg.seq_len,
            cfg.batch_size
        )));
    }
    let heldout: Vec<Vec<u32>> = heldout.iter().take(cfg.eval_windows).cloned().collect();
    if heldout.is_empty() {
        return Err(Error::Usage("the held-out corpus gives no windows".into()));
    }
    let eval = |m: &TrainModel| -> Result<f64> {
        let mut sum = 0.0;
        for chunk in heldout.chunks(cfg.batch_size.max(1)) {
            sum += m.loss(chunk)?.to_scalar::<f32>()? as f64 * chunk.len() as f64;
        }
        Ok(sum / heldout.len() as f64)
    };
    let start = Instant::now();
    let before = eval(model)?;
    let vars: Vec<Var> = model.vars.iter().map(|(_, v)| v.clone()).collect();
    let mut opt = AdamW::new(
        vars.clone(),
        ParamsAdamW {
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
            ..Default::default()
        },
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5eed);
    let mut order: Vec<usize> = (0..train.len()).collect();
    order.shuffle(&mut rng);
    let mut cursor = 0;
    let mut curve = Vec::with_capacity(cfg.steps);
    let train_start = Instant::now();
    for step in 1..=cfg.steps {
        if cursor + cfg.batch_size > order.len() {
            order.shuffle(&mut rng);
            cursor = 0;
        }
        let batch: Vec<Vec<u32>> = order[cursor..cursor + cfg.batch_size]
            .iter()
            .map(|&i| train[i].clone())
            .collect();
        cursor += cfg.batch_size;
        // Linear warmup, then cosine decay to a tenth.
        let lr = if step <= cfg.warmup_steps {
            cfg.lr * step as f64 / cfg.warmup_steps.max(1) as f64
        } else {
            let p = (step - cfg.warmup_steps) as f64 / (cfg.steps - cfg.warmup_steps).max(1) as f64;
            cfg.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()))
        };
        opt.set_learning_rate(lr);
        let loss = model.loss(&batch)?;
        let train_loss = loss.to_scalar::<f32>()? as f64;
        if !train_loss.is_finite() {
            return Err(Error::Usage(format!(
                "training diverged at step {step} (loss {train_loss}); lower the learning rate"
            )));
        }
        let mut grads = loss.backward()?;
        clip_grads(&vars, &mut grads, cfg.max_grad_norm)?;
        opt.step(&grads)?;
        let heldout_loss = if step % cfg.eval_every.max(1) == 0 || step == cfg.steps {
            Some(eval(model)?)
        } else {
            None
        };
        let point = LossPoint {
            step,
            train_loss,
            lr,
            heldout_loss,
        };
        on_step(&point);
        curve.push(point);
    }
    let train_secs = train_start.elapsed().as_secs_f64();
    let after = curve
        .last()
        .and_then(|p| p.heldout_loss)
        .map(Ok)
        .unwrap_or_else(|| eval(model))?;
    Ok(TrainReport {
        config: cfg.clone(),
        base: base.to_string(),
        trainable_params: model.trainable_params(),
        train_windows: train.len(),
        tokens_seen: cfg.steps * cfg.batch_size * cfg.seq_len,
        heldout_loss_before: before,
        heldout_loss_after: after,
        seconds: start.elapsed().as_secs_f64(),
        seconds_per_step: train_secs / cfg.steps.max(1) as f64,
        curve,
    })
}

/// Global-norm gradient clipping (candle's optimizers have none).
fn clip_grads(
    vars: &[Var],
    grads: &mut candle_core::backprop::GradStore,
    max_norm: f64,
) -> Result<()> {
    if max_norm <= 0.0 {
        return Ok(());
    }
    let mut sq = 0.0f64;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
    }
    let norm = sq.sqrt();
    if norm > max_norm {
        let s = max_norm / norm;
        for v in vars {
            if let Some(g) = grads.remove(v.as_tensor()) {
                grads.insert(v.as_tensor(), (g * s)?);
            }
        }
    }
    Ok(())
}
