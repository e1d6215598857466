//! The formats step: the raw disk written out as the formats hypervisors import.
//!
//! qcow2 comes from `qemu-img convert`, whose qcow2 output is byte-identical run to run
//! (measured). Its VMDK, VHDX and VHD writers put random or time-based identifiers in every file,
//! so VMDK (streamOptimized), VHDX and the OVA are written by our own deterministic writers.

mod ova;
mod vhdx;
mod vmdk;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::util::{run, IdSeed};

/// An output format. The order is the build order (the OVA reuses the VMDK writer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Raw disk image (`.raw`).
    Raw,
    /// QEMU copy-on-write v3 (`.qcow2`).
    Qcow2,
    /// VMware VMDK, streamOptimized (`.vmdk`).
    Vmdk,
    /// Open Virtual Appliance: OVF + streamOptimized VMDK + SHA256 manifest in a tar (`.ova`).
    Ova,
    /// Hyper-V VHDX, dynamic (`.vhdx`).
    Vhdx,
}

/// Every format, in build order.
pub const ALL: [Format; 5] = [
    Format::Raw,
    Format::Qcow2,
    Format::Vmdk,
    Format::Ova,
    Format::Vhdx,
];

impl Format {
    /// File extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Ova => "ova",
            Format::Vhdx => "vhdx",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.extension())
    }
}

/// Writes `raw` as `format` into `dir` (file `NAME.EXT`); returns the file.
/// `epoch` is the OVA members' mtime.
pub fn write(
    format: Format,
    raw: &Path,
    dir: &Path,
    name: &str,
    seed: &IdSeed,
    epoch: u64,
) -> Result<PathBuf> {
    let out = dir.join(format!("{name}.{}", format.extension()));
    match format {
        Format::Raw => return Ok(raw.to_path_buf()),
        Format::Qcow2 => {
            run(Command::new("qemu-img")
                .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
                .arg(raw)
                .arg(&out))
            .context("qemu-img convert")?;
        }
        Format::Vmdk => {
            let disk = std::fs::read(raw)?;
            let file = std::fs::File::create(&out)?;
            vmdk::write(
                &disk,
                &format!("{name}.vmdk"),
                seed,
                std::io::BufWriter::new(file),
            )?;
        }
        Format::Ova => {
            let disk = std::fs::read(raw)?;
            ova::write(&disk, name, seed, epoch, &out)?;
        }
        Format::Vhdx => {
            let disk = std::fs::read(raw)?;
            let file = std::fs::File::create(&out)?;
            vhdx::write(&disk, seed, std::io::BufWriter::new(file))?;
        }
    }
    Ok(out)
}
