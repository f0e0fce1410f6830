//! Fake GitHub, Hugging Face Hub and MLflow servers on loopback. Each is a
//! real HTTP server (axum) that answers the endpoints probegate calls, shaped
//! like the real responses, and records every request for the tests to check.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub auth: Option<String>,
    pub body: Value,
}

#[derive(Default)]
pub struct Log(Mutex<Vec<Recorded>>);

impl Log {
    fn push(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) {
        let r = Recorded {
            method: method.to_string(),
            path: uri.path().to_string(),
            query: uri.query().unwrap_or("").to_string(),
            auth: headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            body: serde_json::from_slice(body).unwrap_or(Value::Null),
        };
        self.0.lock().unwrap().push(r);
    }
    pub fn all(&self) -> Vec<Recorded> {
        self.0.lock().unwrap().clone()
    }
    pub fn matching(&self, method: &str, path_prefix: &str) -> Vec<Recorded> {
        self.all()
            .into_iter()
            .filter(|r| r.method == method && r.path.starts_with(path_prefix))
            .collect()
    }
}

/// Serve `router` on an ephemeral loopback port from a background thread.
pub fn spawn(router: Router) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            axum::serve(l, router).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

// ---------------------------------------------------------------- GitHub

/// The account GitHub attributes an installation token's (`ghs_…`, e.g.
/// Actions' GITHUB_TOKEN) comments to: its app's bot.
pub const ACTIONS_BOT: &str = "github-actions[bot]";

/// A pull-request comment the fake holds.
#[derive(Debug, Clone)]
pub struct FakeComment {
    pub id: u64,
    /// The author's login.
    pub author: String,
    pub body: String,
}

#[derive(Default)]
struct Gh {
    log: Log,
    next_id: Mutex<u64>,
    comments: Mutex<HashMap<u64, Vec<FakeComment>>>,
    /// User tokens (PATs) → their account's login; `GET /user` answers for these.
    users: Mutex<HashMap<String, String>>,
}

impl Gh {
    /// Who a request's token acts as, as GitHub decides it: a known user
    /// token's account, or an installation token's bot.
    fn actor(&self, headers: &HeaderMap) -> Option<String> {
        let token = headers
            .get("authorization")?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?;
        match self.users.lock().unwrap().get(token) {
            Some(login) => Some(login.clone()),
            None if token.starts_with("ghs_") => Some(ACTIONS_BOT.into()),
            None => None,
        }
    }
}

fn author(login: &str) -> Value {
    let u = format!("https://api.github.com/users/{login}");
    let kind = if login.ends_with("[bot]") {
        "Bot"
    } else {
        "User"
    };
    json!({"login": login, "id": 1, "node_id": "U_1", "avatar_url": u, "gravatar_id": "",
        "url": u, "html_url": u, "followers_url": u, "following_url": u, "gists_url": u,
        "starred_url": u, "subscriptions_url": u, "organizations_url": u, "repos_url": u,
        "events_url": u, "received_events_url": u, "type": kind, "site_admin": false})
}

fn comment_json(c: &FakeComment) -> Value {
    let id = c.id;
    let u = format!("https://api.github.com/repos/o/r/issues/comments/{id}");
    // GitHub sets performed_via_github_app on a bot's comments.
    let app = c.author.ends_with("[bot]").then(actions_app);
    json!({"id": id, "node_id": format!("IC_{id}"), "url": u, "html_url": u, "body": c.body,
        "user": author(&c.author), "performed_via_github_app": app,
        "created_at": "2026-11-27T10:00:00Z", "updated_at": "2026-11-27T10:00:00Z"})
}

/// The app behind Actions' GITHUB_TOKEN, as check runs carry it.
fn actions_app() -> Value {
    json!({"id": 15368, "slug": "github-actions", "node_id": "MDM6QXBwMTUzNjg=",
        "name": "GitHub Actions", "owner": author("github"),
        "html_url": "https://github.com/apps/github-actions"})
}

