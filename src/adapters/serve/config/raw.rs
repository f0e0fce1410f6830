//! The configuration file as written: every field as TOML gives it, with
//! its span for errors. [`super::Config::load`] checks and resolves them.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::super::limits::{RawHttp, RawLimits};
use super::Registry;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    pub(super) listen: Spanned<String>,
    pub(super) state_dir: PathBuf,
    #[serde(default = "one")]
    pub(super) workers: Spanned<i64>,
    #[serde(default = "default_body")]
    pub(super) max_body_bytes: Spanned<i64>,
    #[serde(default)]
    pub(super) public_url: Option<String>,
    #[serde(default)]
    pub(super) read_token_env: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) public_reads: bool,
    #[serde(default = "default_retries")]
    pub(super) callback_retries: Spanned<i64>,
    #[serde(default)]
    pub(super) huggingface: Option<RawHf>,
    #[serde(default)]
    pub(super) mlflow: Option<RawMlflow>,
    #[serde(default, rename = "target")]
    pub(super) targets: Vec<RawTarget>,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) http: RawHttp,
    #[serde(default)]
    pub(super) queue: Option<RawQueue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQueue {
    #[serde(default)]
    pub(super) url: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) url_env: Option<Spanned<String>>,
    #[serde(default = "default_lease")]
    pub(super) lease_secs: Spanned<i64>,
}

fn default_lease() -> Spanned<i64> {
    Spanned::new(0..0, 30)
}

fn one() -> Spanned<i64> {
    Spanned::new(0..0, 1)
}
fn default_body() -> Spanned<i64> {
    Spanned::new(0..0, 256 * 1024)
}
fn default_retries() -> Spanned<i64> {
    Spanned::new(0..0, 5)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHf {
    #[serde(default = "hf_endpoint")]
    pub(super) endpoint: String,
    pub(super) webhook_secret_env: Spanned<String>,
    #[serde(default)]
    pub(super) token_env: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) refs: Option<Spanned<Vec<String>>>,
}

fn hf_endpoint() -> String {
    "https://huggingface.co".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMlflow {
    pub(super) tracking_uri: String,
    pub(super) webhook_secret_env: Spanned<String>,
    #[serde(default)]
    pub(super) token_env: Option<Spanned<String>>,
    #[serde(default = "skew")]
    pub(super) max_skew_seconds: Spanned<i64>,
    #[serde(default)]
    pub(super) artifact_roots: Vec<PathBuf>,
}

fn skew() -> Spanned<i64> {
    Spanned::new(0..0, 300)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    pub(super) registry: Registry,
    pub(super) name: String,
    pub(super) base: String,
    pub(super) monitors: PathBuf,
    /// A shipped policy's name or a file relative to this config; default: the built-in `default`.
    #[serde(default)]
    pub(super) policy: Option<String>,
    #[serde(default)]
    pub(super) data: Option<PathBuf>,
}
