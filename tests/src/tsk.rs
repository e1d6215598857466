//! The Sleuth Kit as an oracle: `mmls` partitions, `fls -r -p` paths, `icat` contents.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Context;

use crate::tools::{check, command};

/// Replaces control characters as TSK prints names (`tsk_print_sanitized`: `^`).
pub fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if (c as u32) < 0x20 { '^' } else { c })
        .collect()
}

/// One `fls` line: type (`r/r`, `d/d`, `l/l`...), inode address, path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlsEntry {
    /// The `X/Y` type column.
    pub kind: String,
    /// The metadata address (`12`, `64-128-2` for NTFS).
    pub addr: String,
    /// Path without the leading `/`, as fls prints it.
    pub path: String,
    /// Whether fls marked it deleted (`*`).
    pub deleted: bool,
}

/// `fls -r -p -o SECTOR img` on the volume at byte `start` (a multiple of 512), skipping TSK's
/// virtual entries (`$OrphanFiles`, FAT's `$MBR`/`$FAT1`/`$FAT2`, `v/v` and `V/V` types) and
/// deleted names.
pub fn fls(img: &Path, start: u64) -> anyhow::Result<Vec<FlsEntry>> {
    let out = check(
        command("fls")
            .args(["-r", "-p", "-o", &(start / 512).to_string()])
            .arg(img),
    )?;
    let mut v = Vec::new();
    for line in out.stdout_text().lines() {
        let Some((head, path)) = line.split_once(":\t") else {
            continue;
        };
        let mut parts = head.split_whitespace();
        let kind = parts.next().unwrap_or_default().to_string();
        let mut rest: Vec<&str> = parts.collect();
        let deleted = rest.first() == Some(&"*");
        if deleted {
            rest.remove(0);
        }
        let addr = rest.join(" ");
        if deleted
            || kind.starts_with('v')
            || kind.starts_with('V')
            || path.starts_with("$OrphanFiles")
            || path.ends_with("(Volume Label Entry)")
        {
            continue;
        }
        v.push(FlsEntry {
            kind,
            addr,
            path: path.to_string(),
            deleted,
        });
    }
    Ok(v)
}

/// Paths of `fls` entries as absolute paths.
pub fn paths(entries: &[FlsEntry]) -> BTreeSet<String> {
    entries.iter().map(|e| format!("/{}", e.path)).collect()
}

/// Content of metadata address `addr` of the volume at byte `start` (`icat`).
pub fn icat(img: &Path, start: u64, addr: &str) -> anyhow::Result<Vec<u8>> {
    Ok(check(
        command("icat")
            .args(["-o", &(start / 512).to_string()])
            .arg(img)
            .arg(addr),
    )
    .with_context(|| format!("icat {addr}"))?
    .stdout)
}

/// Byte starts of the allocated partitions `mmls` finds (sector size `sector`).
pub fn mmls_starts(img: &Path, sector: u32) -> anyhow::Result<BTreeSet<u64>> {
    let out = check(command("mmls").args(["-b", &sector.to_string()]).arg(img))?;
    let mut s = BTreeSet::new();
    for line in out.stdout_text().lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // `004:  000       0000000256   0000004351   0000004096   Linux`
        if cols.len() >= 5
            && cols[0].ends_with(':')
            && cols[1].contains(|c: char| c.is_ascii_digit())
            && !cols[1].starts_with("Meta")
        {
            let desc = cols[5..].join(" ");
            if desc.contains("Extended") {
                continue;
            }
            if let Ok(start) = cols[2].parse::<u64>() {
                s.insert(start * u64::from(sector));
            }
        }
    }
    Ok(s)
}
