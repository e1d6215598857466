//! Helpers of the image builder's end-to-end tests: running `coldscan-image`, booting an image
//! under QEMU + OVMF and judging the serial console.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The line PID 1 prints once the appliance is up.
pub const READY_LINE: &str = "coldscan appliance ready";
/// What the kernel prints when PID 1 powers the machine off.
pub const POWER_OFF_LINE: &str = "reboot: Power down";
/// Hang guard of one boot (TCG boots in ~10-25 s on a loaded 2-core machine).
pub const BOOT_LIMIT: Duration = Duration::from_secs(120);
/// `SOURCE_DATE_EPOCH` of the test builds.
pub const EPOCH: &str = "1700000000";
/// zstd level of test builds: fast; reproducibility and booting do not depend on the level.
pub const TEST_ZSTD_LEVEL: &str = "3";

/// Builds share the package cache; one at a time keeps the 2-core machine responsive.
pub static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `coldscan` binary to put in the image: `COLDSCAN_BIN`, else the one built beside
/// `coldscan-image` (same profile; `make test` builds every binary first).
pub fn coldscan_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("COLDSCAN_BIN") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_BIN_EXE_coldscan-image")).with_file_name("coldscan");
    assert!(
        p.is_file(),
        "{} is missing: build it with the same profile first (cargo build -p coldscan), or set COLDSCAN_BIN",
        p.display()
    );
    p
}

/// Runs `coldscan-image build ARGS --out OUT` with the repository's lock file (unless ARGS has
/// `--lock`) and the shared package cache.
pub fn build(out: &Path, args: &[&str]) -> Output {
    let ws = workspace();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coldscan-image"));
    cmd.arg("build").arg("--coldscan").arg(coldscan_bin());
    if !args.contains(&"--lock") {
        cmd.arg("--lock").arg(ws.join("image/kernel.lock"));
    }
    cmd.arg("--cache")
        .arg(ws.join("target/image-cache"))
        .args(["--zstd-level", TEST_ZSTD_LEVEL])
        .args(args)
        .arg("--out")
        .arg(out)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run coldscan-image")
}

/// Runs a tool, panicking with its output when it fails; returns stdout.
pub fn tool(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The OVMF firmware: code (read-only) and a template of the variable store.
fn ovmf() -> (PathBuf, PathBuf) {
    for (code, vars) in [
        ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"),
        ("OVMF_CODE.fd", "OVMF_VARS.fd"),
    ] {
        let c = Path::new("/usr/share/OVMF").join(code);
        let v = Path::new("/usr/share/OVMF").join(vars);
        if c.is_file() && v.is_file() {
            return (c, v);
        }
    }
    panic!("no OVMF firmware in /usr/share/OVMF (scripts/bootstrap installs ovmf)");
}

/// What one boot showed.
#[derive(Debug)]
pub struct Boot {
    /// The serial console log.
    pub serial: String,
    /// Whether QEMU exited (powered off or reset) before the limit.
    pub exited: bool,
    /// Seconds from start to the readiness line, if seen.
    pub ready_after: Option<f64>,
}

/// Boots `image` (format `format`) under QEMU (TCG) with OVMF, serial console to a file, until
/// the VM stops or [`BOOT_LIMIT`]; the VM is killed on the way out either way.
pub fn boot(image: &Path, format: &str, work: &Path) -> Boot {
    let (code, vars_template) = ovmf();
    let vars = work.join("OVMF_VARS.fd");
    std::fs::copy(&vars_template, &vars).unwrap();
    let serial = work.join("serial.log");
    let _ = std::fs::remove_file(&serial);
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-machine", "q35", "-accel", "tcg", "-m", "1024", "-smp", "1",
        ])
        .args([
            "-no-reboot",
            "-nographic",
            "-monitor",
            "none",
            "-net",
            "none",
        ])
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,readonly=on,file={}",
            code.display()
        ))
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,file={}", vars.display()))
        .arg("-drive")
        .arg(format!(
            "file={},format={format},if=virtio,snapshot=on",
            image.display()
        ))
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start qemu-system-x86_64");
    let start = Instant::now();
    let mut ready_after = None;
    let mut exited = false;
    while start.elapsed() < BOOT_LIMIT {
        if ready_after.is_none()
            && std::fs::read_to_string(&serial).is_ok_and(|s| s.contains(READY_LINE))
        {
            ready_after = Some(start.elapsed().as_secs_f64());
        }
        if child.try_wait().unwrap().is_some() {
            exited = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if !exited {
        let _ = child.kill();
    }
    let _ = child.wait();
    let serial = std::fs::read_to_string(&serial).unwrap_or_default();
    if ready_after.is_none() && serial.contains(READY_LINE) {
        ready_after = Some(start.elapsed().as_secs_f64());
    }
    Boot {
        serial,
        exited,
        ready_after,
    }
}

/// Asserts that the boot reached the readiness line and powered off (judged from the serial log
/// only: a kernel panic with `panic=-1 -no-reboot` also ends QEMU with status 0).
pub fn assert_booted(b: &Boot) {
    assert!(
        b.ready_after.is_some(),
        "no readiness line on the serial console:\n{}",
        b.serial
    );
    assert!(
        !b.serial.contains("Kernel panic"),
        "kernel panic:\n{}",
        b.serial
    );
    assert!(
        b.exited,
        "the VM did not stop within {BOOT_LIMIT:?}:\n{}",
        b.serial
    );
    assert!(
        b.serial.contains(POWER_OFF_LINE),
        "the VM stopped without powering off:\n{}",
        b.serial
    );
}

/// Runs a build expected to fail; checks exit status 2, the step named, and no image left.
pub fn assert_fails(args: &[&str], step: &str, detail: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let out = {
        let _g = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        build(&out_dir, args)
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("error: step {step}:")), "{stderr}");
    assert!(stderr.contains(detail), "{stderr}");
    if out_dir.is_dir() {
        let left: Vec<_> = std::fs::read_dir(&out_dir).unwrap().collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}
