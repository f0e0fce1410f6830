//! `probegate github candidates`: the adapters and checkpoints a pull
//! request changed, read from git.

use std::path::{Path, PathBuf};

use serde::Serialize;

// The one git runner; -z output needs its bytes.
use crate::adapters::hook::git_bytes as git;
use crate::error::{Error, Result};

/// What `probegate github candidates` found.
#[derive(Debug, Serialize)]
pub struct Changed {
    /// The commit `since` resolved to.
    pub since: String,
    /// Files changed since then, relative to the repository root.
    pub files: Vec<String>,
    /// Model references for the adapters and checkpoints among them (absolute paths).
    pub candidates: Vec<String>,
}

/// The adapters and checkpoints changed on HEAD's side since it forked from
/// `since` (`git diff since...HEAD`, what a pull request's "files changed"
/// shows), as model references on `base`: the pre-push hook's rules
/// ([`crate::adapters::hook::candidates`]). Names are read NUL-separated so that
/// non-ASCII and odd paths arrive intact; deleted files make no candidate.
pub fn changed_candidates(repo: &Path, since: &str, base: &str) -> Result<Changed> {
    // A revision starting with '-' would be read as an option by git.
    if since.is_empty() || since.starts_with('-') {
        return Err(Error::Usage(format!(
            "--since `{since}`: not a git revision"
        )));
    }
    let top = git(repo, &["rev-parse", "--show-toplevel"])?;
    let top = PathBuf::from(
        String::from_utf8(top)
            .map_err(|_| {
                Error::Usage(format!(
                    "{}: the repository's path is not UTF-8",
                    repo.display()
                ))
            })?
            .trim_end_matches(['\n', '\r']),
    );
    let sha = git(
        &top,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{since}^{{commit}}"),
        ],
    )
    .ok()
    .and_then(|o| String::from_utf8(o).ok())
    .map(|s| s.trim().to_string())
    .filter(|s| !s.is_empty())
    .ok_or_else(|| {
        Error::Usage(format!(
            "--since `{since}`: no such commit in {} (a shallow clone? check out with \
             `fetch-depth: 0` so the pull request's base is present)",
            top.display()
        ))
    })?;
    let names = git(
        &top,
        &[
            "-c",
            "core.quotePath=false",
            "diff",
            "--name-only",
            "-z",
            "--no-renames",
            &format!("{sha}...HEAD"),
        ],
    )?;
    let mut files = Vec::new();
    for raw in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        // Model references are strings, so a path that is not UTF-8 cannot
        // become one: skipping such a model file would be a silent pass.
        let name = match String::from_utf8(raw.to_vec()) {
            Ok(n) => n,
            Err(_) => {
                let lossy = String::from_utf8_lossy(raw);
                let file = lossy.rsplit('/').next().unwrap_or("");
                if file.ends_with(".gguf")
                    || file.ends_with(".safetensors")
                    || file.ends_with("config.json")
                    || file.starts_with("adapter_model.")
                {
                    return Err(Error::Usage(format!(
                        "changed file `{lossy}` in {}: the path is not UTF-8, so it cannot be \
                         passed as a model reference; rename it",
                        top.display()
                    )));
                }
                continue;
            }
        };
        if !files.contains(&name) {
            files.push(name);
        }
    }
    let candidates = crate::adapters::hook::candidates(&top, &files, base);
    Ok(Changed {
        since: sha,
        files,
        candidates,
    })
}
