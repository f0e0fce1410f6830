//! The shared backend: a PostgreSQL database that any number of servers
//! use as one queue. A job is claimed with `FOR UPDATE SKIP LOCKED` and
//! leased to its server, which renews the lease while the check runs and
//! the registry is told; a lease that runs out (the server was killed, its
//! machine lost) makes the job another server's, as an attempt like a
//! crash under redb. Admissions are serialised by an advisory lock and the
//! dedupe key is a primary key, so a redelivery to any server is known.
//! Lease times are the database's clock, so the servers' clocks may differ.
//!
//! Each job is stored as its JSON record (the same bytes redb keeps) beside
//! the columns the queries need (state, callback, coalesce key, lease).

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use postgres::{Client, NoTls, Transaction};

use super::{
    new_job, now, owes_callback, owner_id, prunable, recover_one, start, supersede, to_prune,
    Admitted, Job, Recovered, Source,
};
use crate::adapters::serve::config::redact_uri;
use crate::error::{Error, Result};

mod schema;
use schema::migrate;

/// Advisory lock key for admissions (dedupe, coalescing and the cap are one
/// decision across servers); schema changes take their own ([`schema`]).
const ADMIT_LOCK: i64 = 0x7072_6f62_6502;

/// Connections kept open between calls.
const POOL: usize = 8;

const DONE: &str = "state IN ('finished', 'error', 'superseded')";
/// A running job or owed callback no live server holds.
const UNHELD: &str = "(lease_until IS NULL OR lease_until <= now())";

pub struct PgStore {
    config: postgres::Config,
    /// The URL without its password, for errors and logs.
    shown: String,
    lease: Duration,
    owner: String,
    pool: Mutex<Vec<Client>>,
    /// Jobs this server holds the lease on, renewed by [`PgStore::renew`].
    held: Mutex<BTreeSet<u64>>,
}

