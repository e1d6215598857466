//! Scan workers: every guest disk is parsed in a child process of PID 1 that hardens itself
//! before it reads one byte of guest data (landlock: the filesystem read-only except `/tmp`;
//! `no_new_privs`; the scan worker's seccomp filter: no socket, no exec), then runs the ordinary
//! `coldscan scan --json -` (or `info`) on the disk. PID 1 reads the JSON report from the
//! worker's stdout, and its human lines from stderr.
//!
//! A worker that dies (a forbidden system call kills it with `SIGSYS`; a crash) takes only its
//! own disk down: PID 1 writes that disk's report itself, with the failure as a `not_scanned`
//! entry, and goes on with the others. Reports name disks by their identity (serial, by-id
//! style), never by the kernel's device name.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::io::{BufRead, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use coldscan_scanner::report::{EngineInfo, NotScanned, ScanReport, ScanStats, TargetReport};
use coldscan_scanner::Reason;

use super::console::say;
use super::events;
use super::hardening::{self, Role};

/// First argument that makes `coldscan` a worker (not a user-facing command).
pub const WORKER_ARG: &str = "__appliance-worker";
/// Largest report read from a worker (bytes).
const MAX_REPORT_BYTES: u64 = 256 << 20;
/// `SIGSYS`.
const SIGSYS: i32 = 31;
/// Paths a worker may read (plus the databases and its target).
const READABLE: &[&str] = &[
    "/usr",
    "/lib",
    "/lib64",
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/run/coldscan",
];
/// Paths a worker may write (libclamav's temporary files).
const WRITABLE: &[&str] = &["/tmp"];

/// What a worker is asked to do.
#[derive(Debug, Clone)]
pub struct ScanRequest {
    /// The device node or `nbd://` URL to scan.
    pub target: String,
    /// The disk's identity in reports.
    pub identity: String,
    /// Scan threads for this worker.
    pub jobs: usize,
    /// Signature databases (files or directories).
    pub dbs: Vec<PathBuf>,
    /// Self-test of the filter: the worker attempts this forbidden call (`socket`, `execve`)
    /// after hardening, and must be killed for it.
    pub selftest: Option<String>,
}

/// What a worker produced.
#[derive(Debug, Clone)]
pub struct ScanOutcome {
    /// The disk's report (made by PID 1 when the worker failed).
    pub report: ScanReport,
    /// Why the worker failed, if it did.
    pub failure: Option<String>,
}

/// The worker's role: NBD exports need a socket to their server; disks never do.
fn role_for(target: &str) -> Role {
    if target.starts_with("nbd://") {
        Role::Network
    } else {
        Role::ScanWorker
    }
}

/// The executable to start workers from: this very program.
fn worker_exe() -> PathBuf {
    std::env::var_os("COLDSCAN_WORKER_EXE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/proc/self/exe"))
}

/// Replaces the kernel's device path by the disk identity everywhere in a report.
pub fn relabel(report: &mut ScanReport, device: &str, identity: &str) {
    let fix = |s: &mut String| {
        if s.contains(device) {
            *s = s.replace(device, identity);
        }
    };
    for t in &mut report.targets {
        fix(&mut t.target);
        t.chain.iter_mut().for_each(fix);
        for p in &mut t.partitions {
            fix(&mut p.status);
        }
    }
    for d in &mut report.detections {
        fix(&mut d.target);
    }
    for n in &mut report.not_scanned {
        fix(&mut n.target);
        fix(&mut n.detail);
    }
}

/// The report of a disk whose worker failed: no files scanned, the failure as the reason.
pub fn failure_report(identity: &str, size: u64, detail: &str) -> ScanReport {
    let now = coldscan_scanner::report::now_rfc3339();
    ScanReport {
        schema_version: coldscan_scanner::report::SCHEMA_VERSION,
        tool: "coldscan".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        engine: EngineInfo {
            name: "clamav".into(),
            version: String::new(),
            signatures: 0,
            db: None,
        },
        started: now.clone(),
        finished: now,
        targets: vec![TargetReport {
            target: identity.to_string(),
            format: "unknown".into(),
            chain: Vec::new(),
            size,
            partitions: Vec::new(),
        }],
        stats: ScanStats::default(),
        detections: Vec::new(),
        not_scanned: vec![NotScanned {
            target: identity.to_string(),
            partition: None,
            volume: None,
            path: None,
            reason: Reason::EngineError,
            detail: detail.to_string(),
        }],
    }
}

