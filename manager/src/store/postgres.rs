//! The PostgreSQL backend: the scale-out path, several managers on one database. Job and
//! webhook-delivery claims lock the row they take with `SELECT ... FOR UPDATE SKIP LOCKED`, so
//! that concurrent claimers (in one manager or many) each get a different row without waiting
//! for each other; everything else is plain `READ COMMITTED` transactions.

use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Pool, Postgres, SqlSafeStr, Transaction};

use super::StoreResult;

/// The schema, embedded so that the binary stands alone.
pub(super) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "schema",
        include_str!("../../migrations/postgres/0001_schema.sql"),
    ),
    (
        2,
        "vms",
        include_str!("../../migrations/postgres/0002_vms.sql"),
    ),
    (
        3,
        "signatures",
        include_str!("../../migrations/postgres/0003_signatures.sql"),
    ),
    (
        4,
        "quarantine",
        include_str!("../../migrations/postgres/0004_quarantine.sql"),
    ),
    (
        5,
        "snapshot fallback",
        include_str!("../../migrations/postgres/0005_snapshot_fallback.sql"),
    ),
    (
        6,
        "appliance signatures",
        include_str!("../../migrations/postgres/0006_appliance_signatures.sql"),
    ),
];

/// Connections in the pool.
const MAX_CONNECTIONS: u32 = 16;

/// How long to wait for a connection from the pool.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

const CLAIM_JOB: &str = crate::claim_job_sql!("FOR UPDATE SKIP LOCKED");
const CLAIM_DELIVERY: &str = crate::claim_delivery_sql!("FOR UPDATE SKIP LOCKED");
/// Serializes VM job starts (self-conflicting, readers still read), so that two managers cannot
/// both count the same open backups and pass a concurrency limit together.
const LOCK_VM_JOBS: &str = "LOCK TABLE vm_jobs IN SHARE ROW EXCLUSIVE MODE";

/// A PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: Pool<Postgres>,
}

impl PgStore {
    /// Connects to `url` (`postgres://...`) and brings the schema up to date (migrations take
    /// an advisory lock, so managers starting together do not race).
    pub async fn open(url: &str) -> StoreResult<PgStore> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await?;
        migrator().run(&pool).await?;
        Ok(PgStore { pool })
    }

    /// Closes the pool.
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

/// A write transaction (row locks are taken by the statements themselves).
async fn begin_write(pool: &Pool<Postgres>) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    pool.begin().await
}

impl_store!(PgStore);
impl_vm_store!(PgStore);
impl_vm_job_store!(PgStore);
impl_signature_store!(PgStore);
impl_quarantine_store!(PgStore);
impl_overlay_store!(PgStore);
