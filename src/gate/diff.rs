//! `probegate diff`: what changed between a base and a candidate, tensor by
//! tensor and block by block, and which update family that looks like.
//!
//! Tensors are streamed one pair at a time (peak memory is about two of the
//! largest tensors), matched by Hugging Face name across GGUF and safetensors
//! naming, and compared in transformers' layout (q/k permutation and baked
//! norms undone). Adapter candidates are diffed from ΔW = s·B·A directly.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{names, Checkpoint, TensorSummary};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TensorDiff {
    /// The Hugging Face tensor name, whatever the checkpoint's own naming.
    pub name: String,
    /// The decoder block it belongs to; `None` for embeddings, final norm, head.
    pub block: Option<usize>,
    /// The module kind ([`module_kind`]): attn_q, mlp_up, norm, embed...
    pub kind: String,
    pub shape: Vec<usize>,
    /// ‖ΔW‖_F / ‖W‖_F
    pub rel_change: f64,
    /// Cosine between base and candidate weights, flattened (1 when either is zero).
    pub cosine: f64,
    /// Largest singular value of ΔW (power iteration).
    pub top_singular: f64,
    /// ‖ΔW‖_F² / σ₁²: about the number of directions the change spreads over.
    pub stable_rank: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BlockDiff {
    pub block: usize,
    /// Root mean square of the block's tensors' ‖ΔW‖/‖W‖.
    pub rel_change: f64,
    /// Tensors of the block with any change at all.
    pub changed_tensors: usize,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Every tensor, the config and the tokenizer are the base's.
    Identical,
    /// Bit-identical weights under a config or tokenizer that changes the
    /// forward pass (rope base, norm epsilon, vocabulary, special tokens):
    /// the candidate changed something, so the gate judges it as any update.
    ConfigOnly,
    Quantization,
    LowRankAdapter,
    QuantizationPlusAdapter,
    MergedLowRank,
    FullFineTune,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DiffReport {
    /// The base's reference as given.
    pub base: String,
    /// The candidate's reference as given.
    pub candidate: String,
    pub family: Family,
    /// The observations the family was named from, one sentence each.
    pub evidence: Vec<String>,
    pub tensors: Vec<TensorDiff>,
    pub blocks: Vec<BlockDiff>,
    /// Root mean square ‖ΔW‖/‖W‖ per module kind (attn_q, mlp_up, norm, embed...).
    pub kinds: BTreeMap<String, f64>,
}

pub fn module_kind(name: &str) -> String {
    for (pat, kind) in [
        ("q_proj", "attn_q"),
        ("k_proj", "attn_k"),
        ("v_proj", "attn_v"),
        ("o_proj", "attn_o"),
        ("gate_proj", "mlp_gate"),
        ("up_proj", "mlp_up"),
        ("down_proj", "mlp_down"),
        ("embed_tokens", "embed"),
        ("lm_head", "lm_head"),
    ] {
        if name.contains(pat) {
            return kind.into();
        }
    }
    if name.contains("norm") {
        "norm".into()
    } else {
        "other".into()
    }
}

/// Elements per row chunk: temporaries stay at this size (16 MB in f32)
/// however large the tensor, so peak memory is the two tensors themselves.
const CHUNK_ELEMS: usize = 1 << 22;

fn sum_sq(t: &Tensor) -> Result<f64> {
    Ok(t.sqr()?.sum_all()?.to_scalar::<f32>()? as f64)
}

/// Statistics of ΔW = (c − w) + delta, with the candidate taken as c + delta,
/// computed over row chunks so ΔW is never materialised whole.
fn stats(name: &str, w: &Tensor, c: &Tensor, delta: Option<&Tensor>) -> Result<TensorDiff> {
    let as2d = |t: &Tensor| -> Result<Tensor> {
        Ok(if t.rank() == 2 {
            t.clone()
        } else {
            t.reshape((1, t.elem_count()))?
        })
    };
    let (w2, c2) = (as2d(w)?, as2d(c)?);
    let d2 = delta.map(as2d).transpose()?;
    let (rows, cols) = w2.dims2()?;
    let step = (CHUNK_ELEMS / cols.max(1)).max(1);
    // (w rows, candidate rows, ΔW rows) for rows s..s+n.
    let chunk = |s: usize, n: usize| -> Result<(Tensor, Tensor, Tensor)> {
        let wr = w2.narrow(0, s, n)?;
        let cr = c2.narrow(0, s, n)?;
        Ok(match &d2 {
            Some(d) => {
                let dr = d.narrow(0, s, n)?;
                let ce = (&cr + &dr)?;
                let dd = ((&cr - &wr)? + &dr)?;
                (wr, ce, dd)
            }
            None => {
                let dd = (&cr - &wr)?;
                (wr, cr, dd)
            }
        })
    };
    let (mut nw, mut nd, mut nc, mut dot) = (0f64, 0f64, 0f64, 0f64);
    for s in (0..rows).step_by(step) {
        let (wr, cr, dr) = chunk(s, step.min(rows - s))?;
        nw += sum_sq(&wr)?;
        nc += sum_sq(&cr)?;
        nd += sum_sq(&dr)?;
        dot += (&wr * &cr)?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    // σ₁ by power iteration on ΔWᵀΔW from a deterministic start.
    let top = if nd == 0.0 {
        0.0
    } else if w.rank() != 2 {
        nd.sqrt()
    } else {
        let mut v = Tensor::ones((cols, 1), candle_core::DType::F32, &Device::Cpu)?;
        let mut sigma = 0.0;
        for _ in 0..30 {
            let mut acc = Tensor::zeros((cols, 1), candle_core::DType::F32, &Device::Cpu)?;
            for s in (0..rows).step_by(step) {
                let (_, _, dr) = chunk(s, step.min(rows - s))?;
                let u = dr.matmul(&v)?;
                acc = (acc + dr.t()?.matmul(&u)?)?;
            }
            let n = sum_sq(&acc)?.sqrt();
            if n == 0.0 {
                break;
            }
            v = (acc / n)?;
            sigma = n.sqrt();
        }
        sigma
    };
    let sr = if top > 0.0 { nd / (top * top) } else { 0.0 };
    Ok(TensorDiff {
        name: name.into(),
        block: names::block_of(name),
        kind: module_kind(name),
        shape: w.dims().to_vec(),
        rel_change: if nw > 0.0 {
            (nd / nw).sqrt()
        } else {
            nd.sqrt()
        },
        cosine: if nw > 0.0 && nc > 0.0 {
            dot / (nw.sqrt() * nc.sqrt())
        } else {
            1.0
        },
        top_singular: top,
        stable_rank: sr,
    })
}

/// Diffs `cand` against `base`; `on_tensor` ticks once per tensor.
pub fn diff(
    base: &Checkpoint,
    cand: &Checkpoint,
    on_tensor: &mut dyn FnMut(),
) -> Result<DiffReport> {
    let (bc, cc) = (&base.config, &cand.config);
    if bc.arch != cc.arch || bc.hidden_size != cc.hidden_size || bc.num_layers != cc.num_layers {
        return Err(Error::Usage(format!(
            "cannot diff {} ({:?}, {} blocks of width {}) against {} ({:?}, {} blocks of width {}): different architectures",
            base.spec, bc.arch, bc.num_layers, bc.hidden_size, cand.spec, cc.arch, cc.num_layers, cc.hidden_size
        )));
    }
    let base_names = base.tensors();
    let cand_summaries = cand.tensors();
    let cand_names: std::collections::HashSet<&str> =
        cand_summaries.iter().map(|t| t.name.as_str()).collect();
    // An adapter on the same base: ΔW = s·B·A, no second full model.
    let same_base = cand.whatif.is_none()
        && cand.adapter.is_some()
        && cand.weight_files.first() == base.weight_files.first();
    let storage = storage_rounding(base, cand);
    // Against the base rounded to the candidate's storage type: what the
    // update changed beyond storing the weights at that precision (only
    // used to name the update; the reported figures are against the base).
    let mut beyond_rounding = Vec::new();
    let mut tensors = Vec::new();
    for t in &base_names {
        if t.name == "lm_head.weight" && !cand_names.contains(t.name.as_str()) {
            continue; // tied on one side only
        }
        if !cand_names.contains(t.name.as_str()) {
            return Err(Error::tensor(
                cand.source_path(),
                cand.stored_name(&t.name),
                "missing from the candidate",
            ));
        }
        let w = base.get_hf(&t.name)?;
        let d = if same_base {
            let module = t.name.strip_suffix(".weight").unwrap_or(&t.name);
            match cand
                .adapter
                .as_ref()
                .map(|a| a.delta(module))
                .transpose()?
                .flatten()
            {
                Some(delta) => stats(&t.name, &w, &w, Some(&delta))?,
                None => stats(&t.name, &w, &w, None)?,
            }
        } else {
            let mut c = cand.get_hf(&t.name)?;
            if c.dims() != w.dims() {
                return Err(Error::tensor(
                    cand.source_path(),
                    cand.stored_name(&t.name),
                    format!(
                        "shape {:?} differs from the base's {:?}",
                        c.dims(),
                        w.dims()
                    ),
                ));
            }
            if let Some(ad) = &cand.adapter {
                if let Some(delta) = ad.delta(t.name.strip_suffix(".weight").unwrap_or(&t.name))? {
                    c = (c + delta)?;
                }
            }
            if let Some(dt) = storage {
                let rounded = w.to_dtype(dt)?.to_dtype(candle_core::DType::F32)?;
                beyond_rounding.push(stats(&t.name, &rounded, &c, None)?);
            }
            stats(&t.name, &w, &c, None)?
        };
        tensors.push(d);
        on_tensor();
    }
    let mut blocks: BTreeMap<usize, (f64, f64, usize)> = BTreeMap::new();
    let mut kinds: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for t in &tensors {
        // Aggregates are root-mean-square relative changes.
        let e = kinds.entry(t.kind.clone()).or_default();
        e.0 += t.rel_change * t.rel_change;
        e.1 += 1.0;
        if let Some(b) = t.block {
            let e = blocks.entry(b).or_default();
            e.0 += t.rel_change * t.rel_change;
            e.1 += 1.0;
            e.2 += (t.rel_change > 0.0) as usize;
        }
    }
    let blocks = blocks
        .into_iter()
        .map(|(b, (s, n, c))| BlockDiff {
            block: b,
            rel_change: (s / n).sqrt(),
            changed_tensors: c,
        })
        .collect();
    let kinds = kinds
        .into_iter()
        .map(|(k, (s, n))| (k, (s / n).sqrt()))
        .collect();
    let (mut family, mut evidence) = match storage {
        Some(dt) => name_stored(cand, dt, &tensors, &beyond_rounding),
        None => name_family(cand, &tensors),
    };
    if family == Family::Quantization && cand.adapter.is_none() {
        if let Some(why) = requantized_update(&base_names, &cand_summaries, &tensors) {
            evidence.retain(|e| !e.ends_with(": quantization"));
            evidence.push(why);
            family = Family::MergedLowRank;
        }
    }
    let beside = forward_changes(base, cand)?;
    if !beside.is_empty() && family == Family::Identical {
        evidence.retain(|e| e != BIT_IDENTICAL);
        evidence.push("every tensor is bit-identical, but not what runs them".into());
        family = Family::ConfigOnly;
    }
    evidence.extend(beside);
    Ok(DiffReport {
        base: base.spec.clone(),
        candidate: cand.spec.clone(),
        family,
        evidence,
        tensors,
        blocks,
        kinds,
    })
}

/// What the candidate changed outside its weights that changes its forward
/// pass: config fields the model reads and how the tokenizer encodes. Fields
/// only one format can carry (a GGUF file's context length against
/// config.json's) are not the update's doing, so only the model's own
/// arithmetic is compared.
fn forward_changes(base: &Checkpoint, cand: &Checkpoint) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let (b, c) = (&base.config, &cand.config);
    let mut field = |name: &str, changed: bool, from: String, to: String| {
        if changed {
            out.push(format!("the config's `{name}` changed: {from} → {to}"));
        }
    };
    // Floats compared to f32 precision: GGUF stores them as f32.
    let near = |x: f64, y: f64| (x - y).abs() <= 1e-6 * x.abs().max(y.abs());
    let near_opt = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => near(x, y),
        (x, y) => x == y,
    };
    macro_rules! cmp {
        ($same:expr; $($f:ident),*) => {$(
            field(stringify!($f), !$same(&b.$f, &c.$f), format!("{:?}", b.$f), format!("{:?}", c.$f));
        )*};
    }
    cmp!(|x, y| x == y;
        vocab_size, intermediate_size, num_heads, num_kv_heads, head_dim, rope_scaling,
        attention_bias, sliding_window, layer_types, activation, tie_word_embeddings
    );
    cmp!(|x: &f64, y: &f64| near(*x, *y); rms_norm_eps, rope_theta, attn_scale);
    cmp!(|x: &Option<f64>, y: &Option<f64>| near_opt(*x, *y); rope_local_theta, embed_scale);
    if let Some(why) = base
        .tokenizer
        .differs_from(&cand.tokenizer)
        .map_err(|e| Error::field(cand.source_path(), "tokenizer", e.to_string()))?
    {
        out.push(format!("the tokenizer changed: {why}"));
    }
    Ok(out)
}

