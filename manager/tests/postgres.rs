//! The manager on a real PostgreSQL 15 (a throw-away cluster this test binary starts with
//! `pg_virtualenv`; never skipped): job leases, 16 concurrent claimers on one and on two manager
//! processes sharing the database (`FOR UPDATE SKIP LOCKED`), and reports stored once and kept
//! across a restart.

mod common;

use common::{postgres, scenarios};

#[test]
fn postgres_expired_lease_hands_the_job_out_again() {
    scenarios::leases(&postgres::cluster().new_database());
}

#[test]
fn postgres_sixteen_concurrent_claimers_never_share_a_job() {
    scenarios::concurrent_claimers(&postgres::cluster().new_database(), 1);
}

#[test]
fn postgres_sixteen_claimers_on_two_managers_never_share_a_job() {
    scenarios::concurrent_claimers(&postgres::cluster().new_database(), 2);
}

#[test]
fn postgres_reports_are_stored_once_and_survive_a_restart() {
    scenarios::reports_round_trip(&postgres::cluster().new_database());
}
