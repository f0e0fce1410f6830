//! The GitHub adapter: publishes a `check` report as a check run and as one
//! sticky pull-request comment, through octocrab. The Action calls it via
//! `probegate github publish`; it reads only the report directory, so it is
//! the same whether the gate passed, failed or could not evaluate.

use std::path::{Path, PathBuf};

use octocrab::models::CheckRunId;
use octocrab::params::checks::{
    CheckRunConclusion, CheckRunOutput, CheckRunOutputAnnotation, CheckRunOutputAnnotationLevel,
    CheckRunStatus,
};
use octocrab::Octocrab;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gate::report::{Outcome, ReportFile, Status, Verdict};
// The one git runner; -z output needs its bytes.
use crate::adapters::hook::git_bytes as git;

/// Hidden marker that identifies probegate's sticky comment among a PR's
/// comments (the unnamed job's; a named job's is [`sticky_marker`]).
pub const STICKY_MARKER: &str = "<!-- probegate:sticky-report -->";
pub const CHECK_NAME: &str = "probegate";
/// Longest job name accepted: it ends up in a check run's name (GitHub
/// allows far more) and an artifact name.
pub const MAX_NAME_LEN: usize = 100;

/// A job name keys the check run's name and the sticky comment's marker, so
/// that two candidates gated in one pull request (a matrix) keep two check
/// runs and two comments. Only `[A-Za-z0-9._-]`: the name sits inside an HTML
/// comment (`-->` must not end it early) and in artifact names.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::Usage(format!("--name `{name}`: {why}")));
    if name.is_empty() {
        return bad("must not be empty (omit --name for the unnamed job)");
    }
    if name.len() > MAX_NAME_LEN {
        return bad(&format!("longer than {MAX_NAME_LEN} characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return bad(&format!(
            "character {c:?} is not allowed (only A-Z a-z 0-9 . _ -; the Action sanitises candidates into such names)"
        ));
    }
    Ok(())
}

/// The check run's name: `probegate`, or `probegate (NAME)` for a named job.
pub fn check_name(name: Option<&str>) -> String {
    match name {
        None => CHECK_NAME.to_string(),
        Some(n) => format!("{CHECK_NAME} ({n})"),
    }
}

/// The sticky comment's hidden marker. A named job's marker is never a
/// substring of the unnamed one's, nor of another name's (it ends in ` -->`).
pub fn sticky_marker(name: Option<&str>) -> String {
    match name {
        None => STICKY_MARKER.to_string(),
        Some(n) => format!("<!-- probegate:sticky-report:{n} -->"),
    }
}

crate::util::choices! {
    /// How the report is posted on a pull request.
    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum CommentMode {
        /// Create the comment once, then edit it on every run.
        Sticky = "sticky",
        /// A new comment on every run.
        New = "new",
        /// No comment (the check run only).
        Off = "off",
    }
}

fn remote(what: impl Into<String>, e: octocrab::Error) -> Error {
    // octocrab's Display for an API error is just "GitHub"; the status and message are inside.
    let msg = match e {
        octocrab::Error::GitHub { source, .. } => {
            format!("HTTP {}: {}", source.status_code, source.message)
        }
        octocrab::Error::Serde { source, .. } => format!("unexpected response: {source}"),
        octocrab::Error::Json { source, .. } => format!("unexpected response: {source}"),
        other => other.to_string(),
    };
    Error::Remote {
        what: what.into(),
        msg,
    }
}

/// What the report directory says, reduced to what GitHub shows.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// pass, pass_with_repairs, fail or error.
    pub verdict: Outcome,
    pub title: String,
    pub markdown: String,
    pub stale: usize,
    pub repaired: usize,
    pub annotations: Vec<Annotation>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Annotation {
    pub path: String,
    pub level: String,
    pub title: String,
    pub message: String,
}

/// The summary of a run that decided nothing: never a pass.
fn not_evaluated(title: &str, markdown: String) -> Summary {
    Summary {
        verdict: Outcome::Error,
        title: title.into(),
        markdown,
        stale: 0,
        repaired: 0,
        annotations: vec![],
    }
}

fn message(err: &str) -> String {
    format!(
        "## probegate: could not evaluate\n\n{}\n\nThis is not a pass.\n",
        crate::gate::report::fenced(err)
    )
}