/// Describes how a worker ended badly.
fn describe_exit(status: std::process::ExitStatus) -> String {
    match status.signal() {
        Some(SIGSYS) => {
            "scan worker killed by signal 31 (SIGSYS): it attempted a system call its seccomp filter forbids".into()
        }
        Some(sig) => format!("scan worker killed by signal {sig}"),
        None => format!("scan worker failed with exit status {}", status.code().unwrap_or(-1)),
    }
}

/// Starts a worker with `args` after the worker options; returns it with piped stdout/stderr.
fn spawn(
    role: Role,
    read: &[PathBuf],
    selftest: Option<&str>,
    args: &[OsString],
) -> std::io::Result<std::process::Child> {
    let mut cmd = Command::new(worker_exe());
    cmd.arg(WORKER_ARG);
    cmd.arg("--role").arg(match role {
        Role::Network => "network",
        _ => "scan",
    });
    for r in read {
        cmd.arg("--read").arg(r);
    }
    if let Some(t) = selftest {
        cmd.arg("--selftest").arg(t);
    }
    cmd.arg("--").args(args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn()?;
    events::own_child(child.id());
    Ok(child)
}

/// Scans one disk in a worker. `size` is the disk's size for a failure report.
pub fn scan(req: &ScanRequest, size: u64) -> ScanOutcome {
    let mut args: Vec<OsString> = vec!["scan".into(), "--json".into(), "-".into()];
    args.push("--jobs".into());
    args.push(req.jobs.max(1).to_string().into());
    for db in &req.dbs {
        args.push("--db".into());
        args.push(db.into());
    }
    args.push(req.target.clone().into());
    let mut read = req.dbs.clone();
    if !req.target.contains("://") {
        read.push(PathBuf::from(&req.target));
    }
    let fail = |detail: String| ScanOutcome {
        report: failure_report(&req.identity, size, &detail),
        failure: Some(detail),
    };
    let mut child = match spawn(role_for(&req.target), &read, req.selftest.as_deref(), &args) {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot start a scan worker: {e}")),
    };
    // Human lines (detections, problems) go to the console with the disk's identity.
    let stderr = child.stderr.take();
    let (device, identity) = (req.target.clone(), req.identity.clone());
    let echo = std::thread::spawn(move || {
        if let Some(err) = stderr {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                if !line.trim().is_empty() {
                    say(&line.replace(&device, &identity));
                }
            }
        }
    });
    let mut json = Vec::new();
    let read_result = child
        .stdout
        .take()
        .map(|out| out.take(MAX_REPORT_BYTES).read_to_end(&mut json));
    let status = child.wait();
    events::disown_child(child.id());
    let _ = echo.join();
    let status = match status {
        Ok(s) => s,
        Err(e) => return fail(format!("waiting for the scan worker: {e}")),
    };
    // Exit codes 0, 1 and 2 all come with a report; anything else is a failure.
    if status.signal().is_some() || !matches!(status.code(), Some(0..=2)) {
        return fail(describe_exit(status));
    }
    if let Some(Err(e)) = read_result {
        return fail(format!("reading the scan worker's report: {e}"));
    }
    match serde_json::from_slice::<ScanReport>(&json) {
        Ok(mut report) => {
            relabel(&mut report, &req.target, &req.identity);
            ScanOutcome {
                report,
                failure: None,
            }
        }
        Err(e) => fail(format!("the scan worker's report does not parse: {e}")),
    }
}

/// The layout of a disk as `coldscan info` prints it, read by a hardened worker.
pub fn info(device: &Path, identity: &str) -> Option<String> {
    let args: Vec<OsString> = vec!["info".into(), device.into()];
    let mut child = spawn(Role::ScanWorker, &[device.to_path_buf()], None, &args).ok()?;
    let mut text = String::new();
    let _ = child
        .stdout
        .take()
        .map(|o| o.take(1 << 20).read_to_string(&mut text));
    let status = child.wait();
    events::disown_child(child.id());
    match status {
        Ok(s) if s.success() => Some(text.replace(&device.display().to_string(), identity)),
        Ok(s) => Some(describe_exit(s)),
        Err(_) => None,
    }
}

