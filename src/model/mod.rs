//! Decoder forward passes with residual-stream capture.
//!
//! Layer L is the residual stream after decoder block L (0-based): TransformerLens
//! `blocks.L.hook_resid_post`, transformers `hidden_states[L+1]`. The pass stops
//! after the deepest requested block and never computes the LM head.

mod kernels;
mod rope;

use candle_core::quantized::QMatMul;
use std::collections::HashMap;

use candle_core::{DType, Device, Module, Tensor};
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
    /// How a prompt's token vectors become one vector. Ordered, so it can
    /// key a map beside a block or a concept.
    #[derive(Serialize, Deserialize, PartialOrd, Ord)]
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

/// A projection as read from the checkpoint: dense weights still [out, in]
/// (transposed when the projection is assembled, together with its
/// siblings), quantized ones ready.
enum Loaded {
    Dense { w: Tensor, b: Option<Tensor> },
    Ready(Linear),
}

impl Loaded {
    fn into_linear(self) -> Result<Linear> {
        Ok(match self {
            Loaded::Dense { w, b } => Linear::Dense {
                w: kernels::transpose_cat(&[w])?,
                b,
            },
            Loaded::Ready(l) => l,
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
    fn new(parts: Vec<Loaded>, sizes: Vec<usize>) -> Result<Self> {
        let mut ws = Vec::new();
        let mut bs = Vec::new();
        for l in &parts {
            if let Loaded::Dense { w, b } = l {
                ws.push(w.clone());
                bs.push(b.clone());
            }
        }
        let same_bias = bs.iter().all(Option::is_some) || bs.iter().all(Option::is_none);
        if ws.len() != parts.len() || !same_bias {
            let parts = parts
                .into_iter()
                .map(Loaded::into_linear)
                .collect::<Result<_>>()?;
            return Ok(Proj::Split(parts));
        }
        drop(parts);
        let w = kernels::transpose_cat(&ws)?;
        drop(ws);
        let b = if bs.iter().all(Option::is_some) {
            Some(Tensor::cat(
                &bs.into_iter().flatten().collect::<Vec<_>>(),
                0,
            )?)
        } else {
            None
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

crate::util::choices! {
    /// Where the decoder blocks' expanded (f32 or kernel-ready) weights live.
    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum Residency {
        /// Streamed when the loaded blocks' expanded weights would take more than half the memory available, resident otherwise.
        Auto = "auto",
        /// Expand every loaded block once, at load: the fastest, and needs the expanded size in memory.
        Resident = "resident",
        /// Keep weights as stored and expand one block at a time as each batch reaches it: memory is bounded by one block, results are bit-identical.
        Streamed = "streamed",
    }
}

impl Residency {
    /// The variable that overrides `auto` for every command that runs a model.
    pub const ENV: &'static str = "PROBEGATE_WEIGHTS";

    /// `PROBEGATE_WEIGHTS` if set (an unknown value is an error naming it), else `auto`.
    pub fn from_env() -> Result<Self> {
        match std::env::var(Self::ENV) {
            Ok(v) if !v.trim().is_empty() => {
                use crate::util::Choice;
                Residency::from_name(v.trim()).ok_or_else(|| {
                    let names: Vec<&str> = Residency::ALL.iter().map(|r| r.name()).collect();
                    Error::Usage(format!(
                        "{}={v:?} is not one of {}",
                        Self::ENV,
                        names.join(", ")
                    ))
                })
            }
            _ => Ok(Residency::Auto),
        }
    }
}

enum Slot {
    Resident(Box<Block>),
    /// Expanded from the checkpoint on each pass; `rope` indexes `Model::ropes`.
    Streamed {
        rope: usize,
    },
}

pub struct Model<'ck> {
    ck: &'ck Checkpoint,
    cfg: ModelConfig,
    /// Kept in its stored type: a lookup gathers the rows it needs and
    /// converts only those to f32.
    embed: Weight,
    blocks: Vec<Slot>,
    ropes: Vec<RopeSpec>,
    rope_interleaved: bool,
    precision: Precision,
    residency: Residency,
}

/// One batch part-way through the blocks.
struct PassState {
    /// The residual stream, [b*t, h]; attention reshapes locally.
    x: Tensor,
    b: usize,
    t: usize,
    ropes: Vec<(Tensor, Tensor)>,
    pool_w: Vec<Tensor>,
    layers: Vec<usize>,
    pools: Vec<Pool>,
    outputs: Vec<Vec<Option<Tensor>>>,
}

impl PassState {
    fn finish(self) -> Result<Captured> {
        let outputs = self
            .outputs
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
            pools: self.pools,
            layers: self.layers,
            outputs,
        })
    }
}

/// Pooled activations for one batch: [pool][layer] -> [batch, d_model].
pub struct Captured {
    pub pools: Vec<Pool>,
    pub layers: Vec<usize>,
    /// outputs[p][l] has shape [batch, d_model]
    pub outputs: Vec<Vec<Tensor>>,
}

/// A block's projections in forward order, each (module, out, in) as the
/// config gives them: what a block loads, what a streamed block's metadata
/// is checked against, and what one block costs expanded.
fn projections(cfg: &ModelConfig) -> [(&'static str, usize, usize); 7] {
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
struct BlockLoader<'ck> {
    ck: &'ck Checkpoint,
    precision: Precision,
}

impl BlockLoader<'_> {
    fn norm(&self, name: &str) -> Result<Tensor> {
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

    fn linear(&self, name: &str, out: usize, inp: usize, bias: bool) -> Result<Loaded> {
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

    fn block(&self, l: usize, rope: usize) -> Result<Block> {
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
    fn check_shapes(&self, l: usize, shapes: &HashMap<String, Vec<usize>>) -> Result<()> {
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
    fn expanded_bytes(ck: &Checkpoint, precision: Precision, deepest: usize) -> u64 {
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

impl<'ck> Model<'ck> {
    /// Loads blocks 0..=`deepest` only: deeper blocks are never read.
    /// Residency comes from `PROBEGATE_WEIGHTS` (default `auto`).
    pub fn load(ck: &'ck Checkpoint, precision: Precision, deepest: usize) -> Result<Self> {
        Self::load_with(ck, precision, deepest, Residency::from_env()?)
    }

    pub fn load_with(
        ck: &'ck Checkpoint,
        precision: Precision,
        deepest: usize,
        residency: Residency,
    ) -> Result<Self> {
        let cfg = ck.config.clone();
        if deepest >= cfg.num_layers {
            return Err(Error::Usage(format!(
                "layer {deepest} is out of range: {} has {} blocks (0..={})",
                ck.reference,
                cfg.num_layers,
                cfg.num_layers - 1
            )));
        }
        let residency = match residency {
            Residency::Auto => {
                let need = BlockLoader::expanded_bytes(ck, precision, deepest);
                let avail = crate::util::available_memory();
                let r = match avail {
                    Some(avail) if need > avail / 2 => Residency::Streamed,
                    _ => Residency::Resident,
                };
                let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
                tracing::info!(
                    "{}: weights {r} (blocks 0..={deepest} take {:.2} GiB expanded; {} available; {} overrides)",
                    ck.spec,
                    gib(need),
                    avail.map_or("unknown".into(), |a| format!("{:.2} GiB", gib(a))),
                    Residency::ENV
                );
                r
            }
            r => r,
        };
        let loader = BlockLoader { ck, precision };
        let (ropes, rope_index) = rope_specs(&cfg, deepest + 1);
        let shapes: HashMap<String, Vec<usize>> = match residency {
            Residency::Streamed => ck
                .tensors()
                .into_iter()
                .map(|t| (t.name, t.shape))
                .collect(),
            _ => HashMap::new(),
        };
        let mut blocks = Vec::with_capacity(deepest + 1);
        for (l, &rope) in rope_index.iter().enumerate() {
            blocks.push(match residency {
                Residency::Streamed => {
                    loader.check_shapes(l, &shapes)?;
                    Slot::Streamed { rope }
                }
                _ => Slot::Resident(Box::new(loader.block(l, rope)?)),
            });
        }
        let h = cfg.hidden_size;
        let path = ck.source_path();
        let embed = ck.get_native("model.embed_tokens.weight")?;
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
            Weight::Quantized(q) => Weight::Dense(q.dequantize(&Device::Cpu)?),
            dense => dense,
        };
        Ok(Model {
            ck,
            cfg,
            embed,
            blocks,
            ropes,
            rope_interleaved: ck.layout.rope_interleaved,
            precision,
            residency,
        })
    }

    /// Bytes one block's weights take expanded to f32 (the unit streamed
    /// weights bound memory by).
    pub fn block_bytes(&self) -> u64 {
        projections(&self.cfg)
            .iter()
            .map(|&(_, out, inp)| 4 * out as u64 * inp as u64)
            .sum()
    }

    /// `Resident` or `Streamed`: what `auto` resolved to.
    /// The checkpoint the model reads its weights from.
    pub fn checkpoint(&self) -> &'ck Checkpoint {
        self.ck
    }

    /// Blocks 0..n are loaded: the model can capture any block below n.
    pub fn blocks_loaded(&self) -> usize {
        self.blocks.len()
    }

    pub fn residency(&self) -> Residency {
        self.residency
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
        let mut out = self.forward_capture_group(&[batch], layers, pools, &mut |_| {})?;
        out.pop()
            .ok_or_else(|| Error::Usage("cannot run an empty batch".into()))
    }

    /// Runs several batches, one [`Captured`] each. With streamed weights the
    /// group runs block-major: each block is expanded once for the whole
    /// group and every batch's residual stream passes through it before the
    /// next block is expanded, so expansion is paid once per group, not once
    /// per batch. Resident weights run batch by batch (nothing to amortize,
    /// and only one residual stream is held).
    /// `on_block(n)` says n blocks are done for the whole group (streamed
    /// only: a group can take minutes at 7B, and its batches finish together).
    pub fn forward_capture_group(
        &self,
        batches: &[&[Vec<u32>]],
        layers: &[usize],
        pools: &[Pool],
        on_block: &mut dyn FnMut(usize),
    ) -> Result<Vec<Captured>> {
        let deepest = layers.iter().copied().max().unwrap_or(0);
        if deepest >= self.blocks.len() {
            return Err(Error::Usage(format!(
                "layer {deepest} was not loaded (model loaded to block {})",
                self.blocks.len().saturating_sub(1)
            )));
        }
        let loader = BlockLoader {
            ck: self.ck,
            precision: self.precision,
        };
        // Runs `f` on block `l`; a streamed block is expanded for the call
        // and dropped after it.
        let with_block = |l: usize, slot: &Slot, f: &mut dyn FnMut(&Block) -> Result<()>| match slot
        {
            Slot::Resident(b) => f(b),
            Slot::Streamed { rope } => f(&loader.block(l, *rope)?),
        };
        let slots = self.blocks.iter().enumerate().take(deepest + 1);
        if self.residency == Residency::Streamed {
            let mut states = batches
                .iter()
                .map(|b| self.embed(b, layers, pools))
                .collect::<Result<Vec<_>>>()?;
            for (l, slot) in slots {
                with_block(l, slot, &mut |blk| {
                    states
                        .iter_mut()
                        .try_for_each(|st| self.block_step(blk, l, st))
                })?;
                on_block(l + 1);
            }
            states.into_iter().map(PassState::finish).collect()
        } else {
            batches
                .iter()
                .map(|b| {
                    let mut st = self.embed(b, layers, pools)?;
                    for (l, slot) in slots.clone() {
                        with_block(l, slot, &mut |blk| self.block_step(blk, l, &mut st))?;
                    }
                    st.finish()
                })
                .collect()
        }
    }

    /// Embeds one batch: the residual stream before block 0, with what the
    /// blocks and the pooling need.
    fn embed(&self, batch: &[Vec<u32>], layers: &[usize], pools: &[Pool]) -> Result<PassState> {
        let cfg = &self.cfg;
        let b = batch.len();
        let t = batch.iter().map(Vec::len).max().unwrap_or(0);
        if b == 0 || t == 0 {
            return Err(Error::Usage("cannot run an empty batch".into()));
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
            Weight::Dense(e) => e.embedding(&ids)?.to_dtype(DType::F32)?,
        };
        if let Some(s) = cfg.embed_scale {
            // transformers rounds sqrt(hidden) to the activation dtype first.
            x = (x * (s as f32) as f64)?;
        }
        Ok(PassState {
            x,
            b,
            t,
            ropes: self.rope_tables(t)?,
            pool_w: self.pool_weights(batch, t, pools)?,
            layers: layers.to_vec(),
            pools: pools.to_vec(),
            outputs: vec![vec![None; layers.len()]; pools.len()],
        })
    }

    /// One decoder block over one batch's residual stream, pooling it if
    /// block `l` is a requested layer.
    fn block_step(&self, blk: &Block, l: usize, st: &mut PassState) -> Result<()> {
        let cfg = &self.cfg;
        let (b, t) = (st.b, st.t);
        let (nh, nkv, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let window = cfg.window_for(l).filter(|w| *w < t);
        let hn = Self::rms(&st.x, &blk.input_norm, cfg.rms_norm_eps)?;
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
        let (cos, sin) = &st.ropes[blk.rope];
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
        let x = (&st.x + attn)?;
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
        st.x = (x + ff)?;

        for (li, _) in st.layers.iter().enumerate().filter(|(_, &ly)| ly == l) {
            let x3 = st.x.reshape((b, t, cfg.hidden_size))?;
            for (pi, w) in st.pool_w.iter().enumerate() {
                // [b,1,t] x [b,t,h] -> [b,1,h]
                st.outputs[pi][li] = Some(w.matmul(&x3)?.squeeze(1)?);
            }
        }
        Ok(())
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
