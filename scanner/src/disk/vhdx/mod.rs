//! VHDX images ([MS-VHDX] "Virtual Hard Disk v2 (VHDX) File Format", Microsoft Open
//! Specifications): fixed, dynamic and differencing disks, read-only.
//!
//! One file per on-disk structure: [`header`] (file identifier and headers, 2.2.1-2.2.2),
//! [`region`] (region table, 2.2.3), [`metadata`] (metadata table and items, 2.6), [`bat`]
//! (block allocation table, 2.4-2.5), [`log`] (2.3: a non-empty log is replayed in memory).
//! A differencing disk reads not-present blocks, and sectors whose bitmap bit is clear in
//! partially present blocks, from its parent, whose data write GUID must equal the child's
//! `parent_linkage`.

pub mod bat;
pub mod header;
pub mod log;
pub mod metadata;
pub mod region;

use std::path::Path;
use std::sync::Arc;

use crate::block::{check_bounds, read_vec, BlockSource, FileSource, SharedSource};
use crate::disk::backing::open_resolved;
use crate::disk::lru::Lru;
use crate::disk::runs::{read_mapped, Piece};
use crate::disk::vhd::dynamic_header::{windows_absolute, windows_relative};
use crate::disk::{ChainLink, ChainState, DiskFormat, OpenOptions, OpenedDisk};
use crate::error::{Error, Result};

use bat::Bat;
use header::{guid_string, Header};
use metadata::Metadata;
use region::RegionTable;

/// Cached per-block slices of sector bitmaps.
const BITMAP_CACHE_ENTRIES: usize = 256;

/// A VHDX image (one layer) as a block source of its virtual disk.
#[derive(Debug)]
pub struct VhdxImage {
    file: SharedSource,
    header: Header,
    metadata: Metadata,
    bat: Bat,
    parent: Option<SharedSource>,
    bitmaps: Lru<u64, [u8]>,
    log_note: Option<String>,
    name: String,
}

impl VhdxImage {
    /// Parses the VHDX in `file`. A differencing disk's parent is attached with
    /// [`VhdxImage::set_parent`]; until then what it would provide reads as zeros.
    pub fn parse(file: SharedSource) -> Result<VhdxImage> {
        let name = file.name().to_string();
        let header = Header::read(file.as_ref())?;
        // Headers are never logged; everything else is read through the replayed log.
        let mut log_note = None;
        let file: SharedSource = if header.log_guid != [0u8; 16] {
            let replayed = log::replay(file, &header)?;
            log_note = Some(format!(
                "replayed in memory ({} entries, head sequence {})",
                replayed.entries, replayed.head_sequence
            ));
            Arc::new(replayed)
        } else {
            file
        };
        let regions = RegionTable::read(file.as_ref())?;
        let metadata = Metadata::read(file.as_ref(), regions.metadata)?;
        let mut reserved = vec![
            (regions.bat.offset, regions.bat.length),
            (regions.metadata.offset, regions.metadata.length),
        ];
        if header.log_length > 0 {
            reserved.push((header.log_offset, u64::from(header.log_length)));
        }
        let bat = Bat::read(
            file.as_ref(),
            regions.bat,
            metadata.virtual_size,
            metadata.block_size,
            metadata.logical_sector_size,
            metadata.has_parent,
            &reserved,
        )?;
        Ok(VhdxImage {
            file,
            header,
            metadata,
            bat,
            parent: None,
            bitmaps: Lru::new(BITMAP_CACHE_ENTRIES),
            log_note,
            name,
        })
    }

    /// The metadata items.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The current header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Attaches the opened parent disk.
    pub fn set_parent(&mut self, parent: SharedSource) {
        self.parent = Some(parent);
    }

    /// Facts for `coldscan info`.
    pub fn details(&self) -> Vec<(String, String)> {
        let md = &self.metadata;
        let subformat = if md.has_parent {
            "differencing"
        } else if md.leave_blocks_allocated {
            "fixed"
        } else {
            "dynamic"
        };
        let mut d = vec![
            ("subformat".to_string(), subformat.to_string()),
            ("block size".to_string(), md.block_size.to_string()),
            (
                "logical sector size".to_string(),
                md.logical_sector_size.to_string(),
            ),
            (
                "physical sector size".to_string(),
                md.physical_sector_size.to_string(),
            ),
            (
                "allocated blocks".to_string(),
                self.bat.allocated().to_string(),
            ),
            (
                "header".to_string(),
                format!(
                    "{} (sequence {})",
                    self.header.index + 1,
                    self.header.sequence
                ),
            ),
        ];
        if let Some(n) = &self.log_note {
            d.push(("log".into(), n.clone()));
        }
        if let Some(id) = &md.disk_id {
            d.push(("virtual disk id".into(), guid_string(id)));
        }
        for (k, v) in &md.parent_locator {
            d.push((format!("parent {k}"), v.clone()));
        }
        d
    }

