//! File content: reading along a cluster chain (fatgen103 section 4).
//!
//! The chain is followed lazily, as far as reads need it, with loop detection ([`Chain`]). A
//! chain that ends before the file size is reached, loops, or runs out of the data region is a
//! [`Error::Corrupt`] naming the file and the byte offset of its directory entry or FAT entry.

use crate::error::{Error, Result};
use crate::fs::FileReader;

use super::fat_table::{self, Chain};
use super::FatVolume;

/// A reader of one file's content.
#[derive(Debug)]
pub struct FatFile<'a> {
    vol: &'a FatVolume,
    path: String,
    /// Byte offset of the file's directory entry.
    entry_offset: u64,
    size: u64,
    /// `None` for an empty file.
    chain: Option<Chain>,
}

impl<'a> FatFile<'a> {
    /// A reader for the file whose directory entry at `entry_offset` gives `first` cluster and
    /// `size` bytes.
    pub fn new(
        vol: &'a FatVolume,
        path: String,
        entry_offset: u64,
        first: u32,
        size: u32,
    ) -> Result<Self> {
        let chain = if size == 0 {
            None
        } else {
            fat_table::check_cluster(vol.src.as_ref(), &vol.bs, first, entry_offset).map_err(
                |e| {
                    Error::corrupt(
                        vol.src.name(),
                        entry_offset,
                        format!("{path}: first cluster of a {size}-byte file: {e}"),
                    )
                },
            )?;
            Some(Chain::new(first))
        };
        Ok(FatFile {
            vol,
            path,
            entry_offset,
            size: u64::from(size),
            chain,
        })
    }
}

impl FileReader for FatFile<'_> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let Some(chain) = self.chain.as_mut() else {
            return Ok(0);
        };
        let bs = &self.vol.bs;
        let src = self.vol.src.as_ref();
        let cs = u64::from(bs.cluster_size);
        let index = offset / cs;
        let within = offset % cs;
        let want_end = offset.saturating_add(buf.len() as u64).min(self.size);
        // Follow the chain as far as this read needs, so contiguous clusters are read at once.
        let want_clusters = want_end.div_ceil(cs);
        if let Err(e) = chain.extend_to(src, bs, want_clusters) {
            if chain.len() <= index {
                return Err(Error::corrupt(
                    src.name(),
                    self.entry_offset,
                    format!("{}: {e}", self.path),
                ));
            }
        }
        let Some((cluster, contiguous)) = chain.locate(index) else {
            let needed = self.size.div_ceil(cs);
            return Err(Error::corrupt(
                src.name(),
                self.entry_offset,
                format!(
                    "{}: cluster chain ends after {} clusters but the file size {} needs {needed}",
                    self.path,
                    chain.len(),
                    self.size
                ),
            ));
        };
        let avail = contiguous.saturating_mul(cs).saturating_sub(within);
        let n = (want_end - offset).min(avail);
        let n = usize::try_from(n).unwrap_or(buf.len()).min(buf.len());
        let at = bs
            .cluster_offset(cluster)
            .and_then(|o| o.checked_add(within))
            .ok_or_else(|| {
                Error::corrupt(
                    src.name(),
                    self.entry_offset,
                    format!("{}: cluster {cluster} outside the data region", self.path),
                )
            })?;
        let out = buf.get_mut(..n).unwrap_or_default();
        src.read_exact_at(at, out)?;
        Ok(n)
    }
}
