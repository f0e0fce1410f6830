//! Stage 1, prepare: both models opened and fingerprinted, the suite checked
//! against the base it was trained on, the unlabeled corpus read. Nothing
//! is computed yet, so a wrong reference or a suite for another model fails
//! in seconds.

use std::path::Path;

use crate::checkpoint::Checkpoint;
use crate::error::Result;
use crate::monitor::{self as mon, BaseCheck, Monitor};

/// Progress callbacks: (stage, done, total).
pub type Progress<'a> = &'a mut dyn FnMut(&str, usize, usize);

/// Where the unlabeled prompts come from and how many to use.
pub struct Corpus<'a> {
    pub path: &'a Path,
    pub max_prompts: usize,
}

/// The two models and the corpus every later stage reads.
pub struct Prepared {
    pub base: Checkpoint,
    pub cand: Checkpoint,
    pub base_fp: String,
    pub cand_fp: String,
    /// Unlabeled prompts (at least two are asked for: a map needs a held-out tail).
    pub corpus: Vec<String>,
}

pub fn prepare(
    base: &str,
    candidate: &str,
    monitors: &[Monitor],
    corpus: Corpus,
    base_check: BaseCheck,
) -> Result<Prepared> {
    let base = Checkpoint::open_str(base)?;
    let cand = Checkpoint::open_str(candidate)?;
    let facts = mon::BaseFacts::of(&base)?;
    mon::check_suite_base(monitors, &facts, base_check)?;
    let base_fp = facts.fingerprint;
    let cand_fp = cand.fingerprint()?;
    let mut prompts = crate::util::read_prompts(corpus.path)?;
    prompts.truncate(corpus.max_prompts.max(2));
    Ok(Prepared {
        base,
        cand,
        base_fp,
        cand_fp,
        corpus: prompts,
    })
}
