//! VMware virtual disks (VMDK), read-only, following VMware's "Virtual Disk Format 1.1"
//! specification (and the 5.0 revision for stream-optimized extents): text descriptors
//! ("The Descriptor File"), hosted sparse extents ("Hosted Sparse Extents", `KDMV`), ESX sparse
//! extents (`COWD`, `VMFSSPARSE`), flat and zero extents, stream-optimized compressed extents, and
//! snapshot delta disks whose parent is named by `parentFileNameHint` (with the `CID` /
//! `parentCID` consistency check VMware performs).
//!
//! Files named inside a descriptor (extents, parent) are untrusted paths: they are opened only
//! through a [`FileResolver`], which for image files applies the disk layer's
//! [`ChainPolicy`](crate::disk::ChainPolicy). ESXi space-efficient sparse extents (`SESPARSE`) are
//! read as QEMU documents them; vSAN sparse and raw-device-mapped extents are refused with an
//! error naming the variant.

pub mod cowd_header;
pub mod descriptor;
pub mod grain_table;
pub mod sesparse_header;
pub mod sparse_extent;
pub mod sparse_header;
pub mod stream_optimized;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::block::{check_bounds, read_vec, BlockSource, SharedSource, Window};
use crate::disk::{ChainLink, ChainState, DiskFormat, OpenOptions, OpenedDisk, MAX_CHAIN_DEPTH};
use crate::error::{Error, Result};

use descriptor::{Access, Descriptor, ExtentKind, ExtentLine, MAX_DESCRIPTOR_BYTES};
use sparse_extent::SparseExtent;
use sparse_header::SECTOR;

/// Key of the `details` entry holding a VMDK's content id (hex), read back from a parent to check
/// the child's `parentCID`.
pub const DETAIL_CID: &str = "CID";

/// `createType`s whose extents are host devices or partitions: never opened from an image.
const DEVICE_CREATE_TYPES: &[&str] = &[
    "fullDevice",
    "partitionedDevice",
    "vmfsRaw",
    "vmfsRawDeviceMap",
    "vmfsPassthroughRawDeviceMap",
];

/// Opens the files a descriptor names: extents and the parent disk.
pub trait FileResolver {
    /// Opens the extent file `named` (as written in the descriptor).
    fn extent(&mut self, named: &str) -> Result<SharedSource>;
    /// Opens the parent disk `named` by `parentFileNameHint`, with its own chain.
    fn parent(&mut self, named: &str) -> Result<OpenedDisk>;
    /// Remarks on how names were resolved, for `info`.
    fn take_notes(&mut self) -> Vec<String> {
        Vec::new()
    }
}

/// Resolves names relative to an image file under the user's [`OpenOptions`] chain policy.
#[derive(Debug)]
pub struct PathResolver<'a> {
    image: &'a Path,
    opts: &'a OpenOptions,
    state: &'a mut ChainState,
    /// Extent files already opened, so a file named by many extents is opened once.
    opened: HashMap<PathBuf, SharedSource>,
    notes: Vec<String>,
}

impl FileResolver for PathResolver<'_> {
    fn extent(&mut self, named: &str) -> Result<SharedSource> {
        let path = self.opts.chain.resolve(self.image, named)?;
        if let Some(file) = self.opened.get(&path) {
            return Ok(file.clone());
        }
        let file: SharedSource = Arc::new(crate::block::FileSource::open(&path)?);
        self.opened.insert(path, file.clone());
        Ok(file)
    }

    fn parent(&mut self, named: &str) -> Result<OpenedDisk> {
        let path = match self.opts.chain.resolve(self.image, named) {
            Ok(path) => path,
            Err(first) => {
                // ESXi writes absolute hints (`/vmfs/volumes/<datastore>/<vm>/disk.vmdk`),
                // Workstation on Windows `C:\VMs\disk.vmdk`: in a copied VM the parent sits beside
                // the child. Only that file name is tried, under the same policy, and the CID
                // check below confirms it is the parent.
                let base = named.rsplit(['/', '\\']).next().unwrap_or("");
                if base == named || base.is_empty() {
                    return Err(first);
                }
                match self.opts.chain.resolve(self.image, base) {
                    Ok(path) => {
                        self.notes.push(format!(
                            "parent {named:?} not usable ({first}); using {base:?} beside the image"
                        ));
                        path
                    }
                    Err(_) => return Err(first),
                }
            }
        };
        crate::disk::open_layer(&path, self.opts, self.state)
    }

    fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }
}

/// In-memory files by name (tests and fuzzing): extents and parents are looked up by their exact
/// name, parents are VMDKs opened from the same set, at most [`MAX_CHAIN_DEPTH`] deep.
#[derive(Debug, Default)]
pub struct MemoryFiles {
    /// The files, by name.
    pub files: Vec<(String, SharedSource)>,
    depth: usize,
}

