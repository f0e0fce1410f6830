//! The registries' side of a job: re-read what the webhook announced (the
//! payload is a hint, the registry is the truth), fetch the candidate, and
//! write the verdict back (a Hugging Face discussion comment, MLflow
//! model-version tags).
//!
//! One file per registry (`hf`, `mlflow`); an MLflow source's artifact tree
//! is searched in `artifacts` and fetched in `fetch`. What they share
//! (the HTTP client, errors, which files make a candidate) is here.

mod artifacts;
mod hf;
mod mlflow;
mod fetch;

use crate::error::{Error, Result};

pub use artifacts::{
    find_candidate, safe_component, ArtifactLimits, Found, ModelDir, MAX_BYTES_ENV,
};
pub use fetch::mlflow_fetch;
pub use hf::{hf_comment, hf_comment_exists, hf_fetch};
pub use mlflow::{mlflow_tag, mlflow_untag};

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

#[cfg(test)]
mod tests;
