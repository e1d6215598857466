//! The build pipeline: named steps run in order, each error wrapped with `step NAME`.
//!
//! Everything is written into a temporary directory inside `--out` and renamed into place only
//! after every step succeeded (`build.json` last), so that a failed build leaves nothing that looks
//! like a complete image (the temporary directory is removed on the way out).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};

use crate::formats::{self, Format};
use crate::initramfs;
use crate::kernel::{self, Kernel, APPLIANCE_MODULES};
use crate::manifest::{self, Manifest};
use crate::package::{self, Lock, Package};
use crate::util::{self, sha256_hex, IdSeed};
use crate::{disk, uki, BuildArgs};

/// Default kernel command line: serial console, reboot (then power off with `-no-reboot`) on panic.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 panic=-1 no_timer_check quiet";
/// The stub inside the systemd-boot-efi package.
const STUB_PATH: &str = "usr/lib/systemd/boot/efi/linuxx64.efi.stub";
/// Base name of every output file.
pub const IMAGE_NAME: &str = "coldscan";

/// Runs one named step, timing it and naming it in any error.
fn step<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    let out = f().with_context(|| format!("step {name}"))?;
    eprintln!(
        "coldscan-image: step {name}: done in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(out)
}

/// `SOURCE_DATE_EPOCH` (0 when unset: builds are reproducible by default).
fn source_date_epoch() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")),
        Err(_) => Ok(0),
    }
}

