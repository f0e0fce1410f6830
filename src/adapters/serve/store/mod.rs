//! The durable job queue behind `probegate serve`: an embedded redb file
//! (the default, one server) or a PostgreSQL database that any number of
//! servers on any number of machines share (`[queue] url`). A delivery is
//! committed before the server answers 202, so an accepted job survives a
//! crash; a unique dedupe key makes a redelivery (MLflow retries, Hugging
//! Face replays) a no-op, whichever server it reaches.
//!
//! States: queued → running → finished | error (or queued → superseded, when
//! a newer push to the same ref replaces it), and independently the
//! callback to the registry: pending → sent | failed. A job left `running`
//! by a dead server goes back to `queued` (its run left no outcome); a
//! finished job whose callback was not sent is only called back, never run
//! again. With redb, "dead" is every running job found at start (the file
//! lock admits one server); with PostgreSQL, a running job whose lease its
//! server stopped renewing.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::gate::report::Outcome;

mod job;
mod postgres;
mod redb;

pub use self::postgres::{test_database, PgStore, TEST_URL_ENV};
pub use self::redb::RedbStore;
pub use job::{Admitted, CallbackState, Job, JobState, Source};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Times a server may die in one job before the job is failed instead of retried.
pub const MAX_ATTEMPTS: u32 = 3;

/// What [`Store::recover`] did with the jobs a dead server left running.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub requeued: Vec<u64>,
    pub failed: Vec<u64>,
    /// Jobs whose outcome the dead run had left (`settle` recorded it).
    pub recorded: Vec<u64>,
}

/// Either backend, behind one API: the server calls these and nothing else.
/// Every call blocks (a redb fsync, a PostgreSQL round trip): call them off
/// the async workers.
pub enum Store {
    Redb(RedbStore),
    /// Boxed: its connection pool and settings dwarf the redb handle.
    Postgres(Box<PgStore>),
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Redb($s) => $e,
            Store::Postgres($s) => $e,
        }
    };
}

impl Store {
    /// Insert a job for `source` unless its dedupe key is known. Returns the
    /// job and whether it is new. Durable when this returns. No queue cap.
    pub fn enqueue(&self, source: Source) -> Result<(Job, bool)> {
        match self.admit(source, usize::MAX)? {
            Admitted::New { job, .. } => Ok((job, true)),
            Admitted::Known(job) => Ok((job, false)),
            Admitted::Full => Err(Error::Usage("the queue is full".into())),
        }
    }

    /// [`Store::enqueue`] with the queue's bounds, in one transaction: a
    /// known delivery is returned as it is; queued jobs for the same
    /// repository and ref are superseded by the new one; with `max_queued`
    /// jobs already queued (those superseded not counted), nothing is written.
    pub fn admit(&self, source: Source, max_queued: usize) -> Result<Admitted> {
        each!(self, s => s.admit(source, max_queued))
    }

    pub fn get(&self, id: u64) -> Result<Option<Job>> {
        each!(self, s => s.get(id))
    }

    /// Every job that decodes, by id.
    pub fn list(&self) -> Result<Vec<Job>> {
        each!(self, s => s.list())
    }

    /// Read-modify-write one job in a single transaction, so two writers
    /// (a worker and a callback) never lose each other's change.
    pub fn update(&self, id: u64, f: impl FnOnce(&mut Job)) -> Result<Job> {
        each!(self, s => s.update(id, f))
    }

    /// [`Store::update`] for the worker that claimed the job: `None`, and
    /// nothing written, when its lease was lost (another server took the
    /// job over, so that one's outcome counts).
    pub fn update_held(&self, id: u64, f: impl FnOnce(&mut Job)) -> Result<Option<Job>> {
        each!(self, s => s.update_held(id, f))
    }

    /// The oldest queued job, now marked running (attempts + 1) and leased
    /// to this server; no two servers ever claim one job. A record that does
    /// not decode is quarantined on the way, not an error.
    pub fn claim_next(&self) -> Result<Option<Job>> {
        each!(self, s => s.claim_next())
    }

    /// Jobs left running by a dead server: `settle` may record the outcome
    /// the run left (true: done, not rerun); otherwise the job is queued
    /// again, unless a server has now died in it [`MAX_ATTEMPTS`] times: then
    /// it is failed with its reason (and the registry told), so one crafted
    /// repository cannot hold the servers in a crash loop while others wait.
    pub fn recover(&self, settle: &dyn Fn(&mut Job) -> bool) -> Result<Recovered> {
        each!(self, s => s.recover(settle))
    }