/// The worker side: `coldscan __appliance-worker [--role scan|network] [--read PATH]...
/// [--selftest CALL] -- COLDSCAN-ARGS...`. Hardens itself, then runs the command.
pub fn worker_main(args: Vec<OsString>) -> ExitCode {
    let mut role = Role::ScanWorker;
    let mut read: Vec<PathBuf> = READABLE.iter().map(PathBuf::from).collect();
    let mut selftest = None;
    let mut it = args.into_iter();
    let mut rest = Vec::new();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--role") => {
                if it.next().as_deref().and_then(|r| r.to_str()) == Some("network") {
                    role = Role::Network;
                }
            }
            Some("--read") => read.extend(it.next().map(PathBuf::from)),
            Some("--selftest") => selftest = it.next().and_then(|s| s.into_string().ok()),
            Some("--") => {
                rest.extend(it.by_ref());
                break;
            }
            _ => {
                eprintln!("coldscan worker: unexpected argument {a:?}");
                return ExitCode::from(3);
            }
        }
    }
    let write: Vec<PathBuf> = WRITABLE.iter().map(PathBuf::from).collect();
    if let Err(e) = hardening::restrict_filesystem(&read, &write) {
        eprintln!("coldscan worker: {e}");
        return ExitCode::from(3);
    }
    if let Err(e) = hardening::apply(role) {
        eprintln!("coldscan worker: {e}");
        return ExitCode::from(3);
    }
    match selftest.as_deref() {
        Some("socket") => {
            let _ = std::net::UdpSocket::bind("127.0.0.1:0");
        }
        Some("execve") => {
            use std::os::unix::process::CommandExt;
            let _ = Command::new("/proc/self/exe").exec();
        }
        _ => {}
    }
    let mut argv = vec![OsString::from("coldscan")];
    argv.extend(rest);
    use clap::Parser;
    let cli = match crate::cli::Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("coldscan worker: {e}");
            return ExitCode::from(3);
        }
    };
    match cli.run() {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("coldscan worker: error: {e:#}");
            ExitCode::from(3)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coldscan_scanner::report::{Detection, PartitionReport};

    #[test]
    fn relabel_hides_the_kernel_name() {
        let mut r = failure_report("/dev/vdb", 10, "reading /dev/vdb at 0x200: corrupt");
        r.targets[0].chain = vec!["/dev/vdb".into()];
        r.targets[0].partitions.push(PartitionReport {
            index: 1,
            volume: None,
            scheme: "gpt".into(),
            type_id: "x".into(),
            start: 0,
            size: 1,
            fs: None,
            status: "error: /dev/vdb: bad".into(),
        });
        r.detections.push(Detection {
            target: "/dev/vdb".into(),
            partition: 1,
            volume: None,
            cached: false,
            path: "/x".into(),
            stream: None,
            size: 1,
            sha256: None,
            signature: "S".into(),
        });
        relabel(&mut r, "/dev/vdb", "virtio-GUEST1");
        let text = serde_json::to_string(&r).unwrap();
        assert!(!text.contains("vdb\""), "{text}");
        assert!(!text.contains("/dev/vdb"), "{text}");
        assert_eq!(r.detections[0].target, "virtio-GUEST1");
        assert_eq!(
            r.not_scanned[0].detail,
            "reading virtio-GUEST1 at 0x200: corrupt"
        );
    }

    #[test]
    fn failure_report_names_the_disk_and_reason() {
        let r = failure_report("virtio-X", 5, "scan worker killed by signal 31 (SIGSYS)");
        assert_eq!(r.targets[0].target, "virtio-X");
        assert_eq!(r.not_scanned[0].reason, Reason::EngineError);
        assert!(r.not_scanned[0].detail.contains("SIGSYS"));
    }

    #[test]
    fn nbd_targets_get_the_network_role() {
        assert_eq!(role_for("nbd://10.0.2.2:10809/vda"), Role::Network);
        assert_eq!(role_for("/dev/vdb"), Role::ScanWorker);
    }
}
