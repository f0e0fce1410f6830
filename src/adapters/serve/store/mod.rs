//! The durable job queue behind `probegate serve`, in an embedded redb
//! database. A delivery is committed (fsynced) before the server answers
//! 202, so an accepted job survives a crash; the dedupe table makes a
//! redelivery (MLflow retries, Hugging Face replays) a no-op.
//!
//! States: queued → running → finished | error (or queued → superseded, when
//! a newer push to the same ref replaces it), and independently the
//! callback to the registry: pending → sent | failed. On start, a job left
//! `running` by a killed process goes back to `queued` (its run left no
//! outcome); a finished job whose callback was not sent is only called back,
//! never run again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::{Error, Result};
use crate::gate::report::Outcome;

mod job;

pub use job::{Admitted, CallbackState, Job, JobState, Source};

const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");
const DEDUPE: TableDefinition<&str, u64> = TableDefinition::new("dedupe");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Records that no longer decode (an older schema, a damaged write), moved
/// aside with their bytes so one of them cannot stop the queue.
const QUARANTINE: TableDefinition<u64, &[u8]> = TableDefinition::new("quarantine");

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Times the server may die in one job before the job is failed instead of retried.
pub const MAX_ATTEMPTS: u32 = 3;

/// What [`Store::recover`] did with the jobs a crash left running.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub requeued: Vec<u64>,
    pub failed: Vec<u64>,
}

pub struct Store {
    /// `None` only between closing and reopening after an I/O error.
    db: RwLock<Option<Database>>,
    /// Set by an I/O error: redb then refuses every call until reopened.
    broken: AtomicBool,
    path: PathBuf,
}

