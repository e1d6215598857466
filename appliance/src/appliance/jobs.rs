//! The appliance's jobs (DESIGN.md section 6, the manager API of section 8):
//!
//! - **oneshot**: scan every guest disk (workers in parallel within the core budget), one report
//!   per disk, deliver them through the spool within [`JobContext::delivery_deadline`] (a
//!   certificate the CA bundle does not trust ends delivery at once: retrying cannot help), print
//!   each disk's result, the summary and the exit status on the console; the caller powers off.
//!   What was not delivered stays in the spool: on the config disk it is delivered at the next
//!   boot.
//! - **daemon**: scan the attached disks once at boot, then forever: deliver what waits in the
//!   spool, send heartbeats, claim a job (an attached disk by serial or identity, or an `nbd://`
//!   export), scan it, report, complete it. A manager that is down only delays delivery: every
//!   report waits in the spool under its idempotency key and is stored exactly once.
#![forbid(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use coldscan_scanner::report::ScanReport;

use super::console::{self, say};
use super::discovery::{self, BlockDevice};
use super::spooldisk::SpoolPlace;
use super::worker::{self, ScanRequest};
use crate::client::{ClientError, Heartbeat, JobOutcome, ManagerClient, Spool};
use crate::scan_cmd::{exit_code, EXIT_CLEAN, EXIT_ERROR, EXIT_FOUND};

/// Pause between delivery rounds while the manager is unreachable.
const DELIVERY_PAUSE: Duration = Duration::from_secs(5);
/// Pause between job claims when there is no job.
const CLAIM_PAUSE: Duration = Duration::from_secs(5);

/// What the jobs need from the rest of the appliance.
#[derive(Debug)]
pub struct JobContext {
    /// Signature databases.
    pub dbs: Vec<PathBuf>,
    /// Scan threads in total.
    pub budget: usize,
    /// Manager client and spool, when a manager is configured.
    pub manager: Option<(ManagerClient, Spool)>,
    /// The seccomp self-test's forbidden call, for the first worker.
    pub selftest: Option<String>,
    /// Heartbeat interval (daemon).
    pub heartbeat: Duration,
    /// Signatures fetched from the manager (daemon): used instead of `dbs` once one loaded.
    pub fetched: super::signatures::Fetched,
    /// Where the spool is (for the console).
    pub spool_place: SpoolPlace,
    /// How long oneshot mode keeps trying to deliver its reports before powering off.
    pub delivery_deadline: Duration,
}

/// One disk's scan result.
#[derive(Debug)]
pub struct DiskResult {
    /// The disk's identity.
    pub identity: String,
    /// Its report.
    pub report: ScanReport,
    /// clamscan-style status: 0 clean, 1 found, 2 errors.
    pub status: u8,
}

/// One console line for a disk's result.
pub fn result_line(r: &DiskResult) -> String {
    let verdict = match r.status {
        EXIT_FOUND => "INFECTED",
        EXIT_CLEAN => "clean",
        _ => "ERRORS",
    };
    let mut line = format!(
        "disk {}: {} files scanned, {} detection(s), {} not scanned: {verdict}",
        r.identity,
        r.report.stats.files,
        r.report.detections.len(),
        r.report.not_scanned.len()
    );
    if let Some(n) = r.report.not_scanned.iter().find(|n| n.path.is_none()) {
        line.push_str(&format!(" ({}: {})", n.reason, n.detail));
    }
    line
}

/// The overall exit status of several disks: found beats errors beats clean.
pub fn overall_status(results: &[DiskResult]) -> u8 {
    if results.iter().any(|r| r.status == EXIT_FOUND) {
        EXIT_FOUND
    } else if results.iter().any(|r| r.status == EXIT_ERROR) {
        EXIT_ERROR
    } else {
        EXIT_CLEAN
    }
}

/// Workers run at once and threads each, for `disks` disks and a budget of `budget` threads.
pub fn split_budget(disks: usize, budget: usize) -> (usize, usize) {
    let budget = budget.max(1);
    let workers = disks.clamp(1, budget);
    (workers, (budget / workers).max(1))
}