/// Read report.json and report.md from a `check --out` directory. A missing
/// or unreadable report is itself an error outcome, never a pass.
pub fn summarize(out: &Path, monitors_dir: Option<&str>) -> Summary {
    let md = std::fs::read_to_string(out.join("report.md")).unwrap_or_default();
    let report = match ReportFile::read(out) {
        Ok(ReportFile::Decided(r)) => r,
        Ok(ReportFile::Error(_)) if !md.is_empty() => {
            return not_evaluated("Gate could not evaluate (not a pass)", md)
        }
        Ok(ReportFile::Error(e)) => {
            return not_evaluated("Gate could not evaluate (not a pass)", message(&e.error))
        }
        Err(e) => return not_evaluated("probegate could not evaluate", message(&e.to_string())),
    };
    let counts = report.counts();
    let count = |k: &str| counts.get(k).copied().unwrap_or(0);
    let (stale, repaired) = (count("stale"), count("repaired"));
    let mut annotations = Vec::new();
    for m in &report.monitors {
        let stale_now = match m.status {
            Status::Stale => true,
            Status::Repaired => false,
            _ => continue,
        };
        let name = &m.name;
        let reasons = m.stale_reasons.join("; ");
        annotations.push(Annotation {
            path: match monitors_dir {
                Some(d) => format!("{}/{name}/monitor.json", d.trim_end_matches('/')),
                None => format!("{name}/monitor.json"),
            },
            level: if stale_now { "failure" } else { "warning" }.into(),
            title: format!(
                "{name}: {}",
                if stale_now { "stale" } else { "repaired" }
            ),
            message: if stale_now {
                format!("Stale and not repaired: {reasons}")
            } else {
                format!(
                    "Stale ({reasons}), repaired by {}: deploy the repaired monitor with this model",
                    m.rung
                )
            },
        });
    }
    let verdict = Outcome::from(report.verdict);
    let title = match report.verdict {
        Verdict::Pass => "Gate passed".to_string(),
        Verdict::PassWithRepairs => format!("Gate passed with {repaired} repaired monitors"),
        Verdict::Fail => format!("Gate failed: {stale} stale monitors"),
    };
    let markdown = if md.is_empty() {
        format!("## probegate: {title}\n")
    } else {
        md
    };
    Summary {
        verdict,
        title,
        markdown,
        stale,
        repaired,
        annotations,
    }
}

pub fn conclusion(verdict: Outcome) -> CheckRunConclusion {
    match verdict {
        Outcome::Pass => CheckRunConclusion::Success,
        // Passing, but the repaired monitors must ship with the model.
        Outcome::PassWithRepairs => CheckRunConclusion::Neutral,
        Outcome::Fail => CheckRunConclusion::Failure,
        // Kept apart from a failed gate: nothing was decided.
        Outcome::Error => CheckRunConclusion::ActionRequired,
    }
}

pub struct Client {
    octo: Octocrab,
    owner: String,
    repo: String,
    /// The job name (see [`validate_name`]); `None` for the unnamed job.
    name: Option<String>,
}

impl Client {
    /// `api_url` is GitHub's API root (`https://api.github.com`, or a fake in tests).
    pub fn new(api_url: &str, token: &str, repository: &str) -> Result<Self> {
        let (owner, repo) = repository
            .split_once('/')
            .filter(|(o, r)| !o.is_empty() && !r.is_empty() && !r.contains('/'))
            .ok_or_else(|| Error::Usage(format!("repository `{repository}` is not owner/name")))?;
        let octo = Octocrab::builder()
            .base_uri(api_url)
            .map_err(|e| remote(format!("GitHub API url {api_url}"), e))?
            .personal_token(token.to_string())
            .build()
            .map_err(|e| remote("GitHub client", e))?;
        Ok(Client {
            octo,
            owner: owner.into(),
            repo: repo.into(),
            name: None,
        })
    }

    /// Name this job's check run and sticky comment (refused unless [`validate_name`] accepts it).
    pub fn with_name(mut self, name: Option<&str>) -> Result<Self> {
        if let Some(n) = name {
            validate_name(n)?;
        }
        self.name = name.map(str::to_string);
        Ok(self)
    }

    pub async fn start_check_run(&self, head_sha: &str, details_url: Option<&str>) -> Result<u64> {
        let checks = self.octo.checks(&self.owner, &self.repo);
        let mut req = checks
            .create_check_run(check_name(self.name.as_deref()), head_sha)
            .status(CheckRunStatus::InProgress);
        if let Some(u) = details_url {
            req = req.details_url(u);
        }
        let run = req.send().await.map_err(|e| {
            remote(
                format!("create check run on {}/{}", self.owner, self.repo),
                e,
            )
        })?;
        Ok(run.id.into_inner())
    }

