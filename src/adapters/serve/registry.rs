//! The registries' side of a job: re-read what the webhook announced (the
//! payload is a hint, the registry is the truth), fetch the candidate, and
//! write the verdict back (a Hugging Face discussion comment, MLflow
//! model-version tags).

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Repo, RepoType};
use serde_json::json;

use super::config::{HfConfig, MlflowConfig};
use crate::error::{Error, Result};

fn remote(what: impl Into<String>, msg: impl std::fmt::Display) -> Error {
    Error::Remote {
        what: what.into(),
        msg: msg.to_string(),
    }
}

/// Files of a repository snapshot that make a checkable candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CandidateFiles {
    /// A PEFT adapter: adapter_config.json and its weights, applied to the target's base.
    Adapter(Vec<String>),
    /// One GGUF file.
    Gguf(String),
    /// A Hugging Face model directory.
    Model(Vec<String>),
}

pub fn select_files(files: &[String]) -> Option<CandidateFiles> {
    let has = |n: &str| files.iter().any(|f| f == n);
    if has("adapter_config.json") {
        let mut v: Vec<String> = files
            .iter()
            .filter(|f| *f == "adapter_config.json" || f.starts_with("adapter_model."))
            .cloned()
            .collect();
        v.sort();
        return Some(CandidateFiles::Adapter(v));
    }
    if has("config.json") && files.iter().any(|f| f.ends_with(".safetensors")) {
        let mut v: Vec<String> = files
            .iter()
            .filter(|f| {
                !f.contains('/')
                    && (f.ends_with(".safetensors")
                        || f.ends_with(".json")
                        || f.as_str() == "tokenizer.model")
            })
            .cloned()
            .collect();
        v.sort();
        return Some(CandidateFiles::Model(v));
    }
    let mut ggufs: Vec<&String> = files.iter().filter(|f| f.ends_with(".gguf")).collect();
    ggufs.sort();
    ggufs.first().map(|g| CandidateFiles::Gguf((*g).clone()))
}

/// Re-read the repository at `sha` from the Hub and download the candidate's
/// files into `cache`. Returns the model reference `check` takes.
pub fn hf_fetch(cfg: &HfConfig, repo: &str, sha: &str, base: &str, cache: &Path) -> Result<String> {
    let api = ApiBuilder::new()
        .with_endpoint(cfg.endpoint.clone())
        .with_cache_dir(cache.to_path_buf())
        .with_token(cfg.token.clone())
        .with_progress(false)
        .with_retries(3)
        .build()
        .map_err(|e| remote(format!("Hugging Face client for {repo}"), e))?;
    let r = api.repo(Repo::with_revision(
        repo.to_string(),
        RepoType::Model,
        sha.to_string(),
    ));
    let what = format!("{}/api/models/{repo}/revision/{sha}", cfg.endpoint);
    let info = r.info().map_err(|e| remote(&what, e))?;
    if !info.sha.eq_ignore_ascii_case(sha) {
        return Err(remote(
            &what,
            format!("the Hub resolves this revision to {}, not {sha}", info.sha),
        ));
    }
    let files: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let Some(sel) = select_files(&files) else {
        return Err(remote(
            &what,
            "no adapter (adapter_config.json), model directory (config.json + safetensors) or .gguf file at this revision",
        ));
    };
    let get = |f: &str| -> Result<PathBuf> {
        r.get(f)
            .map_err(|e| remote(format!("{}/{repo}/resolve/{sha}/{f}", cfg.endpoint), e))
    };
    Ok(match sel {
        CandidateFiles::Adapter(fs) | CandidateFiles::Model(fs) if fs.is_empty() => {
            return Err(remote(&what, "the candidate has no weight files"));
        }
        CandidateFiles::Adapter(fs) => {
            let mut dir = None;
            for f in &fs {
                dir = get(f)?.parent().map(Path::to_path_buf);
            }
            let dir = dir.ok_or_else(|| remote(&what, "no snapshot directory"))?;
            format!("{base}+{}", dir.display())
        }
        CandidateFiles::Model(fs) => {
            let mut dir = None;
            for f in &fs {
                dir = get(f)?.parent().map(Path::to_path_buf);
            }
            dir.ok_or_else(|| remote(&what, "no snapshot directory"))?
                .display()
                .to_string()
        }
        CandidateFiles::Gguf(f) => get(&f)?.display().to_string(),
    })
}

fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .user_agent(concat!("probegate/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| remote("HTTP client", e))
}

fn auth(rb: reqwest::RequestBuilder, token: &Option<String>) -> reqwest::RequestBuilder {
    match token {
        Some(t) => rb.bearer_auth(t),
        None => rb,
    }
}

async fn ok_json(
    what: &str,
    resp: reqwest::Result<reqwest::Response>,
) -> Result<serde_json::Value> {
    let resp = resp.map_err(|e| remote(what, e))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| remote(what, e))?;
    if !status.is_success() {
        let short: String = text.chars().take(300).collect();
        return Err(remote(what, format!("HTTP {status}: {short}")));
    }
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(&text).map_err(|e| remote(what, format!("response is not JSON: {e}")))
}

// ---------------------------------------------------------------- MLflow sources
//
// A model version's `source` is a URI that may point at another: MLflow 3's
// `log_model` + `register_model` gives `models:/m-<id>` (a logged model,
// whose artifact_uri is `mlflow-artifacts:/…` behind the tracking server's
// proxy); `copy_model_version` gives `models:/<name>/<version>`; MLflow 2
// gave `runs:/<run>/<path>` or the artifact URI itself. Each hop is re-read
// from the server; the files are listed, the candidate is found by layout
// (flavors keep it under `peft/`, `model/`, `artifacts/<name>/`, …), and only
// its files are downloaded, within ArtifactLimits.

/// Environment variable overriding ArtifactLimits::max_bytes.
pub const MAX_BYTES_ENV: &str = "PROBEGATE_MLFLOW_MAX_BYTES";

/// Bounds on what one MLflow source may make this server list and download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArtifactLimits {
    /// Bytes downloaded for one candidate, all its files together.
    pub max_bytes: u64,
    /// Files and directories listed in one artifact tree.
    pub max_entries: usize,
    /// Directory levels below the artifact root.
    pub max_depth: usize,
}

impl Default for ArtifactLimits {
    fn default() -> Self {
        // 64 GiB: a 30B-parameter model in bf16, with room to spare.
        ArtifactLimits {
            max_bytes: 64 << 30,
            max_entries: 10_000,
            max_depth: 16,
        }
    }
}

impl ArtifactLimits {
    /// The defaults, with `PROBEGATE_MLFLOW_MAX_BYTES` as the byte cap when set.
    pub fn from_env() -> Result<Self> {
        Self::with_max_bytes(
            std::env::var_os(MAX_BYTES_ENV)
                .map(|v| v.to_string_lossy().to_string())
                .as_deref(),
        )
    }

    fn with_max_bytes(v: Option<&str>) -> Result<Self> {
        let mut l = Self::default();
        if let Some(v) = v {
            l.max_bytes = v.trim().parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                Error::Usage(format!(
                    "{MAX_BYTES_ENV}={v:?} is not a positive number of bytes"
                ))
            })?;
        }
        Ok(l)
    }
}

/// A name from a listing or a URI that is safe as one path component here
/// and in a URL: never empty, `.`/`..`, a separator, a drive or stream
/// (`:`) or a control character.
pub fn safe_component(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 255
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c == ':' || c.is_control())
}

/// Split a relative artifact path into safe components; leading and
/// trailing slashes are allowed, empty or unsafe components are not.
fn components(path: &str) -> std::result::Result<Vec<String>, String> {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    trimmed
        .split('/')
        .map(|c| {
            if safe_component(c) {
                Ok(c.to_string())
            } else {
                Err(format!("path component {c:?} in `{path}` is refused"))
            }
        })
        .collect()
}

/// Where a model version's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Store {
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

