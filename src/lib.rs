//! probegate: a deployment gate that checks activation monitors survive
//! model updates.
//!
//! Modules are declared in the order of the pipeline, and each imports only
//! from those declared before it; inside [`gate`], [`lab`] and [`adapters`]
//! the same holds among their parts (src/layering.rs checks it):
//!
//! 1. **Files**: [`bounded`] (reading a file that must be small; the
//!    standard library alone), [`tokenizer`] (the error type wraps its
//!    errors), [`error`], [`assets`] (the policies and data built into the
//!    binary), [`util`] (atomic writes, JSONL, hashing, safetensors writing).
//! 2. **Checkpoints**: [`checkpoint`] (readers: GGUF, Hugging Face
//!    directories, bitsandbytes, PEFT adapters, what-if quantization; the
//!    config and the tensor-layout code they need).
//! 3. **Model**: [`model`] (the forward pass to the deepest block asked for).
//! 4. **Export**: [`export`] (writers: Hugging Face directories,
//!    bitsandbytes, GGUF).
//! 5. **Activations**: [`activations`] (pooled hidden states and their
//!    content-addressed cache).
//! 6. **Monitors**: [`monitor`] (linear probes: load, build, train, score).
//! 7. **The gate**: [`gate`], a stage per module, plain data in and out —
//!    prepare → diff (name the update) → features → risk (P(stale)) →
//!    policy → shard (the concepts one CI job judges) → revalidate
//!    (labeled data within a budget) → repair (the ladder: realignment,
//!    recalibration, retraining) → verdict → report (with the merge of
//!    shard reports).
//! 8. **Lab**: [`lab`] (fine-tuning, the zoo, the study): research tooling
//!    that runs the gate, not part of it.
//! 9. **Adapters** on the one gate: [`adapters`] (probegate.toml, the git
//!    hook, GitHub, the registry webhook server). The command line is the
//!    binary's own (`src/main.rs`, `src/cli/`).

// 1. Files
pub mod bounded;
pub mod tokenizer;
pub mod error;
pub mod assets;
pub mod util;
// 2. Checkpoints
pub mod checkpoint;
// 3. Model
pub mod model;
// 4. Export
pub mod export;
// 5. Activations
pub mod activations;
// 6. Monitors
pub mod monitor;
// 7. The gate
pub mod gate;
// 8. Lab
pub mod lab;
// 9. Adapters
pub mod adapters;

pub use error::{Error, Result};

#[cfg(test)]
mod layering;