    pub async fn finish_check_run(&self, id: u64, s: &Summary) -> Result<()> {
        // GitHub caps output text at 65535 characters and 50 annotations per request.
        let text: String = s.markdown.chars().take(65_000).collect();
        let annotations: Vec<CheckRunOutputAnnotation> = s
            .annotations
            .iter()
            .take(50)
            .map(|a| CheckRunOutputAnnotation {
                path: a.path.clone(),
                start_line: 1,
                end_line: 1,
                start_column: None,
                end_column: None,
                annotation_level: if a.level == "failure" {
                    CheckRunOutputAnnotationLevel::Failure
                } else {
                    CheckRunOutputAnnotationLevel::Warning
                },
                message: a.message.clone(),
                title: Some(a.title.clone()),
                raw_details: None,
            })
            .collect();
        let output = CheckRunOutput {
            title: s.title.clone(),
            summary: text.clone(),
            text: None,
            annotations,
            images: vec![],
        };
        self.octo
            .checks(&self.owner, &self.repo)
            .update_check_run(CheckRunId(id))
            .status(CheckRunStatus::Completed)
            .conclusion(conclusion(s.verdict))
            .output(output)
            .send()
            .await
            .map_err(|e| remote(format!("update check run {id}"), e))?;
        Ok(())
    }

    /// Create or update probegate's one comment on the pull request. Returns
    /// the comment id and whether it was created.
    pub async fn upsert_comment(
        &self,
        pr: u64,
        body: &str,
        mode: CommentMode,
    ) -> Result<Option<(u64, bool)>> {
        let marker = sticky_marker(self.name.as_deref());
        let body = format!("{marker}\n{body}");
        let issues = self.octo.issues(&self.owner, &self.repo);
        if mode == CommentMode::Off {
            return Ok(None);
        }
        if mode == CommentMode::Sticky {
            let mut page = issues
                .list_comments(pr)
                .per_page(100)
                .send()
                .await
                .map_err(|e| remote(format!("list comments on #{pr}"), e))?;
            loop {
                if let Some(c) = page
                    .items
                    .iter()
                    .find(|c| c.body.as_deref().is_some_and(|b| b.starts_with(&marker)))
                {
                    let id = c.id;
                    // GitHub documents PATCH for this; octocrab's update_comment sends POST.
                    let route = format!("/repos/{}/{}/issues/comments/{id}", self.owner, self.repo);
                    let _: octocrab::models::issues::Comment = self
                        .octo
                        .patch(route, Some(&serde_json::json!({ "body": body })))
                        .await
                        .map_err(|e| remote(format!("update comment {id}"), e))?;
                    return Ok(Some((id.into_inner(), false)));
                }
                match self
                    .octo
                    .get_page(&page.next)
                    .await
                    .map_err(|e| remote(format!("list comments on #{pr}"), e))?
                {
                    Some(p) => page = p,
                    None => break,
                }
            }
        }
        let c = issues
            .create_comment(pr, &body)
            .await
            .map_err(|e| remote(format!("comment on #{pr}"), e))?;
        Ok(Some((c.id.into_inner(), true)))
    }
}

/// Everything `probegate github publish` does, in order: a check run (created
/// and completed, so it carries the final conclusion) and the PR comment.
pub struct Publish<'a> {
    pub api_url: &'a str,
    pub token: &'a str,
    pub repository: &'a str,
    pub sha: &'a str,
    pub pr: Option<u64>,
    pub comment: CommentMode,
    pub details_url: Option<&'a str>,
    pub check_run: CheckRun,
    /// The job name (`--name`); `None` for the unnamed job.
    pub name: Option<&'a str>,
}

/// What publishing does with the check run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckRun {
    Off,
    /// Create one and complete it at once.
    Create,
    /// Complete the one `github start` created before the gate ran.
    Existing(u64),
}

#[derive(Debug, Serialize)]
pub struct Published {
    pub verdict: Outcome,
    pub check_run_id: Option<u64>,
    pub comment_id: Option<u64>,
    pub comment_created: bool,
    pub stale: usize,
    pub repaired: usize,
}

pub async fn publish(p: &Publish<'_>, s: &Summary) -> Result<Published> {
    let c = Client::new(p.api_url, p.token, p.repository)?.with_name(p.name)?;
    let check_run_id = match p.check_run {
        CheckRun::Off => None,
        CheckRun::Create => Some(c.start_check_run(p.sha, p.details_url).await?),
        CheckRun::Existing(id) => Some(id),
    };
    if let Some(id) = check_run_id {
        c.finish_check_run(id, s).await?;
    }
    let mut comment = None;
    if let Some(pr) = p.pr {
        comment = c.upsert_comment(pr, &s.markdown, p.comment).await?;
    }
    Ok(Published {
        verdict: s.verdict,
        check_run_id,
        comment_id: comment.map(|c| c.0),
        comment_created: comment.is_some_and(|c| c.1),
        stale: s.stale,
        repaired: s.repaired,
    })
}

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
