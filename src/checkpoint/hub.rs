//! `hf:org/name[@revision]` references, resolved from the standard Hugging
//! Face cache layout (`models--org--name/{refs,snapshots,blobs}`).
//!
//! hf-hub does not read HF_HUB_CACHE or HF_HUB_OFFLINE itself, so the
//! environment is read here, with the precedence the Python hub client uses.

use std::path::PathBuf;

use hf_hub::{Cache, Repo, RepoType};

use crate::error::{Error, Result};

/// HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub.
pub fn hub_cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(h) = std::env::var_os("HF_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(h).join("hub");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache").join("huggingface").join("hub")
}

pub fn offline() -> bool {
    matches!(
        std::env::var("HF_HUB_OFFLINE").map(|v| v.to_ascii_lowercase()),
        Ok(v) if v == "1" || v == "true" || v == "yes" || v == "on"
    )
}

const CORE_FILES: &[&str] = &["config.json", "tokenizer.json"];

/// The snapshot directory holding the model's files at `revision`.
pub fn resolve(repo_id: &str, revision: &str) -> Result<PathBuf> {
    let reference = format!("hf:{repo_id}@{revision}");
    let cache = Cache::new(hub_cache_dir());
    let repo = Repo::with_revision(repo_id.to_string(), RepoType::Model, revision.to_string());

    // A commit hash names a snapshot directly; a branch or tag goes through refs/.
    let folder = hub_cache_dir().join(repo.folder_name());
    let direct = folder.join("snapshots").join(revision);
    if revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit()) && direct.is_dir() {
        return Ok(direct);
    }
    let cached = cache.repo(repo.clone());
    if let Some(cfg) = cached.get("config.json") {
        if CORE_FILES.iter().all(|f| cached.get(f).is_some()) {
            if let Some(dir) = cfg.parent() {
                return Ok(dir.to_path_buf());
            }
        }
    }
    if offline() {
        return Err(Error::ModelRef {
            reference,
            msg: format!(
                "not in the Hugging Face cache at {} and HF_HUB_OFFLINE is set",
                hub_cache_dir().display()
            ),
        });
    }
    download(repo, &reference)
}

fn download(repo: Repo, reference: &str) -> Result<PathBuf> {
    let fail = |msg: String| Error::ModelRef {
        reference: reference.to_string(),
        msg,
    };
    let api = hf_hub::api::sync::ApiBuilder::from_cache(Cache::new(hub_cache_dir()))
        .with_progress(false)
        .build()
        .map_err(|e| fail(format!("cannot reach the Hugging Face Hub: {e}")))?;
    let api_repo = api.repo(repo);
    let mut dir = None;
    for f in CORE_FILES {
        let p = api_repo.get(f).map_err(|e| {
            fail(format!(
                "downloading {f}: {e} (set HF_HUB_OFFLINE=1 to use only the cache)"
            ))
        })?;
        dir = p.parent().map(|d| d.to_path_buf());
    }
    let _ = api_repo.get("tokenizer_config.json");
    match api_repo.get("model.safetensors.index.json") {
        Ok(index) => {
            let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::field(&index, "(json)", e.to_string()))?;
            let mut shards: Vec<&str> = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .map(|m| m.values().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            shards.sort();
            shards.dedup();
            for s in shards {
                api_repo
                    .get(s)
                    .map_err(|e| fail(format!("downloading {s}: {e}")))?;
            }
        }
        Err(_) => {
            api_repo
                .get("model.safetensors")
                .map_err(|e| fail(format!("downloading model.safetensors: {e}")))?;
        }
    }
    dir.ok_or_else(|| fail("the hub returned no files".into()))
}
