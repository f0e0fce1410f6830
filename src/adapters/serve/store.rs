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
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gate::report::Outcome;

const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");
const DEDUPE: TableDefinition<&str, u64> = TableDefinition::new("dedupe");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

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
    db: Database,
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
            db,
            path: path.to_path_buf(),
        };
        // Create the tables so readers never meet a missing one.
        s.write(|tx| {
            tx.open_table(JOBS)?;
            tx.open_table(DEDUPE)?;
            tx.open_table(META)?;
            Ok(())
        })?;
        Ok(s)
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::Store {
            path: self.path.clone(),
            msg: e.to_string(),
        }
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> std::result::Result<T, redb::Error>,
    ) -> Result<T> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        let out = f(&tx).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(out)
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
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let jobs = tx.open_table(JOBS).map_err(|e| self.err(e))?;
        match jobs.get(id).map_err(|e| self.err(e))? {
            Some(g) => Ok(Some(self.decode(g.value())?)),
            None => Ok(None),
        }
    }

    pub fn list(&self) -> Result<Vec<Job>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let jobs = tx.open_table(JOBS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for item in jobs.iter().map_err(|e| self.err(e))? {
            let (_, v) = item.map_err(|e| self.err(e))?;
            out.push(self.decode(v.value())?);
        }
        Ok(out)
    }

    /// Read-modify-write one job in a single transaction.
    pub fn update(&self, id: u64, f: impl FnOnce(&mut Job)) -> Result<Job> {
        let job = self
            .get(id)?
            .ok_or_else(|| self.err(format!("job {id} does not exist")))?;
        let mut job = job;
        f(&mut job);
        job.updated = now();
        let bytes = serde_json::to_vec(&job).map_err(|e| self.err(e))?;
        self.write(|tx| {
            tx.open_table(JOBS)?.insert(id, bytes.as_slice())?;
            Ok(())
        })?;
        Ok(job)
    }

    /// The oldest queued job, now marked running. Single writer: redb
    /// serialises write transactions, so two workers never claim one job.
    pub fn claim_next(&self) -> Result<Option<Job>> {
        let mut bad = None;
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
                    Err(e) => {
                        bad = Some(format!("job {}: corrupt record: {e}", k.value()));
                        return Ok(None);
                    }
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
        for j in self.list()? {
            if j.state != JobState::Running {
                continue;
            }
            if j.attempts >= MAX_ATTEMPTS {
                self.update(j.id, |j| {
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
                })?;
                r.failed.push(j.id);
            } else {
                self.update(j.id, |j| j.state = JobState::Queued)?;
                r.requeued.push(j.id);
            }
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
mod tests {
    use super::*;

    fn mlflow(id: &str) -> Source {
        Source::Mlflow {
            name: "m".into(),
            version: "1".into(),
            event: "model_version.created".into(),
            delivery_id: id.into(),
        }
    }

    #[test]
    fn dedupes_claims_once_and_recovers_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.redb");
        {
            let s = Store::open(&path).unwrap();
            let (a, new_a) = s.enqueue(mlflow("d1")).unwrap();
            let (b, new_b) = s.enqueue(mlflow("d1")).unwrap();
            assert!(new_a && !new_b);
            assert_eq!(a.id, b.id);
            let (c, _) = s.enqueue(mlflow("d2")).unwrap();
            assert_eq!(c.id, a.id + 1);
            let first = s.claim_next().unwrap().unwrap();
            assert_eq!((first.id, first.attempts), (a.id, 1));
            assert_eq!(first.state, JobState::Running);
            // Dropped without finishing: the process "crashed".
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.recover().unwrap().requeued, vec![1]);
        let again = s.claim_next().unwrap().unwrap();
        assert_eq!((again.id, again.attempts), (1, 2));
        s.update(1, |j| j.state = JobState::Finished).unwrap();
        assert_eq!(s.pending_callbacks().unwrap().len(), 1);
        assert_eq!(s.claim_next().unwrap().unwrap().id, 2);
        assert!(s.claim_next().unwrap().is_none());
        // The dedupe table survived the reopen too.
        assert!(!s.enqueue(mlflow("d1")).unwrap().1);
    }

    #[test]
    fn a_job_that_keeps_killing_the_server_is_failed_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.redb");
        {
            let s = Store::open(&path).unwrap();
            s.enqueue(mlflow("poison")).unwrap();
            s.enqueue(mlflow("next")).unwrap();
        }
        // The server dies in job 1 on every attempt.
        for attempt in 1..=MAX_ATTEMPTS {
            let s = Store::open(&path).unwrap();
            let r = s.recover().unwrap();
            if attempt > 1 {
                assert_eq!(r.requeued, vec![1], "attempt {attempt}");
            }
            let j = s.claim_next().unwrap().unwrap();
            assert_eq!((j.id, j.attempts), (1, attempt));
        }
        let s = Store::open(&path).unwrap();
        let r = s.recover().unwrap();
        assert_eq!(
            r,
            Recovered {
                requeued: vec![],
                failed: vec![1]
            }
        );
        let j = s.get(1).unwrap().unwrap();
        assert_eq!(j.state, JobState::Error);
        assert_eq!(j.exit_code, Some(2));
        assert!(j.error.unwrap().contains("stopped 3 times"));
        // The registry is still told, and the next job runs.
        assert!(s.pending_callbacks().unwrap().iter().any(|p| p.id == 1));
        assert_eq!(s.claim_next().unwrap().unwrap().id, 2);
    }

    #[test]
    fn a_second_server_on_the_same_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.redb");
        let _a = Store::open(&path).unwrap();
        let e = Store::open(&path).err().unwrap().to_string();
        assert!(e.contains("jobs.redb"), "{e}");
    }
}
