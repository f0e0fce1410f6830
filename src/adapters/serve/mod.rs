//! `probegate serve`: the registries' adapter on the `check` pipeline.
//!
//! Hugging Face and MLflow webhooks are authenticated, turned into jobs and
//! committed to the queue (store/: an embedded redb file, or PostgreSQL
//! shared by several servers) before the answer (202; http.rs); workers
//! (worker.rs) run each `check` in a child process within the job's time
//! and memory limits (child.rs) and report back to the registry with retries
//! (callback.rs). A restart, or another server sharing the queue, resumes
//! whatever a crash interrupted.

pub mod callback;
pub mod child;
pub mod config;
pub mod http;
pub mod limits;
pub mod listen;
pub mod registry;
pub mod store;
pub mod webhook;
pub mod worker;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{watch, Notify};

use crate::error::{Error, Result};
use config::{Config, Queue};
use store::Store;

pub use callback::FINGERPRINT_TAG;
pub use child::run_job;
pub use config::Config as ServeConfig;

struct App {
    cfg: Config,
    store: Store,
    wake: Notify,
}

type Shared = Arc<App>;

impl App {
    fn job_dir(&self, id: u64) -> PathBuf {
        self.cfg.state_dir.join("jobs").join(id.to_string())
    }

    /// Where a job's candidate is downloaded (`hf-cache/{id}`,
    /// `mlflow-cache/{id}`); removed when the job ends, so caches never grow.
    fn fetch_cache(&self, job: &store::Job) -> PathBuf {
        let kind = match job.source {
            store::Source::Huggingface { .. } => "hf-cache",
            store::Source::Mlflow { .. } => "mlflow-cache",
        };
        self.cfg.state_dir.join(kind).join(job.id.to_string())
    }
}

/// A store call off the async workers: redb commits fsync, and the
/// PostgreSQL client blocks (and must not run on a runtime thread).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(Error::Usage(format!("store task failed: {e}"))))
}

/// Removes a directory when dropped: whichever way a job ends, its
/// downloaded candidate goes (the report keeps the candidate's fingerprint).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if self.0.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.0) {
                tracing::warn!("could not remove {}: {e}", self.0.display());
            }
        }
    }
}

async fn shutdown_signal(tx: watch::Sender<bool>) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: no new deliveries; running checks finish first");
    let _ = tx.send(true);
}

/// The queue `[queue]` names: PostgreSQL errors at start name the field.
fn open_store(cfg: &Config) -> Result<Store> {
    match &cfg.queue {
        Queue::Redb => store::RedbStore::open(&cfg.state_dir.join("jobs.redb")).map(Store::Redb),
        Queue::Postgres {
            url,
            field,
            lease_secs,
        } => store::PgStore::open(url, std::time::Duration::from_secs(*lease_secs))
            .map(|s| Store::Postgres(Box::new(s)))
            .map_err(|e| Error::field(&cfg.path, *field, e.to_string())),
    }
}

/// Jobs a dead server left running go back to the queue (or fail after
/// [`store::MAX_ATTEMPTS`]); an outcome that run left in this machine's
/// `jobs/{id}/` (a crash or a full disk kept it from the store) is recorded
/// instead of running the check again.
fn recover(cfg: &Config, store: &Store) -> Result<store::Recovered> {
    let recovered = store.recover(&|job| {
        let dir = cfg.state_dir.join("jobs").join(job.id.to_string());
        match child::Finished::read(&dir) {
            Some(o) => {
                o.apply(job);
                true
            }
            None => false,
        }
    })?;
    if !recovered.recorded.is_empty() {
        tracing::warn!(
            "recorded the outcomes interrupted runs left: {:?}",
            recovered.recorded
        );
    }
    if !recovered.requeued.is_empty() {
        tracing::warn!(
            "resuming jobs interrupted by a crash: {:?}",
            recovered.requeued
        );
    }
    if !recovered.failed.is_empty() {
        tracing::error!(
            "failing jobs the server died in {} times, not retrying them: {:?}",
            store::MAX_ATTEMPTS,
            recovered.failed
        );
    }
    Ok(recovered)
}

/// Run the server until SIGINT or SIGTERM. `on_listen` gets the bound address.
pub async fn serve(cfg: Config, on_listen: impl FnOnce(std::net::SocketAddr)) -> Result<()> {
    std::fs::create_dir_all(&cfg.state_dir).map_err(|e| Error::io(&cfg.state_dir, e))?;
    if cfg.mlflow.is_some() {
        // A bad download cap stops the server here, not each job later.
        registry::ArtifactLimits::from_env()?;
    }
    let c = cfg.clone();
    let (store, pending) = blocking(move || {
        let store = open_store(&c)?;
        tracing::info!(worker = store.owner(), "job queue: {:?}", c.queue);
        recover(&c, &store)?;
        let pending = store.pending_callbacks()?;
        Ok((store, pending))
    })
    .await?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| Error::Usage(format!("cannot listen on {}: {e}", cfg.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Usage(format!("listener: {e}")))?;
    let app = Arc::new(App {
        cfg,
        store,
        wake: Notify::new(),
    });
    for j in pending {
        tokio::spawn(worker::resume_callback(app.clone(), j.id));
    }
    let (tx, rx) = watch::channel(false);
    // Leases outlive the stop signal: running checks still finish first.
    let leases = tokio::spawn(worker::lease_loop(app.clone(), rx.clone()));
    let workers = tokio::spawn(worker::worker_loop(app.clone(), rx.clone()));
    tokio::spawn(worker::retention_loop(app.clone(), rx.clone()));
    on_listen(addr);
    let mut stop = rx;
    let listener = listen::Bounded::new(listener, &app.cfg.http);
    axum::serve(listener, http::router(app))
        .with_graceful_shutdown(async move {
            tokio::spawn(shutdown_signal(tx));
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
        .map_err(|e| Error::Usage(format!("server: {e}")))?;
    let _ = workers.await;
    leases.abort();
    Ok(())
}
