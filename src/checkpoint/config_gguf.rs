//! The config from GGUF metadata: llama.cpp's `<arch>.*` keys mapped onto
//! the fields transformers' config.json would give.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;

use super::config::{bounded, Activation, Arch, AttnKind, ModelConfig, RopeScaling, SUPPORTED};
use crate::error::{Error, Result};
use crate::tokenizer::gguf_f64;

impl ModelConfig {
    pub fn from_gguf(md: &HashMap<String, Value>, path: &Path) -> Result<Self> {
        let arch_name = gguf_str(md, path, "general.architecture")?;
        let arch = match arch_name.as_str() {
            "llama" | "mistral" | "qwen2" => Arch::Llama,
            "gemma3" => Arch::Gemma3,
            other => {
                return Err(Error::UnsupportedArch {
                    path: path.into(),
                    arch: other.into(),
                    supported: SUPPORTED.into(),
                })
            }
        };
        let k = |s: &str| format!("{arch_name}.{s}");
        let u = |s: &str| {
            gguf_usize(md, path, &k(s)).and_then(|v| bounded(path, &k(s), canonical(s), v))
        };
        let uo = |s: &str| -> Result<Option<usize>> {
            match md.get(&k(s)) {
                None => Ok(None),
                Some(_) => u(s).map(Some),
            }
        };
        let fo = |s: &str| -> Result<Option<f64>> {
            match md.get(&k(s)) {
                None => Ok(None),
                Some(v) => gguf_f64(v)
                    .map(Some)
                    .ok_or_else(|| Error::field(path, k(s), "expected a number")),
            }
        };

        let hidden_size = u("embedding_length")?;
        let num_layers = u("block_count")?;
        let num_heads = u("attention.head_count")?;
        let num_kv_heads = uo("attention.head_count_kv")?.unwrap_or(num_heads);
        let head_dim = Self::head_dim_or_derived(
            uo("attention.key_length")?,
            hidden_size,
            num_heads,
            path,
            k("attention.head_count"),
        )?;
        let vocab_size = match uo("vocab_size")? {
            Some(v) => v,
            None => match md.get("tokenizer.ggml.tokens") {
                Some(Value::Array(a)) => {
                    bounded(path, "tokenizer.ggml.tokens", "vocab_size", a.len() as u64)?
                }
                _ => {
                    return Err(Error::field(
                        path,
                        "tokenizer.ggml.tokens",
                        "missing: cannot tell the vocabulary size",
                    ))
                }
            },
        };
        let rms_norm_eps = fo("attention.layer_norm_rms_epsilon")?
            .ok_or_else(|| Error::field(path, k("attention.layer_norm_rms_epsilon"), "missing"))?;
        let rope_theta = fo("rope.freq_base")?.unwrap_or(arch.default_rope_theta());
        let rope_scaling = match md.get(&k("rope.scaling.type")) {
            None => RopeScaling::None,
            Some(v) => match v.to_string().map(|s| s.as_str()) {
                Ok("none") => RopeScaling::None,
                Ok("linear") => RopeScaling::Linear {
                    factor: fo("rope.scaling.factor")?.unwrap_or(1.0),
                },
                Ok(other) => {
                    return Err(Error::field(
                        path,
                        k("rope.scaling.type"),
                        format!("rope scaling `{other}` is not supported (none, linear)"),
                    ))
                }
                Err(_) => {
                    return Err(Error::field(
                        path,
                        k("rope.scaling.type"),
                        "expected a string",
                    ))
                }
            },
        };
        let sliding_window = uo("attention.sliding_window")?;
        let (layer_types, rope_local_theta, activation, embed_scale, attn_scale) = match arch {
            Arch::Gemma3 => (
                // llama.cpp and transformers both hard-code Gemma 3's pattern of 6.
                Self::gemma3_layer_types(num_layers, 6),
                Some(10_000.0),
                Activation::GeluTanh,
                Some((hidden_size as f64).sqrt()),
                1.0 / (head_dim as f64).sqrt(),
            ),
            Arch::Llama => {
                let kind = if sliding_window.is_some() {
                    AttnKind::Sliding
                } else {
                    AttnKind::Full
                };
                (
                    vec![kind; num_layers],
                    None,
                    Activation::Silu,
                    None,
                    1.0 / (head_dim as f64).sqrt(),
                )
            }
        };
        let cfg = ModelConfig {
            arch,
            model_type: arch_name.clone(),
            vocab_size,
            hidden_size,
            intermediate_size: u("feed_forward_length")?,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps,
            rope_theta,
            rope_local_theta,
            rope_scaling,
            attention_bias: arch_name == "qwen2",
            sliding_window,
            layer_types,
            attn_scale,
            activation,
            embed_scale,
            tie_word_embeddings: true,
            max_position_embeddings: uo("context_length")?.unwrap_or(4096),
            bos_token_id: md
                .get("tokenizer.ggml.bos_token_id")
                .and_then(|v| v.to_u32().ok()),
            eos_token_id: md
                .get("tokenizer.ggml.eos_token_id")
                .and_then(|v| v.to_u32().ok()),
        };
        cfg.validate(path)?;
        Ok(cfg)
    }
}

