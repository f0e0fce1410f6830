//! Model references as people type them: `hf:org/name[@rev]`, a short
//! name the project fetches, a `.gguf` file or a model directory, and the
//! candidate forms built on them (what-if quantization, a PEFT adapter).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{adapter, whatif};
use crate::error::{Error, Result};

/// Models the project fetches with `scripts/fetch-models.sh`, by short name.
pub const KNOWN_MODELS: &[(&str, &str)] = &[
    ("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    ("gemma3", "gemma-3-270m-q4_k_m.gguf"),
];

/// Root of probegate's cache: `$PROBEGATE_CACHE`, else the user's cache dir.
pub fn cache_root() -> PathBuf {
    if let Some(p) = std::env::var_os("PROBEGATE_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("probegate")
}

/// Path of a model fetched by the project's script.
pub fn known_model_path(alias: &str) -> Option<PathBuf> {
    KNOWN_MODELS
        .iter()
        .find(|(a, _)| *a == alias)
        .map(|(_, f)| cache_root().join("models").join(f))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelRef {
    Gguf { path: PathBuf },
    HfDir { path: PathBuf },
    Hub { repo: String, revision: String },
}

impl ModelRef {
    /// Parses `hf:org/name[@rev]`, a short name (`smollm2`, `gemma3`), a
    /// `.gguf` file or a Hugging Face model directory.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |msg: String| Error::ModelRef {
            reference: s.to_string(),
            msg,
        };
        if let Some(rest) = s.strip_prefix("hf:") {
            let (repo, revision) = match rest.split_once('@') {
                Some((r, rev)) => (r, rev),
                None => (rest, "main"),
            };
            let ok = |p: &str| {
                !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            };
            let parts: Vec<&str> = repo.split('/').collect();
            if parts.len() != 2 || !parts.iter().all(|p| ok(p)) || revision.is_empty() {
                return Err(bad("expected hf:org/name or hf:org/name@revision".into()));
            }
            return Ok(ModelRef::Hub {
                repo: repo.to_string(),
                revision: revision.to_string(),
            });
        }
        if let Some(p) = known_model_path(s) {
            if !Path::new(s).exists() {
                if !p.is_file() {
                    return Err(bad(format!(
                        "{} is not fetched yet; run scripts/fetch-models.sh {s}",
                        p.display()
                    )));
                }
                return Ok(ModelRef::Gguf { path: p });
            }
        }
        let path = PathBuf::from(s);
        let meta = std::fs::metadata(&path).map_err(|e| {
            let known: Vec<&str> = KNOWN_MODELS.iter().map(|(a, _)| *a).collect();
            bad(format!(
                "{e}; expected a .gguf file, a Hugging Face model directory, hf:org/name, or one of {}",
                known.join(", ")
            ))
        })?;
        if meta.is_dir() {
            Ok(ModelRef::HfDir { path })
        } else {
            Ok(ModelRef::Gguf { path })
        }
    }
}

impl std::fmt::Display for ModelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelRef::Gguf { path } | ModelRef::HfDir { path } => write!(f, "{}", path.display()),
            ModelRef::Hub { repo, revision } => write!(f, "hf:{repo}@{revision}"),
        }
    }
}

/// A model reference with candidate forms: `q4_0(BASE)`, `nf4(BASE)+ADAPTER`, `BASE+ADAPTER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    pub base: String,
    pub whatif: Option<whatif::WhatIf>,
    pub adapter: Option<PathBuf>,
}

impl ModelSpec {
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        // An adapter is `+DIR` where DIR holds adapter_config.json; paths may contain '+'.
        let (base_expr, adapter) = match s.rfind('+') {
            Some(i) if i > 0 && !s[i + 1..].contains(')') => {
                let dir = PathBuf::from(&s[i + 1..]);
                if dir.join(adapter::CONFIG_FILE).is_file() {
                    (&s[..i], Some(dir))
                } else if dir.is_dir() || !Path::new(s).exists() {
                    return Err(Error::ModelRef {
                        reference: s.to_string(),
                        msg: format!(
                            "{} is not a PEFT adapter directory (no {})",
                            dir.display(),
                            adapter::CONFIG_FILE
                        ),
                    });
                } else {
                    (s, None)
                }
            }
            _ => (s, None),
        };
        let (base, whatif) = match base_expr.find('(') {
            Some(open) if base_expr.ends_with(')') && !Path::new(base_expr).exists() => {
                let name = &base_expr[..open];
                let w = whatif::WhatIf::parse(name).ok_or_else(|| Error::ModelRef {
                    reference: s.to_string(),
                    msg: format!("unknown what-if quantization `{name}` (nf4, int8, q8_0, q4_0)"),
                })?;
                (
                    base_expr[open + 1..base_expr.len() - 1].to_string(),
                    Some(w),
                )
            }
            _ => (base_expr.to_string(), None),
        };
        Ok(ModelSpec {
            base,
            whatif,
            adapter,
        })
    }
}
