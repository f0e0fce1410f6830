//! `probegate activations`: prompts in, pooled residual-stream vectors out.
//!
//! Output is a safetensors file with one f32 tensor `layer.{L}` of shape
//! [n_prompts, d_model] per requested layer, rows in input order, and
//! `__metadata__` recording the model fingerprint, layers, pooling, precision
//! and token counts, so a cached file says exactly what produced it.

pub mod cache;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::model::{Captured, Model, Pool, Precision, Residency};
use crate::util::Choice;

pub const FORMAT_VERSION: &str = "1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExtractOptions {
    /// Decoder blocks whose output (the residual stream after the block) is kept.
    pub layers: Vec<usize>,
    /// One output per pooling, from the same forward passes.
    pub pools: Vec<Pool>,
    pub precision: Precision,
    /// Prompts per forward pass.
    pub batch_size: usize,
    /// Prompts longer than this are cut to their first `max_tokens` tokens.
    pub max_tokens: usize,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            layers: vec![],
            pools: vec![Pool::Last],
            precision: Precision::F32,
            batch_size: crate::util::DEFAULT_BATCH_SIZE,
            max_tokens: 2048,
        }
    }
}

/// Pooled activations for one pooling: layer -> [n, d_model].
#[derive(Debug, Clone)]
pub struct Activations {
    /// The fingerprint of the model that produced them (hex sha256).
    pub model_fingerprint: String,
    /// The model reference as given; empty when a file does not record it.
    pub model_ref: String,
    pub pool: Pool,
    pub precision: Precision,
    pub layers: Vec<usize>,
    /// Tokens per prompt after truncation, in input order.
    pub token_counts: Vec<usize>,
    /// Prompts cut to `max_tokens`.
    pub truncated: usize,
    /// Layer -> f32 [n_prompts, d_model], rows in input order.
    pub data: BTreeMap<usize, Tensor>,
}

/// Token ids for each prompt, as the model's own tokenizer produces them.
pub fn tokenize(
    ck: &Checkpoint,
    texts: &[String],
    max_tokens: usize,
) -> Result<(Vec<Vec<u32>>, usize)> {
    let mut truncated = 0;
    let mut out = Vec::with_capacity(texts.len());
    for t in texts {
        let mut ids = ck.tokenizer.encode(t)?;
        if ids.is_empty() {
            return Err(Error::Usage(format!("prompt {t:?} tokenizes to nothing")));
        }
        if ids.len() > max_tokens {
            ids.truncate(max_tokens);
            truncated += 1;
        }
        out.push(ids);
    }
    Ok((out, truncated))
}

/// Bytes of one padded batch's residual stream.
fn stream_bytes(chunk: &[usize], ids: &[Vec<u32>], width: u64) -> u64 {
    let t = chunk.iter().map(|&i| ids[i].len()).max().unwrap_or(0) as u64;
    chunk.len() as u64 * t * width
}

/// Runs one group of batches, reporting blocks done (streamed groups only).
type RunGroup<'a> = dyn Fn(&[&[usize]], &mut dyn FnMut(usize)) -> Result<Vec<Captured>> + Sync + 'a;

/// Runs `groups` as tasks on rayon's pool: its threads split the groups
/// between them and rebalance by stealing, and a thread with no group left
/// steals the kernel tasks of those still running. Progress is reported
/// here, on the calling thread.
fn side_by_side(
    groups: &[&[&[usize]]],
    run_group: &RunGroup,
    on_batch: &mut dyn FnMut(usize),
) -> Result<Vec<Vec<Captured>>> {
    use rayon::prelude::*;
    use std::sync::mpsc;
    let (tx, rx) = mpsc::channel::<usize>();
    std::thread::scope(|scope| {
        let work = scope.spawn(move || {
            groups
                .par_iter()
                .map(|g| {
                    let r = run_group(g, &mut |_| {});
                    if r.is_ok() {
                        // The receiver is read below until every sender is gone.
                        let _ = tx.send(g.iter().map(|c| c.len()).sum());
                    }
                    r
                })
                .collect::<Result<Vec<_>>>()
        });
        for n in rx {
            on_batch(n);
        }
        match work.join() {
            Ok(r) => r,
            // A panic is a bug, not an input error: let it surface as one.
            Err(p) => std::panic::resume_unwind(p),
        }
    })
}

