//! `probegate serve`'s configuration file: where it listens, where jobs live,
//! the registries it answers, and which base, monitors and policy gate each
//! registered model or repository. Secrets are named by environment variable,
//! never written in the file.

mod raw;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::error::{Error, Result};
use crate::util::line_of;

use super::limits::{parse_http, parse_limits, within};
pub use super::limits::{Http, Limits};
use raw::Raw;

/// A parsed configuration (docs/serve.md lists every field). Relative paths
/// are already resolved against the file's directory, secrets already read.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from.
    pub path: PathBuf,
    pub listen: SocketAddr,
    /// The job database, job reports, Hub download cache and the gate's history.
    pub state_dir: PathBuf,
    /// Checks run at once, 1–64 (default 1).
    pub workers: usize,
    /// Webhook bodies above this get 413; 1 KiB to 64 MiB (default 256 KiB).
    pub max_body_bytes: usize,
    /// Base of the links written back to registries (`{public_url}/jobs/{id}/report.md`).
    pub public_url: String,
    /// `None`: no `[huggingface]` section, its webhook answers 404.
    pub huggingface: Option<HfConfig>,
    /// `None`: no `[mlflow]` section, its webhook answers 404.
    pub mlflow: Option<MlflowConfig>,
    pub targets: Vec<Target>,
    /// Attempts per registry callback, with exponential backoff (default 5).
    pub callback_retries: u32,
    /// Who may read `/jobs` and the reports.
    pub reads: Reads,
    /// What one job may cost (`[limits]`).
    pub limits: Limits,
    /// The listener's and each request's bounds (`[http]`).
    pub http: Http,
    /// Where the job queue lives (`[queue]`).
    pub queue: Queue,
}

/// The job queue: this server's own redb file, or a PostgreSQL database
/// several servers share.
#[derive(Clone, PartialEq, Eq)]
pub enum Queue {
    /// No `[queue]` section: `state_dir/jobs.redb`.
    Redb,
    Postgres {
        /// `postgres://…`, from `url` or the variable `url_env` names.
        url: String,
        /// Which of the two it came from, for errors (`queue.url`, `queue.url_env`).
        field: &'static str,
        /// How long a claimed job stays a server's without renewal.
        lease_secs: u64,
    },
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Queue::Redb => f.write_str("Redb"),
            Queue::Postgres {
                url, lease_secs, ..
            } => f
                .debug_struct("Postgres")
                .field("url", &redact_uri(url))
                .field("lease_secs", lease_secs)
                .finish(),
        }
    }
}

/// Access to `GET /jobs`, `/jobs/{id}` and the reports: they name private
/// repositories, server paths and whole reports, on the listener the Hub
/// must reach, so a file chooses one explicitly.
#[derive(Clone, PartialEq, Eq)]
pub enum Reads {
    /// `Authorization: Bearer <token>`, from the variable `read_token_env`
    /// names (at least [`MIN_SECRET_LEN`] characters).
    Token(String),
    /// `public_reads = true`: anyone who can reach the server.
    Public,
}

impl std::fmt::Debug for Reads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reads::Token(_) => f.write_str("Token(<redacted>)"),
            Reads::Public => f.write_str("Public"),
        }
    }
}

/// The shortest read token accepted: guessing one must be out of reach.
pub const MIN_SECRET_LEN: usize = 16;

#[derive(Clone)]
pub struct HfConfig {
    /// The Hub, without a trailing slash (default `https://huggingface.co`).
    pub endpoint: String,
    /// The value of the variable `webhook_secret_env` names, never empty.
    pub webhook_secret: String,
    /// The value of the variable `token_env` names, if the file names one.
    pub token: Option<String>,
    /// Refs whose pushes become jobs, globs with `*` (default: every branch
    /// and pull request, `refs/heads/*` and `refs/pr/*`).
    pub refs: Vec<String>,
}

