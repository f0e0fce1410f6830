//! `probegate serve`: the registries' adapter on the `check` pipeline.
//!
//! Hugging Face and MLflow webhooks are authenticated, turned into jobs and
//! committed to the embedded queue (store.rs) before the answer (202;
//! http.rs); workers (worker.rs) run each `check` in a child process within
//! the job's time and memory limits (child.rs) and report back to the
//! registry with retries (callback.rs). A restart resumes whatever a crash
//! interrupted.

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
use config::Config;
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

/// Run the server until SIGINT or SIGTERM. `on_listen` gets the bound address.
pub async fn serve(cfg: Config, on_listen: impl FnOnce(std::net::SocketAddr)) -> Result<()> {
    std::fs::create_dir_all(&cfg.state_dir).map_err(|e| Error::io(&cfg.state_dir, e))?;
    let store = Store::open(&cfg.state_dir.join("jobs.redb"))?;
    // An outcome a crash or a full disk kept from the store: record it, not rerun.
    for j in store.list()? {
        if j.state == store::JobState::Running {
            let dir = cfg.state_dir.join("jobs").join(j.id.to_string());
            if let Some(o) = child::Finished::read(&dir) {
                store.update(j.id, |job| o.apply(job))?;
                tracing::warn!(job = j.id, "recorded the outcome an interrupted run left");
            }
        }
    }
    let recovered = store.recover()?;
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
    if cfg.mlflow.is_some() {
        // A bad download cap stops the server here, not each job later.
        registry::ArtifactLimits::from_env()?;
    }
    let pending = store.pending_callbacks()?;
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
        tokio::spawn(callback::callback(app.clone(), j.id));
    }
    let (tx, rx) = watch::channel(false);
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
    Ok(())
}
