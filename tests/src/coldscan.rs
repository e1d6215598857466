//! Running the built `coldscan` binary from end-to-end tests (it lives in another package, so
//! `CARGO_BIN_EXE_coldscan` is not available here).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context};

use crate::manifest::{self, Record};
use crate::tools::{command, run_with, Output};

/// Time limit for one `coldscan` run on a fixture: a hang is a failure, not a stuck test.
pub const LIMIT: Duration = Duration::from_secs(300);

/// The `coldscan` binary: `COLDSCAN_BIN` if set, else the one built with the test executable's
/// own profile (`target/<profile>/deps/test-exe` -> `target/<profile>/coldscan`, so custom
/// profiles such as `release-checked` work), else `target/{release,debug}/coldscan`.
pub fn binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("COLDSCAN_BIN") {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("coldscan")))
        .filter(|p| p.is_file())
    {
        return Ok(p);
    }
    let target = crate::cache::target_dir();
    let own = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let other = if own == "debug" { "release" } else { "debug" };
    for profile in [own, other] {
        let p = target.join(profile).join("coldscan");
        if p.is_file() {
            return Ok(p);
        }
    }
    anyhow::bail!(
        "no coldscan binary under {}: run `cargo build --bins` (or `--release --bins`) first",
        target.display()
    )
}

/// Runs `coldscan ARGS...` with the time limit.
pub fn run(args: &[&str]) -> anyhow::Result<Output> {
    run_with(
        command(&binary()?.display().to_string()).args(args),
        b"",
        LIMIT,
    )
}

/// `coldscan ls --format jsonl --hash sha256 DISK`: the records and the whole output.
pub fn ls(disk: &str) -> anyhow::Result<(Vec<Record>, Output)> {
    let out = run(&["ls", "--format", "jsonl", "--hash", "sha256", disk])?;
    let recs = manifest::parse_jsonl(&out.stdout_text()).context("parsing coldscan ls output")?;
    Ok((recs, out))
}

/// `coldscan info --json DISK` as JSON (the first target's record).
pub fn info(disk: &str) -> anyhow::Result<(serde_json::Value, Output)> {
    let out = run(&["info", "--json", disk])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("info --json output: {}", out.stdout_text()))?;
    let first = v.get(0).cloned().context("info --json: no target")?;
    Ok((first, out))
}

/// `coldscan cat DISK PARTITION PATH`: the content.
pub fn cat(disk: &str, partition: u32, path: &str) -> anyhow::Result<Vec<u8>> {
    let out = run(&["cat", disk, &partition.to_string(), path])?;
    ensure!(
        out.code == Some(0),
        "coldscan cat {disk} {partition} {path:?}: exit {:?}: {}",
        out.code,
        out.stderr
    );
    Ok(out.stdout)
}
