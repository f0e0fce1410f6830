//! Tokenizers built from GGUF metadata, matching Hugging Face transformers id for id.
//!
//! A GGUF file carries no `tokenizer.json`; it stores the vocabulary, merges, token types and
//! special-token ids under llama.cpp's `tokenizer.ggml.*` keys. transformers rebuilds a fast
//! tokenizer from those (`integrations/gguf/gguf_tokenizer_mapping.py` in transformers 5.x) and
//! this module reproduces that construction exactly, so that
//! `ModelTokenizer::from_gguf_metadata(..).encode(text)` equals
//! `AutoTokenizer.from_pretrained(dir, gguf_file=name)(text)["input_ids"]`.
//!
//! Two families are supported:
//!
//! * `tokenizer.ggml.model == "gpt2"`: byte-level BPE (SmolLM2, Llama 3, Qwen, ...). The vocabulary
//!   comes from `tokenizer.ggml.tokens`, merges from `tokenizer.ggml.merges`, and the split regex
//!   from `tokenizer.ggml.pre` (transformers' table; "default"/"gpt2"/"smollm" use GPT-2's
//!   built-in byte-level regex, exactly as transformers does; note that this is *not* the
//!   `Digits` + `ByteLevel` pre-tokenizer of SmolLM2's original tokenizer.json: the two differ on
//!   runs of spaces before a digit, e.g. `"  123"`).
//! * `tokenizer.ggml.model == "llama"` (SentencePiece vocabularies): a byte-fallback BPE whose
//!   merges are recovered from the vocabulary. Gemma/Gemma 2/Gemma 3 get transformers'
//!   `GemmaTokenizer` shape (merges ordered by vocabulary position, all-space tokens respelled
//!   with `▁`, `" "` → `"▁"` normalizer, no prefix space); Phi-3 and every other architecture get
//!   transformers' `LlamaTokenizer` shape (merges ordered by score, `Metaspace` prefix).
//!
//! Tokens marked control (type 3) become special added tokens, user-defined ones (type 4) plain
//! added tokens, both matched on the raw text. BOS is added by a `TemplateProcessing`
//! post-processor exactly when `tokenizer.ggml.add_bos_token` says so (absent: true for
//! SentencePiece vocabularies, false for byte-level ones, as in transformers), so it is never
//! added twice by this crate; a text that itself starts with the literal BOS string still gets
//! the post-processor's BOS in front of it, as in transformers.
//!
//! Every failure is a [`TokenizerError`] naming the file and the metadata field; nothing from the
//! file is unwrapped.

// The parts of the construction; the types below are what they share.
mod meta;
mod pre_tokenizer;
mod mirror;
mod gguf;
mod hf_dir;

use std::path::PathBuf;

use tokenizers::Tokenizer;

pub use meta::gguf_f64;
pub use pre_tokenizer::known_pre_tokenizers;

/// GGUF metadata keys read by this module.
pub mod keys {
    pub const ARCH: &str = "general.architecture";
    pub const MODEL: &str = "tokenizer.ggml.model";
    pub const PRE: &str = "tokenizer.ggml.pre";
    pub const TOKENS: &str = "tokenizer.ggml.tokens";
    pub const SCORES: &str = "tokenizer.ggml.scores";
    pub const TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
    pub const MERGES: &str = "tokenizer.ggml.merges";
    pub const BOS_ID: &str = "tokenizer.ggml.bos_token_id";
    pub const EOS_ID: &str = "tokenizer.ggml.eos_token_id";
    pub const UNK_ID: &str = "tokenizer.ggml.unknown_token_id";
    pub const PAD_ID: &str = "tokenizer.ggml.padding_token_id";
    pub const ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
    pub const ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
}

/// Which special tokens the model uses, and whether BOS is prepended on encode.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SpecialTokens {
    pub add_bos: bool,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub pad_id: Option<u32>,
}

/// A ready-to-use tokenizer plus what a caller needs to know about its special tokens.
#[derive(Clone)]
pub struct ModelTokenizer {
    pub inner: Tokenizer,
    pub special: SpecialTokens,
    /// Token strings and flags for `tokenizer_config.json`.
    config: ConfigInfo,
}

