//! One integration-test binary (as ripgrep does): shared harness, one module per area.

mod candidates;
mod check;
mod convert;
mod diff;
mod harness;
mod hostile;
mod monitor;
mod realign;
mod reference;
mod tokenizer;
mod zoo;
