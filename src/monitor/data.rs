//! Labeled datasets: JSONL with `text` and `label` (0/1, or the two label names).

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct Labeled {
    pub texts: Vec<String>,
    pub labels: Vec<u8>,
    pub sha256: String,
}

// The label-free reading order of a training split, shared by the
// features (their first part) and the repair ladder (its parts), so both
// hit the same activation-cache entries.

/// The first part of a training split's order (realignment's held-out
/// texts and its first fit fit inside the first two parts).
pub const FIRST_PART: usize = 96;
/// Every later part: the step realignment grows its texts by.
pub const PART: usize = 64;

/// The order the ladder reads a concept's training split in: a seeded
/// shuffle that never looks at the labels (realignment reads these texts
/// as unlabeled), so any prefix is a fair sample of the split.
pub fn train_order(n: usize) -> Vec<usize> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(
        crate::util::DEFAULT_SEED,
    ));
    order
}

/// Where the parts of an order of `n` texts end: fixed boundaries, so a
/// prefix is a whole number of cache entries whatever length a run stops at.
pub fn part_ends(n: usize) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut at = FIRST_PART.min(n);
    while at < n {
        ends.push(at);
        at += PART;
    }
    ends.push(n);
    ends
}

impl Labeled {
    pub fn n_positive(&self) -> usize {
        self.labels.iter().filter(|&&l| l == 1).count()
    }
}

/// Reads a labeled JSONL file. `names` maps label strings (negative, positive) to 0/1.
pub fn read_labeled(path: &Path, names: Option<(&str, &str)>) -> Result<Labeled> {
    let mut texts = Vec::new();
    let mut labels = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let err = |line: usize, msg: String| Error::input(path, line, msg);
    crate::util::for_each_json_line(path, |lineno, v| {
        let text = match v.get("text") {
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(serde_json::Value::String(_)) => {
                return Err(err(lineno, "field `text` is empty".into()))
            }
            Some(_) => return Err(err(lineno, "field `text` is not a string".into())),
            None => return Err(err(lineno, "missing field `text`".into())),
        };
        let label = match v.get("label") {
            None | Some(serde_json::Value::Null) => return Err(err(lineno, "missing field `label`".into())),
            Some(serde_json::Value::Number(n)) => match n.as_u64() {
                Some(0) => 0,
                Some(1) => 1,
                _ => return Err(err(lineno, format!("field `label`: {n} is not 0 or 1"))),
            },
            Some(serde_json::Value::Bool(b)) => *b as u8,
            Some(serde_json::Value::String(s)) => match names {
                Some((neg, _)) if s == neg => 0,
                Some((_, pos)) if s == pos => 1,
                Some((neg, pos)) => {
                    return Err(err(lineno, format!("field `label`: `{s}` is neither `{neg}` nor `{pos}`")))
                }
                None => {
                    return Err(err(
                        lineno,
                        format!("field `label`: `{s}` is a name; pass --labels NEGATIVE,POSITIVE to map names to 0/1"),
                    ))
                }
            },
            Some(_) => return Err(err(lineno, "field `label` must be 0/1 or a label name".into())),
        };
        if let Some(first) = seen.insert(text.clone(), lineno) {
            return Err(err(
                lineno,
                format!("duplicate text (first seen on line {first})"),
            ));
        }
        texts.push(text);
        labels.push(label);
        Ok(())
    })?;
    if texts.is_empty() {
        return Err(err(0, "no examples".into()));
    }
    let pos = labels.iter().filter(|&&l| l == 1).count();
    if pos == 0 || pos == labels.len() {
        return Err(err(
            0,
            format!(
                "only one class present ({} examples, all labelled {}): a monitor needs both",
                labels.len(),
                if pos == 0 { 0 } else { 1 }
            ),
        ));
    }
    let sha256 = crate::util::texts_sha256(&texts);
    Ok(Labeled {
        texts,
        labels,
        sha256,
    })
}
