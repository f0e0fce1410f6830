//! `probegate serve`: the registries' adapter on the `check` pipeline.
//!
//! Hugging Face and MLflow webhooks are authenticated, turned into jobs and
//! committed to the embedded queue (store.rs) before the answer (202);
//! workers run `check` with bounded concurrency and report back to the
//! registry with retries. A restart resumes whatever a crash interrupted.

pub mod config;
pub mod registry;
pub mod store;
pub mod webhook;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::{watch, Notify, Semaphore};

use crate::error::{Error, Result};
use crate::gate::policy::Policy;
use crate::gate::report::{Outcome, ReportFile};
use crate::gate::risk::RiskModel;
use crate::gate::{self, GateRequest};
use config::{Config, Registry};
use store::{CallbackState, Job, JobState, Source, Store};
use webhook::{MlflowHeaders, Parsed, Reject};

pub use config::Config as ServeConfig;

struct App {
    cfg: Config,
    store: Store,
    wake: Notify,
}

type Shared = Arc<App>;

impl App {
    fn job_dir(&self, id: u64) -> PathBuf {
        self.cfg.state_dir.join("jobs").join(id.to_string())
    }

    /// Where an MLflow job's candidate is downloaded; removed when the job ends.
    fn mlflow_cache(&self, id: u64) -> PathBuf {
        self.cfg.state_dir.join("mlflow-cache").join(id.to_string())
    }
}

/// Removes a directory when dropped: whichever way a job ends, its
/// downloaded candidate goes (the report keeps the candidate's fingerprint).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if self.0.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.0) {
                tracing::warn!("could not remove {}: {e}", self.0.display());
            }
        }
    }
}

