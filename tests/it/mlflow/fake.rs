//! Artifact resolution against fake MLflow servers: `models:/` and `runs:/`
//! chains, hostile listings, the byte cap, ambiguity, local sources.

use super::*;

/// An MLflow API that answers from tables set before it starts and records
/// every request as `METHOD path?query`.
#[derive(Default)]
struct Fake {
    /// (name, version) -> source
    versions: HashMap<(String, String), String>,
    /// run id -> artifact_uri
    runs: HashMap<String, String>,
    /// proxied directory -> its listing entries, as the server writes them
    dirs: HashMap<String, Vec<Value>>,
    /// proxied file -> its bytes
    blobs: HashMap<String, Vec<u8>>,
    seen: Mutex<Vec<String>>,
}

const PROXY: &str = "/api/2.0/mlflow-artifacts/artifacts";

async fn fake_any(
    State(s): State<Arc<Fake>>,
    method: Method,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    s.seen.lock().unwrap().push(format!(
        "{method} {}?{}",
        uri.path(),
        uri.query().unwrap_or("")
    ));
    let arg = |k: &str| q.get(k).cloned().unwrap_or_default();
    let missing = || {
        (
            StatusCode::NOT_FOUND,
            Json(json!({"error_code": "RESOURCE_DOES_NOT_EXIST"})),
        )
            .into_response()
    };
    let path = uri.path();
    if path == "/api/2.0/mlflow/model-versions/get" {
        let (name, version) = (arg("name"), arg("version"));
        return match s.versions.get(&(name.clone(), version.clone())) {
            Some(src) => Json(json!({"model_version": {"name": name, "version": version,
                "source": src, "status": "READY"}}))
            .into_response(),
            None => missing(),
        };
    }
    if path == "/api/2.0/mlflow/runs/get" {
        return match s.runs.get(&arg("run_id")) {
            Some(a) => Json(json!({"run": {"info": {"artifact_uri": a}}})).into_response(),
            None => missing(),
        };
    }
    if path == PROXY {
        return match s.dirs.get(&arg("path")) {
            Some(files) => Json(json!({ "files": files })).into_response(),
            None => Json(json!({})).into_response(),
        };
    }
    if let Some(file) = path.strip_prefix(&format!("{PROXY}/")) {
        return match s.blobs.get(file) {
            Some(b) => b.clone().into_response(),
            None => missing(),
        };
    }
    missing()
}

fn start_fake(f: Fake) -> (String, Arc<Fake>) {
    let state = Arc::new(f);
    let addr = crate::fakes::spawn(
        Router::new()
            .fallback(any(fake_any))
            .with_state(state.clone()),
    );
    (format!("http://{addr}"), state)
}

fn file(name: &str, size: usize) -> Value {
    json!({"path": name, "is_dir": false, "file_size": size})
}

fn subdir(name: &str) -> Value {
    json!({"path": name, "is_dir": true})
}

/// A fake serving the r4 adapter fixture as a pyfunc model under `root`.
fn pyfunc_fake(root: &str) -> Fake {
    let a = fixture("adapters/smollm2-lora-r4");
    let cfg = std::fs::read(a.join("adapter_config.json")).unwrap();
    let w = std::fs::read(a.join("adapter_model.safetensors")).unwrap();
    let mut f = Fake::default();
    f.dirs.insert(
        root.into(),
        vec![
            file("MLmodel", 10),
            file("python_model.pkl", 10),
            subdir("artifacts"),
        ],
    );
    f.dirs
        .insert(format!("{root}/artifacts"), vec![subdir("smollm2-lora-r4")]);
    f.dirs.insert(
        format!("{root}/artifacts/smollm2-lora-r4"),
        vec![
            file("adapter_config.json", cfg.len()),
            file("adapter_model.safetensors", w.len()),
        ],
    );
    f.blobs.insert(
        format!("{root}/artifacts/smollm2-lora-r4/adapter_config.json"),
        cfg,
    );
    f.blobs.insert(
        format!("{root}/artifacts/smollm2-lora-r4/adapter_model.safetensors"),
        w,
    );
    f
}

