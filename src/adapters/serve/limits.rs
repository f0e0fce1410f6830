//! `[limits]` in serve.toml: what one job, the queue and the job history may
//! cost, each bounded and defaulted here.

use serde::Deserialize;
use toml::Spanned;

use crate::error::{Error, Result};

/// `[limits]`: bounds on one job's check, which runs in its own process so
/// that hitting one ends that job as `error` and never the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock seconds for a job, fetch and check together; 10 s – 7 days
    /// (default 3600).
    pub job_timeout_secs: u64,
    /// The check process's data segment (heap and anonymous mappings,
    /// RLIMIT_DATA), in MiB; 64 MiB – 16 TiB. Default: three quarters of the
    /// machine's memory shared among the workers, at least 1 GiB.
    pub job_memory_mib: u64,
    /// Jobs waiting at once; a delivery beyond it gets 503 with Retry-After
    /// (1 – 1,000,000; default 1000).
    pub max_queued_jobs: u64,
    /// Bytes one job may download (Hub or MLflow), all its files together
    /// (1 MiB – 16 TiB; default 64 GiB).
    pub max_download_bytes: u64,
    /// Done jobs, their records and reports, are deleted after this many
    /// days (1 – 3650; default 30) ...
    pub keep_days: u64,
    /// ... or beyond the newest this many (10 – 10,000,000; default 10,000).
    pub keep_jobs: u64,
}

/// `[http]`: the listener's bounds (listen.rs) and each request's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http {
    /// Connections open at once; more wait to be accepted (1 – 100,000; default 512).
    pub max_connections: u64,
    /// A connection that sends nothing this long is closed: slow headers, a
    /// stalled body, an idle keep-alive (1 – 3600; default 10).
    pub idle_timeout_secs: u64,
    /// Longest a connection may stay open, however busy (10 – 86,400; default 300).
    pub connection_secs: u64,
    /// A request not answered in this long gets 408, its body read
    /// included (1 – 3600; default 30).
    pub request_timeout_secs: u64,
}

// Every field may be left out: the container default fills in `None`.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawHttp {
    max_connections: Option<Spanned<i64>>,
    idle_timeout_secs: Option<Spanned<i64>>,
    connection_secs: Option<Spanned<i64>>,
    request_timeout_secs: Option<Spanned<i64>>,
}

pub(super) fn parse_http(raw: &RawHttp, at: &dyn Fn(usize, String) -> Error) -> Result<Http> {
    let b = |f: &str, v: &Option<Spanned<i64>>, r: std::ops::RangeInclusive<i64>, d: u64| {
        bounded_in("http", f, v, r, d, at)
    };
    Ok(Http {
        max_connections: b("max_connections", &raw.max_connections, 1..=100_000, 512)?,
        idle_timeout_secs: b("idle_timeout_secs", &raw.idle_timeout_secs, 1..=3600, 10)?,
        connection_secs: b("connection_secs", &raw.connection_secs, 10..=86_400, 300)?,
        request_timeout_secs: b(
            "request_timeout_secs",
            &raw.request_timeout_secs,
            1..=3600,
            30,
        )?,
    })
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawLimits {
    job_timeout_secs: Option<Spanned<i64>>,
    job_memory_mib: Option<Spanned<i64>>,
    max_queued_jobs: Option<Spanned<i64>>,
    max_download_bytes: Option<Spanned<i64>>,
    keep_days: Option<Spanned<i64>>,
    keep_jobs: Option<Spanned<i64>>,
}

/// An integer of `[table]` within `range`, or `default` when the file has none.
fn bounded_in(
    table: &str,
    field: &str,
    v: &Option<Spanned<i64>>,
    range: std::ops::RangeInclusive<i64>,
    default: u64,
    at: &dyn Fn(usize, String) -> Error,
) -> Result<u64> {
    match v {
        Some(v) => within(&format!("{table}.{field}"), v, range, at),
        None => Ok(default),
    }
}

/// `v` within `range`, or the error naming `field` at its line.
pub(super) fn within(
    field: &str,
    v: &Spanned<i64>,
    range: std::ops::RangeInclusive<i64>,
    at: &dyn Fn(usize, String) -> Error,
) -> Result<u64> {
    let n = *v.get_ref();
    if !range.contains(&n) {
        return Err(at(
            v.span().start,
            format!(
                "field `{field}`: must be between {} and {}, found {n}",
                range.start(),
                range.end()
            ),
        ));
    }
    Ok(n as u64)
}

pub(super) fn parse_limits(
    raw: &RawLimits,
    workers: u64,
    at: &dyn Fn(usize, String) -> Error,
) -> Result<Limits> {
    let bounded = |f: &str, v: &Option<Spanned<i64>>, r: std::ops::RangeInclusive<i64>, d: u64| {
        bounded_in("limits", f, v, r, d, at)
    };
    Ok(Limits {
        job_timeout_secs: bounded(
            "job_timeout_secs",
            &raw.job_timeout_secs,
            10..=7 * 86_400,
            3600,
        )?,
        job_memory_mib: bounded(
            "job_memory_mib",
            &raw.job_memory_mib,
            64..=16 << 20,
            default_memory_mib(workers),
        )?,
        max_queued_jobs: bounded("max_queued_jobs", &raw.max_queued_jobs, 1..=1_000_000, 1000)?,
        max_download_bytes: bounded(
            "max_download_bytes",
            &raw.max_download_bytes,
            1 << 20..=1 << 44,
            64 << 30,
        )?,
        keep_days: bounded("keep_days", &raw.keep_days, 1..=3650, 30)?,
        keep_jobs: bounded("keep_jobs", &raw.keep_jobs, 10..=10_000_000, 10_000)?,
    })
}

/// Three quarters of physical memory over the workers, at least 1 GiB: the
/// checks together cannot push the server into the kernel's OOM killer.
fn default_memory_mib(workers: u64) -> u64 {
    // SAFETY: sysconf has no preconditions; a failure returns -1.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages <= 0 || page <= 0 {
        return 16 << 10;
    }
    let mib = (pages as u64).saturating_mul(page as u64) >> 20;
    (mib / 4 * 3 / workers.max(1)).max(1024)
}
