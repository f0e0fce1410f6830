//! The GitHub adapter: publishes a `check` report as a check run and as one
//! sticky pull-request comment, through octocrab. The Action calls it via
//! `probegate github publish`; it reads only the report directory, so it is
//! the same whether the gate passed, failed or could not evaluate. Only a
//! comment the token's own account wrote is ever edited ([`author`]).

mod author;
mod changes;
pub use author::{validate_author, IgnoredComment, ACTIONS_BOT, AUTHOR_ENV};
pub use changes::{changed_candidates, Changed};

use std::path::Path;

use octocrab::params::checks::{
    CheckRunConclusion, CheckRunOutput, CheckRunOutputAnnotation, CheckRunOutputAnnotationLevel,
    CheckRunStatus,
};
use octocrab::Octocrab;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::gate::report::{Outcome, ReportFile, Status, Verdict};

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
        let name = &m.name;
        // The verdict names the monitors that fail it, each with its reason.
        let reasons = m.stale_reasons.join("; ");
        let (level, what, message) = match (m.status, report.fail_reason(name)) {
            (Status::Stale, _) if m.not_climbed => (
                "failure",
                "stale",
                format!("Stale: {reasons}; the repair ladder was not climbed, the verdict was already fail (budget.stop_at_verdict)"),
            ),
            (Status::Stale, _) => (
                "failure",
                "stale",
                format!("Stale and not repaired: {reasons}"),
            ),
            (Status::Repaired, Some(why)) => ("failure", "repaired, not accepted", why.clone()),
            (Status::Repaired, None) => (
                "warning",
                "repaired",
                format!(
                    "Stale ({reasons}), repaired by {}: deploy the repaired monitor with this model",
                    m.rung
                ),
            ),
            (Status::Unverified, Some(why)) => ("failure", "not verified", why.clone()),
            _ => continue,
        };
        annotations.push(Annotation {
            path: match monitors_dir {
                Some(d) => format!("{}/{name}/monitor.json", d.trim_end_matches('/')),
                None => format!("{name}/monitor.json"),
            },
            level: level.into(),
            title: format!("{name}: {what}"),
            message,
        });
    }
    let verdict = Outcome::from(report.verdict);
    let failing = report.failed_by.len();
    let title = match report.verdict {
        Verdict::Pass => "Gate passed".to_string(),
        Verdict::PassWithRepairs => format!("Gate passed with {repaired} repaired monitors"),
        // Unverified monitors a risk rule fails count as much as stale ones.
        Verdict::Fail if failing > stale => format!(
            "Gate failed: {failing} monitors fail the policy ({stale} stale, {} not verified or not accepted)",
            failing - stale
        ),
        Verdict::Fail if stale > 0 => format!("Gate failed: {stale} stale monitors"),
        Verdict::Fail => format!(
            "Gate failed: {}",
            report.reasons.first().map(String::as_str).unwrap_or("see the report")
        ),
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
        Ok(self.create_check_run(head_sha, details_url).await?.id)
    }

    /// Sent through octocrab's request builders, read raw: its CheckRun
    /// model drops `app`, which names the token's own account.
    async fn create_check_run(
        &self,
        head_sha: &str,
        details_url: Option<&str>,
    ) -> Result<author::RunReply> {
        let checks = self.octo.checks(&self.owner, &self.repo);
        let mut req = checks
            .create_check_run(check_name(self.name.as_deref()), head_sha)
            .status(CheckRunStatus::InProgress);
        if let Some(u) = details_url {
            req = req.details_url(u);
        }
        let route = format!("/repos/{}/{}/check-runs", self.owner, self.repo);
        self.octo.post(route, Some(&req)).await.map_err(|e| {
            remote(
                format!("create check run on {}/{}", self.owner, self.repo),
                e,
            )
        })
    }

    /// Complete check run `id` with the summary. Returns the slug of the
    /// GitHub App the run belongs to, which is the token's own (only an app
    /// can write check runs), when GitHub names it.
    pub async fn finish_check_run(&self, id: u64, s: &Summary) -> Result<Option<String>> {
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
        let checks = self.octo.checks(&self.owner, &self.repo);
        let req = checks
            .update_check_run(octocrab::models::CheckRunId(id))
            .status(CheckRunStatus::Completed)
            .conclusion(conclusion(s.verdict))
            .output(output);
        let route = format!("/repos/{}/{}/check-runs/{id}", self.owner, self.repo);
        let run: author::RunReply = self
            .octo
            .patch(route, Some(&req))
            .await
            .map_err(|e| remote(format!("update check run {id}"), e))?;
        Ok(run.app.map(|a| a.slug))
    }

    /// The login this token writes comments as, from `GET /user`; an error
    /// that names `--comment-author` when the token cannot read it.
    pub async fn own_login(&self) -> Result<String> {
        author::user_login(&self.octo).await
    }

    /// Create or update probegate's one comment on the pull request. A
    /// sticky comment is the first one that carries the marker and that
    /// `author` wrote (`None`: the login `GET /user` names); marked comments
    /// by anyone else are left alone and returned.
    pub async fn upsert_comment(
        &self,
        pr: u64,
        body: &str,
        mode: CommentMode,
        author: Option<&str>,
    ) -> Result<Option<Upserted>> {
        if mode == CommentMode::Off {
            return Ok(None);
        }
        let marker = sticky_marker(self.name.as_deref());
        let body = format!("{marker}\n{body}");
        let (mut ignored, mut sticky_author) = (Vec::new(), None);
        if mode == CommentMode::Sticky {
            let author = match author {
                Some(a) => {
                    validate_author(a)?;
                    a.to_string()
                }
                None => self.own_login().await?,
            };
            if let Some(id) = self.find_own(pr, &marker, &author, &mut ignored).await? {
                // GitHub documents PATCH for this; octocrab's update_comment sends POST.
                let route = format!("/repos/{}/{}/issues/comments/{id}", self.owner, self.repo);
                let _: author::Listed = self
                    .octo
                    .patch(route, Some(&serde_json::json!({ "body": body })))
                    .await
                    .map_err(|e| remote(format!("update comment {id}"), e))?;
                return Ok(Some(Upserted {
                    id,
                    created: false,
                    author: Some(author),
                    ignored,
                }));
            }
            sticky_author = Some(author);
        }
        let id = self.create_comment(pr, &body).await?;
        Ok(Some(Upserted {
            id,
            created: true,
            author: sticky_author,
            ignored,
        }))
    }

    async fn create_comment(&self, pr: u64, body: &str) -> Result<u64> {
        let c = self
            .octo
            .issues(&self.owner, &self.repo)
            .create_comment(pr, body)
            .await
            .map_err(|e| remote(format!("comment on #{pr}"), e))?;
        Ok(c.id.into_inner())
    }

    /// The first comment on `pr` that starts with `marker` and that `author`
    /// wrote; marked comments by others go to `ignored`, every page read.
    async fn find_own(
        &self,
        pr: u64,
        marker: &str,
        author: &str,
        ignored: &mut Vec<IgnoredComment>,
    ) -> Result<Option<u64>> {
        let what = || format!("list comments on #{pr}");
        let route = format!("/repos/{}/{}/issues/{pr}/comments", self.owner, self.repo);
        let mut page: octocrab::Page<author::Listed> = self
            .octo
            .get(route, Some(&[("per_page", 100)]))
            .await
            .map_err(|e| remote(what(), e))?;
        let mut own = None;
        loop {
            let marked = page
                .items
                .iter()
                .filter(|c| c.body.as_deref().is_some_and(|b| b.starts_with(marker)));
            for c in marked {
                if author::written_by(c, author) {
                    own = own.or(Some(c.id));
                } else {
                    ignored.push(IgnoredComment {
                        id: c.id,
                        author: c.user.as_ref().map_or("ghost", |u| &u.login).to_string(),
                    });
                }
            }
            match self
                .octo
                .get_page(&page.next)
                .await
                .map_err(|e| remote(what(), e))?
            {
                Some(p) => page = p,
                None => return Ok(own),
            }
        }
    }
}

