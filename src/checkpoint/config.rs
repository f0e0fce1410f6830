//! Architecture hyper-parameters, read from GGUF metadata or a Hugging Face
//! `config.json`, normalised into one plain struct the forward pass uses.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::{Error, Result};

/// The decoder families probegate runs. Mistral and Qwen2 share Llama's block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Llama,
    Gemma3,
}

impl Arch {
    /// The rope base when a checkpoint names none (transformers' defaults).
    pub(super) fn default_rope_theta(self) -> f64 {
        match self {
            Arch::Gemma3 => 1_000_000.0,
            Arch::Llama => 10_000.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Silu,
    GeluTanh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttnKind {
    Full,
    Sliding,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RopeScaling {
    None,
    Linear {
        factor: f64,
    },
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub arch: Arch,
    /// The name the checkpoint itself uses (`llama`, `qwen2`, `mistral`, `gemma3`...).
    pub model_type: String,
    pub vocab_size: usize,
    /// d_model: the width of the residual stream monitors read.
    pub hidden_size: usize,
    /// The MLP's inner width.
    pub intermediate_size: usize,
    /// Decoder blocks.
    pub num_layers: usize,
    /// Query heads, and the key/value heads they share (fewer under GQA).
    pub num_heads: usize,
    pub num_kv_heads: usize,
    /// Given, or hidden_size / num_heads as transformers derives it.
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    /// The rope base of global-attention layers.
    pub rope_theta: f64,
    /// Gemma 3's sliding-window layers use their own rope base.
    pub rope_local_theta: Option<f64>,
    pub rope_scaling: RopeScaling,
    /// q/k/v projections carry biases (Qwen2).
    pub attention_bias: bool,
    /// Tokens a sliding-window layer attends to.
    pub sliding_window: Option<usize>,
    /// Per block: full or sliding-window attention.
    pub layer_types: Vec<AttnKind>,
    /// Multiplier on q·k before softmax.
    pub attn_scale: f64,
    pub activation: Activation,
    /// Gemma multiplies embeddings by sqrt(hidden_size).
    pub embed_scale: Option<f64>,
    /// The output head reuses the embedding matrix.
    pub tie_word_embeddings: bool,
    pub max_position_embeddings: usize,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

pub const SUPPORTED: &str = "llama, mistral, qwen2, gemma3 (gemma3_text)";

/// The largest value accepted for each size a config gives (config.json's
/// names; GGUF keys map onto them), checked as the value is read, before
/// anything is sized from it. Generous on purpose: the largest published
/// models (Llama 3.1 405B: 126 layers, width 16,384, MLP 53,248, 128 heads;
/// Gemma 3: a 262,144-token vocabulary) sit far inside; a hostile 1e15
/// fails here with the field's name instead of aborting an allocation.
pub const SIZE_LIMITS: &[(&str, u64)] = &[
    ("num_hidden_layers", 1_024),
    ("hidden_size", 131_072),
    ("intermediate_size", 1_048_576),
    ("num_attention_heads", 1_024),
    ("num_key_value_heads", 1_024),
    ("head_dim", 4_096),
    ("vocab_size", 16_777_216),
    ("max_position_embeddings", 1 << 30),
    ("sliding_window", 1 << 30),
    ("sliding_window_pattern", 1_024),
];

/// `v` as a size for `field` (named as the file spells it), within the
/// limit [`SIZE_LIMITS`] gives the config.json field `canonical`.
pub(super) fn bounded(path: &Path, field: &str, canonical: &str, v: u64) -> Result<usize> {
    let limit = SIZE_LIMITS
        .iter()
        .find(|(f, _)| *f == canonical)
        .map_or(u64::from(u32::MAX), |&(_, l)| l);
    if v > limit {
        return Err(Error::field(
            path,
            field,
            format!("{v} exceeds probegate's limit of {limit} for {canonical}"),
        ));
    }
    // Every limit is below u32::MAX, so the value fits a usize.
    usize::try_from(v).map_err(|_| Error::field(path, field, format!("{v} is too large")))
}

impl ModelConfig {
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |field: &str, msg: String| Err(Error::field(path, field, msg));
        if self.num_layers == 0 {
            return bad("num_hidden_layers", "must be at least 1".into());
        }
        if self.num_heads == 0 || self.num_kv_heads == 0 || self.num_heads % self.num_kv_heads != 0
        {
            return bad(
                "num_key_value_heads",
                format!(
                    "{} query heads cannot share {} key/value heads",
                    self.num_heads, self.num_kv_heads
                ),
            );
        }
        if self.head_dim == 0 || self.head_dim % 2 != 0 {
            return bad(
                "head_dim",
                format!("{} must be even and positive", self.head_dim),
            );
        }
        if self.hidden_size == 0 || self.intermediate_size == 0 || self.vocab_size == 0 {
            return bad("hidden_size", "sizes must be positive".into());
        }
        if self.layer_types.len() != self.num_layers {
            return bad(
                "layer_types",
                format!(
                    "{} entries for {} layers",
                    self.layer_types.len(),
                    self.num_layers
                ),
            );
        }
        if !(self.rms_norm_eps > 0.0 && self.rms_norm_eps.is_finite()) {
            return bad(
                "rms_norm_eps",
                format!("{} is not a positive number", self.rms_norm_eps),
            );
        }
        if !(self.rope_theta > 0.0 && self.rope_theta.is_finite()) {
            return bad(
                "rope_theta",
                format!("{} is not a positive number", self.rope_theta),
            );
        }
        Ok(())
    }

    /// Gemma 3's pattern: every sixth layer attends globally, the rest use a window.
    pub(super) fn gemma3_layer_types(n: usize, pattern: usize) -> Vec<AttnKind> {
        (0..n)
            .map(|i| {
                if pattern > 0 && (i + 1) % pattern == 0 {
                    AttnKind::Full
                } else {
                    AttnKind::Sliding
                }
            })
            .collect()
    }

    /// `head_dim` as given, else hidden_size / num_heads as transformers derives it;
    /// `heads_field` is blamed when there are no heads to divide by.
    pub(super) fn head_dim_or_derived(
        given: Option<usize>,
        hidden_size: usize,
        num_heads: usize,
        path: &Path,
        heads_field: impl Into<String>,
    ) -> Result<usize> {
        match given {
            Some(d) => Ok(d),
            None if num_heads > 0 => Ok(hidden_size / num_heads),
            None => Err(Error::field(path, heads_field, "must be positive")),
        }
    }

    pub fn rope_theta_for(&self, layer: usize) -> f64 {
        match (self.layer_types.get(layer), self.rope_local_theta) {
            (Some(AttnKind::Sliding), Some(local)) => local,
            _ => self.rope_theta,
        }
    }

    /// Rope scaling applies to global layers only in Gemma 3; the local base is unscaled.
    pub fn rope_scaling_for(&self, layer: usize) -> &RopeScaling {
        match (self.arch, self.layer_types.get(layer)) {
            (Arch::Gemma3, Some(AttnKind::Sliding)) => &RopeScaling::None,
            _ => &self.rope_scaling,
        }
    }

    pub fn window_for(&self, layer: usize) -> Option<usize> {
        match self.layer_types.get(layer) {
            Some(AttnKind::Sliding) => self.sliding_window,
            _ => None,
        }
    }

    // --------------------------------------------------------- config.json
    // (GGUF metadata: config_gguf.rs)

    pub fn from_hf_json(json: &Json, path: &Path) -> Result<Self> {
        // Multimodal Gemma 3 checkpoints nest the language model's config.
        let json = match json.get("text_config") {
            Some(tc) if tc.is_object() => tc,
            _ => json,
        };
        let model_type = json
            .get("model_type")
            .and_then(Json::as_str)
            .ok_or_else(|| Error::field(path, "model_type", "missing or not a string"))?
            .to_string();
        let arch = match model_type.as_str() {
            "llama" | "mistral" | "qwen2" => Arch::Llama,
            "gemma3" | "gemma3_text" => Arch::Gemma3,
            other => {
                return Err(Error::UnsupportedArch {
                    path: path.into(),
                    arch: other.into(),
                    supported: SUPPORTED.into(),
                })
            }
        };
        let req = |f: &str| -> Result<usize> {
            let v = json
                .get(f)
                .and_then(Json::as_u64)
                .ok_or_else(|| Error::field(path, f, "missing or not a non-negative integer"))?;
            bounded(path, f, f, v)
        };
        let opt_u = |f: &str| -> Result<Option<usize>> {
            match json.get(f) {
                None | Some(Json::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .ok_or_else(|| Error::field(path, f, "not a non-negative integer"))
                    .and_then(|v| bounded(path, f, f, v))
                    .map(Some),
            }
        };
        let opt_f = |f: &str| -> Result<Option<f64>> {
            match json.get(f) {
                None | Some(Json::Null) => Ok(None),
                Some(v) => v
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| Error::field(path, f, "not a number")),
            }
        };

        let hidden_size = req("hidden_size")?;
        let num_layers = req("num_hidden_layers")?;
        let num_heads = req("num_attention_heads")?;
        let num_kv_heads = opt_u("num_key_value_heads")?.unwrap_or(num_heads);
        let head_dim = Self::head_dim_or_derived(
            opt_u("head_dim")?,
            hidden_size,
            num_heads,
            path,
            "num_attention_heads",
        )?;

        // transformers 5 moved rope settings into `rope_parameters`, keyed by
        // layer type for Gemma 3; older configs use rope_theta/rope_scaling.
        let rope_params = json.get("rope_parameters");
        let (global_rp, local_rp) = match rope_params {
            Some(rp) if rp.get("full_attention").is_some() => {
                (rp.get("full_attention"), rp.get("sliding_attention"))
            }
            Some(rp) => (Some(rp), None),
            None => (None, None),
        };
        let theta_of =
            |rp: Option<&Json>| rp.and_then(|r| r.get("rope_theta")).and_then(Json::as_f64);
        let rope_theta = theta_of(global_rp)
            .or(opt_f("rope_theta")?)
            .unwrap_or(arch.default_rope_theta());
        let rope_local_theta = match arch {
            Arch::Gemma3 => Some(
                theta_of(local_rp)
                    .or(opt_f("rope_local_base_freq")?)
                    .unwrap_or(10_000.0),
            ),
            Arch::Llama => None,
        };
        let scaling_json = match global_rp {
            Some(rp) if rp.get("rope_type").is_some() => Some(rp),
            _ => json.get("rope_scaling").filter(|v| !v.is_null()),
        };
        let rope_scaling = parse_rope_scaling(scaling_json, path)?;

        let sliding_window = opt_u("sliding_window")?;
        let layer_types = match json.get("layer_types") {
            Some(Json::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v.as_str() {
                    Some("full_attention") => Ok(AttnKind::Full),
                    Some("sliding_attention") => Ok(AttnKind::Sliding),
                    _ => Err(Error::field(
                        path,
                        format!("layer_types[{i}]"),
                        "expected \"full_attention\" or \"sliding_attention\"",
                    )),
                })
                .collect::<Result<Vec<_>>>()?,
            Some(Json::Null) | None => match arch {
                Arch::Gemma3 => Self::gemma3_layer_types(
                    num_layers,
                    opt_u("sliding_window_pattern")?.unwrap_or(6),
                ),
                Arch::Llama => {
                    let use_sw = json
                        .get("use_sliding_window")
                        .and_then(Json::as_bool)
                        .unwrap_or(model_type == "mistral");
                    let kind = if use_sw && sliding_window.is_some() {
                        AttnKind::Sliding
                    } else {
                        AttnKind::Full
                    };
                    vec![kind; num_layers]
                }
            },
            Some(_) => return Err(Error::field(path, "layer_types", "expected an array")),
        };

        let act_name = json
            .get("hidden_activation")
            .or_else(|| json.get("hidden_act"))
            .and_then(Json::as_str)
            .unwrap_or(if arch == Arch::Gemma3 {
                "gelu_pytorch_tanh"
            } else {
                "silu"
            });
        let activation = match act_name {
            "silu" | "swish" => Activation::Silu,
            "gelu_pytorch_tanh" | "gelu_tanh" | "gelu_new" => Activation::GeluTanh,
            other => {
                return Err(Error::field(
                    path,
                    "hidden_act",
                    format!("activation `{other}` is not supported (silu, gelu_pytorch_tanh)"),
                ))
            }
        };
        let attn_scale = match arch {
            Arch::Gemma3 => {
                1.0 / opt_f("query_pre_attn_scalar")?
                    .unwrap_or(head_dim as f64)
                    .sqrt()
            }
            Arch::Llama => 1.0 / (head_dim as f64).sqrt(),
        };
        let token_id = |f: &str| match json.get(f) {
            Some(Json::Number(n)) => n.as_u64().map(|v| v as u32),
            Some(Json::Array(a)) => a.first().and_then(Json::as_u64).map(|v| v as u32),
            _ => None,
        };
        let cfg = ModelConfig {
            arch,
            model_type: model_type.clone(),
            vocab_size: req("vocab_size")?,
            hidden_size,
            intermediate_size: req("intermediate_size")?,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: opt_f("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            rope_local_theta,
            rope_scaling,
            attention_bias: json
                .get("attention_bias")
                .and_then(Json::as_bool)
                .unwrap_or(model_type == "qwen2"),
            sliding_window,
            layer_types,
            attn_scale,
            activation,
            embed_scale: (arch == Arch::Gemma3).then(|| (hidden_size as f64).sqrt()),
            tie_word_embeddings: json
                .get("tie_word_embeddings")
                .and_then(Json::as_bool)
                .unwrap_or(true),
            max_position_embeddings: opt_u("max_position_embeddings")?.unwrap_or(4096),
            bos_token_id: token_id("bos_token_id"),
            eos_token_id: token_id("eos_token_id"),
        };
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// The `config.json` transformers expects for this model (used by `convert`).
    pub fn to_hf_json(&self) -> Json {
        let mut j = serde_json::json!({
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "torch_dtype": "float32",
        });
        let obj = match j.as_object_mut() {
            Some(o) => o,
            None => return j,
        };
        if let Some(b) = self.bos_token_id {
            obj.insert("bos_token_id".into(), b.into());
        }
        if let Some(e) = self.eos_token_id {
            obj.insert("eos_token_id".into(), e.into());
        }
        match &self.rope_scaling {
            RopeScaling::None => {}
            RopeScaling::Linear { factor } => {
                obj.insert(
                    "rope_scaling".into(),
                    serde_json::json!({"rope_type": "linear", "factor": factor}),
                );
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                obj.insert(
                    "rope_scaling".into(),
                    serde_json::json!({"rope_type": "llama3", "factor": factor,
                        "low_freq_factor": low_freq_factor, "high_freq_factor": high_freq_factor,
                        "original_max_position_embeddings": original_max_position_embeddings}),
                );
            }
        }
        let layer_types: Vec<&str> = self
            .layer_types
            .iter()
            .map(|k| match k {
                AttnKind::Full => "full_attention",
                AttnKind::Sliding => "sliding_attention",
            })
            .collect();
        match self.arch {
            Arch::Llama => {
                let mt = if self.model_type == "qwen2" || self.model_type == "mistral" {
                    self.model_type.as_str()
                } else {
                    "llama"
                };
                obj.insert("model_type".into(), mt.into());
                let cls = match mt {
                    "qwen2" => "Qwen2ForCausalLM",
                    "mistral" => "MistralForCausalLM",
                    _ => "LlamaForCausalLM",
                };
                obj.insert("architectures".into(), serde_json::json!([cls]));
                obj.insert("hidden_act".into(), "silu".into());
                obj.insert("attention_bias".into(), self.attention_bias.into());
                if let Some(w) = self.sliding_window {
                    obj.insert("sliding_window".into(), w.into());
                    obj.insert("use_sliding_window".into(), true.into());
                }
            }
            Arch::Gemma3 => {
                obj.insert("model_type".into(), "gemma3_text".into());
                obj.insert(
                    "architectures".into(),
                    serde_json::json!(["Gemma3ForCausalLM"]),
                );
                obj.insert("hidden_activation".into(), "gelu_pytorch_tanh".into());
                obj.insert(
                    "query_pre_attn_scalar".into(),
                    (1.0 / (self.attn_scale * self.attn_scale)).round().into(),
                );
                obj.insert(
                    "rope_local_base_freq".into(),
                    self.rope_local_theta.unwrap_or(10_000.0).into(),
                );
                obj.insert(
                    "sliding_window".into(),
                    self.sliding_window.unwrap_or(512).into(),
                );
                obj.insert("layer_types".into(), serde_json::json!(layer_types));
                obj.insert("attention_bias".into(), false.into());
            }
        }
        j
    }
}

fn parse_rope_scaling(v: Option<&Json>, path: &Path) -> Result<RopeScaling> {
    let Some(v) = v else {
        return Ok(RopeScaling::None);
    };
    let kind = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(Json::as_str)
        .unwrap_or("default");
    let num = |f: &str, d: f64| v.get(f).and_then(Json::as_f64).unwrap_or(d);
    match kind {
        "default" => Ok(RopeScaling::None),
        "linear" => Ok(RopeScaling::Linear {
            factor: num("factor", 1.0),
        }),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: num("factor", 8.0),
            low_freq_factor: num("low_freq_factor", 1.0),
            high_freq_factor: num("high_freq_factor", 4.0),
            original_max_position_embeddings: num("original_max_position_embeddings", 8192.0),
        }),
        other => Err(Error::field(
            path,
            "rope_scaling.rope_type",
            format!("`{other}` is not supported (default, linear, llama3)"),
        )),
    }
}
