//! probegate: a deployment gate that checks activation monitors survive
//! model updates.
//!
//! Modules are declared in layer order; each imports only from the layers
//! above it in this list (tests/it/layers.rs checks it):
//!
//! 1. **Files**: [`tokenizer`] (no dependencies: the error type wraps its
//!    errors), [`error`], [`assets`] (the policies and data built into the
//!    binary), [`util`] (atomic writes, JSONL, hashing, safetensors writing).
//! 2. **Checkpoints**: [`checkpoint`] (GGUF, Hugging Face
//!    directories, bitsandbytes, PEFT adapters, what-if quantization; the
//!    config and the tensor-layout code the readers need).
//! 3. **Model**: [`model`] (the forward pass to the deepest block asked for).
//! 4. **Export**: [`export`] (Hugging Face directories, bitsandbytes, GGUF).
//! 5. **Activations**: [`activations`] (pooled hidden states), [`actcache`].
//! 6. **Monitors**: [`monitor`] (linear probes: load, train, score).
//! 7. **The gate**, a stage per module, plain data in and out:
//!    [`diff`] (name the update) → [`features`] (pre-deployment features) →
//!    [`risk`] (P(stale)) → [`policy`] → [`revalidate`] (labeled data within
//!    a budget) → [`realign`] (label-free repair) → [`report`] (the report's
//!    types and writers) → [`check`] (the pipeline in order, and the verdict).
//! 8. **Lab**: [`train`] (fine-tuning), [`zoo`], [`study`]: research tooling
//!    that runs the gate, not part of it.
//! 9. **Adapters** on the one gate: [`project`] (probegate.toml), [`hooks`]
//!    (pre-push), [`github`], [`serve`] (registry webhooks). The command line
//!    is the binary's own (`src/main.rs`, `src/cli/`).

// 1. Files
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
pub mod actcache;
// 6. Monitors
pub mod monitor;
// 7. The gate
pub mod diff;
pub mod features;
pub mod risk;
pub mod policy;
pub mod revalidate;
pub mod realign;
pub mod report;
pub mod check;
// 8. Lab
pub mod train;
pub mod zoo;
pub mod study;
// 9. Adapters
pub mod project;
pub mod hooks;
pub mod github;
pub mod serve;

pub use error::{Error, Result};

#[cfg(test)]
mod layering;
