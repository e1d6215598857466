//! The persistent exception store of a classic (non-thin) LVM2 snapshot: the copy-on-write LV
//! that device-mapper's `snapshot` target writes, as the kernel's
//! `drivers/md/dm-snap-persistent.c` lays it out.
//!
//! Chunk 0 holds the header (`struct disk_header`: magic `SnAp` 0x70416e53, valid flag, version
//! 1, chunk size in 512-byte sectors). Metadata areas follow, each one chunk of
//! `struct disk_exception` pairs (old chunk of the origin, new chunk of the COW device, both
//! little-endian u64) and then the data chunks it describes: area `i` sits at chunk
//! `1 + i * (exceptions_per_area + 1)`. The table ends at the first pair whose new chunk is 0
//! (`insert_exceptions`); an area whose every slot is used continues in the next area. A header
//! of zeros is a store the kernel never activated (`new_snapshot`): no exceptions, the snapshot
//! reads as its origin. A header whose valid flag is 0 is a snapshot the kernel dropped (its store
//! overflowed, or an I/O error): its content is gone and it is reported, never read.
//!
//! The snapshot at its creation time reads as the origin with every exception's chunk taken
//! from the COW device instead. Nothing read here is trusted: chunk numbers past the origin or
//! the COW device, a new chunk pointing at the header or a metadata area, an origin chunk or a
//! COW chunk used twice, and tables larger than [`MAX_EXCEPTIONS`] are errors naming the byte
//! offset of the bad entry. Work is bounded by the COW device's size: each area is read once and
//! the areas are as many as fit in it.

use crate::block::le;
use crate::error::{Error, Result};

/// `SnAp`, little-endian (`SNAP_MAGIC`).
pub const SNAP_MAGIC: u32 = 0x7041_6e53;
/// The only on-disk version (`SNAPSHOT_DISK_VERSION`).
pub const SNAPSHOT_DISK_VERSION: u32 = 1;
/// Size of one `struct disk_exception`.
pub const EXCEPTION_BYTES: u64 = 16;
/// Largest chunk read (lvm2 allows 4 KiB to 512 KiB; the kernel any power of two): one
/// metadata area is read into memory at a time.
pub const MAX_CHUNK_BYTES: u64 = 16 << 20;
/// Most exceptions kept (16 bytes each while loading): 8 Mi exceptions are 32 GiB of changed
/// origin data with lvm2's default 4 KiB chunks.
pub const MAX_EXCEPTIONS: usize = 1 << 23;

/// A run of consecutive origin chunks stored in consecutive COW chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    old: u64,
    new: u64,
    len: u64,
}

/// The exceptions of one snapshot: which origin chunks the COW device holds, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExceptionStore {
    /// Chunk size in bytes (from the header).
    pub chunk_bytes: u64,
    /// Number of exceptions.
    pub exceptions: u64,
    /// Runs sorted by origin chunk, not overlapping.
    runs: Vec<Run>,
}

/// Where a byte range of the snapshot lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// In the origin, at the same offset, for `len` bytes.
    Origin {
        /// Bytes before the next exception (or the end of the request).
        len: u64,
    },
    /// In the COW device at byte `at`, for `len` bytes.
    Cow {
        /// Byte offset in the COW device.
        at: u64,
        /// Bytes (up to the end of the run of consecutive exceptions).
        len: u64,
    },
}

/// Reads `buf.len()` bytes at a byte offset of the COW device.
pub type CowRead<'a> = &'a dyn Fn(u64, &mut [u8]) -> Result<()>;

impl ExceptionStore {
    /// Where the snapshot's bytes from `offset` lie, for at most `want` bytes (`want > 0`).
    pub fn place(&self, offset: u64, want: u64) -> Placement {
        let chunk = offset / self.chunk_bytes;
        let in_chunk = offset % self.chunk_bytes;
        // The first run ending after `chunk`.
        let i = self.runs.partition_point(|r| r.old + r.len <= chunk);
        match self.runs.get(i) {
            Some(r) if r.old <= chunk => {
                let k = chunk - r.old;
                let left = (r.len - k) * self.chunk_bytes - in_chunk;
                Placement::Cow {
                    at: (r.new + k) * self.chunk_bytes + in_chunk,
                    len: left.min(want),
                }
            }
            Some(r) => Placement::Origin {
                len: (r.old * self.chunk_bytes - offset).min(want),
            },
            None => Placement::Origin { len: want },
        }
    }

