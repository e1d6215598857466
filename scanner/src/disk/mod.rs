//! Virtual disk formats: detection by magic bytes and opening (with backing/parent chains) into
//! one [`BlockSource`] holding the guest's virtual disk.
//!
//! An untrusted image never chooses which file is opened: backing and parent paths are resolved
//! by [`ChainPolicy`] (relative to the image's directory, no absolute paths or `..` escapes unless
//! the user allowed a directory), and chains are at most [`MAX_CHAIN_DEPTH`] deep.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::block::{BlockSource, FileSource, SharedSource};
use crate::error::{Error, Result};

mod backing;
pub(crate) mod lru;
pub mod nbd;
pub mod qcow2;
mod runs;
#[cfg(test)]
mod testutil;
pub mod vhd;
pub mod vhdx;
pub mod vmdk;

/// Longest backing/parent chain followed (as crosvm's `MAX_NESTING_DEPTH`).
pub const MAX_CHAIN_DEPTH: usize = 32;

/// Largest virtual disk size accepted from a header (64 TiB, beyond any format's practical use
/// here): larger values are treated as corrupt rather than trusted.
pub const MAX_VIRTUAL_SIZE: u64 = 64 << 40;

/// A disk image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum DiskFormat {
    /// Raw image or block device.
    Raw,
    /// QEMU copy-on-write v2/v3.
    Qcow2,
    /// VMware virtual disk (descriptor, hosted sparse, streamOptimized, flat).
    Vmdk,
    /// Microsoft Virtual PC / Hyper-V VHD.
    Vhd,
    /// Hyper-V VHDX.
    Vhdx,
    /// A network block device export.
    Nbd,
}

impl DiskFormat {
    /// Name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Vmdk => "vmdk",
            DiskFormat::Vhd => "vhd",
            DiskFormat::Vhdx => "vhdx",
            DiskFormat::Nbd => "nbd",
        }
    }
}

/// One layer of an opened chain, top first.
#[derive(Debug, Clone, Serialize)]
pub struct ChainLink {
    /// The file (or URL) of this layer.
    pub path: String,
    /// Its format.
    pub format: DiskFormat,
    /// Its virtual size in bytes.
    pub virtual_size: u64,
}

/// How backing/parent paths named inside images are resolved.
#[derive(Debug, Clone, Default)]
pub struct ChainPolicy {
    /// Extra directories (user-given, `--backing-dir`) in which absolute or escaping backing
    /// paths are allowed.
    pub allowed_dirs: Vec<PathBuf>,
}

impl ChainPolicy {
    /// Resolves `named` (as written in the image at `image`) to a path to open, or refuses it.
    ///
    /// Relative names are taken relative to the image's directory and may not leave it; absolute
    /// names and escapes are allowed only inside [`ChainPolicy::allowed_dirs`].
    pub fn resolve(&self, image: &Path, named: &str) -> Result<PathBuf> {
        let object = image.display().to_string();
        let refuse = |why: &str| Error::Refused {
            object: object.clone(),
            detail: format!("backing file {named:?}: {why}"),
        };
        if named.is_empty() || named.contains('\0') {
            return Err(refuse("empty or invalid name"));
        }
        // Names that are absolute or climb out of the image's directory are refused before the
        // filesystem is even asked about them (`/etc/shadow` is neither opened nor stat'ed),
        // unless the user allowed directories, in which case the canonical path decides below.
        if self.allowed_dirs.is_empty() && escapes_lexically(named) {
            return Err(refuse(
                "outside the image's directory (allow it with --backing-dir)",
            ));
        }
        // `Path::new("disk.vmdk").parent()` is `Some("")`, which does not canonicalize.
        let base = image
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let candidate = if Path::new(named).is_absolute() {
            PathBuf::from(named)
        } else {
            base.join(named)
        };
        let canonical = candidate.canonicalize().map_err(|e| Error::NotFound {
            object: object.clone(),
            detail: format!("backing file {named:?} ({}): {e}", candidate.display()),
        })?;
        let inside = |dir: &Path| {
            dir.canonicalize()
                .map(|d| canonical.starts_with(d))
                .unwrap_or(false)
        };
        let relative_ok = !Path::new(named).is_absolute() && inside(base);
        if relative_ok || self.allowed_dirs.iter().any(|d| inside(d)) {
            Ok(canonical)
        } else {
            Err(refuse(
                "outside the image's directory (allow it with --backing-dir)",
            ))
        }
    }
}

