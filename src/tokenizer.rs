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

use candle_core::quantized::gguf_file::Value;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{NormalizerWrapper, Prepend, Replace};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

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

/// llama.cpp token types (`tokenizer.ggml.token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

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

#[derive(Debug, Clone, Default)]
struct ConfigInfo {
    add_eos: bool,
    bos_token: Option<String>,
    eos_token: Option<String>,
    unk_token: Option<String>,
    pad_token: Option<String>,
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

// ---------------------------------------------------------------------------------------------
// Metadata access
// ---------------------------------------------------------------------------------------------

fn type_name(v: &Value) -> String {
    match v {
        Value::U8(_) => "u8".into(),
        Value::I8(_) => "i8".into(),
        Value::U16(_) => "u16".into(),
        Value::I16(_) => "i16".into(),
        Value::U32(_) => "u32".into(),
        Value::I32(_) => "i32".into(),
        Value::U64(_) => "u64".into(),
        Value::I64(_) => "i64".into(),
        Value::F32(_) => "f32".into(),
        Value::F64(_) => "f64".into(),
        Value::Bool(_) => "bool".into(),
        Value::String(_) => "string".into(),
        Value::Array(a) => match a.first() {
            Some(first) => format!("array of {}", type_name(first)),
            None => "empty array".into(),
        },
    }
}

fn as_int(v: &Value) -> Option<i128> {
    Some(match v {
        Value::U8(x) => *x as i128,
        Value::I8(x) => *x as i128,
        Value::U16(x) => *x as i128,
        Value::I16(x) => *x as i128,
        Value::U32(x) => *x as i128,
        Value::I32(x) => *x as i128,
        Value::U64(x) => *x as i128,
        Value::I64(x) => *x as i128,
        _ => return None,
    })
}

struct Meta<'a> {
    md: &'a HashMap<String, Value>,
    file: &'a Path,
}

impl<'a> Meta<'a> {
    fn missing(&self, field: &str) -> TokenizerError {
        TokenizerError::MissingField {
            file: self.file.to_path_buf(),
            field: field.to_string(),
        }
    }
    fn wrong(&self, field: &str, expected: &'static str, v: &Value) -> TokenizerError {
        TokenizerError::WrongType {
            file: self.file.to_path_buf(),
            field: field.to_string(),
            expected,
            found: type_name(v),
        }
    }
    fn invalid(&self, field: &str, reason: impl Into<String>) -> TokenizerError {
        TokenizerError::Invalid {
            file: self.file.to_path_buf(),
            field: field.to_string(),
            reason: reason.into(),
        }
    }
    fn build_err(&self, field: &str, reason: impl std::fmt::Display) -> TokenizerError {
        TokenizerError::Build {
            file: self.file.to_path_buf(),
            field: field.to_string(),
            reason: reason.to_string(),
        }
    }

