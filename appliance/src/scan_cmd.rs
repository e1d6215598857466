//! `coldscan scan`: load the signatures, scan every target, print clamscan-like lines and a
//! summary, write the JSON report (DESIGN.md section 3, `docs/report.md`).
//!
//! Exit codes: 0 nothing found and everything scanned; 1 something found (takes precedence);
//! 2 errors and nothing found. Files that could not be scanned completely make the exit code 2
//! unless `--allow-partial`; whole targets or volumes that could not be read always do.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use coldscan_scanner::cache::VerdictCache;
use coldscan_scanner::engine::clamav::{self, ClamAvEngine, Limits};
use coldscan_scanner::report::{Detection, NotScanned, ScanReport};
use coldscan_scanner::scan::{self, ScanObserver, ScanOptions};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::{ManagerArgs, ScanArgs};
use crate::client::{self, ClientConfig, ManagerClient, Spool};

/// Exit code: nothing found, everything scanned.
pub const EXIT_CLEAN: u8 = 0;
/// Exit code: something found.
pub const EXIT_FOUND: u8 = 1;
/// Exit code: errors (or unscanned files without `--allow-partial`), nothing found.
pub const EXIT_ERROR: u8 = 2;

/// Prints result lines as they come (above the progress bar when there is one).
struct Printer {
    out: Mutex<Box<dyn Write + Send>>,
    bar: Option<ProgressBar>,
}

impl std::fmt::Debug for Printer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Printer").finish_non_exhaustive()
    }
}

impl Printer {
    fn line(&self, text: &str) {
        let write = || {
            if let Ok(mut out) = self.out.lock() {
                // A closed output (`| head`) must not stop the scan; the report still gets written.
                let _ = writeln!(out, "{text}");
                let _ = out.flush();
            }
        };
        match &self.bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
}

impl Printer {
    /// A warning on standard error (above the progress bar).
    fn warn(&self, text: &str) {
        let write = || eprintln!("coldscan: warning: {text}");
        match &self.bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
}

impl ScanObserver for Printer {
    fn walking(&self, target: &str, partition: u32) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{target} partition {partition}"));
        }
    }

    fn enumerated(&self, _files: u64, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc_length(bytes);
        }
    }

    fn finished(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    fn detection(&self, d: &Detection) {
        self.line(&format!(
            "{} {}: {}: {} FOUND",
            d.target,
            volume_words(d.partition, d.volume.as_deref()),
            d.path,
            d.signature
        ));
    }

    fn not_scanned(&self, n: &NotScanned) {
        self.line(&not_scanned_line(n));
    }
}

/// Opens the verdict cache; a cache that cannot be trusted is reported and not used.
fn open_cache(
    path: &std::path::Path,
    engine: &ClamAvEngine,
    printer: &Printer,
) -> Option<Arc<VerdictCache>> {
    use coldscan_scanner::engine::ScanEngine;
    let key = engine.cache_key()?;
    match VerdictCache::open(path, &key) {
        Ok(c) => Some(Arc::new(c)),
        Err(e) => {
            printer.warn(&format!("{e}: scanning without the cache"));
            None
        }
    }
}

/// `partition 2`, or `partition 2 vg/lv` for a logical volume.
fn volume_words(partition: u32, volume: Option<&str>) -> String {
    match volume {
        Some(v) => format!("partition {partition} {v}"),
        None => format!("partition {partition}"),
    }
}

/// One human line for a `not_scanned` entry.
fn not_scanned_line(n: &NotScanned) -> String {
    match (n.partition, &n.path) {
        (Some(p), Some(path)) => format!(
            "{} {}: {path}: NOT SCANNED ({}): {}",
            n.target,
            volume_words(p, n.volume.as_deref()),
            n.reason,
            n.detail
        ),
        (Some(p), None) => format!(
            "{} {}: NOT SCANNED ({}): {}",
            n.target,
            volume_words(p, n.volume.as_deref()),
            n.reason,
            n.detail
        ),
        (None, _) => format!("{}: NOT SCANNED ({}): {}", n.target, n.reason, n.detail),
    }
}

/// The databases to load: `--db` values, or the system directory if it holds databases.
fn databases(args: &ScanArgs) -> anyhow::Result<Vec<PathBuf>> {
    if !args.db.is_empty() {
        return Ok(args.db.clone());
    }
    match clamav::system_db_dir() {
        Some(dir) => Ok(vec![dir]),
        None => anyhow::bail!("no signature database: give --db"),
    }
}