    /// Retention: done jobs the registry has been told of (or never will
    /// be), created more than `max_age_secs` ago or beyond the newest `keep`
    /// of them, are deleted with their dedupe keys in one transaction.
    /// Returns their ids; their directories are the caller's to remove.
    pub fn prune(&self, max_age_secs: u64, keep: usize) -> Result<Vec<u64>> {
        each!(self, s => s.prune(max_age_secs, keep))
    }

    /// Done jobs whose registry has not been told yet and whose callback no
    /// live server is making; this server now owes them (with PostgreSQL it
    /// holds their leases until [`Store::release`]).
    pub fn pending_callbacks(&self) -> Result<Vec<Job>> {
        each!(self, s => s.pending_callbacks())
    }

    /// Ids of the records quarantined so far.
    pub fn quarantined(&self) -> Result<Vec<u64>> {
        each!(self, s => s.quarantined())
    }

    /// This server is done with the job (run, recorded, called back): stop
    /// renewing its lease.
    pub fn release(&self, id: u64) {
        if let Store::Postgres(s) = self {
            s.release(id)
        }
    }

    /// Extend the leases this server holds; the ids whose lease was lost.
    pub fn renew(&self) -> Result<Vec<u64>> {
        match self {
            Store::Redb(_) => Ok(Vec::new()),
            Store::Postgres(s) => s.renew(),
        }
    }

    /// How often leases must be renewed, when other servers share the
    /// queue; `None` for redb, which no other server can open.
    pub fn lease_period(&self) -> Option<std::time::Duration> {
        match self {
            Store::Redb(_) => None,
            Store::Postgres(s) => Some(s.lease() / 3),
        }
    }

    /// Who claims jobs through this handle (`host:pid:nonce`), as job records show it.
    pub fn owner(&self) -> &str {
        each!(self, s => s.owner())
    }
}

/// `host:pid:nonce`: which server ran a job (its reports are on that
/// machine), unique per process so a restarted server is a new owner.
fn owner_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    format!(
        "{host}:{}:{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

// The semantics both backends share, written once.

fn new_job(id: u64, source: Source, t: u64) -> Job {
    Job {
        id,
        source,
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
        worker: None,
    }
}

fn supersede(old: &mut Job, by: u64, t: u64) {
    let msg = format!("superseded by job {by}, a newer commit for the same ref");
    old.state = JobState::Superseded;
    old.summary = Some(msg.clone());
    old.error = Some(msg);
    old.updated = t;
}

fn start(job: &mut Job, owner: &str) {
    job.state = JobState::Running;
    job.attempts += 1;
    job.worker = Some(owner.to_string());
    job.updated = now();
}

/// What becomes of a job a dead server left running.
enum Fate {
    Recorded,
    Requeued,
    Failed,
}

fn recover_one(j: &mut Job, settle: &dyn Fn(&mut Job) -> bool) -> Fate {
    let fate = if settle(j) {
        Fate::Recorded
    } else if j.attempts >= MAX_ATTEMPTS {
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
        Fate::Failed
    } else {
        j.state = JobState::Queued;
        Fate::Requeued
    };
    j.updated = now();
    fate
}

impl Recovered {
    fn note(&mut self, id: u64, fate: &Fate) {
        match fate {
            Fate::Recorded => self.recorded.push(id),
            Fate::Requeued => self.requeued.push(id),
            Fate::Failed => self.failed.push(id),
        }
    }
}

/// Done jobs the registry has been told of (or never will be), which
/// retention may delete.
fn prunable(j: &Job) -> bool {
    let told = j.callback != CallbackState::Pending || j.state == JobState::Superseded;
    j.done() && told
}

/// Of the prunable `(id, created)`, those past `max_age_secs` or beyond the newest `keep`.
fn to_prune(
    mut done: Vec<(u64, u64)>,
    max_age_secs: u64,
    keep: usize,
) -> std::collections::BTreeSet<u64> {
    let cutoff = now().saturating_sub(max_age_secs);
    // Newest first: ids follow delivery order.
    done.sort_by_key(|d| std::cmp::Reverse(d.0));
    done.iter()
        .enumerate()
        .filter(|(i, (_, created))| *i >= keep || *created <= cutoff)
        .map(|(_, (id, _))| *id)
        .collect()
}

fn owes_callback(j: &Job) -> bool {
    j.done() && j.state != JobState::Superseded && j.callback == CallbackState::Pending
}

#[cfg(test)]
mod tests;
