//! One integration-test binary (as ripgrep does): shared harness, one module per area.

mod action;
mod candidates;
mod check;
mod convert;
mod diff;
mod fakes;
mod fuzz;
mod github;
mod harness;
mod hook;
mod hostile;
mod hub;
mod install;
mod mlflow;
mod monitor;
mod realign;
mod reference;
mod serve;
mod serve_disk;
mod serve_http;
mod serve_limits;
mod serve_pg;
mod serve_queue;
mod study;
mod tokenizer;
mod zoo;