    fn opt_str(&self, field: &str) -> Result<Option<&'a str>> {
        match self.md.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(v) => Err(self.wrong(field, "string", v)),
        }
    }

    fn opt_bool(&self, field: &str) -> Result<Option<bool>> {
        match self.md.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.wrong(field, "bool", v)),
        }
    }

    fn opt_array(&self, field: &str) -> Result<Option<&'a [Value]>> {
        match self.md.get(field) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a.as_slice())),
            Some(v) => Err(self.wrong(field, "array", v)),
        }
    }

    fn str_array(&self, field: &str) -> Result<Option<Vec<&'a str>>> {
        let Some(arr) = self.opt_array(field)? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(arr.len());
        for (i, v) in arr.iter().enumerate() {
            match v {
                Value::String(s) => out.push(s.as_str()),
                other => return Err(self.wrong(&format!("{field}[{i}]"), "string", other)),
            }
        }
        Ok(Some(out))
    }

    fn int_array(&self, field: &str) -> Result<Option<Vec<i64>>> {
        let Some(arr) = self.opt_array(field)? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(arr.len());
        for (i, v) in arr.iter().enumerate() {
            match as_int(v).and_then(|x| i64::try_from(x).ok()) {
                Some(x) => out.push(x),
                None => return Err(self.wrong(&format!("{field}[{i}]"), "integer", v)),
            }
        }
        Ok(Some(out))
    }

    fn float_array(&self, field: &str) -> Result<Option<Vec<f64>>> {
        let Some(arr) = self.opt_array(field)? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(arr.len());
        for (i, v) in arr.iter().enumerate() {
            let x = match v {
                Value::F32(x) => *x as f64,
                Value::F64(x) => *x,
                other => match as_int(other) {
                    Some(x) => x as f64,
                    None => return Err(self.wrong(&format!("{field}[{i}]"), "number", other)),
                },
            };
            if x.is_nan() {
                return Err(self.invalid(&format!("{field}[{i}]"), "score is NaN"));
            }
            out.push(x);
        }
        Ok(Some(out))
    }

    /// A token id that must index `n_tokens` entries.
    fn opt_token_id(&self, field: &str, n_tokens: usize) -> Result<Option<u32>> {
        let Some(v) = self.md.get(field) else {
            return Ok(None);
        };
        let Some(x) = as_int(v) else {
            return Err(self.wrong(field, "unsigned integer", v));
        };
        if x < 0 || x >= n_tokens as i128 {
            return Err(self.invalid(
                field,
                format!("token id {x} is out of range (vocabulary has {n_tokens} tokens)"),
            ));
        }
        Ok(Some(x as u32))
    }
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizer table (transformers' GGUF_PRE_TOKENIZER_SPLITS)
// ---------------------------------------------------------------------------------------------

const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// `tokenizer.ggml.pre` values whose split regex transformers knows.
const PRE_SPLITS: &[(&str, &str)] = &[
    ("llama3", LLAMA3_SPLIT),
    ("llama-v3", LLAMA3_SPLIT),
    ("llama-bpe", LLAMA3_SPLIT),
    ("falcon3", LLAMA3_SPLIT),
    ("falcon-h1", LLAMA3_SPLIT),
    ("pixtral", LLAMA3_SPLIT),
    ("midm-2.0", LLAMA3_SPLIT),
    ("lfm2", LLAMA3_SPLIT),
    ("jina-v5-nano", LLAMA3_SPLIT),
    ("dbrx", LLAMA3_SPLIT),
    ("smaug-bpe", LLAMA3_SPLIT),
    ("tekken", TEKKEN_SPLIT),
    ("qwen2", QWEN2_SPLIT),
    ("deepseek-r1-qwen", QWEN2_SPLIT),
    ("kormo", QWEN2_SPLIT),
    ("f2llmv2", QWEN2_SPLIT),
    ("megrez", QWEN2_SPLIT),
    ("qwen35", QWEN35_SPLIT),
    ("gpt-4o", GPT4O_SPLIT),
    ("llama4", GPT4O_SPLIT),
    ("kanana2", GPT4O_SPLIT),
    ("talkie", GPT4O_SPLIT),
    ("minimax-m2", GPT4O_SPLIT),
];

/// `tokenizer.ggml.pre` values that mean GPT-2's own byte-level regex (transformers applies no
/// split override for them).
const PRE_BYTE_LEVEL_DEFAULT: &[&str] = &["default", "gpt2", "gpt-2", "smollm"];

/// Every `tokenizer.ggml.pre` value accepted for byte-level vocabularies.
pub fn known_pre_tokenizers() -> Vec<&'static str> {
    let mut v: Vec<&str> = PRE_BYTE_LEVEL_DEFAULT.to_vec();
    v.extend(PRE_SPLITS.iter().map(|(n, _)| *n));
    v
}

fn pre_split(name: &str) -> Option<&'static str> {
    PRE_SPLITS.iter().find(|(n, _)| *n == name).map(|(_, r)| *r)
}

