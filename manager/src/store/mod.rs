//! Storage: one trait, [`Store`], with one implementation per database (as atuin's server does):
//! [`sqlite::SqliteStore`] (the default: embedded, WAL) and [`postgres::PgStore`] (several
//! managers on one database). Both use the same schema (`migrations/{sqlite,postgres}`, applied at
//! start) and the same SQL text ([`shared`]) except where the databases differ: the write
//! transaction that claims a job or a webhook delivery is `BEGIN IMMEDIATE` on SQLite and
//! `SELECT ... FOR UPDATE SKIP LOCKED` on PostgreSQL.

#[macro_use]
mod shared;
#[macro_use]
pub mod signatures;
#[macro_use]
pub mod quarantine;
#[macro_use]
pub mod overlays;
pub mod vms;
#[macro_use]
mod vms_inventory;
#[macro_use]
mod vms_jobs;
#[cfg(test)]
mod migrations_tests;
pub mod postgres;
pub mod sqlite;
#[cfg(test)]
mod vms_tests;

use std::future::Future;

use serde::Serialize;

use crate::report::Report;

/// A storage error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A unique name is taken.
    #[error("{0} already exists")]
    Conflict(String),
    /// The database URL is not one this manager speaks.
    #[error("unsupported database URL {0:?}: use sqlite:PATH or postgres://...")]
    Url(String),
}

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// Token roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Posts reports and heartbeats, claims and completes jobs.
    Appliance,
    /// Everything else: listings, enqueueing, the web page.
    Admin,
}

impl Role {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Appliance => "appliance",
            Role::Admin => "admin",
        }
    }

    /// The role stored as `s`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "appliance" => Some(Role::Appliance),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// A valid (not revoked) token's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIdentity {
    /// Row id.
    pub id: i64,
    /// Name (the appliance's name for appliance tokens).
    pub name: String,
    /// Role.
    pub role: Role,
}

/// A token as listed (never the token itself: it is not stored).
#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    /// Name.
    pub name: String,
    /// Role.
    pub role: String,
    /// Unix seconds of creation.
    pub created: i64,
    /// Unix seconds of revocation, if revoked.
    pub revoked: Option<i64>,
}

/// A report to store.
#[derive(Debug)]
pub struct NewReport<'a> {
    /// The posting appliance (token name).
    pub appliance: &'a str,
    /// Its idempotency key.
    pub key: &'a str,
    /// The body as posted.
    pub body: &'a str,
    /// The parsed report.
    pub report: &'a Report,
    /// Unix seconds now.
    pub now: i64,
}

/// Where a report went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Scan id.
    pub id: i64,
    /// False when the idempotency key had been seen: nothing was stored.
    pub created: bool,
}

/// One scan as listed.
#[derive(Debug, Clone, Serialize)]
pub struct ScanRow {
    /// Scan id.
    pub id: i64,
    /// Posting appliance.
    pub appliance: String,
    /// Target names.
    pub targets: Vec<String>,
    /// Start (as reported).
    pub started: String,
    /// End (as reported).
    pub finished: String,
    /// Scan seconds (as reported).
    pub seconds: f64,
    /// Files scanned.
    pub files: i64,
    /// Detections.
    pub detections: i64,
    /// Not-scanned entries.
    pub not_scanned: i64,
    /// When the manager received it (RFC 3339).
    pub received: String,
    /// The signature database its report names (`engine.db`); null for older reports.
    pub db: Option<ScanDb>,
}

/// The signature database a scan used, as its report names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScanDb {
    /// libclamav's database version (the daily database's; 0 without one).
    pub version: i64,
    /// Digest of the database files.
    pub sha256: String,
    /// The manager's version of the database, when the appliance fetched it from a manager.
    pub manager_version: Option<String>,
}

impl ScanDb {
    /// From the scan row's columns (all null for reports without `engine.db`).
    pub fn from_columns(
        version: Option<i64>,
        sha256: Option<String>,
        manager_version: Option<String>,
    ) -> Option<ScanDb> {
        Some(ScanDb {
            version: version?,
            sha256: sha256?,
            manager_version,
        })
    }

