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
/// files into `cache`, at most `max_bytes` of them (the sizes the Hub
/// announces are checked before any download, what arrived after).
/// Returns the model reference `check` takes.
pub fn hf_fetch(
    cfg: &HfConfig,
    repo: &str,
    sha: &str,
    base: &str,
    cache: &Path,
    max_bytes: u64,
) -> Result<String> {
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
    let names: Vec<&String> = match &sel {
        CandidateFiles::Adapter(fs) | CandidateFiles::Model(fs) => fs.iter().collect(),
        CandidateFiles::Gguf(f) => vec![f],
    };
    let over = |n: u64| {
        remote(
            &what,
            format!(
                "the candidate's files are {n} bytes or more, over the {max_bytes} byte cap ([limits] max_download_bytes)"
            ),
        )
    };
    let mut announced = 0u64;
    for f in &names {
        announced = announced.saturating_add(announced_size(cfg, &r.url(f))?.unwrap_or(0));
        if announced > max_bytes {
            return Err(over(announced));
        }
    }
    let got = std::cell::Cell::new(0u64);
    let get = |f: &str| -> Result<PathBuf> {
        let p = r
            .get(f)
            .map_err(|e| remote(format!("{}/{repo}/resolve/{sha}/{f}", cfg.endpoint), e))?;
        // A size the Hub did not announce is counted once it is here.
        let n = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        got.set(got.get().saturating_add(n));
        if got.get() > max_bytes {
            return Err(over(got.get()));
        }
        Ok(p)
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

/// The size the Hub announces for a file: `x-linked-size` on the redirect
/// of a large (LFS) file, else Content-Length. `None` when it says neither.
fn announced_size(cfg: &HfConfig, url: &str) -> Result<Option<u64>> {
    let agent = ureq::AgentBuilder::new()
        .redirects(0)
        .timeout(std::time::Duration::from_secs(30))
        .build();
    let mut req = agent.head(url);
    if let Some(t) = &cfg.token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, _)) => return Err(remote(url, format!("HTTP {code}"))),
        Err(e) => return Err(remote(url, e)),
    };
    Ok(resp
        .header("x-linked-size")
        .or_else(|| resp.header("content-length"))
        .and_then(|v| v.trim().parse().ok()))
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

/// Whether a comment carrying `marker` is already there: on the pull
/// request the push went to, or, for a branch, in one of the repository's
/// recent probegate discussions. What makes a retried callback idempotent.
pub async fn hf_comment_exists(
    cfg: &HfConfig,
    repo: &str,
    git_ref: &str,
    marker: &str,
) -> Result<bool> {
    let c = client()?;
    if let Some(num) = git_ref.strip_prefix("refs/pr/") {
        return discussion_has(&c, cfg, repo, num, marker).await;
    }
    let url = format!("{}/api/models/{repo}/discussions", cfg.endpoint);
    let v = ok_json(&url, auth(c.get(&url), &cfg.token).send().await).await?;
    let ours: Vec<String> = v["discussions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|d| {
                    d["title"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("probegate:"))
                })
                .filter_map(|d| d["num"].as_u64())
                .take(20)
                .map(|n| n.to_string())
                .collect()
        })
        .unwrap_or_default();
    for num in ours {
        if discussion_has(&c, cfg, repo, &num, marker).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

async fn discussion_has(
    c: &reqwest::Client,
    cfg: &HfConfig,
    repo: &str,
    num: &str,
    marker: &str,
) -> Result<bool> {
    let url = format!("{}/api/models/{repo}/discussions/{num}", cfg.endpoint);
    let v = ok_json(&url, auth(c.get(&url), &cfg.token).send().await).await?;
    // The marker sits in a comment's raw text (the first event is the
    // discussion's own description).
    Ok(v["events"].as_array().is_some_and(|events| {
        events.iter().any(|e| {
            e["data"]["latest"]["raw"]
                .as_str()
                .is_some_and(|t| t.contains(marker))
        })
    }))
}