impl MemoryFiles {
    /// A set of named in-memory files.
    pub fn new(files: Vec<(String, SharedSource)>) -> Self {
        MemoryFiles { files, depth: 0 }
    }

    fn get(&self, named: &str) -> Result<SharedSource> {
        self.files
            .iter()
            .find(|(n, _)| n == named)
            .map(|(_, f)| f.clone())
            .ok_or_else(|| Error::NotFound {
                object: "memory".into(),
                detail: format!("file {named:?}"),
            })
    }
}

impl FileResolver for MemoryFiles {
    fn extent(&mut self, named: &str) -> Result<SharedSource> {
        self.get(named)
    }

    fn parent(&mut self, named: &str) -> Result<OpenedDisk> {
        let file = self.get(named)?;
        if self.depth + 1 >= MAX_CHAIN_DEPTH {
            return Err(Error::limit(
                named,
                format!("parent chain deeper than {MAX_CHAIN_DEPTH} layers"),
            ));
        }
        self.depth += 1;
        let opened = open_source(file, self);
        self.depth -= 1;
        opened
    }
}

/// Opens the VMDK at `path` (already opened as `file`), its extents and its parent chain.
pub fn open(
    path: &Path,
    file: SharedSource,
    opts: &OpenOptions,
    state: &mut ChainState,
) -> Result<OpenedDisk> {
    let mut resolver = PathResolver {
        image: path,
        opts,
        state,
        opened: HashMap::new(),
        notes: Vec::new(),
    };
    open_source(file, &mut resolver)
}

/// What one extent's bytes are.
#[derive(Debug)]
enum ExtentData {
    Flat(SharedSource),
    Zero,
    Sparse(Box<SparseExtent>),
    NoAccess,
}

#[derive(Debug)]
struct Extent {
    /// Byte offset of the extent in the virtual disk.
    start: u64,
    /// Length in bytes.
    len: u64,
    data: ExtentData,
}

/// An opened VMDK: its extents in order, and the parent disk that unallocated grains read from.
#[derive(Debug)]
pub struct VmdkDisk {
    name: String,
    size: u64,
    extents: Vec<Extent>,
    parent: Option<SharedSource>,
}

impl VmdkDisk {
    /// Fills `buf` from the parent at virtual offset `offset`, zeros where there is none.
    fn read_parent(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let Some(parent) = &self.parent else {
            buf.fill(0);
            return Ok(());
        };
        let avail = parent.size().saturating_sub(offset);
        let n = usize::try_from(avail).unwrap_or(usize::MAX).min(buf.len());
        let (from_parent, beyond) = buf.split_at_mut(n);
        if n > 0 {
            parent.read_exact_at(offset, from_parent)?;
        }
        beyond.fill(0);
        Ok(())
    }
}