/// What [`Client::upsert_comment`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upserted {
    pub id: u64,
    pub created: bool,
    /// The account whose comment is the sticky one (sticky mode only).
    pub author: Option<String>,
    /// Comments with the marker that someone else wrote, left untouched.
    pub ignored: Vec<IgnoredComment>,
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
    /// The account whose comment is the sticky one (`--comment-author`);
    /// `None`: the token's own, from its check run's app or `GET /user`.
    pub comment_author: Option<&'a str>,
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
    /// Whose comment the sticky one is (the token's account); `null` unless sticky.
    pub comment_author: Option<String>,
    /// Comments carrying the marker that someone else wrote: never edited.
    pub ignored_comments: Vec<IgnoredComment>,
    pub stale: usize,
    pub repaired: usize,
}

pub async fn publish(p: &Publish<'_>, s: &Summary) -> Result<Published> {
    let c = Client::new(p.api_url, p.token, p.repository)?.with_name(p.name)?;
    let sticky = p.pr.is_some() && p.comment == CommentMode::Sticky;
    let mut author = p.comment_author.map(str::to_string);
    if let Some(a) = &author {
        validate_author(a)?;
    }
    // Without a check run to name the token's app, ask GitHub first, so that
    // a token that cannot say who it is fails before anything is written.
    if sticky && author.is_none() && p.check_run == CheckRun::Off {
        author = Some(c.own_login().await?);
    }
    let check_run_id = match p.check_run {
        CheckRun::Off => None,
        CheckRun::Create => Some(c.create_check_run(p.sha, p.details_url).await?.id),
        CheckRun::Existing(id) => Some(id),
    };
    if let Some(id) = check_run_id {
        let app = c.finish_check_run(id, s).await?;
        if sticky && author.is_none() {
            author = app.as_deref().map(author::bot_login);
        }
    }
    let mut comment = None;
    if let Some(pr) = p.pr {
        comment = c
            .upsert_comment(pr, &s.markdown, p.comment, author.as_deref())
            .await?;
    }
    let created = comment.as_ref().is_some_and(|c| c.created);
    let (comment_id, comment_author, ignored_comments) = match comment {
        Some(u) => (Some(u.id), u.author, u.ignored),
        None => (None, None, vec![]),
    };
    Ok(Published {
        verdict: s.verdict,
        check_run_id,
        comment_id,
        comment_created: created,
        comment_author,
        ignored_comments,
        stale: s.stale,
        repaired: s.repaired,
    })
}

#[cfg(test)]
mod tests;