/// The pyfunc fake, registered as version 1 of `m` with its proxied root as source.
fn registered(root: &str) -> Fake {
    let mut f = pyfunc_fake(root);
    f.versions.insert(
        ("m".into(), "1".into()),
        format!("mlflow-artifacts:/{root}"),
    );
    f
}

/// Local sources are read under the temporary directory and the model cache.
fn fetch(
    url: &str,
    name: &str,
    version: &str,
    cache: &Path,
    limits: ArtifactLimits,
) -> Result<String, String> {
    let roots = vec![
        std::env::temp_dir(),
        model_path("smollm2").parent().unwrap().to_path_buf(),
    ];
    fetch_in(url, name, version, cache, limits, roots)
}

fn fetch_in(
    url: &str,
    name: &str,
    version: &str,
    cache: &Path,
    limits: ArtifactLimits,
    artifact_roots: Vec<PathBuf>,
) -> Result<String, String> {
    let cfg = probegate::adapters::serve::config::MlflowConfig {
        tracking_uri: url.to_string(),
        webhook_secret: "unused".into(),
        token: None,
        max_skew_seconds: 300,
        artifact_roots,
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(mlflow_fetch(&cfg, name, version, "smollm2", cache, &limits))
        .map_err(|e| e.to_string())
}

fn downloads(f: &Fake) -> Vec<String> {
    f.seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.starts_with(&format!("GET {PROXY}/")))
        .cloned()
        .collect()
}

#[test]
fn models_and_runs_sources_are_followed_to_the_proxied_adapter() {
    let root = "0/r1/artifacts/model";
    let mut f = pyfunc_fake(root);
    // copy_model_version's `models:/<name>/<version>`, then MLflow 2's `runs:/`.
    f.versions
        .insert(("prod".into(), "3".into()), "models:/staging/7".into());
    f.versions
        .insert(("staging".into(), "7".into()), "runs:/r1/model".into());
    f.runs
        .insert("r1".into(), "mlflow-artifacts:/0/r1/artifacts".into());
    f.versions
        .insert(("s3".into(), "1".into()), "s3://bucket/models/1".into());
    f.versions.insert(
        ("elsewhere".into(), "1".into()),
        "mlflow-artifacts://10.0.0.9:5000/0/x".into(),
    );
    let (url, f) = start_fake(f);
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("job-1");

    let r = fetch(&url, "prod", "3", &cache, ArtifactLimits::default()).unwrap();
    assert_eq!(r, format!("smollm2+{}", cache.join("adapter").display()));
    let a = fixture("adapters/smollm2-lora-r4");
    for name in ["adapter_config.json", "adapter_model.safetensors"] {
        assert_eq!(
            std::fs::read(cache.join("adapter").join(name)).unwrap(),
            std::fs::read(a.join(name)).unwrap(),
            "{name}"
        );
    }
    // Only the candidate's files were downloaded, not the pickle or MLmodel.
    let got = downloads(&f);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got.iter()
            .all(|r| r.contains("/artifacts/smollm2-lora-r4/")),
        "{got:?}"
    );
    assert!(f
        .seen
        .lock()
        .unwrap()
        .iter()
        .any(|r| r == "GET /api/2.0/mlflow/runs/get?run_id=r1"));

    let e = fetch(&url, "s3", "1", &cache, ArtifactLimits::default()).unwrap_err();
    assert!(
        e.contains("`s3` artifacts are not read") && e.contains("s3://bucket"),
        "{e}"
    );
    let e = fetch(&url, "elsewhere", "1", &cache, ArtifactLimits::default()).unwrap_err();
    assert!(e.contains("10.0.0.9:5000"), "{e}");
    let e = fetch(&url, "nope", "1", &cache, ArtifactLimits::default()).unwrap_err();
    assert!(e.contains("404"), "{e}");
}

