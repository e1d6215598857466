//! qcow2 L1 and L2 tables (QEMU `docs/interop/qcow2.txt`, "Cluster mapping", "Extended L2
//! Entries", "Compressed Clusters Descriptor").
//!
//! A guest offset splits into an L1 index, an L2 index and an offset in the cluster. L1 entries
//! point at L2 tables (one cluster each); L2 entries (64-bit, or 128-bit with extended L2) say
//! where each cluster (or each of its 32 subclusters) lives: in the image, compressed, all zeros,
//! or unallocated (read from the backing file).

use crate::block::{be, read_vec, BlockSource};
use crate::disk::qcow2::header::{Header, MAX_L1_BYTES};
use crate::error::{Error, Result};

/// Offset bits of L1 and standard L2 entries (bits 9-55).
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// L2 entry bit 62: compressed cluster.
const L2_COMPRESSED: u64 = 1 << 62;
/// Standard L2 entry bit 0 (version 3): the cluster reads as zeros.
const L2_ZERO: u64 = 1;

/// Where a range of guest bytes lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// At this byte offset of the image file.
    Data(u64),
    /// Reads as zeros.
    Zero,
    /// Not allocated here: from the backing file (zeros without one).
    Backing,
    /// In a compressed cluster: the compressed bytes at `offset` (at most `len` bytes).
    Compressed {
        /// Host byte offset of the compressed data.
        offset: u64,
        /// Bytes of compressed data to read (sector-rounded upper bound).
        len: u64,
    },
}

/// Reads an L1 table of `entries` entries at `offset`, refusing tables past the end of the
/// file or larger than [`MAX_L1_BYTES`].
pub fn read_l1(
    file: &dyn BlockSource,
    header: &Header,
    offset: u64,
    entries: u32,
) -> Result<Vec<u64>> {
    let name = file.name();
    let bytes = u64::from(entries) * 8;
    if bytes > MAX_L1_BYTES {
        return Err(Error::limit(
            name,
            format!("qcow2 L1 table of {entries} entries exceeds {MAX_L1_BYTES} bytes"),
        ));
    }
    if offset & (header.cluster_size() - 1) != 0 {
        return Err(Error::corrupt(
            name,
            offset,
            "qcow2 L1 table offset is not cluster aligned",
        ));
    }
    match offset.checked_add(bytes) {
        Some(end) if end <= file.size() => {}
        _ => {
            return Err(Error::corrupt(
                name,
                offset,
                format!(
                    "qcow2 L1 table ({bytes} bytes at {offset:#x}) lies past the end of the file ({} bytes)",
                    file.size()
                ),
            ))
        }
    }
    let raw = read_vec(file, offset, bytes, MAX_L1_BYTES)?;
    Ok(raw
        .chunks_exact(8)
        .map(|c| be::u64(c, 0).unwrap_or(0))
        .collect())
}

/// L1 entries needed to map `size` bytes.
pub fn l1_entries_needed(header: &Header, size: u64) -> u64 {
    let per_l2 = l2_entries(header);
    let clusters = size.div_ceil(header.cluster_size());
    clusters.div_ceil(per_l2)
}

/// Entries per L2 table.
pub fn l2_entries(header: &Header) -> u64 {
    let entry = if header.extended_l2() { 16 } else { 8 };
    header.cluster_size() / entry
}

/// The L2 table offset from an L1 entry (0: not allocated), checked for alignment.
pub fn l2_offset(name: &str, header: &Header, l1_entry: u64, l1_index: u64) -> Result<u64> {
    let off = l1_entry & OFFSET_MASK;
    if off & (header.cluster_size() - 1) != 0 {
        return Err(Error::corrupt(
            name,
            off,
            format!("qcow2 L1 entry {l1_index} points at an unaligned L2 table"),
        ));
    }
    Ok(off)
}

/// Decodes the L2 entry for the guest offset whose offset within its cluster is `within`,
/// from the L2 table bytes `table`. Returns the mapping of the byte at `within` and how many
/// bytes from there on share it (to the end of the subcluster or cluster).
pub fn decode(
    name: &str,
    header: &Header,
    table: &[u8],
    l2_index: u64,
    within: u64,
) -> Result<(Mapping, u64)> {
    let cluster_size = header.cluster_size();
    let ext = header.extended_l2();
    let stride = if ext { 16 } else { 8 };
    let at = usize::try_from(l2_index * stride).unwrap_or(usize::MAX);
    let entry = be::u64(table, at)
        .ok_or_else(|| Error::corrupt(name, 0, "qcow2 L2 index outside its table"))?;
    let to_cluster_end = cluster_size - within;
    if entry & L2_COMPRESSED != 0 {
        // Compressed descriptor: x = 62 - (cluster_bits - 8) offset bits, then the number of
        // additional 512-byte sectors.
        let shift = 62 - (header.cluster_bits - 8);
        let offset = entry & ((1u64 << shift) - 1);
        let mask = (1u64 << (header.cluster_bits - 8)) - 1;
        let sectors = ((entry >> shift) & mask) + 1;
        let len = (sectors * 512).saturating_sub(offset & 511);
        return Ok((Mapping::Compressed { offset, len }, to_cluster_end));
    }
    let host = entry & OFFSET_MASK;
    if host & (cluster_size - 1) != 0 {
        return Err(Error::corrupt(
            name,
            host,
            format!("qcow2 L2 entry {l2_index} points at an unaligned cluster"),
        ));
    }
    if !ext {
        let m = if header.version >= 3 && entry & L2_ZERO != 0 {
            Mapping::Zero
        } else if host == 0 {
            Mapping::Backing
        } else {
            Mapping::Data(host + within)
        };
        return Ok((m, to_cluster_end));
    }
    // Extended L2: bits 0-31 of the bitmap say "allocated", bits 32-63 "reads as zeros", one
    // bit per subcluster.
    let bitmap = be::u64(table, at + 8).unwrap_or(0);
    let sc_bits = header.cluster_bits - 5;
    let sc = (within >> sc_bits) as u32;
    let to_sc_end = (1u64 << sc_bits) - (within & ((1u64 << sc_bits) - 1));
    let alloc = bitmap & (1u64 << sc) != 0;
    let zero = bitmap & (1u64 << (32 + sc)) != 0;
    let m = match (alloc, zero) {
        (true, true) => {
            return Err(Error::corrupt(
                name,
                host,
                format!(
                    "qcow2 extended L2 entry {l2_index}: subcluster {sc} both allocated and zero"
                ),
            ))
        }
        (true, false) if host == 0 => {
            return Err(Error::corrupt(
                name,
                0,
                format!(
                    "qcow2 extended L2 entry {l2_index}: allocated subcluster without a cluster"
                ),
            ))
        }
        (true, false) => Mapping::Data(host + within),
        (false, true) => Mapping::Zero,
        (false, false) => Mapping::Backing,
    };
    Ok((m, to_sc_end))
}
