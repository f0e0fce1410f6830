//! The workers: claim the oldest queued job, fetch its candidate from the
//! registry, run the check in a child process (child.rs) within the job's
//! limits, record the outcome, then tell the registry (callback.rs).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Semaphore};

use super::callback::callback;
use super::child::{self, CheckRequest, ChildLimits, Finished};
use super::config::Registry;
use super::store::{Job, Source};
use super::{registry, RemoveOnDrop, Shared};
use crate::error::{Error, Result};
use crate::gate;

/// The error outcome for `e`, with its report written to the job's directory.
fn failed(dir: &Path, candidate: Option<String>, e: &str) -> Finished {
    // Both are best effort: the job's record is what the registry hears.
    let _ = gate::report::write_error_report(dir, e);
    let f = Finished::error(candidate, e);
    let _ = f.write(dir);
    f
}

/// Resolve the candidate from the registry, then check it in a child
/// process. Never panics into the worker: every failure, the child's
/// death included, is an `error` outcome with its message.
async fn execute(app: Shared, job: Job) -> Finished {
    let dir = app.job_dir(job.id);
    // A rerun after a crash must not read the earlier attempt's outcome.
    if let Err(e) = remove_outcome(&dir) {
        return Finished::error(None, &e.to_string());
    }
    let started = Instant::now();
    let timeout = Duration::from_secs(app.cfg.limits.job_timeout_secs);
    let target = match &job.source {
        Source::Huggingface { repo, .. } => app.cfg.target(Registry::Huggingface, repo),
        Source::Mlflow { name, .. } => app.cfg.target(Registry::Mlflow, name),
    };
    let Some(target) = target.cloned() else {
        let e = format!(
            "no target for `{}` in {}",
            job.source.registry_name(),
            app.cfg.path.display()
        );
        return failed(&dir, None, &e);
    };
    // Whichever way the job ends, its download goes: nothing accumulates.
    let _cache = RemoveOnDrop(app.fetch_cache(&job));
    let fetch = fetch(&app, &job, &target.base);
    let candidate = match tokio::time::timeout(timeout, fetch).await {
        Ok(Ok(c)) => c,
        // Registry errors quote URLs: no credentials into reports, /jobs or tags.
        Ok(Err(e)) => return failed(&dir, None, &app.cfg.redact(&e.to_string())),
        Err(_) => {
            let e = format!(
                "the candidate's download timed out after {} s",
                timeout.as_secs()
            );
            return failed(&dir, None, &e);
        }
    };
    let req = CheckRequest {
        name: job.source.registry_name().to_string(),
        base: target.base.clone(),
        candidate: candidate.clone(),
        monitors: target.monitors.clone(),
        policy: target.policy.clone(),
        data: target.data.clone(),
        history: Some(app.cfg.state_dir.join("history.jsonl")),
        run: Some(format!("serve:{}:{}", job.id, job.created)),
    };
    let limits = ChildLimits {
        timeout: timeout.saturating_sub(started.elapsed()),
        memory_mib: app.cfg.limits.job_memory_mib,
    };
    let d = dir.clone();
    let res = tokio::task::spawn_blocking(move || check_in_child(&d, &req, limits))
        .await
        .unwrap_or_else(|e| Err(Error::Usage(format!("check task failed: {e}"))));
    match res {
        Ok(f) => f,
        Err(e) => failed(&dir, Some(candidate), &app.cfg.redact(&e.to_string())),
    }
}