/// Runs every prompt through `model`, longest first so batches pad little,
/// and returns one [`Activations`] per pooling, rows in input order.
pub fn extract(
    ck: &Checkpoint,
    model: &Model,
    texts: &[String],
    opts: &ExtractOptions,
    on_batch: &mut dyn FnMut(usize),
) -> Result<Vec<Activations>> {
    if texts.is_empty() {
        return Err(Error::Usage("no prompts to run".into()));
    }
    if opts.layers.is_empty() {
        return Err(Error::Usage("no layers requested".into()));
    }
    let n_layers = ck.config.num_layers;
    if let Some(&bad) = opts.layers.iter().find(|&&l| l >= n_layers) {
        return Err(Error::Usage(format!(
            "layer {bad} is out of range: {} has {n_layers} blocks (0..={})",
            ck.reference,
            n_layers - 1
        )));
    }
    let bs = opts.batch_size.max(1);
    let (ids, truncated) = tokenize(ck, texts, opts.max_tokens.max(1))?;
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));

    // rows[p][l][i] for prompt i
    let mut rows: Vec<Vec<Vec<Option<Tensor>>>> =
        vec![vec![vec![None; ids.len()]; opts.layers.len()]; opts.pools.len()];
    let chunks: Vec<&[usize]> = order.chunks(bs).collect();
    // Streamed weights are expanded once per group of batches, so a group
    // holds as many residual streams as fit in one block's expanded size:
    // activations then cost no more memory than the block they save.
    // Resident weights have nothing to amortize: a cap of 0 makes every
    // group one batch, holding one residual stream as before.
    let group_bytes = match model.residency() {
        Residency::Streamed => model.block_bytes().max(256 << 20),
        _ => 0,
    };
    let width = ck.config.hidden_size as u64 * 4;
    let mut groups: Vec<&[&[usize]]> = Vec::new();
    let mut start = 0;
    while start < chunks.len() {
        let mut end = start + 1;
        let mut bytes = stream_bytes(chunks[start], &ids, width);
        while end < chunks.len() {
            let more = stream_bytes(chunks[end], &ids, width);
            if bytes + more > group_bytes {
                break;
            }
            bytes += more;
            end += 1;
        }
        groups.push(&chunks[start..end]);
        start = end;
    }
    let run_group = |group: &[&[usize]], on_block: &mut dyn FnMut(usize)| {
        let batches: Vec<Vec<Vec<u32>>> = group
            .iter()
            .map(|c| c.iter().map(|&i| ids[i].clone()).collect())
            .collect();
        let refs: Vec<&[Vec<u32>]> = batches.iter().map(Vec::as_slice).collect();
        model.forward_capture_group(&refs, &opts.layers, &opts.pools, on_block)
    };
    let mut place = |group: &[&[usize]], caps: Vec<Captured>| -> Result<()> {
        for (chunk, cap) in group.iter().zip(caps) {
            for (pi, per_layer) in cap.outputs.iter().enumerate() {
                for (li, t) in per_layer.iter().enumerate() {
                    for (bi, &i) in chunk.iter().enumerate() {
                        rows[pi][li][i] = Some(t.get(bi)?);
                    }
                }
            }
        }
        Ok(())
    };
    // Side by side when the batches outnumber the threads enough for the
    // last ones to even out; a few batches run one after another, each on
    // every thread.
    if group_bytes == 0 && rayon::current_num_threads() > 1 && groups.len() >= 8 {
        // Resident weights, one batch per group: several batches at once,
        // each mostly on one thread. A batch of a few hundred tokens is too
        // small a GEMM to keep two threads busy (they wait on each other
        // between ops, and the single-threaded steps between GEMMs idle the
        // other core); two batches at once fill both. Measured on the
        // 2-core EPYC: the corpus through two models, 11.8 s -> 10.0 s.
        // Each batch is computed exactly as before (the kernels split their
        // work the same way whichever thread runs each piece), so the
        // activations are bit-identical.
        let results = side_by_side(&groups, &run_group, on_batch)?;
        for (group, caps) in groups.iter().zip(results) {
            place(group, caps)?;
        }
    } else {
        for group in &groups {
            // Progress in prompts: a streamed group's prompts advance together,
            // block by block.
            let prompts: usize = group.iter().map(|c| c.len()).sum();
            let blocks = opts.layers.iter().max().map_or(1, |&d| d + 1);
            let mut reported = 0;
            let caps = run_group(group, &mut |done| {
                let now = prompts * done / blocks;
                if now > reported {
                    on_batch(now - reported);
                    reported = now;
                }
            })?;
            if prompts > reported {
                on_batch(prompts - reported);
            }
            place(group, caps)?;
        }
    }
    let fingerprint = ck.fingerprint()?;
    let token_counts: Vec<usize> = ids.iter().map(Vec::len).collect();
    let mut out = Vec::new();
    for (pi, pool) in opts.pools.iter().enumerate() {
        let mut data = BTreeMap::new();
        for (li, &layer) in opts.layers.iter().enumerate() {
            let r: Vec<Tensor> = rows[pi][li]
                .iter()
                .map(|t| {
                    t.clone()
                        .ok_or_else(|| Error::Usage("a prompt was not run".into()))
                })
                .collect::<Result<_>>()?;
            data.insert(layer, Tensor::stack(&r, 0)?);
        }
        out.push(Activations {
            model_fingerprint: fingerprint.clone(),
            model_ref: ck.spec.clone(),
            pool: *pool,
            precision: opts.precision,
            layers: opts.layers.clone(),
            token_counts: token_counts.clone(),
            truncated,
            data,
        });
    }
    Ok(out)
}

