//! Running the host tools the factory and the tests rely on (mkfs, mtools, sfdisk, debugfs,
//! The Sleuth Kit), with their output captured and failures reported with the command line.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Output of a finished command.
#[derive(Debug)]
pub struct Output {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl Output {
    /// Standard output, lossily decoded.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Finds `program` in `PATH`, then in `/usr/sbin` and `/sbin`: mke2fs, mkfs.vfat, mkntfs,
/// sfdisk, debugfs... live there, and a non-root user's `PATH` on Debian does not include them.
pub fn resolve(program: &str) -> PathBuf {
    if program.contains('/') {
        return PathBuf::from(program);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(program))
}

/// A command with the locale set so that tools handle UTF-8 names (mtools converts names
/// through the locale's character set) and mtools skips its geometry sanity checks.
pub fn command(program: &str) -> Command {
    let mut c = Command::new(resolve(program));
    c.env("LANG", "C.UTF-8")
        .env("LC_ALL", "C.UTF-8")
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("MTOOLS_NO_VFAT", "0");
    c
}

/// Runs `cmd` with `stdin` as input and a time limit, capturing output; never fails on a
/// non-zero exit (see [`check`]).
pub fn run_with(cmd: &mut Command, stdin: &[u8], limit: Duration) -> anyhow::Result<Output> {
    let what = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let mut sin = child.stdin.take().expect("piped stdin");
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = sin.write_all(&input);
    });
    let mut sout = child.stdout.take().expect("piped stdout");
    let mut serr = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = sout.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = serr.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what}: still running after {limit:?} (hang?), killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = writer.join();
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    Ok(Output {
        code: status.code(),
        stdout,
        stderr,
    })
}

/// Default time limit for one tool run.
pub const TOOL_LIMIT: Duration = Duration::from_secs(300);

/// Runs a command and fails unless it exits 0.
pub fn check(cmd: &mut Command) -> anyhow::Result<Output> {
    check_with(cmd, b"")
}

/// Runs a command with input and fails unless it exits 0.
pub fn check_with(cmd: &mut Command, stdin: &[u8]) -> anyhow::Result<Output> {
    let what = describe(cmd);
    let out = run_with(cmd, stdin, TOOL_LIMIT)?;
    if out.code != Some(0) {
        bail!(
            "{what}: exit {:?}\n{}\n{}",
            out.code,
            out.stderr,
            out.stdout_text()
        );
    }
    Ok(out)
}

/// Shorthand: `check(command(program).args(args))`.
pub fn tool<S: AsRef<OsStr>>(program: &str, args: &[S]) -> anyhow::Result<Output> {
    check(command(program).args(args))
}
