//! Content of one data stream: resident bytes, or clusters mapped by data runs, optionally
//! LZNT1-compressed per compression unit.
//!
//! Semantics from the Linux-NTFS "NTFS Documentation" ("Concepts -> Compression", "Sparse
//! files") and libntfs-3g `compress.c` (`ntfs_compressed_attr_pread`): a compressed stream is cut
//! into compression units of `2^compression_unit` clusters (16 in practice). A unit whose
//! clusters are all allocated is stored raw; a unit that is entirely sparse reads as zeros; any
//! other unit holds LZNT1 data in its allocated leading clusters, followed by a sparse tail.
//! Bytes at or past the initialized size read as zeros.

use crate::block::BlockSource;
use crate::error::{Error, Result};
use crate::fs::FileReader;

use super::attribute::{AttrBody, Attribute, ATTR_COMPRESSION_MASK};
use super::lznt1;
use super::runlist::{self, Run};

/// Largest compression unit accepted (Windows uses 64 KiB: 16 clusters of 4 KiB).
const MAX_COMPRESSION_UNIT_BYTES: u64 = 1 << 20;
/// Largest resident value (a record is at most 64 KiB).
const MAX_RESIDENT: usize = 1 << 16;

/// Where a stream's bytes are.
#[derive(Debug, Clone)]
pub enum StreamData {
    /// Stored in the MFT record.
    Resident(Vec<u8>),
    /// Stored in clusters.
    NonResident(std::sync::Arc<NonResident>),
}

/// A non-resident stream's mapping.
#[derive(Debug, Clone)]
pub struct NonResident {
    /// Normalized runs (sorted, gapless from VCN 0, contiguous neighbours merged).
    pub runs: Vec<Run>,
    /// Logical size.
    pub data_size: u64,
    /// Bytes from this offset on read as zeros.
    pub initialized_size: u64,
    /// Compression unit size in clusters, for LZNT1-compressed streams.
    pub compression_unit: Option<u64>,
}

impl StreamData {
    /// Builds a stream from its attribute extents (one for most files, several when an
    /// attribute list splits it). The extent with lowest VCN 0 carries the sizes.
    pub fn from_extents(
        extents: &[&Attribute],
        cluster_size: u64,
        total_clusters: u64,
        object: &str,
    ) -> Result<StreamData> {
        let first = extents
            .iter()
            .find(|a| a.lowest_vcn() == 0)
            .ok_or_else(|| Error::corrupt(object, 0, "stream has no extent at VCN 0"))?;
        match &first.body {
            AttrBody::Resident { value } => {
                if value.len() > MAX_RESIDENT {
                    return Err(Error::corrupt(object, 0, "resident value too large"));
                }
                Ok(StreamData::Resident(value.clone()))
            }
            AttrBody::NonResident {
                compression_unit,
                data_size,
                initialized_size,
                ..
            } => {
                let mut runs = Vec::new();
                for a in extents {
                    if let AttrBody::NonResident {
                        lowest_vcn,
                        mapping_pairs,
                        pairs_position,
                        ..
                    } = &a.body
                    {
                        runlist::decode(
                            mapping_pairs,
                            *lowest_vcn,
                            total_clusters,
                            object,
                            *pairs_position,
                            &mut runs,
                        )?;
                    }
                }
                let runs = runlist::normalize(runs, object)?;
                let method = first.flags & ATTR_COMPRESSION_MASK;
                if method > 1 {
                    return Err(Error::unsupported_compression(
                        object,
                        format!("NTFS compression method {method}"),
                    ));
                }
                let compression_unit = if method == 1 {
                    let cu = u32::from(*compression_unit);
                    // A shift of 64 or more has no value (`checked_shl` gives None): such an
                    // exponent is refused like any unit over the limit, never read as 0 clusters.
                    let clusters = 1u64.checked_shl(cu).filter(|&c| {
                        cu != 0
                            && c.checked_mul(cluster_size)
                                .is_some_and(|b| b > 0 && b <= MAX_COMPRESSION_UNIT_BYTES)
                    });
                    let Some(clusters) = clusters else {
                        return Err(Error::unsupported_compression(
                            object,
                            format!("compression unit of 2^{cu} clusters"),
                        ));
                    };
                    Some(clusters)
                } else {
                    None
                };
                Ok(StreamData::NonResident(std::sync::Arc::new(NonResident {
                    runs,
                    data_size: *data_size,
                    initialized_size: (*initialized_size).min(*data_size),
                    compression_unit,
                })))
            }
        }
    }

