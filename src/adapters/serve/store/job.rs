//! What the queue holds: a job, the registry event behind it, and its states.

use serde::{Deserialize, Serialize};

use crate::gate::report::Outcome;

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

    /// Jobs with the same key replace each other while queued: a newer
    /// push to a Hub branch or pull request makes the older one moot.
    pub fn coalesce_key(&self) -> Option<String> {
        match self {
            Source::Huggingface { repo, git_ref, .. } => Some(format!("hf:{repo}:{git_ref}")),
            Source::Mlflow { .. } => None,
        }
    }

    pub fn registry_name(&self) -> &str {
        match self {
            Source::Huggingface { repo, .. } => repo,
            Source::Mlflow { name, .. } => name,
        }
    }
}

crate::util::choices! {
    /// Where a job is; its name is also the PostgreSQL queue's `state` column.
    pub enum JobState {
        /// Waiting for a worker.
        Queued = "queued",
        /// A worker holds it.
        Running = "running",
        /// The gate ran to a verdict (pass, pass with repairs or fail).
        Finished = "finished",
        /// The gate could not evaluate.
        Error = "error",
        /// Never run: a newer commit for the same repository and ref arrived
        /// while it was still queued (`error` names the job that replaced it).
        Superseded = "superseded",
    }
}

crate::util::choices! {
    /// Whether the registry was told; its name is also the PostgreSQL
    /// queue's `callback` column.
    pub enum CallbackState {
        /// Not yet due (job not done) or due and not yet delivered.
        Pending = "pending",
        /// Delivered.
        Sent = "sent",
        /// Every retry failed; the job's result stands, the registry was not told.
        Failed = "failed",
    }
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
    /// The server that last claimed the job (`host:pid:nonce`): its reports
    /// are in that machine's `state_dir`. Absent in records written before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

impl Job {
    /// Nothing left to run (the callback may still be due).
    pub fn done(&self) -> bool {
        matches!(
            self.state,
            JobState::Finished | JobState::Error | JobState::Superseded
        )
    }
}

/// What `Store::admit` did with a delivery.
#[derive(Debug)]
pub enum Admitted {
    /// A new job, and the still-queued jobs it replaced.
    New { job: Job, superseded: Vec<u64> },
    /// A redelivery of a job already known.
    Known(Job),
    /// The queue already holds its maximum; nothing was written.
    Full,
}
