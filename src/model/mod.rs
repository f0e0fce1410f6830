//! Decoder forward passes with residual-stream capture.
//!
//! Layer L is the residual stream after decoder block L (0-based): TransformerLens
//! `blocks.L.hook_resid_post`, transformers `hidden_states[L+1]`. The pass stops
//! after the deepest requested block and never computes the LM head.

mod block;
mod device;
mod kernels;
mod linear;
mod rope;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use crate::checkpoint::config::{Arch, ModelConfig};
use crate::checkpoint::{Checkpoint, Weight};
use crate::error::{Error, Result};
use block::{projections, Block, BlockLoader};
pub use device::{
    cache_tag_from_env, cuda_ordinal, device_from_env, device_name, open_device, DEVICE_ENV,
};
pub(crate) use rope::{rope_specs, rope_tables, RopeSpec};

crate::util::choices! {
    /// How weights are held for the forward pass.
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
    #[derive(PartialOrd, Ord)]
    pub enum Pool {
        /// The last real token's vector.
        Last = "last",
        /// Mean over real (non-padding) tokens.
        Mean = "mean",
    }
}

crate::util::choices! {
    /// Where the decoder blocks' expanded (f32 or kernel-ready) weights live.
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
    /// Where blocks run (`PROBEGATE_DEVICE`); the embedding lookup and the
    /// pooled outputs stay on the CPU.
    device: Device,
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

impl<'ck> Model<'ck> {
    /// Loads blocks 0..=`deepest` only: deeper blocks are never read.
    /// Residency comes from `PROBEGATE_WEIGHTS` (default `auto`).
    pub fn load(ck: &'ck Checkpoint, precision: Precision, deepest: usize) -> Result<Self> {
        Self::load_with(ck, precision, deepest, Residency::from_env()?)
    }

    /// As [`Model::load`], with the residency given; the device comes from
    /// `PROBEGATE_DEVICE` (default the CPU).
    pub fn load_with(
        ck: &'ck Checkpoint,
        precision: Precision,
        deepest: usize,
        residency: Residency,
    ) -> Result<Self> {
        Self::load_on(ck, precision, deepest, residency, device_from_env()?)
    }

    /// As [`Model::load_with`], on the device given (see [`device_from_env`]).
    pub fn load_on(
        ck: &'ck Checkpoint,
        precision: Precision,
        deepest: usize,
        residency: Residency,
        device: Device,
    ) -> Result<Self> {
        // One load at a time in the process: `auto` decides from the memory
        // left, so a load beside another (revalidation runs the base and the
        // candidate side by side) must see the first one's weights taken.
        static LOADING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = LOADING.lock().unwrap_or_else(|p| p.into_inner());
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
            // The expanded weights live in GPU memory, not in the RAM `auto`
            // measures; a model too large for the card fails its allocation,
            // and `streamed` bounds it to one block there too.
            Residency::Auto if !device.is_cpu() => Residency::Resident,
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
                _ => Slot::Resident(Box::new(loader.block(l, rope)?.into_device(&device)?)),
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
            device,
        })
    }

    /// Where the blocks run.
    pub fn device(&self) -> &Device {
        &self.device
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
            Slot::Streamed { rope } => f(&loader.block(l, *rope)?.into_device(&self.device)?),
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
        let dev = &self.device;
        let ropes = self
            .rope_tables(t)?
            .into_iter()
            .map(|(c, s)| Ok((c.to_device(dev)?, s.to_device(dev)?)))
            .collect::<Result<Vec<_>>>()?;
        let pool_w = self
            .pool_weights(batch, t, pools)?
            .into_iter()
            .map(|w| w.to_device(dev))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(PassState {
            x: x.to_device(dev)?,
            b,
            t,
            ropes,
            pool_w,
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
                // Back on the CPU: everything after the forward pass runs there.
                st.outputs[pi][li] = Some(w.matmul(&x3)?.squeeze(1)?.to_device(&Device::Cpu)?);
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
