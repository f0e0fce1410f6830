//! Helpers that mirror transformers' Python one for one, so that ids match.

use std::collections::{HashMap, HashSet};

use tokenizers::models::bpe::Vocab;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

use super::{Result, TokenizerError};

/// GPT-2's byte → printable-unicode table (`bytes_to_unicode`).
pub(super) fn bytes_to_unicode() -> [char; 256] {
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
pub(super) fn py_isspace(c: char) -> bool {
    matches!(c,
        '\u{9}'..='\u{d}' | '\u{1c}'..='\u{20}' | '\u{85}' | '\u{a0}' | '\u{1680}'
        | '\u{2000}'..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}')
}

/// transformers' `generate_merges(vocab, vocab_scores)` with `vocab_scores` given (descending
/// sort by `(score, len(left), len(right))`, stable). `tokens[i]` scores `scores[i]`; duplicate
/// tokens keep their first position and their last score and id, like Python dicts.
pub(super) fn generate_merges(
    tokens: &[String],
    scores: &[f64],
    vocab: &Vocab,
) -> Vec<(String, String)> {
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

pub(super) fn template_processing(
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
pub(super) fn add_tokens_once(
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

#[cfg(test)]
mod tests {
    use super::*;

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