fn check_run_json(id: u64, sha: &str, name: &str, conclusion: Option<&str>) -> Value {
    json!({"id": id, "node_id": format!("CR_{id}"), "details_url": null, "head_sha": sha,
        "url": format!("https://api.github.com/repos/o/r/check-runs/{id}"), "html_url": null,
        "conclusion": conclusion, "started_at": "2026-11-27T10:00:00Z", "completed_at": null,
        "name": name, "pull_requests": [], "app": actions_app(),
        "output": {"title": null, "summary": null, "text": null, "annotations_count": 0,
                   "annotations_url": "https://api.github.com/x"}})
}

async fn gh_any(
    State(s): State<Arc<Gh>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    s.log.push(&method, &uri, &headers, &body);
    let b: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let parts: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    let next = || {
        let mut n = s.next_id.lock().unwrap();
        *n += 1;
        *n
    };
    match (method.as_str(), parts.as_slice()) {
        ("POST", ["repos", _, _, "check-runs"]) => {
            let id = next();
            let sha = b["head_sha"].as_str().unwrap_or("");
            let name = b["name"].as_str().unwrap_or("");
            (
                StatusCode::CREATED,
                Json(check_run_json(id, sha, name, None)),
            )
                .into_response()
        }
        ("PATCH", ["repos", _, _, "check-runs", id]) => {
            let id: u64 = id.parse().unwrap_or(0);
            Json(check_run_json(
                id,
                "sha",
                "probegate",
                b["conclusion"].as_str(),
            ))
            .into_response()
        }
        // GitHub answers an installation token 403 here: it is no user.
        ("GET", ["user"]) => match s.actor(&headers) {
            Some(login) if !login.ends_with("[bot]") => Json(author(&login)).into_response(),
            Some(_) => (
                StatusCode::FORBIDDEN,
                Json(json!({"message": "Resource not accessible by integration",
                    "documentation_url": "https://docs.github.com/rest/users/users#get-the-authenticated-user"})),
            )
                .into_response(),
            None => (
                StatusCode::UNAUTHORIZED,
                Json(json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"})),
            )
                .into_response(),
        },
        ("GET", ["repos", _, _, "issues", n, "comments"]) => {
            let n: u64 = n.parse().unwrap_or(0);
            let list: Vec<Value> = s
                .comments
                .lock()
                .unwrap()
                .get(&n)
                .map(|v| v.iter().map(comment_json).collect())
                .unwrap_or_default();
            Json(Value::Array(list)).into_response()
        }
        ("POST", ["repos", _, _, "issues", n, "comments"]) => {
            let n: u64 = n.parse().unwrap_or(0);
            let c = FakeComment {
                id: next(),
                author: s.actor(&headers).unwrap_or_else(|| "ghost".into()),
                body: b["body"].as_str().unwrap_or("").to_string(),
            };
            s.comments
                .lock()
                .unwrap()
                .entry(n)
                .or_default()
                .push(c.clone());
            (StatusCode::CREATED, Json(comment_json(&c))).into_response()
        }
        // Like GitHub for a token with write access: anyone's comment may be edited.
        ("PATCH", ["repos", _, _, "issues", "comments", id]) => {
            let id: u64 = id.parse().unwrap_or(0);
            let body = b["body"].as_str().unwrap_or("").to_string();
            let mut edited = None;
            for v in s.comments.lock().unwrap().values_mut() {
                for c in v.iter_mut().filter(|c| c.id == id) {
                    c.body = body.clone();
                    edited = Some(c.clone());
                }
            }
            match edited {
                Some(c) => Json(comment_json(&c)).into_response(),
                None => (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"})))
                    .into_response(),
            }
        }
        _ => (
            StatusCode::NOT_FOUND,
            Json(json!({"message": "Not Found", "documentation_url": "https://docs.github.com"})),
        )
            .into_response(),
    }
}

pub struct FakeGithub {
    pub addr: SocketAddr,
    state: Arc<Gh>,
}

impl FakeGithub {
    pub fn start() -> Self {
        let state = Arc::new(Gh::default());
        let addr = spawn(
            Router::new()
                .fallback(any(gh_any))
                .with_state(state.clone()),
        );
        FakeGithub { addr, state }
    }
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn log(&self) -> Vec<Recorded> {
        self.state.log.all()
    }
    /// The PR's comments as (id, body).
    pub fn comments(&self, pr: u64) -> Vec<(u64, String)> {
        self.comments_by(pr)
            .into_iter()
            .map(|c| (c.id, c.body))
            .collect()
    }
    /// The PR's comments with their authors.
    pub fn comments_by(&self, pr: u64) -> Vec<FakeComment> {
        self.state
            .comments
            .lock()
            .unwrap()
            .get(&pr)
            .cloned()
            .unwrap_or_default()
    }
    /// A comment someone else wrote (e.g. one that copies probegate's marker); its id.
    pub fn add_comment(&self, pr: u64, author: &str, body: &str) -> u64 {
        let id = {
            let mut n = self.state.next_id.lock().unwrap();
            *n += 1;
            *n
        };
        self.state
            .comments
            .lock()
            .unwrap()
            .entry(pr)
            .or_default()
            .push(FakeComment {
                id,
                author: author.into(),
                body: body.into(),
            });
        id
    }
    /// A user token (a PAT) acting as `login`: `GET /user` answers with it.
    pub fn add_user_token(&self, token: &str, login: &str) {
        self.state
            .users
            .lock()
            .unwrap()
            .insert(token.into(), login.into());
    }
}

// ---------------------------------------------------------------- Hugging Face

pub struct HfRepo {
    pub sha: String,
    /// rfilename → local file served for it.
    pub files: Vec<(String, PathBuf)>,
}

#[derive(Default)]
struct Hf {
    log: Log,
    repos: Mutex<HashMap<String, HfRepo>>,
    /// Gated repositories → the one token whose account accepted the terms.
    gated: Mutex<HashMap<String, String>>,
}

impl Hf {
    /// The Hub's answer for a gated repository: 401 with no token, 403 for a
    /// token whose account has not accepted the terms.
    fn refuse(&self, repo: &str, headers: &HeaderMap) -> Option<Response> {
        let gated = self.gated.lock().unwrap();
        let want = gated.get(repo)?;
        let given = headers.get("authorization").and_then(|v| v.to_str().ok());
        match given {
            None => {
                Some((StatusCode::UNAUTHORIZED, "Access to model is restricted").into_response())
            }
            Some(g) if g == format!("Bearer {want}") => None,
            Some(_) => Some(
                (
                    StatusCode::FORBIDDEN,
                    "Access to model is restricted and you are not in the authorized list",
                )
                    .into_response(),
            ),
        }
    }
}

async fn hf_revision(
    State(s): State<Arc<Hf>>,
    UrlPath((org, name, rev)): UrlPath<(String, String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    s.log.push(&method, &uri, &headers, b"");
    if let Some(no) = s.refuse(&format!("{org}/{name}"), &headers) {
        return no;
    }
    let repos = s.repos.lock().unwrap();
    match repos.get(&format!("{org}/{name}")) {
        Some(r) if r.sha == rev => Json(json!({
            "id": format!("{org}/{name}"), "sha": r.sha,
            "siblings": r.files.iter().map(|(f, _)| json!({"rfilename": f})).collect::<Vec<_>>()
        }))
        .into_response(),
        _ => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "Revision Not Found"})),
        )
            .into_response(),
    }
}