    /// Logical size in bytes.
    pub fn size(&self) -> u64 {
        match self {
            StreamData::Resident(v) => v.len() as u64,
            StreamData::NonResident(n) => n.data_size,
        }
    }
}

/// Reads a stream; keeps the last decompressed compression unit.
#[derive(Debug)]
pub struct StreamReader<'v> {
    src: &'v dyn BlockSource,
    cluster_size: u64,
    object: String,
    data: StreamData,
    unit: Option<(u64, Vec<u8>)>,
}

impl<'v> StreamReader<'v> {
    /// A reader of `data` on `src`; `object` names the stream in errors.
    pub fn new(
        src: &'v dyn BlockSource,
        cluster_size: u64,
        data: StreamData,
        object: String,
    ) -> Self {
        StreamReader {
            src,
            cluster_size,
            object,
            data,
            unit: None,
        }
    }

    /// Fills `buf` from `offset`, failing if the stream ends first.
    pub fn read_exact(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let n = self.read_at(offset + done as u64, &mut buf[done..])?;
            if n == 0 {
                return Err(Error::corrupt(
                    &self.object,
                    offset + done as u64,
                    format!(
                        "stream ends at byte {} of a {}-byte read",
                        offset + done as u64,
                        buf.len()
                    ),
                ));
            }
            done += n;
        }
        Ok(())
    }

    /// Copies `buf.len()` bytes of the stream's clusters at byte `pos` (sparse runs as zeros,
    /// no decompression), one source read per contiguous run.
    fn copy_mapped(&self, runs: &[Run], pos: u64, buf: &mut [u8]) -> Result<()> {
        let cs = self.cluster_size;
        let mut done = 0usize;
        while done < buf.len() {
            let p = pos + done as u64;
            let vcn = p / cs;
            let run = runlist::find(runs, vcn)
                .and_then(|i| runs.get(i))
                .ok_or_else(|| {
                    Error::corrupt(&self.object, p, format!("no data run maps VCN {vcn}"))
                })?;
            let run_end = run.end().saturating_mul(cs);
            let take = usize::try_from(run_end - p)
                .unwrap_or(usize::MAX)
                .min(buf.len() - done);
            let out = &mut buf[done..done + take];
            match run.lcn {
                None => out.fill(0),
                Some(lcn) => {
                    let disk = lcn
                        .checked_mul(cs)
                        .and_then(|b| b.checked_add(p - run.vcn * cs))
                        .ok_or_else(|| {
                            Error::corrupt(&self.object, p, "cluster offset overflows")
                        })?;
                    self.src.read_exact_at(disk, out)?;
                }
            }
            done += take;
        }
        Ok(())
    }

    /// Decompresses compression unit `index` into `self.unit`, or says it is raw / sparse.
    fn load_unit(&mut self, nr: &NonResident, cu_clusters: u64, index: u64) -> Result<UnitKind> {
        if let Some((i, _)) = &self.unit {
            if *i == index {
                return Ok(UnitKind::Cached);
            }
        }
        let cs = self.cluster_size;
        let start = index * cu_clusters;
        let end = start + cu_clusters;
        let mut vcn = start;
        let mut allocated = 0u64;
        let mut allocated_prefix = true;
        let mut prefix_len = 0u64;
        let mapped_end = nr.runs.last().map_or(0, Run::end);
        while vcn < end {
            if vcn > start && vcn >= mapped_end {
                // The last unit may stop at the end of the mapping: its tail is unallocated,
                // like a sparse tail (libntfs-3g treats it the same way).
                break;
            }
            let run = runlist::find(&nr.runs, vcn)
                .and_then(|i| nr.runs.get(i))
                .ok_or_else(|| {
                    Error::corrupt(
                        &self.object,
                        vcn * cs,
                        format!("no data run maps VCN {vcn} of a compression unit"),
                    )
                })?;
            let n = run.end().min(end) - vcn;
            if run.lcn.is_some() {
                allocated += n;
                if allocated_prefix {
                    prefix_len += n;
                }
            } else {
                allocated_prefix = false;
            }
            vcn += n;
        }
        if allocated == cu_clusters {
            return Ok(UnitKind::Raw);
        }
        if allocated == 0 {
            return Ok(UnitKind::Zero);
        }
        let unit_bytes = usize::try_from(cu_clusters * cs)
            .map_err(|_| Error::limit(&self.object, "compression unit too large"))?;
        let mut packed = vec![
            0u8;
            usize::try_from(prefix_len * cs)
                .unwrap_or(0)
                .min(unit_bytes)
        ];
        self.copy_mapped(&nr.runs, start * cs, &mut packed)?;
        let mut plain = match self.unit.take() {
            Some((_, mut v)) if v.len() == unit_bytes => {
                v.fill(0);
                v
            }
            _ => vec![0u8; unit_bytes],
        };
        lznt1::decompress(&packed, &mut plain).map_err(|e| {
            Error::corrupt(
                &self.object,
                start * cs + e.offset as u64,
                format!("compression unit {index}: {e}"),
            )
        })?;
        self.unit = Some((index, plain));
        Ok(UnitKind::Cached)
    }
}

