//! Construction from GGUF metadata: transformers' byte-level (`gpt2`) and
//! SentencePiece (`llama`) tokenizers, rebuilt from `tokenizer.ggml.*`.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use candle_core::quantized::gguf_file::Value;
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
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::meta::Meta;
use super::mirror::{
    add_tokens_once, bytes_to_unicode, generate_merges, py_isspace, template_processing,
};
use super::pre_tokenizer::{known_pre_tokenizers, pre_split, PRE_BYTE_LEVEL_DEFAULT};
use super::{keys, ConfigInfo, ModelTokenizer, Result, SpecialTokens, TokenizerError};

/// llama.cpp token types (`tokenizer.ggml.token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// Architectures whose SentencePiece vocabulary transformers builds as a `GemmaTokenizer`.
const GEMMA_ARCHS: &[&str] = &["gemma", "gemma2", "gemma3"];

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
            config: ConfigInfo::new(add_eos, [bos_tok, eos_tok, unk_tok, pad_tok]),
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

    let merges = match listed_merges(m, &vocab)? {
        Some(merges) => merges,
        None => {
            // transformers derives them from the (unrespelled) tokens and their scores.
            let scores = scores(m, tokens.len(), keys::MERGES)?;
            generate_merges(tokens, &scores, &vocab_of(tokens))
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
        add_typed_tokens(&mut tk, &mut added, tokens, tt, in_alphabet)?;
    }
    Ok((tk, added))
}

/// transformers' `add_gguf_special_tokens`: control tokens (type 3) that `keep` accepts, as
/// special tokens, then the user-defined ones (type 4) the vocabulary knows, as plain ones.
fn add_typed_tokens(
    tk: &mut Tokenizer,
    added: &mut HashSet<String>,
    tokens: &[String],
    tt: &[i64],
    keep: impl Fn(&str) -> bool,
) -> Result<()> {
    let control: Vec<AddedToken> = tokens
        .iter()
        .zip(tt)
        .filter(|(t, ty)| **ty == TOKEN_TYPE_CONTROL && keep(t))
        .map(|(t, _)| AddedToken::from(t.clone(), true).normalized(false))
        .collect();
    add_tokens_once(tk, added, control, true)?;
    let user: Vec<AddedToken> = tokens
        .iter()
        .zip(tt)
        .filter(|(t, ty)| **ty == TOKEN_TYPE_USER_DEFINED && tk.token_to_id(t).is_some())
        .map(|(t, _)| AddedToken::from(t.clone(), false).normalized(false))
        .collect();
    add_tokens_once(tk, added, user, false)
}

/// Token → id; a duplicated token keeps its last id, like a Python dict.
fn vocab_of(tokens: &[String]) -> Vocab {
    let mut vocab = Vocab::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        vocab.insert(t.clone(), i as u32);
    }
    vocab
}

/// `tokenizer.ggml.merges` when the file has it, each merge checked against `vocab`: both
/// halves and their concatenation must be tokens, or the BPE model would fail later, unnamed.
fn listed_merges(m: &Meta, vocab: &Vocab) -> Result<Option<Vec<(String, String)>>> {
    let Some(list) = m.str_array(keys::MERGES)? else {
        return Ok(None);
    };
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
    Ok(Some(out))
}

/// `tokenizer.ggml.scores`, one per token; `needed_for` is the field blamed when it is absent
/// (the merges it stands in for, or the scores themselves).
fn scores(m: &Meta, n_tokens: usize, needed_for: &str) -> Result<Vec<f64>> {
    let scores = m
        .float_array(keys::SCORES)?
        .ok_or_else(|| m.missing(needed_for))?;
    if scores.len() != n_tokens {
        return Err(m.invalid(
            keys::SCORES,
            format!(
                "has {} entries but {} has {n_tokens}",
                scores.len(),
                keys::TOKENS
            ),
        ));
    }
    Ok(scores)
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
    let vocab = vocab_of(&spelled);

    let merges = match listed_merges(m, &vocab)? {
        Some(merges) => merges,
        None if gemma => {
            // Gemma's merge order is its vocabulary order, not its scores.
            let positions: Vec<f64> = (0..spelled.len()).map(|i| -(i as f64)).collect();
            generate_merges(&spelled, &positions, &vocab)
        }
        None => generate_merges(&spelled, &scores(m, spelled.len(), keys::SCORES)?, &vocab),
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
        add_typed_tokens(&mut tk, &mut added, tokens, tt, |_| true)?;
    }
    Ok((tk, added))
}