/// Architectures whose SentencePiece vocabulary transformers builds as a `GemmaTokenizer`.
const GEMMA_ARCHS: &[&str] = &["gemma", "gemma2", "gemma3"];

// ---------------------------------------------------------------------------------------------
// Helpers that mirror transformers
// ---------------------------------------------------------------------------------------------

/// GPT-2's byte → printable-unicode table (`bytes_to_unicode`).
fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        let c = if printable {
            b
        } else {
            n += 1;
            255 + n
        };
        // All values are < 0x200, valid scalar values.
        table[b as usize] = char::from_u32(c).unwrap_or('\u{FFFD}');
    }
    table
}

/// Python's `str.isspace` for one character.
fn py_isspace(c: char) -> bool {
    matches!(c,
        '\u{9}'..='\u{d}' | '\u{1c}'..='\u{20}' | '\u{85}' | '\u{a0}' | '\u{1680}'
        | '\u{2000}'..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}')
}

/// transformers' `generate_merges(vocab, vocab_scores)` with `vocab_scores` given (descending
/// sort by `(score, len(left), len(right))`, stable). `tokens[i]` scores `scores[i]`; duplicate
/// tokens keep their first position and their last score and id, like Python dicts.
fn generate_merges(tokens: &[String], scores: &[f64], vocab: &Vocab) -> Vec<(String, String)> {
    // Distinct tokens in first-occurrence order, with the last score seen.
    let mut first_pos: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    let mut order: Vec<(&str, f64)> = Vec::with_capacity(tokens.len());
    for (tok, &score) in tokens.iter().zip(scores) {
        match first_pos.get(tok.as_str()) {
            Some(&p) => order[p].1 = score,
            None => {
                first_pos.insert(tok.as_str(), order.len());
                order.push((tok.as_str(), score));
            }
        }
    }
    struct Cand<'t> {
        left: &'t str,
        right: &'t str,
        score: f64,
        len_l: usize,
        len_r: usize,
    }
    let mut cands: Vec<Cand> = Vec::new();
    let mut local: Vec<(u32, u32, Cand)> = Vec::new();
    for (tok, score) in order {
        local.clear();
        let n_chars = tok.chars().count();
        for (k, (idx, _)) in tok.char_indices().enumerate().skip(1) {
            let (l, r) = tok.split_at(idx);
            let Some(&li) = vocab.get(l) else { continue };
            if let Some(&ri) = vocab.get(r) {
                local.push((
                    li,
                    ri,
                    Cand {
                        left: l,
                        right: r,
                        score,
                        len_l: k,
                        len_r: n_chars - k,
                    },
                ));
            }
        }
        local.sort_by_key(|(li, ri, _)| (*li, *ri));
        cands.extend(local.drain(..).map(|(_, _, c)| c));
    }
    cands.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.len_l.cmp(&a.len_l))
            .then(b.len_r.cmp(&a.len_r))
    });
    cands
        .into_iter()
        .map(|c| (c.left.to_string(), c.right.to_string()))
        .collect()
}

fn template_processing(
    bos: Option<(&str, u32)>,
    eos: Option<(&str, u32)>,
) -> std::result::Result<TemplateProcessing, String> {
    // Built through serde so that token strings with spaces or colons stay intact.
    let seq =
        |id: &str, type_id: u32| serde_json::json!({"Sequence": {"id": id, "type_id": type_id}});
    let sp = |tok: &str, type_id: u32| serde_json::json!({"SpecialToken": {"id": tok, "type_id": type_id}});
    let mut single = Vec::new();
    let mut pair = Vec::new();
    let mut specials = serde_json::Map::new();
    if let Some((t, id)) = bos {
        single.push(sp(t, 0));
        specials.insert(
            t.to_string(),
            serde_json::json!({"id": t, "ids": [id], "tokens": [t]}),
        );
    }
    single.push(seq("A", 0));
    if let Some((t, id)) = eos {
        single.push(sp(t, 0));
        specials.insert(
            t.to_string(),
            serde_json::json!({"id": t, "ids": [id], "tokens": [t]}),
        );
    }
    pair.extend(single.iter().cloned());
    if let Some((t, _)) = bos {
        pair.push(sp(t, 1));
    }
    pair.push(seq("B", 1));
    if let Some((t, _)) = eos {
        pair.push(sp(t, 1));
    }
    let v = serde_json::json!({
        "type": "TemplateProcessing",
        "single": single,
        "pair": pair,
        "special_tokens": specials,
    });
    serde_json::from_value(v).map_err(|e| e.to_string())
}

