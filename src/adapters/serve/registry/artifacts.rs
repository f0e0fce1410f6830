//! Finding the one candidate in an MLflow artifact tree, and the limits and
//! name checks that keep a listing from reaching outside it.

use super::{select_files, CandidateFiles};
use crate::error::{Error, Result};

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

    pub(super) fn with_max_bytes(v: Option<&str>) -> Result<Self> {
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
pub(super) fn components(path: &str) -> std::result::Result<Vec<String>, String> {
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

pub(super) fn parent_of(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

pub(super) fn join(dir: &str, name: &str) -> String {
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
