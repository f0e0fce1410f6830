//! The job store's guarantees: one suite, run against each backend, a real
//! redb file and a fresh database on the PostgreSQL server that
//! `PROBEGATE_TEST_POSTGRES_URL` names (scripts/postgres-env.sh starts
//! one). Without that variable the PostgreSQL half is skipped with a note,
//! except under CI=true, where it fails.

use std::sync::Arc;
use std::time::Duration;

use super::*;

/// Where a store lives. Opening again after dropping is what a crash and
/// restart do; a peer is another server on the same queue (redb admits
/// one, so there it is the same handle).
trait Backend {
    fn open(&self) -> Store;
    fn peer(&self, s: &Arc<Store>) -> Arc<Store>;
}

struct Redb(tempfile::TempDir);

impl Redb {
    fn new() -> Self {
        Redb(tempfile::tempdir().unwrap())
    }
}

impl Backend for Redb {
    fn open(&self) -> Store {
        Store::Redb(RedbStore::open(&self.0.path().join("jobs.redb")).unwrap())
    }
    fn peer(&self, s: &Arc<Store>) -> Arc<Store> {
        s.clone()
    }
}

/// A fresh database; leases of `lease` (zero: a dropped store's jobs are
/// free at once, as a dead redb server's are at the next start).
struct Pg {
    url: String,
    lease: Duration,
}

impl Pg {
    fn new() -> Option<Self> {
        Self::with_lease(Duration::ZERO)
    }

    fn with_lease(lease: Duration) -> Option<Self> {
        test_database().map(|url| Pg { url, lease })
    }

    fn pg(&self) -> PgStore {
        PgStore::open(&self.url, self.lease).unwrap()
    }
}

impl Backend for Pg {
    fn open(&self) -> Store {
        Store::Postgres(Box::new(self.pg()))
    }
    fn peer(&self, _: &Arc<Store>) -> Arc<Store> {
        Arc::new(self.open())
    }
}

impl Store {
    fn put_raw(&self, id: u64, bytes: &[u8]) -> Result<()> {
        each!(self, s => s.put_raw(id, bytes))
    }
}

/// Each test function once per backend.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod redb {
            $( #[test] fn $name() { super::$name(&super::Redb::new()) } )*
        }
        mod postgres {
            $( #[test] fn $name() {
                if let Some(b) = super::Pg::new() { super::$name(&b) }
            } )*
        }
    };
}

both!(
    dedupes_claims_once_and_recovers_after_reopen,
    a_job_that_keeps_killing_the_server_is_failed_not_retried,
    an_outcome_the_dead_run_left_is_recorded_not_rerun,
    a_record_that_does_not_decode_is_quarantined_not_fatal,
    concurrent_updates_are_not_lost,
    concurrent_claims_and_redeliveries_never_share_a_job,
    a_newer_push_to_the_same_ref_supersedes_the_queued_one,
    a_full_queue_admits_nothing,
    retention_deletes_old_and_surplus_done_jobs_only,
);

fn mlflow(id: &str) -> Source {
    Source::Mlflow {
        name: "m".into(),
        version: "1".into(),
        event: "model_version.created".into(),
        delivery_id: id.into(),
    }
}

fn hf(git_ref: &str, sha: &str) -> Source {
    Source::Huggingface {
        repo: "acme/a".into(),
        repo_type: "model".into(),
        git_ref: git_ref.into(),
        new_sha: sha.into(),
        webhook_id: "w".into(),
    }
}

fn rerun(_: &mut Job) -> bool {
    false
}

