//! Thin adapters on the one gate: each turns its caller's world into a
//! [`crate::gate`] request and the report back into that world. None of them
//! decides anything the gate does not.
//!
//! [`project`] (probegate.toml, the defaults all of them share) →
//! [`hook`] (git pre-push and pre-commit) → [`github`] (check runs and the
//! sticky comment) → [`serve`] (registry webhooks and the job queue).

pub mod project;
pub mod hook;
pub mod github;
pub mod serve;