    /// The COW chunk holding origin chunk `old`, if it has an exception.
    pub fn lookup(&self, old: u64) -> Option<u64> {
        let i = self.runs.partition_point(|r| r.old + r.len <= old);
        self.runs
            .get(i)
            .filter(|r| r.old <= old)
            .map(|r| r.new + (old - r.old))
    }
}

/// Reads the header and exception table of a COW device of `cow_size` bytes whose origin is
/// `origin_size` bytes. `object` names the COW device in errors.
pub fn read_store(
    read: CowRead,
    cow_size: u64,
    origin_size: u64,
    object: &str,
) -> Result<ExceptionStore> {
    let mut h = [0u8; 16];
    if cow_size < h.len() as u64 {
        return Err(Error::corrupt(
            object,
            0,
            format!("snapshot COW device of {cow_size} bytes has no room for its header"),
        ));
    }
    read(0, &mut h)?;
    let field = |at: usize| le::u32(&h, at).unwrap_or(0);
    let (magic, valid, version, chunk_sectors) = (field(0), field(4), field(8), field(12));
    if magic == 0 {
        // Never activated: the kernel would write a fresh header and find no exceptions.
        return Ok(ExceptionStore {
            chunk_bytes: 512,
            exceptions: 0,
            runs: Vec::new(),
        });
    }
    if magic != SNAP_MAGIC {
        return Err(Error::corrupt(
            object,
            0,
            format!("snapshot header magic {magic:#010x} is not SnAp ({SNAP_MAGIC:#010x})"),
        ));
    }
    if version != SNAPSHOT_DISK_VERSION {
        return Err(Error::unsupported(
            object,
            format!("snapshot exception store version {version} (only 1 is defined)"),
        ));
    }
    if valid == 0 {
        return Err(Error::corrupt(
            object,
            4,
            "snapshot is invalid (its header's valid flag is 0: the kernel dropped it, \
             usually because its copy-on-write space filled up); its content is lost",
        ));
    }
    let chunk_bytes = u64::from(chunk_sectors) * 512;
    if !chunk_bytes.is_power_of_two() || chunk_bytes > MAX_CHUNK_BYTES {
        return Err(Error::corrupt(
            object,
            12,
            format!(
                "snapshot chunk size of {chunk_sectors} sectors is not a power of two up to {MAX_CHUNK_BYTES} bytes"
            ),
        ));
    }
    let cow_chunks = cow_size / chunk_bytes;
    let origin_chunks = origin_size.div_ceil(chunk_bytes);
    let per_area = chunk_bytes / EXCEPTION_BYTES;
    let stride = per_area + 1;
    let mut pairs: Vec<(u64, u64, u64)> = Vec::new(); // (old, new, byte offset of the entry)
    let mut area_buf = vec![0u8; usize::try_from(chunk_bytes).unwrap_or(0)];
    // Area `i` sits at chunk 1 + i * stride: as many as fit in the device.
    let step = usize::try_from(stride).unwrap_or(usize::MAX);
    'areas: for chunk in (1..cow_chunks).step_by(step) {
        let at = chunk * chunk_bytes;
        read(at, &mut area_buf)?;
        for i in 0..per_area {
            let off = usize::try_from(i * EXCEPTION_BYTES).unwrap_or(usize::MAX);
            let old = le::u64(&area_buf, off).unwrap_or(0);
            let new = le::u64(&area_buf, off + 8).unwrap_or(0);
            if new == 0 {
                break 'areas;
            }
            let entry = at + i * EXCEPTION_BYTES;
            let bad = |what: String| {
                Error::corrupt(
                    object,
                    entry,
                    format!("snapshot exception {old} -> {new}: {what}"),
                )
            };
            if old >= origin_chunks {
                return Err(bad(format!(
                    "origin chunk past the origin's {origin_chunks} chunks"
                )));
            }
            if new >= cow_chunks {
                return Err(bad(format!(
                    "COW chunk past the COW device's {cow_chunks} chunks"
                )));
            }
            if (new - 1) % stride == 0 {
                return Err(bad(
                    "COW chunk is a metadata area (the table points into itself)".into(),
                ));
            }
            if pairs.len() >= MAX_EXCEPTIONS {
                return Err(Error::limit(
                    object,
                    format!("snapshot holds more than {MAX_EXCEPTIONS} exceptions"),
                ));
            }
            pairs.push((old, new, entry));
        }
    }
    let exceptions = pairs.len() as u64;
    // The same COW chunk for two origin chunks: a table that is not the kernel's.
    pairs.sort_by_key(|p| p.1);
    if let Some(w) = pairs.windows(2).find(|w| w[0].1 == w[1].1) {
        return Err(Error::corrupt(
            object,
            w[0].2.max(w[1].2),
            format!(
                "snapshot exceptions for origin chunks {} and {} share COW chunk {}",
                w[0].0, w[1].0, w[1].1
            ),
        ));
    }
    pairs.sort_by_key(|p| p.0);
    if let Some(w) = pairs.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(Error::corrupt(
            object,
            w[0].2.max(w[1].2),
            format!("snapshot holds two exceptions for origin chunk {}", w[1].0),
        ));
    }
    let mut runs: Vec<Run> = Vec::new();
    for (old, new, _) in pairs {
        match runs.last_mut() {
            Some(r) if r.old + r.len == old && r.new + r.len == new => r.len += 1,
            _ => runs.push(Run { old, new, len: 1 }),
        }
    }
    runs.shrink_to_fit();
    Ok(ExceptionStore {
        chunk_bytes,
        exceptions,
        runs,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A COW device as the kernel writes it: header, then areas of `(old, new)` pairs, each
    /// exception's data chunk filled with `fill(old)`. Exceptions are given in commit order;
    /// new chunks are allocated as `persistent_prepare_exception` does (skipping areas).
    pub(crate) fn cow_device(
        chunk_bytes: usize,
        chunks: usize,
        exceptions: &[u64],
        fill: impl Fn(u64) -> u8,
    ) -> Vec<u8> {
        let per_area = chunk_bytes / 16;
        let stride = per_area + 1;
        let mut dev = vec![0u8; chunk_bytes * chunks];
        dev[0..4].copy_from_slice(&SNAP_MAGIC.to_le_bytes());
        dev[4..8].copy_from_slice(&1u32.to_le_bytes());
        dev[8..12].copy_from_slice(&1u32.to_le_bytes());
        dev[12..16].copy_from_slice(&((chunk_bytes / 512) as u32).to_le_bytes());
        let mut next_free = 2usize;
        for (n, &old) in exceptions.iter().enumerate() {
            let new = next_free;
            next_free += 1;
            if next_free % stride == 1 {
                next_free += 1;
            }
            let (area, slot) = (n / per_area, n % per_area);
            let at = (1 + area * stride) * chunk_bytes + slot * 16;
            dev[at..at + 8].copy_from_slice(&old.to_le_bytes());
            dev[at + 8..at + 16].copy_from_slice(&(new as u64).to_le_bytes());
            dev[new * chunk_bytes..(new + 1) * chunk_bytes].fill(fill(old));
        }
        dev
    }

    fn load(dev: &[u8], origin: u64) -> Result<ExceptionStore> {
        let read = |off: u64, b: &mut [u8]| -> Result<()> {
            let o = usize::try_from(off).unwrap();
            b.copy_from_slice(
                dev.get(o..o + b.len())
                    .ok_or_else(|| Error::corrupt("cow", off, "eof"))?,
            );
            Ok(())
        };
        read_store(&read, dev.len() as u64, origin, "cow")
    }

    #[test]
    fn exceptions_over_several_areas_are_found() {
        // 512-byte chunks: 32 exceptions per area, so 100 exceptions fill three areas and a part.
        let olds: Vec<u64> = (0..100).map(|i| (i * 37) % 200).collect();
        let dev = cow_device(512, 120, &olds, |o| o as u8);
        let s = load(&dev, 200 * 512).unwrap();
        assert_eq!((s.chunk_bytes, s.exceptions), (512, 100));
        for &o in &olds {
            let new = s.lookup(o).unwrap();
            assert_eq!(dev[new as usize * 512], o as u8, "chunk {o}");
        }
        assert_eq!(s.lookup(1), None);
        // Placement stops at the next exception (chunk 4 = 92 * 37 mod 200; 2 and 3 have
        // none) and stays within a run.
        assert!(s.lookup(4).is_some());
        assert_eq!((s.lookup(2), s.lookup(3)), (None, None));
        assert_eq!(
            s.place(512 + 10, 10_000),
            Placement::Origin { len: 3 * 512 - 10 }
        );
        match s.place(37 * 512 + 3, 10_000) {
            Placement::Cow { at, len } => {
                assert_eq!(at, s.lookup(37).unwrap() * 512 + 3);
                assert_eq!(len, 509);
            }
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn consecutive_exceptions_form_runs() {
        let olds: Vec<u64> = (10..20).collect();
        let dev = cow_device(4096, 16, &olds, |o| o as u8);
        let s = load(&dev, 64 * 4096).unwrap();
        assert_eq!(s.runs.len(), 1);
        assert_eq!(
            s.place(10 * 4096, 1 << 20),
            Placement::Cow {
                at: 2 * 4096,
                len: 10 * 4096
            }
        );
        assert_eq!(
            s.place(20 * 4096, 1 << 20),
            Placement::Origin { len: 1 << 20 }
        );
    }

    #[test]
    fn zeroed_header_is_an_empty_store_and_bad_headers_are_errors() {
        let s = load(&[0u8; 8192], 1 << 20).unwrap();
        assert_eq!(s.exceptions, 0);
        let good = cow_device(4096, 8, &[1, 2], |_| 7);
        let mut bad = good.clone();
        bad[0] ^= 1;
        assert!(load(&bad, 1 << 20)
            .unwrap_err()
            .to_string()
            .contains("magic"));
        let mut bad = good.clone();
        bad[4] = 0;
        let e = load(&bad, 1 << 20).unwrap_err().to_string();
        assert!(e.contains("invalid") && e.contains("0x4"), "{e}");
        let mut bad = good.clone();
        bad[8] = 2;
        assert!(load(&bad, 1 << 20).is_err());
        for sectors in [0u32, 3, 1 << 20] {
            let mut bad = good.clone();
            bad[12..16].copy_from_slice(&sectors.to_le_bytes());
            assert!(load(&bad, 1 << 20).is_err(), "{sectors}");
        }
        assert!(load(&good[..8], 1 << 20).is_err());
    }

    #[test]
    fn hostile_tables_are_errors_with_offsets() {
        let good = cow_device(4096, 16, &[1, 2, 3], |_| 7);
        let entry = |dev: &mut Vec<u8>, i: usize, old: u64, new: u64| {
            let at = 4096 + i * 16;
            dev[at..at + 8].copy_from_slice(&old.to_le_bytes());
            dev[at + 8..at + 16].copy_from_slice(&new.to_le_bytes());
        };
        let cases: [(u64, u64, &str); 6] = [
            (1000, 5, "past the origin"),
            (5, 16, "past the COW"),
            (5, u64::MAX, "past the COW"),
            (5, 1, "metadata area"),
            (1, 9, "two exceptions for origin chunk 1"),
            (9, 2, "share COW chunk 2"),
        ];
        for (old, new, want) in cases {
            let mut dev = good.clone();
            entry(&mut dev, 2, old, new);
            let e = load(&dev, 256 * 4096).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("0x1020"), "{old} {new}: {e}");
        }
        // A table whose every area is full ends with the COW device (bounded work): 512-byte
        // chunks, areas at chunks 1 and 34, data in 2..=33 and 35..=66; area 2 would be chunk 67.
        let olds: Vec<u64> = (0..64).collect();
        let dev = cow_device(512, 67, &olds, |_| 1);
        assert_eq!(load(&dev, 1 << 20).unwrap().exceptions, 64);
        // More exceptions than the limit would be an error, not an allocation: the limit is
        // checked per entry (MAX_EXCEPTIONS entries need a COW device of 128 GiB and more).
    }
}
