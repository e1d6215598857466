//! Command-line interface (DESIGN.md section 3).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use coldscan_scanner::disk::{ChainPolicy, OpenOptions};

use crate::inventory_cmd;

/// Offline malware scanner for virtual machine disks.
#[derive(Debug, Parser)]
#[command(name = "coldscan", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options shared by every command that opens disk images.
#[derive(Debug, Clone, clap::Args)]
pub struct DiskArgs {
    /// Directory in which backing/parent files named by images may live even when the image
    /// names them by an absolute path or one leaving its own directory (repeatable).
    #[arg(long = "backing-dir", value_name = "DIR")]
    pub backing_dirs: Vec<PathBuf>,
    /// qcow2 internal snapshot (name or id) to read instead of the active state.
    #[arg(long, value_name = "NAME|ID")]
    pub snapshot: Option<String>,
}

impl DiskArgs {
    /// Disk open options from the flags.
    pub fn open_options(&self) -> OpenOptions {
        OpenOptions {
            chain: ChainPolicy {
                allowed_dirs: self.backing_dirs.clone(),
            },
            snapshot: self.snapshot.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List every file, directory, link and stream of every volume of the targets.
    Ls(LsArgs),
    /// Describe the targets: format, chain, partition table, volumes and filesystems.
    Info(InfoArgs),
    /// Write the content of one file (or, without PARTITION and PATH, the whole virtual disk) to
    /// standard output.
    Cat(CatArgs),
}

/// `ls` output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LsFormat {
    /// One line per entry, tab-separated, control characters escaped.
    Text,
    /// One JSON object per line.
    Jsonl,
}

/// Content hash algorithms for `ls --hash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HashAlgo {
    /// SHA-256.
    Sha256,
}

/// Arguments of `coldscan ls`.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = LsFormat::Text)]
    pub format: LsFormat,
    /// Hash the content of every file.
    #[arg(long, value_enum)]
    pub hash: Option<HashAlgo>,
    /// Threads used for hashing (default: all cores).
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    #[command(flatten)]
    pub disk: DiskArgs,
    /// Disk images, block devices.
    #[arg(required = true, value_name = "TARGET")]
    pub targets: Vec<String>,
}

/// Arguments of `coldscan info`.
#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub disk: DiskArgs,
    /// Disk images, block devices.
    #[arg(required = true, value_name = "TARGET")]
    pub targets: Vec<String>,
}

/// Arguments of `coldscan cat`.
#[derive(Debug, clap::Args)]
pub struct CatArgs {
    #[command(flatten)]
    pub disk: DiskArgs,
    /// Disk image or block device.
    pub target: String,
    /// Partition index as `ls` shows it (0 for a whole-disk filesystem).
    pub partition: Option<u32>,
    /// Absolute path inside the volume; `path:stream` for an NTFS named stream.
    pub path: Option<String>,
}

impl Cli {
    /// Runs the chosen command and returns the process exit code.
    pub fn run(self) -> anyhow::Result<u8> {
        match self.command {
            Command::Ls(args) => inventory_cmd::ls(&args),
            Command::Info(args) => inventory_cmd::info(&args),
            Command::Cat(args) => inventory_cmd::cat(&args),
        }
    }
}