#[test]
fn hostile_listings_are_refused_before_any_download_or_write() {
    for evil in [
        "..",
        "../../etc",
        "/etc/passwd",
        "a/../../b",
        "x\\..\\y",
        "c:",
        "nul\u{0}",
    ] {
        let root = "0/m-1/artifacts";
        let mut f = registered(root);
        // The hostile name sits beside a valid adapter, listed first.
        f.dirs
            .get_mut(&format!("{root}/artifacts"))
            .unwrap()
            .insert(0, file(evil, 4));
        let (url, f) = start_fake(f);
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("job");
        let e = fetch(&url, "m", "1", &cache, ArtifactLimits::default()).unwrap_err();
        assert!(e.contains("refused"), "{evil:?}: {e}");
        assert!(downloads(&f).is_empty(), "{evil:?}: {:?}", downloads(&f));
        assert!(!cache.exists(), "{evil:?}: nothing written");
        // No request ever named the hostile path.
        let seen = f.seen.lock().unwrap().clone();
        assert!(!seen.iter().any(|r| r.contains("etc")), "{seen:?}");
    }
}

#[test]
fn the_byte_cap_holds_whatever_the_listing_claims() {
    let root = "0/m-2/artifacts";
    let small = ArtifactLimits {
        max_bytes: 100_000,
        ..ArtifactLimits::default()
    };
    // Honest listing over the cap: refused before any download.
    let f = registered(root);
    let (url, f) = start_fake(f);
    let tmp = tempfile::tempdir().unwrap();
    let e = fetch(&url, "m", "1", &tmp.path().join("a"), small).unwrap_err();
    assert!(e.contains("100000 byte cap"), "{e}");
    assert!(downloads(&f).is_empty());

    // A listing that understates the size: the download stops at the cap,
    // and its partial file is gone.
    let mut f = registered(root);
    f.dirs
        .get_mut(&format!("{root}/artifacts/smollm2-lora-r4"))
        .unwrap()[1] = file("adapter_model.safetensors", 10);
    let (url, f) = start_fake(f);
    let cache = tmp.path().join("b");
    let e = fetch(&url, "m", "1", &cache, small).unwrap_err();
    assert!(e.contains("exceed 100000 bytes"), "{e}");
    assert!(!downloads(&f).is_empty());
    let left: Vec<_> = walk(&cache);
    assert!(
        !left
            .iter()
            .any(|p| p.ends_with("adapter_model.safetensors") || p.ends_with(".partial")),
        "{left:?}"
    );

    // Under a generous cap the understated listing is still caught: a
    // truncated or swapped file never passes as the one listed.
    let mut f = registered(root);
    f.dirs
        .get_mut(&format!("{root}/artifacts/smollm2-lora-r4"))
        .unwrap()[1] = file("adapter_model.safetensors", 10);
    let (url, _f) = start_fake(f);
    let e = fetch(
        &url,
        "m",
        "1",
        &tmp.path().join("c"),
        ArtifactLimits::default(),
    )
    .unwrap_err();
    assert!(e.contains("the listing says 10"), "{e}");
}

#[test]
fn two_adapters_in_one_version_is_an_error_naming_both() {
    let root = "0/m-3/artifacts";
    let mut f = registered(root);
    f.dirs.get_mut(root).unwrap().push(subdir("peft"));
    f.dirs.insert(
        format!("{root}/peft"),
        vec![
            file("adapter_config.json", 10),
            file("adapter_model.safetensors", 10),
        ],
    );
    let (url, f) = start_fake(f);
    let tmp = tempfile::tempdir().unwrap();
    let e = fetch(
        &url,
        "m",
        "1",
        &tmp.path().join("x"),
        ArtifactLimits::default(),
    )
    .unwrap_err();
    assert!(
        e.contains("2 PEFT adapters")
            && e.contains("`artifacts/smollm2-lora-r4/`")
            && e.contains("`peft/`"),
        "{e}"
    );
    assert!(downloads(&f).is_empty());
}

