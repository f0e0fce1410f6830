//! The registries' side of a job: re-read what the webhook announced (the
//! payload is a hint, the registry is the truth), fetch the candidate, and
//! write the verdict back (a Hugging Face discussion comment, MLflow
//! model-version tags).

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Repo, RepoType};
use serde_json::json;

use super::config::{HfConfig, MlflowConfig};
use crate::error::{Error, Result};

fn remote(what: impl Into<String>, msg: impl std::fmt::Display) -> Error {
    Error::Remote {
        what: what.into(),
        msg: msg.to_string(),
    }
}

/// Files of a repository snapshot that make a checkable candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CandidateFiles {
    /// A PEFT adapter: adapter_config.json and its weights, applied to the target's base.
    Adapter(Vec<String>),
    /// One GGUF file.
    Gguf(String),
    /// A Hugging Face model directory.
    Model(Vec<String>),
}

pub fn select_files(files: &[String]) -> Option<CandidateFiles> {
    let has = |n: &str| files.iter().any(|f| f == n);
    if has("adapter_config.json") {
        let mut v: Vec<String> = files
            .iter()
            .filter(|f| *f == "adapter_config.json" || f.starts_with("adapter_model."))
            .cloned()
            .collect();
        v.sort();
        return Some(CandidateFiles::Adapter(v));
    }
    if has("config.json") && files.iter().any(|f| f.ends_with(".safetensors")) {
        let mut v: Vec<String> = files
            .iter()
            .filter(|f| {
                !f.contains('/')
                    && (f.ends_with(".safetensors")
                        || f.ends_with(".json")
                        || f.as_str() == "tokenizer.model")
            })
            .cloned()
            .collect();
        v.sort();
        return Some(CandidateFiles::Model(v));
    }
    let mut ggufs: Vec<&String> = files.iter().filter(|f| f.ends_with(".gguf")).collect();
    ggufs.sort();
    ggufs.first().map(|g| CandidateFiles::Gguf((*g).clone()))
}

/// Re-read the repository at `sha` from the Hub and download the candidate's
/// files into `cache`. Returns the model reference `check` takes.
pub fn hf_fetch(cfg: &HfConfig, repo: &str, sha: &str, base: &str, cache: &Path) -> Result<String> {
    let api = ApiBuilder::new()
        .with_endpoint(cfg.endpoint.clone())
        .with_cache_dir(cache.to_path_buf())
        .with_token(cfg.token.clone())
        .with_progress(false)
        .with_retries(3)
        .build()
        .map_err(|e| remote(format!("Hugging Face client for {repo}"), e))?;
    let r = api.repo(Repo::with_revision(
        repo.to_string(),
        RepoType::Model,
        sha.to_string(),
    ));
    let what = format!("{}/api/models/{repo}/revision/{sha}", cfg.endpoint);
    let info = r.info().map_err(|e| remote(&what, e))?;
    if !info.sha.eq_ignore_ascii_case(sha) {
        return Err(remote(
            &what,
            format!("the Hub resolves this revision to {}, not {sha}", info.sha),
        ));
    }
    let files: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let Some(sel) = select_files(&files) else {
        return Err(remote(
            &what,
            "no adapter (adapter_config.json), model directory (config.json + safetensors) or .gguf file at this revision",
        ));
    };
    let get = |f: &str| -> Result<PathBuf> {
        r.get(f)
            .map_err(|e| remote(format!("{}/{repo}/resolve/{sha}/{f}", cfg.endpoint), e))
    };
    Ok(match sel {
        CandidateFiles::Adapter(fs) | CandidateFiles::Model(fs) if fs.is_empty() => {
            return Err(remote(&what, "the candidate has no weight files"));
        }
        CandidateFiles::Adapter(fs) => {
            let mut dir = None;
            for f in &fs {
                dir = get(f)?.parent().map(Path::to_path_buf);
            }
            let dir = dir.ok_or_else(|| remote(&what, "no snapshot directory"))?;
            format!("{base}+{}", dir.display())
        }
        CandidateFiles::Model(fs) => {
            let mut dir = None;
            for f in &fs {
                dir = get(f)?.parent().map(Path::to_path_buf);
            }
            dir.ok_or_else(|| remote(&what, "no snapshot directory"))?
                .display()
                .to_string()
        }
        CandidateFiles::Gguf(f) => get(&f)?.display().to_string(),
    })
}

fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .user_agent(concat!("probegate/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| remote("HTTP client", e))
}

fn auth(rb: reqwest::RequestBuilder, token: &Option<String>) -> reqwest::RequestBuilder {
    match token {
        Some(t) => rb.bearer_auth(t),
        None => rb,
    }
}

async fn ok_json(
    what: &str,
    resp: reqwest::Result<reqwest::Response>,
) -> Result<serde_json::Value> {
    let resp = resp.map_err(|e| remote(what, e))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| remote(what, e))?;
    if !status.is_success() {
        let short: String = text.chars().take(300).collect();
        return Err(remote(what, format!("HTTP {status}: {short}")));
    }
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(&text).map_err(|e| remote(what, format!("response is not JSON: {e}")))
}

