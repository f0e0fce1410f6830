//! MLflow's model registry: a model version re-read and its `source`
//! followed to the files (fetch.rs downloads them), and the
//! verdict written back as model-version tags.
//!
//! A model version's `source` is a URI that may point at another: MLflow 3's
//! `log_model` + `register_model` gives `models:/m-<id>` (a logged model,
//! whose artifact_uri is `mlflow-artifacts:/…` behind the tracking server's
//! proxy); `copy_model_version` gives `models:/<name>/<version>`; MLflow 2
//! gave `runs:/<run>/<path>` or the artifact URI itself. Each hop is re-read
//! from the server; the files are listed, the candidate is found by layout
//! (flavors keep it under `peft/`, `model/`, `artifacts/<name>/`, …), and only
//! its files are downloaded, within ArtifactLimits.

use std::path::PathBuf;

use serde_json::json;

use super::artifacts::components;
use super::{auth, client, ok_json, remote};
use crate::adapters::serve::config::MlflowConfig;
use crate::error::Result;

/// Where a model version's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Store {
    /// A file or directory this server can read.
    Local(PathBuf),
    /// Components below the tracking server's artifact proxy
    /// (`/api/2.0/mlflow-artifacts/artifacts/...`).
    Proxy(Vec<String>),
}

impl std::fmt::Display for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Store::Local(p) => write!(f, "{}", p.display()),
            Store::Proxy(c) => write!(f, "mlflow-artifacts:/{}", c.join("/")),
        }
    }
}

/// The MLflow REST API of one tracking server.
pub(super) struct Api<'a> {
    pub(super) cfg: &'a MlflowConfig,
    client: reqwest::Client,
    /// Artifact downloads: no overall deadline (large files), but a stall is an error.
    pub(super) download: reqwest::Client,
}

/// How long a version `PENDING_REGISTRATION` or a logged model `PENDING` is waited for.
const PENDING_TRIES: u32 = 30;
const PENDING_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// `models:/` and `runs:/` sources followed before the chain is refused.
const MAX_HOPS: usize = 8;

impl<'a> Api<'a> {
    pub(super) fn new(cfg: &'a MlflowConfig) -> Result<Self> {
        let download = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(30))
            .read_timeout(std::time::Duration::from_secs(120))
            .user_agent(concat!("probegate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| remote("HTTP client", e))?;
        Ok(Api {
            cfg,
            client: client()?,
            download,
        })
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.cfg.tracking_uri.trim_end_matches('/'))
    }