fn dedupes_claims_once_and_recovers_after_reopen(b: &dyn Backend) {
    {
        let s = b.open();
        let (a, new_a) = s.enqueue(mlflow("d1")).unwrap();
        let (b2, new_b) = s.enqueue(mlflow("d1")).unwrap();
        assert!(new_a && !new_b);
        assert_eq!(a.id, b2.id);
        let (c, _) = s.enqueue(mlflow("d2")).unwrap();
        assert_eq!(c.id, a.id + 1);
        let first = s.claim_next().unwrap().unwrap();
        assert_eq!((first.id, first.attempts), (a.id, 1));
        assert_eq!(first.state, JobState::Running);
        assert_eq!(first.worker.as_deref(), Some(s.owner()));
        // Dropped without finishing: the process "crashed".
    }
    let s = b.open();
    assert_eq!(s.recover(&rerun).unwrap().requeued, vec![1]);
    let again = s.claim_next().unwrap().unwrap();
    assert_eq!((again.id, again.attempts), (1, 2));
    assert_eq!(again.worker.as_deref(), Some(s.owner()));
    s.update(1, |j| j.state = JobState::Finished).unwrap();
    assert_eq!(s.pending_callbacks().unwrap().len(), 1);
    assert_eq!(s.claim_next().unwrap().unwrap().id, 2);
    assert!(s.claim_next().unwrap().is_none());
    // The dedupe keys survived the reopen too.
    assert!(!s.enqueue(mlflow("d1")).unwrap().1);
}

