//! probegate: a deployment gate that checks activation monitors survive
//! model updates.
//!
//! The pipeline, one module per stage, each taking and returning plain data:
//! checkpoint → model (forward, activations) → monitor → diff → risk →
//! revalidate → realign → policy → report. `cli`, `github`, `serve` and
//! `hooks` are thin adapters on the one `check` pipeline.

pub mod actcache;
pub mod activations;
pub mod assets;
pub mod check;
pub mod checkpoint;
pub mod cli;
pub mod convert;
pub mod diff;
pub mod error;
pub mod features;
pub mod github;
pub mod hooks;
pub mod model;
pub mod monitor;
pub mod policy;
pub mod project;
pub mod realign;
pub mod report;
pub mod revalidate;
pub mod risk;
pub mod serve;
pub mod study;
pub mod tokenizer;
pub mod train;
pub mod zoo;

pub use error::{Error, Result};