/// Texts on which tokenizers that share a vocabulary still disagree: runs
/// of spaces before digits (SmolLM2's tokenizer.json against its GGUF form),
/// leading spaces, newlines and tabs, accents, emoji, CJK, code and
/// special-token strings written as text.
const PROBE_TEXTS: &[&str] = &[
    "Hello, world!",
    "  123 and   4567.89",
    " leading space\n\nnew paragraph\ttab",
    "Ünïcödé café naïve — “quotes” ‘here’",
    "emoji 🙂🚀 and CJK 漢字かなカナ 한국어",
    "fn main() { println!(\"{}\", 1 + 2); }",
    "<s> </s> <|endoftext|> <|im_start|>user <bos> <eos> <start_of_turn>",
    "My SSN is 078-05-1120 and my email is jane.doe@example.com",
];

impl ModelTokenizer {
    /// sha256 (hex) of the tokenizer as `tokenizers` serializes it
    /// (vocabulary by id, merges, normalizer, pre-tokenizer, post-processor)
    /// with its special-token flags. The same tokenizer always gives the same
    /// value; two that encode alike may still differ in it, so a cache keyed
    /// on it can only recompute needlessly, never reuse wrongly.
    pub fn identity(&self) -> Result<String> {
        use sha2::{Digest, Sha256};
        let json = serde_json::to_vec(&self.inner)
            .map_err(|e| TokenizerError::Serialize(e.to_string()))?;
        let mut h = Sha256::new();
        h.update(json);
        h.update(format!("\n{:?}\n{:?}", self.special, self.config));
        Ok(hex::encode(h.finalize()))
    }

    /// How `other` turns text into ids differently from this tokenizer, if
    /// it does: its special tokens, its vocabulary, or a probe text encoded
    /// otherwise. `None` when they agree on all three. Compares behaviour,
    /// not representation: a GGUF file's rebuilt tokenizer and the
    /// tokenizer.json it came from serialize differently yet may encode alike.
    pub fn differs_from(&self, other: &ModelTokenizer) -> Result<Option<String>> {
        if self.special != other.special {
            return Ok(Some(format!(
                "special tokens {:?} became {:?}",
                self.special, other.special
            )));
        }
        let (a, b) = (self.inner.get_vocab(true), other.inner.get_vocab(true));
        if a != b {
            let moved = a.iter().filter(|(t, id)| b.get(*t) != Some(id)).count();
            let added = b.keys().filter(|t| !a.contains_key(*t)).count();
            return Ok(Some(format!(
                "the vocabulary differs: {moved} of the base's {} tokens missing or renumbered, {added} added",
                a.len()
            )));
        }
        for t in PROBE_TEXTS {
            if self.encode(t)? != other.encode(t)? {
                return Ok(Some(format!("{t:?} encodes to different ids")));
            }
        }
        Ok(None)
    }
}

#[derive(Debug, Clone, Default)]
struct ConfigInfo {
    add_eos: bool,
    bos_token: Option<String>,
    eos_token: Option<String>,
    unk_token: Option<String>,
    pad_token: Option<String>,
}

impl ConfigInfo {
    /// `names`: the bos, eos, unk and pad token strings, in that order.
    fn new(add_eos: bool, names: [Option<String>; 4]) -> Self {
        let [bos_token, eos_token, unk_token, pad_token] = names;
        ConfigInfo {
            add_eos,
            bos_token,
            eos_token,
            unk_token,
            pad_token,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{}: metadata field `{field}` is missing", file.display())]
    MissingField { file: PathBuf, field: String },
    #[error("{}: metadata field `{field}` has the wrong type: expected {expected}, found {found}", file.display())]
    WrongType {
        file: PathBuf,
        field: String,
        expected: &'static str,
        found: String,
    },
    #[error("{}: metadata field `{field}` is invalid: {reason}", file.display())]
    Invalid {
        file: PathBuf,
        field: String,
        reason: String,
    },
    #[error("{}: metadata field `{field}` = {value:?} is not supported (known: {known})", file.display())]
    Unsupported {
        file: PathBuf,
        field: String,
        value: String,
        known: String,
    },
    #[error("{}: could not build the tokenizer from `{field}`: {reason}", file.display())]
    Build {
        file: PathBuf,
        field: String,
        reason: String,
    },
    #[error("{}: {source}", file.display())]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: cannot parse `{field}`: {reason}", file.display())]
    Parse {
        file: PathBuf,
        field: String,
        reason: String,
    },
    #[error("tokenizer encode failed: {0}")]
    Encode(String),
    #[error("tokenizer serialization failed: {0}")]
    Serialize(String),
}

type Result<T> = std::result::Result<T, TokenizerError>;
