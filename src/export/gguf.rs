//! GGUF files from what-if quantized checkpoints: how `q8_0(BASE)` or
//! `q4_0(BASE)` becomes the file a server would load, and how a merged
//! adapter is stored as a GGUF server would hold it (every tensor back in
//! the base file's own type).

use std::path::Path;

use candle_core::quantized::gguf_file;

use crate::checkpoint::{Checkpoint, Weight};
use crate::error::{Error, Result};

/// Writes `ck` (what-if quantization applied) as a GGUF file with the base
/// GGUF's metadata: how `q8_0(BASE)` or `q4_0(BASE)` becomes a real file.
pub fn write_gguf(ck: &Checkpoint, out: &Path) -> Result<()> {
    write_like_base(ck, out, "writing GGUF", false, &mut |h, _| {
        Ok(match ck.get(h)? {
            Weight::Quantized(q) => q,
            Weight::Dense(t) => candle_core::quantized::QTensor::quantize(
                &t,
                candle_core::quantized::GgmlDType::F32,
            )?,
        })
    })
}

/// Writes `ck` (a GGUF base with an adapter applied, merged in f32) as the
/// GGUF a server would hold after merging: every tensor requantized to the
/// type the base file stores it in (a Q4_K_M base keeps its Q4_K/Q6_K mix),
/// so the rounding a real merge-and-requantize does is in the candidate.
pub fn write_gguf_as_base(ck: &Checkpoint, out: &Path) -> Result<()> {
    write_like_base(
        ck,
        out,
        "storing a merge as the base's GGUF",
        true,
        &mut |h, dtype| {
            let delta = match (&ck.adapter, h.strip_suffix(".weight")) {
                (Some(ad), Some(module)) => ad.delta(module)?,
                _ => None,
            };
            Ok(match (ck.get(h)?, delta) {
                // Untouched by the adapter: the base's own bytes, as a server
                // that merges and requantizes would get them back.
                (Weight::Quantized(q), None) => q,
                (w, d) => {
                    let mut t = w.to_f32()?;
                    if let Some(d) = d {
                        // The delta is in transformers' layout; the file keeps its own.
                        let d = crate::checkpoint::layout::to_stored_layout(
                            h,
                            d,
                            &ck.layout,
                            ck.config.num_heads,
                            ck.config.num_kv_heads,
                        )?;
                        t = (t + d)?;
                    }
                    // Quantized along rows as the base was; a row length its
                    // blocks do not divide stays in f32 (candle refuses it).
                    let fits = t
                        .dims()
                        .last()
                        .is_some_and(|&n| n % dtype.block_size() == 0);
                    let target = if fits {
                        dtype
                    } else {
                        candle_core::quantized::GgmlDType::F32
                    };
                    candle_core::quantized::QTensor::quantize(&t, target)?
                }
            })
        },
    )
}

/// A GGUF with the base file's metadata and tensor names, each tensor
/// made by `tensor(hf_name, base_dtype)`; `general.file_type` is kept only
/// when every tensor keeps the base's type (`keep_file_type`).
fn write_like_base(
    ck: &Checkpoint,
    out: &Path,
    what: &str,
    keep_file_type: bool,
    tensor: &mut dyn FnMut(
        &str,
        candle_core::quantized::GgmlDType,
    ) -> Result<candle_core::quantized::QTensor>,
) -> Result<()> {
    let Some((content, names)) = ck.gguf_parts() else {
        return Err(Error::Usage(format!(
            "{}: {what} needs a GGUF base (its metadata is copied)",
            ck.spec
        )));
    };
    let mut tensors: Vec<(String, candle_core::quantized::QTensor)> = Vec::new();
    let mut hf: Vec<(&String, &String)> = names.iter().collect();
    hf.sort_by(|a, b| a.1.cmp(b.1));
    for (h, g) in hf {
        let dtype = content
            .tensor_infos
            .get(g)
            .map(|i| i.ggml_dtype)
            .ok_or_else(|| Error::Usage(format!("{}: no tensor {g} in the base GGUF", ck.spec)))?;
        tensors.push((g.clone(), tensor(h, dtype)?));
    }
    let mut meta: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .filter(|(k, _)| keep_file_type || k.as_str() != "general.file_type")
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    meta.sort_by(|a, b| a.0.cmp(b.0));
    let refs: Vec<(&str, &candle_core::quantized::QTensor)> =
        tensors.iter().map(|(n, q)| (n.as_str(), q)).collect();
    crate::util::write_atomic_with(out, |f| {
        gguf_file::write(f, &meta, &refs).map_err(|e| Error::Gguf {
            path: out.to_path_buf(),
            msg: crate::error::candle_msg(&e),
        })
    })
}
