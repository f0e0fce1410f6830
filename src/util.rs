//! The bottom layer: file utilities every other module may use and none of
//! which knows about models. Atomic writes (one temp file per process,
//! removed on failure), JSON and JSONL reading with line numbers, canonical
//! safetensors writing, and line numbers for errors in config files.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use candle_core::Tensor;

use crate::error::{Error, Result};

/// The seed every seeded step defaults to (data splits, bootstrap intervals,
/// threshold validation splits), so two runs on the same inputs agree.
pub const DEFAULT_SEED: u64 = 20261127;

/// Prompts per forward-pass batch: enough to keep the GEMMs busy on two
/// cores, small enough that 512-token prompts stay in memory.
pub const DEFAULT_BATCH_SIZE: usize = 16;

/// A closed set of named values a user picks from (a flag, a config
/// field). Domain types list their names here and stay free of any
/// command-line crate; the binary turns `ALL` into its flag parser.
pub trait Choice: Copy + PartialEq + Send + Sync + 'static {
    const ALL: &'static [Self];
    /// The name a user types.
    fn name(self) -> &'static str;
    /// One line for `--help`.
    fn help(self) -> &'static str;
    fn from_name(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.name() == s)
    }
}

/// Declares a [`Choice`] enum: each variant's name, and its doc comment as
/// its help line. `as_str`, Display, Serialize and Deserialize all use the name, so
/// the word a user types on the command line is the word in every file;
/// `| "old"` after a name accepts an older spelling when reading.
macro_rules! choices {
    (
        $(#[$meta:meta])*
        $vis:vis enum $t:ident {
            $( $(#[doc = $doc:literal])* $v:ident = $name:literal $(| $alias:literal)* ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $t {
            $( $(#[doc = $doc])* $v ),*
        }

        impl $t {
            /// The name: what a user types and every file holds.
            #[allow(dead_code)]
            pub fn as_str(self) -> &'static str {
                match self { $($t::$v => $name),* }
            }
        }

        impl $crate::util::Choice for $t {
            const ALL: &'static [Self] = &[$($t::$v),*];
            fn name(self) -> &'static str {
                self.as_str()
            }
            fn help(self) -> &'static str {
                match self { $($t::$v => concat!("" $(, $doc)*).trim()),* }
            }
        }

        impl ::std::fmt::Display for $t {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str($crate::util::Choice::name(*self))
            }
        }

        impl ::serde::Serialize for $t {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> ::std::result::Result<S::Ok, S::Error> {
                s.serialize_str($crate::util::Choice::name(*self))
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $t {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> ::std::result::Result<Self, D::Error> {
                let s = <::std::string::String as ::serde::Deserialize>::deserialize(d)?;
                match s.as_str() {
                    $($name $(| $alias)* => Ok($t::$v),)*
                    other => Err(::serde::de::Error::unknown_variant(other, &[$($name),*])),
                }
            }
        }
    };
}
pub(crate) use choices;

/// The temporary sibling a file is written to before it is renamed into place.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}

/// Writes tensors with string metadata to `path` atomically (temp file, then rename).
pub fn save_safetensors(
    tensors: Vec<(String, Tensor)>,
    metadata: HashMap<String, String>,
    path: &Path,
) -> Result<()> {
    let data: Vec<(String, Tensor)> = tensors
        .into_iter()
        .map(|(n, t)| Ok((n, t.contiguous()?)))
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(data, Some(metadata))
        .map_err(|e| Error::io(path, std::io::Error::other(e.to_string())))?;
    write_canonical_safetensors(bytes, path)
}

/// Writes serialized safetensors bytes atomically, with the JSON header's
/// keys sorted: the crate writes its metadata map in hash order, and equal
/// inputs must give byte-identical files (fingerprints, a seeded zoo).
pub fn write_canonical_safetensors(mut bytes: Vec<u8>, path: &Path) -> Result<()> {
    fn sorted(v: &serde_json::Value) -> String {
        match v {
            serde_json::Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let parts: Vec<String> = keys
                    .iter()
                    .map(|k| {
                        format!(
                            "{}:{}",
                            serde_json::Value::String((*k).clone()),
                            sorted(&m[*k])
                        )
                    })
                    .collect();
                format!("{{{}}}", parts.join(","))
            }
            other => other.to_string(),
        }
    }
    if bytes.len() >= 8 {
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap_or([0; 8])) as usize;
        if let Some(header) = bytes.get(8..8 + n) {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(header) {
                let canon = sorted(&v).into_bytes();
                // Same entries, same length: only the order changes.
                if canon.len() <= n {
                    bytes[8..8 + canon.len()].copy_from_slice(&canon);
                    bytes[8 + canon.len()..8 + n].fill(b' ');
                }
            }
        }
    }
    write_atomic(path, &bytes)
}

/// sha256 over the texts in order (NUL-separated): the dataset part of cache keys.
pub fn texts_sha256(texts: &[String]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for t in texts {
        h.update(t.as_bytes());
        h.update([0u8]);
    }
    hex::encode(h.finalize())
}

/// Writes `bytes` to `path` atomically: readers see the old file or the new
/// one, never a torn write, and a failed write leaves no temporary behind.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes).map_err(|e| Error::io(path, e)))
}