/// Whether `named` is absolute or, read lexically, leaves the directory it is relative to.
fn escapes_lexically(named: &str) -> bool {
    use std::path::Component;
    let mut depth = 0usize;
    for c in Path::new(named).components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return true,
            },
            Component::RootDir | Component::Prefix(_) => return true,
        }
    }
    false
}

/// Options for opening a disk.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Backing-path policy.
    pub chain: ChainPolicy,
    /// qcow2 internal snapshot to open (name or id), instead of the active state.
    pub snapshot: Option<String>,
    /// TLS credentials for `nbds://` / `nbds+unix://` targets (`None`: the system's trust
    /// store, no client certificate); refused with a plain `nbd://` target.
    pub nbd_tls: Option<nbd::NbdTls>,
}

/// An opened virtual disk.
#[derive(Debug, Clone)]
pub struct OpenedDisk {
    /// The guest-visible disk.
    pub source: SharedSource,
    /// Format of the top layer.
    pub format: DiskFormat,
    /// Every layer, top first.
    pub chain: Vec<ChainLink>,
    /// Format-specific facts for `info` (snapshots, cluster size, subformat...).
    pub details: Vec<(String, String)>,
}

/// Identifies the format of `file` from its magic bytes.
pub fn detect(file: &dyn BlockSource) -> Result<DiskFormat> {
    let mut head = [0u8; 64];
    let n = file.size().min(head.len() as u64) as usize;
    file.read_exact_at(0, &mut head[..n])?;
    let head = &head[..n];
    Ok(if head.starts_with(b"QFI\xfb") {
        DiskFormat::Qcow2
    } else if head.starts_with(b"KDMV")
        || head.starts_with(b"COWD")
        || head.starts_with(b"# Disk DescriptorFile")
    {
        DiskFormat::Vmdk
    } else if head.starts_with(b"vhdxfile") {
        DiskFormat::Vhdx
    } else if head.starts_with(b"conectix") || vhd_footer_at_end(file)? {
        DiskFormat::Vhd
    } else {
        DiskFormat::Raw
    })
}

fn vhd_footer_at_end(file: &dyn BlockSource) -> Result<bool> {
    // A fixed VHD has its only footer in the last 512 bytes.
    if file.size() < 512 {
        return Ok(false);
    }
    let mut cookie = [0u8; 8];
    file.read_exact_at(file.size() - 512, &mut cookie)?;
    Ok(&cookie == b"conectix")
}

/// State carried down a backing chain while it is opened: depth and the files already in it,
/// so that a self-referencing or looping chain is refused instead of followed.
#[derive(Debug, Default)]
pub struct ChainState {
    /// Canonical paths of the layers opened so far, top first.
    pub visited: Vec<PathBuf>,
}

impl ChainState {
    /// Records `path` as the next layer, refusing loops and chains deeper than
    /// [`MAX_CHAIN_DEPTH`].
    pub fn enter(&mut self, path: &Path) -> Result<()> {
        let object = path.display().to_string();
        if self.visited.len() >= MAX_CHAIN_DEPTH {
            return Err(Error::limit(
                object,
                format!("backing chain deeper than {MAX_CHAIN_DEPTH} layers"),
            ));
        }
        let canonical = path.canonicalize().map_err(|e| Error::io(&object, 0, e))?;
        if self.visited.contains(&canonical) {
            return Err(Error::corrupt(
                object,
                0,
                "backing chain loops back to a file already in it",
            ));
        }
        self.visited.push(canonical);
        Ok(())
    }
}

