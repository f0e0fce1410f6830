//! The durable job queue behind `probegate serve`, in an embedded redb
//! database. A delivery is committed (fsynced) before the server answers
//! 202, so an accepted job survives a crash; the dedupe table makes a
//! redelivery (MLflow retries, Hugging Face replays) a no-op.
//!
//! States: queued → running → finished | error, and independently the
//! callback to the registry: pending → sent | failed. On start, a job left
//! `running` by a killed process goes back to `queued` (its run left no
//! outcome); a finished job whose callback was not sent is only called back,
//! never run again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gate::report::Outcome;

const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");
const DEDUPE: TableDefinition<&str, u64> = TableDefinition::new("dedupe");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Records that no longer decode (an older schema, a damaged write), moved
/// aside with their bytes so one of them cannot stop the queue.
const QUARANTINE: TableDefinition<u64, &[u8]> = TableDefinition::new("quarantine");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "registry", rename_all = "snake_case")]
pub enum Source {
    Huggingface {
        repo: String,
        repo_type: String,
        git_ref: String,
        new_sha: String,
        webhook_id: String,
    },
    Mlflow {
        name: String,
        version: String,
        event: String,
        delivery_id: String,
    },
}

impl Source {
    /// What makes two deliveries the same job.
    pub fn dedupe_key(&self) -> String {
        match self {
            // One check per pushed commit, however often the Hub replays it.
            Source::Huggingface {
                webhook_id,
                new_sha,
                ..
            } => format!("hf:{webhook_id}:{new_sha}"),
            // MLflow retries a delivery with the same id.
            Source::Mlflow { delivery_id, .. } => format!("mlflow:{delivery_id}"),
        }
    }

    pub fn registry_name(&self) -> &str {
        match self {
            Source::Huggingface { repo, .. } => repo,
            Source::Mlflow { name, .. } => name,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    /// The gate ran to a verdict (pass, pass with repairs or fail).
    Finished,
    /// The gate could not evaluate.
    Error,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CallbackState {
    /// Not yet due (job not done) or due and not yet delivered.
    Pending,
    Sent,
    /// Every retry failed; the job's result stands, the registry was not told.
    Failed,
}

/// One gate run the server owes a registry (`GET /jobs/{id}` serves it as JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    /// Assigned in delivery order from 1; the reports go to `state_dir/jobs/{id}/`.
    pub id: u64,
    /// The registry event that asked for the check.
    pub source: Source,
    pub state: JobState,
    /// Times a worker started the job; above 1 only after a crash.
    pub attempts: u32,
    /// The gate's outcome once done; `None` while queued or running.
    pub verdict: Option<Outcome>,
    /// What `probegate check` would have exited with: 0 pass, 1 fail, 2 error.
    pub exit_code: Option<i32>,
    /// One line: the verdict with its monitor counts, or the error (MLflow's
    /// `probegate.summary` tag).
    pub summary: Option<String>,
    /// Why the gate could not evaluate, when the state is `error`.
    pub error: Option<String>,
    /// The candidate the job resolved and checked.
    pub candidate: Option<String>,
    /// Whether the registry has been told the result.
    pub callback: CallbackState,
    /// Calls made to the registry so far.
    pub callback_attempts: u32,
    /// The last failed call's error; cleared by a successful one.
    pub callback_error: Option<String>,
    /// Unix seconds when the delivery was accepted.
    pub created: u64,
    /// Unix seconds of the last change to the job.
    pub updated: u64,
}

impl Job {
    pub fn done(&self) -> bool {
        matches!(self.state, JobState::Finished | JobState::Error)
    }
}

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
    /// job and whether it is new. Durable when this returns.
    pub fn enqueue(&self, source: Source) -> Result<(Job, bool)> {
        let key = source.dedupe_key();
        let mut encode_err = None;
        let out = self.write(|tx| {
            let mut dedupe = tx.open_table(DEDUPE)?;
            let mut jobs = tx.open_table(JOBS)?;
            if let Some(id) = dedupe.get(key.as_str())?.map(|g| g.value()) {
                let bytes = jobs.get(id)?.map(|g| g.value().to_vec());
                return Ok((id, bytes, false));
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
            match serde_json::to_vec(&job) {
                Ok(bytes) => {
                    jobs.insert(id, bytes.as_slice())?;
                    dedupe.insert(key.as_str(), id)?;
                    Ok((id, Some(bytes), true))
                }
                Err(e) => {
                    encode_err = Some(e.to_string());
                    Ok((id, None, false))
                }
            }
        })?;
        if let Some(e) = encode_err {
            return Err(self.err(e));
        }
        let (id, bytes, new) = out;
        let bytes = bytes.ok_or_else(|| self.err(format!("job {id} is missing")))?;
        Ok((self.decode(&bytes)?, new))
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

    /// Done jobs whose registry has not been told yet.
    pub fn pending_callbacks(&self) -> Result<Vec<Job>> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|j| j.done() && j.callback == CallbackState::Pending)
            .collect())
    }
}

#[cfg(test)]
mod tests;
