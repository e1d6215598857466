//! The job queue on SQLite (the default database) through the real manager: leases that expire
//! hand a dead worker's job out again, and 16 concurrent claimers never share a job.
//! The same scenarios run on PostgreSQL in `postgres.rs`.

mod common;

use common::scenarios;

#[test]
fn sqlite_expired_lease_hands_the_job_out_again() {
    let dir = tempfile::tempdir().unwrap();
    scenarios::leases(&common::sqlite_db(dir.path()));
}

#[test]
fn sqlite_sixteen_concurrent_claimers_never_share_a_job() {
    let dir = tempfile::tempdir().unwrap();
    scenarios::concurrent_claimers(&common::sqlite_db(dir.path()), 1);
}

#[test]
fn sqlite_sixteen_claimers_on_two_managers_never_share_a_job() {
    let dir = tempfile::tempdir().unwrap();
    scenarios::concurrent_claimers(&common::sqlite_db(dir.path()), 2);
}
