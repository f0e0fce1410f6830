//! The Hugging Face Hub: re-read a pushed revision, download its candidate,
//! and answer on the pull request or a new discussion.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Repo, RepoType};
use serde_json::json;

use super::{auth, client, ok_json, remote, select_files, CandidateFiles};
use crate::adapters::serve::config::HfConfig;
use crate::error::Result;

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
