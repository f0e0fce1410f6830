//! One decoder block's weights, read from a checkpoint and checked against
//! its config.

use std::collections::HashMap;

use candle_core::quantized::QMatMul;
use candle_core::Tensor;

use super::linear::{Linear, Loaded, Lora, Proj};
use super::Precision;
use crate::checkpoint::config::{Arch, ModelConfig};
use crate::checkpoint::{Checkpoint, Weight};
use crate::error::{Error, Result};

pub(super) struct Block {
    pub(super) qkv: Proj,
    pub(super) o: Linear,
    pub(super) gate_up: Proj,
    pub(super) down: Linear,
    /// Effective RMSNorm multipliers (Gemma's 1 + w already applied).
    pub(super) input_norm: Tensor,
    pub(super) post_attn_norm: Tensor,
    pub(super) pre_ff_norm: Option<Tensor>,
    pub(super) post_ff_norm: Option<Tensor>,
    pub(super) q_norm: Option<Tensor>,
    pub(super) k_norm: Option<Tensor>,
    pub(super) rope: usize,
}

impl Block {
    /// The block with every weight on `dev` (itself when that is the CPU,
    /// where blocks are built).
    pub(super) fn into_device(self, dev: &candle_core::Device) -> Result<Block> {
        if dev.is_cpu() {
            return Ok(self);
        }
        let opt = |t: Option<Tensor>| super::linear::opt_to(t, dev);
        Ok(Block {
            qkv: self.qkv.into_device(dev)?,
            o: self.o.into_device(dev)?,
            gate_up: self.gate_up.into_device(dev)?,
            down: self.down.into_device(dev)?,
            input_norm: self.input_norm.to_device(dev)?,
            post_attn_norm: self.post_attn_norm.to_device(dev)?,
            pre_ff_norm: opt(self.pre_ff_norm)?,
            post_ff_norm: opt(self.post_ff_norm)?,
            q_norm: opt(self.q_norm)?,
            k_norm: opt(self.k_norm)?,
            rope: self.rope,
        })
    }
}

/// A block's projections in forward order, each (module, out, in) as the
/// config gives them: what a block loads, what a streamed block's metadata
/// is checked against, and what one block costs expanded.
pub(super) fn projections(cfg: &ModelConfig) -> [(&'static str, usize, usize); 7] {
    let (h, ff) = (cfg.hidden_size, cfg.intermediate_size);
    let (qd, kvd) = (
        cfg.num_heads * cfg.head_dim,
        cfg.num_kv_heads * cfg.head_dim,
    );
    [
        ("self_attn.q_proj", qd, h),
        ("self_attn.k_proj", kvd, h),
        ("self_attn.v_proj", kvd, h),
        ("self_attn.o_proj", h, qd),
        ("mlp.gate_proj", ff, h),
        ("mlp.up_proj", ff, h),
        ("mlp.down_proj", h, ff),
    ]
}

/// Builds one decoder block's weights from a checkpoint, checking every
/// tensor's shape against the config (errors name the tensor and file).
pub(super) struct BlockLoader<'ck> {
    pub(super) ck: &'ck Checkpoint,
    pub(super) precision: Precision,
}

