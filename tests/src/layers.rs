//! Layered images for the chain fixtures: writing only what changed between two raw disk
//! states into a copy-on-write layer (qcow2 overlay, VMDK delta, qcow2 active state after an
//! internal snapshot) with `qemu-io`, and checking with `qemu-img map` that the layer really is
//! sparse, so that reading it must go through the layers below.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{ensure, Context};

use crate::tools::command;

/// Granularity of the comparison of two states: one ext4 block. Smaller than a qcow2 cluster
/// (64 KiB) or VMDK grain (64 KiB), so layers hold partly written clusters whose other bytes
/// come from the backing file (qemu copies them on write; with qcow2 subclusters they stay in
/// the backing file).
pub const DIFF_BLOCK: u64 = 4096;

/// At most this many `write` commands per `qemu-io` run (keeps command lines short).
const WRITES_PER_RUN: usize = 200;

/// Byte ranges `(offset, length)` where the raw images `old` and `new` (same size) differ,
/// in [`DIFF_BLOCK`] units, adjacent blocks merged.
pub fn differing_runs(old: &Path, new: &Path) -> anyhow::Result<Vec<(u64, u64)>> {
    let a = File::open(old).with_context(|| format!("opening {}", old.display()))?;
    let b = File::open(new).with_context(|| format!("opening {}", new.display()))?;
    let size = a.metadata()?.len();
    ensure!(
        size == b.metadata()?.len() && size % DIFF_BLOCK == 0,
        "{} and {} differ in size or are not whole blocks",
        old.display(),
        new.display()
    );
    let block = usize::try_from(DIFF_BLOCK)?;
    let (mut x, mut y) = (vec![0u8; block], vec![0u8; block]);
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut off = 0;
    while off < size {
        a.read_exact_at(&mut x, off)?;
        b.read_exact_at(&mut y, off)?;
        if x != y {
            match runs.last_mut() {
                Some((start, len)) if *start + *len == off => *len += DIFF_BLOCK,
                _ => runs.push((off, DIFF_BLOCK)),
            }
        }
        off += DIFF_BLOCK;
    }
    Ok(runs)
}

/// Writes into `layer` (an image of format `fmt` whose lower layers hold the state `old`) the
/// bytes of `new` where they differ from `old`, through `qemu-io` so that the image format's
/// own copy-on-write does the work. `scratch` is a directory for the data files `qemu-io`
/// reads. Returns the number of bytes written.
pub fn write_changes(
    layer: &Path,
    fmt: &str,
    old: &Path,
    new: &Path,
    scratch: &Path,
) -> anyhow::Result<u64> {
    let runs = differing_runs(old, new)?;
    let src = File::open(new)?;
    let mut total = 0;
    for (batch, chunk) in runs.chunks(WRITES_PER_RUN).enumerate() {
        let mut cmd = command("qemu-io");
        cmd.args(["-f", fmt]);
        let mut files = Vec::new();
        for (i, &(off, len)) in chunk.iter().enumerate() {
            let mut data = vec![0u8; usize::try_from(len)?];
            src.read_exact_at(&mut data, off)?;
            let file = scratch.join(format!("run-{batch}-{i}.bin"));
            std::fs::write(&file, &data)?;
            cmd.arg("-c")
                .arg(format!("write -q -s {} {off} {len}", file.display()));
            files.push(file);
            total += len;
        }
        cmd.arg(layer);
        let out = crate::tools::check(&mut cmd)?;
        // qemu-io reports a failed command on stdout and still exits 0.
        let text = format!("{}{}", out.stdout_text(), out.stderr);
        ensure!(
            !text.to_lowercase().contains("fail") && !text.contains("error"),
            "qemu-io on {}: {text}",
            layer.display()
        );
        for f in files {
            std::fs::remove_file(f)?;
        }
    }
    Ok(total)
}

/// How the virtual disk of `image` is spread over its chain, from `qemu-img map`: bytes whose
/// data (or zero flag) is in the image itself, and bytes whose data comes from a lower layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spread {
    /// Bytes present in the top layer.
    pub own: u64,
    /// Bytes with data present in a backing layer.
    pub inherited: u64,
}

/// `qemu-img map --output=json` of `image` (format `fmt`), summarised.
pub fn spread(image: &Path, fmt: &str) -> anyhow::Result<Spread> {
    let mut cmd = command("qemu-img");
    cmd.args(["map", "--output=json", "-f", fmt]).arg(image);
    let out = crate::tools::check(&mut cmd)?;
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("qemu-img map output")?;
    let mut s = Spread {
        own: 0,
        inherited: 0,
    };
    for e in v.as_array().context("qemu-img map: not a list")? {
        let len = e["length"].as_u64().context("length")?;
        let present = e["present"].as_bool().unwrap_or(false);
        match e["depth"].as_u64() {
            Some(0) if present => s.own += len,
            Some(d) if d > 0 && present && e["data"].as_bool() == Some(true) => s.inherited += len,
            _ => {}
        }
    }
    Ok(s)
}

/// Fails unless the top layer `image` holds some data of its own but inherits more than it
/// holds: otherwise the chain would not really be exercised by reading it.
pub fn ensure_sparse_layer(image: &Path, fmt: &str) -> anyhow::Result<Spread> {
    let s = spread(image, fmt)?;
    ensure!(
        s.own > 0 && s.inherited > s.own,
        "{}: layer holds {} bytes and inherits {}: not a sparse layer",
        image.display(),
        s.own,
        s.inherited
    );
    Ok(s)
}
