//! ext4 dirty journals with `debugfs`: the changes between two images are written as one
//! committed jbd2 transaction into the older image's journal, so that only a journal replay
//! shows them (`man debugfs`: journal_open, journal_write, journal_close).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{ensure, Context};

use crate::tools::{check_with, command};

/// Runs `debugfs -w -f -` with `commands` on `img`, failing if debugfs reports an error
/// (debugfs exits 0 even when a command fails, so its output is checked too).
pub fn debugfs(img: &Path, commands: &str) -> anyhow::Result<()> {
    let out = check_with(
        command("debugfs").arg("-w").arg("-f").arg("-").arg(img),
        commands.as_bytes(),
    )?;
    let bad = out
        .stderr
        .lines()
        .chain(out.stdout_text().lines())
        .filter(|l| {
            // `rm` prints an empty line.
            !l.trim().is_empty()
                && !l.starts_with("debugfs ")
                && !l.starts_with("debugfs:")
                && !l.contains("Allocated inode")
                && !l.contains("Setting csum")
        })
        .map(str::to_string)
        .collect::<Vec<_>>();
    ensure!(
        bad.is_empty(),
        "debugfs on {}: {}",
        img.display(),
        bad.join("\n")
    );
    Ok(())
}

/// Writes every `block_size` block in which `after` differs from `before` into `before`'s
/// journal as one committed transaction (`jo [-c]`, `jw -b LIST FILE`, `jc`). `scratch` holds
/// the block contents meanwhile.
pub fn journal_difference(
    before: &Path,
    after: &Path,
    block_size: u64,
    csum: bool,
    scratch: &Path,
) -> anyhow::Result<()> {
    let a = File::open(before)?;
    let b = File::open(after)?;
    let len = a.metadata()?.len();
    ensure!(len == b.metadata()?.len(), "images differ in size");
    let mut blocks = Vec::new();
    let mut data = Vec::new();
    let bs = usize::try_from(block_size)?;
    let (mut x, mut y) = (vec![0u8; bs], vec![0u8; bs]);
    for n in 0..len / block_size {
        a.read_exact_at(&mut x, n * block_size)?;
        b.read_exact_at(&mut y, n * block_size)?;
        if x != y {
            blocks.push(n.to_string());
            data.extend_from_slice(&y);
        }
    }
    ensure!(!blocks.is_empty(), "nothing changed between the images");
    std::fs::write(scratch, &data)?;
    let open = if csum { "jo -c" } else { "jo" };
    debugfs(
        before,
        &format!(
            "{open}\njw -b {} {}\njc\n",
            blocks.join(","),
            scratch.display()
        ),
    )
    .context("writing the journal transaction")?;
    let sb = crate::tools::check(command("dumpe2fs").arg("-h").arg(before))?.stdout_text();
    ensure!(
        sb.contains("needs_recovery"),
        "journal written but needs_recovery not set"
    );
    Ok(())
}

/// Checks the ground truth with e2fsprogs: a copy of `img` replayed by `e2fsck` holds `path`
/// with `content`, and passes a full check.
pub fn check_replay(img: &Path, path: &str, content: &[u8], scratch: &Path) -> anyhow::Result<()> {
    std::fs::copy(img, scratch)?;
    let out = crate::tools::run_with(
        command("e2fsck").arg("-fy").arg(scratch),
        b"",
        crate::tools::TOOL_LIMIT,
    )?;
    // 0: clean, 1: errors corrected (the replay itself counts as such on some versions).
    ensure!(
        matches!(out.code, Some(0) | Some(1)),
        "e2fsck after replay: {:?} {}",
        out.code,
        out.stdout_text()
    );
    let got = crate::tools::check(
        command("debugfs")
            .arg("-R")
            .arg(format!("cat {path}"))
            .arg(scratch),
    )?;
    ensure!(
        got.stdout == content,
        "replayed {path} differs from what was journaled"
    );
    std::fs::remove_file(scratch)?;
    Ok(())
}