impl BlockLoader<'_> {
    pub(super) fn norm(&self, name: &str) -> Result<Tensor> {
        let (ck, cfg) = (self.ck, &self.ck.config);
        let w = ck.get_f32(name)?;
        // q/k norms act per head; every other norm on the residual width.
        let width = if name.contains("self_attn.") {
            cfg.head_dim
        } else {
            cfg.hidden_size
        };
        if w.dims() != [width] {
            return Err(Error::tensor(
                ck.source_path(),
                ck.stored_name(name),
                format!("expected shape [{width}], found {:?}", w.dims()),
            ));
        }
        Ok(
            if cfg.arch == Arch::Gemma3 && !ck.layout.norm_plus_one_baked {
                (w + 1.0)?
            } else {
                w
            },
        )
    }

    pub(super) fn linear(&self, name: &str, out: usize, inp: usize, bias: bool) -> Result<Loaded> {
        let (ck, cfg) = (self.ck, &self.ck.config);
        let path = ck.source_path();
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
        let lora = match ck.adapter.as_ref().and_then(|ad| ad.modules.get(name)) {
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
        };
        Ok(match (w, self.precision) {
            (Weight::Quantized(q), Precision::Native) => Loaded::Ready(Linear::Quant {
                w: QMatMul::from_qtensor(q)?,
                b,
                lora,
            }),
            // Dense weights take the adapter merged in (W + s·B·A): one GEMM
            // instead of three, two of them skinny rank-r ones, and the
            // projection can fuse with its siblings. Rounding differs from
            // the unmerged sum at float epsilon; the zoo's merged and
            // unmerged adapters gave identical ΔAUROC in every cell.
            // Transposed to [in, out] later, so the GEMM reads it contiguously.
            (w, _) => {
                let w = w.to_f32()?;
                let w = match lora {
                    Some(l) => (w + (l.a_t.matmul(&l.b_t)? * l.scale)?.t()?)?,
                    None => w,
                };
                Loaded::Dense { w, b }
            }
        })
    }

    pub(super) fn block(&self, l: usize, rope: usize) -> Result<Block> {
        let cfg = &self.ck.config;
        let p = format!("model.layers.{l}");
        let opt_norm = |n: &str| -> Result<Option<Tensor>> {
            let name = format!("{p}.{n}.weight");
            if self.ck.has(&name) {
                self.norm(&name).map(Some)
            } else {
                Ok(None)
            }
        };
        let [q, k, v, o, gate, up, down] = projections(cfg);
        // q/k/v must carry biases where the config says so (Qwen2); a bias
        // present on any projection is read either way.
        let load = |(m, out, inp): (&str, usize, usize), bias: bool| {
            self.linear(&format!("{p}.{m}"), out, inp, bias)
        };
        let qkv_bias = cfg.attention_bias;
        let block = Block {
            qkv: Proj::new(
                vec![load(q, qkv_bias)?, load(k, qkv_bias)?, load(v, qkv_bias)?],
                vec![q.1, k.1, v.1],
            )?,
            o: load(o, false)?.into_linear()?,
            gate_up: Proj::new(
                vec![load(gate, false)?, load(up, false)?],
                vec![gate.1, up.1],
            )?,
            down: load(down, false)?.into_linear()?,
            input_norm: self.norm(&format!("{p}.input_layernorm.weight"))?,
            post_attn_norm: self.norm(&format!("{p}.post_attention_layernorm.weight"))?,
            pre_ff_norm: opt_norm("pre_feedforward_layernorm")?,
            post_ff_norm: opt_norm("post_feedforward_layernorm")?,
            q_norm: opt_norm("self_attn.q_norm")?,
            k_norm: opt_norm("self_attn.k_norm")?,
            rope,
        };
        if cfg.arch == Arch::Gemma3
            && (block.pre_ff_norm.is_none()
                || block.post_ff_norm.is_none()
                || block.q_norm.is_none()
                || block.k_norm.is_none())
        {
            return Err(Error::tensor(
                self.ck.source_path(),
                format!("{p}.*_norm"),
                "Gemma 3 blocks need q/k norms and pre/post feed-forward norms",
            ));
        }
        Ok(block)
    }

    /// A streamed block is expanded only when a batch reaches it, so its
    /// linear weights' shapes are checked from the file's metadata at load
    /// (`shapes`: every tensor's, read once): a wrong checkpoint still fails
    /// before the first forward pass.
    pub(super) fn check_shapes(
        &self,
        l: usize,
        shapes: &HashMap<String, Vec<usize>>,
    ) -> Result<()> {
        let ck = self.ck;
        for (m, out, inp) in projections(&ck.config) {
            let name = format!("model.layers.{l}.{m}.weight");
            match shapes.get(&name) {
                Some(s) if s[..] == [out, inp] => {}
                found => {
                    return Err(Error::tensor(
                        ck.source_path(),
                        ck.stored_name(&name),
                        match found {
                            Some(s) => format!("expected shape [{out}, {inp}], found {s:?}"),
                            None => "missing from the checkpoint".into(),
                        },
                    ))
                }
            }
        }
        Ok(())
    }

    /// Bytes blocks 0..=`deepest` take once expanded for `precision`: f32 for
    /// dense weights, the stored size for quantized ones kept native.
    pub(super) fn expanded_bytes(ck: &Checkpoint, precision: Precision, deepest: usize) -> u64 {
        ck.tensors()
            .iter()
            .filter(|t| {
                t.name
                    .strip_prefix("model.layers.")
                    .and_then(|r| r.split('.').next())
                    .and_then(|l| l.parse::<usize>().ok())
                    .is_some_and(|l| l <= deepest)
            })
            .map(|t| {
                let n: u64 = t.shape.iter().map(|&d| d as u64).product();
                let dense = matches!(t.dtype.as_str(), "f32" | "f16" | "bf16");
                if precision == Precision::Native && !dense {
                    // ~4.5 bits a weight covers every GGUF type up to Q4_K;
                    // the estimate only has to be the right order.
                    n * 9 / 16
                } else {
                    n * 4
                }
            })
            .sum()
    }
}
