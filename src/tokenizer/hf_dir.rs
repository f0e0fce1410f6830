//! Hugging Face directories (`tokenizer.json` and its config), encoding,
//! decoding and serialization.

use std::path::Path;

use tokenizers::Tokenizer;

use super::mirror::template_processing;
use super::{ConfigInfo, ModelTokenizer, Result, SpecialTokens, TokenizerError};

fn config_token(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => {
            o.get("content").and_then(|c| c.as_str()).map(str::to_owned)
        }
        _ => None,
    }
}

/// The largest tokenizer.json read (Gemma 3's is 33 MB); its config files
/// are kilobytes.
const MAX_TOKENIZER_BYTES: u64 = 256 << 20;
const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// `path` as text, refused unless a regular file of at most `limit` bytes:
/// a link to /dev/zero or a file of gigabytes is an error naming the file,
/// never an exhausted memory.
fn read_text(path: &Path, limit: u64) -> Result<String> {
    crate::bounded::read_text(path, limit, "tokenizer file").map_err(|e| TokenizerError::Io {
        file: path.to_path_buf(),
        source: e,
    })
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = read_text(path, MAX_CONFIG_BYTES)?;
    serde_json::from_str(&text).map_err(|e| TokenizerError::Parse {
        file: path.to_path_buf(),
        field: "(whole file)".into(),
        reason: e.to_string(),
    })
}