    /// Candidate parent paths from the parent locator, most trustworthy first.
    fn parent_candidates(&self) -> Vec<String> {
        let md = &self.metadata;
        let mut c = Vec::new();
        if let Some(r) = md.locator("relative_path") {
            c.push(windows_relative(r));
        }
        for key in ["absolute_win32_path", "volume_path"] {
            if let Some(a) = md.locator(key) {
                c.push(windows_absolute(a));
            }
        }
        c.retain(|s| !s.is_empty());
        c.dedup();
        c
    }

    fn bitmap(&self, block: u64) -> Result<Arc<[u8]>> {
        self.bitmaps.get_or_load(block, || {
            let md = &self.metadata;
            let chunk = block / self.bat.chunk_ratio;
            let (state, off) = self.bat.sector_bitmap(chunk);
            if state != bat::FULLY_PRESENT {
                return Err(Error::corrupt(
                    &self.name,
                    off,
                    format!("VHDX block {block} is partially present but its sector bitmap block is not"),
                ));
            }
            let sectors = u64::from(md.block_size / md.logical_sector_size);
            let start = (block % self.bat.chunk_ratio) * sectors / 8;
            Ok(read_vec(self.file.as_ref(), off + start, sectors / 8, sectors / 8)?.into())
        })
    }

    fn map(&self, pos: u64) -> Result<(Piece, u64)> {
        let md = &self.metadata;
        let bs = u64::from(md.block_size);
        let block = pos / bs;
        let within = pos % bs;
        let to_end = bs - within;
        let (state, off) = self.bat.payload(block);
        let differencing = md.has_parent;
        Ok(match state {
            bat::FULLY_PRESENT => (Piece::Data(off + within), to_end),
            bat::PARTIALLY_PRESENT => {
                let bitmap = self.bitmap(block)?;
                let lss = u64::from(md.logical_sector_size);
                let sector = within / lss;
                let sectors = bs / lss;
                let bit = |s: u64| {
                    let byte = bitmap.get((s / 8) as usize).copied().unwrap_or(0);
                    byte & (1 << (s % 8)) != 0
                };
                let here = bit(sector);
                let mut s = sector + 1;
                while s < sectors && bit(s) == here {
                    s += 1;
                }
                let len = s * lss - within;
                if here {
                    (Piece::Data(off + within), len)
                } else {
                    (Piece::Parent, len)
                }
            }
            bat::NOT_PRESENT | bat::UNDEFINED if differencing => (Piece::Parent, to_end),
            bat::NOT_PRESENT | bat::UNDEFINED | bat::ZERO | bat::UNMAPPED => (Piece::Zero, to_end),
            s => {
                return Err(Error::corrupt(
                    &self.name,
                    off,
                    format!("VHDX payload block {block} has reserved state {s}"),
                ))
            }
        })
    }
}

impl BlockSource for VhdxImage {
    fn size(&self) -> u64 {
        self.metadata.virtual_size
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_bounds(&self.name, offset, buf.len(), self.size())?;
        read_mapped(
            self.file.as_ref(),
            self.parent.as_ref(),
            offset,
            buf,
            |pos| self.map(pos),
        )
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn logical_sector_size(&self) -> u32 {
        self.metadata.logical_sector_size
    }
}

/// Opens the VHDX layer at `path` (already opened as `file`) and its parent chain.
pub fn open(
    path: &Path,
    file: SharedSource,
    opts: &OpenOptions,
    state: &mut ChainState,
) -> Result<OpenedDisk> {
    let mut image = VhdxImage::parse(file)?;
    let mut chain = vec![ChainLink {
        path: path.display().to_string(),
        format: DiskFormat::Vhdx,
        virtual_size: image.size(),
    }];
    if image.metadata.has_parent {
        let object = path.display().to_string();
        let linkage: Vec<String> = ["parent_linkage", "parent_linkage2"]
            .iter()
            .filter_map(|k| image.metadata.locator(k))
            .map(|v| v.trim_matches(['{', '}']).to_ascii_lowercase())
            .collect();
        if linkage.is_empty() {
            return Err(Error::corrupt(
                object,
                0,
                "VHDX differencing disk without parent_linkage",
            ));
        }
        let parent_path = crate::disk::vhd::resolve_parent(path, &image.parent_candidates(), opts)?;
        // The parent's data write GUID must be the one recorded in the child: otherwise the
        // parent changed after the child was made and the two no longer form one disk.
        let parent_file = FileSource::open(&parent_path)?;
        let parent_header = Header::read(&parent_file)?;
        let actual = guid_string(&parent_header.data_write_guid);
        if !linkage.contains(&actual) {
            return Err(Error::corrupt(
                object,
                0,
                format!(
                    "VHDX parent {} has data write GUID {actual}, the child expects {}",
                    parent_path.display(),
                    linkage.join(" or ")
                ),
            ));
        }
        let lower = open_resolved(&parent_path, opts, state)?;
        chain.extend(lower.chain);
        image.set_parent(lower.source);
    }
    Ok(OpenedDisk {
        details: image.details(),
        source: Arc::new(image),
        format: DiskFormat::Vhdx,
        chain,
    })
}

#[cfg(test)]
mod test_writer;
#[cfg(test)]
mod tests;
