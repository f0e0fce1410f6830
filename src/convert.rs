//! `probegate convert`: any readable checkpoint to a Hugging Face model
//! directory (config.json, model.safetensors, tokenizer.json), holding the
//! tensors transformers would load: the llama q/k row permutation that GGUF
//! converters apply is undone and Gemma's baked (1 + w) norms are unbaked.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};
use serde::Serialize;

use crate::checkpoint::{Checkpoint, WeightLayout};
use crate::error::{Error, Result};
use crate::model::config::Arch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OutDtype {
    F32,
    Bf16,
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

/// Inverse of llama.cpp's `permute(w, n_head)`: rows grouped per head as
/// (half, 2) interleaved pairs go back to (2, half) rotate-half order.
pub fn unpermute_qk(w: &Tensor, n_head: usize) -> Result<Tensor> {
    let dims = w.dims().to_vec();
    let out = dims[0];
    if n_head == 0 || out % (2 * n_head) != 0 {
        return Err(Error::Usage(format!(
            "cannot unpermute {out} rows over {n_head} heads"
        )));
    }
    let half = out / n_head / 2;
    let rest: usize = dims[1..].iter().product();
    Ok(w.reshape((n_head, half, 2, rest))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)?)
}

/// Inverse of [`unpermute_qk`] (used by tests and by adapters on GGUF bases).
pub fn permute_qk(w: &Tensor, n_head: usize) -> Result<Tensor> {
    let dims = w.dims().to_vec();
    let out = dims[0];
    if n_head == 0 || out % (2 * n_head) != 0 {
        return Err(Error::Usage(format!(
            "cannot permute {out} rows over {n_head} heads"
        )));
    }
    let half = out / n_head / 2;
    let rest: usize = dims[1..].iter().product();
    Ok(w.reshape((n_head, 2, half, rest))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)?)
}

/// The tensor as transformers holds it, given how it is stored.
pub fn to_hf_values(
    name: &str,
    t: Tensor,
    layout: &WeightLayout,
    arch: Arch,
    n_heads: usize,
    n_kv_heads: usize,
) -> Result<(Tensor, bool, bool)> {
    let mut permuted = false;
    let mut unbaked = false;
    let mut t = t;
    if layout.rope_interleaved {
        if name.ends_with("self_attn.q_proj.weight") || name.ends_with("self_attn.q_proj.bias") {
            t = unpermute_qk(&t, n_heads)?;
            permuted = true;
        } else if name.ends_with("self_attn.k_proj.weight")
            || name.ends_with("self_attn.k_proj.bias")
        {
            t = unpermute_qk(&t, n_kv_heads)?;
            permuted = true;
        }
    }
    if layout.norm_plus_one_baked && arch == Arch::Gemma3 && name.ends_with("norm.weight") {
        t = (t - 1.0)?;
        unbaked = true;
    }
    Ok((t, permuted, unbaked))
}

/// Writes a transformers model directory: model.safetensors (tensors in
/// transformers' layout, sorted by name), config.json and the tokenizer.
/// Returns the safetensors path.
pub fn write_hf_dir(
    out_dir: &Path,
    mut tensors: Vec<(String, Tensor)>,
    cfg: &crate::model::config::ModelConfig,
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
    crate::activations::save_safetensors(tensors, meta, &st_path)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn permute_and_unpermute_are_inverse_and_match_llama_cpp() {
        // 2 heads of dim 4, 3 input columns; rows numbered so we can see moves.
        let w = Tensor::arange(0f32, 24.0, &Device::Cpu)
            .unwrap()
            .reshape((8, 3))
            .unwrap();
        let p = permute_qk(&w, 2).unwrap();
        // llama.cpp: head rows [0,1,2,3] -> [0,2,1,3] (first half interleaved with second).
        let first_col: Vec<f32> = p
            .narrow(1, 0, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(first_col, vec![0., 6., 3., 9., 12., 18., 15., 21.]);
        let back = unpermute_qk(&p, 2).unwrap();
        let diff = (back - &w)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff, 0.0);
        assert!(unpermute_qk(&w, 3).is_err());
    }
}