/// [`write_atomic`] for content produced by a writer (streamed, not held in memory).
pub fn write_atomic_with(
    path: &Path,
    f: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> Result<()>,
) -> Result<()> {
    let tmp = tmp_path(path);
    let res = (|| {
        let file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut w = std::io::BufWriter::new(file);
        f(&mut w)?;
        w.flush().map_err(|e| Error::io(&tmp, e))?;
        drop(w);
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Reads a JSON file into `T`; a parse error names the line and column.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = crate::assets::read_bounded(
        path,
        crate::assets::MAX_SMALL_FILE_BYTES,
        "JSON metadata file",
    )?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::field(
            path,
            format!("line {} column {}", e.line(), e.column()),
            e.to_string(),
        )
    })
}

/// Calls `f(line_number, value)` for each non-blank line of a JSONL file;
/// bytes that are not UTF-8 or lines that are not JSON are errors naming the line.
pub fn for_each_json_line(
    path: &Path,
    mut f: impl FnMut(usize, serde_json::Value) -> Result<()>,
) -> Result<()> {
    // On disk or built into the binary (`builtin:data/...`).
    let reader = crate::assets::open(path)?;
    for (i, line) in reader.split(b'\n').enumerate() {
        let lineno = i + 1;
        let bytes = line.map_err(|e| Error::io(path, e))?;
        let line = String::from_utf8(bytes)
            .map_err(|e| Error::input(path, lineno, format!("not valid UTF-8 ({e})")))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| Error::input(path, lineno, format!("not a JSON object: {e}")))?;
        f(lineno, v)?;
    }
    Ok(())
}

/// Reads JSONL prompts: one object per line with a string `text`; other
/// fields are ignored and blank lines skipped.
pub fn read_prompts(path: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for_each_json_line(path, |lineno, v| {
        match v.get("text") {
            Some(serde_json::Value::String(s)) if !s.is_empty() => out.push(s.clone()),
            Some(serde_json::Value::String(_)) => {
                return Err(Error::input(path, lineno, "field `text` is empty"))
            }
            Some(_) => return Err(Error::input(path, lineno, "field `text` is not a string")),
            None => return Err(Error::input(path, lineno, "missing field `text`")),
        }
        Ok(())
    })?;
    if out.is_empty() {
        return Err(Error::input(
            path,
            0,
            "no prompts: the file has no lines with a `text` field",
        ));
    }
    Ok(out)
}

/// Parses a TOML config file's text into `T`; an error names the line.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    toml::from_str(text).map_err(|e| toml_error(&e, text, path))
}

/// A TOML error in `text` (the file at `path`), at its line, naming the
/// field when the error is about a value.
pub fn toml_error(e: &toml::de::Error, text: &str, path: &Path) -> Error {
    toml_error_at(e.message(), text, path, e.span().map(|s| s.start))
}

