//! The embedded backend: one redb file in the state directory, one server.
//! redb serialises write transactions, so the workers of that server never
//! claim one job twice; its file lock refuses a second server.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition};

use super::{
    new_job, now, owes_callback, owner_id, prunable, recover_one, start, supersede, to_prune,
    Admitted, Job, JobState, Recovered, Source,
};
use crate::error::{Error, Result};

const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");
const DEDUPE: TableDefinition<&str, u64> = TableDefinition::new("dedupe");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Records that no longer decode (an older schema, a damaged write), moved
/// aside with their bytes so one of them cannot stop the queue.
const QUARANTINE: TableDefinition<u64, &[u8]> = TableDefinition::new("quarantine");

pub struct RedbStore {
    /// `None` only between closing and reopening after an I/O error.
    db: RwLock<Option<Database>>,
    /// Set by an I/O error: redb then refuses every call until reopened.
    broken: AtomicBool,
    path: PathBuf,
    owner: String,
}

impl RedbStore {
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let db = Database::create(path).map_err(|e| Error::Store {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        let s = RedbStore {
            db: RwLock::new(Some(db)),
            broken: AtomicBool::new(false),
            path: path.to_path_buf(),
            owner: owner_id(),
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
            let job = new_job(id, source.clone(), t);
            let mut superseded = Vec::new();
            for mut old in replaced {
                supersede(&mut old, id, t);
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

    /// The one server holds every lease: nothing to check.
    pub fn update_held(&self, id: u64, f: impl FnOnce(&mut Job)) -> Result<Option<Job>> {
        self.update(id, f).map(Some)
    }

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
            start(&mut job, &self.owner);
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

    /// At start every running job is a dead server's: the file lock
    /// admits one server at a time.
    pub fn recover(&self, settle: &dyn Fn(&mut Job) -> bool) -> Result<Recovered> {
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
                let fate = recover_one(&mut j, settle);
                r.note(j.id, &fate);
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

    pub fn prune(&self, max_age_secs: u64, keep: usize) -> Result<Vec<u64>> {
        self.write(|tx| {
            let mut jobs = tx.open_table(JOBS)?;
            let mut done = Vec::new();
            for item in jobs.iter()? {
                let (k, v) = item?;
                let Ok(j) = serde_json::from_slice::<Job>(v.value()) else {
                    continue;
                };
                if prunable(&j) {
                    done.push((k.value(), j.created));
                }
            }
            let gone = to_prune(done, max_age_secs, keep);
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

    /// Every one: no other server can be telling the registry.
    pub fn pending_callbacks(&self) -> Result<Vec<Job>> {
        Ok(self.list()?.into_iter().filter(owes_callback).collect())
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Write a raw record (tests: an older schema's, a damaged one).
    #[cfg(test)]
    pub(super) fn put_raw(&self, id: u64, bytes: &[u8]) -> Result<()> {
        self.write(|tx| {
            tx.open_table(JOBS)?.insert(id, bytes)?;
            Ok(())
        })
    }
}
