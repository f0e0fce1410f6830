//! The job store's guarantees, each against a real redb file.

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
fn a_record_that_does_not_decode_is_quarantined_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.redb");
    {
        let s = Store::open(&path).unwrap();
        s.enqueue(mlflow("a")).unwrap();
        s.enqueue(mlflow("b")).unwrap();
        // An older schema's record, ahead of the queued ones.
        s.write(|tx| {
            tx.open_table(JOBS)?
                .insert(0, br#"{"id":0,"kind":"v0"}"#.as_slice())?;
            Ok(())
        })
        .unwrap();
        assert_eq!(s.claim_next().unwrap().unwrap().id, 1);
        assert_eq!(s.quarantined().unwrap(), vec![0]);
        s.write(|tx| {
            tx.open_table(JOBS)?
                .insert(7, b"\xff not json".as_slice())?;
            Ok(())
        })
        .unwrap();
        assert_eq!(s.list().unwrap().len(), 2);
    }
    // At start too: nothing stops the queue or the recovery.
    let s = Store::open(&path).unwrap();
    assert_eq!(s.quarantined().unwrap(), vec![0, 7]);
    assert_eq!(s.recover().unwrap().requeued, vec![1]);
    assert_eq!(s.claim_next().unwrap().unwrap().id, 1);
    assert_eq!(s.claim_next().unwrap().unwrap().id, 2);
}

#[test]
fn concurrent_updates_are_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(Store::open(&dir.path().join("jobs.redb")).unwrap());
    let (j, _) = s.enqueue(mlflow("a")).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let s = s.clone();
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

#[test]
fn a_second_server_on_the_same_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.redb");
    let _a = Store::open(&path).unwrap();
    let e = Store::open(&path).err().unwrap().to_string();
    assert!(e.contains("jobs.redb"), "{e}");
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

#[test]
fn a_newer_push_to_the_same_ref_supersedes_the_queued_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("jobs.redb")).unwrap();
    let (a, _) = s.enqueue(hf("refs/pr/1", "a1")).unwrap();
    let (other, _) = s.enqueue(hf("refs/heads/main", "m1")).unwrap();
    let Admitted::New { job: b, superseded } = s.admit(hf("refs/pr/1", "a2"), 10).unwrap() else {
        panic!("not admitted")
    };
    assert_eq!(superseded, vec![a.id]);
    let old = s.get(a.id).unwrap().unwrap();
    assert_eq!(old.state, JobState::Superseded);
    assert!(old.error.unwrap().contains(&format!("job {}", b.id)));
    // Superseded jobs never run and owe no callback; the others run in order.
    assert_eq!(s.claim_next().unwrap().unwrap().id, other.id);
    assert_eq!(s.claim_next().unwrap().unwrap().id, b.id);
    assert!(s.pending_callbacks().unwrap().is_empty());
}

#[test]
fn a_full_queue_admits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("jobs.redb")).unwrap();
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

#[test]
fn retention_deletes_old_and_surplus_done_jobs_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("jobs.redb")).unwrap();
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