impl ModelTokenizer {
    /// Load `dir/tokenizer.json`, plus `dir/tokenizer_config.json` (and `special_tokens_map.json`)
    /// when present. As in transformers: if the config states `add_bos_token` or `add_eos_token`
    /// (or tokenizer.json has no post-processor), the post-processor is replaced by one that adds
    /// exactly those; otherwise tokenizer.json's own post-processor is kept. Either way BOS is
    /// added at most once.
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let tj = dir.join("tokenizer.json");
        // `exists`, not `is_file`: a link to a device must be refused by
        // name, not reported missing.
        if !tj.exists() {
            return Err(TokenizerError::Io {
                file: tj,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "tokenizer.json not found",
                ),
            });
        }
        let text = read_text(&tj, MAX_TOKENIZER_BYTES)?;
        let mut tk: Tokenizer =
            text.parse()
                .map_err(|e: tokenizers::Error| TokenizerError::Parse {
                    file: tj.clone(),
                    field: "(whole file)".into(),
                    reason: e.to_string(),
                })?;

        let cfg_path = dir.join("tokenizer_config.json");
        // Present but unreadable is an error, never a config silently skipped.
        let cfg = if cfg_path.exists() {
            Some(read_json(&cfg_path)?)
        } else {
            None
        };
        let stm_path = dir.join("special_tokens_map.json");
        let stm = if stm_path.exists() {
            Some(read_json(&stm_path)?)
        } else {
            None
        };
        let lookup = |key: &str| {
            config_token(cfg.as_ref().and_then(|c| c.get(key)))
                .or_else(|| config_token(stm.as_ref().and_then(|c| c.get(key))))
        };
        let bool_field = |key: &str| -> Result<Option<bool>> {
            match cfg.as_ref().and_then(|c| c.get(key)) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::Bool(b)) => Ok(Some(*b)),
                Some(other) => Err(TokenizerError::Parse {
                    file: cfg_path.clone(),
                    field: key.into(),
                    reason: format!("expected a bool, found {other}"),
                }),
            }
        };
        let (mut bos_tok, mut eos_tok, unk_tok, pad_tok) = (
            lookup("bos_token"),
            lookup("eos_token"),
            lookup("unk_token"),
            lookup("pad_token"),
        );
        let add_bos_cfg = bool_field("add_bos_token")?;
        let add_eos_cfg = bool_field("add_eos_token")?;

        let id_of = |t: &Option<String>| t.as_ref().and_then(|s| tk.token_to_id(s));
        let (mut bos_id, mut eos_id, pad_id) = (id_of(&bos_tok), id_of(&eos_tok), id_of(&pad_tok));

        let replace_pp =
            add_bos_cfg.is_some() || add_eos_cfg.is_some() || tk.get_post_processor().is_none();
        let (add_bos, add_eos) = if replace_pp {
            let bos_pair = match (&bos_tok, bos_id, add_bos_cfg.unwrap_or(false)) {
                (Some(t), Some(id), true) => Some((t.as_str(), id)),
                _ => None,
            };
            let eos_pair = match (&eos_tok, eos_id, add_eos_cfg.unwrap_or(false)) {
                (Some(t), Some(id), true) => Some((t.as_str(), id)),
                _ => None,
            };
            let pp =
                template_processing(bos_pair, eos_pair).map_err(|e| TokenizerError::Build {
                    file: cfg_path.clone(),
                    field: "add_bos_token".into(),
                    reason: e,
                })?;
            tk.with_post_processor(Some(pp));
            (bos_pair.is_some(), eos_pair.is_some())
        } else {
            // Keep tokenizer.json's post-processor; find out what it adds.
            let probe = |special: bool| tk.encode("a", special).map(|e| e.get_ids().to_vec());
            let with = probe(true).map_err(|e| TokenizerError::Build {
                file: tj.clone(),
                field: "post_processor".into(),
                reason: e.to_string(),
            })?;
            let without = probe(false).map_err(|e| TokenizerError::Build {
                file: tj.clone(),
                field: "post_processor".into(),
                reason: e.to_string(),
            })?;
            // What the post-processor puts around the text: the prefix before the text's own ids,
            // the suffix after them. Without a configured BOS/EOS, those tokens are taken as such.
            let pos = with
                .windows(without.len().max(1))
                .position(|w| w == without.as_slice())
                .filter(|_| !without.is_empty() && with.len() > without.len());
            let (prefix, suffix) = match pos {
                Some(p) => (&with[..p], &with[p + without.len()..]),
                None => (&with[..0], &with[..0]),
            };
            if bos_id.is_none() && prefix.len() == 1 {
                bos_id = Some(prefix[0]);
            }
            if eos_id.is_none() && suffix.len() == 1 {
                eos_id = Some(suffix[0]);
            }
            if bos_tok.is_none() {
                bos_tok = bos_id.and_then(|i| tk.id_to_token(i));
            }
            if eos_tok.is_none() {
                eos_tok = eos_id.and_then(|i| tk.id_to_token(i));
            }
            let added_front = bos_id.is_some_and(|b| prefix.contains(&b));
            let added_back = eos_id.is_some_and(|e| suffix.contains(&e));
            (added_front, added_back)
        };

        Ok(Self {
            inner: tk,
            special: SpecialTokens {
                add_bos,
                bos_id,
                eos_id,
                pad_id,
            },
            config: ConfigInfo::new(add_eos, [bos_tok, eos_tok, unk_tok, pad_tok]),
        })
    }

    /// Encode one text into ids exactly as transformers would (`tok(text)["input_ids"]`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Decode ids to text (special tokens skipped when `skip_special`).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    /// A `tokenizer.json` equivalent to this tokenizer.
    pub fn to_tokenizer_json(&self) -> Result<String> {
        self.inner
            .to_string(false)
            .map_err(|e| TokenizerError::Serialize(e.to_string()))
    }

    /// The matching `tokenizer_config.json` content.
    pub fn tokenizer_config_json(&self) -> serde_json::Value {
        serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "add_bos_token": self.special.add_bos,
            "add_eos_token": self.config.add_eos,
            "bos_token": self.config.bos_token,
            "eos_token": self.config.eos_token,
            "unk_token": self.config.unk_token,
            "pad_token": self.config.pad_token,
            "clean_up_tokenization_spaces": false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORDS: &str = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
        "normalizer":null,"pre_tokenizer":null,"post_processor":null,"decoder":null,
        "model":{"type":"WordLevel","vocab":{"a":0,"[UNK]":1},"unk_token":"[UNK]"}}"#;

    /// The error loading `dir` gives; it must name `file` and say `why`.
    fn refused(dir: &Path, file: &str, why: &str) {
        match ModelTokenizer::from_hf_dir(dir) {
            Ok(_) => panic!("{}: loaded", dir.display()),
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains(file) && e.contains(why), "{e}");
            }
        }
    }

    /// A tokenizer file that is a link to a device, or far larger than any
    /// real one, is refused naming it: never read until memory runs out,
    /// never skipped as if absent.
    #[test]
    fn hostile_tokenizer_files_are_refused_by_name() {
        let d = tempfile::tempdir().unwrap();
        let tj = d.path().join("tokenizer.json");
        std::os::unix::fs::symlink("/dev/zero", &tj).unwrap();
        refused(d.path(), "tokenizer.json", "not a regular file");

        std::fs::remove_file(&tj).unwrap();
        let big = std::fs::File::create(&tj).unwrap();
        big.set_len(MAX_TOKENIZER_BYTES + 1).unwrap(); // sparse: no disk used
        refused(d.path(), "tokenizer.json", "larger than");

        std::fs::write(&tj, WORDS).unwrap();
        assert!(ModelTokenizer::from_hf_dir(d.path()).is_ok());
        let cfg = d.path().join("tokenizer_config.json");
        std::os::unix::fs::symlink("/dev/zero", &cfg).unwrap();
        refused(d.path(), "tokenizer_config.json", "not a regular file");
    }
}