/// A TOML error's `msg` at byte `offset` of `text` (the file at `path`):
/// its line, and the field whose value stands there, since toml's type
/// errors ("invalid type: integer `1`, expected a boolean") say what was
/// expected but not of which field. For errors whose span is not in `text`
/// as toml saw it (a policy merged from several files).
pub fn toml_error_at(msg: &str, text: &str, path: &Path, offset: Option<usize>) -> Error {
    let line = offset.map(|o| line_of(text, o)).unwrap_or(0);
    let msg = msg.trim();
    let msg = match offset.and_then(|o| key_at(text, o)) {
        Some(k) => format!("field `{k}`: {msg}"),
        None => msg.to_string(),
    };
    Error::input(path, line, msg)
}

/// The dotted key (`budget.stop_at_verdict`) of the `key = value` line whose
/// value holds `offset`, with the `[table]` it sits under; `None` when the
/// offset is not in a value (an error about a key names the key itself).
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let start = text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let line = text.get(start..)?.lines().next()?;
    let eq = line.find('=')?;
    if offset <= start + eq {
        return None;
    }
    let key = line[..eq].trim();
    let plain = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    if !plain(key) {
        return None;
    }
    let table = text[..start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim())
        .filter(|t| plain(t));
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_string(),
    })
}

/// The 1-based line of a byte offset in a config file (for errors with spans).
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Test set-up: each `(path, contents)` written under `root`, parent
/// directories created (a fake repository, a fake checkpoint directory).
#[cfg(test)]
pub(crate) fn write_tree(root: &Path, files: &[(&str, &str)]) {
    for (rel, text) in files {
        let p = root.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&p, text).unwrap();
    }
}

/// Bytes this process can still take: the smaller of the kernel's
/// `MemAvailable` and the cgroup v2 limit's headroom (a CI container sees the
/// host's /proc/meminfo but is killed at its own limit). `None` off Linux.
pub fn available_memory() -> Option<u64> {
    let mut avail = meminfo_bytes("MemAvailable")?;
    let read = |f: &str| -> Option<u64> {
        std::fs::read_to_string(Path::new("/sys/fs/cgroup").join(f))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    // "max" (no limit) does not parse and leaves MemAvailable alone.
    if let (Some(max), Some(cur)) = (read("memory.max"), read("memory.current")) {
        avail = avail.min(max.saturating_sub(cur));
    }
    Some(avail)
}

/// One `/proc/meminfo` field (`MemAvailable`, `MemTotal`...) in bytes.
fn meminfo_bytes(field: &str) -> Option<u64> {
    let kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_atomic_write_keeps_the_old_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("report.json");
        write_atomic(&p, b"old").unwrap();
        let e = write_atomic_with(&p, |w| {
            w.write_all(b"half").map_err(|e| Error::io(&p, e))?;
            Err(Error::Usage("interrupted".into()))
        });
        assert!(e.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }

    choices! {
        /// A choice for the test below.
        #[derive(PartialOrd, Ord)]
        enum Shade {
            /// Light.
            Light = "light",
            /// Two words, once written with an underscore.
            DarkBlue = "dark-blue" | "dark_blue",
        }
    }

    #[test]
    fn a_choice_is_written_and_read_by_its_name() {
        assert_eq!(
            serde_json::to_string(&Shade::DarkBlue).unwrap(),
            "\"dark-blue\""
        );
        for (text, want) in [
            ("\"light\"", Shade::Light),
            ("\"dark-blue\"", Shade::DarkBlue),
            ("\"dark_blue\"", Shade::DarkBlue),
        ] {
            assert_eq!(serde_json::from_str::<Shade>(text).unwrap(), want);
        }
        let e = serde_json::from_str::<Shade>("\"Light\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown variant `Light`, expected `light` or `dark-blue`"),
            "{e}"
        );
        // As a map key, as the pooled activations are keyed.
        let m: std::collections::BTreeMap<Shade, u8> =
            serde_json::from_str(r#"{"dark_blue":1,"light":2}"#).unwrap();
        assert_eq!(m[&Shade::DarkBlue], 1);
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"light":2,"dark-blue":1}"#
        );
        assert_eq!(
            Shade::DarkBlue.help(),
            "Two words, once written with an underscore."
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn available_memory_is_read_on_linux() {
        let b = available_memory().expect("MemAvailable");
        assert!(b > 0);
        assert!(b <= meminfo_bytes("MemTotal").expect("MemTotal"));
    }
}
