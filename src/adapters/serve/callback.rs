//! Telling the registry a job's result: MLflow model-version tags or a Hub
//! comment, retried with exponential backoff, the outcome recorded either way.

use std::time::Duration;

use super::config;
use super::registry;
use super::store::{CallbackState, JobState, Source};
use super::Shared;
use crate::error::{Error, Result};
use crate::gate::report::{Outcome, ReportFile};

/// Tell the registry, with exponential backoff; the result is recorded either way.
pub(super) async fn callback(app: Shared, id: u64) {
    let Ok(Some(job)) = app.store.get(id) else {
        return;
    };
    if job.callback != CallbackState::Pending || !job.done() {
        return;
    }
    let link = format!("{}/jobs/{id}/report.md", app.cfg.public_url);
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
    let mut delay = Duration::from_millis(500);
    let tries = app.cfg.callback_retries.max(1);
    for attempt in 1..=tries {
        let res = match &job.source {
            Source::Mlflow { name, version, .. } => match &app.cfg.mlflow {
                Some(m) => {
                    mlflow_tags(
                        m,
                        name,
                        version,
                        fingerprint.as_deref(),
                        verdict,
                        &link,
                        &summary,
                    )
                    .await
                }
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
                    let title =
                        format!("probegate: {} for {short}", verdict.as_str().to_uppercase());
                    let body =
                        format!("{md}\n\nFull report: {link}\n\n<!-- probegate job {id} -->\n");
                    registry::hf_comment(h, repo, git_ref, &title, &body).await
                }
                None => Err(Error::Usage("no [huggingface] section".into())),
            },
        };
        let ok = res.is_ok();
        let err = res.err().map(|e| e.to_string());
        let last = attempt == tries;
        let _ = app.store.update(id, |j| {
            j.callback_attempts += 1;
            j.callback_error = err.clone();
            if ok {
                j.callback = CallbackState::Sent;
            } else if last {
                j.callback = CallbackState::Failed;
            }
        });
        if ok {
            tracing::info!(job = id, "registry told: {}", verdict.as_str());
            return;
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