/// Re-read a model version from the MLflow registry and turn its `source`
/// into a model reference. Only sources on a filesystem this server can read
/// are supported (a path or `file://`); others are an error, never a guess.
pub async fn mlflow_resolve(
    cfg: &MlflowConfig,
    name: &str,
    version: &str,
    base: &str,
) -> Result<String> {
    let url = format!("{}/api/2.0/mlflow/model-versions/get", cfg.tracking_uri);
    let what = format!("{url}?name={name}&version={version}");
    let v = ok_json(
        &what,
        auth(client()?.get(&url), &cfg.token)
            .query(&[("name", name), ("version", version)])
            .send()
            .await,
    )
    .await?;
    let mv = &v["model_version"];
    if mv["version"].as_str() != Some(version) || mv["name"].as_str() != Some(name) {
        return Err(remote(
            &what,
            "the registry does not know this model version",
        ));
    }
    if let Some(status) = mv["status"].as_str() {
        if status != "READY" {
            return Err(remote(
                &what,
                format!("model version status is {status}, not READY"),
            ));
        }
    }
    let source = mv["source"]
        .as_str()
        .ok_or_else(|| remote(&what, "model_version.source is missing"))?;
    let path = match source.strip_prefix("file://") {
        Some(p) => PathBuf::from(p),
        None if source.starts_with('/') => PathBuf::from(source),
        None => {
            return Err(remote(
                &what,
                format!(
                    "source `{source}` is not on a local filesystem; probegate serve reads \
                     file:// and absolute-path sources (mount the artifact store)"
                ),
            ))
        }
    };
    if !path.exists() {
        return Err(remote(
            &what,
            format!("source {} does not exist here", path.display()),
        ));
    }
    Ok(if path.join("adapter_config.json").is_file() {
        format!("{base}+{}", path.display())
    } else {
        path.display().to_string()
    })
}

/// MLflow: tags on the model version (idempotent, so a retried callback is harmless).
pub async fn mlflow_tag(
    cfg: &MlflowConfig,
    name: &str,
    version: &str,
    tags: &[(&str, String)],
) -> Result<()> {
    let url = format!("{}/api/2.0/mlflow/model-versions/set-tag", cfg.tracking_uri);
    for (key, value) in tags {
        // MLflow caps tag values (5000 characters in older servers).
        let value: String = value.chars().take(5000).collect();
        ok_json(
            &format!("{url} ({key})"),
            auth(client()?.post(&url), &cfg.token)
                .json(&json!({"name": name, "version": version, "key": key, "value": value}))
                .send()
                .await,
        )
        .await?;
    }
    Ok(())
}

/// Hugging Face: a comment on the pull request the push went to, or a new
/// discussion for a push to a branch.
pub async fn hf_comment(
    cfg: &HfConfig,
    repo: &str,
    git_ref: &str,
    title: &str,
    body: &str,
) -> Result<()> {
    let c = client()?;
    if let Some(num) = git_ref.strip_prefix("refs/pr/") {
        let url = format!(
            "{}/api/models/{repo}/discussions/{num}/comment",
            cfg.endpoint
        );
        ok_json(
            &url,
            auth(c.post(&url), &cfg.token)
                .json(&json!({"comment": body}))
                .send()
                .await,
        )
        .await?;
    } else {
        let url = format!("{}/api/models/{repo}/discussions", cfg.endpoint);
        ok_json(
            &url,
            auth(c.post(&url), &cfg.token)
                .json(&json!({"title": title, "description": body, "pullRequest": false}))
                .send()
                .await,
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn selects_what_check_can_read() {
        assert_eq!(
            select_files(&s(&[
                "README.md",
                "adapter_model.safetensors",
                "adapter_config.json"
            ])),
            Some(CandidateFiles::Adapter(s(&[
                "adapter_config.json",
                "adapter_model.safetensors"
            ])))
        );
        assert_eq!(
            select_files(&s(&[
                "config.json",
                "model.safetensors",
                "tokenizer.json",
                "x/y.json"
            ])),
            Some(CandidateFiles::Model(s(&[
                "config.json",
                "model.safetensors",
                "tokenizer.json"
            ])))
        );
        assert_eq!(
            select_files(&s(&["b.gguf", "a.gguf"])),
            Some(CandidateFiles::Gguf("a.gguf".into()))
        );
        assert_eq!(select_files(&s(&["README.md"])), None);
    }
}