/// Scans `disks` (set read-only first), at most [`split_budget`] workers at a time.
pub fn scan_disks(disks: &[BlockDevice], ctx: &JobContext) -> Vec<DiskResult> {
    let (workers, jobs) = split_budget(disks.len(), ctx.budget);
    let queue: Mutex<VecDeque<(usize, &BlockDevice)>> =
        Mutex::new(disks.iter().enumerate().collect());
    let results: Mutex<Vec<(usize, DiskResult)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                while let Some((i, disk)) = queue.lock().ok().and_then(|mut q| q.pop_front()) {
                    let selftest = if i == 0 { ctx.selftest.clone() } else { None };
                    let r = scan_one(disk, jobs, ctx, selftest);
                    say(&result_line(&r));
                    if let Ok(mut res) = results.lock() {
                        res.push((i, r));
                    }
                }
            });
        }
    });
    let mut out = results.into_inner().unwrap_or_default();
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

fn scan_one(
    disk: &BlockDevice,
    jobs: usize,
    ctx: &JobContext,
    selftest: Option<String>,
) -> DiskResult {
    let identity = disk.identity();
    say(&format!("scanning disk {identity} ({} bytes)", disk.size));
    let report = match discovery::set_read_only(&disk.dev_path) {
        Err(e) => worker::failure_report(
            &identity,
            disk.size,
            &format!("cannot set the disk read-only (BLKROSET), not scanned: {e}"),
        ),
        Ok(()) => {
            let req = ScanRequest {
                target: disk.dev_path.display().to_string(),
                identity: identity.clone(),
                jobs,
                dbs: ctx.fetched.dbs(&ctx.dbs),
                selftest,
            };
            let outcome = worker::scan(&req, disk.size);
            if let Some(f) = &outcome.failure {
                say(&format!("disk {identity}: {f}"));
            }
            let mut report = outcome.report;
            ctx.fetched.stamp(&mut report);
            report
        }
    };
    note_engine(&report);
    let status = exit_code(&report, false);
    DiskResult {
        identity,
        report,
        status,
    }
}

/// Shows the engine and signature count of a report made by a worker on the console's pages.
fn note_engine(report: &ScanReport) {
    let e = &report.engine;
    if !e.version.is_empty() {
        let dbs = ctx_db_note();
        console::update(|s| {
            s.engine = format!(
                "{} {} ({} signatures{dbs})",
                e.name, e.version, e.signatures
            )
        });
    }
}

/// The databases' directory, as [`JobContext`] set it for the console.
fn ctx_db_note() -> String {
    DB_NOTE.lock().map(|n| n.clone()).unwrap_or_default()
}

/// ", databases in DIR", set once the databases are chosen.
static DB_NOTE: Mutex<String> = Mutex::new(String::new());

/// Records where the signature databases come from, for the console's versions page.
pub fn set_db_note(dir: &std::path::Path) {
    if let Ok(mut n) = DB_NOTE.lock() {
        *n = format!(", databases in {}", dir.display());
    }
}

/// Stores the reports in the spool; returns spool key -> identity.
fn spool_reports(spool: &Spool, results: &[DiskResult]) -> HashMap<String, String> {
    let mut keys = HashMap::new();
    for r in results {
        match serde_json::to_vec(&r.report) {
            Ok(body) => match spool.store(&body) {
                Ok(s) => {
                    keys.insert(s.key, r.identity.clone());
                }
                Err(e) => say(&format!("disk {}: report not spooled: {e}", r.identity)),
            },
            Err(e) => say(&format!("disk {}: report not encoded: {e}", r.identity)),
        }
    }
    keys
}

/// One delivery round: sends what waits, says what happened. Returns key -> scan id delivered.
fn deliver_round(
    client: &ManagerClient,
    spool: &Spool,
    names: &HashMap<String, String>,
) -> (HashMap<String, i64>, usize, Option<ClientError>) {
    let outcome = spool.deliver(client);
    let mut delivered = HashMap::new();
    for (key, posted) in &outcome.delivered {
        let name = names.get(key).map(String::as_str).unwrap_or("earlier scan");
        say(&format!(
            "report for {name} delivered to the manager as scan {}{}",
            posted.id,
            if posted.created {
                ""
            } else {
                " (already stored)"
            }
        ));
        delivered.insert(key.clone(), posted.id);
    }
    for (path, e) in &outcome.rejected {
        say(&format!(
            "report {} refused by the manager: {e}",
            path.display()
        ));
    }
    (delivered, outcome.remaining, outcome.stopped)
}

