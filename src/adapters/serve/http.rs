//! The HTTP side of `probegate serve`: the two webhooks, which authenticate
//! and enqueue, and the read endpoints for jobs and their reports.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::config::{Reads, Registry};
use super::store::{Admitted, Job, JobState};
use super::webhook::{self, MlflowHeaders, Parsed, Reject};
use super::{blocking, App, Shared};
use crate::error::Result;

pub(super) fn error_response(status: u16, msg: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (code, Json(json!({"error": msg}))).into_response()
}

/// [`error_response`] with one more header (Retry-After, Connection,
/// WWW-Authenticate: what tells the sender how to go on).
fn error_with_header(
    status: u16,
    msg: &str,
    name: axum::http::HeaderName,
    value: &'static str,
) -> Response {
    let mut r = error_response(status, msg);
    r.headers_mut()
        .insert(name, axum::http::HeaderValue::from_static(value));
    r
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
    let max = usize::try_from(app.cfg.limits.max_queued_jobs).unwrap_or(usize::MAX);
    let res = blocking(move || {
        sources
            .into_iter()
            .map(|s| a.store.admit(s, max))
            .collect::<Result<Vec<_>>>()
    })
    .await;
    let admitted = match res {
        Ok(j) => j,
        Err(e) => return error_response(503, &e.to_string()),
    };
    let mut jobs = Vec::new();
    for a in admitted {
        match a {
            Admitted::New { job, superseded } => {
                if !superseded.is_empty() {
                    tracing::info!(job = job.id, "supersedes queued jobs {superseded:?}");
                }
                jobs.push((job, true));
            }
            Admitted::Known(job) => jobs.push((job, false)),
            // Whatever was admitted before stays; the retry finds it known.
            Admitted::Full => {
                return error_with_header(
                    503,
                    &format!("the queue is full ({max} jobs waiting); retry later"),
                    axum::http::header::RETRY_AFTER,
                    "60",
                );
            }
        }
    }
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

/// A refused body up to this size is read and discarded before the 413 goes
/// out, within [`DRAIN_DEADLINE`]: a server that closes on unread bytes
/// resets the connection, and a sender still writing then sees a broken pipe
/// instead of the 413 (and retries what can never succeed). Larger bodies
/// are not worth the bandwidth; their senders may see the reset.
const DRAIN_CAP: u64 = 1024 * 1024;
const DRAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

/// The body, once the headers passed. Nothing past `limit` is kept: a
/// Content-Length over it is refused up front, a body that grows past it
/// while read; either is discarded up to [`DRAIN_CAP`] so the refusal
/// arrives.
async fn read_body(req: Request, limit: usize) -> std::result::Result<Bytes, Response> {
    use http_body_util::BodyExt;
    let too_big = || {
        error_with_header(
            413,
            &format!("the body is over max_body_bytes ({limit} bytes)"),
            axum::http::header::CONNECTION,
            "close",
        )
    };
    let declared = header(req.headers(), "content-length").and_then(|v| v.parse::<u64>().ok());
    let mut body = req.into_body();
    let mut kept: Vec<u8> = Vec::new();
    let mut seen: u64 = 0;
    let over = declared.is_some_and(|n| n > limit as u64);
    if !over {
        loop {
            match body.frame().await {
                None => return Ok(Bytes::from(kept)),
                Some(Err(_)) => return Err(error_response(400, "the body could not be read")),
                Some(Ok(f)) => {
                    let Ok(data) = f.into_data() else { continue };
                    seen += data.len() as u64;
                    if seen > limit as u64 {
                        break;
                    }
                    kept.extend_from_slice(&data);
                }
            }
        }
    }
    drop(kept);
    if declared.unwrap_or(0) <= DRAIN_CAP {
        let drain = async {
            while seen <= DRAIN_CAP {
                match body.frame().await {
                    Some(Ok(f)) => {
                        seen += f.data_ref().map_or(0, |d| d.len() as u64);
                    }
                    _ => break,
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_DEADLINE, drain).await;
    }
    Err(too_big())
}

/// Authenticated from the headers alone (the Hub sends its secret), so a
/// stranger's body is never read.
async fn hf_webhook(State(app): State<Shared>, req: Request) -> Response {
    let Some(hf) = &app.cfg.huggingface else {
        return error_response(404, "this server has no [huggingface] section");
    };
    if let Err(r) = webhook::hf_verify(
        req.headers().get("x-webhook-secret").map(|v| v.as_bytes()),
        &hf.webhook_secret,
    ) {
        return r.into_response();
    }
    let body = match read_body(req, app.cfg.max_body_bytes).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match webhook::hf_parse_refs(&body, &hf.refs) {
        Ok(p) => accept(app.clone(), Registry::Huggingface, p).await,
        Err(r) => r.into_response(),
    }
}

/// The headers' shape and window are checked before the body is read; the
/// signature over it after.
async fn mlflow_webhook(State(app): State<Shared>, req: Request) -> Response {
    let Some(m) = &app.cfg.mlflow else {
        return error_response(404, "this server has no [mlflow] section");
    };
    let headers = req.headers().clone();
    let h = MlflowHeaders {
        signature: header(&headers, "x-mlflow-signature"),
        delivery_id: header(&headers, "x-mlflow-delivery-id"),
        timestamp: header(&headers, "x-mlflow-timestamp"),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if let Err(r) = webhook::mlflow_precheck(&h, now, m.max_skew_seconds) {
        return r.into_response();
    }
    let body = match read_body(req, app.cfg.max_body_bytes).await {
        Ok(b) => b,
        Err(r) => return r,
    };
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

/// Reads need the configured token (constant-time), unless the file made
/// them public: job ids are sequential, so knowing one proves nothing.
fn authorize(app: &App, headers: &HeaderMap) -> Option<Response> {
    let Reads::Token(token) = &app.cfg.reads else {
        return None;
    };
    let given = header(headers, "authorization").and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if webhook::secret_matches(g.trim().as_bytes(), token.as_bytes()) => None,
        Some(_) => Some(error_response(403, "wrong read token")),
        None => Some(error_with_header(
            401,
            "reads need Authorization: Bearer <read token>",
            axum::http::header::WWW_AUTHENTICATE,
            "Bearer",
        )),
    }
}

async fn get_job(
    State(app): State<Shared>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<u64>,
) -> Response {
    if let Some(no) = authorize(&app, &headers) {
        return no;
    }
    let a = app.clone();
    match blocking(move || a.store.get(id)).await {
        Ok(Some(j)) => Json(job_json(&app, &j)).into_response(),
        Ok(None) => error_response(404, &format!("no job {id}")),
        Err(e) => error_response(503, &e.to_string()),
    }
}

async fn get_report(
    State(app): State<Shared>,
    headers: HeaderMap,
    UrlPath((id, file)): UrlPath<(u64, String)>,
) -> Response {
    if let Some(no) = authorize(&app, &headers) {
        return no;
    }
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

async fn list_jobs(State(app): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(no) = authorize(&app, &headers) {
        return no;
    }
    match blocking(move || app.store.list()).await {
        Ok(j) => Json(json!({"jobs": j})).into_response(),
        Err(e) => error_response(503, &e.to_string()),
    }
}

async fn healthz(State(app): State<Shared>) -> Response {
    match blocking(move || app.store.list()).await {
        Ok(jobs) => {
            let n = |s: JobState| jobs.iter().filter(|j| j.state == s).count();
            Json(json!({"status": "ok", "queued": n(JobState::Queued), "running": n(JobState::Running),
                        "finished": n(JobState::Finished), "error": n(JobState::Error),
                        "superseded": n(JobState::Superseded)}))
            .into_response()
        }
        Err(e) => error_response(503, &e.to_string()),
    }
}

pub(super) fn router(app: Shared) -> Router {
    let timeout = std::time::Duration::from_secs(app.cfg.http.request_timeout_secs);
    Router::new()
        .route("/webhooks/huggingface", post(hf_webhook))
        .route("/webhooks/mlflow", post(mlflow_webhook))
        .route("/jobs", get(list_jobs))
        .route("/jobs/{id}", get(get_job))
        .route("/jobs/{id}/{file}", get(get_report))
        .route("/healthz", get(healthz))
        // Bodies are read, bounded, by the handlers after authentication.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| deadline(timeout, req, next),
        ))
        .with_state(app)
}

/// Every request, its body read included, answered within `timeout` (408).
async fn deadline(timeout: std::time::Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => error_response(
            408,
            &format!("the request took longer than {} s", timeout.as_secs()),
        ),
    }
}
