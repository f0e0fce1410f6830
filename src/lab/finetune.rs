//! Fine-tuning on CPU with candle's autograd, for the zoo: LoRA adapters
//! (written in PEFT's layout), QLoRA (LoRA against an NF4-rounded base) and
//! full fine-tunes of every weight (written as Hugging Face directories).
//!
//! The pass works in transformers' layout (q/k rows un-permuted, Gemma norms
//! as stored `w` with `1 + w` applied), so what it writes needs no conversion.
//! candle's fused rms_norm, softmax and rope have no backward pass, so this
//! uses composed ops; frozen weights go through [`FrozenMatmul`], which skips
//! the weight gradient candle's matmul backward would otherwise compute.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::checkpoint::config::{Activation, Arch, ModelConfig};
use crate::checkpoint::{adapter, Checkpoint};
use crate::error::{Error, Result};
use crate::model::rope_tables;

crate::util::choices! {
    /// Which projections a LoRA adapter trains, by PEFT module name.
    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum Targets {
        /// q, k, v and o projections.
        Attn = "attn",
        /// Attention plus gate, up and down projections.
        AttnMlp = "attn-mlp",
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

/// x·W for a weight that is not trained: the backward pass returns only the
/// input's gradient. candle's own matmul backward always computes the
/// weight's too, which for a frozen base is a full extra GEMM per layer.
struct FrozenMatmul {
    /// [in, out]; may be a transposed view (the tied LM head).
    w: Tensor,
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let data = storage.as_slice::<f32>()?;
        let (start, end) = layout.contiguous_offsets().ok_or_else(|| {
            candle_core::Error::Msg("frozen matmul needs a contiguous input".into())
        })?;
        let x = Tensor::from_slice(&data[start..end], layout.shape(), &Device::Cpu)?;
        let y = x.matmul(&self.w)?;
        let shape = y.shape().clone();
        Ok((CpuStorage::F32(y.flatten_all()?.to_vec1()?), shape))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.matmul(&self.w.t()?)?))
    }
}

enum Weight {
    /// [in, out] contiguous, or a transposed view.
    Frozen(Tensor),
    /// [out, in], transformers' layout.
    Trained(Var),
}

struct LoraVars {
    a: Var,
    b: Var,
    scale: f64,
}

struct TLinear {
    name: String,
    w: Weight,
    bias: Option<Tensor>,
    lora: Option<LoraVars>,
}

impl TLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.w {
            Weight::Frozen(w) => x.apply_op1(FrozenMatmul { w: w.clone() })?,
            Weight::Trained(v) => x.matmul(&v.as_tensor().t()?)?,
        };
        let y = match &self.lora {
            Some(l) => {
                (y + (x
                    .matmul(&l.a.as_tensor().t()?)?
                    .matmul(&l.b.as_tensor().t()?)?
                    * l.scale)?)?
            }
            None => y,
        };
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// A norm's multiplier: stored values, trained or not; Gemma adds one.
enum Norm {
    Frozen(Tensor),
    Trained(Var, bool),
}

impl Norm {
    fn apply(&self, x: &Tensor, eps: f64) -> Result<Tensor> {
        let w = match self {
            Norm::Frozen(t) => t.clone(),
            Norm::Trained(v, plus_one) => {
                if *plus_one {
                    (v.as_tensor() + 1.0)?
                } else {
                    v.as_tensor().clone()
                }
            }
        };
        Ok(candle_nn::ops::rms_norm_slow(x, &w, eps as f32)?)
    }
}

struct TBlock {
    q: TLinear,
    k: TLinear,
    v: TLinear,
    o: TLinear,
    gate: TLinear,
    up: TLinear,
    down: TLinear,
    input_norm: Norm,
    post_attn_norm: Norm,
    pre_ff_norm: Option<Norm>,
    post_ff_norm: Option<Norm>,
    q_norm: Option<Norm>,
    k_norm: Option<Norm>,
    rope: usize,
}

/// A model held for training, in transformers' layout.
pub struct TrainModel {
    cfg: ModelConfig,
    embed: Weight,
    blocks: Vec<TBlock>,
    final_norm: Norm,
    rope_index: Vec<usize>,
    ropes: Vec<crate::model::RopeSpec>,
    /// Every trained variable with its transformers name (LoRA: module name
    /// plus `.lora_A` / `.lora_B`).
    vars: Vec<(String, Var)>,
    mode: Mode,
}

