//! qcow2 images, versions 2 and 3, read-only (QEMU `docs/interop/qcow2.txt`).
//!
//! One file per on-disk structure: [`header`] (header and header extensions), [`l1l2`] (the
//! two-level cluster map, standard and extended L2 entries), [`snapshot`] (internal snapshots),
//! [`compressed`] (zlib / zstd compressed clusters). Reading never consults refcounts.
//!
//! Sequential reads are the hot path (`coldscan cat`, whole-disk scans): a read walks the
//! cluster map once, merges runs of host-contiguous clusters into one `pread`, runs of
//! unallocated clusters into one backing read and zero runs into one fill. Decoded L2 tables and
//! decompressed clusters are kept in bounded LRU caches.

pub mod compressed;
pub mod header;
pub mod l1l2;
pub mod snapshot;

use std::path::Path;
use std::sync::Arc;

use crate::block::{check_bounds, read_vec, BlockSource, SharedSource};
use crate::disk::backing::{open_lower, open_lower_raw, read_lower};
use crate::disk::lru::Lru;
use crate::disk::{ChainLink, ChainState, DiskFormat, OpenOptions, OpenedDisk};
use crate::error::{Error, Result};

use header::{Header, INCOMPAT_CORRUPT, INCOMPAT_DIRTY};
use l1l2::Mapping;
use snapshot::Snapshot;

/// Memory for cached L2 tables (bytes).
const L2_CACHE_BYTES: u64 = 32 << 20;
/// Compressed clusters in one read from which they are decompressed in parallel.
const PARALLEL_MIN_COMPRESSED: usize = 4;
/// Memory for cached decompressed clusters (bytes).
const CLUSTER_CACHE_BYTES: u64 = 16 << 20;

/// A qcow2 image (one layer) as a block source of its virtual disk.
#[derive(Debug)]
pub struct Qcow2Image {
    file: SharedSource,
    header: Header,
    l1: Vec<u64>,
    size: u64,
    snapshots: std::result::Result<Vec<Snapshot>, String>,
    selected: Option<Snapshot>,
    backing: Option<SharedSource>,
    l2_cache: Lru<u64, [u8]>,
    cluster_cache: Lru<u64, [u8]>,
    name: String,
}