impl BlockSource for VmdkDisk {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_bounds(&self.name, offset, buf.len(), self.size)?;
        let mut done = 0usize;
        let mut index = self
            .extents
            .partition_point(|e| e.start.saturating_add(e.len) <= offset);
        while done < buf.len() {
            let pos = offset + done as u64;
            // Extents are contiguous from 0 (built so in `open_source`), so `pos` lies in this
            // one; checked anyway so that a broken invariant is an error, not a panic or a loop.
            let extent = self
                .extents
                .get(index)
                .filter(|e| e.start <= pos && pos < e.start.saturating_add(e.len))
                .ok_or_else(|| Error::corrupt(&self.name, pos, "no extent covers this offset"))?;
            let within = pos - extent.start;
            let n = (extent.len - within).min((buf.len() - done) as u64) as usize;
            let out = &mut buf[done..done + n];
            match &extent.data {
                ExtentData::Flat(src) => src.read_exact_at(within, out)?,
                ExtentData::Zero => out.fill(0),
                ExtentData::NoAccess => {
                    return Err(Error::unsupported(
                        &self.name,
                        format!("extent {index} is marked NOACCESS"),
                    ))
                }
                ExtentData::Sparse(sparse) => {
                    let base = extent.start;
                    sparse.read(within, out, &mut |at, b| self.read_parent(base + at, b))?
                }
            }
            done += n;
            index += 1;
        }
        Ok(())
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// Opens a VMDK from `file` (a descriptor, hosted sparse or COWD file), opening the files it names
/// through `resolver`.
pub fn open_source(file: SharedSource, resolver: &mut dyn FileResolver) -> Result<OpenedDisk> {
    let name = file.name().to_string();
    let head = read_vec(file.as_ref(), 0, file.size().min(512), 512)?;
    let mut details: Vec<(String, String)> = Vec::new();
    let mut extents = Vec::new();
    let descriptor;
    if head.starts_with(sparse_header::MAGIC) {
        let (sparse, info) = SparseExtent::open_kdmv(file.clone())?;
        let h = &info.header;
        descriptor = if h.descriptor_offset != 0 && h.descriptor_sectors != 0 {
            let at = h.descriptor_offset.saturating_mul(SECTOR);
            let len = h.descriptor_sectors.saturating_mul(SECTOR);
            let len = len.min(file.size().saturating_sub(at));
            let text = read_vec(file.as_ref(), at, len, MAX_DESCRIPTOR_BYTES)?;
            Some(Descriptor::parse(&text, &name, at)?)
        } else {
            None
        };
        details.push(("sparse extent version".into(), h.version.to_string()));
        details.push(("grain size".into(), h.grain_bytes().to_string()));
        if h.compressed() {
            details.push(("compression".into(), "deflate".into()));
        }
        for note in &info.notes {
            details.push(("note".into(), note.clone()));
        }
        extents.push(Extent {
            start: 0,
            len: sparse.capacity(),
            data: ExtentData::Sparse(Box::new(sparse)),
        });
    } else if head.starts_with(cowd_header::MAGIC) {
        let (sparse, h) = SparseExtent::open_cowd(file.clone())?;
        if !h.parent_name.is_empty() {
            return Err(Error::unsupported(
                &name,
                format!(
                    "ESX 2 COWD redo log naming its parent {:?} in its header: open the disk's \
                     descriptor instead",
                    h.parent_name
                ),
            ));
        }
        details.push(("create type".into(), "COWD sparse extent".into()));
        // The parent of an ESX delta is named by its descriptor, not by the extent.
        details.push((
            "note".into(),
            "COWD extent opened without its descriptor: unallocated grains read as zeros, not \
             from a parent"
                .into(),
        ));
        details.push(("grain size".into(), sparse.grain_bytes().to_string()));
        descriptor = None;
        extents.push(Extent {
            start: 0,
            len: sparse.capacity(),
            data: ExtentData::Sparse(Box::new(sparse)),
        });
    } else {
        let text = read_vec(file.as_ref(), 0, file.size(), MAX_DESCRIPTOR_BYTES)?;
        let d = Descriptor::parse(&text, &name, 0)?;
        if let Some(t) = d.create_type.as_deref() {
            if DEVICE_CREATE_TYPES.contains(&t) {
                return Err(Error::unsupported(
                    &name,
                    format!("VMDK createType {t:?} maps host devices, which are never opened"),
                ));
            }
        }
        if d.extents.is_empty() {
            return Err(Error::corrupt(&name, 0, "VMDK descriptor lists no extents"));
        }
        let mut start = 0u64;
        for (i, line) in d.extents.iter().enumerate() {
            let data = open_extent(&name, i, line, resolver)?;
            // Bounded by the descriptor parser: the total fits MAX_VIRTUAL_SIZE.
            let len = line.sectors * SECTOR;
            extents.push(Extent { start, len, data });
            start += len;
        }
        descriptor = Some(d);
    }
    let size = extents.iter().map(|e| e.len).sum();
    let mut chain = vec![ChainLink {
        path: name.clone(),
        format: DiskFormat::Vmdk,
        virtual_size: size,
    }];
    let mut parent = None;
    if let Some(d) = &descriptor {
        describe(d, &mut details);
        if let Some(hint) = d.parent_hint.as_deref().filter(|h| !h.is_empty()) {
            let p = resolver.parent(hint)?;
            for note in resolver.take_notes() {
                details.push(("note".into(), note));
            }
            check_parent_cid(&name, d, &p, &mut details)?;
            chain.extend(p.chain.iter().cloned());
            parent = Some(p.source);
        }
    }
    extents.retain(|e| e.len > 0);
    Ok(OpenedDisk {
        source: Arc::new(VmdkDisk {
            name,
            size,
            extents,
            parent,
        }),
        format: DiskFormat::Vmdk,
        chain,
        details,
    })
}

/// Opens one extent of a descriptor.
fn open_extent(
    name: &str,
    index: usize,
    line: &ExtentLine,
    resolver: &mut dyn FileResolver,
) -> Result<ExtentData> {
    let len = line.sectors * SECTOR;
    if line.access == Access::NoAccess {
        return Ok(ExtentData::NoAccess);
    }
    let file_name = line.file.as_deref().unwrap_or("");
    let label = format!("{name} extent {index} ({file_name})");
    Ok(match line.kind {
        ExtentKind::Zero => ExtentData::Zero,
        ExtentKind::Flat | ExtentKind::Vmfs => {
            let file = resolver.extent(file_name)?;
            let at = line.offset.checked_mul(SECTOR).ok_or_else(|| {
                Error::corrupt(name, 0, format!("extent {index}: offset overflows"))
            })?;
            ExtentData::Flat(Arc::new(Window::new(file, at, len, label)?))
        }
        ExtentKind::Sparse | ExtentKind::VmfsSparse => {
            let file = resolver.extent(file_name)?;
            let mut magic = [0u8; 4];
            if file.size() >= 4 {
                file.read_exact_at(0, &mut magic)?;
            }
            let sparse = if &magic == cowd_header::MAGIC {
                SparseExtent::open_cowd(file)?.0
            } else if &magic == sparse_header::MAGIC {
                SparseExtent::open_kdmv(file)?.0
            } else {
                return Err(Error::corrupt(
                    file.name(),
                    0,
                    format!(
                        "{} extent without a KDMV or COWD header",
                        line.kind.as_str()
                    ),
                ));
            };
            if sparse.capacity() < len {
                return Err(Error::corrupt(
                    sparse.file().name(),
                    0,
                    format!(
                        "sparse extent holds {} bytes, the descriptor says {len}",
                        sparse.capacity()
                    ),
                ));
            }
            ExtentData::Sparse(Box::new(sparse))
        }
        ExtentKind::SeSparse => {
            let sparse = SparseExtent::open_sesparse(resolver.extent(file_name)?)?;
            if sparse.capacity() < len {
                return Err(Error::corrupt(
                    sparse.file().name(),
                    0,
                    format!(
                        "SESPARSE extent holds {} bytes, the descriptor says {len}",
                        sparse.capacity()
                    ),
                ));
            }
            ExtentData::Sparse(Box::new(sparse))
        }
        ExtentKind::VsanSparse => {
            return Err(Error::unsupported(
                name,
                format!("extent {index}: VSANSPARSE (vSAN sparse) extents"),
            ))
        }
        ExtentKind::VmfsRaw => {
            return Err(Error::unsupported(
                name,
                format!("extent {index}: raw device mapping (VMFSRDM/VMFSRAW) extents"),
            ))
        }
    })
}

/// Adds the descriptor's facts to `details`.
fn describe(d: &Descriptor, details: &mut Vec<(String, String)>) {
    if let Some(t) = &d.create_type {
        details.insert(0, ("create type".into(), t.clone()));
    }
    if let Some(cid) = d.cid {
        details.push((DETAIL_CID.into(), format!("{cid:08x}")));
    }
    if let Some(p) = d.parent_cid {
        details.push(("parent CID".into(), format!("{p:08x}")));
    }
    if let Some(h) = &d.parent_hint {
        details.push(("parent file name hint".into(), h.clone()));
    }
    if !d.extents.is_empty() {
        let lines: Vec<String> = d
            .extents
            .iter()
            .map(|e| {
                let access = match e.access {
                    Access::ReadWrite => "RW",
                    Access::ReadOnly => "RDONLY",
                    Access::NoAccess => "NOACCESS",
                };
                let kind = e.kind.as_str();
                match &e.file {
                    Some(f) if e.offset != 0 => {
                        format!("{access} {} {kind} {f:?} {}", e.sectors, e.offset)
                    }
                    Some(f) => format!("{access} {} {kind} {f:?}", e.sectors),
                    None => format!("{access} {} {kind}", e.sectors),
                }
            })
            .collect();
        details.push(("extents".into(), lines.join("; ")));
    }
    for (key, label) in [
        ("ddb.adapterType", "adapter type"),
        ("ddb.virtualHWVersion", "virtual hardware version"),
        ("ddb.uuid.image", "uuid"),
    ] {
        if let Some(v) = d.ddb.get(key) {
            details.push((label.into(), v.clone()));
        }
    }
}

/// Checks that the child's `parentCID` is the parent's `CID`, as VMware does: a mismatch means the
/// parent was modified after the snapshot was taken, and the child's view would be garbage.
fn check_parent_cid(
    name: &str,
    child: &Descriptor,
    parent: &OpenedDisk,
    details: &mut Vec<(String, String)>,
) -> Result<()> {
    let parent_cid = parent
        .details
        .iter()
        .find(|(k, _)| k == DETAIL_CID)
        .and_then(|(_, v)| u32::from_str_radix(v, 16).ok());
    match (child.parent_cid, parent_cid) {
        (Some(want), Some(have)) if want == have => Ok(()),
        (Some(want), Some(have)) => Err(Error::corrupt(
            name,
            0,
            format!(
                "parentCID {want:08x} does not match the parent's CID {have:08x} ({}): the parent \
                 was modified after this delta disk was created",
                parent.source.name()
            ),
        )),
        _ => {
            details.push((
                "note".into(),
                "parent content id not checked (parent is not a VMDK with a CID)".into(),
            ));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests;
