//! Small helpers shared by the integration tests: locating the real models,
//! running the binary, comparing activations.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use probegate::checkpoint::{known_model_path, Checkpoint};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(rel: &str) -> PathBuf {
    repo().join("fixtures").join(rel)
}

/// Path to a fetched real model; fails (never skips) when it is missing.
pub fn model_path(alias: &str) -> PathBuf {
    let p = known_model_path(alias).expect("known alias");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/fetch-models.sh {alias} (the tests need the real models)",
        p.display()
    );
    p
}

pub fn open(alias: &str) -> Checkpoint {
    Checkpoint::open_str(&model_path(alias).display().to_string()).expect("open real model")
}

pub fn prompts() -> Vec<String> {
    probegate::util::read_prompts(&fixture("reference/prompts.jsonl")).expect("prompts")
}

/// The `probegate` binary, with a clean environment for hub variables.
pub fn bin() -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("probegate").expect("binary");
    c.env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_HOME");
    c
}

/// Asserts a run was "could not evaluate" (exit 2) and its stderr names
/// every one of `needles`.
pub fn assert_exit_2_naming(o: &std::process::Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    for n in needles {
        assert!(err.contains(n), "stderr does not name {n:?}: {err}");
    }
}

/// Load the transformers reference tensors written by scripts/reference/make_reference.py.
pub fn reference(model: &str) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(
        fixture(&format!("reference/{model}.safetensors")),
        &Device::Cpu,
    )
    .expect("reference fixture")
}

pub fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_vec2::<f32>().expect("2d f32")
}

pub use probegate::gate::features::cosine;

/// max |a-b| / max |b| over the whole tensor.
pub fn rel_max_diff(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (rows(a), rows(b));
    let mut num = 0f64;
    let mut den = 0f64;
    for (ra, rb) in a.iter().zip(&b) {
        for (x, y) in ra.iter().zip(rb) {
            num = num.max((*x as f64 - *y as f64).abs());
            den = den.max((*y as f64).abs());
        }
    }
    num / den.max(1e-30)
}

/// SmolLM2 converted to a Hugging Face directory once per test binary.
pub fn converted_smollm2() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let ck = open("smollm2");
        probegate::export::convert(
            &ck,
            dir.path(),
            probegate::export::OutDtype::F32,
            &mut || {},
        )
        .expect("convert");
        dir
    })
    .path()
}

/// Run git in `dir` (as a fixed author); its trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "u")
        .env("GIT_AUTHOR_EMAIL", "u@example.com")
        .env("GIT_COMMITTER_NAME", "u")
        .env("GIT_COMMITTER_EMAIL", "u@example.com")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// Copies a directory tree; symlinks stay links, and a copy over an earlier
/// one replaces what is there, as tar does.
pub fn copy_dir(from: &Path, to: &Path) {
    tree(from, to, |p, t| {
        std::fs::copy(p, t).unwrap();
    })
}

/// [`copy_dir`] with files hard-linked where the file system allows (a copy
/// elsewhere). For a cache restored into a test's workspace: probegate
/// replaces files by rename and never writes one in place, so a link reads
/// as a copy does, and this machine's activation cache (up to 4 GiB) is not
/// duplicated once per test on a disk that may be nearly full.
pub fn link_dir(from: &Path, to: &Path) {
    tree(from, to, |p, t| {
        let _ = std::fs::remove_file(t);
        if std::fs::hard_link(p, t).is_err() {
            match std::fs::copy(p, t) {
                // Evicted by a test running beside this one: a cache restores what it holds.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                r => {
                    r.unwrap();
                }
            }
        }
    })
}

fn tree(from: &Path, to: &Path, file: impl Fn(&Path, &Path) + Copy) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (p, t) = (e.path(), to.join(e.file_name()));
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            tree(&p, &t, file);
        } else if ft.is_symlink() {
            let _ = std::fs::remove_file(&t);
            std::os::unix::fs::symlink(std::fs::read_link(&p).unwrap(), &t).unwrap();
        } else {
            file(&p, &t);
        }
    }
}