/// The config.json field a `<arch>.` GGUF key gives, for [`SIZE_LIMITS`](super::config::SIZE_LIMITS).
fn canonical(suffix: &str) -> &str {
    match suffix {
        "embedding_length" => "hidden_size",
        "block_count" => "num_hidden_layers",
        "attention.head_count" => "num_attention_heads",
        "attention.head_count_kv" => "num_key_value_heads",
        "attention.key_length" => "head_dim",
        "feed_forward_length" => "intermediate_size",
        "context_length" => "max_position_embeddings",
        "attention.sliding_window" => "sliding_window",
        other => other,
    }
}

fn gguf_usize(md: &HashMap<String, Value>, path: &Path, key: &str) -> Result<u64> {
    let v = md
        .get(key)
        .ok_or_else(|| Error::field(path, key, "missing from the GGUF metadata"))?;
    match gguf_f64(v) {
        // 2^53: every integer below it is exact in an f64.
        Some(x) if x >= 0.0 && x.fract() == 0.0 && x < 9.007_199_254_740_992e15 => Ok(x as u64),
        _ => Err(Error::field(path, key, "expected a non-negative integer")),
    }
}

fn gguf_str(md: &HashMap<String, Value>, path: &Path, key: &str) -> Result<String> {
    match md.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(Error::field(path, key, "expected a string")),
        None => Err(Error::field(path, key, "missing from the GGUF metadata")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hf(layers: serde_json::Value, arch: &str) -> Result<ModelConfig> {
        let j = json!({"model_type": arch, "hidden_size": 64, "num_hidden_layers": layers,
            "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 16,
            "intermediate_size": 128, "vocab_size": 100, "rms_norm_eps": 1e-6});
        ModelConfig::from_hf_json(&j, Path::new("config.json"))
    }

    /// 1e15 layers: Gemma 3's layer-type vector aborted the process
    /// ("memory allocation of 1000000000000000 bytes failed") before
    /// validation; Llama's required-tensor list ran out of memory.
    #[test]
    fn sizes_past_the_limits_are_refused_before_allocation() {
        for arch in ["gemma3_text", "llama"] {
            let e = hf(json!(1_000_000_000_000_000u64), arch)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("config.json") && e.contains("num_hidden_layers") && e.contains("1024"),
                "{e}"
            );
            assert_eq!(hf(json!(30), arch).unwrap().num_layers, 30);
        }
        let md: HashMap<String, Value> = [
            ("general.architecture", Value::String("gemma3".into())),
            ("gemma3.embedding_length", Value::U32(64)),
            ("gemma3.block_count", Value::U64(1 << 50)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let e = ModelConfig::from_gguf(&md, Path::new("m.gguf"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("gemma3.block_count") && e.contains("num_hidden_layers"),
            "{e}"
        );
    }

    #[test]
    fn every_limit_names_a_field_the_reader_bounds() {
        for (field, limit) in super::super::config::SIZE_LIMITS {
            assert!(*limit < u64::from(u32::MAX), "{field}");
            let e = bounded(Path::new("c"), field, field, limit + 1).unwrap_err();
            assert!(e.to_string().contains(field));
            assert_eq!(
                bounded(Path::new("c"), field, field, *limit).unwrap() as u64,
                *limit
            );
        }
    }
}