#[derive(Clone)]
pub struct MlflowConfig {
    /// The tracking server, without a trailing slash.
    pub tracking_uri: String,
    /// The HMAC key, from the variable `webhook_secret_env` names; never empty.
    pub webhook_secret: String,
    /// A bearer token, from the variable `token_env` names, if the file names one.
    pub token: Option<String>,
    /// Largest accepted difference between X-MLflow-Timestamp and now (default 300).
    pub max_skew_seconds: u64,
    /// Directories a model version's local source (`file://`, an absolute
    /// path) may lie in, after links and `..` are resolved; relative to this
    /// file. Empty (the default): local sources are not read, only the
    /// tracking server's artifact proxy, so a registered version cannot point
    /// the server at any file it can read.
    pub artifact_roots: Vec<PathBuf>,
}

const REDACTED: &str = "<redacted>";

// Secrets never reach a log line or an error through Debug.
impl std::fmt::Debug for HfConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        debug_registry(f, "HfConfig", ("endpoint", &self.endpoint), &self.token)
            .field("refs", &self.refs)
            .finish()
    }
}

impl std::fmt::Debug for MlflowConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        debug_registry(
            f,
            "MlflowConfig",
            ("tracking_uri", &self.tracking_uri),
            &self.token,
        )
        .field("max_skew_seconds", &self.max_skew_seconds)
        .field("artifact_roots", &self.artifact_roots)
        .finish()
    }
}

/// The fields every registry section has, redacted in one place: the
/// registry's URI without credentials, the webhook secret, the token.
fn debug_registry<'a, 'b>(
    f: &'a mut std::fmt::Formatter<'b>,
    name: &str,
    (uri_field, uri): (&str, &str),
    token: &Option<String>,
) -> std::fmt::DebugStruct<'a, 'b> {
    let mut d = f.debug_struct(name);
    d.field(uri_field, &redact_uri(uri))
        .field("webhook_secret", &REDACTED)
        .field("token", &token.as_ref().map(|_| REDACTED));
    d
}

/// `scheme://user:pass@host/…` as `scheme://***@host/…`: credentials in a
/// URI are a secret too.
pub fn redact_uri(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => uri.to_string(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Registry {
    Huggingface,
    Mlflow,
}

/// One registered model (MLflow) or repository (Hugging Face) and how to gate it.
#[derive(Debug, Clone)]
pub struct Target {
    pub registry: Registry,
    /// The Hub repository (`org/name`) or the registered model's name.
    pub name: String,
    /// The base model reference candidates are checked against.
    pub base: String,
    /// The monitor suite's directory.
    pub monitors: PathBuf,
    /// The policy file; the built-in `default` when the target names none.
    pub policy: PathBuf,
    /// `None`: the suite's own data, then the data built into probegate.
    pub data: Option<PathBuf>,
}

/// A `postgres://` URL the client accepts; the message never quotes it
/// (it may hold a password).
fn check_queue_url(url: &str) -> std::result::Result<(), String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("must be a PostgreSQL URL, `postgres://user@host:port/database`".into());
    }
    url.parse::<postgres::Config>()
        .map(|_| ())
        .map_err(|e| format!("not a valid PostgreSQL URL: {e}"))
}

fn queue_password(url: &str) -> Option<String> {
    let c = url.parse::<postgres::Config>().ok()?;
    let p = c.get_password()?;
    Some(String::from_utf8_lossy(p).into_owned()).filter(|p| !p.is_empty())
}

/// `[huggingface] refs`: non-empty globs, each naming a branch or a pull request.
fn parse_refs(
    raw: &Option<Spanned<Vec<String>>>,
    at: &dyn Fn(usize, String) -> Error,
) -> Result<Vec<String>> {
    let Some(r) = raw else {
        return Ok(super::webhook::DEFAULT_REFS
            .iter()
            .map(|s| s.to_string())
            .collect());
    };
    let refs = r.get_ref();
    let bad = refs
        .iter()
        .find(|g| !(g.starts_with("refs/heads/") || g.starts_with("refs/pr/")));
    if refs.is_empty() || bad.is_some() {
        return Err(at(
            r.span().start,
            format!(
                "field `huggingface.refs`: list globs under refs/heads/ or refs/pr/ (e.g. \"refs/heads/main\", \"refs/pr/*\"){}",
                bad.map(|b| format!(", found `{b}`")).unwrap_or_default()
            ),
        ));
    }
    Ok(refs.clone())
}