/// Runs `coldscan-image build`.
pub fn run(args: &BuildArgs) -> Result<()> {
    let epoch = step("inputs", source_date_epoch)?;
    let mtime = u32::try_from(epoch).context("SOURCE_DATE_EPOCH beyond 2106")?;

    let staging = step("output", || {
        std::fs::create_dir_all(&args.out)
            .with_context(|| format!("cannot create output directory {}", args.out.display()))?;
        tempfile::Builder::new()
            .prefix(".coldscan-image-")
            .tempdir_in(&args.out)
            .with_context(|| format!("cannot write into output directory {}", args.out.display()))
    })?;
    let work = staging.path().join("work");
    let cache = args.cache.clone();

    let (kernel_pkg, kernel) = step("kernel", || {
        let pkg = kernel_package(args, &cache)?;
        let root = unpacked_kernel(&pkg, &cache)?;
        let mut wanted: Vec<&str> = APPLIANCE_MODULES.to_vec();
        wanted.extend(args.modules.iter().map(String::as_str));
        let kernel = kernel::prepare(&root, &wanted)?;
        Ok((pkg, kernel))
    })?;

    let (stub_pkg, stub) = step("stub", || {
        let pkg = match &args.stub_deb {
            Some(f) => package::from_file(f, "systemd-boot-efi")?,
            None => package::fetch_pinned(
                &Lock::load(&args.lock)?.pin("stub")?.clone(),
                &cache,
                || Ok("systemd-boot-efi".to_string()),
            )?,
        };
        let root = work.join("stub");
        package::extract(&pkg, &root)?;
        let stub = std::fs::read(root.join(STUB_PATH))
            .with_context(|| format!("the package has no {STUB_PATH}"))?;
        Ok((pkg, stub))
    })?;

    let coldscan = step("coldscan", || {
        let src = match &args.coldscan {
            Some(p) => p.clone(),
            None => std::env::current_exe()?
                .parent()
                .context("no directory beside coldscan-image")?
                .join("coldscan"),
        };
        ensure!(
            src.is_file(),
            "no coldscan binary at {} (build it, or pass --coldscan)",
            src.display()
        );
        std::fs::create_dir_all(&work)?;
        let stripped = work.join("coldscan");
        util::run(
            Command::new("strip")
                .arg("--strip-all")
                .arg("-o")
                .arg(&stripped)
                .arg(&src),
        )
        .context("strip")?;
        Ok((src, stripped))
    })?;

    let db_files = step("database", || database(&args.db, &coldscan.1, &work))?;

    let os_release = os_release(&kernel);
    let initrd_path = staging.path().join("initrd.zst");
    let (sizes, libraries) = step("initramfs", || {
        initramfs::build(
            &initramfs::Inputs {
                coldscan: &coldscan.1,
                kernel: &kernel,
                db_files: &db_files,
                os_release: &os_release,
                zstd_level: args.zstd_level,
            },
            mtime,
            &initrd_path,
        )
    })?;

    let (uki_bytes, kernel_size) = step("uki", || {
        let linux = std::fs::read(&kernel.vmlinuz)?;
        let initrd = std::fs::read(&initrd_path)?;
        let uki = uki::build(
            &stub,
            &uki::Payload {
                osrel: os_release.as_bytes(),
                cmdline: args.cmdline.as_bytes(),
                initrd: &initrd,
                linux: &linux,
            },
        )?;
        Ok((uki, linux.len() as u64))
    })?;

    // Every identifier of the disk derives from the UKI (which holds every input) and the epoch.
    let seed = IdSeed::new(format!("{}:{epoch}", sha256_hex(&uki_bytes)).as_bytes());
    let raw_path = staging.path().join(format!("{IMAGE_NAME}.raw"));
    let disk = step("disk", || {
        let d = disk::build(&uki_bytes, &seed, epoch)?;
        std::fs::write(&raw_path, &d.bytes)
            .with_context(|| format!("cannot write {}", raw_path.display()))?;
        Ok(d)
    })?;

    let mut outputs = Vec::new();
    for format in ordered(&args.format) {
        let path = step(&format!("format {format}"), || {
            formats::write(format, &raw_path, staging.path(), IMAGE_NAME, &seed, epoch)
        })?;
        outputs.push((format, path));
    }

    let manifest = step("manifest", || {
        let m = Manifest::new(manifest::Parts {
            args,
            epoch,
            kernel: (&kernel_pkg, &kernel),
            stub: &stub_pkg,
            coldscan: &coldscan.0,
            libraries: &libraries,
            db_files: &db_files,
            sizes,
            kernel_size,
            uki_size: uki_bytes.len() as u64,
            disk: &disk,
            outputs: &outputs,
        })?;
        let path = staging.path().join("build.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&m)?)?;
        Ok(m)
    })?;

    step("publish", || {
        // Without build.json the directory does not claim a complete image while files move;
        // outputs of an earlier build in formats not built now would not match the new one.
        let manifest_path = args.out.join("build.json");
        if manifest_path.exists() {
            std::fs::remove_file(&manifest_path)?;
        }
        for format in formats::ALL {
            let stale = args
                .out
                .join(format!("{IMAGE_NAME}.{}", format.extension()));
            if !outputs.iter().any(|(f, _)| *f == format) && stale.exists() {
                std::fs::remove_file(&stale)
                    .with_context(|| format!("cannot remove stale {}", stale.display()))?;
            }
        }
        for (_, path) in &outputs {
            let name = path.file_name().context("output without a name")?;
            std::fs::rename(path, args.out.join(name))
                .with_context(|| format!("cannot move {} into place", path.display()))?;
        }
        std::fs::rename(
            staging.path().join("build.json"),
            args.out.join("build.json"),
        )?;
        Ok(())
    })?;
    drop(staging);
    manifest.print_summary(&args.out);
    Ok(())
}

/// The formats asked for, raw-derived ones after raw, each once (OVA needs the VMDK's writer but
/// not its file).
fn ordered(asked: &[Format]) -> Vec<Format> {
    let mut v: Vec<Format> = asked.to_vec();
    v.sort();
    v.dedup();
    v
}

fn kernel_package(args: &BuildArgs, cache: &Path) -> Result<Package> {
    if let Some(f) = &args.kernel_deb {
        return package::from_file(f, "linux-image-");
    }
    if let Some(release) = &args.kernel_version {
        ensure!(
            release
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-+~".contains(c)),
            "bad kernel release {release:?}"
        );
        return package::fetch_current(&format!("linux-image-{release}"), cache);
    }
    let pin = Lock::load(&args.lock)?.pin("kernel")?.clone();
    package::fetch_pinned(&pin, cache, || {
        package::current_dependency("linux-image-amd64", "linux-image-")
    })
}

/// The kernel package unpacked, with its module tables; kept in the cache by sha256 (unpacking
/// ~400 MB of modules is the slowest part of a rebuild) and never written once complete.
fn unpacked_kernel(pkg: &Package, cache: &Path) -> Result<PathBuf> {
    let dir = cache.join("unpacked").join(&pkg.sha256);
    if dir.join(".complete").is_file() {
        return Ok(dir);
    }
    let tmp = cache
        .join("unpacked")
        .join(format!("{}.tmp-{}", pkg.sha256, std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let prepared = package::extract(pkg, &tmp)
        .and_then(|()| kernel::depmod(&tmp))
        .and_then(|()| Ok(std::fs::write(tmp.join(".complete"), b"")?));
    if let Err(e) = prepared {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.is_dir() && !dir.join(".complete").is_file() {
        // Left by an interrupted older build (this one unpacks into a temporary name).
        let _ = std::fs::remove_dir_all(&dir);
    }
    if std::fs::rename(&tmp, &dir).is_err() {
        // Another build unpacked the same package meanwhile.
        let _ = std::fs::remove_dir_all(&tmp);
        ensure!(
            dir.join(".complete").is_file(),
            "cannot unpack into {}",
            dir.display()
        );
    }
    Ok(dir)
}

/// Copies the database files of every `--db` directory into `work/db` and checks that libclamav
/// loads them (with `coldscan scan --db`, the engine the appliance uses). Returns (name, file).
fn database(dirs: &[PathBuf], coldscan: &Path, work: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    if dirs.is_empty() {
        return Ok(files);
    }
    let staged = work.join("db");
    std::fs::create_dir_all(&staged)?;
    for dir in dirs {
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read database directory {}", dir.display()))?;
        let mut names: Vec<_> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        for name in names {
            if files.iter().any(|(n, _)| *n == name) {
                bail!("two database directories hold {name}");
            }
            let dest = staged.join(&name);
            std::fs::copy(dir.join(&name), &dest)?;
            files.push((name, dest));
        }
    }
    ensure!(!files.is_empty(), "the database directories hold no files");
    let empty = work.join("empty");
    std::fs::create_dir_all(&empty)?;
    let out = Command::new(coldscan)
        .args(["scan", "--db"])
        .arg(&staged)
        .arg(&empty)
        .output()
        .context("cannot run coldscan to check the database")?;
    if !out.status.success() {
        bail!(
            "libclamav cannot load the database: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    files.sort();
    Ok(files)
}

fn os_release(kernel: &Kernel) -> String {
    let v = env!("CARGO_PKG_VERSION");
    format!(
        "NAME=\"coldscan appliance\"\nID=coldscan\nVERSION_ID={v}\n\
         PRETTY_NAME=\"coldscan appliance {v} (Linux {})\"\n",
        kernel.release
    )
}
