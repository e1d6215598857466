//! VHD images (Microsoft "Virtual Hard Disk Image Format Specification", version 1.0, 2006):
//! fixed, dynamic and differencing disks, read-only.
//!
//! One file per on-disk structure: [`footer`] (hard disk footer), [`dynamic_header`] (dynamic
//! disk header with parent locators), [`bat`] (block allocation table, sector bitmaps).
//! A fixed disk is its data followed by the footer. A dynamic disk maps blocks through the BAT;
//! unallocated blocks read as zeros. A differencing disk reads unallocated blocks, and sectors
//! whose bitmap bit is clear, from its parent, whose footer unique id must match the one
//! recorded in the child.

pub mod bat;
pub mod dynamic_header;
pub mod footer;

use std::path::Path;
use std::sync::Arc;

use crate::block::{check_bounds, read_vec, BlockSource, FileSource, SharedSource};
use crate::disk::backing::{open_resolved, resolve};
use crate::disk::lru::Lru;
use crate::disk::runs::{read_mapped, Piece};
use crate::disk::{ChainLink, ChainState, DiskFormat, OpenOptions, OpenedDisk, MAX_VIRTUAL_SIZE};
use crate::error::{Error, Result};

use bat::Bat;
use dynamic_header::DynamicHeader;
use footer::{Footer, FOOTER_SIZE, TYPE_DIFFERENCING, TYPE_FIXED};

/// Cached sector bitmaps (differencing disks).
const BITMAP_CACHE_ENTRIES: usize = 256;

/// A VHD image (one layer) as a block source of its virtual disk.
#[derive(Debug)]
pub struct VhdImage {
    file: SharedSource,
    footer: Footer,
    dynamic: Option<(DynamicHeader, Bat)>,
    size: u64,
    parent: Option<SharedSource>,
    bitmaps: Lru<u64, [u8]>,
    name: String,
}

impl VhdImage {
    /// Parses the VHD in `file`. A differencing disk's parent is attached with
    /// [`VhdImage::set_parent`]; until then its unallocated sectors read as zeros.
    pub fn parse(file: SharedSource) -> Result<VhdImage> {
        let name = file.name().to_string();
        let footer = Footer::read(file.as_ref())?;
        let size = footer.virtual_size();
        if size > MAX_VIRTUAL_SIZE {
            return Err(Error::corrupt(
                &name,
                48,
                format!("VHD virtual size {size} exceeds the {MAX_VIRTUAL_SIZE}-byte limit"),
            ));
        }
        let dynamic = if footer.disk_type == TYPE_FIXED {
            let data = file.size() - FOOTER_SIZE;
            if size > data {
                return Err(Error::corrupt(
                    &name,
                    0,
                    format!("fixed VHD of {size} bytes holds only {data} bytes of data"),
                ));
            }
            None
        } else {
            let dh = DynamicHeader::read(file.as_ref(), footer.data_offset)?;
            let needed = size.div_ceil(u64::from(dh.block_size));
            if u64::from(dh.max_table_entries) < needed {
                return Err(Error::corrupt(
                    &name,
                    footer.data_offset + 28,
                    format!(
                        "VHD BAT has {} entries, {needed} needed for {size} bytes",
                        dh.max_table_entries
                    ),
                ));
            }
            let bat = Bat::read(
                file.as_ref(),
                dh.table_offset,
                dh.max_table_entries,
                dh.block_size,
            )?;
            Some((dh, bat))
        };
        Ok(VhdImage {
            file,
            footer,
            dynamic,
            size,
            parent: None,
            bitmaps: Lru::new(BITMAP_CACHE_ENTRIES),
            name,
        })
    }

    /// The footer.
    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    /// The dynamic header (dynamic and differencing disks).
    pub fn dynamic_header(&self) -> Option<&DynamicHeader> {
        self.dynamic.as_ref().map(|(d, _)| d)
    }

    /// Whether this is a differencing disk.
    pub fn is_differencing(&self) -> bool {
        self.footer.disk_type == TYPE_DIFFERENCING
    }

    /// Attaches the opened parent disk.
    pub fn set_parent(&mut self, parent: SharedSource) {
        self.parent = Some(parent);
    }