fn id_i64(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

fn id_u64(id: i64) -> u64 {
    u64::try_from(id).unwrap_or(0)
}

impl PgStore {
    /// Connect, then create or migrate the schema. `url`: `postgres://…`;
    /// `lease`: how long a claimed job stays this server's without renewal.
    pub fn open(url: &str, lease: Duration) -> Result<Self> {
        let shown = redact_uri(url);
        let mut config = postgres::Config::from_str(url).map_err(|e| Error::Queue {
            url: shown.clone(),
            msg: format!("not a PostgreSQL URL: {e}"),
        })?;
        // A server that cannot reach the queue says so, instead of hanging.
        config.connect_timeout(Duration::from_secs(10));
        config.application_name("probegate serve");
        let s = PgStore {
            config,
            shown,
            lease,
            owner: owner_id(),
            pool: Mutex::new(Vec::new()),
            held: Mutex::new(BTreeSet::new()),
        };
        s.with(migrate)?;
        let moved = s.quarantine_undecodable()?;
        if !moved.is_empty() {
            tracing::warn!(
                "job records that do not decode were moved to probegate_quarantine in {}: {moved:?}",
                s.shown
            );
        }
        Ok(s)
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::Queue {
            url: self.shown.clone(),
            msg: e.to_string(),
        }
    }

    fn lease_secs(&self) -> f64 {
        self.lease.as_secs_f64()
    }

    /// Run `f` on a pooled connection; a connection that failed is dropped,
    /// so a restarted database is reconnected to on the next call.
    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&mut Client) -> std::result::Result<T, PgError>,
    ) -> Result<T> {
        let pooled = self.pool.lock().ok().and_then(|mut p| p.pop());
        let mut client = match pooled {
            Some(c) if !c.is_closed() => c,
            _ => self
                .config
                .connect(NoTls)
                .map_err(|e| self.err(PgError::Db(e)))?,
        };
        let out = f(&mut client);
        if !client.is_closed() && !matches!(out, Err(PgError::Db(_))) {
            if let Ok(mut p) = self.pool.lock() {
                if p.len() < POOL {
                    p.push(client);
                }
            }
        }
        out.map_err(|e| self.err(e))
    }

    /// [`PgStore::with`] inside one transaction, committed when `f` succeeds.
    fn tx<T>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>) -> std::result::Result<T, PgError>,
    ) -> Result<T> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            let out = f(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })
    }

    fn hold(&self, ids: impl IntoIterator<Item = u64>) {
        if let Ok(mut h) = self.held.lock() {
            h.extend(ids);
        }
    }

    pub fn release(&self, id: u64) {
        if let Ok(mut h) = self.held.lock() {
            h.remove(&id);
        }
    }

    fn quarantine_undecodable(&self) -> Result<Vec<u64>> {
        self.tx(|tx| {
            let mut bad = Vec::new();
            for row in tx.query("SELECT id, record FROM probegate_jobs FOR UPDATE", &[])? {
                let record: Vec<u8> = row.get(1);
                if serde_json::from_slice::<Job>(&record).is_err() {
                    bad.push(row.get::<_, i64>(0));
                }
            }
            quarantine(tx, &bad)?;
            Ok(bad.into_iter().map(id_u64).collect())
        })
    }

    pub fn quarantined(&self) -> Result<Vec<u64>> {
        self.with(|c| {
            let rows = c.query("SELECT id FROM probegate_quarantine ORDER BY id", &[])?;
            Ok(rows.iter().map(|r| id_u64(r.get(0))).collect())
        })
    }

    pub fn admit(&self, source: Source, max_queued: usize) -> Result<Admitted> {
        let key = source.dedupe_key();
        let coalesce = source.coalesce_key();
        self.tx(|tx| {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ADMIT_LOCK])?;
            let known = tx.query_opt(
                "SELECT d.job, j.record FROM probegate_dedupe d \
                 LEFT JOIN probegate_jobs j ON j.id = d.job WHERE d.key = $1",
                &[&key],
            )?;
            if let Some(row) = known {
                let id: i64 = row.get(0);
                let record: Option<Vec<u8>> = row.get(1);
                let record = record.ok_or_else(|| PgError::Msg(format!("job {id} is missing")))?;
                return Ok(Admitted::Known(decode(id, &record)?));
            }
            let queued: i64 = tx
                .query_one(
                    "SELECT count(*) FROM probegate_jobs WHERE state = 'queued' \
                     AND ($1::text IS NULL OR coalesce_key IS DISTINCT FROM $1)",
                    &[&coalesce],
                )?
                .get(0);
            if usize::try_from(queued).unwrap_or(usize::MAX) >= max_queued {
                return Ok(Admitted::Full);
            }
            let replaced = match &coalesce {
                Some(k) => tx.query(
                    "SELECT id, record FROM probegate_jobs \
                     WHERE state = 'queued' AND coalesce_key = $1 ORDER BY id FOR UPDATE",
                    &[k],
                )?,
                None => Vec::new(),
            };
            let next: i64 = tx
                .query_one("SELECT nextval('probegate_job_ids')", &[])?
                .get(0);
            let (id, t) = (id_u64(next), now());
            let mut superseded = Vec::new();
            for row in replaced {
                let Ok(mut old) = decode(row.get(0), row.get(1)) else {
                    continue;
                };
                supersede(&mut old, id, t);
                write(tx, &old)?;
                superseded.push(old.id);
            }
            let job = new_job(id, source, t);
            tx.execute(
                "INSERT INTO probegate_jobs (id, state, callback, coalesce_key, created, record) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &next,
                    &job.state.as_str(),
                    &job.callback.as_str(),
                    &coalesce,
                    &id_i64(t),
                    &encode(&job)?,
                ],
            )?;
            tx.execute(
                "INSERT INTO probegate_dedupe (key, job) VALUES ($1, $2)",
                &[&key, &next],
            )?;
            Ok(Admitted::New { job, superseded })
        })
    }

    pub fn get(&self, id: u64) -> Result<Option<Job>> {
        self.with(|c| {
            let row = c.query_opt(
                "SELECT record FROM probegate_jobs WHERE id = $1",
                &[&id_i64(id)],
            )?;
            row.map(|r| decode(id_i64(id), r.get(0))).transpose()
        })
    }

    pub fn list(&self) -> Result<Vec<Job>> {
        let rows =
            self.with(|c| Ok(c.query("SELECT id, record FROM probegate_jobs ORDER BY id", &[])?))?;
        let mut out = Vec::new();
        for row in rows {
            match decode(row.get(0), row.get(1)) {
                Ok(j) => out.push(j),
                // Quarantined at the next claim or start; listing goes on.
                Err(e) => tracing::warn!("{e}"),
            }
        }
        Ok(out)
    }

    pub fn update(&self, id: u64, f: impl FnOnce(&mut Job)) -> Result<Job> {
        self.modify(id, false, f)?
            .ok_or_else(|| self.err(format!("job {id} does not exist")))
    }

    pub fn update_held(&self, id: u64, f: impl FnOnce(&mut Job)) -> Result<Option<Job>> {
        self.modify(id, true, f)
    }

    /// Read-modify-write under the row's lock; `held`: only while this
    /// server holds the job's lease (`None` otherwise, nothing written).
    fn modify(&self, id: u64, held: bool, f: impl FnOnce(&mut Job)) -> Result<Option<Job>> {
        self.tx(|tx| {
            let Some(row) = tx.query_opt(
                "SELECT record, lease_owner FROM probegate_jobs WHERE id = $1 FOR UPDATE",
                &[&id_i64(id)],
            )?
            else {
                return if held {
                    Ok(None)
                } else {
                    Err(PgError::Msg(format!("job {id} does not exist")))
                };
            };
            let owner: Option<String> = row.get(1);
            if held && owner.as_deref() != Some(self.owner.as_str()) {
                return Ok(None);
            }
            let mut job = decode(id_i64(id), row.get(0))?;
            f(&mut job);
            job.updated = now();
            write(tx, &job)?;
            Ok(Some(job))
        })
    }

    pub fn claim_next(&self) -> Result<Option<Job>> {
        let claimed = self.tx(|tx| loop {
            let Some(row) = tx.query_opt(
                "SELECT id, record FROM probegate_jobs WHERE state = 'queued' \
                     ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
                &[],
            )?
            else {
                return Ok(None);
            };
            let id: i64 = row.get(0);
            let mut job = match decode(id, row.get(1)) {
                Ok(j) => j,
                Err(e) => {
                    tracing::warn!("{e}; moved to quarantine");
                    quarantine(tx, &[id])?;
                    continue;
                }
            };
            start(&mut job, &self.owner);
            write(tx, &job)?;
            tx.execute(
                "UPDATE probegate_jobs SET lease_owner = $2, \
                     lease_until = now() + make_interval(secs => $3) WHERE id = $1",
                &[&id, &self.owner, &self.lease_secs()],
            )?;
            return Ok(Some(job));
        })?;
        if let Some(j) = &claimed {
            self.hold([j.id]);
        }
        Ok(claimed)
    }

    /// Running jobs whose lease ran out; locked rows are skipped (another
    /// server is recovering them).
    pub fn recover(&self, settle: &dyn Fn(&mut Job) -> bool) -> Result<Recovered> {
        self.tx(|tx| {
            let mut r = Recovered::default();
            let rows = tx.query(
                &format!(
                    "SELECT id, record FROM probegate_jobs WHERE state = 'running' \
                     AND {UNHELD} ORDER BY id FOR UPDATE SKIP LOCKED"
                ),
                &[],
            )?;
            for row in rows {
                let Ok(mut j) = decode(row.get(0), row.get(1)) else {
                    continue;
                };
                let fate = recover_one(&mut j, settle);
                r.note(j.id, &fate);
                write(tx, &j)?;
                // Whoever finds the callback unheld makes it.
                tx.execute(
                    "UPDATE probegate_jobs SET lease_owner = NULL, lease_until = NULL WHERE id = $1",
                    &[&id_i64(j.id)],
                )?;
            }
            Ok(r)
        })
    }

    pub fn prune(&self, max_age_secs: u64, keep: usize) -> Result<Vec<u64>> {
        self.tx(|tx| {
            let rows = tx.query(
                &format!("SELECT id, record FROM probegate_jobs WHERE {DONE} FOR UPDATE"),
                &[],
            )?;
            let done = rows
                .into_iter()
                .filter_map(|row| decode(row.get(0), row.get(1)).ok())
                .filter(prunable)
                .map(|j| (j.id, j.created))
                .collect();
            let gone: Vec<i64> = to_prune(done, max_age_secs, keep)
                .into_iter()
                .map(id_i64)
                .collect();
            tx.execute("DELETE FROM probegate_dedupe WHERE job = ANY($1)", &[&gone])?;
            tx.execute("DELETE FROM probegate_jobs WHERE id = ANY($1)", &[&gone])?;
            Ok(gone.into_iter().map(id_u64).collect())
        })
    }

    /// Owed callbacks no live server holds, now leased to this one.
    pub fn pending_callbacks(&self) -> Result<Vec<Job>> {
        let jobs = self.tx(|tx| {
            let rows = tx.query(
                &format!(
                    "SELECT id, record FROM probegate_jobs WHERE {DONE} AND callback = 'pending' \
                     AND {UNHELD} ORDER BY id FOR UPDATE SKIP LOCKED"
                ),
                &[],
            )?;
            let jobs: Vec<Job> = rows
                .into_iter()
                .filter_map(|row| decode(row.get(0), row.get(1)).ok())
                .filter(owes_callback)
                .collect();
            let ids: Vec<i64> = jobs.iter().map(|j| id_i64(j.id)).collect();
            tx.execute(
                "UPDATE probegate_jobs SET lease_owner = $2, \
                 lease_until = now() + make_interval(secs => $3) WHERE id = ANY($1)",
                &[&ids, &self.owner, &self.lease_secs()],
            )?;
            Ok(jobs)
        })?;
        self.hold(jobs.iter().map(|j| j.id));
        Ok(jobs)
    }

    /// Extend every lease this server holds; those another server has
    /// taken over meanwhile are dropped and returned.
    pub fn renew(&self) -> Result<Vec<u64>> {
        let ids: Vec<i64> = match self.held.lock() {
            Ok(h) => h.iter().copied().map(id_i64).collect(),
            Err(_) => return Err(self.err("lease set lock poisoned")),
        };
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let kept: BTreeSet<u64> = self.with(|c| {
            let rows = c.query(
                "UPDATE probegate_jobs SET lease_until = now() + make_interval(secs => $3) \
                 WHERE id = ANY($1) AND lease_owner = $2 RETURNING id",
                &[&ids, &self.owner, &self.lease_secs()],
            )?;
            Ok(rows.iter().map(|r| id_u64(r.get(0))).collect())
        })?;
        let lost: Vec<u64> = ids
            .into_iter()
            .map(id_u64)
            .filter(|id| !kept.contains(id))
            .collect();
        for id in &lost {
            self.release(*id);
        }
        Ok(lost)
    }

    /// Write a raw record (tests: an older schema's, a damaged one).
    #[cfg(test)]
    pub(super) fn put_raw(&self, id: u64, bytes: &[u8]) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO probegate_jobs (id, state, callback, created, record) \
                 VALUES ($1, 'queued', 'pending', 0, $2)",
                &[&id_i64(id), &bytes],
            )?;
            Ok(())
        })
    }
}