/// Fetch the job's candidate into its own cache, within the download cap;
/// the model reference `check` takes.
async fn fetch(app: &Shared, job: &Job, base: &str) -> Result<String> {
    let cap = app.cfg.limits.max_download_bytes;
    let cache = app.fetch_cache(job);
    match &job.source {
        Source::Huggingface { repo, new_sha, .. } => {
            let (a, repo, sha, base) =
                (app.clone(), repo.clone(), new_sha.clone(), base.to_string());
            tokio::task::spawn_blocking(move || match &a.cfg.huggingface {
                Some(hf) => registry::hf_fetch(hf, &repo, &sha, &base, &cache, cap),
                None => Err(Error::Usage("no [huggingface] section".into())),
            })
            .await
            .unwrap_or_else(|e| Err(Error::Usage(format!("fetch task failed: {e}"))))
        }
        Source::Mlflow { name, version, .. } => match &app.cfg.mlflow {
            Some(m) => {
                let mut limits = registry::ArtifactLimits::from_env()?;
                // The environment's cap, when set, stays the one that counts.
                if std::env::var_os(registry::MAX_BYTES_ENV).is_none() {
                    limits.max_bytes = cap;
                }
                registry::mlflow_fetch(m, name, version, base, &cache, &limits).await
            }
            None => Err(Error::Usage("no [mlflow] section".into())),
        },
    }
}

/// Write the request, run this binary's hidden `serve run-job` on it, and
/// read the outcome it wrote; its death or timeout is the job's error.
fn check_in_child(dir: &Path, req: &CheckRequest, limits: ChildLimits) -> Result<Finished> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let outcome = dir.join(child::OUTCOME_FILE);
    let bytes = serde_json::to_vec_pretty(req).map_err(|e| Error::Usage(e.to_string()))?;
    crate::util::write_atomic(&dir.join(child::REQUEST_FILE), &bytes)?;
    let exe = std::env::current_exe()
        .map_err(|e| Error::Usage(format!("cannot locate this probegate binary: {e}")))?;
    let mut cmd = Command::new(exe);
    cmd.args(["serve", "run-job"]).arg(dir);
    let candidate = Some(req.candidate.clone());
    match child::run_limited(cmd, &dir.join(child::LOG_FILE), limits)? {
        Ok(()) => {
            let text = std::fs::read_to_string(&outcome).map_err(|e| Error::io(&outcome, e))?;
            serde_json::from_str(&text)
                .map_err(|e| Error::input(&outcome, e.line(), format!("not an outcome: {e}")))
        }
        Err(why) => Ok(failed(dir, candidate, &why)),
    }
}

fn remove_outcome(dir: &Path) -> Result<()> {
    let path = dir.join(child::OUTCOME_FILE);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&path, e)),
        _ => Ok(()),
    }
}