    /// How listings show it: the manager's version if there is one, else libclamav's version
    /// and the digest's first 12 digits.
    pub fn label(&self) -> String {
        match &self.manager_version {
            Some(v) => v.clone(),
            None => format!(
                "db {} ({})",
                self.version,
                self.sha256.get(..12).unwrap_or(&self.sha256)
            ),
        }
    }
}

/// One detection as listed.
#[derive(Debug, Clone, Serialize)]
pub struct DetectionRow {
    /// Row id (pagination cursor).
    #[serde(skip)]
    pub id: i64,
    /// Scan id.
    pub scan: i64,
    /// Target.
    pub target: String,
    /// Partition index.
    pub partition: i64,
    /// Path.
    pub path: String,
    /// Stream.
    pub stream: Option<String>,
    /// Size.
    pub size: i64,
    /// sha256.
    pub sha256: Option<String>,
    /// Signature.
    pub signature: String,
}

/// One not-scanned entry as listed.
#[derive(Debug, Clone, Serialize)]
pub struct NotScannedRow {
    /// Row id (pagination cursor).
    #[serde(skip)]
    pub id: i64,
    /// Scan id.
    pub scan: i64,
    /// Target.
    pub target: String,
    /// Partition index.
    pub partition: Option<i64>,
    /// Path.
    pub path: Option<String>,
    /// Reason.
    pub reason: String,
    /// Detail.
    pub detail: String,
}

/// One target as listed.
#[derive(Debug, Clone, Serialize)]
pub struct TargetRow {
    /// The target.
    pub target: String,
    /// Scans that covered it.
    pub scans: i64,
    /// The newest of them.
    pub last_scan: i64,
    /// Detections on it, all scans together.
    pub detections: i64,
}

/// Filters of the detection and not-scanned listings.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this target.
    pub target: Option<String>,
    /// Only this signature (detections) or reason (not scanned).
    pub kind: Option<String>,
    /// Only this scan.
    pub scan: Option<i64>,
}

/// An appliance as listed.
#[derive(Debug, Clone, Serialize)]
pub struct ApplianceRow {
    /// Name (its token's).
    pub name: String,
    /// Unix seconds of the last heartbeat.
    pub last_heartbeat: Option<i64>,
    /// Reported version.
    pub version: Option<String>,
    /// Reported status.
    pub status: Option<String>,
    /// Reported disks (JSON array text).
    pub disks: Option<String>,
    /// The manager's version of the signature database it scans with (`None`: its own).
    pub signatures: Option<String>,
}

/// A heartbeat.
#[derive(Debug, Clone)]
pub struct HeartbeatRow<'a> {
    /// Appliance.
    pub name: &'a str,
    /// Unix seconds.
    pub now: i64,
    /// Version.
    pub version: &'a str,
    /// Status.
    pub status: &'a str,
    /// Disks (JSON array text).
    pub disks: &'a str,
    /// The manager's version of the signature database it scans with, if it fetched one.
    pub signatures: Option<&'a str>,
}

/// A job handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    /// Job id.
    pub id: i64,
    /// Target.
    pub target: String,
    /// Unix seconds of the lease's end.
    pub lease_expires: i64,
}

/// A job as listed.
#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    /// Id.
    pub id: i64,
    /// Target.
    pub target: String,
    /// Appliance it is reserved for.
    pub appliance: Option<String>,
    /// `queued`, `claimed`, `done`, `failed`.
    pub state: String,
    /// Unix seconds.
    pub created: i64,
    /// Last claimer.
    pub claimed_by: Option<String>,
    /// Times handed out.
    pub claims: i64,
    /// Unix seconds of the current lease's end.
    pub lease_expires: Option<i64>,
    /// Unix seconds of completion.
    pub finished: Option<i64>,
    /// Scan id of the report.
    pub report: Option<i64>,
    /// Error message.
    pub error: Option<String>,
}

/// What an appliance says about a job it held.
#[derive(Debug, Clone)]
pub enum JobOutcome {
    /// Scanned: the report's scan id.
    Report(i64),
    /// Failed, with the reason.
    Error(String),
}

/// Result of completing a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// Recorded.
    Done,
    /// No such job.
    NotFound,
    /// The job is not held by this appliance (any more).
    NotHeld,
}

