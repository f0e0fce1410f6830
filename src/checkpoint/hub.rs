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

/// The Hub's address: HF_ENDPOINT (a mirror or a private Hub), else huggingface.co.
pub fn endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|e| !e.trim().is_empty())
        .map(|e| e.trim().trim_end_matches('/').to_string())
        .unwrap_or_else(|| "https://huggingface.co".into())
}

/// The token the Python client would send: HF_TOKEN, else the file
/// HF_TOKEN_PATH names, else $HF_HOME/token (~/.cache/huggingface/token,
/// where `huggingface-cli login` writes it). hf-hub alone looks only beside
/// its cache, which misses CI secrets and a moved HF_HUB_CACHE.
pub fn token() -> Option<String> {
    let nonempty = |s: String| Some(s.trim().to_string()).filter(|t| !t.is_empty());
    if let Some(t) = std::env::var("HF_TOKEN").ok().and_then(nonempty) {
        return Some(t);
    }
    let file = match std::env::var_os("HF_TOKEN_PATH").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => match std::env::var_os("HF_HOME").filter(|p| !p.is_empty()) {
            Some(h) => PathBuf::from(h).join("token"),
            None => std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default()
                .join(".cache/huggingface/token"),
        },
    };
    std::fs::read_to_string(file).ok().and_then(nonempty)
}

/// What a failed request means for the user, by HTTP status: a gated or
/// private repository needs a token (or the licence accepted), a missing one
/// a corrected name or revision.
fn explain(repo_id: &str, revision: &str, file: &str, e: &hf_hub::api::sync::ApiError) -> String {
    let status = match e {
        hf_hub::api::sync::ApiError::RequestError(r) => match r.as_ref() {
            ureq::Error::Status(code, _) => Some(*code),
            _ => None,
        },
        _ => None,
    };
    let page = format!("{}/{repo_id}", endpoint());
    match status {
        Some(401) if token().is_none() => format!(
            "{file}: the Hub answered 401: {repo_id} is gated or private (or does not exist) and no token \
             was sent; set HF_TOKEN (in CI, from a secret) or run `huggingface-cli login`"
        ),
        Some(401) => format!(
            "{file}: the Hub answered 401: the token from HF_TOKEN / the token file was refused; \
             check it is valid and has read access"
        ),
        Some(403) => format!(
            "{file}: the Hub answered 403: {repo_id} is gated; accept its terms at {page} with the \
             account whose token probegate uses"
        ),
        Some(404) => format!(
            "{file}: the Hub answered 404: no file {file} in {repo_id} at revision `{revision}` \
             (check the name and revision; a private repository needs HF_TOKEN)"
        ),
        _ => format!("{file}: {e} (set HF_HUB_OFFLINE=1 to use only the cache)"),
    }
}

/// A file name from a downloaded index, checked before it reaches a URL or a
/// cache path: relative, no `..`, no query or fragment characters.
fn safe_repo_file(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('/')
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
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
    let (repo_id, revision) = (repo.url(), repo.revision().to_string());
    let api = hf_hub::api::sync::ApiBuilder::from_cache(Cache::new(hub_cache_dir()))
        .with_endpoint(endpoint())
        .with_token(token())
        .with_progress(false)
        .build()
        .map_err(|e| fail(format!("cannot reach the Hugging Face Hub: {e}")))?;
    let api_repo = api.repo(repo);
    let get = |f: &str| {
        api_repo
            .get(f)
            .map_err(|e| fail(explain(&repo_id, &revision, f, &e)))
    };
    let mut dir = None;
    for f in CORE_FILES {
        let p = get(f)?;
        dir = p.parent().map(|d| d.to_path_buf());
    }
    let _ = api_repo.get("tokenizer_config.json");
    match api_repo.get("model.safetensors.index.json") {
        Ok(index) => {
            let text = crate::assets::read_small_text(&index, "safetensors index")?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::field(&index, "(json)", e.to_string()))?;
            let mut shards: Vec<&str> = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .map(|m| m.values().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            shards.sort();
            shards.dedup();
            if let Some(bad) = shards.iter().find(|s| !safe_repo_file(s)) {
                return Err(Error::field(
                    &index,
                    "weight_map",
                    format!("shard name {bad:?} is not a plain relative file name; refused before any request"),
                ));
            }
            for s in shards {
                get(s)?;
            }
        }
        Err(_) => {
            get("model.safetensors")?;
        }
    }
    dir.ok_or_else(|| fail("the hub returned no files".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_from_an_index_must_be_plain_relative_files() {
        for ok in ["model-00001-of-00002.safetensors", "sub/dir/w.safetensors"] {
            assert!(safe_repo_file(ok), "{ok}");
        }
        for bad in [
            "../x",
            "/etc/passwd",
            "a/../b",
            "w.safetensors?x=1",
            "w#x",
            "",
            "a//b",
            "./a",
        ] {
            assert!(!safe_repo_file(bad), "{bad}");
        }
    }
}