/// Oneshot mode. Returns the exit status printed on the console.
pub fn oneshot(disks: &[BlockDevice], ctx: &JobContext) -> u8 {
    console::update(|s| s.phase = format!("scanning {} disk(s)", disks.len()));
    if disks.is_empty() {
        say("no guest disks attached");
    }
    let results = scan_disks(disks, ctx);
    if let Some(r) = results.last() {
        console::update(|s| {
            s.last_report = result_line(r);
        });
    }
    let mut status = overall_status(&results);
    if let Some((client, spool)) = &ctx.manager {
        console::update(|s| s.phase = "delivering reports".into());
        let names = spool_reports(spool, &results);
        let deadline = Instant::now() + ctx.delivery_deadline;
        loop {
            let (_, remaining, stopped) = deliver_round(client, spool, &names);
            if remaining == 0 {
                break;
            }
            // TLS and URL errors (a certificate the CA bundle does not trust) do not heal by
            // waiting: say so now rather than at the deadline.
            let hopeless = matches!(stopped, Some(ClientError::Transport { .. }));
            if hopeless || Instant::now() >= deadline {
                say(&format!(
                    "{remaining} report(s) NOT DELIVERED to the manager ({}); {}",
                    stopped.map(|e| e.to_string()).unwrap_or_default(),
                    if ctx.spool_place.persistent {
                        "they wait in the spool on the config disk and are delivered at the next boot"
                    } else {
                        "they are lost at power off (the spool is in memory)"
                    }
                ));
                if status != EXIT_FOUND {
                    status = EXIT_ERROR;
                }
                break;
            }
            std::thread::sleep(DELIVERY_PAUSE);
        }
    }
    let detections: usize = results.iter().map(|r| r.report.detections.len()).sum();
    say(&format!(
        "oneshot finished: {} disk(s), {detections} detection(s), exit status {status}",
        results.len()
    ));
    status
}

/// What a job's target names: an attached disk or an NBD export.
pub fn resolve_target<'a>(
    target: &str,
    disks: &'a [BlockDevice],
) -> Result<Option<&'a BlockDevice>, String> {
    if target.starts_with("nbd://") {
        return Ok(None);
    }
    let want = target.strip_prefix("serial:").unwrap_or(target);
    disks
        .iter()
        .find(|d| d.identity() == want || d.serial.as_deref() == Some(want))
        .map(Some)
        .ok_or_else(|| format!("no attached disk with serial or identity {want:?}"))
}

/// Daemon mode: never returns.
pub fn daemon(disks: &[BlockDevice], ctx: &JobContext) -> ! {
    let Some((client, spool)) = &ctx.manager else {
        say("daemon mode without a manager: nothing to do");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    };
    let mut names: HashMap<String, String> = HashMap::new();
    // Jobs whose report waits in the spool: key -> job id, completed once delivered.
    let mut pending_jobs: HashMap<String, i64> = HashMap::new();
    let mut last_heartbeat: Option<Instant> = None;
    let identities: Vec<String> = disks.iter().map(BlockDevice::identity).collect();
    console::RESCAN.store(true, Ordering::SeqCst);
    loop {
        // Between jobs: a newer signature database from the manager is loaded here, so that
        // no job runs while it changes.
        ctx.fetched.check(client);
        if console::RESCAN.swap(false, Ordering::SeqCst) {
            console::update(|s| s.phase = "scanning attached disks".into());
            let results = scan_disks(disks, ctx);
            if let Some(r) = results.last() {
                console::update(|s| s.last_report = result_line(r));
            }
            names.extend(spool_reports(spool, &results));
        }
        console::update(|s| s.phase = "idle (daemon)".into());
        let (delivered, remaining, stopped) = deliver_round(client, spool, &names);
        for (key, id) in delivered {
            if let Some(job) = pending_jobs.remove(&key) {
                if let Err(e) = client.complete_job(job, &JobOutcome::Report(id)) {
                    say(&format!("job {job}: completion not sent: {e}"));
                }
            }
        }
        console::update(|s| {
            s.spool = format!(
                "{}, {remaining} report(s) waiting",
                ctx.spool_place.describe()
            )
        });
        if let Some(e) = stopped {
            say(&format!(
                "manager unreachable, {remaining} report(s) wait in the spool: {e}"
            ));
            std::thread::sleep(DELIVERY_PAUSE);
            continue;
        }
        if last_heartbeat.is_none_or(|t| t.elapsed() >= ctx.heartbeat) {
            let hb = Heartbeat {
                status: "idle".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                disks: identities.clone(),
                signatures: ctx.fetched.active().map(|a| a.version),
            };
            match client.heartbeat(&hb) {
                Ok(()) => last_heartbeat = Some(Instant::now()),
                Err(e) => say(&format!("heartbeat failed: {e}")),
            }
        }
        let job = match client.claim_job(None) {
            Ok(Some(job)) => job,
            Ok(None) => {
                sleep_unless_rescan(CLAIM_PAUSE);
                continue;
            }
            Err(e) => {
                say(&format!("job claim failed: {e}"));
                sleep_unless_rescan(CLAIM_PAUSE);
                continue;
            }
        };
        say(&format!("job {}: scan {}", job.id, job.target));
        console::update(|s| s.phase = format!("job {}: scanning {}", job.id, job.target));
        let result = match resolve_target(&job.target, disks) {
            Err(e) => {
                say(&format!("job {}: {e}", job.id));
                if let Err(e) = client.complete_job(job.id, &JobOutcome::Error(e)) {
                    say(&format!("job {}: completion not sent: {e}", job.id));
                }
                continue;
            }
            Ok(Some(disk)) => scan_one(disk, ctx.budget, ctx, None),
            Ok(None) => {
                let req = ScanRequest {
                    target: job.target.clone(),
                    identity: job.target.clone(),
                    jobs: ctx.budget,
                    dbs: ctx.fetched.dbs(&ctx.dbs),
                    selftest: None,
                };
                let mut report = worker::scan(&req, 0).report;
                ctx.fetched.stamp(&mut report);
                let status = exit_code(&report, false);
                DiskResult {
                    identity: job.target.clone(),
                    report,
                    status,
                }
            }
        };
        say(&result_line(&result));
        console::update(|s| s.last_report = result_line(&result));
        for (key, name) in spool_reports(spool, std::slice::from_ref(&result)) {
            pending_jobs.insert(key.clone(), job.id);
            names.insert(key, name);
        }
    }
}