/// A candidate found in an artifact tree. Paths are relative to the tree's
/// root, `/`-separated; `""` is the root itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A PEFT adapter directory and its files; `base` when the transformers
    /// flavor stored the base model beside it (`model/` next to `peft/`).
    Adapter {
        dir: String,
        files: Vec<String>,
        base: Option<ModelDir>,
    },
    /// A Hugging Face model directory.
    Model(ModelDir),
    /// One GGUF file.
    Gguf(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelDir {
    pub dir: String,
    pub files: Vec<String>,
    /// The transformers flavor keeps the tokenizer in `components/tokenizer/`,
    /// not beside the weights: (that directory, its tokenizer files).
    pub tokenizer: Option<(String, Vec<String>)>,
}

fn parent_of(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn shown(dir: &str) -> String {
    if dir.is_empty() {
        "the artifact root".into()
    } else {
        format!("`{dir}/`")
    }
}

const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// Find the one candidate in an artifact tree (`files`: every file's
/// relative path). More than one of a kind, or a GGUF beside a directory
/// candidate, is an error naming them all: the gate never picks.
pub fn find_candidate(files: &[String]) -> std::result::Result<Found, String> {
    let mut by_dir: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for f in files {
        let (dir, name) = parent_of(f);
        by_dir.entry(dir).or_default().push(name.to_string());
    }
    let mut adapters = Vec::new();
    let mut models = Vec::new();
    for (dir, names) in &by_dir {
        match select_files(names) {
            Some(CandidateFiles::Adapter(fs)) => {
                if !fs
                    .iter()
                    .any(|f| f == crate::checkpoint::adapter::WEIGHTS_FILE)
                {
                    let pickle = if names.iter().any(|n| n == "adapter_model.bin") {
                        " (only adapter_model.bin, a pickle probegate never loads: re-save with safe_serialization=True)"
                    } else {
                        ""
                    };
                    return Err(format!(
                        "{} has adapter_config.json but no {}{pickle}",
                        shown(dir),
                        crate::checkpoint::adapter::WEIGHTS_FILE
                    ));
                }
                adapters.push((dir.to_string(), fs));
            }
            Some(CandidateFiles::Model(fs)) => models.push((dir.to_string(), fs)),
            _ => {}
        }
    }
    let mut ggufs: Vec<&String> = files.iter().filter(|f| f.ends_with(".gguf")).collect();
    ggufs.sort();
    let shown_all =
        |v: &[(String, Vec<String>)]| -> Vec<String> { v.iter().map(|x| shown(&x.0)).collect() };
    let gguf_names: Vec<String> = ggufs.iter().map(|g| format!("`{g}`")).collect();
    for (kind, names) in [
        ("PEFT adapters", shown_all(&adapters)),
        ("model directories", shown_all(&models)),
        ("GGUF files", gguf_names),
    ] {
        if names.len() > 1 {
            return Err(format!(
                "{} {kind}: {}; register one candidate per model version",
                names.len(),
                names.join(", ")
            ));
        }
    }
    if let Some(g) = ggufs.first() {
        let others = [shown_all(&adapters), shown_all(&models)].concat();
        if !others.is_empty() {
            return Err(format!(
                "a GGUF file `{g}` and {}: which one is the candidate is ambiguous",
                others.join(", ")
            ));
        }
    }
    let model_dir = |(dir, fs): (String, Vec<String>)| {
        let tokenizer = if fs.iter().any(|f| f == "tokenizer.json") {
            None
        } else {
            let (parent, _) = parent_of(&dir);
            let tdir = join(parent, "components/tokenizer");
            let tf: Vec<String> = TOKENIZER_FILES
                .iter()
                .filter(|t| {
                    by_dir
                        .get(tdir.as_str())
                        .is_some_and(|n| n.iter().any(|x| x == *t))
                })
                .map(|t| t.to_string())
                .collect();
            tf.iter()
                .any(|t| t == "tokenizer.json")
                .then_some((tdir, tf))
        };
        ModelDir {
            dir,
            files: fs,
            tokenizer,
        }
    };
    match (adapters.pop(), models.pop()) {
        (Some((dir, files)), None) => Ok(Found::Adapter {
            dir,
            files,
            base: None,
        }),
        // The transformers flavor's PEFT layout with the base's weights saved:
        // `peft/` applied to `model/`, as MLflow loads it.
        (Some((dir, files)), Some(m))
            if parent_of(&dir) == (parent_of(&m.0).0, "peft")
                && parent_of(&m.0).1 == "model" =>
        {
            Ok(Found::Adapter {
                dir,
                files,
                base: Some(model_dir(m)),
            })
        }
        (Some(a), Some(m)) => Err(format!(
            "a PEFT adapter in {} and a model directory in {}: which one is the candidate is ambiguous",
            shown(&a.0),
            shown(&m.0)
        )),
        (None, Some(m)) => Ok(Found::Model(model_dir(m))),
        (None, None) => match ggufs.first() {
            Some(g) => Ok(Found::Gguf((*g).clone())),
            None => Err(
                "no PEFT adapter (adapter_config.json + adapter_model.safetensors), model directory \
                 (config.json + *.safetensors) or .gguf file anywhere in it"
                    .into(),
            ),
        },
    }
}

/// The MLflow REST API of one tracking server.
struct Api<'a> {
    cfg: &'a MlflowConfig,
    client: reqwest::Client,
    /// Artifact downloads: no overall deadline (large files), but a stall is an error.
    download: reqwest::Client,
}

/// How long a version `PENDING_REGISTRATION` or a logged model `PENDING` is waited for.
const PENDING_TRIES: u32 = 30;
const PENDING_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// `models:/` and `runs:/` sources followed before the chain is refused.
const MAX_HOPS: usize = 8;

impl<'a> Api<'a> {
    fn new(cfg: &'a MlflowConfig) -> Result<Self> {
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

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.cfg.tracking_uri.trim_end_matches('/'))
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<serde_json::Value> {
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
    async fn model_version(&self, name: &str, version: &str) -> Result<serde_json::Value> {
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
    async fn locate(&self, source: &str) -> Result<Store> {
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
            return local_store(p);
        }
        if uri.starts_with('/') {
            return local_store(PathBuf::from(uri));
        }
        let scheme = uri.split_once(':').map_or(uri, |s| s.0);
        Err(format!(
            "`{scheme}` artifacts are not read: probegate serve downloads through the tracking \
             server's artifact proxy (mlflow-artifacts:, `mlflow server --artifacts-destination`) \
             or reads file:// and absolute paths (mount the store)"
        ))
    }

    fn proxy_url(&self, comps: &[String]) -> Result<reqwest::Url> {
        let base = self.url("/api/2.0/mlflow-artifacts/artifacts");
        let mut url = reqwest::Url::parse(&base).map_err(|e| remote(&base, e))?;
        url.path_segments_mut()
            .map_err(|()| remote(&base, "not a base URL"))?
            .extend(comps);
        Ok(url)
    }

    /// Every file under a proxied directory, breadth first, within the limits.
    async fn list_proxy(
        &self,
        root: &[String],
        limits: &ArtifactLimits,
    ) -> Result<Vec<(String, Option<u64>)>> {
        let mut files = Vec::new();
        let mut dirs = std::collections::VecDeque::from([(String::new(), 0usize)]);
        let mut entries = 0usize;
        let empty = Vec::new();
        while let Some((rel, depth)) = dirs.pop_front() {
            let mut path = root.join("/");
            if !rel.is_empty() {
                path = if path.is_empty() {
                    rel.clone()
                } else {
                    format!("{path}/{rel}")
                };
            }
            let what = format!(
                "{}?path={path}",
                self.url("/api/2.0/mlflow-artifacts/artifacts")
            );
            let v = self
                .get("/api/2.0/mlflow-artifacts/artifacts", &[("path", &path)])
                .await?;
            let list = match &v["files"] {
                serde_json::Value::Null => &empty,
                serde_json::Value::Array(a) => a,
                _ => return Err(remote(&what, "`files` is not a list")),
            };
            for f in list {
                let name = f["path"]
                    .as_str()
                    .ok_or_else(|| remote(&what, "an entry has no `path`"))?;
                // Checked before the name reaches a URL or the disk.
                if !safe_component(name) {
                    return Err(remote(
                        &what,
                        format!("listed name {name:?} is refused (not a plain file name)"),
                    ));
                }
                entries += 1;
                if entries > limits.max_entries {
                    return Err(remote(
                        &what,
                        format!("more than {} files and directories", limits.max_entries),
                    ));
                }
                let child = join(&rel, name);
                if f["is_dir"].as_bool().unwrap_or(false) {
                    if depth + 1 > limits.max_depth {
                        return Err(remote(
                            &what,
                            format!(
                                "`{child}` is nested deeper than {} levels",
                                limits.max_depth
                            ),
                        ));
                    }
                    dirs.push_back((child, depth + 1));
                } else {
                    let size = match &f["file_size"] {
                        serde_json::Value::Number(n) => n.as_u64(),
                        serde_json::Value::String(s) => s.parse().ok(),
                        _ => None,
                    };
                    files.push((child, size));
                }
            }
        }
        Ok(files)
    }

    /// Download one proxied file to `dest`, charging its bytes to `budget`.
    async fn download(
        &self,
        comps: &[String],
        expected: Option<u64>,
        dest: &Path,
        budget: &mut u64,
        cap: u64,
    ) -> Result<()> {
        use std::io::Write;
        let url = self.proxy_url(comps)?;
        let what = url.to_string();
        let over = || {
            remote(
                &what,
                format!(
                    "the candidate's files exceed {cap} bytes ({MAX_BYTES_ENV} raises the cap)"
                ),
            )
        };
        let mut resp = auth(self.download.get(url), &self.cfg.token)
            .send()
            .await
            .map_err(|e| remote(&what, e))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            let short: String = text.chars().take(300).collect();
            return Err(remote(&what, format!("HTTP {status}: {short}")));
        }
        if resp.content_length().is_some_and(|n| n > *budget) {
            return Err(over());
        }
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let partial = dest.with_extension("partial");
        let res = async {
            // Plain blocking writes: chunks are small and land in the page cache.
            let mut f = std::fs::File::create(&partial).map_err(|e| Error::io(&partial, e))?;
            let mut got = 0u64;
            while let Some(chunk) = resp.chunk().await.map_err(|e| remote(&what, e))? {
                let n = chunk.len() as u64;
                if n > *budget {
                    return Err(over());
                }
                *budget -= n;
                got += n;
                f.write_all(&chunk).map_err(|e| Error::io(&partial, e))?;
            }
            f.sync_all().map_err(|e| Error::io(&partial, e))?;
            if let Some(n) = expected.filter(|&n| n != got) {
                return Err(remote(
                    &what,
                    format!("got {got} bytes, the listing says {n}: truncated or changed"),
                ));
            }
            std::fs::rename(&partial, dest).map_err(|e| Error::io(dest, e))
        }
        .await;
        if res.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        res
    }
}

/// A run or logged-model id: it goes into a URL path, so nothing but `[A-Za-z0-9_-]`.
fn plain_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn source_of(mv: &serde_json::Value) -> std::result::Result<String, String> {
    mv["source"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| "model_version.source is missing".into())
}

fn local_store(p: PathBuf) -> std::result::Result<Store, String> {
    if !p.is_absolute() {
        return Err(format!("{} is not an absolute path", p.display()));
    }
    if !p.exists() {
        return Err(format!("{} does not exist here", p.display()));
    }
    Ok(Store::Local(p))
}

/// Every file under a local directory, within the limits. Symlinked files
/// are followed (a mounted store may link), symlinked directories are refused
/// (a loop, or a way out of the tree).
fn list_local(root: &Path, limits: &ArtifactLimits) -> Result<Vec<(String, Option<u64>)>> {
    let mut files = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new(), 0usize)];
    let mut entries = 0usize;
    let refuse = |p: &Path, msg: String| remote(format!("MLflow source {}", p.display()), msg);
    while let Some((dir, rel, depth)) = stack.pop() {
        for e in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let e = e.map_err(|e| Error::io(&dir, e))?;
            let path = e.path();
            let name = e
                .file_name()
                .into_string()
                .map_err(|n| refuse(&path, format!("name {n:?} is not UTF-8")))?;
            if !safe_component(&name) {
                return Err(refuse(&path, format!("name {name:?} is refused")));
            }
            entries += 1;
            if entries > limits.max_entries {
                return Err(refuse(
                    root,
                    format!("more than {} files and directories", limits.max_entries),
                ));
            }
            let child = join(&rel, &name);
            let ft = e.file_type().map_err(|err| Error::io(&path, err))?;
            if ft.is_dir() {
                if depth + 1 > limits.max_depth {
                    return Err(refuse(
                        &path,
                        format!("nested deeper than {} levels", limits.max_depth),
                    ));
                }
                stack.push((path, child, depth + 1));
            } else {
                let md = std::fs::metadata(&path).map_err(|err| Error::io(&path, err))?;
                if md.is_dir() {
                    return Err(refuse(
                        &path,
                        "a symlinked directory is not followed".into(),
                    ));
                }
                if md.is_file() {
                    files.push((child, Some(md.len())));
                }
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Re-read a model version from the MLflow registry, follow its `source` to
/// the artifact files, find the candidate in them and put it under `cache`
/// (downloaded through the artifact proxy, or linked from a local store).
/// Returns the model reference `check` takes. `cache` is emptied first.
pub async fn mlflow_fetch(
    cfg: &MlflowConfig,
    name: &str,
    version: &str,
    base: &str,
    cache: &Path,
    limits: &ArtifactLimits,
) -> Result<String> {
    let api = Api::new(cfg)?;
    let mv = api.model_version(name, version).await?;
    let what = format!("MLflow model version {name}/{version}");
    let source = source_of(&mv).map_err(|m| remote(&what, m))?;
    let store = api.locate(&source).await?;
    let what = format!("{what} (source `{source}`, files at {store})");

    // The tree's files, or the store itself when it is one file.
    let (files, single) = match &store {
        Store::Local(p) if p.is_file() => (Vec::new(), true),
        Store::Local(p) => (list_local(p, limits)?, false),
        Store::Proxy(root) => {
            let files = api.list_proxy(root, limits).await?;
            let single = files.is_empty() && root.last().is_some_and(|n| n.ends_with(".gguf"));
            (files, single)
        }
    };
    let found = if single {
        match &store {
            Store::Local(p) if !p.to_string_lossy().ends_with(".gguf") => {
                return Err(remote(&what, "the source is a file that is not a .gguf"));
            }
            _ => Found::Gguf(String::new()),
        }
    } else {
        let names: Vec<String> = files.iter().map(|f| f.0.clone()).collect();
        find_candidate(&names).map_err(|m| remote(&what, m))?
    };
    let sizes: std::collections::HashMap<&str, Option<u64>> =
        files.iter().map(|(f, s)| (f.as_str(), *s)).collect();

    // ModelSpec splits an adapter reference at its last '+'.
    if cache.to_string_lossy().contains('+') {
        return Err(Error::Usage(format!(
            "{}: the state_dir path holds '+', which a model reference cannot carry",
            cache.display()
        )));
    }
    let (plan, reference) = plan(&found, &store, cache, base).map_err(|m| remote(&what, m))?;
    let known: u64 = plan
        .iter()
        .filter_map(|(rel, _)| sizes.get(rel.as_str()).copied().flatten())
        .sum();
    if matches!(store, Store::Proxy(_)) && known > limits.max_bytes {
        return Err(remote(
            &what,
            format!(
                "the candidate's files are {known} bytes, over the {} byte cap ({MAX_BYTES_ENV} raises it)",
                limits.max_bytes
            ),
        ));
    }
    if cache.exists() {
        std::fs::remove_dir_all(cache).map_err(|e| Error::io(cache, e))?;
    }
    std::fs::create_dir_all(cache).map_err(|e| Error::io(cache, e))?;
    let mut budget = limits.max_bytes;
    for (rel, dest) in &plan {
        match &store {
            Store::Local(root) => {
                let src = if rel.is_empty() {
                    root.clone()
                } else {
                    root.join(rel)
                };
                link(&src, dest)?;
            }
            Store::Proxy(root) => {
                let mut comps = root.clone();
                if !rel.is_empty() {
                    comps.extend(rel.split('/').map(str::to_string));
                }
                let expected = sizes.get(rel.as_str()).copied().flatten();
                api.download(&comps, expected, dest, &mut budget, limits.max_bytes)
                    .await?;
            }
        }
    }
    Ok(reference)
}

/// What to fetch for a candidate — (path in the store, destination in the
/// cache) — and the model reference `check` takes for it.
type Plan = (Vec<(String, PathBuf)>, String);

fn plan(
    found: &Found,
    store: &Store,
    cache: &Path,
    base: &str,
) -> std::result::Result<Plan, String> {
    let mut plan = Vec::new();
    let model = |m: &ModelDir, plan: &mut Vec<(String, PathBuf)>| {
        let dest = cache.join("model");
        for f in &m.files {
            plan.push((join(&m.dir, f), dest.join(f)));
        }
        if let Some((tdir, tf)) = &m.tokenizer {
            for f in tf.iter().filter(|f| !m.files.contains(f)) {
                plan.push((join(tdir, f), dest.join(f)));
            }
        }
        dest.display().to_string()
    };
    let reference = match found {
        Found::Adapter {
            dir,
            files,
            base: stored,
        } => {
            let adapter = cache.join("adapter");
            for f in files {
                plan.push((join(dir, f), adapter.join(f)));
            }
            let on = match stored {
                Some(m) => model(m, &mut plan),
                None => base.to_string(),
            };
            format!("{on}+{}", adapter.display())
        }
        Found::Model(m) => model(m, &mut plan),
        Found::Gguf(rel) => {
            let file = match (store, rel.is_empty()) {
                (Store::Local(p), true) => p
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default(),
                (Store::Proxy(root), true) => root.last().cloned().unwrap_or_default(),
                _ => parent_of(rel).1.to_string(),
            };
            if !safe_component(&file) {
                return Err(format!("file name {file:?} is refused"));
            }
            let dest = cache.join(&file);
            plan.push((rel.clone(), dest.clone()));
            dest.display().to_string()
        }
    };
    Ok((plan, reference))
}

/// A local store's file, put in the cache layout without copying its bytes.
fn link(src: &Path, dest: &Path) -> Result<()> {
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    #[cfg(unix)]
    let res = std::os::unix::fs::symlink(src, dest);
    #[cfg(not(unix))]
    let res = std::fs::copy(src, dest).map(|_| ());
    res.map_err(|e| Error::io(dest, e))
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

/// Hugging Face: a comment on the pull request the push went to, or a new
/// discussion for a push to a branch.
pub async fn hf_comment(
    cfg: &HfConfig,
    repo: &str,
    git_ref: &str,
    title: &str,
    body: &str,
) -> Result<()> {
    let c = client()?;
    if let Some(num) = git_ref.strip_prefix("refs/pr/") {
        let url = format!(
            "{}/api/models/{repo}/discussions/{num}/comment",
            cfg.endpoint
        );
        ok_json(
            &url,
            auth(c.post(&url), &cfg.token)
                .json(&json!({"comment": body}))
                .send()
                .await,
        )
        .await?;
    } else {
        let url = format!("{}/api/models/{repo}/discussions", cfg.endpoint);
        ok_json(
            &url,
            auth(c.post(&url), &cfg.token)
                .json(&json!({"title": title, "description": body, "pullRequest": false}))
                .send()
                .await,
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn selects_what_check_can_read() {
        assert_eq!(
            select_files(&s(&[
                "README.md",
                "adapter_model.safetensors",
                "adapter_config.json"
            ])),
            Some(CandidateFiles::Adapter(s(&[
                "adapter_config.json",
                "adapter_model.safetensors"
            ])))
        );
        assert_eq!(
            select_files(&s(&[
                "config.json",
                "model.safetensors",
                "tokenizer.json",
                "x/y.json"
            ])),
            Some(CandidateFiles::Model(s(&[
                "config.json",
                "model.safetensors",
                "tokenizer.json"
            ])))
        );
        assert_eq!(
            select_files(&s(&["b.gguf", "a.gguf"])),
            Some(CandidateFiles::Gguf("a.gguf".into()))
        );
        assert_eq!(select_files(&s(&["README.md"])), None);
    }

    /// MLflow's pyfunc layout for `artifacts={"adapter": DIR}` (listed from a
    /// real MLflow 3.17 server), and the transformers flavor's.
    const PYFUNC: &[&str] = &[
        "MLmodel",
        "conda.yaml",
        "python_env.yaml",
        "python_model.pkl",
        "requirements.txt",
        "artifacts/smollm2-lora-r4/adapter_config.json",
        "artifacts/smollm2-lora-r4/adapter_model.safetensors",
    ];

    #[test]
    fn finds_the_adapter_wherever_the_flavor_put_it() {
        assert_eq!(
            find_candidate(&s(PYFUNC)),
            Ok(Found::Adapter {
                dir: "artifacts/smollm2-lora-r4".into(),
                files: s(&["adapter_config.json", "adapter_model.safetensors"]),
                base: None
            })
        );
        for dir in ["", "peft/", "a/b/c/"] {
            let files = s(&[
                "MLmodel",
                &format!("{dir}adapter_config.json"),
                &format!("{dir}adapter_model.safetensors"),
                &format!("{dir}README.md"),
            ]);
            match find_candidate(&files) {
                Ok(Found::Adapter {
                    dir: d,
                    files,
                    base: None,
                }) => {
                    assert_eq!(format!("{d}/").trim_start_matches('/'), dir);
                    assert_eq!(files.len(), 2);
                }
                other => panic!("{dir}: {other:?}"),
            }
        }
    }

    #[test]
    fn transformers_flavor_model_dir_takes_its_tokenizer_from_components() {
        let files = s(&[
            "MLmodel",
            "model/config.json",
            "model/generation_config.json",
            "model/model.safetensors",
            "components/tokenizer/tokenizer.json",
            "components/tokenizer/tokenizer_config.json",
            "components/tokenizer/special_tokens_map.json",
        ]);
        assert_eq!(
            find_candidate(&files),
            Ok(Found::Model(ModelDir {
                dir: "model".into(),
                files: s(&["config.json", "generation_config.json", "model.safetensors"]),
                tokenizer: Some((
                    "components/tokenizer".into(),
                    s(&[
                        "tokenizer.json",
                        "tokenizer_config.json",
                        "special_tokens_map.json"
                    ])
                )),
            }))
        );
        // PEFT with the base's weights saved: peft/ on model/, as MLflow loads it.
        let mut peft = files.clone();
        peft.extend(s(&[
            "peft/adapter_config.json",
            "peft/adapter_model.safetensors",
        ]));
        match find_candidate(&peft) {
            Ok(Found::Adapter {
                dir, base: Some(m), ..
            }) => {
                assert_eq!((dir.as_str(), m.dir.as_str()), ("peft", "model"));
                assert!(m.tokenizer.is_some());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ambiguity_and_absence_are_errors_naming_what_was_found() {
        let two = s(&[
            "artifacts/a/adapter_config.json",
            "artifacts/a/adapter_model.safetensors",
            "peft/adapter_config.json",
            "peft/adapter_model.safetensors",
        ]);
        let e = find_candidate(&two).unwrap_err();
        assert!(
            e.contains("2 PEFT adapters") && e.contains("`artifacts/a/`") && e.contains("`peft/`"),
            "{e}"
        );

        let e = find_candidate(&s(&["x/m.gguf", "y/m.gguf"])).unwrap_err();
        assert!(e.contains("`x/m.gguf`") && e.contains("`y/m.gguf`"), "{e}");

        let e = find_candidate(&s(&[
            "a/config.json",
            "a/model.safetensors",
            "b/config.json",
            "b/model.safetensors",
        ]))
        .unwrap_err();
        assert!(e.contains("2 model directories"), "{e}");

        // An adapter beside an unrelated model directory is not the flavor's layout.
        let e = find_candidate(&s(&[
            "artifacts/adapter/adapter_config.json",
            "artifacts/adapter/adapter_model.safetensors",
            "artifacts/merged/config.json",
            "artifacts/merged/model.safetensors",
        ]))
        .unwrap_err();
        assert!(
            e.contains("ambiguous") && e.contains("`artifacts/merged/`"),
            "{e}"
        );

        let e = find_candidate(&s(&[
            "m.gguf",
            "peft/adapter_config.json",
            "peft/adapter_model.safetensors",
        ]))
        .unwrap_err();
        assert!(e.contains("`m.gguf`") && e.contains("`peft/`"), "{e}");

        let e = find_candidate(&s(&["peft/adapter_config.json", "peft/adapter_model.bin"]))
            .unwrap_err();
        assert!(e.contains("pickle") && e.contains("`peft/`"), "{e}");

        let e = find_candidate(&s(&["MLmodel", "python_model.pkl"])).unwrap_err();
        assert!(e.contains("no PEFT adapter"), "{e}");
        assert_eq!(
            find_candidate(&s(&["d/m.gguf", "MLmodel"])),
            Ok(Found::Gguf("d/m.gguf".into()))
        );
    }

    #[test]
    fn only_plain_names_pass() {
        for ok in [
            "adapter_config.json",
            "model-00001-of-00002.safetensors",
            "a b",
            "m+1.gguf",
        ] {
            assert!(safe_component(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a\\b",
            "C:",
            "x\ny",
            "nul\0",
            &"x".repeat(256),
        ] {
            assert!(!safe_component(bad), "{bad:?}");
        }
        assert_eq!(
            components("/0/models/m-1/artifacts/"),
            Ok(s(&["0", "models", "m-1", "artifacts"]))
        );
        assert_eq!(components(""), Ok(vec![]));
        assert!(components("0/../etc").is_err());
        assert!(components("0//x").is_err());
    }

    #[test]
    fn byte_cap_is_a_positive_number_or_refused() {
        let cap = |v| ArtifactLimits::with_max_bytes(v).map(|l| l.max_bytes);
        assert_eq!(cap(Some(" 1234 ")).unwrap(), 1234);
        assert_eq!(cap(None).unwrap(), ArtifactLimits::default().max_bytes);
        for bad in ["0", "-1", "lots", ""] {
            let e = cap(Some(bad)).unwrap_err().to_string();
            assert!(e.contains(MAX_BYTES_ENV), "{e}");
        }
    }
}