/// Why a candidate that reads as quantization noise is an update stored in
/// the base's own quantized types (a merged adapter requantized as it is
/// served), or `None`. A quantizer does not pick modules: it rewrites every
/// tensor of a type it converts, and requantizing a tensor to the type it is
/// already in reproduces it (or, for k-quants, moves them all). So when,
/// among the projections base and candidate store in the same quantized
/// type, some kinds changed and at least one kind is bit-identical in every
/// block, something trained those modules; requantization has hidden the
/// low rank the diff would otherwise see (the zoo's merges into SmolLM2's
/// Q4_1 and Gemma 3's Q4_K_M).
fn requantized_update(
    base: &[TensorSummary],
    cand: &[TensorSummary],
    tensors: &[TensorDiff],
) -> Option<String> {
    let float = |d: &str| matches!(d, "f32" | "f16" | "bf16" | "f64");
    let types = |ts: &[TensorSummary]| -> BTreeMap<String, String> {
        ts.iter()
            .map(|t| (t.name.clone(), t.dtype.clone()))
            .collect()
    };
    let (base_ty, cand_ty) = (types(base), types(cand));
    // kind -> whether any of its same-type quantized projections changed.
    let mut kinds: BTreeMap<&str, bool> = BTreeMap::new();
    for t in tensors.iter().filter(|t| t.name.ends_with("_proj.weight")) {
        match (base_ty.get(&t.name), cand_ty.get(&t.name)) {
            (Some(b), Some(c)) if b == c && !float(b) => {
                *kinds.entry(t.kind.as_str()).or_default() |= t.rel_change > 0.0;
            }
            _ => {}
        }
    }
    let (changed, untouched): (Vec<&str>, Vec<&str>) = kinds.keys().partition(|k| kinds[*k]);
    (!changed.is_empty() && !untouched.is_empty()).then(|| {
        format!(
            "the projections stored in the base's own quantized types changed by module kind \
             ({} changed; {} bit-identical in every block); a quantizer does not pick modules: an update to those modules, merged and requantized to the base's types",
            changed.join(", "),
            untouched.join(", ")
        )
    })
}

