//! GGUF files from what-if quantized checkpoints: how `q8_0(BASE)` or
//! `q4_0(BASE)` becomes the file a server would load.

use std::path::Path;

use candle_core::quantized::gguf_file;

use crate::checkpoint::{Checkpoint, Weight};
use crate::error::{Error, Result};

/// Writes `ck` (what-if quantization applied) as a GGUF file with the base
/// GGUF's metadata: how `q8_0(BASE)` or `q4_0(BASE)` becomes a real file.
pub fn write_gguf(ck: &Checkpoint, out: &Path) -> Result<()> {
    let Some((content, names)) = ck.gguf_parts() else {
        return Err(Error::Usage(format!(
            "{}: writing GGUF needs a GGUF base (its metadata is copied)",
            ck.spec
        )));
    };
    let mut tensors: Vec<(String, candle_core::quantized::QTensor)> = Vec::new();
    let mut hf: Vec<(&String, &String)> = names.iter().collect();
    hf.sort_by(|a, b| a.1.cmp(b.1));
    for (h, g) in hf {
        let q = match ck.get(h)? {
            Weight::Quantized(q) => q,
            Weight::Dense(t) => candle_core::quantized::QTensor::quantize(
                &t,
                candle_core::quantized::GgmlDType::F32,
            )?,
        };
        tensors.push((g.clone(), q));
    }
    let mut meta: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .filter(|(k, _)| k.as_str() != "general.file_type")
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
