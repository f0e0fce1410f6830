//! PEFT LoRA adapters (`adapter_config.json` + `adapter_model.safetensors`),
//! applied to a base at run time, unmerged: y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ with
//! s = lora_alpha / r (or lora_alpha / √r with use_rslora), per-module rank
//! and alpha from rank_pattern / alpha_pattern.
//!
//! Anything the adapter carries that this loader does not apply (DoRA
//! magnitudes, embedding adapters, trained biases, modules_to_save) is
//! refused with a message, never silently ignored.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use serde_json::Value as Json;

use crate::error::{Error, Result};

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// One adapted module: A [r, in], B [out, r], scale.
#[derive(Debug, Clone)]
pub struct LoraPair {
    pub a: Tensor,
    pub b: Tensor,
    pub scale: f64,
}

#[derive(Debug, Clone)]
pub struct LoraAdapter {
    pub dir: PathBuf,
    pub r: usize,
    pub lora_alpha: f64,
    pub use_rslora: bool,
    pub base_model_name_or_path: Option<String>,
    /// HF module name (`model.layers.0.self_attn.q_proj`) -> pair
    pub modules: BTreeMap<String, LoraPair>,
    pub weight_file: PathBuf,
}

/// PEFT matches pattern keys against the end of a module's name.
fn pattern_lookup<'a>(map: &'a serde_json::Map<String, Json>, module: &str) -> Option<&'a Json> {
    map.iter()
        .filter(|(k, _)| module == k.as_str() || module.ends_with(&format!(".{k}")))
        .max_by_key(|(k, _)| k.len())
        .map(|(_, v)| v)
}