/// Record a job's outcome, retrying while the store fails (a full disk):
/// an outcome is never dropped, and its callback waits for it. At shutdown
/// the attempt stops; outcome.json is recorded at the next start. A job
/// whose lease was lost meanwhile (another server took it over) is that
/// server's to record: false, nothing written.
async fn record(app: &Shared, id: u64, o: Finished, stop: &mut watch::Receiver<bool>) -> bool {
    let mut delay = Duration::from_millis(250);
    loop {
        let (a, f) = (app.clone(), o.clone());
        let res = tokio::task::spawn_blocking(move || a.store.update_held(id, |j| f.apply(j)))
            .await
            .unwrap_or_else(|e| Err(Error::Usage(format!("record task failed: {e}"))));
        let e = match res {
            Ok(Some(_)) => return true,
            Ok(None) => {
                tracing::error!(
                    job = id,
                    "the job's lease was lost (this server could not renew it in time); another server runs it, this outcome is dropped"
                );
                return false;
            }
            Err(e) => e,
        };
        tracing::error!(
            job = id,
            "cannot record the outcome, retrying in {delay:?}: {e}"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => return false,
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// Job directories in this machine's `state_dir` whose job the queue no
/// longer has: with a shared queue, whichever server pruned the job, the
/// one that ran it (and holds its reports) removes them. Listed before the
/// queue is read, so a directory's job is in that read unless pruned.
fn orphan_dirs(app: &Shared) -> Result<Vec<u64>> {
    let root = app.cfg.state_dir.join("jobs");
    let local: Vec<u64> = match std::fs::read_dir(&root) {
        Ok(rd) => rd
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => return Ok(Vec::new()),
    };
    let known: std::collections::BTreeSet<u64> = app.store.list()?.iter().map(|j| j.id).collect();
    Ok(local.into_iter().filter(|id| !known.contains(id)).collect())
}

/// Retention, at start and then hourly: done jobs past `[limits]
/// keep_days` or beyond `keep_jobs` go, their directories with them.
pub(super) async fn retention_loop(app: Shared, mut stop: watch::Receiver<bool>) {
    loop {
        let a = app.clone();
        let res = tokio::task::spawn_blocking(move || {
            let l = a.cfg.limits;
            let mut gone = a.store.prune(
                l.keep_days.saturating_mul(86_400),
                usize::try_from(l.keep_jobs).unwrap_or(usize::MAX),
            )?;
            if a.store.lease_period().is_some() {
                gone.extend(orphan_dirs(&a)?);
            }
            for id in &gone {
                let dir = a.job_dir(*id);
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!("could not remove {}: {e}", dir.display());
                    }
                }
            }
            Ok::<_, Error>(gone.len())
        })
        .await;
        match res {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!("retention: {n} done jobs deleted"),
            Ok(Err(e)) => tracing::warn!("retention: {e}"),
            Err(e) => tracing::warn!("retention task: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// A callback owed since before this server took it on (a restart, or a
/// dead server's): made, then its lease let go.
pub(super) async fn resume_callback(app: Shared, id: u64) {
    callback(app.clone(), id).await;
    app.store.release(id);
}

/// With a shared queue, every third of the lease: renew this server's
/// leases, then (until shutdown) take over what dead servers left, the jobs
/// they were running (queued again, or failed after
/// [`super::store::MAX_ATTEMPTS`]) and the callbacks they owed. Runs until
/// aborted, after the running checks finished: their leases must hold to
/// the end.
pub(super) async fn lease_loop(app: Shared, stop: watch::Receiver<bool>) {
    let Some(period) = app.store.lease_period() else {
        return;
    };
    loop {
        let a = app.clone();
        let stopping = *stop.borrow();
        let res = tokio::task::spawn_blocking(move || {
            let lost = a.store.renew()?;
            if stopping {
                return Ok((lost, 0, Vec::new()));
            }
            let r = super::recover(&a.cfg, &a.store)?;
            Ok::<_, Error>((lost, r.requeued.len(), a.store.pending_callbacks()?))
        })
        .await
        .unwrap_or_else(|e| Err(Error::Usage(format!("lease task failed: {e}"))));
        match res {
            Ok((lost, requeued, owed)) => {
                if !lost.is_empty() {
                    tracing::error!("leases lost to other servers (renewed too late): {lost:?}");
                }
                if requeued > 0 {
                    app.wake.notify_waiters();
                }
                for j in owed {
                    tracing::info!(job = j.id, "telling the registry for a server that stopped");
                    tokio::spawn(resume_callback(app.clone(), j.id));
                }
            }
            Err(e) => tracing::error!("job queue: {e}"),
        }
        tokio::time::sleep(period).await;
    }
}

pub(super) async fn worker_loop(app: Shared, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(app.cfg.workers));
    let mut running = tokio::task::JoinSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let a = app.clone();
        let next = tokio::task::spawn_blocking(move || a.store.claim_next()).await;
        match next {
            Ok(Ok(Some(job))) => {
                let a = app.clone();
                let mut stop = stop.clone();
                running.spawn(async move {
                    let id = job.id;
                    tracing::info!(job = id, attempt = job.attempts, "running {:?}", job.source);
                    let o = execute(a.clone(), job).await;
                    tracing::info!(job = id, "{}", o.summary);
                    let recorded = record(&a, id, o, &mut stop).await;
                    drop(permit);
                    if recorded {
                        callback(a.clone(), id).await;
                    }
                    a.store.release(id);
                });
            }
            Ok(Ok(None)) => {
                drop(permit);
                tokio::select! {
                    _ = app.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => {}
                }
            }
            Ok(Err(e)) => {
                drop(permit);
                tracing::error!("job store: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                drop(permit);
                tracing::error!("claim task: {e}");
            }
        }
        while running.try_join_next().is_some() {}
    }
    // Running checks finish; a job cut off by a hard kill is rerun on restart.
    while running.join_next().await.is_some() {}
}