/// The exit code for a finished report.
pub fn exit_code(report: &ScanReport, allow_partial: bool) -> u8 {
    if !report.detections.is_empty() {
        EXIT_FOUND
    } else if scan::has_unscanned_volumes(report)
        || (!report.not_scanned.is_empty() && !allow_partial)
    {
        EXIT_ERROR
    } else {
        EXIT_CLEAN
    }
}

/// `coldscan scan`.
pub fn scan(args: &ScanArgs) -> anyhow::Result<u8> {
    let json_to_stdout = args.json.as_deref() == Some("-");
    // Checked before scanning, so that a bad token file does not waste a scan.
    let manager = manager_client(&args.manager)?;
    let dbs = databases(args)?;
    let mut limits = Limits::default();
    if let Some(max) = args.max_filesize {
        limits.max_file_size = max;
    }
    if let Some(max) = args.max_scansize {
        limits.max_scan_size = max;
    }
    if let Some(max) = args.max_recursion {
        limits.max_recursion = max;
    }
    if let Some(max) = args.max_files {
        limits.max_files = max;
    }
    let load_clock = std::time::Instant::now();
    let mut engine = ClamAvEngine::load(&dbs, limits).context("loading signatures")?;
    engine.set_all_matches(args.all_matches);
    let load_seconds = load_clock.elapsed().as_secs_f64();

    let human: Box<dyn Write + Send> = if json_to_stdout {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    let bar = (std::io::stderr().is_terminal() && !json_to_stdout).then(|| {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {msg} {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        bar
    });
    let printer = Printer {
        out: Mutex::new(human),
        bar,
    };
    let cache = args
        .cache
        .as_deref()
        .and_then(|path| open_cache(path, &engine, &printer));
    let opts = ScanOptions {
        jobs: args.jobs.unwrap_or(0),
        open: args.disk.open_options(),
        cache: cache.clone(),
    };
    let report = scan::scan_targets(&engine, &args.targets, &opts, &printer)?;
    if let Some(cache) = &cache {
        if let Err(e) = cache.finish() {
            printer.warn(&format!("verdicts not saved: {e}"));
        }
    }
    if let Some(bar) = &printer.bar {
        bar.finish_and_clear();
    }

    if let Some(dest) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        if json_to_stdout {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{text}").context("writing the report to standard output")?;
            out.flush()?;
        } else {
            std::fs::write(dest, format!("{text}\n"))
                .with_context(|| format!("writing the report to {dest}"))?;
        }
    }

    let summary = summary_text(&report, &engine, load_seconds);
    printer.line(&summary);
    let mut code = exit_code(&report, args.allow_partial);
    if let Some((client, spool)) = &manager {
        let delivered = post_report(client, spool.as_ref(), &report, &printer)?;
        if !delivered && code != EXIT_FOUND {
            code = EXIT_ERROR;
        }
    }
    Ok(code)
}

/// The manager client and spool from `--manager`, `--token-file`, `--spool`, `--manager-ca`.
fn manager_client(args: &ManagerArgs) -> anyhow::Result<Option<(ManagerClient, Option<Spool>)>> {
    let (Some(url), Some(token_file)) = (&args.manager, &args.token_file) else {
        return Ok(None);
    };
    let token = client::read_token_file(token_file)?;
    let mut config = ClientConfig::new(url, &token);
    config.ca_file = args.manager_ca.clone();
    let client = ManagerClient::new(&config)?;
    let spool = args.spool.as_deref().map(Spool::open).transpose()?;
    Ok(Some((client, spool)))
}

/// Posts the report (through the spool if there is one) and says what happened. Returns false
/// when this report did not reach the manager (it is then kept in the spool, if any).
fn post_report(
    client: &ManagerClient,
    spool: Option<&Spool>,
    report: &ScanReport,
    printer: &Printer,
) -> anyhow::Result<bool> {
    let body = serde_json::to_vec(report)?;
    let outcome = match client::deliver_report(client, spool, &body) {
        Ok(outcome) => outcome,
        Err(e) => {
            printer.line(&format!("Manager: report not delivered: {e}"));
            return Ok(false);
        }
    };
    for (key, posted) in &outcome.delivered {
        printer.line(&format!(
            "Manager: report {key} stored as scan {}{}",
            posted.id,
            if posted.created {
                ""
            } else {
                " (already there)"
            }
        ));
    }
    for (path, e) in &outcome.rejected {
        printer.line(&format!(
            "Manager: report set aside in {}: {e}",
            path.display()
        ));
    }
    if let Some(e) = &outcome.stopped {
        printer.line(&format!(
            "Manager: {} report(s) kept in the spool for the next run: {e}",
            outcome.remaining
        ));
    }
    // Without a spool, the one report was delivered or an error was returned above. With one,
    // this run's report is the newest file: it went out when nothing is left behind it.
    Ok(outcome.remaining == 0 && outcome.rejected.is_empty())
}

/// clamscan-style summary.
fn summary_text(report: &ScanReport, engine: &ClamAvEngine, load_seconds: f64) -> String {
    let mut infected: Vec<(&str, u32, &str)> = report
        .detections
        .iter()
        .map(|d| (d.target.as_str(), d.partition, d.path.as_str()))
        .collect();
    infected.sort_unstable();
    infected.dedup();
    let secs = report.stats.seconds;
    let whole = secs as u64;
    let mut s = String::new();
    s.push_str("\n----------- SCAN SUMMARY -----------\n");
    s.push_str(&format!(
        "Engine version: {} {}\n",
        report.engine.name, report.engine.version
    ));
    s.push_str(&format!("Known signatures: {}\n", report.engine.signatures));
    for db in engine.databases() {
        let versions: Vec<String> = db
            .versions
            .iter()
            .map(|(name, v)| format!("{name} {v}"))
            .collect();
        s.push_str(&format!(
            "Database: {} ({} signatures{}{})\n",
            db.path.display(),
            db.signatures,
            if versions.is_empty() { "" } else { ", " },
            versions.join(", ")
        ));
    }
    s.push_str(&format!("Database load time: {load_seconds:.3} sec\n"));
    s.push_str(&format!("Targets: {}\n", report.targets.len()));
    s.push_str(&format!("Scanned files: {}\n", report.stats.files));
    if report.stats.cached_files > 0 {
        s.push_str(&format!(
            "Verdicts from the cache: {}\n",
            report.stats.cached_files
        ));
    }
    s.push_str(&format!(
        "Data scanned: {:.2} MB\n",
        report.stats.bytes as f64 / (1024.0 * 1024.0)
    ));
    s.push_str(&format!("Not scanned: {}\n", report.not_scanned.len()));
    s.push_str(&format!("Infected files: {}\n", infected.len()));
    s.push_str(&format!(
        "Time: {secs:.3} sec ({} m {} s)",
        whole / 60,
        whole % 60
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use coldscan_scanner::report::{EngineInfo, ScanStats};
    use coldscan_scanner::Reason;

    fn report() -> ScanReport {
        ScanReport {
            schema_version: coldscan_scanner::report::SCHEMA_VERSION,
            tool: "coldscan".into(),
            version: "0".into(),
            engine: EngineInfo {
                name: "clamav".into(),
                version: "1".into(),
                signatures: 1,
                db: None,
            },
            started: String::new(),
            finished: String::new(),
            targets: Vec::new(),
            stats: ScanStats::default(),
            detections: Vec::new(),
            not_scanned: Vec::new(),
        }
    }

    fn ns(path: Option<&str>) -> NotScanned {
        NotScanned {
            target: "t".into(),
            partition: Some(1),
            volume: None,
            path: path.map(String::from),
            reason: Reason::TooLarge,
            detail: "d".into(),
        }
    }

    #[test]
    fn exit_codes() {
        let mut r = report();
        assert_eq!(exit_code(&r, false), EXIT_CLEAN);
        r.not_scanned.push(ns(Some("/big")));
        assert_eq!(exit_code(&r, false), EXIT_ERROR);
        assert_eq!(exit_code(&r, true), EXIT_CLEAN);
        r.not_scanned.push(ns(None));
        assert_eq!(exit_code(&r, true), EXIT_ERROR);
        r.detections.push(Detection {
            target: "t".into(),
            partition: 1,
            volume: None,
            path: "/x".into(),
            stream: None,
            size: 1,
            sha256: None,
            signature: "S".into(),
            cached: false,
        });
        assert_eq!(exit_code(&r, false), EXIT_FOUND);
    }
}