impl Store {
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let db = Database::create(path).map_err(|e| Error::Store {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        let s = Store {
            db: RwLock::new(Some(db)),
            broken: AtomicBool::new(false),
            path: path.to_path_buf(),
        };
        // Create the tables so readers never meet a missing one.
        s.write(|tx| {
            tx.open_table(JOBS)?;
            tx.open_table(DEDUPE)?;
            tx.open_table(META)?;
            tx.open_table(QUARANTINE)?;
            Ok(())
        })?;
        let moved = s.quarantine_undecodable()?;
        if !moved.is_empty() {
            tracing::warn!(
                "job records that do not decode were moved to the quarantine table of {}: {moved:?}",
                s.path.display()
            );
        }
        Ok(s)
    }

    /// Move every job record that does not decode to QUARANTINE, in one
    /// transaction; the ids moved.
    fn quarantine_undecodable(&self) -> Result<Vec<u64>> {
        self.write(|tx| {
            let mut jobs = tx.open_table(JOBS)?;
            let mut bad = Vec::new();
            for item in jobs.iter()? {
                let (k, v) = item?;
                if serde_json::from_slice::<Job>(v.value()).is_err() {
                    bad.push((k.value(), v.value().to_vec()));
                }
            }
            let mut q = tx.open_table(QUARANTINE)?;
            for (id, bytes) in &bad {
                q.insert(*id, bytes.as_slice())?;
                jobs.remove(*id)?;
            }
            Ok(bad.into_iter().map(|b| b.0).collect())
        })
    }

    /// Ids of the records quarantined so far.
    pub fn quarantined(&self) -> Result<Vec<u64>> {
        self.read(|tx| {
            let q = tx.open_table(QUARANTINE)?;
            let mut out = Vec::new();
            for item in q.iter()? {
                out.push(item?.0.value());
            }
            Ok(out)
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::Store {
            path: self.path.clone(),
            msg: e.to_string(),
        }
    }

    /// A redb error as ours; an I/O error (a full disk) marks the database
    /// for reopening, since redb refuses every later call until then.
    fn io(&self, e: impl Into<redb::Error>) -> Error {
        let e: redb::Error = e.into();
        if matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo) {
            self.broken.store(true, Ordering::Release);
        }
        self.err(e)
    }

    /// Close and reopen after an I/O error, so the server recovers when
    /// space returns instead of failing every call until restarted.
    fn reopen(&self) -> Result<()> {
        let mut g = self.db.write().map_err(|_| self.err("lock poisoned"))?;
        if !self.broken.load(Ordering::Acquire) && g.is_some() {
            return Ok(());
        }
        // Dropped first: the file lock would refuse a second handle.
        *g = None;
        let db = Database::create(&self.path).map_err(|e| self.io(e))?;
        *g = Some(db);
        self.broken.store(false, Ordering::Release);
        tracing::warn!("{}: reopened after an I/O error", self.path.display());
        Ok(())
    }

    fn with_db<T>(&self, f: impl FnOnce(&Database) -> Result<T>) -> Result<T> {
        if self.broken.load(Ordering::Acquire) {
            self.reopen()?;
        }
        let g = self.db.read().map_err(|_| self.err("lock poisoned"))?;
        if let Some(db) = g.as_ref() {
            return f(db);
        }
        drop(g);
        self.reopen()?;
        let g = self.db.read().map_err(|_| self.err("lock poisoned"))?;
        let db = g.as_ref().ok_or_else(|| self.err("database closed"))?;
        f(db)
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> std::result::Result<T, redb::Error>,
    ) -> Result<T> {
        self.with_db(|db| {
            let tx = db.begin_read().map_err(|e| self.io(e))?;
            f(&tx).map_err(|e| self.io(e))
        })
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> std::result::Result<T, redb::Error>,
    ) -> Result<T> {
        self.with_db(|db| {
            let tx = db.begin_write().map_err(|e| self.io(e))?;
            let out = f(&tx).map_err(|e| self.io(e))?;
            tx.commit().map_err(|e| self.io(e))?;
            Ok(out)
        })
    }

    fn decode(&self, bytes: &[u8]) -> Result<Job> {
        serde_json::from_slice(bytes).map_err(|e| self.err(format!("corrupt job record: {e}")))
    }

    /// Insert a job for `source` unless its dedupe key is known. Returns the
    /// job and whether it is new. Durable when this returns. No queue cap.
    pub fn enqueue(&self, source: Source) -> Result<(Job, bool)> {
        match self.admit(source, usize::MAX)? {
            Admitted::New { job, .. } => Ok((job, true)),
            Admitted::Known(job) => Ok((job, false)),
            Admitted::Full => Err(self.err("the queue is full")),
        }
    }

    /// [`Store::enqueue`] with the queue's bounds, in one transaction: a
    /// known delivery is returned as it is; queued jobs for the same
    /// repository and ref are superseded by the new one; with `max_queued`
    /// jobs already queued (those superseded not counted), nothing is written.
    pub fn admit(&self, source: Source, max_queued: usize) -> Result<Admitted> {
        let key = source.dedupe_key();
        let coalesce = source.coalesce_key();
        let mut encode_err = None;
        let out = self.write(|tx| {
            let mut dedupe = tx.open_table(DEDUPE)?;
            let mut jobs = tx.open_table(JOBS)?;
            if let Some(id) = dedupe.get(key.as_str())?.map(|g| g.value()) {
                let bytes = jobs.get(id)?.map(|g| g.value().to_vec());
                return Ok(Some((id, bytes, false, Vec::new())));
            }
            let mut queued = 0usize;
            let mut replaced = Vec::new();
            for item in jobs.iter()? {
                let (_, v) = item?;
                let Ok(j) = serde_json::from_slice::<Job>(v.value()) else {
                    continue;
                };
                if j.state != JobState::Queued {
                    continue;
                }
                if coalesce.is_some() && j.source.coalesce_key() == coalesce {
                    replaced.push(j);
                } else {
                    queued += 1;
                }
            }
            if queued >= max_queued {
                return Ok(None);
            }
            let mut meta = tx.open_table(META)?;
            let id = meta.get("next_id")?.map(|g| g.value()).unwrap_or(1);
            meta.insert("next_id", id + 1)?;
            let t = now();
            let job = Job {
                id,
                source: source.clone(),
                state: JobState::Queued,
                attempts: 0,
                verdict: None,
                exit_code: None,
                summary: None,
                error: None,
                candidate: None,
                callback: CallbackState::Pending,
                callback_attempts: 0,
                callback_error: None,
                created: t,
                updated: t,
            };
            let mut superseded = Vec::new();
            for mut old in replaced {
                let msg = format!("superseded by job {id}, a newer commit for the same ref");
                old.state = JobState::Superseded;
                old.summary = Some(msg.clone());
                old.error = Some(msg);
                old.updated = t;
                match serde_json::to_vec(&old) {
                    Ok(bytes) => {
                        jobs.insert(old.id, bytes.as_slice())?;
                        superseded.push(old.id);
                    }
                    Err(e) => encode_err = Some(e.to_string()),
                }
            }
            match serde_json::to_vec(&job) {
                Ok(bytes) => {
                    jobs.insert(id, bytes.as_slice())?;
                    dedupe.insert(key.as_str(), id)?;
                    Ok(Some((id, Some(bytes), true, superseded)))
                }
                Err(e) => {
                    encode_err = Some(e.to_string());
                    Ok(Some((id, None, false, superseded)))
                }
            }
        })?;
        if let Some(e) = encode_err {
            return Err(self.err(e));
        }
        let Some((id, bytes, new, superseded)) = out else {
            return Ok(Admitted::Full);
        };
        let bytes = bytes.ok_or_else(|| self.err(format!("job {id} is missing")))?;
        let job = self.decode(&bytes)?;
        Ok(if new {
            Admitted::New { job, superseded }
        } else {
            Admitted::Known(job)
        })
    }

    pub fn get(&self, id: u64) -> Result<Option<Job>> {
        let bytes = self.read(|tx| {
            let jobs = tx.open_table(JOBS)?;
            let v = jobs.get(id)?.map(|g| g.value().to_vec());
            Ok(v)
        })?;
        bytes.map(|b| self.decode(&b)).transpose()
    }

    pub fn list(&self) -> Result<Vec<Job>> {
        let records = self.read(|tx| {
            let mut out = Vec::new();
            for item in tx.open_table(JOBS)?.iter()? {
                let (k, v) = item?;
                out.push((k.value(), v.value().to_vec()));
            }
            Ok(out)
        })?;
        let mut out = Vec::new();
        for (id, bytes) in records {
            match self.decode(&bytes) {
                Ok(j) => out.push(j),
                // Quarantined at the next claim or start; listing goes on.
                Err(e) => tracing::warn!("job {id}: {e}"),
            }
        }
        Ok(out)
    }

    /// Read-modify-write one job in a single write transaction, so two
    /// writers (a worker and a callback) never lose each other's change.
    pub fn update(&self, id: u64, f: impl FnOnce(&mut Job)) -> Result<Job> {
        let mut bad = None;
        let job = self.write(|tx| {
            let mut jobs = tx.open_table(JOBS)?;
            let Some(bytes) = jobs.get(id)?.map(|g| g.value().to_vec()) else {
                bad = Some(format!("job {id} does not exist"));
                return Ok(None);
            };
            let mut job = match serde_json::from_slice::<Job>(&bytes) {
                Ok(j) => j,
                Err(e) => {
                    bad = Some(format!("job {id}: corrupt job record: {e}"));
                    return Ok(None);
                }
            };
            f(&mut job);
            job.updated = now();
            match serde_json::to_vec(&job) {
                Ok(bytes) => {
                    jobs.insert(id, bytes.as_slice())?;
                    Ok(Some(job))
                }
                Err(e) => {
                    bad = Some(e.to_string());
                    Ok(None)
                }
            }
        })?;
        match (job, bad) {
            (Some(j), _) => Ok(j),
            (None, e) => Err(self.err(e.unwrap_or_default())),
        }
    }

    /// The oldest queued job, now marked running. Single writer: redb
    /// serialises write transactions, so two workers never claim one job.
    /// A record that does not decode is quarantined on the way, not an error.
    pub fn claim_next(&self) -> Result<Option<Job>> {
        let mut bad = None;
        let mut moved = Vec::new();
        let claimed = self.write(|tx| {
            let mut jobs = tx.open_table(JOBS)?;
            let mut found = None;
            for item in jobs.iter()? {
                let (k, v) = item?;
                match serde_json::from_slice::<Job>(v.value()) {
                    Ok(j) if j.state == JobState::Queued => {
                        found = Some(j);
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => moved.push((k.value(), v.value().to_vec(), e.to_string())),
                }
            }
            if !moved.is_empty() {
                let mut q = tx.open_table(QUARANTINE)?;
                for (id, bytes, _) in &moved {
                    q.insert(*id, bytes.as_slice())?;
                    jobs.remove(*id)?;
                }
            }
            let Some(mut job) = found else {
                return Ok(None);
            };
            job.state = JobState::Running;
            job.attempts += 1;
            job.updated = now();
            match serde_json::to_vec(&job) {
                Ok(bytes) => {
                    jobs.insert(job.id, bytes.as_slice())?;
                    Ok(Some(job))
                }
                Err(e) => {
                    bad = Some(e.to_string());
                    Ok(None)
                }
            }
        })?;
        for (id, _, e) in &moved {
            tracing::warn!("job {id}: record does not decode ({e}); moved to quarantine");
        }
        if let Some(e) = bad {
            return Err(self.err(e));
        }
        Ok(claimed)
    }

    /// After a crash: jobs left running go back to the queue, unless the
    /// server has now died in one [`MAX_ATTEMPTS`] times; that job is failed
    /// with its reason (and the registry told), so one crafted repository
    /// cannot hold the server in a crash loop while other jobs wait.
    pub fn recover(&self) -> Result<Recovered> {
        let mut r = Recovered::default();
        let mut encode_err = None;
        // One transaction: a crash in the middle recovers nothing twice.
        self.write(|tx| {
            let mut jobs = tx.open_table(JOBS)?;
            let mut changed = Vec::new();
            for item in jobs.iter()? {
                let (_, v) = item?;
                let Ok(mut j) = serde_json::from_slice::<Job>(v.value()) else {
                    continue;
                };
                if j.state != JobState::Running {
                    continue;
                }
                if j.attempts >= MAX_ATTEMPTS {
                    let msg = format!(
                        "the server stopped {} times while running this job (a crash, an abort or an out-of-memory kill); it is not retried",
                        j.attempts
                    );
                    j.state = JobState::Error;
                    j.verdict = Some(Outcome::Error);
                    j.exit_code = Some(Outcome::Error.exit_code());
                    j.summary = Some(format!("ERROR: the gate could not evaluate: {msg}"));
                    j.error = Some(msg);
                    j.callback = CallbackState::Pending;
                    r.failed.push(j.id);
                } else {
                    j.state = JobState::Queued;
                    r.requeued.push(j.id);
                }
                j.updated = now();
                changed.push(j);
            }
            for j in &changed {
                match serde_json::to_vec(j) {
                    Ok(bytes) => {
                        jobs.insert(j.id, bytes.as_slice())?;
                    }
                    Err(e) => encode_err = Some(e.to_string()),
                }
            }
            Ok(())
        })?;
        if let Some(e) = encode_err {
            return Err(self.err(e));
        }
        Ok(r)
    }

    /// Retention: done jobs the registry has been told of (or never will
    /// be), created more than `max_age_secs` ago or beyond the newest `keep`
    /// of them, are deleted with their dedupe keys in one transaction.
    /// Returns their ids; their directories are the caller's to remove.
    pub fn prune(&self, max_age_secs: u64, keep: usize) -> Result<Vec<u64>> {
        let cutoff = now().saturating_sub(max_age_secs);
        self.write(|tx| {
            let mut jobs = tx.open_table(JOBS)?;
            let mut done = Vec::new();
            for item in jobs.iter()? {
                let (k, v) = item?;
                let Ok(j) = serde_json::from_slice::<Job>(v.value()) else {
                    continue;
                };
                let told = j.callback != CallbackState::Pending || j.state == JobState::Superseded;
                if j.done() && told {
                    done.push((k.value(), j.created));
                }
            }
            // Newest first: ids follow delivery order.
            done.sort_by_key(|d| std::cmp::Reverse(d.0));
            let gone: std::collections::BTreeSet<u64> = done
                .iter()
                .enumerate()
                .filter(|(i, (_, created))| *i >= keep || *created <= cutoff)
                .map(|(_, (id, _))| *id)
                .collect();
            for id in &gone {
                jobs.remove(*id)?;
            }
            let mut dedupe = tx.open_table(DEDUPE)?;
            let mut stale = Vec::new();
            for item in dedupe.iter()? {
                let (k, v) = item?;
                if gone.contains(&v.value()) {
                    stale.push(k.value().to_string());
                }
            }
            for k in &stale {
                dedupe.remove(k.as_str())?;
            }
            Ok(gone.into_iter().collect())
        })
    }

    /// Done jobs whose registry has not been told yet.
    pub fn pending_callbacks(&self) -> Result<Vec<Job>> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|j| {
                j.done() && j.state != JobState::Superseded && j.callback == CallbackState::Pending
            })
            .collect())
    }
}

#[cfg(test)]
mod tests;