enum UnitKind {
    Raw,
    Zero,
    Cached,
}

impl FileReader for StreamReader<'_> {
    fn size(&self) -> u64 {
        self.data.size()
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let size = self.data.size();
        if offset >= size || buf.is_empty() {
            return Ok(0);
        }
        let n = usize::try_from(size - offset)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let buf = &mut buf[..n];
        let nr = match &self.data {
            StreamData::Resident(v) => {
                // offset < size = v.len(), so the range is in bounds.
                let start = offset as usize;
                buf.copy_from_slice(&v[start..start + n]);
                return Ok(n);
            }
            StreamData::NonResident(nr) => std::sync::Arc::clone(nr),
        };
        let init = nr.initialized_size;
        let valid = usize::try_from(init.saturating_sub(offset))
            .unwrap_or(usize::MAX)
            .min(n);
        buf[valid..].fill(0);
        let Some(cu_clusters) = nr.compression_unit else {
            self.copy_mapped(&nr.runs, offset, &mut buf[..valid])?;
            return Ok(n);
        };
        let unit_bytes = cu_clusters * self.cluster_size;
        let mut done = 0usize;
        while done < valid {
            let pos = offset + done as u64;
            let index = pos / unit_bytes;
            let within = pos % unit_bytes;
            let take = usize::try_from(unit_bytes - within)
                .unwrap_or(usize::MAX)
                .min(valid - done);
            let out = &mut buf[done..done + take];
            match self.load_unit(&nr, cu_clusters, index)? {
                UnitKind::Raw => self.copy_mapped(&nr.runs, pos, out)?,
                UnitKind::Zero => out.fill(0),
                UnitKind::Cached => {
                    let unit = self.unit.as_ref().map(|(_, v)| v.as_slice()).unwrap_or(&[]);
                    let w = within as usize;
                    let src = unit.get(w..w + take).ok_or_else(|| {
                        Error::corrupt(&self.object, pos, "compression unit size")
                    })?;
                    out.copy_from_slice(src);
                }
            }
            done += take;
        }
        Ok(n)
    }
}
