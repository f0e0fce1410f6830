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