fn error_response(status: u16, msg: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (code, Json(json!({"error": msg}))).into_response()
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        error_response(self.status, &self.msg)
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Enqueue authenticated jobs; 202 when any is new, 200 when all were known.
async fn accept(app: Shared, registry: Registry, parsed: Parsed) -> Response {
    let sources = match parsed {
        Parsed::Ignored(why) => {
            return (StatusCode::OK, Json(json!({"ignored": why}))).into_response();
        }
        Parsed::Jobs(s) => s,
    };
    for s in &sources {
        if app.cfg.target(registry, s.registry_name()).is_none() {
            return error_response(
                422,
                &format!(
                    "no target in {} for `{}`",
                    app.cfg.path.display(),
                    s.registry_name()
                ),
            );
        }
    }
    let a = app.clone();
    // redb commits with fsync: keep it off the async workers.
    let res = tokio::task::spawn_blocking(move || {
        sources
            .into_iter()
            .map(|s| a.store.enqueue(s))
            .collect::<Result<Vec<_>>>()
    })
    .await;
    let jobs = match res {
        Ok(Ok(j)) => j,
        Ok(Err(e)) => return error_response(503, &e.to_string()),
        Err(e) => return error_response(503, &e.to_string()),
    };
    let any_new = jobs.iter().any(|(_, new)| *new);
    if any_new {
        app.wake.notify_waiters();
    }
    let body: Vec<_> = jobs
        .iter()
        .map(|(j, new)| json!({"id": j.id, "state": j.state, "duplicate": !new, "url": format!("/jobs/{}", j.id)}))
        .collect();
    let code = if any_new {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    (code, Json(json!({"jobs": body}))).into_response()
}

async fn hf_webhook(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(hf) = &app.cfg.huggingface else {
        return error_response(404, "this server has no [huggingface] section");
    };
    if let Err(r) = webhook::hf_verify(
        headers.get("x-webhook-secret").map(|v| v.as_bytes()),
        &hf.webhook_secret,
    ) {
        return r.into_response();
    }
    match webhook::hf_parse(&body) {
        Ok(p) => accept(app.clone(), Registry::Huggingface, p).await,
        Err(r) => r.into_response(),
    }
}

async fn mlflow_webhook(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(m) = &app.cfg.mlflow else {
        return error_response(404, "this server has no [mlflow] section");
    };
    let h = MlflowHeaders {
        signature: header(&headers, "x-mlflow-signature"),
        delivery_id: header(&headers, "x-mlflow-delivery-id"),
        timestamp: header(&headers, "x-mlflow-timestamp"),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let id = match webhook::mlflow_verify(&h, &body, &m.webhook_secret, now, m.max_skew_seconds) {
        Ok(id) => id.to_string(),
        Err(r) => return r.into_response(),
    };
    match webhook::mlflow_parse(&body, &id) {
        Ok(p) => accept(app.clone(), Registry::Mlflow, p).await,
        Err(r) => r.into_response(),
    }
}

fn job_json(app: &App, job: &Job) -> serde_json::Value {
    let dir = app.job_dir(job.id);
    let report = std::fs::read_to_string(dir.join("report.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    json!({"job": job, "report": report})
}

async fn get_job(State(app): State<Shared>, UrlPath(id): UrlPath<u64>) -> Response {
    match app.store.get(id) {
        Ok(Some(j)) => Json(job_json(&app, &j)).into_response(),
        Ok(None) => error_response(404, &format!("no job {id}")),
        Err(e) => error_response(503, &e.to_string()),
    }
}

async fn get_report(
    State(app): State<Shared>,
    UrlPath((id, file)): UrlPath<(u64, String)>,
) -> Response {
    let ctype = match file.as_str() {
        "report.md" => "text/markdown; charset=utf-8",
        "report.json" => "application/json",
        "report.html" => "text/html; charset=utf-8",
        _ => return error_response(404, "reports are report.md, report.json and report.html"),
    };
    match std::fs::read(app.job_dir(id).join(&file)) {
        Ok(bytes) => ([(axum::http::header::CONTENT_TYPE, ctype)], bytes).into_response(),
        Err(_) => error_response(404, &format!("job {id} has no {file} yet")),
    }
}

async fn list_jobs(State(app): State<Shared>) -> Response {
    match app.store.list() {
        Ok(j) => Json(json!({"jobs": j})).into_response(),
        Err(e) => error_response(503, &e.to_string()),
    }
}

async fn healthz(State(app): State<Shared>) -> Response {
    match app.store.list() {
        Ok(jobs) => {
            let n = |s: JobState| jobs.iter().filter(|j| j.state == s).count();
            Json(json!({"status": "ok", "queued": n(JobState::Queued), "running": n(JobState::Running),
                        "finished": n(JobState::Finished), "error": n(JobState::Error)}))
            .into_response()
        }
        Err(e) => error_response(503, &e.to_string()),
    }
}

fn router(app: Shared) -> Router {
    let limit = app.cfg.max_body_bytes;
    Router::new()
        .route("/webhooks/huggingface", post(hf_webhook))
        .route("/webhooks/mlflow", post(mlflow_webhook))
        .route("/jobs", get(list_jobs))
        .route("/jobs/{id}", get(get_job))
        .route("/jobs/{id}/{file}", get(get_report))
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(app)
}

/// What a finished job records.
struct Finished {
    state: JobState,
    verdict: Outcome,
    exit_code: i32,
    summary: String,
    error: Option<String>,
    candidate: Option<String>,
}

/// Resolve the candidate from the registry and run the gate. Never panics
/// into the worker: every failure is an `error` outcome with its message.
async fn execute(app: Shared, job: Job) -> Finished {
    let dir = app.job_dir(job.id);
    let fail = |candidate: Option<String>, e: &Error| Finished {
        state: JobState::Error,
        verdict: Outcome::Error,
        exit_code: Outcome::Error.exit_code(),
        summary: format!("ERROR: the gate could not evaluate: {e}"),
        error: Some(e.to_string()),
        candidate,
    };
    let target = match &job.source {
        Source::Huggingface { repo, .. } => app.cfg.target(Registry::Huggingface, repo),
        Source::Mlflow { name, .. } => app.cfg.target(Registry::Mlflow, name),
    };
    let Some(target) = target.cloned() else {
        let e = Error::Usage(format!(
            "no target for `{}` in {}",
            job.source.registry_name(),
            app.cfg.path.display()
        ));
        let _ = gate::report::write_error_report(&dir, &e.to_string());
        return fail(None, &e);
    };
    let _mlflow_cache =
        matches!(job.source, Source::Mlflow { .. }).then(|| RemoveOnDrop(app.mlflow_cache(job.id)));
    let candidate = match &job.source {
        Source::Huggingface { repo, new_sha, .. } => {
            let (a, repo, sha, base) = (
                app.clone(),
                repo.clone(),
                new_sha.clone(),
                target.base.clone(),
            );
            tokio::task::spawn_blocking(move || match &a.cfg.huggingface {
                Some(hf) => {
                    registry::hf_fetch(hf, &repo, &sha, &base, &a.cfg.state_dir.join("hf-cache"))
                }
                None => Err(Error::Usage("no [huggingface] section".into())),
            })
            .await
            .unwrap_or_else(|e| Err(Error::Usage(format!("fetch task failed: {e}"))))
        }
        Source::Mlflow { name, version, .. } => match &app.cfg.mlflow {
            Some(m) => match registry::ArtifactLimits::from_env() {
                Ok(limits) => {
                    let cache = app.mlflow_cache(job.id);
                    registry::mlflow_fetch(m, name, version, &target.base, &cache, &limits).await
                }
                Err(e) => Err(e),
            },
            None => Err(Error::Usage("no [mlflow] section".into())),
        },
    };
    let candidate = match candidate {
        Ok(c) => c,
        Err(e) => {
            let _ = gate::report::write_error_report(&dir, &e.to_string());
            return fail(None, &e);
        }
    };
    let state_dir = app.cfg.state_dir.clone();
    let cand = candidate.clone();
    let res = tokio::task::spawn_blocking(move || -> Result<gate::GateOutput> {
        let req = GateRequest {
            base: target.base.clone(),
            candidate: cand,
            monitors: target.monitors.clone(),
            data: target
                .data
                .clone()
                .map(crate::gate::revalidate::DataSource::Dir)
                .unwrap_or_default(),
            policy: Policy::load(&target.policy)?,
            risk_model: RiskModel::default_model()?,
            full_revalidation: false,
            condition: None,
        };
        gate::run_and_record(
            &req,
            Some(&dir),
            Some(&state_dir.join("history.jsonl")),
            &mut |_: &str, _: usize, _: usize| {},
        )
    })
    .await
    .unwrap_or_else(|e| Err(Error::Usage(format!("check task failed: {e}"))));
    match res {
        Ok(out) => {
            let r = &out.report;
            Finished {
                state: JobState::Finished,
                verdict: r.verdict.into(),
                exit_code: Outcome::from(r.verdict).exit_code(),
                summary: crate::gate::report::verdict_line(r),
                error: None,
                candidate: Some(candidate),
            }
        }
        Err(e) => {
            let _ = gate::report::write_error_report(&app.job_dir(job.id), &e.to_string());
            fail(Some(candidate), &e)
        }
    }
}

/// Tell the registry, with exponential backoff; the result is recorded either way.
async fn callback(app: Shared, id: u64) {
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

async fn worker_loop(app: Shared, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(app.cfg.workers));
    let mut running = tokio::task::JoinSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let a = app.clone();
        let next = tokio::task::spawn_blocking(move || a.store.claim_next()).await;
        match next {
            Ok(Ok(Some(job))) => {
                let a = app.clone();
                running.spawn(async move {
                    let id = job.id;
                    tracing::info!(job = id, attempt = job.attempts, "running {:?}", job.source);
                    let o = execute(a.clone(), job).await;
                    tracing::info!(job = id, "{}", o.summary);
                    let _ = a.store.update(id, |j| {
                        j.state = o.state;
                        j.verdict = Some(o.verdict);
                        j.exit_code = Some(o.exit_code);
                        j.summary = Some(o.summary);
                        j.error = o.error;
                        j.candidate = o.candidate;
                    });
                    drop(permit);
                    callback(a, id).await;
                });
            }
            Ok(Ok(None)) => {
                drop(permit);
                tokio::select! {
                    _ = app.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => {}
                }
            }
            Ok(Err(e)) => {
                drop(permit);
                tracing::error!("job store: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                drop(permit);
                tracing::error!("claim task: {e}");
            }
        }
        while running.try_join_next().is_some() {}
    }
    // Running checks finish; a job cut off by a hard kill is rerun on restart.
    while running.join_next().await.is_some() {}
}

async fn shutdown_signal(tx: watch::Sender<bool>) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: no new deliveries; running checks finish first");
    let _ = tx.send(true);
}

/// Run the server until SIGINT or SIGTERM. `on_listen` gets the bound address.
pub async fn serve(cfg: Config, on_listen: impl FnOnce(std::net::SocketAddr)) -> Result<()> {
    std::fs::create_dir_all(&cfg.state_dir).map_err(|e| Error::io(&cfg.state_dir, e))?;
    let store = Store::open(&cfg.state_dir.join("jobs.redb"))?;
    let recovered = store.recover()?;
    if !recovered.requeued.is_empty() {
        tracing::warn!(
            "resuming jobs interrupted by a crash: {:?}",
            recovered.requeued
        );
    }
    if !recovered.failed.is_empty() {
        tracing::error!(
            "failing jobs the server died in {} times, not retrying them: {:?}",
            store::MAX_ATTEMPTS,
            recovered.failed
        );
    }
    if cfg.mlflow.is_some() {
        // A bad download cap stops the server here, not each job later.
        registry::ArtifactLimits::from_env()?;
    }
    let pending = store.pending_callbacks()?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| Error::Usage(format!("cannot listen on {}: {e}", cfg.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Usage(format!("listener: {e}")))?;
    let app = Arc::new(App {
        cfg,
        store,
        wake: Notify::new(),
    });
    for j in pending {
        tokio::spawn(callback(app.clone(), j.id));
    }
    let (tx, rx) = watch::channel(false);
    let workers = tokio::spawn(worker_loop(app.clone(), rx.clone()));
    on_listen(addr);
    let mut stop = rx;
    axum::serve(listener, router(app))
        .with_graceful_shutdown(async move {
            tokio::spawn(shutdown_signal(tx));
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
        .map_err(|e| Error::Usage(format!("server: {e}")))?;
    let _ = workers.await;
    Ok(())
}
