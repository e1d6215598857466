//! Command-line interface (DESIGN.md section 3).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use coldscan_scanner::disk::nbd::NbdTls;
use coldscan_scanner::disk::{ChainPolicy, OpenOptions};

use crate::{inventory_cmd, scan_cmd};

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
    /// PEM file of the CA certificates that sign the certificate of `nbds://` servers (the only
    /// ones trusted; default: the system's trust store). Use with `nbds://` or `nbds+unix://`
    /// targets: TLS is required there, and refused with plain `nbd://`.
    #[arg(long = "nbd-tls-ca", value_name = "FILE")]
    pub nbd_tls_ca: Option<PathBuf>,
    /// PEM client certificate for `nbds://` servers that verify their peers (QEMU's
    /// `verify-peer=on`, libvirt's `backup_tls_x509_verify`).
    #[arg(long = "nbd-tls-cert", value_name = "FILE", requires = "nbd_tls_key")]
    pub nbd_tls_cert: Option<PathBuf>,
    /// PEM private key of --nbd-tls-cert.
    #[arg(long = "nbd-tls-key", value_name = "FILE", requires = "nbd_tls_cert")]
    pub nbd_tls_key: Option<PathBuf>,
    /// Name the `nbds://` server's certificate must carry, when the URL reaches it by another
    /// name or address (default: the URL's host; `localhost` for a Unix socket).
    #[arg(long = "nbd-tls-hostname", value_name = "NAME")]
    pub nbd_tls_hostname: Option<String>,
}

impl DiskArgs {
    /// Disk open options from the flags.
    pub fn open_options(&self) -> OpenOptions {
        OpenOptions {
            chain: ChainPolicy {
                allowed_dirs: self.backing_dirs.clone(),
            },
            snapshot: self.snapshot.clone(),
            nbd_tls: self.nbd_tls(),
        }
    }

    /// TLS credentials for `nbds://` targets, if any flag names one.
    fn nbd_tls(&self) -> Option<NbdTls> {
        let tls = NbdTls {
            ca: self.nbd_tls_ca.clone(),
            cert: self.nbd_tls_cert.clone(),
            key: self.nbd_tls_key.clone(),
            hostname: self.nbd_tls_hostname.clone(),
        };
        (tls != NbdTls::default()).then_some(tls)
    }
}

// Parsed once per process: boxing the large `scan` arguments would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Scan every file of every volume of the targets (disk images, devices, host directories)
    /// for malware with libclamav.
    Scan(Box<ScanArgs>),
    /// List every file, directory, link and stream of every volume of the targets.
    Ls(LsArgs),
    /// Describe the targets: format, chain, partition table, volumes and filesystems.
    Info(InfoArgs),
    /// Write the content of one file (or, without PARTITION and PATH, the whole virtual disk) to
    /// standard output.
    Cat(CatArgs),
}

/// Arguments of `coldscan scan`.
#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// Signature database directory or file (`.cvd .cld .hdb .ndb .ldb .yar` ...), repeatable.
    /// Default: the system's ClamAV database directory, if it holds databases.
    #[arg(long = "db", value_name = "DIR")]
    pub db: Vec<PathBuf>,
    /// Scan threads (default: all cores).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// Write the JSON report to FILE, or to standard output with `-` (the human output then goes
    /// to standard error).
    #[arg(long, value_name = "FILE|-")]
    pub json: Option<String>,
    /// Largest file scanned (`100M`, `2G`, or bytes); larger files are reported as not scanned
    /// (`too-large`). Default 1G; libclamav cannot scan files of 2 GiB or more.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_filesize: Option<u64>,
    /// Most data scanned per file including everything extracted from it (`4G` by default);
    /// beyond it the file is reported as not scanned (`too-large`).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_scansize: Option<u64>,
    /// Deepest archive nesting followed (default 17); deeper content is reported (`limit`).
    #[arg(long, value_name = "N")]
    pub max_recursion: Option<u32>,
    /// Most members scanned per archive (default 10000); the rest is reported (`limit`).
    #[arg(long, value_name = "N")]
    pub max_files: Option<u32>,
    /// Report every signature that matches a file instead of the first one (about 3 times
    /// slower with a realistic database, as clamscan's --allmatch).
    #[arg(long)]
    pub all_matches: bool,
    /// Exit 0 rather than 2 when some files could not be scanned completely (too large,
    /// encrypted, limits, unreadable) and nothing was found. Targets or volumes that could not
    /// be read at all still exit 2.
    #[arg(long)]
    pub allow_partial: bool,
    /// Verdict cache (an SQLite file, created if missing): contents scanned completely before
    /// with the same engine, signatures and limits are not scanned again. A file that is not a
    /// coldscan cache, or is damaged, is left alone with a warning and the scan runs without it.
    #[arg(long, value_name = "PATH")]
    pub cache: Option<PathBuf>,
    #[command(flatten)]
    pub disk: DiskArgs,
    #[command(flatten)]
    pub manager: ManagerArgs,
    /// Disk images, block devices, host directories, or host files (a file that is not a disk
    /// image is scanned as one file).
    #[arg(required = true, value_name = "TARGET")]
    pub targets: Vec<String>,
}

/// Where `scan` posts its report (the coldscan manager), as the appliance does.
#[derive(Debug, Clone, clap::Args)]
pub struct ManagerArgs {
    /// Post the report to the coldscan manager at URL (`http://HOST:PORT` or `https://...`),
    /// with retries; see also --spool.
    #[arg(long, value_name = "URL", requires = "token_file")]
    pub manager: Option<String>,
    /// File holding the manager token (role `appliance`) on its first line.
    #[arg(long, value_name = "FILE", requires = "manager")]
    pub token_file: Option<PathBuf>,
    /// Keep reports the manager could not take in DIR and send them (oldest first) on the next
    /// run; each is stored exactly once thanks to its idempotency key.
    #[arg(long, value_name = "DIR", requires = "manager")]
    pub spool: Option<PathBuf>,
    /// PEM file of CA certificates to trust for an https manager instead of the built-in roots.
    #[arg(long, value_name = "FILE", requires = "manager")]
    pub manager_ca: Option<PathBuf>,
}

/// Parses `123`, `100K`, `100M`, `2G`, `1T` (binary multiples, as clamscan does).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mult: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown size unit {c:?} (use K, M, G or T)")),
            };
            (&s[..i], mult)
        }
        _ => (s, 1),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 4096, 100M, 2G)"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
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
            Command::Scan(args) => scan_cmd::scan(&args),
            Command::Ls(args) => inventory_cmd::ls(&args),
            Command::Info(args) => inventory_cmd::info(&args),
            Command::Cat(args) => inventory_cmd::cat(&args),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("100M"), Ok(100 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert!(parse_size("12X").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert!(parse_size("-1").is_err());
    }
}
