//! Checkpoints written in bitsandbytes' safetensors layout (NF4 and
//! LLM.int8), as transformers saves a quantized model: the zoo's INT8 and
//! NF4 conditions. The encoders sit with the reader they mirror.

use std::collections::HashMap;
use std::path::Path;

use crate::checkpoint::bnb::{encode_int8, encode_nf4, RawEntry};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};

/// Writes `ck` as a transformers directory in bitsandbytes' layout: the
/// block projections quantized (`nf4`, double-quantized as QLoRA loads it, or
/// `int8`), everything else f32, with the quantization_config transformers
/// writes beside it.
pub fn write_dir(ck: &Checkpoint, scheme: &str, out: &Path) -> Result<()> {
    let cfg = &ck.config;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut entries: Vec<RawEntry> = Vec::new();
    for s in ck.tensors() {
        let t = ck.get_hf(&s.name)?;
        let module = s.name.strip_suffix(".weight");
        match (scheme, module) {
            ("nf4", Some(_)) if crate::checkpoint::whatif::WhatIf::applies_to(&s.name) => {
                entries.extend(encode_nf4(&s.name, &t, true)?)
            }
            ("int8", Some(m)) if crate::checkpoint::whatif::WhatIf::applies_to(&s.name) => {
                entries.extend(encode_int8(m, &t)?)
            }
            ("nf4" | "int8", _) => {
                let dims = t.dims().to_vec();
                let bytes = t
                    .flatten_all()?
                    .to_vec1::<f32>()?
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect();
                entries.push((s.name.clone(), safetensors::Dtype::F32, dims, bytes));
            }
            _ => {
                return Err(Error::Usage(format!(
                    "bitsandbytes scheme `{scheme}` is not one of nf4, int8"
                )))
            }
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let views: Vec<(String, safetensors::tensor::TensorView)> = entries
        .iter()
        .map(|(n, d, s, b)| {
            safetensors::tensor::TensorView::new(*d, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::tensor(out, n, e.to_string()))
        })
        .collect::<Result<_>>()?;
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    meta.insert("probegate_quantized_from".to_string(), ck.spec.clone());
    let st_path = out.join("model.safetensors");
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| Error::Safetensors {
        path: st_path.clone(),
        msg: e.to_string(),
    })?;
    crate::util::write_canonical_safetensors(bytes, &st_path)?;
    let mut hf_cfg = cfg.clone();
    hf_cfg.tie_word_embeddings = !ck.has("lm_head.weight");
    let mut config_json = hf_cfg.to_hf_json();
    let qc = if scheme == "nf4" {
        serde_json::json!({
            "quant_method": "bitsandbytes",
            "load_in_4bit": true,
            "load_in_8bit": false,
            "bnb_4bit_quant_type": "nf4",
            "bnb_4bit_use_double_quant": true,
            "bnb_4bit_compute_dtype": "float32",
            "bnb_4bit_quant_storage": "uint8",
        })
    } else {
        serde_json::json!({
            "quant_method": "bitsandbytes",
            "load_in_4bit": false,
            "load_in_8bit": true,
            "llm_int8_threshold": 0.0,
            "llm_int8_has_fp16_weight": false,
        })
    };
    if let Some(o) = config_json.as_object_mut() {
        o.insert("quantization_config".into(), qc);
    }
    super::write_config_and_tokenizer(out, &config_json, &ck.tokenizer)
}