/// A webhook.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookRow {
    /// Id.
    pub id: i64,
    /// URL.
    pub url: String,
    /// Unix seconds.
    pub created: i64,
    /// Whether it receives events.
    pub enabled: bool,
}

/// A webhook delivery due now, claimed for one attempt.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    /// Delivery id.
    pub id: i64,
    /// Target URL.
    pub url: String,
    /// HMAC key.
    pub secret: String,
    /// Body.
    pub payload: String,
    /// Attempts made so far.
    pub attempts: i64,
}

/// The result of one delivery attempt.
#[derive(Debug, Clone)]
pub struct DeliveryAttempt {
    /// Delivery id.
    pub id: i64,
    /// HTTP status, if an answer came.
    pub status: Option<i64>,
    /// Error text, if it failed.
    pub error: Option<String>,
    /// Delivered (2xx).
    pub delivered: bool,
    /// Give up (attempts exhausted).
    pub give_up: bool,
    /// Unix seconds now.
    pub now: i64,
    /// Unix seconds of the next attempt if neither delivered nor given up.
    pub next_attempt: i64,
}

/// A delivery as listed.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRow {
    /// Id.
    pub id: i64,
    /// Webhook URL.
    pub url: String,
    /// Scan id.
    pub scan: i64,
    /// Target.
    pub target: String,
    /// `pending`, `delivered`, `failed`.
    pub state: String,
    /// Attempts made.
    pub attempts: i64,
    /// Last HTTP status.
    pub last_status: Option<i64>,
    /// Last error.
    pub last_error: Option<String>,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds of the successful attempt.
    pub delivered: Option<i64>,
}

/// A web session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The admin's token name.
    pub name: String,
    /// The form token of this session.
    pub csrf: String,
}