/// The half-precision type the candidate stores every block projection in,
/// when the base stores them otherwise: a merged adapter served in bf16
/// moves every weight by rounding, which alone would read as a full
/// fine-tune.
fn storage_rounding(base: &Checkpoint, cand: &Checkpoint) -> Option<candle_core::DType> {
    if cand.adapter.is_some() || cand.whatif.is_some() {
        return None;
    }
    let proj = |ck: &Checkpoint| -> Vec<String> {
        ck.tensors()
            .into_iter()
            .filter(|t| t.name.ends_with("_proj.weight"))
            .map(|t| t.dtype)
            .collect()
    };
    let (b, c) = (proj(base), proj(cand));
    let dt = match c.first().map(String::as_str) {
        Some("bf16") => candle_core::DType::BF16,
        Some("f16") => candle_core::DType::F16,
        _ => return None,
    };
    let same = |v: &[String], x: &str| v.iter().all(|d| d == x);
    (same(&c, &c[0]) && !same(&b, &c[0])).then_some(dt)
}

/// Names a candidate stored at a lower float precision than its base from
/// what it changed beyond that rounding.
fn name_stored(
    cand: &Checkpoint,
    dt: candle_core::DType,
    tensors: &[TensorDiff],
    beyond: &[TensorDiff],
) -> (Family, Vec<String>) {
    let (family, mut ev) = name_family(cand, beyond);
    let dt = format!("{dt:?}").to_lowercase();
    let rounded_only = beyond.iter().filter(|t| t.rel_change == 0.0).count();
    ev.insert(
        0,
        format!(
            "the candidate stores its weights as {dt}: compared with the base rounded to {dt}, \
             {rounded_only} of {} tensors differ by that rounding alone",
            tensors.len()
        ),
    );
    if family == Family::Identical {
        ev.retain(|e| e != BIT_IDENTICAL);
        ev.push(format!(
            "nothing changed but the storage precision ({dt}): quantization"
        ));
        return (Family::Quantization, ev);
    }
    (family, ev)
}

