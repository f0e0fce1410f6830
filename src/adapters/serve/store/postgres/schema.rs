//! The queue's schema: the tables, and the migrations that bring an older
//! database to this build's version, run once however many servers start.

use postgres::Client;

use super::PgError;

/// The schema this build writes; an older one is migrated at open, a newer
/// one refused (a newer probegate shares the database).
const SCHEMA_VERSION: i32 = 1;

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE probegate_jobs (
    id bigint PRIMARY KEY,
    state text NOT NULL,
    callback text NOT NULL,
    coalesce_key text,
    created bigint NOT NULL,
    record bytea NOT NULL,
    lease_owner text,
    lease_until timestamptz
);
CREATE INDEX probegate_jobs_queued ON probegate_jobs (id) WHERE state = 'queued';
CREATE INDEX probegate_jobs_running ON probegate_jobs (lease_until) WHERE state = 'running';
CREATE TABLE probegate_dedupe (
    key text PRIMARY KEY,
    job bigint NOT NULL
);
CREATE INDEX probegate_dedupe_job ON probegate_dedupe (job);
CREATE TABLE probegate_quarantine (
    id bigint PRIMARY KEY,
    record bytea NOT NULL,
    moved timestamptz NOT NULL DEFAULT now()
);
CREATE SEQUENCE probegate_job_ids;
"#];

/// Advisory lock key for schema changes (see [`super`] for admissions).
const MIGRATE_LOCK: i64 = 0x7072_6f62_6501;

/// Create the schema or bring it to [`SCHEMA_VERSION`], once for all the
/// servers starting at the same time.
pub(super) fn migrate(c: &mut Client) -> std::result::Result<(), PgError> {
    let mut tx = c.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS probegate_schema (version integer NOT NULL)")?;
    let found: Option<i32> = tx
        .query_opt("SELECT max(version) FROM probegate_schema", &[])?
        .and_then(|r| r.get(0));
    let v = found.unwrap_or(0);
    if v > SCHEMA_VERSION {
        return Err(PgError::Msg(format!(
            "the queue's schema is version {v}, newer than this probegate's ({SCHEMA_VERSION}): upgrade probegate"
        )));
    }
    for m in MIGRATIONS
        .iter()
        .skip(usize::try_from(v).unwrap_or(usize::MAX))
    {
        tx.batch_execute(m)?;
    }
    tx.execute("DELETE FROM probegate_schema", &[])?;
    tx.execute(
        "INSERT INTO probegate_schema (version) VALUES ($1)",
        &[&SCHEMA_VERSION],
    )?;
    tx.commit()?;
    Ok(())
}