impl LoraAdapter {
    pub fn load(dir: &Path) -> Result<Self> {
        let cp = dir.join(CONFIG_FILE);
        let cfg: Json = crate::util::read_json(&cp)?;
        let bad = |field: &str, msg: String| Error::field(&cp, field, msg);
        let peft_type = cfg
            .get("peft_type")
            .and_then(Json::as_str)
            .unwrap_or("LORA");
        if peft_type != "LORA" {
            return Err(bad(
                "peft_type",
                format!("`{peft_type}` adapters are not supported (LORA only)"),
            ));
        }
        if cfg.get("use_dora").and_then(Json::as_bool).unwrap_or(false) {
            return Err(bad("use_dora", "DoRA adapters are not supported".into()));
        }
        if cfg
            .get("fan_in_fan_out")
            .and_then(Json::as_bool)
            .unwrap_or(false)
        {
            return Err(bad(
                "fan_in_fan_out",
                "fan_in_fan_out (Conv1D bases) is not supported".into(),
            ));
        }
        match cfg.get("bias").and_then(Json::as_str).unwrap_or("none") {
            "none" => {}
            other => {
                return Err(bad(
                    "bias",
                    format!("bias = \"{other}\" is not supported (none)"),
                ))
            }
        }
        match cfg.get("modules_to_save") {
            None | Some(Json::Null) => {}
            Some(Json::Array(a)) if a.is_empty() => {}
            Some(_) => {
                return Err(bad(
                    "modules_to_save",
                    "adapters that replace whole modules are not supported".into(),
                ))
            }
        }
        let r = cfg
            .get("r")
            .and_then(Json::as_u64)
            .filter(|r| *r > 0)
            .ok_or_else(|| bad("r", "missing or not a positive integer".into()))?
            as usize;
        let lora_alpha = cfg
            .get("lora_alpha")
            .and_then(Json::as_f64)
            .ok_or_else(|| bad("lora_alpha", "missing or not a number".into()))?;
        let use_rslora = cfg
            .get("use_rslora")
            .and_then(Json::as_bool)
            .unwrap_or(false);
        let empty = serde_json::Map::new();
        let rank_pattern = cfg
            .get("rank_pattern")
            .and_then(Json::as_object)
            .unwrap_or(&empty);
        let alpha_pattern = cfg
            .get("alpha_pattern")
            .and_then(Json::as_object)
            .unwrap_or(&empty);

        let wp = dir.join(WEIGHTS_FILE);
        if !wp.is_file() && dir.join("adapter_model.bin").is_file() {
            return Err(Error::io(
                &wp,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "only adapter_model.bin (a pickle) is present; probegate never unpickles: re-save with safe_serialization=True",
                ),
            ));
        }
        let tensors =
            candle_core::safetensors::load(&wp, &candle_core::Device::Cpu).map_err(|e| {
                Error::Safetensors {
                    path: wp.clone(),
                    msg: crate::error::candle_msg(&e),
                }
            })?;
        let mut halves: HashMap<String, (Option<Tensor>, Option<Tensor>)> = HashMap::new();
        for (name, t) in tensors {
            let stem = name.strip_prefix("base_model.model.").unwrap_or(&name);
            let (module, which) = if let Some(m) = stem.strip_suffix(".lora_A.weight") {
                (m, 'A')
            } else if let Some(m) = stem.strip_suffix(".lora_B.weight") {
                (m, 'B')
            } else if stem.contains("lora_embedding") {
                return Err(Error::tensor(
                    &wp,
                    &name,
                    "embedding adapters are not supported",
                ));
            } else if stem.contains("lora_magnitude") {
                return Err(Error::tensor(
                    &wp,
                    &name,
                    "DoRA magnitude vectors are not supported",
                ));
            } else {
                return Err(Error::tensor(
                    &wp,
                    &name,
                    "not a LoRA A/B weight; refusing to ignore it",
                ));
            };
            if !(module.starts_with("model.layers.") && module.ends_with("_proj")) {
                return Err(Error::tensor(
                    &wp,
                    &name,
                    "only adapters on decoder-block projections are supported",
                ));
            }
            let e = halves.entry(module.to_string()).or_default();
            let t = t.to_dtype(candle_core::DType::F32)?;
            if which == 'A' {
                e.0 = Some(t);
            } else {
                e.1 = Some(t);
            }
        }
        let mut modules = BTreeMap::new();
        for (module, (a, b)) in halves {
            let (a, b) = match (a, b) {
                (Some(a), Some(b)) => (a, b),
                _ => {
                    return Err(Error::tensor(
                        &wp,
                        &module,
                        "has only one of lora_A / lora_B",
                    ))
                }
            };
            let (ra, _) = a
                .dims2()
                .map_err(|_| Error::tensor(&wp, format!("{module}.lora_A.weight"), "not 2-D"))?;
            let (_, rb) = b
                .dims2()
                .map_err(|_| Error::tensor(&wp, format!("{module}.lora_B.weight"), "not 2-D"))?;
            let rank = match pattern_lookup(rank_pattern, &module) {
                Some(v) => v
                    .as_u64()
                    .ok_or_else(|| bad("rank_pattern", format!("{module}: not an integer")))?
                    as usize,
                None => r,
            };
            if ra != rank || rb != rank {
                return Err(Error::tensor(
                    &wp,
                    &module,
                    format!("rank {ra}/{rb} in the weights, {rank} in {CONFIG_FILE}"),
                ));
            }
            let alpha = match pattern_lookup(alpha_pattern, &module) {
                Some(v) => v
                    .as_f64()
                    .ok_or_else(|| bad("alpha_pattern", format!("{module}: not a number")))?,
                None => lora_alpha,
            };
            let scale = if use_rslora {
                alpha / (rank as f64).sqrt()
            } else {
                alpha / rank as f64
            };
            modules.insert(module, LoraPair { a, b, scale });
        }
        if modules.is_empty() {
            return Err(Error::tensor(&wp, "*", "the adapter has no LoRA weights"));
        }
        Ok(LoraAdapter {
            dir: dir.to_path_buf(),
            r,
            lora_alpha,
            use_rslora,
            base_model_name_or_path: cfg
                .get("base_model_name_or_path")
                .and_then(Json::as_str)
                .map(String::from),
            modules,
            weight_file: wp,
        })
    }

    /// ΔW = s·B·A for one module, [out, in].
    pub fn delta(&self, module: &str) -> Result<Option<Tensor>> {
        match self.modules.get(module) {
            Some(p) => Ok(Some((p.b.matmul(&p.a)? * p.scale)?)),
            None => Ok(None),
        }
    }
}