fn kaiming_uniform(rng: &mut ChaCha8Rng, rows: usize, cols: usize) -> Result<Tensor> {
    // PEFT initialises A with kaiming_uniform(a=√5): bound = 1/√fan_in.
    let bound = 1.0 / (cols as f64).sqrt();
    let data: Vec<f32> = (0..rows * cols)
        .map(|_| rng.random_range(-bound..bound) as f32)
        .collect();
    Ok(Tensor::from_vec(data, (rows, cols), &Device::Cpu)?)
}

impl TrainModel {
    /// Loads every block of `ck` (what-if quantization applied, so
    /// `nf4(BASE)` gives QLoRA's frozen base) and makes the trained variables.
    pub fn load(ck: &Checkpoint, mode: &Mode, seed: u64) -> Result<Self> {
        if ck.adapter.is_some() {
            return Err(Error::Usage(format!(
                "{}: training starts from a base, not from a base with an adapter; merge it first with `probegate convert`",
                ck.spec
            )));
        }
        let cfg = ck.config.clone();
        let gemma = cfg.arch == Arch::Gemma3;
        let full = matches!(mode, Mode::Full);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut vars: Vec<(String, Var)> = Vec::new();
        let hf = |name: &str| -> Result<Tensor> { Ok(ck.get_hf(name)?.contiguous()?) };
        let norm = |name: &str, vars: &mut Vec<(String, Var)>| -> Result<Norm> {
            let t = hf(name)?;
            if full {
                let v = Var::from_tensor(&t)?;
                vars.push((name.to_string(), v.clone()));
                Ok(Norm::Trained(v, gemma))
            } else if gemma {
                Ok(Norm::Frozen((t + 1.0)?))
            } else {
                Ok(Norm::Frozen(t))
            }
        };
        let linear = |module: &str,
                      vars: &mut Vec<(String, Var)>,
                      rng: &mut ChaCha8Rng|
         -> Result<TLinear> {
            let w = hf(&format!("{module}.weight"))?;
            let (out, inp) = w.dims2()?;
            let bname = format!("{module}.bias");
            let bias = if ck.has(&bname) {
                Some(hf(&bname)?)
            } else {
                None
            };
            let short = module.rsplit('.').next().unwrap_or(module);
            let (w, lora) = match mode {
                Mode::Full => {
                    let v = Var::from_tensor(&w)?;
                    vars.push((format!("{module}.weight"), v.clone()));
                    (Weight::Trained(v), None)
                }
                Mode::Lora { r, alpha, targets } => {
                    let lora = if targets.modules().contains(&short) {
                        let a = Var::from_tensor(&kaiming_uniform(rng, *r, inp)?)?;
                        let b =
                            Var::from_tensor(&Tensor::zeros((out, *r), DType::F32, &Device::Cpu)?)?;
                        vars.push((format!("{module}.lora_A"), a.clone()));
                        vars.push((format!("{module}.lora_B"), b.clone()));
                        Some(LoraVars {
                            a,
                            b,
                            scale: alpha / *r as f64,
                        })
                    } else {
                        None
                    };
                    (Weight::Frozen(w.t()?.contiguous()?), lora)
                }
            };
            Ok(TLinear {
                name: module.to_string(),
                w,
                bias,
                lora,
            })
        };
        let (ropes, rope_index) = crate::model::rope_specs(&cfg, cfg.num_layers);
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for (l, &rope) in rope_index.iter().enumerate() {
            let p = format!("model.layers.{l}");
            let opt = |n: &str| format!("{p}.{n}.weight");
            let opt_norm = |n: &str, vars: &mut Vec<(String, Var)>| -> Result<Option<Norm>> {
                if ck.has(&opt(n)) {
                    norm(&opt(n), vars).map(Some)
                } else {
                    Ok(None)
                }
            };
            let input_norm = opt_norm("input_layernorm", &mut vars)?.ok_or_else(|| {
                Error::tensor(ck.source_path(), opt("input_layernorm"), "missing")
            })?;
            let post_attn_norm =
                opt_norm("post_attention_layernorm", &mut vars)?.ok_or_else(|| {
                    Error::tensor(ck.source_path(), opt("post_attention_layernorm"), "missing")
                })?;
            let pre_ff_norm = opt_norm("pre_feedforward_layernorm", &mut vars)?;
            let post_ff_norm = opt_norm("post_feedforward_layernorm", &mut vars)?;
            let q_norm = opt_norm("self_attn.q_norm", &mut vars)?;
            let k_norm = opt_norm("self_attn.k_norm", &mut vars)?;
            blocks.push(TBlock {
                q: linear(&format!("{p}.self_attn.q_proj"), &mut vars, &mut rng)?,
                k: linear(&format!("{p}.self_attn.k_proj"), &mut vars, &mut rng)?,
                v: linear(&format!("{p}.self_attn.v_proj"), &mut vars, &mut rng)?,
                o: linear(&format!("{p}.self_attn.o_proj"), &mut vars, &mut rng)?,
                gate: linear(&format!("{p}.mlp.gate_proj"), &mut vars, &mut rng)?,
                up: linear(&format!("{p}.mlp.up_proj"), &mut vars, &mut rng)?,
                down: linear(&format!("{p}.mlp.down_proj"), &mut vars, &mut rng)?,
                input_norm,
                post_attn_norm,
                pre_ff_norm,
                post_ff_norm,
                q_norm,
                k_norm,
                rope,
            });
        }
        let final_norm = norm("model.norm.weight", &mut vars)?;
        if ck.has("lm_head.weight") {
            return Err(Error::Usage(format!(
                "{}: untied LM heads are not supported for training yet",
                ck.spec
            )));
        }
        let e = hf("model.embed_tokens.weight")?;
        let embed = if full {
            let v = Var::from_tensor(&e)?;
            vars.push(("model.embed_tokens.weight".into(), v.clone()));
            Weight::Trained(v)
        } else {
            Weight::Frozen(e)
        };
        Ok(TrainModel {
            cfg,
            embed,
            blocks,
            final_norm,
            rope_index,
            ropes,
            vars,
            mode: mode.clone(),
        })
    }

