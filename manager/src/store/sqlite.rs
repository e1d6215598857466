//! The SQLite backend: the default, embedded, zero set-up. One database file in WAL mode (readers
//! never wait for the writer); every write runs in a `BEGIN IMMEDIATE` transaction, which takes
//! SQLite's single write lock at its start, so that a job claim reads and updates the queue with
//! no other writer in between, and concurrent writers wait (`busy_timeout`) instead of failing.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Pool, SqlSafeStr, Sqlite, Transaction};

use super::StoreResult;

/// The schema, embedded so that the binary stands alone.
pub(super) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "schema",
        include_str!("../../migrations/sqlite/0001_schema.sql"),
    ),
    (
        2,
        "vms",
        include_str!("../../migrations/sqlite/0002_vms.sql"),
    ),
    (
        3,
        "signatures",
        include_str!("../../migrations/sqlite/0003_signatures.sql"),
    ),
    (
        4,
        "quarantine",
        include_str!("../../migrations/sqlite/0004_quarantine.sql"),
    ),
    (
        5,
        "snapshot fallback",
        include_str!("../../migrations/sqlite/0005_snapshot_fallback.sql"),
    ),
    (
        6,
        "appliance signatures",
        include_str!("../../migrations/sqlite/0006_appliance_signatures.sql"),
    ),
];

/// How long a writer waits for the write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections in the pool (readers run in parallel in WAL mode).
const MAX_CONNECTIONS: u32 = 8;

const CLAIM_JOB: &str = crate::claim_job_sql!("");
const CLAIM_DELIVERY: &str = crate::claim_delivery_sql!("");
/// VM job starts are serialized by `BEGIN IMMEDIATE` already.
const LOCK_VM_JOBS: &str = "";

/// A SQLite database.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: Pool<Sqlite>,
}

impl SqliteStore {
    /// Opens (creating it if needed) the database at `url` (`sqlite:PATH`) and brings its
    /// schema up to date.
    pub async fn open(url: &str) -> StoreResult<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await?;
        migrator().run(&pool).await?;
        Ok(SqliteStore { pool })
    }

    /// Closes the pool (waits for connections to be returned).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn migrator() -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|(version, name, sql)| {
                Migration::new(
                    *version,
                    (*name).into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// A write transaction holding SQLite's write lock from its start.
async fn begin_write(pool: &Pool<Sqlite>) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
    pool.begin_with("BEGIN IMMEDIATE").await
}

impl_store!(SqliteStore);
impl_vm_store!(SqliteStore);
impl_vm_job_store!(SqliteStore);
impl_signature_store!(SqliteStore);
impl_quarantine_store!(SqliteStore);
impl_overlay_store!(SqliteStore);
