//! Reading a file's content through its extents: holes and prealloc as zeros, inline data,
//! plain disk extents read in place, compressed extents decoded whole and cached.

use super::extent::{self, ExtentBody, FileExtent, MAX_COMPRESSED};
use super::tree::TreeReader;
use crate::error::{Error, Result};
use crate::fs::FileReader;

/// Reads one file.
#[derive(Debug)]
pub struct BtrfsFileReader<'a> {
    trees: &'a TreeReader,
    object: String,
    size: u64,
    sectorsize: u32,
    extents: Vec<FileExtent>,
    /// The last decoded compressed extent: (index into `extents`, bytes).
    decoded: Option<(usize, Vec<u8>)>,
}

impl<'a> BtrfsFileReader<'a> {
    /// A reader of `size` bytes over `extents` (sorted by file offset).
    pub fn new(
        trees: &'a TreeReader,
        object: String,
        size: u64,
        sectorsize: u32,
        extents: Vec<FileExtent>,
    ) -> Result<Self> {
        if let Some(why) = extents.iter().find_map(FileExtent::unsupported) {
            return Err(if why.contains("encrypt") {
                Error::Encrypted {
                    object,
                    detail: why,
                }
            } else {
                Error::unsupported_compression(object, why)
            });
        }
        Ok(BtrfsFileReader {
            trees,
            object,
            size,
            sectorsize,
            extents,
            decoded: None,
        })
    }

    fn bad(&self, detail: String) -> Error {
        Error::corrupt(&self.object, 0, detail)
    }

    /// The decoded bytes of compressed extent `i`.
    fn decode(&mut self, i: usize) -> Result<&[u8]> {
        if self.decoded.as_ref().is_none_or(|(j, _)| *j != i) {
            let e = &self.extents[i];
            let stored = match &e.body {
                ExtentBody::Inline(d) => d.clone(),
                ExtentBody::Regular {
                    disk_bytenr,
                    disk_num_bytes,
                    ..
                } => {
                    if *disk_num_bytes > MAX_COMPRESSED {
                        return Err(self.bad(format!(
                            "compressed extent at logical {disk_bytenr:#x} claims {disk_num_bytes} bytes (limit {MAX_COMPRESSED})"
                        )));
                    }
                    let mut buf = vec![0u8; *disk_num_bytes as usize];
                    self.trees.read_logical(*disk_bytenr, &mut buf)?;
                    buf
                }
                ExtentBody::Prealloc { .. } => Vec::new(),
            };
            let out = extent::decompress(e.compression, &stored, e.ram_bytes, self.sectorsize)
                .map_err(|d| {
                    self.bad(format!(
                        "extent at file offset {} does not decode: {d}",
                        e.file_offset
                    ))
                })?;
            self.decoded = Some((i, out));
        }
        Ok(self
            .decoded
            .as_ref()
            .map(|(_, d)| d.as_slice())
            .unwrap_or(&[]))
    }

    /// Fills `buf` from file offset `pos` within extent `i` (which covers `pos`); returns
    /// the bytes written.
    fn read_in(&mut self, i: usize, pos: u64, buf: &mut [u8]) -> Result<usize> {
        let e = &self.extents[i];
        let within = pos - e.file_offset;
        let left = e.len() - within;
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let chunk = &mut buf[..n];
        match (&e.body, e.compression) {
            (ExtentBody::Prealloc { .. }, _) => chunk.fill(0),
            (ExtentBody::Regular { disk_bytenr: 0, .. }, _) => chunk.fill(0),
            (ExtentBody::Inline(d), extent::compression::NONE) => {
                let from = usize::try_from(within).unwrap_or(usize::MAX);
                let src = d.get(from..from + n).ok_or_else(|| {
                    self.bad(format!("inline extent shorter than {n} bytes at {from}"))
                })?;
                chunk.copy_from_slice(src);
            }
            (
                ExtentBody::Regular {
                    disk_bytenr,
                    offset,
                    ..
                },
                extent::compression::NONE,
            ) => {
                let at = disk_bytenr
                    .checked_add(*offset)
                    .and_then(|a| a.checked_add(within))
                    .ok_or_else(|| self.bad("extent address overflows".into()))?;
                self.trees.read_logical(at, chunk)?;
            }
            (body, _) => {
                let skip = match body {
                    ExtentBody::Regular { offset, .. } => *offset,
                    _ => 0,
                };
                let from = skip
                    .checked_add(within)
                    .and_then(|f| usize::try_from(f).ok())
                    .ok_or_else(|| self.bad("extent offset overflows".into()))?;
                let data = self.decode(i)?;
                let src = data.get(from..from + n).ok_or_else(|| {
                    Error::corrupt(
                        "btrfs extent",
                        0,
                        format!("decoded extent is shorter than offset {from} + {n}"),
                    )
                })?;
                chunk.copy_from_slice(src);
            }
        }
        Ok(n)
    }
}

impl FileReader for BtrfsFileReader<'_> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(self.size - offset)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let mut done = 0usize;
        while done < want {
            let pos = offset + done as u64;
            // The last extent starting at or before `pos`.
            let idx = self.extents.partition_point(|e| e.file_offset <= pos);
            let covering = idx.checked_sub(1).filter(|&i| {
                pos < self.extents[i]
                    .file_offset
                    .saturating_add(self.extents[i].len())
            });
            let n = match covering {
                Some(i) => self.read_in(i, pos, &mut buf[done..want])?,
                None => {
                    // A hole up to the next extent.
                    let next = self.extents.get(idx).map_or(u64::MAX, |e| e.file_offset);
                    let n = usize::try_from(next - pos)
                        .unwrap_or(usize::MAX)
                        .min(want - done);
                    buf[done..done + n].fill(0);
                    n
                }
            };
            if n == 0 {
                return Err(self.bad(format!("no progress reading at byte {pos}")));
            }
            done += n;
        }
        Ok(want)
    }
}