impl Qcow2Image {
    /// Parses the image in `file`; `snapshot` (id or name) selects an internal snapshot instead of
    /// the active state. The backing file is not opened: see [`Qcow2Image::backing_file`].
    pub fn parse(file: SharedSource, snapshot: Option<&str>) -> Result<Qcow2Image> {
        let name = file.name().to_string();
        let header = Header::read(file.as_ref())?;
        let snapshots =
            snapshot::read_table(file.as_ref(), header.snapshots_offset, header.nb_snapshots);
        let (selected, l1_offset, l1_size, size) = match snapshot {
            None => (None, header.l1_table_offset, header.l1_size, header.size),
            Some(wanted) => {
                let list = snapshots
                    .as_ref()
                    .map_err(|e| Error::corrupt(&name, header.snapshots_offset, e.to_string()))?;
                let s = snapshot::find(list, wanted).ok_or_else(|| Error::NotFound {
                    object: name.clone(),
                    detail: format!(
                        "qcow2 snapshot {wanted:?}; available: {}",
                        if list.is_empty() {
                            "none".to_string()
                        } else {
                            list.iter()
                                .map(|s| format!("{} ({})", s.id, s.name))
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    ),
                })?;
                let size = s.disk_size.unwrap_or(header.size);
                if size > crate::disk::MAX_VIRTUAL_SIZE {
                    return Err(Error::corrupt(
                        &name,
                        header.snapshots_offset,
                        format!("snapshot {} virtual size {size} exceeds the limit", s.id),
                    ));
                }
                (Some(s.clone()), s.l1_table_offset, s.l1_size, size)
            }
        };
        let needed = l1l2::l1_entries_needed(&header, size);
        if u64::from(l1_size) < needed {
            return Err(Error::corrupt(
                &name,
                l1_offset,
                format!("qcow2 L1 table has {l1_size} entries, {needed} needed for {size} bytes"),
            ));
        }
        let l1 = l1l2::read_l1(file.as_ref(), &header, l1_offset, l1_size)?;
        let cluster_size = header.cluster_size();
        let l2_slots = usize::try_from(L2_CACHE_BYTES / cluster_size)
            .unwrap_or(16)
            .max(16);
        let cluster_slots = usize::try_from(CLUSTER_CACHE_BYTES / cluster_size)
            .unwrap_or(8)
            .max(8);
        Ok(Qcow2Image {
            file,
            header,
            l1,
            size,
            snapshots: snapshots.map_err(|e| e.to_string()),
            selected,
            backing: None,
            l2_cache: Lru::new(l2_slots),
            cluster_cache: Lru::new(cluster_slots),
            name,
        })
    }

    /// The parsed header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The backing file name written in the image (untrusted: resolve it through the chain
    /// policy).
    pub fn backing_file(&self) -> Option<&str> {
        self.header.backing_file.as_deref()
    }

    /// Attaches the opened backing disk.
    pub fn set_backing(&mut self, backing: SharedSource) {
        self.backing = Some(backing);
    }

    /// Facts for `coldscan info`.
    pub fn details(&self) -> Vec<(String, String)> {
        let h = &self.header;
        let mut d = vec![
            ("qcow2 version".to_string(), h.version.to_string()),
            ("cluster size".to_string(), h.cluster_size().to_string()),
            (
                "compression".to_string(),
                h.compression.as_str().to_string(),
            ),
        ];
        if h.extended_l2() {
            d.push((
                "extended L2".into(),
                "yes (32 subclusters per cluster)".into(),
            ));
        }
        if h.incompatible & INCOMPAT_DIRTY != 0 {
            d.push((
                "note".into(),
                "dirty (not closed cleanly; refcounts unused for reading)".into(),
            ));
        }
        if h.incompatible & INCOMPAT_CORRUPT != 0 {
            d.push(("note".into(), "marked corrupt by QEMU; read as is".into()));
        }
        if h.has_bitmaps {
            d.push(("bitmaps".into(), "present (ignored)".into()));
        }
        if let Some(b) = &h.backing_file {
            d.push(("backing file".into(), b.clone()));
        }
        if let Some(f) = &h.backing_format {
            d.push(("backing format".into(), f.clone()));
        }
        match &self.snapshots {
            Ok(list) => {
                for s in list {
                    d.push((
                        "snapshot".into(),
                        format!(
                            "id {} name {:?} size {} date {}",
                            s.id,
                            s.name,
                            s.disk_size.unwrap_or(h.size),
                            snapshot::format_date(s.date_sec)
                        ),
                    ));
                }
            }
            Err(e) => d.push(("snapshots".into(), format!("unreadable: {e}"))),
        }
        if let Some(s) = &self.selected {
            d.push((
                "reading snapshot".into(),
                format!("id {} name {:?}", s.id, s.name),
            ));
        }
        d
    }

    fn l2_table(&self, offset: u64) -> Result<Arc<[u8]>> {
        self.l2_cache.get_or_load(offset, || {
            let cs = self.header.cluster_size();
            let t = read_vec(self.file.as_ref(), offset, cs, cs).map_err(|e| match e {
                Error::OutOfBounds { .. } => Error::corrupt(
                    &self.name,
                    offset,
                    "qcow2 L2 table lies past the end of the file",
                ),
                e => e,
            })?;
            Ok(t.into())
        })
    }

    /// The mapping of guest byte `pos` and how many bytes from there share it.
    fn map(&self, pos: u64, current: &mut Option<(u64, Arc<[u8]>)>) -> Result<(Mapping, u64)> {
        let h = &self.header;
        let cluster = pos >> h.cluster_bits;
        let within = pos & (h.cluster_size() - 1);
        let per_l2 = l1l2::l2_entries(h);
        let l1_index = cluster / per_l2;
        let l2_index = cluster % per_l2;
        let l1_entry = usize::try_from(l1_index)
            .ok()
            .and_then(|i| self.l1.get(i).copied())
            .unwrap_or(0);
        let l2_off = l1l2::l2_offset(&self.name, h, l1_entry, l1_index)?;
        if l2_off == 0 {
            // The whole range of this L2 table is unallocated: one mapping to its end.
            let span = per_l2 << h.cluster_bits;
            return Ok((Mapping::Backing, span - (pos & (span - 1))));
        }
        let table = match current {
            Some((off, t)) if *off == l2_off => t.clone(),
            _ => {
                let t = self.l2_table(l2_off)?;
                *current = Some((l2_off, t.clone()));
                t
            }
        };
        l1l2::decode(&self.name, h, &table, l2_index, within)
    }

    fn compressed_cluster(&self, offset: u64, len: u64) -> Result<Arc<[u8]>> {
        self.cluster_cache.get_or_load(offset, || {
            let cs = self.header.cluster_size();
            // The sector-rounded length may run past the end of the file: QEMU reads zeros there.
            let avail = self.file.size().saturating_sub(offset);
            if avail == 0 {
                return Err(Error::corrupt(
                    &self.name,
                    offset,
                    "qcow2 compressed cluster lies past the end of the file",
                ));
            }
            // A compressed cluster is never larger than the cluster plus its sector rounding.
            let len = len.min(avail).min(cs + 512);
            let input = read_vec(self.file.as_ref(), offset, len, cs + 512)?;
            let mut out = vec![0u8; cs as usize];
            compressed::decompress(
                &self.name,
                offset,
                self.header.compression,
                &input,
                &mut out,
            )?;
            Ok(out.into())
        })
    }

    fn flush(&self, run: &Run, buf: &mut [u8]) -> Result<()> {
        match run.mapping {
            Mapping::Data(host) => {
                // A last cluster cut short by the end of the file reads as zeros past it (as in
                // QEMU); a cluster wholly past the end is corrupt.
                if host >= self.file.size() {
                    return Err(Error::corrupt(
                        &self.name,
                        host,
                        format!(
                            "qcow2 data cluster for guest byte {:#x} lies past the end of the file",
                            run.guest
                        ),
                    ));
                }
                read_lower(Some(&self.file), host, buf)
            }
            Mapping::Zero => {
                buf.fill(0);
                Ok(())
            }
            Mapping::Backing => read_lower(self.backing.as_ref(), run.guest, buf),
            Mapping::Compressed { offset, len } => {
                let data = self.compressed_cluster(offset, len)?;
                let within = (run.guest & (self.header.cluster_size() - 1)) as usize;
                let src = data.get(within..within + buf.len()).ok_or_else(|| {
                    Error::corrupt(&self.name, offset, "compressed cluster range")
                })?;
                buf.copy_from_slice(src);
                Ok(())
            }
        }
    }
}

/// A run of guest bytes with one contiguous mapping.
struct Run {
    guest: u64,
    mapping: Mapping,
    len: u64,
}

impl Run {
    /// Whether `next` (starting right after this run) continues it.
    fn continues(&self, next: Mapping) -> bool {
        match (self.mapping, next) {
            (Mapping::Data(a), Mapping::Data(b)) => a.checked_add(self.len) == Some(b),
            (Mapping::Zero, Mapping::Zero) | (Mapping::Backing, Mapping::Backing) => true,
            _ => false,
        }
    }
}

impl BlockSource for Qcow2Image {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_bounds(&self.name, offset, buf.len(), self.size)?;
        // First map the whole range into runs, then fill them.
        let mut current = None;
        let mut runs: Vec<Run> = Vec::new();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (mapping, avail) = self.map(pos, &mut current)?;
            let n = usize::try_from(avail)
                .unwrap_or(usize::MAX)
                .min(buf.len() - done);
            match runs.last_mut() {
                Some(r) if r.continues(mapping) => r.len += n as u64,
                _ => runs.push(Run {
                    guest: pos,
                    mapping,
                    len: n as u64,
                }),
            }
            done += n;
        }
        let compressed = runs
            .iter()
            .filter(|r| matches!(r.mapping, Mapping::Compressed { .. }))
            .count();
        if compressed < PARALLEL_MIN_COMPRESSED {
            let mut rest = &mut buf[..];
            for r in &runs {
                let (head, tail) = rest.split_at_mut(r.len as usize);
                self.flush(r, head)?;
                rest = tail;
            }
            return Ok(());
        }
        // Several compressed clusters: decompress them on the thread pool (sequential reads of
        // compressed images are otherwise bound by one core's inflate/zstd speed).
        use rayon::prelude::*;
        let mut pieces: Vec<(&Run, &mut [u8])> = Vec::with_capacity(runs.len());
        let mut rest = &mut buf[..];
        for r in &runs {
            let (head, tail) = rest.split_at_mut(r.len as usize);
            pieces.push((r, head));
            rest = tail;
        }
        pieces
            .into_par_iter()
            .try_for_each(|(r, out)| self.flush(r, out))
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// Opens the qcow2 layer at `path` (already opened as `file`) and its backing chain.
pub fn open(
    path: &Path,
    file: SharedSource,
    opts: &OpenOptions,
    state: &mut ChainState,
) -> Result<OpenedDisk> {
    let mut image = Qcow2Image::parse(file, opts.snapshot.as_deref())?;
    let mut chain = vec![ChainLink {
        path: path.display().to_string(),
        format: DiskFormat::Qcow2,
        virtual_size: image.size(),
    }];
    if let Some(named) = image.backing_file().map(str::to_string) {
        // An explicit `raw` backing format is honoured (as QEMU does); other formats are
        // detected from the backing file's magic.
        let lower = if image.header().backing_format.as_deref() == Some("raw") {
            open_lower_raw(path, &named, opts, state)?
        } else {
            open_lower(path, &named, opts, state)?
        };
        chain.extend(lower.chain);
        image.set_backing(lower.source);
    }
    Ok(OpenedDisk {
        details: image.details(),
        source: Arc::new(image),
        format: DiskFormat::Qcow2,
        chain,
    })
}

#[cfg(test)]
mod tests;