/// A database error, or ours (a record that does not decode) inside a transaction.
pub(super) enum PgError {
    Db(postgres::Error),
    Msg(String),
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The client's own text stops at the kind ("error connecting
            // to server"); the why is in its sources.
            PgError::Db(e) => {
                e.fmt(f)?;
                let mut cause = std::error::Error::source(e);
                while let Some(c) = cause {
                    write!(f, ": {c}")?;
                    cause = c.source();
                }
                Ok(())
            }
            PgError::Msg(m) => f.write_str(m),
        }
    }
}

impl From<postgres::Error> for PgError {
    fn from(e: postgres::Error) -> Self {
        PgError::Db(e)
    }
}

fn decode(id: i64, record: &[u8]) -> std::result::Result<Job, PgError> {
    serde_json::from_slice(record)
        .map_err(|e| PgError::Msg(format!("job {id}: corrupt job record: {e}")))
}

fn encode(job: &Job) -> std::result::Result<Vec<u8>, PgError> {
    serde_json::to_vec(job).map_err(|e| PgError::Msg(e.to_string()))
}

/// The record and the columns derived from it.
fn write(tx: &mut Transaction<'_>, job: &Job) -> std::result::Result<(), PgError> {
    tx.execute(
        "UPDATE probegate_jobs SET state = $2, callback = $3, record = $4 WHERE id = $1",
        &[
            &id_i64(job.id),
            &job.state.as_str(),
            &job.callback.as_str(),
            &encode(job)?,
        ],
    )?;
    Ok(())
}