    /// Facts for `coldscan info`.
    pub fn details(&self) -> Vec<(String, String)> {
        let subformat = match self.footer.disk_type {
            2 => "fixed",
            3 => "dynamic",
            _ => "differencing",
        };
        let mut d = vec![
            ("subformat".to_string(), subformat.to_string()),
            (
                "creator".to_string(),
                String::from_utf8_lossy(&self.footer.creator_app)
                    .trim_end_matches(['\0', ' '])
                    .to_string(),
            ),
            (
                "current size field".to_string(),
                self.footer.current_size.to_string(),
            ),
        ];
        if !self.footer.checksum_ok {
            d.push(("note".into(), "footer checksum mismatch".into()));
        }
        if let Some((dh, bat)) = &self.dynamic {
            d.push(("block size".into(), dh.block_size.to_string()));
            d.push(("allocated blocks".into(), bat.allocated().to_string()));
            if !dh.checksum_ok {
                d.push(("note".into(), "dynamic header checksum mismatch".into()));
            }
            if self.is_differencing() && !dh.parent_name.is_empty() {
                d.push(("parent name".into(), dh.parent_name.clone()));
            }
        }
        d
    }

    fn bitmap(&self, block_offset: u64, bytes: u64) -> Result<Arc<[u8]>> {
        self.bitmaps.get_or_load(block_offset, || {
            Ok(read_vec(self.file.as_ref(), block_offset, bytes, bytes)?.into())
        })
    }

    fn map(&self, pos: u64) -> Result<(Piece, u64)> {
        let Some((_, bat)) = &self.dynamic else {
            return Ok((Piece::Data(pos), self.size - pos));
        };
        let bs = bat.block_size();
        let block = pos / bs;
        let within = pos % bs;
        let to_end = bs - within;
        let differencing = self.is_differencing();
        let Some(start) = bat.block_offset(block) else {
            let piece = if differencing {
                Piece::Parent
            } else {
                Piece::Zero
            };
            return Ok((piece, to_end));
        };
        let data = start + bat.bitmap_size();
        if !differencing {
            // As QEMU: the bitmap of a dynamic disk is not consulted.
            return Ok((Piece::Data(data + within), to_end));
        }
        let bitmap = self.bitmap(start, bat.bitmap_size())?;
        let sector = within / 512;
        let bit = |s: u64| {
            let byte = bitmap.get((s / 8) as usize).copied().unwrap_or(0);
            byte & (0x80 >> (s % 8)) != 0
        };
        let here = bit(sector);
        // Extend over following sectors of the block with the same bit.
        let sectors = bs / 512;
        let mut s = sector + 1;
        while s < sectors && bit(s) == here {
            s += 1;
        }
        let len = s * 512 - within;
        Ok(if here {
            (Piece::Data(data + within), len)
        } else {
            (Piece::Parent, len)
        })
    }
}

impl BlockSource for VhdImage {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_bounds(&self.name, offset, buf.len(), self.size)?;
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
}

/// Opens the VHD layer at `path` (already opened as `file`) and its parent chain.
pub fn open(
    path: &Path,
    file: SharedSource,
    opts: &OpenOptions,
    state: &mut ChainState,
) -> Result<OpenedDisk> {
    let mut image = VhdImage::parse(file)?;
    let mut chain = vec![ChainLink {
        path: path.display().to_string(),
        format: DiskFormat::Vhd,
        virtual_size: image.size(),
    }];
    if image.is_differencing() {
        let (candidates, expected) = match image.dynamic_header() {
            Some(dh) => (
                dh.parent_candidates(image.file.as_ref())?,
                dh.parent_unique_id,
            ),
            None => (Vec::new(), [0; 16]),
        };
        let parent_path = resolve_parent(path, &candidates, opts)?;
        // The parent's unique id must be the one recorded when the child was made: a replaced
        // or wrong parent would silently yield a mix of two disks.
        let parent_file = FileSource::open(&parent_path)?;
        let parent_footer = Footer::read(&parent_file)?;
        if parent_footer.unique_id != expected {
            return Err(Error::corrupt(
                path.display().to_string(),
                0,
                format!(
                    "VHD parent {} has unique id {}, the child expects {}",
                    parent_path.display(),
                    hex::encode(parent_footer.unique_id),
                    hex::encode(expected)
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
        format: DiskFormat::Vhd,
        chain,
    })
}

/// Resolves the first parent candidate the chain policy accepts and that exists. When none
/// does, a refusal (an escaping or absolute path) is reported in preference to "not found".
pub(crate) fn resolve_parent(
    path: &Path,
    candidates: &[String],
    opts: &OpenOptions,
) -> Result<std::path::PathBuf> {
    let mut first_err: Option<Error> = None;
    for c in candidates {
        match resolve(opts, path, c) {
            Ok(p) => return Ok(p),
            Err(e) => {
                let refused = matches!(e, Error::Refused { .. });
                if first_err.is_none()
                    || (refused && !matches!(first_err, Some(Error::Refused { .. })))
                {
                    first_err = Some(e);
                }
            }
        }
    }
    Err(first_err.unwrap_or_else(|| {
        Error::corrupt(
            path.display().to_string(),
            0,
            "differencing disk without a usable parent locator",
        )
    }))
}

#[cfg(test)]
mod test_writer;
#[cfg(test)]
mod tests;