/// What the manager needs from a database. Every method is one transaction. The hypervisor
/// side is [`vms::VmStore`] (connections, VM inventory) and [`vms::VmJobStore`] (VM jobs); the
/// appliances' signature database is [`signatures::SignatureStore`], quarantine actions
/// [`quarantine::QuarantineStore`] and the snapshot fallback [`overlays::OverlayStore`].
pub trait Store:
    vms::VmStore
    + vms::VmJobStore
    + signatures::SignatureStore
    + quarantine::QuarantineStore
    + overlays::OverlayStore
    + Clone
    + Send
    + Sync
    + 'static
{
    /// Stores a token (only its hash); returns its id. [`StoreError::Conflict`] if the name is
    /// taken.
    fn create_token(
        &self,
        name: &str,
        role: Role,
        hash: &str,
        now: i64,
    ) -> impl Future<Output = StoreResult<i64>> + Send;
    /// The unrevoked token with this hash.
    fn token_by_hash(
        &self,
        hash: &str,
    ) -> impl Future<Output = StoreResult<Option<TokenIdentity>>> + Send;
    /// Every token, revoked ones too.
    fn list_tokens(&self) -> impl Future<Output = StoreResult<Vec<TokenInfo>>> + Send;
    /// Revokes a token and ends its sessions; false if there was no such unrevoked token.
    fn revoke_token(&self, name: &str, now: i64) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Stores a report with its detections, not-scanned entries and webhook deliveries, or
    /// finds the one stored under the same key.
    fn insert_report(
        &self,
        new: &NewReport<'_>,
    ) -> impl Future<Output = StoreResult<Stored>> + Send;
    /// The posting appliance and the report as posted.
    fn scan_report(
        &self,
        id: i64,
    ) -> impl Future<Output = StoreResult<Option<(String, String)>>> + Send;
    /// Scans, newest first, with ids below `before`.
    fn list_scans(
        &self,
        before: Option<i64>,
        limit: i64,
    ) -> impl Future<Output = StoreResult<Vec<ScanRow>>> + Send;
    /// Detections, newest first.
    fn list_detections(
        &self,
        filter: &Filter,
        before: Option<i64>,
        limit: i64,
    ) -> impl Future<Output = StoreResult<Vec<DetectionRow>>> + Send;
    /// Not-scanned entries, newest first.
    fn list_not_scanned(
        &self,
        filter: &Filter,
        before: Option<i64>,
        limit: i64,
    ) -> impl Future<Output = StoreResult<Vec<NotScannedRow>>> + Send;
    /// Targets by name, after `after`.
    fn list_targets(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> impl Future<Output = StoreResult<Vec<TargetRow>>> + Send;

    /// Records a heartbeat.
    fn heartbeat(&self, hb: &HeartbeatRow<'_>) -> impl Future<Output = StoreResult<()>> + Send;
    /// Appliance tokens with their last heartbeat.
    fn list_appliances(&self) -> impl Future<Output = StoreResult<Vec<ApplianceRow>>> + Send;

    /// Queues a job; returns its id.
    fn enqueue_job(
        &self,
        target: &str,
        appliance: Option<&str>,
        now: i64,
    ) -> impl Future<Output = StoreResult<i64>> + Send;
    /// Hands the oldest job open to `appliance` (queued, or claimed with an expired lease) to
    /// it until `lease_expires`; never the same job to two claimers at once.
    fn claim_job(
        &self,
        appliance: &str,
        now: i64,
        lease_expires: i64,
    ) -> impl Future<Output = StoreResult<Option<ClaimedJob>>> + Send;
    /// Records how a job held by `appliance` ended.
    fn complete_job(
        &self,
        id: i64,
        appliance: &str,
        outcome: &JobOutcome,
        now: i64,
    ) -> impl Future<Output = StoreResult<Completion>> + Send;
    /// Jobs, newest first.
    fn list_jobs(
        &self,
        before: Option<i64>,
        limit: i64,
    ) -> impl Future<Output = StoreResult<Vec<JobRow>>> + Send;

    /// Adds a webhook; returns its id.
    fn add_webhook(
        &self,
        url: &str,
        secret: &str,
        now: i64,
    ) -> impl Future<Output = StoreResult<i64>> + Send;
    /// Every webhook.
    fn list_webhooks(&self) -> impl Future<Output = StoreResult<Vec<WebhookRow>>> + Send;
    /// Stops a webhook from receiving events; false if there was none.
    fn disable_webhook(&self, id: i64) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Claims the oldest due delivery until `busy_until` (so that other managers skip it).
    fn claim_delivery(
        &self,
        now: i64,
        busy_until: i64,
    ) -> impl Future<Output = StoreResult<Option<DueDelivery>>> + Send;
    /// Records one attempt.
    fn record_attempt(
        &self,
        attempt: &DeliveryAttempt,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Deliveries, newest first.
    fn list_deliveries(
        &self,
        before: Option<i64>,
        limit: i64,
    ) -> impl Future<Output = StoreResult<Vec<DeliveryRow>>> + Send;

    /// Opens a web session for an admin token.
    fn create_session(
        &self,
        hash: &str,
        token_id: i64,
        csrf: &str,
        expires: i64,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// The live session with this hash (its token still valid and admin).
    fn session(
        &self,
        hash: &str,
        now: i64,
    ) -> impl Future<Output = StoreResult<Option<Session>>> + Send;
    /// Ends a session (and every expired one).
    fn delete_session(&self, hash: &str, now: i64) -> impl Future<Output = StoreResult<()>> + Send;
}

/// The database named by a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbUrl {
    /// `sqlite:PATH`.
    Sqlite(String),
    /// `postgres://...` or `postgresql://...`.
    Postgres(String),
}

impl DbUrl {
    /// Parses `--db`.
    pub fn parse(url: &str) -> StoreResult<DbUrl> {
        if url.starts_with("sqlite:") {
            Ok(DbUrl::Sqlite(url.to_string()))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DbUrl::Postgres(url.to_string()))
        } else {
            Err(StoreError::Url(url.to_string()))
        }
    }
}

/// Maps a unique-constraint violation to [`StoreError::Conflict`].
pub(crate) fn conflict(e: sqlx::Error, what: &str) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(what.into()),
        _ => StoreError::Database(e),
    }
}

/// Keeps a store's report-derived rows consistent: the JSON of the target list.
pub(crate) fn targets_json(report: &Report) -> String {
    serde_json::to_string(&report.target_names()).unwrap_or_else(|_| "[]".into())
}
