//! `build.json`: what went into the image (every input with version and sha256), how it was built
//! (command line, `SOURCE_DATE_EPOCH`), the size of each component and the outputs' digests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;
use serde::Serialize;

use crate::disk::Disk;
use crate::formats::Format;
use crate::initramfs::{Library, Sizes};
use crate::kernel::Kernel;
use crate::package::{Origin, Package};
use crate::util::sha256_file;
use crate::BuildArgs;

/// Everything the manifest is made from.
#[derive(Debug)]
pub struct Parts<'a> {
    pub args: &'a BuildArgs,
    pub epoch: u64,
    pub kernel: (&'a Package, &'a Kernel),
    pub stub: &'a Package,
    /// The `coldscan` binary as given (before stripping).
    pub coldscan: &'a Path,
    pub libraries: &'a [Library],
    pub db_files: &'a [(String, PathBuf)],
    pub sizes: Sizes,
    pub kernel_size: u64,
    pub uki_size: u64,
    pub disk: &'a Disk,
    pub outputs: &'a [(Format, PathBuf)],
}

/// The `build.json` document.
#[derive(Debug, Serialize)]
pub struct Manifest {
    tool: &'static str,
    version: &'static str,
    command_line: Vec<String>,
    source_date_epoch: u64,
    kernel_cmdline: String,
    inputs: Inputs,
    sizes: SizeSummary,
    disk: DiskIds,
    outputs: Vec<Output>,
}

#[derive(Debug, Serialize)]
struct Inputs {
    kernel: KernelInput,
    stub: Package,
    coldscan: FileInput,
    libraries: Vec<LibraryInput>,
    db: Vec<FileInput>,
}

#[derive(Debug, Serialize)]
struct KernelInput {
    #[serde(flatten)]
    package: Package,
    release: String,
    modules: Vec<String>,
}

#[derive(Debug, Serialize)]
struct FileInput {
    name: String,
    sha256: String,
    size: u64,
}

#[derive(Debug, Serialize)]
struct LibraryInput {
    name: String,
    path: String,
    sha256: String,
    size: u64,
    package: Option<String>,
    version: Option<String>,
}

/// Component sizes in bytes (uncompressed unless named otherwise).
#[derive(Debug, Serialize)]
struct SizeSummary {
    kernel: u64,
    modules: u64,
    libraries: u64,
    coldscan: u64,
    db: u64,
    initramfs_uncompressed: u64,
    initramfs_zstd: u64,
    uki: u64,
    esp: u64,
}

#[derive(Debug, Serialize)]
struct DiskIds {
    disk_guid: String,
    esp_guid: String,
    fat_volume_id: String,
    size: u64,
}

#[derive(Debug, Serialize)]
struct Output {
    format: Format,
    file: String,
    size: u64,
    sha256: String,
}

fn file_input(name: String, path: &Path) -> Result<FileInput> {
    Ok(FileInput {
        name,
        sha256: sha256_file(path)?,
        size: std::fs::metadata(path)?.len(),
    })
}

/// Debian package and version owning each path (`dpkg -S`, then `dpkg-query`); unknown paths
/// (a library built locally) get none.
fn owners(paths: &[&Path]) -> BTreeMap<String, (String, String)> {
    let mut owner = BTreeMap::new();
    let mut query = Command::new("dpkg");
    query.arg("-S");
    for p in paths {
        query.arg(p);
        // With merged /usr, dpkg knows a library under /lib or /usr/lib, depending on its package.
        match p.strip_prefix("/usr") {
            Ok(rest) => query.arg(Path::new("/").join(rest)),
            Err(_) => query.arg(Path::new("/usr").join(p.strip_prefix("/").unwrap_or(p))),
        };
    }
    let Ok(out) = query.output() else {
        return owner;
    };
    let mut packages = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some((pkg, path)) = line.split_once(": ") {
            let pkg = pkg.split(',').next().unwrap_or(pkg).trim().to_string();
            let path = path.trim();
            let key = path.strip_prefix("/usr").unwrap_or(path).to_string();
            packages.insert(key, pkg);
        }
    }
    let mut versions = BTreeMap::new();
    let unique: std::collections::BTreeSet<_> = packages.values().cloned().collect();
    if !unique.is_empty() {
        if let Ok(out) = Command::new("dpkg-query")
            .args(["-W", "-f", "${Package}:${Architecture} ${Version}\\n"])
            .args(&unique)
            .output()
        {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some((p, v)) = line.split_once(' ') {
                    versions.insert(p.to_string(), v.to_string());
                    versions.insert(p.split(':').next().unwrap_or(p).to_string(), v.to_string());
                }
            }
        }
    }
    for p in paths {
        let s = p.to_string_lossy();
        let key = s.strip_prefix("/usr").unwrap_or(&s).to_string();
        if let Some(pkg) = packages.get(&key) {
            let v = versions.get(pkg).cloned().unwrap_or_default();
            owner.insert(s.into_owned(), (pkg.clone(), v));
        }
    }
    owner
}