/// Adds `tokens` (in order) unless a token with the same content was already added; `special`
/// picks `add_special_tokens` vs `add_tokens`, like the transformers call it mirrors.
fn add_tokens_once(
    tk: &mut Tokenizer,
    added: &mut HashSet<String>,
    tokens: Vec<AddedToken>,
    special: bool,
) -> Result<()> {
    let fresh: Vec<AddedToken> = tokens
        .into_iter()
        .filter(|t| added.insert(t.content.clone()))
        .collect();
    if fresh.is_empty() {
        return Ok(());
    }
    let res = if special {
        tk.add_special_tokens(fresh)
    } else {
        tk.add_tokens(fresh)
    };
    res.map(|_| ())
        .map_err(|e| TokenizerError::Encode(format!("adding tokens: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Construction
// ---------------------------------------------------------------------------------------------

impl ModelTokenizer {
    /// Build from GGUF metadata (`Content::metadata`). `source` is the file path, used only in
    /// error messages.
    pub fn from_gguf_metadata(md: &HashMap<String, Value>, source: &Path) -> Result<Self> {
        let m = Meta { md, file: source };
        let model = m
            .opt_str(keys::MODEL)?
            .ok_or_else(|| m.missing(keys::MODEL))?;
        let arch = m.opt_str(keys::ARCH)?.unwrap_or("");
        let tokens: Vec<String> = m
            .str_array(keys::TOKENS)?
            .ok_or_else(|| m.missing(keys::TOKENS))?
            .into_iter()
            .map(str::to_owned)
            .collect();
        if tokens.is_empty() {
            return Err(m.invalid(keys::TOKENS, "the vocabulary is empty"));
        }
        if tokens.len() > u32::MAX as usize {
            return Err(m.invalid(keys::TOKENS, "the vocabulary has more than 2^32 tokens"));
        }
        let n = tokens.len();
        let token_types = m.int_array(keys::TOKEN_TYPE)?;
        if let Some(tt) = &token_types {
            if tt.len() != n {
                return Err(m.invalid(
                    keys::TOKEN_TYPE,
                    format!("has {} entries but {} has {n}", tt.len(), keys::TOKENS),
                ));
            }
        }
        let bos_id = m.opt_token_id(keys::BOS_ID, n)?;
        let eos_id = m.opt_token_id(keys::EOS_ID, n)?;
        let unk_id = m.opt_token_id(keys::UNK_ID, n)?;
        let pad_id = m.opt_token_id(keys::PAD_ID, n)?;
        let name_of = |id: Option<u32>| id.map(|i| tokens[i as usize].clone());
        let (bos_tok, eos_tok, unk_tok, pad_tok) = (
            name_of(bos_id),
            name_of(eos_id),
            name_of(unk_id),
            name_of(pad_id),
        );

        let add_bos_flag = m.opt_bool(keys::ADD_BOS)?;
        let add_eos_flag = m.opt_bool(keys::ADD_EOS)?;
        let pre = m.opt_str(keys::PRE)?;

        let (mut tk, mut added, outer_mask, add_bos_default) = match model {
            "gpt2" => {
                let (tk, added) = build_byte_level(&m, &tokens, token_types.as_deref(), pre)?;
                (tk, added, None, false)
            }
            "llama" => {
                if let Some(p) = pre {
                    if pre_split(p).is_some() {
                        return Err(TokenizerError::Unsupported {
                            file: source.to_path_buf(),
                            field: keys::PRE.into(),
                            value: p.into(),
                            known: "a SentencePiece (`llama`) vocabulary takes no byte-level split regex; expected e.g. \"default\"".into(),
                        });
                    }
                }
                let gemma = GEMMA_ARCHS.contains(&arch);
                let (tk, added) = build_sentencepiece(&m, &tokens, token_types.as_deref(), arch)?;
                (tk, added, gemma.then(|| "<mask>".to_string()), true)
            }
            other => {
                return Err(TokenizerError::Unsupported {
                    file: source.to_path_buf(),
                    field: keys::MODEL.into(),
                    value: other.into(),
                    known: "\"gpt2\", \"llama\"".into(),
                })
            }
        };

        // The outer transformers tokenizer adds its named special tokens when they are not added
        // yet (bos, eos, unk, pad, and GemmaTokenizer's default mask), as special tokens.
        let outer: Vec<AddedToken> = [&bos_tok, &eos_tok, &unk_tok, &pad_tok, &outer_mask]
            .into_iter()
            .flatten()
            .map(|t| AddedToken::from(t.clone(), true))
            .collect();
        add_tokens_once(&mut tk, &mut added, outer, true)?;

        // update_post_processor(): BOS/EOS only when the token exists.
        let mut add_bos = add_bos_flag.unwrap_or(add_bos_default);
        let mut add_eos = add_eos_flag.unwrap_or(false);
        let bos_pair = match (&bos_tok, add_bos) {
            (Some(t), true) => tk.token_to_id(t).map(|id| (t.as_str(), id)),
            _ => None,
        };
        let eos_pair = match (&eos_tok, add_eos) {
            (Some(t), true) => tk.token_to_id(t).map(|id| (t.as_str(), id)),
            _ => None,
        };
        add_bos &= bos_pair.is_some();
        add_eos &= eos_pair.is_some();
        let pp =
            template_processing(bos_pair, eos_pair).map_err(|e| m.build_err(keys::ADD_BOS, e))?;
        tk.with_post_processor(Some(pp));

        // Ids as the tokenizer resolves them (an added token can only get a new id if its content
        // was not in the vocabulary, which cannot happen for these).
        let resolve = |t: &Option<String>, fallback: Option<u32>| {
            t.as_ref().and_then(|s| tk.token_to_id(s)).or(fallback)
        };
        let special = SpecialTokens {
            add_bos,
            bos_id: resolve(&bos_tok, bos_id),
            eos_id: resolve(&eos_tok, eos_id),
            pad_id: resolve(&pad_tok, pad_id),
        };
        Ok(Self {
            inner: tk,
            special,
            config: ConfigInfo {
                add_eos,
                bos_token: bos_tok,
                eos_token: eos_tok,
                unk_token: unk_tok,
                pad_token: pad_tok,
            },
        })
    }
}

/// transformers' `byte_level_tokenizer` + `add_gguf_special_tokens` + `set_split_regex`.
fn build_byte_level(
    m: &Meta,
    tokens: &[String],
    token_types: Option<&[i64]>,
    pre: Option<&str>,
) -> Result<(Tokenizer, HashSet<String>)> {
    // Pre-tokenizer first: an unknown name should fail before any heavy work.
    let pre_name = pre.unwrap_or("default");
    let pre_tok: PreTokenizerWrapper = if PRE_BYTE_LEVEL_DEFAULT.contains(&pre_name) {
        ByteLevel::new(false, true, true).into()
    } else if let Some(re) = pre_split(pre_name) {
        let split = Split::new(
            SplitPattern::Regex(re.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| m.build_err(keys::PRE, e))?;
        PreTokenizerSequence::new(vec![
            split.into(),
            ByteLevel::new(false, true, false).into(),
        ])
        .into()
    } else {
        return Err(TokenizerError::Unsupported {
            file: m.file.to_path_buf(),
            field: keys::PRE.into(),
            value: pre_name.into(),
            known: known_pre_tokenizers().join(", "),
        });
    };

    let table = bytes_to_unicode();
    let alphabet: HashSet<char> = table.iter().copied().collect();
    let in_alphabet = |t: &str| t.chars().all(|c| alphabet.contains(&c));
    let mut vocab = Vocab::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        let key = if in_alphabet(t) {
            t.clone()
        } else {
            t.bytes().map(|b| table[b as usize]).collect()
        };
        vocab.insert(key, i as u32);
    }

    let merges: Vec<(String, String)> = match m.str_array(keys::MERGES)? {
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for (i, s) in list.iter().enumerate() {
                let field = format!("{}[{i}]", keys::MERGES);
                let mut parts = s.split(' ');
                let (Some(a), Some(b), None) = (parts.next(), parts.next(), parts.next()) else {
                    return Err(m.invalid(
                        &field,
                        format!("{s:?} is not two tokens separated by one space"),
                    ));
                };
                for piece in [a.to_string(), b.to_string(), format!("{a}{b}")] {
                    if !vocab.contains_key(&piece) {
                        return Err(m.invalid(
                            &field,
                            format!(
                                "merge {s:?} refers to {piece:?}, which is not in {}",
                                keys::TOKENS
                            ),
                        ));
                    }
                }
                out.push((a.to_string(), b.to_string()));
            }
            out
        }
        None => {
            // transformers derives them from the (unrespelled) tokens and their scores.
            let scores = m
                .float_array(keys::SCORES)?
                .ok_or_else(|| m.missing(keys::MERGES))?;
            if scores.len() != tokens.len() {
                return Err(m.invalid(
                    keys::SCORES,
                    format!(
                        "has {} entries but {} has {}",
                        scores.len(),
                        keys::TOKENS,
                        tokens.len()
                    ),
                ));
            }
            let mut orig = Vocab::with_capacity(tokens.len());
            for (i, t) in tokens.iter().enumerate() {
                orig.insert(t.clone(), i as u32);
            }
            generate_merges(tokens, &scores, &orig)
        }
    };

    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .continuing_subword_prefix(String::new())
        .end_of_word_suffix(String::new())
        .fuse_unk(false)
        .build()
        .map_err(|e| m.build_err(keys::MERGES, e))?;
    let mut tk = Tokenizer::new(bpe);
    tk.with_pre_tokenizer(Some(pre_tok));
    tk.with_decoder(Some(ByteLevelDecoder::default()));

    let mut added = HashSet::new();
    // GPT2Tokenizer's own defaults (unk/bos/eos = "<|endoftext|>").
    add_tokens_once(
        &mut tk,
        &mut added,
        vec![AddedToken::from("<|endoftext|>", true)],
        true,
    )?;
    // Control tokens, skipping those not spelled in the byte alphabet (llama.cpp mislabels).
    if let Some(tt) = token_types {
        let control: Vec<AddedToken> = tokens
            .iter()
            .zip(tt)
            .filter(|(t, ty)| **ty == TOKEN_TYPE_CONTROL && in_alphabet(t))
            .map(|(t, _)| AddedToken::from(t.clone(), true).normalized(false))
            .collect();
        add_tokens_once(&mut tk, &mut added, control, true)?;
        add_user_defined(&mut tk, &mut added, tokens, tt)?;
    }
    Ok((tk, added))
}

/// User-defined tokens (type 4) that the vocabulary knows, as plain (non-special) added tokens.
fn add_user_defined(
    tk: &mut Tokenizer,
    added: &mut HashSet<String>,
    tokens: &[String],
    tt: &[i64],
) -> Result<()> {
    let user: Vec<AddedToken> = tokens
        .iter()
        .zip(tt)
        .filter(|(t, ty)| **ty == TOKEN_TYPE_USER_DEFINED && tk.token_to_id(t).is_some())
        .map(|(t, _)| AddedToken::from(t.clone(), false).normalized(false))
        .collect();
    add_tokens_once(tk, added, user, false)
}

/// transformers' `gemma_tokenizer` / `phi3_tokenizer` / `sentencepiece_tokenizer` (LlamaTokenizer)
/// + `add_gguf_special_tokens`.
fn build_sentencepiece(
    m: &Meta,
    tokens: &[String],
    token_types: Option<&[i64]>,
    arch: &str,
) -> Result<(Tokenizer, HashSet<String>)> {
    let gemma = GEMMA_ARCHS.contains(&arch);
    // Gemma stores tokens of 2+ spaces as real spaces; GemmaTokenizer looks them up as "▁▁".
    let spelled: Vec<String> = if gemma {
        tokens
            .iter()
            .map(|t| {
                if t.contains(' ') && t.chars().all(py_isspace) {
                    "\u{2581}".repeat(t.chars().count())
                } else {
                    t.clone()
                }
            })
            .collect()
    } else {
        tokens.to_vec()
    };
    let mut vocab = Vocab::with_capacity(spelled.len());
    for (i, t) in spelled.iter().enumerate() {
        vocab.insert(t.clone(), i as u32);
    }

    let merges: Vec<(String, String)> = match m.str_array(keys::MERGES)? {
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for (i, s) in list.iter().enumerate() {
                let field = format!("{}[{i}]", keys::MERGES);
                let mut parts = s.split(' ');
                let (Some(a), Some(b), None) = (parts.next(), parts.next(), parts.next()) else {
                    return Err(m.invalid(
                        &field,
                        format!("{s:?} is not two tokens separated by one space"),
                    ));
                };
                for piece in [a.to_string(), b.to_string(), format!("{a}{b}")] {
                    if !vocab.contains_key(&piece) {
                        return Err(m.invalid(
                            &field,
                            format!(
                                "merge {s:?} refers to {piece:?}, which is not in {}",
                                keys::TOKENS
                            ),
                        ));
                    }
                }
                out.push((a.to_string(), b.to_string()));
            }
            out
        }
        None if gemma => {
            // Gemma's merge order is its vocabulary order, not its scores.
            let positions: Vec<f64> = (0..spelled.len()).map(|i| -(i as f64)).collect();
            generate_merges(&spelled, &positions, &vocab)
        }
        None => {
            let scores = m
                .float_array(keys::SCORES)?
                .ok_or_else(|| m.missing(keys::SCORES))?;
            if scores.len() != spelled.len() {
                return Err(m.invalid(
                    keys::SCORES,
                    format!(
                        "has {} entries but {} has {}",
                        scores.len(),
                        keys::TOKENS,
                        spelled.len()
                    ),
                ));
            }
            generate_merges(&spelled, &scores, &vocab)
        }
    };

    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .fuse_unk(true)
        .byte_fallback(true);
    if gemma {
        builder = builder.unk_token("<unk>".to_string());
    }
    let bpe = builder.build().map_err(|e| m.build_err(keys::TOKENS, e))?;
    let mut tk = Tokenizer::new(bpe);
    let replace =
        |from: &str, to: &str| Replace::new(from, to).map_err(|e| m.build_err(keys::TOKENS, e));
    let mut decoders: Vec<DecoderWrapper> = vec![
        replace("\u{2581}", " ")?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    let builder_specials: &[&str] = if gemma {
        tk.with_normalizer(Some(replace(" ", "\u{2581}")?))
            .map_err(|e| m.build_err(keys::TOKENS, e))?;
        let split = Split::new(
            SplitPattern::String(" ".into()),
            SplitDelimiterBehavior::MergedWithPrevious,
            false,
        )
        .map_err(|e| m.build_err(keys::TOKENS, e))?;
        tk.with_pre_tokenizer(Some(split));
        // GemmaTokenizer defaults, in special_tokens_map order (bos, eos, unk, pad, mask).
        &["<bos>", "<eos>", "<unk>", "<pad>", "<mask>"]
    } else {
        if arch == "phi3" {
            let norm: Vec<NormalizerWrapper> = vec![
                Prepend::new("\u{2581}".into()).into(),
                replace(" ", "\u{2581}")?.into(),
            ];
            tk.with_normalizer(Some(tokenizers::normalizers::Sequence::new(norm)))
                .map_err(|e| m.build_err(keys::TOKENS, e))?;
        } else {
            tk.with_pre_tokenizer(Some(Metaspace::new(
                '\u{2581}',
                PrependScheme::First,
                false,
            )));
        }
        decoders.push(Strip::new(' ', 1, 0).into());
        // LlamaTokenizer defaults (bos, eos, unk).
        &["<s>", "</s>", "<unk>"]
    };
    tk.with_decoder(Some(DecoderSequence::new(decoders)));

    let mut added = HashSet::new();
    let defaults: Vec<AddedToken> = builder_specials
        .iter()
        .map(|t| AddedToken::from(*t, true))
        .collect();
    add_tokens_once(&mut tk, &mut added, defaults, true)?;
    if let Some(tt) = token_types {
        let control: Vec<AddedToken> = tokens
            .iter()
            .zip(tt)
            .filter(|(_, ty)| **ty == TOKEN_TYPE_CONTROL)
            .map(|(t, _)| AddedToken::from(t.clone(), true).normalized(false))
            .collect();
        add_tokens_once(&mut tk, &mut added, control, true)?;
        add_user_defined(&mut tk, &mut added, tokens, tt)?;
    }
    Ok((tk, added))
}

// ---------------------------------------------------------------------------------------------
// Hugging Face directories, encoding, serialization
// ---------------------------------------------------------------------------------------------

fn config_token(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => {
            o.get("content").and_then(|c| c.as_str()).map(str::to_owned)
        }
        _ => None,
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| TokenizerError::Io {
        file: path.to_path_buf(),
        source: e,
    })?;
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
        if !tj.is_file() {
            return Err(TokenizerError::Io {
                file: tj,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "tokenizer.json not found",
                ),
            });
        }
        let text = std::fs::read_to_string(&tj).map_err(|e| TokenizerError::Io {
            file: tj.clone(),
            source: e,
        })?;
        let mut tk: Tokenizer =
            text.parse()
                .map_err(|e: tokenizers::Error| TokenizerError::Parse {
                    file: tj.clone(),
                    field: "(whole file)".into(),
                    reason: e.to_string(),
                })?;

        let cfg_path = dir.join("tokenizer_config.json");
        let cfg = if cfg_path.is_file() {
            Some(read_json(&cfg_path)?)
        } else {
            None
        };
        let stm_path = dir.join("special_tokens_map.json");
        let stm = if stm_path.is_file() {
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
            config: ConfigInfo {
                add_eos,
                bos_token: bos_tok,
                eos_token: eos_tok,
                unk_token: unk_tok,
                pad_token: pad_tok,
            },
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
mod unit {
    use super::*;

    #[test]
    fn every_split_regex_compiles() {
        for (name, re) in PRE_SPLITS {
            Split::new(
                SplitPattern::Regex(re.to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn byte_table_is_gpt2s() {
        let t = bytes_to_unicode();
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[b'A' as usize], 'A');
        assert_eq!(t.iter().collect::<HashSet<_>>().len(), 256);
    }

    #[test]
    fn merges_follow_transformers_order() {
        let toks: Vec<String> = ["a", "b", "c", "ab", "bc", "abc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut vocab = Vocab::new();
        for (i, t) in toks.iter().enumerate() {
            vocab.insert(t.clone(), i as u32);
        }
        let pos: Vec<f64> = (0..toks.len()).map(|i| -(i as f64)).collect();
        let merges = generate_merges(&toks, &pos, &vocab);
        let got: Vec<(&str, &str)> = merges
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        assert_eq!(got, vec![("a", "b"), ("b", "c"), ("ab", "c"), ("a", "bc")]);
    }
}