async fn hf_resolve(
    State(s): State<Arc<Hf>>,
    UrlPath((org, name, rev, file)): UrlPath<(String, String, String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    s.log.push(&method, &uri, &headers, b"");
    if let Some(no) = s.refuse(&format!("{org}/{name}"), &headers) {
        return no;
    }
    let path = {
        let repos = s.repos.lock().unwrap();
        match repos.get(&format!("{org}/{name}")) {
            Some(r) if r.sha == rev => r
                .files
                .iter()
                .find(|(f, _)| *f == file)
                .map(|x| (x.1.clone(), r.sha.clone())),
            _ => None,
        }
    };
    let Some((path, sha)) = path else {
        return (StatusCode::NOT_FOUND, "Entry not found").into_response();
    };
    let data = std::fs::read(&path).unwrap();
    let size = data.len();
    let etag = format!(
        "\"{:x}-{size}\"",
        data.iter().map(|&b| b as u64).sum::<u64>()
    );
    let (start, end) = match headers.get("range").and_then(|v| v.to_str().ok()) {
        Some(r) => {
            let r = r.trim_start_matches("bytes=");
            let (a, b) = r.split_once('-').unwrap();
            let a: usize = a.parse().unwrap_or(0);
            let b: usize = if b.is_empty() {
                size - 1
            } else {
                b.parse().unwrap()
            };
            (a, b.min(size - 1))
        }
        None => (0, size - 1),
    };
    let body = data[start..=end].to_vec();
    (
        StatusCode::PARTIAL_CONTENT,
        [
            ("x-repo-commit", sha),
            ("etag", etag),
            ("content-range", format!("bytes {start}-{end}/{size}")),
        ],
        body,
    )
        .into_response()
}

async fn hf_post(
    State(s): State<Arc<Hf>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    s.log.push(&method, &uri, &headers, &body);
    Json(json!({"num": 9, "url": "https://huggingface.co/x/discussions/9"})).into_response()
}

pub struct FakeHub {
    pub addr: SocketAddr,
    state: Arc<Hf>,
}

impl FakeHub {
    pub fn start() -> Self {
        let state = Arc::new(Hf::default());
        let r = Router::new()
            .route("/api/models/{org}/{name}/revision/{rev}", get(hf_revision))
            .route("/{org}/{name}/resolve/{rev}/{file}", get(hf_resolve))
            .route("/api/models/{org}/{name}/discussions", post(hf_post))
            .route(
                "/api/models/{org}/{name}/discussions/{num}/comment",
                post(hf_post),
            )
            .with_state(state.clone());
        FakeHub {
            addr: spawn(r),
            state,
        }
    }
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn add_repo(&self, name: &str, repo: HfRepo) {
        self.state.repos.lock().unwrap().insert(name.into(), repo);
    }
    /// Gate a repository: only `token` (whose account accepted the terms) may read it.
    pub fn gate(&self, name: &str, token: &str) {
        self.state
            .gated
            .lock()
            .unwrap()
            .insert(name.into(), token.into());
    }
    pub fn log(&self) -> &Log {
        &self.state.log
    }
}

// ---------------------------------------------------------------- MLflow

#[derive(Default)]
struct Ml {
    log: Log,
    /// (name, version) → source
    versions: Mutex<HashMap<(String, String), String>>,
}

async fn ml_get(
    State(s): State<Arc<Ml>>,
    Query(q): Query<HashMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    s.log.push(&method, &uri, &headers, b"");
    let key = (
        q.get("name").cloned().unwrap_or_default(),
        q.get("version").cloned().unwrap_or_default(),
    );
    match s.versions.lock().unwrap().get(&key) {
        Some(src) => Json(json!({"model_version": {
            "name": key.0, "version": key.1, "source": src, "status": "READY",
            "creation_timestamp": 1764237600000u64, "run_id": "r1"}}))
        .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no such version"})),
        )
            .into_response(),
    }
}

async fn ml_tag(
    State(s): State<Arc<Ml>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    s.log.push(&method, &uri, &headers, &body);
    Json(json!({})).into_response()
}

pub struct FakeMlflow {
    pub addr: SocketAddr,
    state: Arc<Ml>,
}

impl FakeMlflow {
    pub fn start() -> Self {
        let state = Arc::new(Ml::default());
        let r = Router::new()
            .route("/api/2.0/mlflow/model-versions/get", get(ml_get))
            .route("/api/2.0/mlflow/model-versions/set-tag", post(ml_tag))
            .with_state(state.clone());
        FakeMlflow {
            addr: spawn(r),
            state,
        }
    }
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn add_version(&self, name: &str, version: &str, source: &str) {
        self.state
            .versions
            .lock()
            .unwrap()
            .insert((name.into(), version.into()), source.into());
    }
    pub fn log(&self) -> &Log {
        &self.state.log
    }
}