impl Manifest {
    /// Assembles the manifest, hashing every input and output.
    pub fn new(p: Parts) -> Result<Self> {
        let (kernel_pkg, kernel) = p.kernel;
        let lib_paths: Vec<&Path> = p.libraries.iter().map(|(_, h)| h.as_path()).collect();
        let owner = owners(&lib_paths);
        let mut libraries = Vec::new();
        for (name, host) in p.libraries {
            let key = host.to_string_lossy().into_owned();
            let (package, version) = owner.get(&key).cloned().unzip();
            libraries.push(LibraryInput {
                name: name.clone(),
                sha256: sha256_file(host)?,
                size: std::fs::metadata(host)?.len(),
                path: key,
                package,
                version,
            });
        }
        let mut outputs = Vec::new();
        for (format, path) in p.outputs {
            outputs.push(Output {
                format: *format,
                file: path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                size: std::fs::metadata(path)?.len(),
                sha256: sha256_file(path)?,
            });
        }
        Ok(Self {
            tool: "coldscan-image",
            version: env!("CARGO_PKG_VERSION"),
            command_line: std::env::args().collect(),
            source_date_epoch: p.epoch,
            kernel_cmdline: p.args.cmdline.clone(),
            inputs: Inputs {
                kernel: KernelInput {
                    package: kernel_pkg.clone(),
                    release: kernel.release.clone(),
                    modules: kernel.modules.iter().map(|m| m.name.clone()).collect(),
                },
                stub: p.stub.clone(),
                coldscan: file_input(p.coldscan.display().to_string(), p.coldscan)?,
                libraries,
                db: p
                    .db_files
                    .iter()
                    .map(|(n, f)| file_input(n.clone(), f))
                    .collect::<Result<_>>()?,
            },
            sizes: SizeSummary {
                kernel: p.kernel_size,
                modules: p.sizes.modules,
                libraries: p.sizes.libraries,
                coldscan: p.sizes.coldscan,
                db: p.sizes.db,
                initramfs_uncompressed: p.sizes.archive,
                initramfs_zstd: p.sizes.compressed,
                uki: p.uki_size,
                esp: p.disk.esp_size,
            },
            disk: DiskIds {
                disk_guid: p.disk.disk_guid.clone(),
                esp_guid: p.disk.esp_guid.clone(),
                fat_volume_id: format!("{:08X}", p.disk.volume_id),
                size: p.disk.bytes.len() as u64,
            },
            outputs,
        })
    }

    /// Prints the size breakdown and the outputs.
    pub fn print_summary(&self, out: &Path) {
        let mb = |b: u64| b as f64 / 1e6;
        let s = &self.sizes;
        let k = &self.inputs.kernel;
        let origin = match k.package.origin {
            Origin::Lock => "locked",
            Origin::ArchiveCurrent => "archive's current, NOT the locked one",
            Origin::File => "from file",
        };
        println!(
            "coldscan appliance image {} ({})",
            self.version,
            out.display()
        );
        println!(
            "  kernel     {} {} ({origin})",
            k.package.package, k.package.version
        );
        println!("  size breakdown (uncompressed):");
        println!("    kernel       {:8.1} MB", mb(s.kernel));
        println!(
            "    modules      {:8.1} MB  ({} modules)",
            mb(s.modules),
            k.modules.len()
        );
        println!(
            "    libraries    {:8.1} MB  ({} files)",
            mb(s.libraries),
            self.inputs.libraries.len()
        );
        println!("    coldscan     {:8.1} MB", mb(s.coldscan));
        println!(
            "    database     {:8.1} MB  ({} files)",
            mb(s.db),
            self.inputs.db.len()
        );
        println!(
            "    initramfs    {:8.1} MB  ({:.1} MB zstd)",
            mb(s.initramfs_uncompressed),
            mb(s.initramfs_zstd)
        );
        println!(
            "    UKI          {:8.1} MB  (ESP {:.1} MB)",
            mb(s.uki),
            mb(s.esp)
        );
        println!("  outputs:");
        for o in &self.outputs {
            println!(
                "    {:<16} {:8.1} MB  sha256 {}",
                o.file,
                mb(o.size),
                o.sha256
            );
        }
    }
}
