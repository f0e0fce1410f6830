//! The trainable model: the forward pass in transformers' layout with
//! LoRA or full weights as candle `Var`s, and frozen weights that skip
//! their gradient.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor, Var, D};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::checkpoint::config::{Activation, Arch, ModelConfig};
use crate::checkpoint::{adapter, Checkpoint};
use crate::error::{Error, Result};
use crate::model::rope_tables;

use super::*;

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
    pub(super) vars: Vec<(String, Var)>,
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