fn a_job_that_keeps_killing_the_server_is_failed_not_retried(b: &dyn Backend) {
    {
        let s = b.open();
        s.enqueue(mlflow("poison")).unwrap();
        s.enqueue(mlflow("next")).unwrap();
    }
    // The server dies in job 1 on every attempt.
    for attempt in 1..=MAX_ATTEMPTS {
        let s = b.open();
        let r = s.recover(&rerun).unwrap();
        if attempt > 1 {
            assert_eq!(r.requeued, vec![1], "attempt {attempt}");
        }
        let j = s.claim_next().unwrap().unwrap();
        assert_eq!((j.id, j.attempts), (1, attempt));
    }
    let s = b.open();
    let r = s.recover(&rerun).unwrap();
    assert_eq!(
        r,
        Recovered {
            requeued: vec![],
            failed: vec![1],
            recorded: vec![],
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

fn an_outcome_the_dead_run_left_is_recorded_not_rerun(b: &dyn Backend) {
    {
        let s = b.open();
        s.enqueue(mlflow("a")).unwrap();
        s.enqueue(mlflow("b")).unwrap();
        s.claim_next().unwrap().unwrap();
        s.claim_next().unwrap().unwrap();
    }
    let s = b.open();
    // Job 2's run left its outcome; job 1's did not.
    let r = s
        .recover(&|j: &mut Job| {
            if j.id != 2 {
                return false;
            }
            j.state = JobState::Finished;
            true
        })
        .unwrap();
    assert_eq!((r.requeued, r.recorded), (vec![1], vec![2]));
    assert_eq!(s.get(2).unwrap().unwrap().state, JobState::Finished);
    assert_eq!(s.claim_next().unwrap().unwrap().id, 1);
    assert!(s.claim_next().unwrap().is_none());
    assert_eq!(
        s.pending_callbacks()
            .unwrap()
            .iter()
            .map(|j| j.id)
            .collect::<Vec<_>>(),
        vec![2]
    );
}

fn a_record_that_does_not_decode_is_quarantined_not_fatal(b: &dyn Backend) {
    {
        let s = b.open();
        s.enqueue(mlflow("a")).unwrap();
        s.enqueue(mlflow("b")).unwrap();
        // An older schema's record, ahead of the queued ones.
        s.put_raw(0, br#"{"id":0,"kind":"v0"}"#).unwrap();
        assert_eq!(s.claim_next().unwrap().unwrap().id, 1);
        assert_eq!(s.quarantined().unwrap(), vec![0]);
        s.put_raw(7, b"\xff not json").unwrap();
        assert_eq!(s.list().unwrap().len(), 2);
    }
    // At start too: nothing stops the queue or the recovery.
    let s = b.open();
    assert_eq!(s.quarantined().unwrap(), vec![0, 7]);
    assert_eq!(s.recover(&rerun).unwrap().requeued, vec![1]);
    assert_eq!(s.claim_next().unwrap().unwrap().id, 1);
    assert_eq!(s.claim_next().unwrap().unwrap().id, 2);
}

fn concurrent_updates_are_not_lost(b: &dyn Backend) {
    let s = Arc::new(b.open());
    let (j, _) = s.enqueue(mlflow("a")).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let s = b.peer(&s);
            std::thread::spawn(move || {
                for _ in 0..25 {
                    s.update(j.id, |j| j.callback_attempts += 1).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(s.get(j.id).unwrap().unwrap().callback_attempts, 100);
}

/// Four servers (PostgreSQL) or four workers of one (redb) admit the same
/// deliveries and drain the queue together: one job per delivery, each
/// claimed exactly once.
fn concurrent_claims_and_redeliveries_never_share_a_job(b: &dyn Backend) {
    const N: usize = 200;
    let first = Arc::new(b.open());
    let servers: Vec<Arc<Store>> = (0..4).map(|_| b.peer(&first)).collect();
    let admitted: Vec<Vec<(u64, bool)>> = std::thread::scope(|sc| {
        let hs: Vec<_> = servers
            .iter()
            .map(|s| {
                sc.spawn(move || {
                    (0..N)
                        .map(|i| {
                            let (j, new) = s.enqueue(mlflow(&format!("d{i}"))).unwrap();
                            (j.id, new)
                        })
                        .collect()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let new: usize = admitted.iter().flatten().filter(|(_, n)| *n).count();
    assert_eq!(new, N, "each delivery is new exactly once");
    for i in 0..N {
        let ids: Vec<u64> = admitted.iter().map(|a| a[i].0).collect();
        assert!(
            ids.windows(2).all(|w| w[0] == w[1]),
            "delivery {i}: {ids:?}"
        );
    }
    let claimed: Vec<Vec<u64>> = std::thread::scope(|sc| {
        let hs: Vec<_> = servers
            .iter()
            .map(|s| {
                sc.spawn(move || {
                    let mut mine = Vec::new();
                    while let Some(j) = s.claim_next().unwrap() {
                        assert_eq!(j.attempts, 1);
                        mine.push(j.id);
                    }
                    mine
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all: Vec<u64> = claimed.concat();
    all.sort_unstable();
    let total = all.len();
    all.dedup();
    assert_eq!((total, all.len()), (N, N), "claimed: {claimed:?}");
}

fn a_newer_push_to_the_same_ref_supersedes_the_queued_one(b: &dyn Backend) {
    let s = b.open();
    let (a, _) = s.enqueue(hf("refs/pr/1", "a1")).unwrap();
    let (other, _) = s.enqueue(hf("refs/heads/main", "m1")).unwrap();
    let Admitted::New {
        job: b2,
        superseded,
    } = s.admit(hf("refs/pr/1", "a2"), 10).unwrap()
    else {
        panic!("not admitted")
    };
    assert_eq!(superseded, vec![a.id]);
    let old = s.get(a.id).unwrap().unwrap();
    assert_eq!(old.state, JobState::Superseded);
    assert!(old.error.unwrap().contains(&format!("job {}", b2.id)));
    // Superseded jobs never run and owe no callback; the others run in order.
    assert_eq!(s.claim_next().unwrap().unwrap().id, other.id);
    assert_eq!(s.claim_next().unwrap().unwrap().id, b2.id);
    assert!(s.pending_callbacks().unwrap().is_empty());
}

fn a_full_queue_admits_nothing(b: &dyn Backend) {
    let s = b.open();
    for i in 0..3 {
        assert!(matches!(
            s.admit(mlflow(&format!("d{i}")), 3).unwrap(),
            Admitted::New { .. }
        ));
    }
    assert!(matches!(s.admit(mlflow("d3"), 3).unwrap(), Admitted::Full));
    // A redelivery is still recognised, and a claim makes room.
    assert!(matches!(
        s.admit(mlflow("d0"), 3).unwrap(),
        Admitted::Known(_)
    ));
    s.claim_next().unwrap();
    assert!(matches!(
        s.admit(mlflow("d3"), 3).unwrap(),
        Admitted::New { .. }
    ));
    assert_eq!(s.list().unwrap().len(), 4);
}

fn retention_deletes_old_and_surplus_done_jobs_only(b: &dyn Backend) {
    let s = b.open();
    for i in 0..5 {
        s.enqueue(mlflow(&format!("d{i}"))).unwrap();
    }
    for id in 1..=4 {
        s.update(id, |j| {
            j.state = JobState::Finished;
            j.callback = CallbackState::Sent;
        })
        .unwrap();
    }
    // Job 4's callback is still due: kept whatever its age.
    s.update(4, |j| j.callback = CallbackState::Pending)
        .unwrap();
    assert_eq!(s.prune(u64::MAX, 2).unwrap(), vec![1]);
    assert_eq!(s.prune(0, 100).unwrap(), vec![2, 3]);
    let left: Vec<u64> = s.list().unwrap().iter().map(|j| j.id).collect();
    assert_eq!(left, vec![4, 5]);
    // A pruned delivery's key is forgotten with it.
    assert!(s.enqueue(mlflow("d1")).unwrap().1);
}

#[test]
fn a_second_server_on_the_same_redb_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.redb");
    let _a = RedbStore::open(&path).unwrap();
    let e = RedbStore::open(&path).err().unwrap().to_string();
    assert!(e.contains("jobs.redb"), "{e}");
}

// PostgreSQL only: leases between live servers.

impl PgStore {
    /// As if the lease on `id` had run out.
    fn expire(&self, id: u64) {
        self.with(|c| {
            c.execute(
                "UPDATE probegate_jobs SET lease_until = now() - interval '1 second' WHERE id = $1",
                &[&(id as i64)],
            )?;
            Ok(())
        })
        .unwrap();
    }
}

#[test]
fn postgres_a_live_lease_holds_and_an_expired_one_passes_to_another_server() {
    let Some(b) = Pg::with_lease(Duration::from_secs(60)) else {
        return;
    };
    let (a, other) = (b.pg(), b.pg());
    for i in 0..2 {
        a.admit(mlflow(&format!("d{i}")), 10).unwrap();
    }
    assert_eq!(a.claim_next().unwrap().unwrap().id, 1);
    // A's lease holds: B neither recovers job 1 nor claims it.
    assert_eq!(other.recover(&rerun).unwrap(), Recovered::default());
    assert_eq!(other.claim_next().unwrap().unwrap().id, 2);
    assert!(a.renew().unwrap().is_empty());
    // A stops renewing (killed): B takes job 1 over as a new attempt.
    a.expire(1);
    assert_eq!(other.recover(&rerun).unwrap().requeued, vec![1]);
    let j = other.claim_next().unwrap().unwrap();
    assert_eq!((j.id, j.attempts), (1, 2));
    assert_eq!(j.worker.as_deref(), Some(other.owner()));
    // A, back, cannot record its stale outcome; B can.
    assert!(a
        .update_held(1, |j| j.state = JobState::Finished)
        .unwrap()
        .is_none());
    assert_eq!(a.renew().unwrap(), vec![1]);
    assert_eq!(a.get(1).unwrap().unwrap().state, JobState::Running);
    let done = other
        .update_held(1, |j| j.state = JobState::Finished)
        .unwrap()
        .unwrap();
    assert_eq!(done.state, JobState::Finished);
    // B holds job 1's callback: A does not get it too.
    assert!(a.pending_callbacks().unwrap().is_empty());
    other.release(1);
    other.expire(1);
    let owed: Vec<u64> = a
        .pending_callbacks()
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(owed, vec![1]);
    assert!(other.pending_callbacks().unwrap().is_empty());
}

#[test]
fn postgres_schema_is_created_once_and_a_newer_one_is_refused() {
    let Some(b) = Pg::new() else {
        return;
    };
    // Servers starting together on an empty database.
    std::thread::scope(|sc| {
        for _ in 0..4 {
            sc.spawn(|| b.pg());
        }
    });
    let s = b.pg();
    s.with(|c| {
        c.execute("UPDATE probegate_schema SET version = 99", &[])?;
        Ok(())
    })
    .unwrap();
    drop(s);
    let e = PgStore::open(&b.url, Duration::ZERO)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("version 99") && e.contains("upgrade probegate"),
        "{e}"
    );
}

#[test]
fn postgres_errors_never_show_the_password() {
    let e = PgStore::open(
        "postgres://probegate:hunter2-secret@127.0.0.1:1/nowhere",
        Duration::ZERO,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(!e.contains("hunter2"), "{e}");
    assert!(e.contains("postgres://***@127.0.0.1:1/nowhere"), "{e}");
    // And says why.
    assert!(e.contains("refused"), "{e}");
}
