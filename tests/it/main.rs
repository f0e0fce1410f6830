//! One integration-test binary (as ripgrep does): shared harness, one module per area.

mod action;
mod candidates;
mod check;
mod convert;
mod device;
mod diff;
mod fakes;
mod fuzz;
mod github;
#[cfg(feature = "cuda")]
mod gpu;
mod harness;
mod hook;
mod hostile;
mod hub;
mod install;
mod mlflow;
mod monitor;
mod realign;
mod rejudge;
mod reference;
mod risk;
mod serve;
mod shard;
mod study;
mod tokenizer;
mod weights;
mod zoo;