/// Opens a disk target: an image file or block device path (following its chain) as one virtual
/// disk.
pub fn open(path: &Path, opts: &OpenOptions) -> Result<OpenedDisk> {
    open_layer(path, opts, &mut ChainState::default())
}

/// Opens a disk target as the user names it: an `nbd://` / `nbd+unix://` URL (an NBD export,
/// read as the raw virtual disk the server presents; `nbds://` / `nbds+unix://` over TLS with
/// `opts.nbd_tls`) or an image file / block device path.
pub fn open_target(spec: &str, opts: &OpenOptions) -> Result<OpenedDisk> {
    if nbd::is_nbd_url(spec) {
        nbd::open_with_tls(spec, opts.nbd_tls.as_ref())
    } else {
        open(Path::new(spec), opts)
    }
}

/// Opens a disk image whose top layer's format is known (stated by the hypervisor, e.g. the
/// `<driver type=...>` of a libvirt domain disk) instead of probed.
///
/// A raw guest disk whose first bytes the guest itself wrote as another format's magic (a
/// `QFI\xfb` header planted inside the VM) is therefore served as raw and never followed into a
/// backing file it names. A non-raw `format` that the file's magic contradicts is refused as
/// corrupt at offset 0. Layers below the top (written by the host, not the guest) keep the usual
/// detection and [`ChainPolicy`] rules.
pub fn open_as(path: &Path, format: DiskFormat, opts: &OpenOptions) -> Result<OpenedDisk> {
    let mut state = ChainState::default();
    state.enter(path)?;
    let file: SharedSource = Arc::new(FileSource::open(path)?);
    if format != DiskFormat::Raw {
        let found = detect(file.as_ref())?;
        if found != format {
            return Err(Error::corrupt(
                path.display().to_string(),
                0,
                format!(
                    "given as a {} image, but its header is {}",
                    format.as_str(),
                    if found == DiskFormat::Raw {
                        "no known image format".to_string()
                    } else {
                        format!("a {} header", found.as_str())
                    }
                ),
            ));
        }
    }
    open_file_as(path, file, format, opts, &mut state)
}

/// Opens one layer of a chain and, through the format's own code, the layers below it. Formats
/// open their backing file with `open_layer(&opts.chain.resolve(this, named)?, opts, state)`.
pub fn open_layer(path: &Path, opts: &OpenOptions, state: &mut ChainState) -> Result<OpenedDisk> {
    state.enter(path)?;
    let file: SharedSource = Arc::new(FileSource::open(path)?);
    let format = detect(file.as_ref())?;
    open_file_as(path, file, format, opts, state)
}

/// Opens the already entered and opened layer `file` (at `path`) as `format`.
pub(crate) fn open_file_as(
    path: &Path,
    file: SharedSource,
    format: DiskFormat,
    opts: &OpenOptions,
    state: &mut ChainState,
) -> Result<OpenedDisk> {
    match format {
        DiskFormat::Raw => Ok(OpenedDisk {
            chain: vec![ChainLink {
                path: path.display().to_string(),
                format,
                virtual_size: file.size(),
            }],
            source: file,
            format,
            details: Vec::new(),
        }),
        DiskFormat::Qcow2 => qcow2::open(path, file, opts, state),
        DiskFormat::Vmdk => vmdk::open(path, file, opts, state),
        DiskFormat::Vhd => vhd::open(path, file, opts, state),
        DiskFormat::Vhdx => vhdx::open(path, file, opts, state),
        other => Err(Error::unsupported(
            path.display().to_string(),
            format!("{} images are not supported yet", other.as_str()),
        )),
    }
}

#[cfg(test)]
mod tests;
