//! Decoder forward passes with residual-stream capture.
//!
//! Layer L is the residual stream after decoder block L (0-based): TransformerLens
//! `blocks.L.hook_resid_post`, transformers `hidden_states[L+1]`. The pass stops
//! after the deepest requested block and never computes the LM head.

mod kernels;
mod rope;

use candle_core::quantized::QMatMul;
use candle_core::{Device, Module, Tensor};
use serde::{Deserialize, Serialize};

use crate::checkpoint::config::{Arch, ModelConfig};
use crate::checkpoint::{Checkpoint, Weight};
use crate::error::{Error, Result};
pub(crate) use rope::{rope_specs, rope_tables, RopeSpec};

crate::util::choices! {
    /// How weights are held for the forward pass.
    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum Precision {
        /// Dequantize everything to f32: the reference path.
        F32 = "f32",
        /// Keep GGUF tensors quantized and use candle's quantized kernels, as the model is served.
        Native = "native",
    }
}

crate::util::choices! {
    /// How a prompt's token vectors become one vector.
    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum Pool {
        /// The last real token's vector.
        Last = "last",
        /// Mean over real (non-padding) tokens.
        Mean = "mean",
    }
}

enum Linear {
    /// `w` is the transposed weight, [in, out], any adapter merged in.
    Dense { w: Tensor, b: Option<Tensor> },
    Quant {
        w: QMatMul,
        b: Option<Tensor>,
        lora: Option<Lora>,
    },
}

/// An unmerged LoRA delta, y += scale · (x·Aᵀ)·Bᵀ, beside quantized weights.
struct Lora {
    a_t: Tensor,
    b_t: Tensor,
    scale: f64,
}

