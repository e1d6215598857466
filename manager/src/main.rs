//! `coldscan-manager`: the central manager. Appliances (and `coldscan scan --manager`) post
//! reports and heartbeats and claim scan jobs over the HTTP API (`docs/openapi.json`); admins use
//! the API, the web page at `/` and this CLI; webhooks are called on detection.
// `deny`, not `forbid`: libvirt::ffi makes the two libvirt calls the `virt` crate does not
// wrap (each with a SAFETY note); nothing else may use `unsafe`.
#![deny(unsafe_code)]

mod api;
mod cli;
// The libvirt connector (`scan_domain`, the direct local scan, is used by its e2e test only).
#[cfg_attr(not(test), allow(dead_code, unused_imports))]
mod libvirt;
mod report;
mod signatures;
mod store;
mod time;
mod tokens;
mod vm_cli;
mod vms;
mod web;
mod webhook;

use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use crate::cli::{Cli, Command, ServeArgs};
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{DbUrl, Store};

/// How often the webhook worker looks for due deliveries.
const WEBHOOK_POLL: Duration = Duration::from_millis(500);

/// Longest lease an appliance may ask for (a day).
const MAX_LEASE_SECS: i64 = 86_400;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("coldscan-manager: error: starting the runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coldscan-manager: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match DbUrl::parse(&cli.db)? {
        DbUrl::Sqlite(url) => {
            let store = SqliteStore::open(&url)
                .await
                .with_context(|| format!("opening {url}"))?;
            let result = dispatch(store.clone(), cli.command).await;
            store.close().await;
            result
        }
        DbUrl::Postgres(url) => {
            let store = PgStore::open(&url)
                .await
                .context("connecting to PostgreSQL")?;
            let result = dispatch(store.clone(), cli.command).await;
            store.close().await;
            result
        }
    }
}

async fn dispatch<S: Store>(store: S, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve(store, args).await,
        other => cli::run(store, other).await,
    }
}

async fn serve<S: Store>(store: S, args: ServeArgs) -> anyhow::Result<()> {
    let state = api::AppState {
        store: store.clone(),
        default_lease: args.lease.clamp(1, MAX_LEASE_SECS),
        max_lease: MAX_LEASE_SECS,
        body_limit: args.body_limit,
    };
    let app = api::router(state.clone(), args.body_limit).merge(web::router(state));
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let worker = tokio::spawn(webhook::worker(
        store.clone(),
        args.webhook_backoff_ms,
        WEBHOOK_POLL,
    ));
    let vm_settings = vms::VmSettings {
        owner: args.manager_id.clone().unwrap_or_else(vms::host_name),
        work_dir: args.work_dir.clone(),
        nbd_listen: args.nbd_listen.clone(),
        nbd_ports: args.nbd_ports,
        inventory_interval: Duration::from_secs(args.inventory_interval.max(1)),
        tick: Duration::from_millis(args.vm_tick_ms.max(50)),
        pool_backups: args.pool_backups.max(1),
        stale_after: args.stale_after.max(1),
    };
    let vm_side = tokio::spawn(vms::run(store, vm_settings));
    println!("coldscan-manager listening on http://{addr}");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await
        .context("serving")?;
    worker.abort();
    vm_side.abort();
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
