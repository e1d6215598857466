//! `coldscan-image`: builds the coldscan appliance, a reproducible UEFI-bootable disk image.
//!
//! `coldscan-image build` turns the `coldscan` binary, a Debian kernel and an optional signature
//! database into a GPT disk whose EFI system partition holds a unified kernel image (systemd's EFI
//! stub + kernel + initramfs + command line), written as raw, qcow2, VMDK, OVA and VHDX. The build
//! is a pipeline of named steps ([`build`]); a failing step names itself, the exit status is 2, and
//! nothing is left in the output directory that looks like a complete image.
#![forbid(unsafe_code)]

mod build;
mod cpio;
mod disk;
mod formats;
mod initramfs;
mod kernel;
mod libs;
mod manifest;
mod package;
mod uki;
mod util;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Command line of `coldscan-image`.
#[derive(Debug, Parser)]
#[command(
    name = "coldscan-image",
    version,
    about = "Build the coldscan appliance disk image"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the appliance image into --out.
    Build(BuildArgs),
}

/// Options of `coldscan-image build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Signature database directory to bake into the image (repeatable); libclamav must load it.
    #[arg(long = "db", value_name = "DIR")]
    pub db: Vec<PathBuf>,
    /// Kernel package file (`linux-image-*-amd64_*.deb`) instead of fetching the locked one.
    #[arg(long, value_name = "FILE", conflicts_with = "kernel_version")]
    pub kernel_deb: Option<PathBuf>,
    /// Kernel release to fetch from the archive (`6.1.0-57-amd64`) instead of the locked one.
    #[arg(long, value_name = "RELEASE")]
    pub kernel_version: Option<String>,
    /// systemd-boot-efi package file instead of fetching the locked one.
    #[arg(long, value_name = "FILE")]
    pub stub_deb: Option<PathBuf>,
    /// The `coldscan` binary to run as PID 1 (default: beside this program).
    #[arg(long, value_name = "FILE")]
    pub coldscan: Option<PathBuf>,
    /// Extra kernel module to include and load, by name or alias (repeatable); an unknown name is
    /// an error.
    #[arg(long = "module", value_name = "NAME")]
    pub modules: Vec<String>,
    /// Kernel command line.
    #[arg(long, default_value = build::DEFAULT_CMDLINE)]
    pub cmdline: String,
    /// Output formats, comma-separated: raw, qcow2, vmdk, ova, vhdx.
    #[arg(long, value_delimiter = ',', default_value = "raw,qcow2,vmdk,ova,vhdx")]
    pub format: Vec<formats::Format>,
    /// zstd level of the initramfs (1-19; lower builds faster, 19 gives the smallest image).
    #[arg(long, default_value_t = initramfs::ZSTD_LEVEL, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub zstd_level: i32,
    /// Lock file pinning the kernel and stub packages.
    #[arg(long, value_name = "FILE", default_value = "image/kernel.lock")]
    pub lock: PathBuf,
    /// Where fetched packages are cached.
    #[arg(long, value_name = "DIR", default_value = "target/image-cache")]
    pub cache: PathBuf,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build(args) => build::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coldscan-image: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