impl Linear {
    /// x: [n, in] contiguous -> [n, out]
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (y, b, lora) = match self {
            Linear::Dense { w, b } => (x.matmul(w)?, b, &None),
            Linear::Quant { w, b, lora } => (w.forward(x)?, b, lora),
        };
        let y = match lora {
            Some(l) => (y + (x.matmul(&l.a_t)?.matmul(&l.b_t)? * l.scale)?)?,
            None => y,
        };
        Ok(match b {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// Projections that read the same input. Dense ones (adapters merged) are
/// concatenated into one GEMM: fewer, larger matmuls use the cores better.
enum Proj {
    Split(Vec<Linear>),
    Fused(Linear, Vec<usize>),
}

impl Proj {
    fn new(parts: Vec<Linear>, sizes: Vec<usize>) -> Result<Self> {
        let fusable = parts.iter().all(|l| matches!(l, Linear::Dense { .. }));
        if !fusable {
            return Ok(Proj::Split(parts));
        }
        let mut ws = Vec::new();
        let mut bs = Vec::new();
        for l in &parts {
            if let Linear::Dense { w, b } = l {
                ws.push(w.clone());
                bs.push(b.clone());
            }
        }
        let w = Tensor::cat(&ws, 1)?;
        let b = if bs.iter().all(Option::is_some) {
            Some(Tensor::cat(
                &bs.into_iter().flatten().collect::<Vec<_>>(),
                0,
            )?)
        } else if bs.iter().all(Option::is_none) {
            None
        } else {
            return Ok(Proj::Split(parts));
        };
        Ok(Proj::Fused(Linear::Dense { w, b }, sizes))
    }

    fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        match self {
            Proj::Split(parts) => parts.iter().map(|l| l.forward(x)).collect(),
            Proj::Fused(l, sizes) => {
                let y = l.forward(x)?;
                let mut out = Vec::with_capacity(sizes.len());
                let mut off = 0;
                for &n in sizes {
                    out.push(y.narrow(1, off, n)?);
                    off += n;
                }
                Ok(out)
            }
        }
    }
}

struct Block {
    qkv: Proj,
    o: Linear,
    gate_up: Proj,
    down: Linear,
    /// Effective RMSNorm multipliers (Gemma's 1 + w already applied).
    input_norm: Tensor,
    post_attn_norm: Tensor,
    pre_ff_norm: Option<Tensor>,
    post_ff_norm: Option<Tensor>,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    rope: usize,
}

pub struct Model {
    cfg: ModelConfig,
    embed: Weight,
    blocks: Vec<Block>,
    ropes: Vec<RopeSpec>,
    rope_interleaved: bool,
    precision: Precision,
}

/// Pooled activations for one batch: [pool][layer] -> [batch, d_model].
pub struct Captured {
    pub pools: Vec<Pool>,
    pub layers: Vec<usize>,
    /// outputs[p][l] has shape [batch, d_model]
    pub outputs: Vec<Vec<Tensor>>,
}

impl Model {
    /// Loads blocks 0..=`deepest` only: deeper blocks are never read.
    pub fn load(ck: &Checkpoint, precision: Precision, deepest: usize) -> Result<Self> {
        let cfg = ck.config.clone();
        if deepest >= cfg.num_layers {
            return Err(Error::Usage(format!(
                "layer {deepest} is out of range: {} has {} blocks (0..={})",
                ck.reference,
                cfg.num_layers,
                cfg.num_layers - 1
            )));
        }
        let path = ck.source_path();
        let gemma = cfg.arch == Arch::Gemma3;
        let norm = |name: &str| -> Result<Tensor> {
            let w = ck.get_f32(name)?;
            // q/k norms act per head; every other norm on the residual width.
            let width = if name.contains("self_attn.") {
                cfg.head_dim
            } else {
                cfg.hidden_size
            };
            if w.dims() != [width] {
                return Err(Error::tensor(
                    &path,
                    ck.stored_name(name),
                    format!("expected shape [{width}], found {:?}", w.dims()),
                ));
            }
            Ok(if gemma && !ck.layout.norm_plus_one_baked {
                (w + 1.0)?
            } else {
                w
            })
        };
        let linear = |name: &str, out: usize, inp: usize, bias: bool| -> Result<Linear> {
            let wname = format!("{name}.weight");
            let w = ck.get(&wname)?;
            if w.dims() != [out, inp] {
                return Err(Error::tensor(
                    &path,
                    ck.stored_name(&wname),
                    format!("expected shape [{out}, {inp}], found {:?}", w.dims()),
                ));
            }
            let bname = format!("{name}.bias");
            let b = if bias || ck.has(&bname) {
                let b = ck.get_f32(&bname)?;
                if b.dims() != [out] {
                    return Err(Error::tensor(
                        &path,
                        ck.stored_name(&bname),
                        format!("expected shape [{out}], found {:?}", b.dims()),
                    ));
                }
                Some(b)
            } else {
                None
            };
            let lora = match &ck.adapter {
                Some(ad) => match ad.modules.get(name) {
                    Some(p) => {
                        let mut bm = p.b.clone();
                        // GGUF Llama bases store q/k rows permuted; permute B's rows to match.
                        if ck.layout.rope_interleaved {
                            if name.ends_with("self_attn.q_proj") {
                                bm = crate::checkpoint::layout::permute_qk(&bm, cfg.num_heads)?;
                            } else if name.ends_with("self_attn.k_proj") {
                                bm = crate::checkpoint::layout::permute_qk(&bm, cfg.num_kv_heads)?;
                            }
                        }
                        Some(Lora {
                            a_t: p.a.t()?.contiguous()?,
                            b_t: bm.t()?.contiguous()?,
                            scale: p.scale,
                        })
                    }
                    None => None,
                },
                None => None,
            };
            Ok(match (w, precision) {
                (Weight::Quantized(q), Precision::Native) => Linear::Quant {
                    w: QMatMul::from_qtensor(q)?,
                    b,
                    lora,
                },
                // Dense weights take the adapter merged in (W + s·B·A): one GEMM
                // instead of three, two of them skinny rank-r ones, and the
                // projection can fuse with its siblings. Rounding differs from
                // the unmerged sum at float epsilon; the zoo's merged and
                // unmerged adapters gave identical ΔAUROC in every cell.
                // Stored [in, out] so the GEMM reads the weight contiguously.
                (w, _) => {
                    let w = w.to_f32()?;
                    let w = match lora {
                        Some(l) => (w + (l.a_t.matmul(&l.b_t)? * l.scale)?.t()?)?,
                        None => w,
                    };
                    Linear::Dense {
                        w: w.t()?.contiguous()?,
                        b,
                    }
                }
            })
        };

        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let (ropes, rope_index) = rope_specs(&cfg, deepest + 1);
        let mut blocks = Vec::with_capacity(deepest + 1);
        for (l, &rope) in rope_index.iter().enumerate() {
            let p = format!("model.layers.{l}");
            let opt_norm = |n: &str| -> Result<Option<Tensor>> {
                let name = format!("{p}.{n}.weight");
                if ck.has(&name) {
                    norm(&name).map(Some)
                } else {
                    Ok(None)
                }
            };
            let (qd, kvd) = (cfg.num_heads * hd, cfg.num_kv_heads * hd);
            let block = Block {
                qkv: Proj::new(
                    vec![
                        linear(
                            &format!("{p}.self_attn.q_proj"),
                            cfg.num_heads * hd,
                            h,
                            cfg.attention_bias,
                        )?,
                        linear(
                            &format!("{p}.self_attn.k_proj"),
                            cfg.num_kv_heads * hd,
                            h,
                            cfg.attention_bias,
                        )?,
                        linear(
                            &format!("{p}.self_attn.v_proj"),
                            cfg.num_kv_heads * hd,
                            h,
                            cfg.attention_bias,
                        )?,
                    ],
                    vec![qd, kvd, kvd],
                )?,
                o: linear(
                    &format!("{p}.self_attn.o_proj"),
                    h,
                    cfg.num_heads * hd,
                    false,
                )?,
                gate_up: Proj::new(
                    vec![
                        linear(
                            &format!("{p}.mlp.gate_proj"),
                            cfg.intermediate_size,
                            h,
                            false,
                        )?,
                        linear(&format!("{p}.mlp.up_proj"), cfg.intermediate_size, h, false)?,
                    ],
                    vec![cfg.intermediate_size, cfg.intermediate_size],
                )?,
                down: linear(
                    &format!("{p}.mlp.down_proj"),
                    h,
                    cfg.intermediate_size,
                    false,
                )?,
                input_norm: norm(&format!("{p}.input_layernorm.weight"))?,
                post_attn_norm: norm(&format!("{p}.post_attention_layernorm.weight"))?,
                pre_ff_norm: opt_norm("pre_feedforward_layernorm")?,
                post_ff_norm: opt_norm("post_feedforward_layernorm")?,
                q_norm: opt_norm("self_attn.q_norm")?,
                k_norm: opt_norm("self_attn.k_norm")?,
                rope,
            };
            if gemma
                && (block.pre_ff_norm.is_none()
                    || block.post_ff_norm.is_none()
                    || block.q_norm.is_none()
                    || block.k_norm.is_none())
            {
                return Err(Error::tensor(
                    &path,
                    format!("{p}.*_norm"),
                    "Gemma 3 blocks need q/k norms and pre/post feed-forward norms",
                ));
            }
            blocks.push(block);
        }
        let embed = ck.get("model.embed_tokens.weight")?;
        let ed = embed.dims();
        if ed.len() != 2 || ed[1] != h || ed[0] < cfg.vocab_size.min(ed[0]) {
            return Err(Error::tensor(
                &path,
                ck.stored_name("model.embed_tokens.weight"),
                format!("expected shape [vocab, {h}], found {ed:?}"),
            ));
        }
        let embed = match embed {
            // Quantized lookup gathers and dequantizes only the rows it needs.
            Weight::Quantized(q) if q.shape().dims()[1] % q.dtype().block_size() == 0 => {
                Weight::Quantized(q)
            }
            w => Weight::Dense(w.to_f32()?),
        };
        Ok(Model {
            cfg,
            embed,
            blocks,
            ropes,
            rope_interleaved: ck.layout.rope_interleaved,
            precision,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    pub fn vocab_rows(&self) -> usize {
        match &self.embed {
            Weight::Quantized(q) => q.shape().dims()[0],
            Weight::Dense(t) => t.dims()[0],
        }
    }

    fn rope_tables(&self, t: usize) -> Result<Vec<(Tensor, Tensor)>> {
        rope_tables(&self.cfg, &self.ropes, t)
    }

    fn rms(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
        Ok(candle_nn::ops::rms_norm(&x.contiguous()?, w, eps as f32)?)
    }

    /// Runs `batch` (right-padded token ids with their real lengths) and pools
    /// the residual stream after each block in `layers`.
    pub fn forward_capture(
        &self,
        batch: &[Vec<u32>],
        layers: &[usize],
        pools: &[Pool],
    ) -> Result<Captured> {
        let cfg = &self.cfg;
        let b = batch.len();
        let t = batch.iter().map(Vec::len).max().unwrap_or(0);
        if b == 0 || t == 0 {
            return Err(Error::Usage("cannot run an empty batch".into()));
        }
        let deepest = layers.iter().copied().max().unwrap_or(0);
        if deepest >= self.blocks.len() {
            return Err(Error::Usage(format!(
                "layer {deepest} was not loaded (model loaded to block {})",
                self.blocks.len().saturating_sub(1)
            )));
        }
        let vocab = self.vocab_rows();
        let mut ids = Vec::with_capacity(b * t);
        for seq in batch {
            for &id in seq {
                if id as usize >= vocab {
                    return Err(Error::Usage(format!(
                        "token id {id} is outside the embedding table ({vocab} rows)"
                    )));
                }
                ids.push(id);
            }
            ids.extend(std::iter::repeat_n(0u32, t - seq.len()));
        }
        let ids = Tensor::from_vec(ids, (b * t,), &Device::Cpu)?;
        let mut x = match &self.embed {
            Weight::Quantized(q) => q.embedding(&ids)?,
            Weight::Dense(e) => e.embedding(&ids)?,
        };
        if let Some(s) = cfg.embed_scale {
            // transformers rounds sqrt(hidden) to the activation dtype first.
            x = (x * (s as f32) as f64)?;
        }
        // x: [b*t, h] throughout; attention reshapes locally.
        let ropes = self.rope_tables(t)?;
        let pool_w = self.pool_weights(batch, t, pools)?;

        let (nh, nkv, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let mut outputs: Vec<Vec<Option<Tensor>>> = vec![vec![None; layers.len()]; pools.len()];
        for (l, blk) in self.blocks.iter().enumerate().take(deepest + 1) {
            let window = cfg.window_for(l).filter(|w| *w < t);
            let hn = Self::rms(&x, &blk.input_norm, cfg.rms_norm_eps)?;
            let mut qkv = blk.qkv.forward(&hn)?.into_iter();
            let (Some(q), Some(k), Some(v)) = (qkv.next(), qkv.next(), qkv.next()) else {
                return Err(Error::Usage("attention projections missing".into()));
            };
            let mut q = q.reshape((b, t, nh, hd))?.transpose(1, 2)?.contiguous()?;
            let mut k = k.reshape((b, t, nkv, hd))?.transpose(1, 2)?.contiguous()?;
            let v = v.reshape((b, t, nkv, hd))?.transpose(1, 2)?.contiguous()?;
            if let (Some(qn), Some(kn)) = (&blk.q_norm, &blk.k_norm) {
                q = Self::rms(&q, qn, cfg.rms_norm_eps)?;
                k = Self::rms(&k, kn, cfg.rms_norm_eps)?;
            }
            let (cos, sin) = &ropes[blk.rope];
            let (q, k) = if self.rope_interleaved {
                (
                    candle_nn::rotary_emb::rope_i(&q, cos, sin)?,
                    candle_nn::rotary_emb::rope_i(&k, cos, sin)?,
                )
            } else {
                (
                    candle_nn::rotary_emb::rope(&q, cos, sin)?,
                    candle_nn::rotary_emb::rope(&k, cos, sin)?,
                )
            };
            // Grouped-query attention without copying k/v per head: the `rep`
            // query heads sharing a key/value head are adjacent, so they stack
            // into one [rep·t, hd] matrix per group.
            let rep = nh / nkv;
            let q = q.reshape((b, nkv, rep * t, hd))?;
            let scores = q.matmul(&k.t()?)?;
            let probs = kernels::causal_softmax(&scores, cfg.attn_scale, window)?;
            let attn = probs
                .matmul(&v)?
                .reshape((b, nh, t, hd))?
                .transpose(1, 2)?
                .reshape((b * t, nh * hd))?;
            let attn = blk.o.forward(&attn)?;
            let attn = match cfg.arch {
                Arch::Gemma3 => Self::rms(&attn, &blk.post_attn_norm, cfg.rms_norm_eps)?,
                Arch::Llama => attn,
            };
            x = (x + attn)?;
            let ff_in = match (&blk.pre_ff_norm, cfg.arch) {
                (Some(n), Arch::Gemma3) => Self::rms(&x, n, cfg.rms_norm_eps)?,
                _ => Self::rms(&x, &blk.post_attn_norm, cfg.rms_norm_eps)?,
            };
            let mut gu = blk.gate_up.forward(&ff_in)?.into_iter();
            let (Some(gate), Some(up)) = (gu.next(), gu.next()) else {
                return Err(Error::Usage("MLP projections missing".into()));
            };
            let ff = blk
                .down
                .forward(&kernels::act_mul(&gate, &up, cfg.activation)?)?;
            let ff = match (&blk.post_ff_norm, cfg.arch) {
                (Some(n), Arch::Gemma3) => Self::rms(&ff, n, cfg.rms_norm_eps)?,
                _ => ff,
            };
            x = (x + ff)?;

            for (li, _) in layers.iter().enumerate().filter(|(_, &ly)| ly == l) {
                let x3 = x.reshape((b, t, cfg.hidden_size))?;
                for (pi, w) in pool_w.iter().enumerate() {
                    // [b,1,t] x [b,t,h] -> [b,1,h]
                    let pooled = w.matmul(&x3)?.squeeze(1)?;
                    outputs[pi][li] = Some(pooled);
                }
            }
        }
        let outputs = outputs
            .into_iter()
            .map(|per_layer| {
                per_layer
                    .into_iter()
                    .map(|t| {
                        t.ok_or_else(|| Error::Usage("a requested layer was not captured".into()))
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Captured {
            pools: pools.to_vec(),
            layers: layers.to_vec(),
            outputs,
        })
    }

    /// Pooling as a [b, 1, t] weight per pool so it is one batched matmul.
    fn pool_weights(&self, batch: &[Vec<u32>], t: usize, pools: &[Pool]) -> Result<Vec<Tensor>> {
        let b = batch.len();
        pools
            .iter()
            .map(|p| {
                let mut w = vec![0f32; b * t];
                for (i, seq) in batch.iter().enumerate() {
                    let n = seq.len();
                    match p {
                        Pool::Last => w[i * t + n - 1] = 1.0,
                        Pool::Mean => {
                            for j in 0..n {
                                w[i * t + j] = 1.0 / n as f32;
                            }
                        }
                    }
                }
                Ok(Tensor::from_vec(w, (b, 1, t), &Device::Cpu)?)
            })
            .collect()
    }
}

pub(crate) fn repeat_kv(x: &Tensor, rep: usize) -> Result<Tensor> {
    let (b, kv, t, d) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .expand((b, kv, rep, t, d))?
        .reshape((b, kv * rep, t, d))?)
}