    pub(super) async fn get(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<serde_json::Value> {
        let url = self.url(path);
        let shown: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let what = if shown.is_empty() {
            url.clone()
        } else {
            format!("{url}?{}", shown.join("&"))
        };
        ok_json(
            &what,
            auth(self.client.get(&url), &self.cfg.token)
                .query(query)
                .send()
                .await,
        )
        .await
    }

    /// A registered model version, once it is READY (a pending one is waited for, briefly).
    pub(super) async fn model_version(
        &self,
        name: &str,
        version: &str,
    ) -> Result<serde_json::Value> {
        let path = "/api/2.0/mlflow/model-versions/get";
        let what = format!("{}?name={name}&version={version}", self.url(path));
        for _ in 0..PENDING_TRIES {
            let v = self
                .get(path, &[("name", name), ("version", version)])
                .await?;
            let mv = &v["model_version"];
            if mv["version"].as_str() != Some(version) || mv["name"].as_str() != Some(name) {
                return Err(remote(
                    &what,
                    "the registry does not know this model version",
                ));
            }
            match mv["status"].as_str() {
                None | Some("READY") => return Ok(mv.clone()),
                Some("PENDING_REGISTRATION") => tokio::time::sleep(PENDING_WAIT).await,
                Some(other) => {
                    return Err(remote(
                        &what,
                        format!("model version status is {other}, not READY"),
                    ))
                }
            }
        }
        Err(remote(
            &what,
            format!(
                "model version still PENDING_REGISTRATION after {} s",
                PENDING_TRIES as u64 * PENDING_WAIT.as_secs()
            ),
        ))
    }

    /// A logged model's artifact URI, once it is READY.
    async fn logged_model(&self, id: &str) -> Result<String> {
        let path = format!("/api/2.0/mlflow/logged-models/{id}");
        let what = self.url(&path);
        for _ in 0..PENDING_TRIES {
            let v = self.get(&path, &[]).await?;
            let info = &v["model"]["info"];
            if info["model_id"].as_str() != Some(id) {
                return Err(remote(&what, "the server does not know this logged model"));
            }
            match info["status"].as_str() {
                None | Some("LOGGED_MODEL_READY") => {
                    return info["artifact_uri"]
                        .as_str()
                        .filter(|u| !u.is_empty())
                        .map(str::to_string)
                        .ok_or_else(|| remote(&what, "model.info.artifact_uri is missing"));
                }
                Some("LOGGED_MODEL_PENDING") => tokio::time::sleep(PENDING_WAIT).await,
                Some(other) => {
                    return Err(remote(
                        &what,
                        format!("logged model status is {other}, not LOGGED_MODEL_READY"),
                    ))
                }
            }
        }
        Err(remote(&what, "logged model still LOGGED_MODEL_PENDING"))
    }

    /// Follow `models:/` and `runs:/` to an artifact URI, then to a Store.
    pub(super) async fn locate(&self, source: &str) -> Result<Store> {
        let mut uri = source.to_string();
        let mut trail = vec![source.to_string()];
        let fail = |trail: &[String], msg: String| {
            remote(format!("MLflow source {}", trail.join(" -> ")), msg)
        };
        for _ in 0..MAX_HOPS {
            let next = if let Some(rest) = uri.strip_prefix("models:") {
                if rest.starts_with("//") && !rest.starts_with("///") {
                    return Err(fail(
                        &trail,
                        "a models:// URI naming another registry is not followed".into(),
                    ));
                }
                let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
                match parts.as_slice() {
                    [id] if !id.is_empty() && !id.contains('@') => {
                        if !plain_id(id) {
                            return Err(fail(&trail, format!("`{id}` is not a logged model id")));
                        }
                        self.logged_model(id).await?
                    }
                    [name_alias] if name_alias.contains('@') => {
                        let (name, alias) = name_alias.rsplit_once('@').unwrap_or_default();
                        if name.is_empty() || alias.is_empty() {
                            return Err(fail(&trail, "not a models:/<name>@<alias> URI".into()));
                        }
                        let v = self
                            .get(
                                "/api/2.0/mlflow/registered-models/alias",
                                &[("name", name), ("alias", alias)],
                            )
                            .await?;
                        let mv = &v["model_version"];
                        let version = mv["version"].as_str().ok_or_else(|| {
                            fail(&trail, format!("alias `{alias}` has no version"))
                        })?;
                        let mv = self.model_version(name, version).await?;
                        source_of(&mv).map_err(|m| fail(&trail, m))?
                    }
                    [name, version]
                        if !name.is_empty()
                            && !version.is_empty()
                            && version.chars().all(|c| c.is_ascii_digit()) =>
                    {
                        let mv = self.model_version(name, version).await?;
                        source_of(&mv).map_err(|m| fail(&trail, m))?
                    }
                    [_, _] => {
                        return Err(fail(
                            &trail,
                            "stage and `latest` model URIs move; a version's source must name a \
                             version, an alias or a logged model"
                                .into(),
                        ))
                    }
                    _ => return Err(fail(&trail, "not a models:/ URI".into())),
                }
            } else if let Some(rest) = uri.strip_prefix("runs:/") {
                let rest = rest.trim_start_matches('/');
                let (run, path) = rest.split_once('/').unwrap_or((rest, ""));
                if !plain_id(run) {
                    return Err(fail(&trail, format!("`{run}` is not a run id")));
                }
                let path = components(path).map_err(|m| fail(&trail, m))?;
                let v = self
                    .get("/api/2.0/mlflow/runs/get", &[("run_id", run)])
                    .await?;
                let root = v["run"]["info"]["artifact_uri"]
                    .as_str()
                    .filter(|u| !u.is_empty())
                    .ok_or_else(|| fail(&trail, "run.info.artifact_uri is missing".into()))?;
                if path.is_empty() {
                    root.to_string()
                } else {
                    format!("{}/{}", root.trim_end_matches('/'), path.join("/"))
                }
            } else {
                return self.artifact_store(&uri).map_err(|m| fail(&trail, m));
            };
            trail.push(next.clone());
            uri = next;
        }
        Err(fail(
            &trail,
            format!("more than {MAX_HOPS} models:/ or runs:/ hops"),
        ))
    }

    /// An artifact URI this server can read: the tracking server's proxy or a local path.
    fn artifact_store(&self, uri: &str) -> std::result::Result<Store, String> {
        if let Some(rest) = uri.strip_prefix("mlflow-artifacts:") {
            let path = match rest.strip_prefix("//") {
                // `mlflow-artifacts://host:port/path`: only this tracking server.
                Some(hp) => {
                    let (authority, path) = hp.split_once('/').unwrap_or((hp, ""));
                    let ours = reqwest::Url::parse(&self.cfg.tracking_uri)
                        .ok()
                        .and_then(|u| {
                            let host = u.host_str()?.to_string();
                            Some(match u.port() {
                                Some(p) => format!("{host}:{p}"),
                                None => host,
                            })
                        });
                    if !authority.is_empty() && ours.as_deref() != Some(authority) {
                        return Err(format!(
                            "artifacts on `{authority}` are not read: only the tracking server \
                             {} is asked",
                            self.cfg.tracking_uri
                        ));
                    }
                    path
                }
                None => rest,
            };
            return components(path).map(Store::Proxy);
        }
        if uri.starts_with("file:") {
            let u = reqwest::Url::parse(uri).map_err(|e| format!("not a file URI: {e}"))?;
            if u.host_str()
                .is_some_and(|h| !h.is_empty() && h != "localhost")
            {
                return Err("a file:// URI on another host is not read".into());
            }
            let p = u
                .to_file_path()
                .map_err(|()| "not a local file URI".to_string())?;
            return local_store(p, &self.cfg.artifact_roots);
        }
        if uri.starts_with('/') {
            return local_store(PathBuf::from(uri), &self.cfg.artifact_roots);
        }
        let scheme = uri.split_once(':').map_or(uri, |s| s.0);
        Err(format!(
            "`{scheme}` artifacts are not read: probegate serve downloads through the tracking \
             server's artifact proxy (mlflow-artifacts:, `mlflow server --artifacts-destination`) \
             or reads file:// and absolute paths (mount the store)"
        ))
    }
}

/// A run or logged-model id: it goes into a URL path, so nothing but `[A-Za-z0-9_-]`.
fn plain_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

pub(super) fn source_of(mv: &serde_json::Value) -> std::result::Result<String, String> {
    mv["source"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| "model_version.source is missing".into())
}

/// A local source, read only inside `[mlflow] artifact_roots` once links
/// and `..` are resolved: the version's creator names the path, and the
/// server must not gate (or report on) whatever else it can read.
fn local_store(p: PathBuf, roots: &[PathBuf]) -> std::result::Result<Store, String> {
    if !p.is_absolute() {
        return Err(format!("{} is not an absolute path", p.display()));
    }
    if roots.is_empty() {
        return Err(format!(
            "{} is a local path, and [mlflow] artifact_roots names no directory this server \
             reads models from",
            p.display()
        ));
    }
    let real = p
        .canonicalize()
        .map_err(|_| format!("{} does not exist here", p.display()))?;
    if !roots
        .iter()
        .filter_map(|r| r.canonicalize().ok())
        .any(|r| real.starts_with(r))
    {
        return Err(format!(
            "{} is outside [mlflow] artifact_roots",
            p.display()
        ));
    }
    Ok(Store::Local(p))
}

/// MLflow: tags on the model version (idempotent, so a retried callback is harmless).
pub async fn mlflow_tag(
    cfg: &MlflowConfig,
    name: &str,
    version: &str,
    tags: &[(&str, String)],
) -> Result<()> {
    let url = format!("{}/api/2.0/mlflow/model-versions/set-tag", cfg.tracking_uri);
    for (key, value) in tags {
        // MLflow caps tag values (5000 characters in older servers).
        let value: String = value.chars().take(5000).collect();
        ok_json(
            &format!("{url} ({key})"),
            auth(client()?.post(&url), &cfg.token)
                .json(&json!({"name": name, "version": version, "key": key, "value": value}))
                .send()
                .await,
        )
        .await?;
    }
    Ok(())
}

/// MLflow: remove a tag from the model version. A 404 (no such version) is
/// success: there is nothing left to be stale.
pub async fn mlflow_untag(cfg: &MlflowConfig, name: &str, version: &str, key: &str) -> Result<()> {
    let url = format!(
        "{}/api/2.0/mlflow/model-versions/delete-tag",
        cfg.tracking_uri
    );
    let what = format!("{url} ({key})");
    let resp = auth(client()?.delete(&url), &cfg.token)
        .json(&json!({"name": name, "version": version, "key": key}))
        .send()
        .await;
    if let Ok(r) = &resp {
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(());
        }
    }
    ok_json(&what, resp).await.map(|_| ())
}
