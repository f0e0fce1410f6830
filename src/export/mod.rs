//! Writers: checkpoints out in the formats others load. `probegate
//! convert` (this file): any readable checkpoint to a Hugging Face model
//! directory (config.json, model.safetensors, tokenizer.json), holding the
//! tensors transformers would load: the llama q/k row permutation that GGUF
//! converters apply is undone and Gemma's baked (1 + w) norms are unbaked.

pub mod bnb;
pub mod gguf;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};
use serde::Serialize;

use crate::checkpoint::layout::to_hf_values;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};

crate::util::choices! {
    /// The dtype of an exported Hugging Face directory's weights.
    pub enum OutDtype {
        /// 32-bit floats: exact.
        F32 = "f32",
        /// bfloat16: half the size, as most checkpoints ship.
        Bf16 = "bf16",
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ConvertSummary {
    pub source: String,
    pub out_dir: String,
    pub tensors: usize,
    pub dtype: OutDtype,
    pub unpermuted_qk: usize,
    pub unbaked_norms: usize,
    pub bytes: u64,
}

/// Writes a transformers model directory: model.safetensors (tensors in
/// transformers' layout, sorted by name), config.json and the tokenizer.
/// Returns the safetensors path.
pub fn write_hf_dir(
    out_dir: &Path,
    mut tensors: Vec<(String, Tensor)>,
    cfg: &crate::checkpoint::config::ModelConfig,
    tokenizer: &crate::tokenizer::ModelTokenizer,
    mut meta: HashMap<String, String>,
    dtype: OutDtype,
) -> Result<std::path::PathBuf> {
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let mut hf_cfg = cfg.clone();
    hf_cfg.tie_word_embeddings = !tensors.iter().any(|(n, _)| n == "lm_head.weight");
    let mut config_json = hf_cfg.to_hf_json();
    if let (Some(o), OutDtype::Bf16) = (config_json.as_object_mut(), dtype) {
        o.insert("torch_dtype".into(), "bfloat16".into());
    }
    if dtype == OutDtype::Bf16 {
        for (_, t) in tensors.iter_mut() {
            *t = t.to_dtype(DType::BF16)?;
        }
    }
    meta.insert("format".to_string(), "pt".to_string());
    let st_path = out_dir.join("model.safetensors");
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    crate::util::save_safetensors(tensors, meta, &st_path)?;
    write_config_and_tokenizer(out_dir, &config_json, tokenizer)?;
    Ok(st_path)
}

/// config.json, tokenizer.json and tokenizer_config.json, as transformers reads them.
pub fn write_config_and_tokenizer(
    out_dir: &Path,
    config_json: &serde_json::Value,
    tokenizer: &crate::tokenizer::ModelTokenizer,
) -> Result<()> {
    let write = |name: &str, text: String| -> Result<()> {
        let p = out_dir.join(name);
        std::fs::write(&p, text).map_err(|e| Error::io(&p, e))
    };
    write(
        "config.json",
        serde_json::to_string_pretty(config_json).unwrap_or_default(),
    )?;
    write("tokenizer.json", tokenizer.to_tokenizer_json()?)?;
    write(
        "tokenizer_config.json",
        serde_json::to_string_pretty(&tokenizer.tokenizer_config_json()).unwrap_or_default(),
    )
}

pub fn convert(
    ck: &Checkpoint,
    out_dir: &Path,
    dtype: OutDtype,
    on_tensor: &mut dyn FnMut(),
) -> Result<ConvertSummary> {
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let cfg = &ck.config;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let (mut unpermuted, mut unbaked) = (0, 0);
    for s in ck.tensors() {
        let t = ck.get_f32(&s.name)?;
        let (t, p, u) = to_hf_values(
            &s.name,
            t,
            &ck.layout,
            cfg.arch,
            cfg.num_heads,
            cfg.num_kv_heads,
        )?;
        // Adapters are merged in transformers' layout: W + s·B·A.
        let t = match (&ck.adapter, s.name.strip_suffix(".weight")) {
            (Some(ad), Some(module)) => match ad.delta(module)? {
                Some(d) => (t + d)?,
                None => t,
            },
            _ => t,
        };
        unpermuted += p as usize;
        unbaked += u as usize;
        tensors.insert(s.name.clone(), t);
        on_tensor();
    }
    let n = tensors.len();
    let mut meta = HashMap::new();
    meta.insert("probegate_converted_from".to_string(), ck.spec.clone());
    meta.insert(
        "probegate_source_fingerprint".to_string(),
        ck.fingerprint()?,
    );
    let st_path = write_hf_dir(
        out_dir,
        tensors.into_iter().collect(),
        cfg,
        &ck.tokenizer,
        meta,
        dtype,
    )?;
    let bytes = std::fs::metadata(&st_path).map(|m| m.len()).unwrap_or(0);
    Ok(ConvertSummary {
        source: ck.spec.clone(),
        out_dir: out_dir.display().to_string(),
        tensors: n,
        dtype,
        unpermuted_qk: unpermuted,
        unbaked_norms: unbaked,
        bytes,
    })
}