#[test]
fn local_sources_are_linked_in_place_with_the_same_layout_rules() {
    // A file:// store laid out as the transformers flavor's PEFT save.
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = fixture("adapters/smollm2-lora-r4");
    std::fs::create_dir_all(store.join("peft")).unwrap();
    for name in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(a.join(name), store.join("peft").join(name)).unwrap();
    }
    std::fs::write(store.join("MLmodel"), "flavors: {}\n").unwrap();
    let mut f = Fake::default();
    f.versions.insert(
        ("m".into(), "1".into()),
        format!("file://{}", store.display()),
    );
    let gguf = model_path("smollm2");
    f.versions
        .insert(("m".into(), "2".into()), gguf.display().to_string());
    let (url, f) = start_fake(f);
    let cache = tmp.path().join("cache");
    let r = fetch(&url, "m", "1", &cache, ArtifactLimits::default()).unwrap();
    assert_eq!(r, format!("smollm2+{}", cache.join("adapter").display()));
    assert_eq!(
        std::fs::canonicalize(cache.join("adapter/adapter_model.safetensors")).unwrap(),
        std::fs::canonicalize(store.join("peft/adapter_model.safetensors")).unwrap()
    );
    let r = fetch(&url, "m", "2", &cache, ArtifactLimits::default()).unwrap();
    let name = gguf.file_name().unwrap();
    assert_eq!(r, cache.join(name).display().to_string());
    assert!(
        !cache.join("adapter").exists(),
        "the cache is emptied per fetch"
    );
    assert!(downloads(&f).is_empty());
}

/// A version's source is the registrant's word: before artifact_roots, any
/// path the server could read was fetched and gated (a source of /etc, or a
/// link or `..` out of the artifact store, became the "candidate").
#[test]
fn local_sources_outside_the_artifact_roots_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("artifacts");
    let store = root.join("m1");
    std::fs::create_dir_all(&store).unwrap();
    let a = fixture("adapters/smollm2-lora-r4");
    for name in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(a.join(name), store.join(name)).unwrap();
    }
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    for name in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(a.join(name), outside.join(name)).unwrap();
    }
    std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
    let mut f = Fake::default();
    let sources = [
        ("1", format!("file://{}", store.display())),
        ("2", outside.display().to_string()),
        ("3", root.join("link").display().to_string()),
        ("4", format!("{}/../outside", root.display())),
    ];
    for (v, s) in &sources {
        f.versions.insert(("m".into(), v.to_string()), s.clone());
    }
    let (url, _f) = start_fake(f);
    let cache = tmp.path().join("cache");
    let get = |v: &str, roots: Vec<PathBuf>| {
        fetch_in(&url, "m", v, &cache, ArtifactLimits::default(), roots)
    };
    let r = get("1", vec![root.clone()]).unwrap();
    assert_eq!(r, format!("smollm2+{}", cache.join("adapter").display()));
    for v in ["2", "3", "4"] {
        let e = get(v, vec![root.clone()]).unwrap_err();
        assert!(e.contains("outside [mlflow] artifact_roots"), "{v}: {e}");
    }
    let e = get("1", vec![]).unwrap_err();
    assert!(e.contains("artifact_roots names no directory"), "{e}");

    // A source spelled `<store>+<other adapter>` (as a reference joins a
    // base and an adapter) is one directory: the adapter gated is the one
    // registered there, never the one after the '+'.
    let plus = PathBuf::from(format!(
        "{}+{}",
        root.join("x").display(),
        outside.display()
    ));
    std::fs::create_dir_all(&plus).unwrap();
    let rs = fixture("adapters/smollm2-rslora-r4");
    for name in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(rs.join(name), plus.join(name)).unwrap();
    }
    let mut f = Fake::default();
    f.versions
        .insert(("m".into(), "5".into()), plus.display().to_string());
    let (url, _f) = start_fake(f);
    let r = fetch_in(
        &url,
        "m",
        "5",
        &cache,
        ArtifactLimits::default(),
        vec![root.clone()],
    )
    .unwrap();
    assert_eq!(r, format!("smollm2+{}", cache.join("adapter").display()));
    assert_eq!(
        std::fs::read(cache.join("adapter/adapter_config.json")).unwrap(),
        std::fs::read(rs.join("adapter_config.json")).unwrap(),
        "the registered adapter is gated"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