fn sleep_unless_rescan(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end && !console::RESCAN.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::super::discovery::Transport;
    use super::*;

    fn disk(serial: &str) -> BlockDevice {
        BlockDevice {
            kernel_name: "vdb".into(),
            dev_path: "/dev/vdb".into(),
            transport: Transport::Virtio,
            serial: Some(serial.into()),
            wwn: None,
            model: None,
            bus_path: None,
            size: 1,
        }
    }

    #[test]
    fn budget_split() {
        assert_eq!(split_budget(3, 2), (2, 1));
        assert_eq!(split_budget(1, 8), (1, 8));
        assert_eq!(split_budget(2, 8), (2, 4));
        assert_eq!(split_budget(0, 0), (1, 1));
    }

    #[test]
    fn job_targets_resolve_by_serial_or_identity() {
        let disks = [disk("GUEST1"), disk("GUEST2")];
        assert_eq!(
            resolve_target("GUEST2", &disks)
                .unwrap()
                .unwrap()
                .serial
                .as_deref(),
            Some("GUEST2")
        );
        assert_eq!(
            resolve_target("serial:GUEST1", &disks)
                .unwrap()
                .unwrap()
                .serial
                .as_deref(),
            Some("GUEST1")
        );
        assert_eq!(
            resolve_target("virtio-GUEST1", &disks)
                .unwrap()
                .unwrap()
                .serial
                .as_deref(),
            Some("GUEST1")
        );
        assert!(resolve_target("nbd://10.0.2.2/x", &disks)
            .unwrap()
            .is_none());
        assert!(resolve_target("/dev/vdb", &disks).is_err());
    }

    #[test]
    fn status_precedence_and_lines() {
        let mk = |status| DiskResult {
            identity: "virtio-A".into(),
            report: worker::failure_report(
                "virtio-A",
                1,
                "scan worker killed by signal 31 (SIGSYS)",
            ),
            status,
        };
        assert_eq!(overall_status(&[mk(0), mk(2)]), EXIT_ERROR);
        assert_eq!(overall_status(&[mk(2), mk(1)]), EXIT_FOUND);
        assert_eq!(overall_status(&[]), EXIT_CLEAN);
        let line = result_line(&mk(2));
        assert!(
            line.contains("disk virtio-A") && line.contains("ERRORS") && line.contains("SIGSYS"),
            "{line}"
        );
    }
}