impl Activations {
    pub fn metadata(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        m.insert("format".into(), "probegate.activations".into());
        m.insert("format_version".into(), FORMAT_VERSION.into());
        m.insert("probegate_version".into(), env!("CARGO_PKG_VERSION").into());
        m.insert("model_fingerprint".into(), self.model_fingerprint.clone());
        m.insert("model".into(), self.model_ref.clone());
        m.insert(
            "layers".into(),
            serde_json::to_string(&self.layers).unwrap_or_default(),
        );
        m.insert("hook".into(), "resid_post".into());
        m.insert("pool".into(), self.pool.to_string());
        m.insert("precision".into(), self.precision.to_string());
        m.insert(
            "token_counts".into(),
            serde_json::to_string(&self.token_counts).unwrap_or_default(),
        );
        m.insert("truncated_prompts".into(), self.truncated.to_string());
        m
    }

    /// Writes atomically: a partial file never appears under `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors: Vec<(String, Tensor)> = self
            .data
            .iter()
            .map(|(l, t)| (format!("layer.{l}"), t.clone()))
            .collect();
        crate::util::save_safetensors(tensors, self.metadata(), path)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::Safetensors {
            path: path.into(),
            msg: e.to_string(),
        })?;
        let (_, meta) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| Error::Safetensors {
                path: path.into(),
                msg: e.to_string(),
            })?;
        let md = meta.metadata().clone().unwrap_or_default();
        let get = |k: &str| {
            md.get(k)
                .cloned()
                .ok_or_else(|| Error::field(path, format!("__metadata__.{k}"), "missing"))
        };
        if get("format")? != "probegate.activations" {
            return Err(Error::field(
                path,
                "__metadata__.format",
                "not a probegate activations file",
            ));
        }
        let layers: Vec<usize> = serde_json::from_str(&get("layers")?)
            .map_err(|e| Error::field(path, "__metadata__.layers", e.to_string()))?;
        let token_counts: Vec<usize> = serde_json::from_str(&get("token_counts")?)
            .map_err(|e| Error::field(path, "__metadata__.token_counts", e.to_string()))?;
        let pool: Pool = choice(path, "pool", &get("pool")?, "pooling")?;
        let precision: Precision = choice(path, "precision", &get("precision")?, "precision")?;
        let mut data = BTreeMap::new();
        for &l in &layers {
            let name = format!("layer.{l}");
            let v = st
                .tensor(&name)
                .map_err(|e| Error::tensor(path, &name, e.to_string()))?;
            if v.dtype() != safetensors::Dtype::F32
                || v.shape().len() != 2
                || v.shape()[0] != token_counts.len()
            {
                return Err(Error::tensor(
                    path,
                    &name,
                    format!(
                        "expected f32 [{}, d_model], found {:?} {:?}",
                        token_counts.len(),
                        v.dtype(),
                        v.shape()
                    ),
                ));
            }
            let t = Tensor::from_raw_buffer(
                v.data(),
                candle_core::DType::F32,
                v.shape(),
                &Device::Cpu,
            )?;
            data.insert(l, t);
        }
        Ok(Activations {
            model_fingerprint: get("model_fingerprint")?,
            model_ref: md.get("model").cloned().unwrap_or_default(),
            pool,
            precision,
            layers,
            token_counts,
            truncated: md
                .get("truncated_prompts")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            data,
        })
    }
}

/// The metadata value `value` at `key` read as one of `T`'s names; `what`
/// names `T` in the error.
fn choice<T: Choice>(path: &Path, key: &str, value: &str, what: &str) -> Result<T> {
    T::from_name(value).ok_or_else(|| {
        Error::field(
            path,
            format!("__metadata__.{key}"),
            format!("unknown {what} `{value}`"),
        )
    })
}
