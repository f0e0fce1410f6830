//! An MLflow model version's candidate onto this machine: its artifact tree
//! listed (through the tracking server's proxy or a mounted store) within
//! ArtifactLimits, the candidate found, what it needs planned, and each file
//! downloaded or linked into the cache.

use std::path::{Path, PathBuf};

use super::artifacts::{
    find_candidate, join, parent_of, safe_component, ArtifactLimits, Found, ModelDir, MAX_BYTES_ENV,
};
use super::mlflow::{source_of, Api, Store};
use super::{auth, remote};
use crate::adapters::serve::config::MlflowConfig;
use crate::error::{Error, Result};

impl Api<'_> {
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
