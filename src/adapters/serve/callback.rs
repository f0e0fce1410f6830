//! Telling the registry a job's result: MLflow model-version tags or a Hub
//! comment, retried with exponential backoff, the outcome recorded either way.

use std::time::Duration;

use super::config;
use super::registry;
use super::store::{CallbackState, JobState, Source};
use super::{blocking, Shared};
use crate::error::{Error, Result};
use crate::gate::report::{Outcome, ReportFile};

/// Tell the registry, with exponential backoff; the result is recorded either way.
pub(super) async fn callback(app: Shared, id: u64) {
    let a = app.clone();
    let Ok(Some(job)) = blocking(move || a.store.get(id)).await else {
        return;
    };
    // A superseded job was never run: its replacement tells the registry.
    if job.callback != CallbackState::Pending || !job.done() || job.state == JobState::Superseded {
        return;
    }
    let verdict = job.verdict.unwrap_or(Outcome::Error);
    let summary = job.summary.clone().unwrap_or_default();
    let md = std::fs::read_to_string(app.job_dir(id).join("report.md"))
        .unwrap_or_else(|_| format!("## probegate: {summary}\n"));
    // The bytes the verdict was reached on (a job that could not evaluate has none).
    let fingerprint = if job.state == JobState::Finished {
        let fp = candidate_fingerprint(&app.job_dir(id));
        if fp.is_none() {
            tracing::warn!(job = id, "report.json has no candidate fingerprint");
        }
        fp
    } else {
        None
    };
    // The job's idempotency key: every comment carries it, so a retry after
    // a crash finds the one that landed instead of posting another.
    let marker = format!("<!-- probegate job {id} key {} -->", job.created);
    // An earlier attempt (before a crash, or unrecorded) may have landed.
    let mut maybe_told = job.callback_attempts > 0;
    let mut delay = Duration::from_millis(500);
    let tries = app.cfg.callback_retries.max(1);
    for attempt in 1..=tries {
        let res = async {
            if maybe_told && already_told(&app, &job.source, &marker).await? {
                return Ok(true);
            }
            // The intent is recorded before the call: a restart after it looks first.
            let a = app.clone();
            blocking(move || a.store.update(id, |j| j.callback_attempts += 1)).await?;
            maybe_told = true;
            tell(
                &app,
                &job.source,
                id,
                &marker,
                &md,
                fingerprint.as_deref(),
                verdict,
                &summary,
            )
            .await
            .map(|()| false)
        }
        .await;
        let ok = res.is_ok();
        let err = res.as_ref().err().map(|e| app.cfg.redact(&e.to_string()));
        let last = attempt == tries;
        let a = app.clone();
        let e2 = err.clone();
        let recorded = blocking(move || {
            a.store.update(id, |j| {
                j.callback_error = e2;
                if ok {
                    j.callback = CallbackState::Sent;
                } else if last {
                    j.callback = CallbackState::Failed;
                }
            })
        })
        .await;
        if let Err(e) = recorded {
            // Still pending in the store: the next start looks before posting.
            tracing::error!(job = id, "cannot record the callback: {e}");
            return;
        }
        match res {
            Ok(true) => {
                tracing::info!(
                    job = id,
                    "the registry already had the result (an earlier attempt landed)"
                );
                return;
            }
            Ok(false) => {
                tracing::info!(job = id, "registry told: {}", verdict.as_str());
                return;
            }
            Err(_) => {}
        }
        tracing::warn!(
            job = id,
            attempt,
            "callback failed: {}",
            err.unwrap_or_default()
        );
        if !last {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }
}

/// Whether the registry already carries this job's result. MLflow tags
/// are set, not appended, so writing them again is harmless: only the Hub,
/// where a comment is added, is asked.
async fn already_told(app: &Shared, source: &Source, marker: &str) -> Result<bool> {
    match (source, &app.cfg.huggingface) {
        (Source::Huggingface { repo, git_ref, .. }, Some(h)) => {
            registry::hf_comment_exists(h, repo, git_ref, marker).await
        }
        _ => Ok(false),
    }
}

/// One call to the registry with the job's result.
#[allow(clippy::too_many_arguments)]
async fn tell(
    app: &Shared,
    source: &Source,
    id: u64,
    marker: &str,
    md: &str,
    fingerprint: Option<&str>,
    verdict: Outcome,
    summary: &str,
) -> Result<()> {
    let link = format!("{}/jobs/{id}/report.md", app.cfg.public_url);
    match source {
        Source::Mlflow { name, version, .. } => match &app.cfg.mlflow {
            Some(m) => mlflow_tags(m, name, version, fingerprint, verdict, &link, summary).await,
            None => Err(Error::Usage("no [mlflow] section".into())),
        },
        Source::Huggingface {
            repo,
            git_ref,
            new_sha,
            ..
        } => match &app.cfg.huggingface {
            Some(h) => {
                let short: String = new_sha.chars().take(7).collect();
                let title = format!("probegate: {} for {short}", verdict.as_str().to_uppercase());
                let body = format!("{md}\n\nFull report: {link}\n\n{marker}\n");
                registry::hf_comment(h, repo, git_ref, &title, &body).await
            }
            None => Err(Error::Usage("no [huggingface] section".into())),
        },
    }
}

/// The model-version tag holding the checked candidate's fingerprint.
pub const FINGERPRINT_TAG: &str = "probegate.candidate_fingerprint";

/// `candidate.fingerprint` from a job's report.json: a sha256, hex.
fn candidate_fingerprint(job_dir: &std::path::Path) -> Option<String> {
    let ReportFile::Decided(r) = ReportFile::read(job_dir).ok()? else {
        return None;
    };
    let fp = &r.candidate.fingerprint;
    (fp.len() == 64 && fp.bytes().all(|b| b.is_ascii_hexdigit())).then(|| fp.to_string())
}

/// MLflow: the fingerprint first (or its removal, so an error never sits
/// beside an older check's fingerprint), the verdict last, so a reader that
/// sees the verdict sees the fingerprint it was reached on.
async fn mlflow_tags(
    m: &config::MlflowConfig,
    name: &str,
    version: &str,
    fingerprint: Option<&str>,
    verdict: Outcome,
    link: &str,
    summary: &str,
) -> Result<()> {
    match fingerprint {
        Some(fp) => {
            registry::mlflow_tag(m, name, version, &[(FINGERPRINT_TAG, fp.to_string())]).await?
        }
        None => registry::mlflow_untag(m, name, version, FINGERPRINT_TAG).await?,
    }
    let tags = [
        ("probegate.report", link.to_string()),
        ("probegate.summary", summary.to_string()),
        ("probegate.verdict", verdict.as_str().to_string()),
    ];
    registry::mlflow_tag(m, name, version, &tags).await
}