impl Config {
    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::assets::read_config(path)?;
        Self::parse(&text, path, &|k| std::env::var(k).ok())
    }

    /// `env` looks secrets up; tests pass their own.
    pub fn parse(text: &str, path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let at = |offset: usize, msg: String| Error::input(path, line_of(text, offset), msg);
        let raw: Raw = toml::from_str(text).map_err(|e| {
            at(
                e.span().map(|s| s.start).unwrap_or(0),
                e.message().trim().to_string(),
            )
        })?;
        let listen: SocketAddr = raw.listen.get_ref().parse().map_err(|e| {
            at(
                raw.listen.span().start,
                format!(
                    "field `listen`: `{}` is not an address: {e}",
                    raw.listen.get_ref()
                ),
            )
        })?;
        let workers = *raw.workers.get_ref();
        if !(1..=64).contains(&workers) {
            return Err(at(
                raw.workers.span().start,
                format!("field `workers`: must be between 1 and 64, found {workers}"),
            ));
        }
        let body = *raw.max_body_bytes.get_ref();
        if !(1024..=64 * 1024 * 1024).contains(&body) {
            return Err(at(
                raw.max_body_bytes.span().start,
                format!("field `max_body_bytes`: must be between 1 KiB and 64 MiB, found {body}"),
            ));
        }
        let limits = parse_limits(&raw.limits, workers as u64, &at)?;
        let http = parse_http(&raw.http, &at)?;
        // A webhook endpoint without its secret would accept anyone: refuse to start.
        let secret = |field: &str, name: &Spanned<String>| -> Result<String> {
            match env(name.get_ref()) {
                Some(v) if !v.is_empty() => Ok(v),
                _ => Err(at(
                    name.span().start,
                    format!(
                        "field `{field}`: environment variable `{}` is not set or empty",
                        name.get_ref()
                    ),
                )),
            }
        };
        let optional = |field: &str, name: &Option<Spanned<String>>| -> Result<Option<String>> {
            name.as_ref().map(|n| secret(field, n)).transpose()
        };
        // A short webhook secret or read token can be guessed, and a guess
        // is a job or a private report; `what` names it in the error.
        let long = |field: &str, name: &Spanned<String>, what: &str| -> Result<String> {
            let v = secret(field, name)?;
            if v.chars().count() < MIN_SECRET_LEN {
                return Err(at(
                    name.span().start,
                    format!(
                        "field `{field}`: the {what} in `{}` is shorter than {MIN_SECRET_LEN} characters",
                        name.get_ref()
                    ),
                ));
            }
            Ok(v)
        };
        let long_secret = |field: &str, name: &Spanned<String>| long(field, name, "secret");
        let huggingface = match &raw.huggingface {
            Some(h) => Some(HfConfig {
                endpoint: h.endpoint.trim_end_matches('/').to_string(),
                webhook_secret: long_secret(
                    "huggingface.webhook_secret_env",
                    &h.webhook_secret_env,
                )?,
                token: optional("huggingface.token_env", &h.token_env)?,
                refs: parse_refs(&h.refs, &at)?,
            }),
            None => None,
        };
        // Relative paths in the file are relative to the file, so a config
        // works from whatever directory the server starts in.
        let dir = path.parent().unwrap_or(Path::new("."));
        let rel = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                dir.join(p)
            }
        };
        let mlflow = match &raw.mlflow {
            Some(m) => Some(MlflowConfig {
                tracking_uri: m.tracking_uri.trim_end_matches('/').to_string(),
                webhook_secret: long_secret("mlflow.webhook_secret_env", &m.webhook_secret_env)?,
                token: optional("mlflow.token_env", &m.token_env)?,
                // A wider window replays a captured delivery for longer.
                max_skew_seconds: within(
                    "mlflow.max_skew_seconds",
                    &m.max_skew_seconds,
                    1..=3600,
                    &at,
                )?,
                artifact_roots: m.artifact_roots.iter().map(|p| rel(p)).collect(),
            }),
            None => None,
        };
        let reads = match (&raw.read_token_env, raw.public_reads) {
            (Some(n), false) => Reads::Token(long("read_token_env", n, "token")?),
            (None, true) => Reads::Public,
            (Some(n), true) => {
                return Err(at(
                    n.span().start,
                    "`read_token_env` and `public_reads = true` contradict each other: choose one".into(),
                ))
            }
            (None, false) => {
                return Err(at(
                    0,
                    "who may read /jobs and the reports is not set: add `read_token_env = \"VAR\"` (reads then need `Authorization: Bearer <token>`) or `public_reads = true`".into(),
                ))
            }
        };
        let queue = match &raw.queue {
            None => Queue::Redb,
            Some(q) => {
                let (field, url, span) = match (&q.url, &q.url_env) {
                    (Some(u), None) => ("queue.url", u.get_ref().clone(), u.span().start),
                    (None, Some(n)) => ("queue.url_env", secret("queue.url_env", n)?, n.span().start),
                    _ => {
                        return Err(at(
                            text.find("[queue]").unwrap_or(0),
                            "section `[queue]`: set one of `url` and `url_env` (a variable holding the URL, so its password stays out of this file)".into(),
                        ))
                    }
                };
                check_queue_url(&url).map_err(|m| at(span, format!("field `{field}`: {m}")))?;
                Queue::Postgres {
                    url,
                    field,
                    // Renewed every third of it: shorter is a busier database.
                    lease_secs: within("queue.lease_secs", &q.lease_secs, 2..=3600, &at)?,
                }
            }
        };
        let mut targets = Vec::new();
        for t in raw.targets {
            let section = match t.registry {
                Registry::Huggingface => huggingface.is_some(),
                Registry::Mlflow => mlflow.is_some(),
            };
            if !section {
                let off = text.find(&format!("\"{}\"", t.name)).unwrap_or(0);
                return Err(at(
                    off,
                    format!(
                        "target `{}` uses registry `{:?}`, which has no section in this file",
                        t.name, t.registry
                    ),
                ));
            }
            // A base that names a local file or directory is relative to the file too.
            let base = if rel(Path::new(&t.base)).exists() {
                rel(Path::new(&t.base)).display().to_string()
            } else {
                t.base
            };
            targets.push(Target {
                registry: t.registry,
                name: t.name,
                base,
                monitors: rel(&t.monitors),
                policy: match &t.policy {
                    Some(p) => crate::gate::policy::Policy::resolve(p, path.parent()),
                    None => PathBuf::from(crate::assets::DEFAULT_POLICY),
                },
                data: t.data.as_deref().map(rel),
            });
        }
        Ok(Config {
            path: path.to_path_buf(),
            listen,
            state_dir: rel(&raw.state_dir),
            workers: workers as usize,
            max_body_bytes: body as usize,
            public_url: raw
                .public_url
                .unwrap_or_else(|| format!("http://{listen}"))
                .trim_end_matches('/')
                .to_string(),
            huggingface,
            mlflow,
            targets,
            callback_retries: within("callback_retries", &raw.callback_retries, 1..=20, &at)?
                as u32,
            reads,
            limits,
            http,
            queue,
        })
    }

    /// `text` with every secret this configuration holds replaced, and
    /// URIs' credentials removed: what errors, `/jobs` and registry tags
    /// may show.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        let mut secrets: Vec<&str> = Vec::new();
        if let Some(h) = &self.huggingface {
            secrets.push(&h.webhook_secret);
            secrets.extend(h.token.as_deref());
        }
        if let Some(m) = &self.mlflow {
            secrets.push(&m.webhook_secret);
            secrets.extend(m.token.as_deref());
            if m.tracking_uri != redact_uri(&m.tracking_uri) {
                out = out.replace(&m.tracking_uri, &redact_uri(&m.tracking_uri));
            }
        }
        if let Reads::Token(t) = &self.reads {
            secrets.push(t);
        }
        let db_password = match &self.queue {
            Queue::Postgres { url, .. } => queue_password(url),
            Queue::Redb => None,
        };
        secrets.extend(db_password.as_deref());
        for s in secrets.into_iter().filter(|s| !s.is_empty()) {
            out = out.replace(s, REDACTED);
        }
        // Credentials in any other URI the text quotes.
        out.split(' ')
            .map(|w| {
                if w.contains("://") {
                    redact_uri(w)
                } else {
                    w.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn target(&self, registry: Registry, name: &str) -> Option<&Target> {
        self.targets
            .iter()
            .find(|t| t.registry == registry && t.name == name)
    }
}

#[cfg(test)]
mod tests;