fn quarantine(tx: &mut Transaction<'_>, ids: &[i64]) -> std::result::Result<(), PgError> {
    if ids.is_empty() {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO probegate_quarantine (id, record) \
         SELECT id, record FROM probegate_jobs WHERE id = ANY($1) \
         ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record, moved = now()",
        &[&ids],
    )?;
    tx.execute("DELETE FROM probegate_jobs WHERE id = ANY($1)", &[&ids])?;
    Ok(())
}

/// Where the tests find their PostgreSQL server (scripts/postgres-env.sh).
pub const TEST_URL_ENV: &str = "PROBEGATE_TEST_POSTGRES_URL";

/// For tests: a fresh database on the server [`TEST_URL_ENV`] names, its
/// URL; `None` (skip, with a note) without the variable, except under
/// CI=true, where a PostgreSQL test must run: it panics.
#[doc(hidden)]
pub fn test_database() -> Option<String> {
    let Ok(server) = std::env::var(TEST_URL_ENV) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{TEST_URL_ENV} is not set: scripts/test.sh starts PostgreSQL (scripts/postgres-env.sh) and sets it"
        );
        eprintln!("{TEST_URL_ENV} is not set: PostgreSQL test skipped");
        return None;
    };
    match scratch_database(&server) {
        Ok(url) => Some(url),
        Err(e) => panic!("{TEST_URL_ENV}: {e}"),
    }
}

/// A fresh, empty database on the server `url` names; its URL.
fn scratch_database(url: &str) -> Result<String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let shown = redact_uri(url);
    let err = |e: &dyn std::fmt::Display| Error::Queue {
        url: shown.clone(),
        msg: e.to_string(),
    };
    let name = format!(
        "probegate_test_{}_{}_{}",
        std::process::id(),
        now(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut c = postgres::Config::from_str(url)
        .map_err(|e| err(&e))?
        .connect(NoTls)
        .map_err(|e| err(&PgError::Db(e)))?;
    c.batch_execute(&format!("CREATE DATABASE {name}"))
        .map_err(|e| err(&PgError::Db(e)))?;
    // postgres://auth@host:port/db?params with db replaced.
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| err(&"not a postgres:// URL"))?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let query = rest[end..]
        .find('?')
        .map(|q| &rest[end + q..])
        .unwrap_or("");
    Ok(format!("{scheme}://{}/{name}{query}", &rest[..end]))
}