    pub fn trainable_params(&self) -> usize {
        self.vars.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Mean next-token cross-entropy over `windows` (each seq_len + 1 ids).
    pub fn loss(&self, windows: &[Vec<u32>]) -> Result<Tensor> {
        let cfg = &self.cfg;
        let b = windows.len();
        let t = windows
            .first()
            .map(|w| w.len().saturating_sub(1))
            .unwrap_or(0);
        if b == 0 || t == 0 || windows.iter().any(|w| w.len() != t + 1) {
            return Err(Error::Usage(
                "training windows must be non-empty and of equal length".into(),
            ));
        }
        let mut inputs = Vec::with_capacity(b * t);
        let mut targets = Vec::with_capacity(b * t);
        for w in windows {
            inputs.extend_from_slice(&w[..t]);
            targets.extend_from_slice(&w[1..]);
        }
        let ids = Tensor::from_vec(inputs, (b * t,), &Device::Cpu)?;
        let targets = Tensor::from_vec(targets, (b * t,), &Device::Cpu)?;
        let etab = match &self.embed {
            Weight::Frozen(e) => e.clone(),
            Weight::Trained(v) => v.as_tensor().clone(),
        };
        let mut x = etab.embedding(&ids)?;
        if let Some(s) = cfg.embed_scale {
            x = (x * (s as f32) as f64)?;
        }
        let tables = rope_tables(cfg, &self.ropes, t)?;
        let mut mask = vec![0f32; t * t];
        for i in 0..t {
            for j in i + 1..t {
                mask[i * t + j] = f32::NEG_INFINITY;
            }
        }
        let mask = Tensor::from_vec(mask, (t, t), &Device::Cpu)?;
        let (nh, nkv, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let eps = cfg.rms_norm_eps;
        for (l, blk) in self.blocks.iter().enumerate() {
            if cfg.window_for(l).is_some_and(|w| w < t) {
                return Err(Error::Usage(format!(
                    "training windows of {t} tokens exceed block {l}'s sliding window"
                )));
            }
            let hn = blk.input_norm.apply(&x, eps)?;
            let heads = |lin: &TLinear, n: usize| -> Result<Tensor> {
                Ok(lin
                    .forward(&hn)?
                    .reshape((b, t, n, hd))?
                    .transpose(1, 2)?
                    .contiguous()?)
            };
            let mut q = heads(&blk.q, nh)?;
            let mut k = heads(&blk.k, nkv)?;
            let v = heads(&blk.v, nkv)?;
            if let (Some(qn), Some(kn)) = (&blk.q_norm, &blk.k_norm) {
                q = qn.apply(&q, eps)?;
                k = kn.apply(&k, eps)?;
            }
            let (cos, sin) = &tables[blk.rope];
            let q = candle_nn::rotary_emb::rope_slow(&q, cos, sin)?;
            let k = candle_nn::rotary_emb::rope_slow(&k, cos, sin)?;
            let (k, v) = if nh != nkv {
                let rep = nh / nkv;
                (
                    crate::model::repeat_kv(&k, rep)?,
                    crate::model::repeat_kv(&v, rep)?,
                )
            } else {
                (k, v)
            };
            let scores =
                (q.matmul(&k.t()?.contiguous()?)? * cfg.attn_scale)?.broadcast_add(&mask)?;
            let probs = softmax_last(&scores)?;
            let attn = probs
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((b * t, nh * hd))?;
            let attn = blk.o.forward(&attn)?;
            let attn = match cfg.arch {
                Arch::Gemma3 => blk.post_attn_norm.apply(&attn, eps)?,
                Arch::Llama => attn,
            };
            x = (x + attn)?;
            let ff_in = match (&blk.pre_ff_norm, cfg.arch) {
                (Some(n), Arch::Gemma3) => n.apply(&x, eps)?,
                _ => blk.post_attn_norm.apply(&x, eps)?,
            };
            let gate = blk.gate.forward(&ff_in)?;
            let gate = match cfg.activation {
                Activation::Silu => candle_nn::ops::silu(&gate)?,
                Activation::GeluTanh => gate.gelu()?,
            };
            let ff = blk.down.forward(&(gate * blk.up.forward(&ff_in)?)?)?;
            let ff = match (&blk.post_ff_norm, cfg.arch) {
                (Some(n), Arch::Gemma3) => n.apply(&ff, eps)?,
                _ => ff,
            };
            x = (x + ff)?;
        }
        let x = self.final_norm.apply(&x, eps)?;
        let logits = match &self.embed {
            Weight::Frozen(e) => x.apply_op1(FrozenMatmul { w: e.t()? })?,
            Weight::Trained(v) => x.matmul(&v.as_tensor().t()?)?,
        };
        // log-softmax with the max detached: it only keeps exp() in range.
        let max = logits.max_keepdim(D::Minus1)?.detach();
        let shifted = logits.broadcast_sub(&max)?;
        let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
        let logp = shifted.broadcast_sub(&lse)?;
        let picked = logp.gather(&targets.unsqueeze(1)?, 1)?;
        Ok((picked.mean_all()? * -1.0)?)
    }

    /// Named trained tensors in transformers' layout: the full state for a
    /// full fine-tune, the A/B pairs for LoRA.
    pub fn trained(&self) -> Vec<(String, Tensor)> {
        self.vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
            .collect()
    }

    /// Writes the LoRA variables as a PEFT adapter directory.
    pub fn save_adapter(
        &self,
        dir: &Path,
        base: &str,
        meta: &BTreeMap<String, String>,
    ) -> Result<()> {
        let Mode::Lora { r, alpha, targets } = &self.mode else {
            return Err(Error::Usage("only LoRA runs write adapters".into()));
        };
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let tensors: Vec<(String, Tensor)> = self
            .vars
            .iter()
            .map(|(n, v)| {
                (
                    format!("base_model.model.{n}.weight"),
                    v.as_tensor().detach(),
                )
            })
            .collect();
        let mut md: std::collections::HashMap<String, String> =
            meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        md.insert("format".into(), "pt".into());
        crate::util::save_safetensors(tensors, md, &dir.join(adapter::WEIGHTS_FILE))?;
        let config = serde_json::json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base,
            "r": r,
            "lora_alpha": alpha,
            "lora_dropout": 0.0,
            "target_modules": targets.modules(),
            "bias": "none",
            "fan_in_fan_out": false,
            "use_rslora": false,
            "use_dora": false,
            "modules_to_save": null,
            "layers_to_transform": null,
            "rank_pattern": {},
            "alpha_pattern": {},
            "inference_mode": true,
        });
        let p = dir.join(adapter::CONFIG_FILE);
        std::fs::write(
            &p,
            serde_json::to_string_pretty(&config).unwrap_or_default(),
        )
        .map_err(|e| Error::io(&p, e))
    }

    pub fn lora_module_names(&self) -> Vec<String> {
        self.blocks
            .iter()
            .flat_map(|b| [&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down])
            .filter(|l| l.lora.is_some())
            .map(|l| l.name.clone())
            .collect()
    }

    pub fn rope_index(&self) -> &[usize] {
        &self.rope_index
    }
}

fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
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