/// The evidence line of an identical candidate, which the callers that
/// rename the family (storage precision, config only) replace.
const BIT_IDENTICAL: &str = "every tensor is bit-identical in transformers' layout";

fn name_family(cand: &Checkpoint, tensors: &[TensorDiff]) -> (Family, Vec<String>) {
    let linear: Vec<&TensorDiff> = tensors
        .iter()
        .filter(|t| t.name.ends_with("_proj.weight"))
        .collect();
    let changed: Vec<&&TensorDiff> = linear.iter().filter(|t| t.rel_change > 0.0).collect();
    let others_changed = tensors
        .iter()
        .filter(|t| !t.name.ends_with("_proj.weight") && t.rel_change > 0.0)
        .count();
    let max_sr = changed.iter().map(|t| t.stable_rank).fold(0.0, f64::max);
    let median_rel = {
        let mut v: Vec<f64> = changed.iter().map(|t| t.rel_change).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let mut ev = vec![format!(
        "{} of {} block projections changed (median ‖ΔW‖/‖W‖ {:.4}, max stable rank of ΔW {:.1}); {} other tensors changed",
        changed.len(),
        linear.len(),
        median_rel,
        max_sr,
        others_changed
    )];
    if changed.is_empty() && others_changed == 0 {
        ev.push(BIT_IDENTICAL.into());
        return (Family::Identical, ev);
    }
    // Most projections moved a little and nothing else did. Not necessarily
    // all: a quantizer leaves tensors already stored at its precision as
    // they were (Gemma 3's Q4_K_M keeps some in Q8_0, so q8_0 is lossless there).
    let quantized_all =
        changed.len() * 2 >= linear.len() && others_changed == 0 && median_rel < 0.25;
    if let Some(ad) = &cand.adapter {
        ev.push(format!(
            "candidate carries a rank-{} LoRA adapter on {} modules",
            ad.r,
            ad.modules.len()
        ));
        // An adapter on a quantized copy of the base adds full-rank noise to
        // every projection; an adapter alone (even on all seven projection
        // kinds) leaves ΔW low-rank.
        let adapter_rank_only = changed
            .iter()
            .all(|t| t.stable_rank <= (1.5 * ad.r as f64).max(16.0));
        if cand.whatif.is_some() || (quantized_all && !adapter_rank_only) {
            return (Family::QuantizationPlusAdapter, ev);
        }
        return (Family::LowRankAdapter, ev);
    }
    // A merged adapter's ΔW has a handful of directions; quantization noise and
    // fine-tuning spread over many.
    let low_rank = changed.iter().all(|t| t.stable_rank < 16.0);
    if low_rank && others_changed == 0 {
        ev.push("every ΔW is low-rank: a merged low-rank adapter".into());
        return (Family::MergedLowRank, ev);
    }
    if quantized_all {
        ev.push(if changed.len() == linear.len() {
            "every projection moved a little, norms and embeddings did not, and ΔW is full-rank noise: quantization".into()
        } else {
            "most projections moved a little (the rest were already stored at that precision), norms and embeddings did not, and ΔW is full-rank noise: quantization".into()
        });
        return (Family::Quantization, ev);
    }
    ev.push(
        "high-rank changes beyond the projections' quantization signature: a full fine-tune".into(),
    );
    (Family::FullFineTune, ev)
}

#[cfg(test)]
mod tests;
