//! Block sources: the one read interface shared by every layer (DESIGN.md section 1).
//!
//! A disk image, a virtual disk decoded from qcow2, a partition window and an in-memory overlay
//! are all [`BlockSource`]s: positional, `&self` reads (as vm-memory and ext4-view do), so one
//! source is shared by many threads without locks. Nothing here ever opens anything for writing.

use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// A read-only, random-access source of bytes with a fixed size.
pub trait BlockSource: Send + Sync + fmt::Debug {
    /// Size in bytes.
    fn size(&self) -> u64;

    /// Fills `buf` from `offset`. Reading past [`BlockSource::size`] is an
    /// [`Error::OutOfBounds`]; a short read never succeeds silently.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// Human-readable name used in errors (`disk.qcow2`, `disk.qcow2 partition 2`).
    fn name(&self) -> &str;

    /// The logical sector size the source reports (512 unless a block device says otherwise).
    fn logical_sector_size(&self) -> u32 {
        512
    }
}

/// A shared, thread-safe block source.
pub type SharedSource = Arc<dyn BlockSource>;

/// Checks that `len` bytes at `offset` lie within `size`, returning [`Error::OutOfBounds`] if not.
pub fn check_bounds(name: &str, offset: u64, len: usize, size: u64) -> Result<()> {
    let len = u64::try_from(len).unwrap_or(u64::MAX);
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::OutOfBounds {
            object: name.to_string(),
            offset,
            len,
            size,
        }),
    }
}

/// Reads a little-endian integer helper set from byte slices without panicking on short input.
pub mod le {
    /// `u16` at `at`, or `None` if the slice is too short.
    pub fn u16(b: &[u8], at: usize) -> Option<u16> {
        Some(u16::from_le_bytes(
            b.get(at..at.checked_add(2)?)?.try_into().ok()?,
        ))
    }
    /// `u32` at `at`, or `None` if the slice is too short.
    pub fn u32(b: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_le_bytes(
            b.get(at..at.checked_add(4)?)?.try_into().ok()?,
        ))
    }
    /// `u64` at `at`, or `None` if the slice is too short.
    pub fn u64(b: &[u8], at: usize) -> Option<u64> {
        Some(u64::from_le_bytes(
            b.get(at..at.checked_add(8)?)?.try_into().ok()?,
        ))
    }
}

/// Reads a big-endian integer helper set from byte slices without panicking on short input.
pub mod be {
    /// `u16` at `at`, or `None` if the slice is too short.
    pub fn u16(b: &[u8], at: usize) -> Option<u16> {
        Some(u16::from_be_bytes(
            b.get(at..at.checked_add(2)?)?.try_into().ok()?,
        ))
    }
    /// `u32` at `at`, or `None` if the slice is too short.
    pub fn u32(b: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_be_bytes(
            b.get(at..at.checked_add(4)?)?.try_into().ok()?,
        ))
    }
    /// `u64` at `at`, or `None` if the slice is too short.
    pub fn u64(b: &[u8], at: usize) -> Option<u64> {
        Some(u64::from_be_bytes(
            b.get(at..at.checked_add(8)?)?.try_into().ok()?,
        ))
    }
}

/// A regular file or block device, opened read-only.
#[derive(Debug)]
pub struct FileSource {
    file: File,
    size: u64,
    name: String,
    path: PathBuf,
    sector_size: u32,
}

impl FileSource {
    /// Opens `path` with `O_RDONLY` (never for writing). Block devices are sized by seeking to
    /// their end and asked for their logical sector size.
    pub fn open(path: &Path) -> Result<Self> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|e| Error::io(&name, 0, e))?;
        let meta = file.metadata().map_err(|e| Error::io(&name, 0, e))?;
        let mut sector_size = 512;
        let size = if meta.file_type().is_file() {
            meta.len()
        } else {
            use std::os::unix::fs::FileTypeExt;
            if meta.file_type().is_block_device() {
                if let Ok(s) = rustix::fs::ioctl_blksszget(&file) {
                    if s.is_power_of_two() && (512..=65536).contains(&s) {
                        sector_size = s;
                    }
                }
            }
            // Seeking to the end gives the size of block devices (what BLKGETSIZE64 returns).
            use std::io::Seek;
            let mut f = &file;
            f.seek(std::io::SeekFrom::End(0))
                .map_err(|e| Error::io(&name, 0, e))?
        };
        Ok(FileSource {
            file,
            size,
            name,
            path: path.to_path_buf(),
            sector_size,
        })
    }

    /// The path this source was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl BlockSource for FileSource {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_bounds(&self.name, offset, buf.len(), self.size)?;
        self.file.read_exact_at(buf, offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                // The file shrank under us (a snapshot being deleted, a truncated copy).
                Error::OutOfBounds {
                    object: self.name.clone(),
                    offset,
                    len: buf.len() as u64,
                    size: self.size,
                }
            } else {
                Error::io(&self.name, offset, e)
            }
        })
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn logical_sector_size(&self) -> u32 {
        self.sector_size
    }
}

/// A byte range of another source: a partition, an extent of a VMDK, a volume.
#[derive(Debug)]
pub struct Window {
    inner: SharedSource,
    start: u64,
    size: u64,
    name: String,
}

impl Window {
    /// A window of `size` bytes at `start` of `inner`. Fails if the range is not inside `inner`,
    /// naming both (a partition that runs past the end of its disk).
    pub fn new(
        inner: SharedSource,
        start: u64,
        size: u64,
        name: impl Into<String>,
    ) -> Result<Self> {
        let name = name.into();
        match start.checked_add(size) {
            Some(end) if end <= inner.size() => Ok(Window {
                inner,
                start,
                size,
                name,
            }),
            _ => Err(Error::corrupt(
                inner.name(),
                start,
                format!(
                    "{name} ({size} bytes at byte {start:#x}) runs past the end ({:#x} bytes)",
                    inner.size()
                ),
            )),
        }
    }

    /// Like [`Window::new`] but clamps the window to the end of `inner`, for salvaging a
    /// truncated partition. Returns the window and whether it was clamped.
    pub fn clamped(
        inner: SharedSource,
        start: u64,
        size: u64,
        name: impl Into<String>,
    ) -> (Self, bool) {
        let avail = inner.size().saturating_sub(start);
        let clamped = size > avail;
        let size = size.min(avail);
        let start = start.min(inner.size());
        (
            Window {
                inner,
                start,
                size,
                name: name.into(),
            },
            clamped,
        )
    }

    /// Offset of this window in its parent source.
    pub fn start(&self) -> u64 {
        self.start
    }
}

impl BlockSource for Window {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_bounds(&self.name, offset, buf.len(), self.size)?;
        // Cannot overflow: offset + len <= size and start + size <= inner size (checked in new).
        let inner_offset = self
            .start
            .checked_add(offset)
            .ok_or_else(|| Error::OutOfBounds {
                object: self.name.clone(),
                offset,
                len: buf.len() as u64,
                size: self.size,
            })?;
        self.inner.read_exact_at(inner_offset, buf)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn logical_sector_size(&self) -> u32 {
        self.inner.logical_sector_size()
    }
}

/// Bytes in memory (tests, fuzzing, small decoded structures).
#[derive(Clone)]
pub struct MemSource {
    data: Arc<[u8]>,
    name: String,
    sector_size: u32,
}

impl fmt::Debug for MemSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemSource")
            .field("name", &self.name)
            .field("size", &self.data.len())
            .finish()
    }
}

impl MemSource {
    /// Wraps `data` under `name`.
    pub fn new(data: impl Into<Arc<[u8]>>, name: impl Into<String>) -> Self {
        MemSource {
            data: data.into(),
            name: name.into(),
            sector_size: 512,
        }
    }

    /// Sets the logical sector size reported (to test 4096-byte-sector disks).
    pub fn with_sector_size(mut self, sector_size: u32) -> Self {
        self.sector_size = sector_size;
        self
    }
}

impl BlockSource for MemSource {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_bounds(&self.name, offset, buf.len(), self.size())?;
        let start = usize::try_from(offset).map_err(|_| Error::OutOfBounds {
            object: self.name.clone(),
            offset,
            len: buf.len() as u64,
            size: self.size(),
        })?;
        // In range: checked above.
        buf.copy_from_slice(&self.data[start..start + buf.len()]);
        Ok(())
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn logical_sector_size(&self) -> u32 {
        self.sector_size
    }
}

/// Reads exactly `len` bytes at `offset` into a new vector, refusing lengths above `limit`
/// (sizes read from disk are never trusted to size an allocation).
pub fn read_vec(src: &dyn BlockSource, offset: u64, len: u64, limit: u64) -> Result<Vec<u8>> {
    if len > limit {
        return Err(Error::limit(
            src.name(),
            format!("structure of {len} bytes at byte {offset:#x} exceeds the {limit}-byte limit"),
        ));
    }
    let len = usize::try_from(len)
        .map_err(|_| Error::limit(src.name(), "length does not fit in memory"))?;
    let mut v = vec![0u8; len];
    src.read_exact_at(offset, &mut v)?;
    Ok(v)
}

/// An LRU cache of aligned blocks in front of another source.
///
/// Filesystem code reads small structures (inodes, directory blocks, FAT sectors, MFT records)
/// one at a time; the cache turns those into few large reads. Sharded by block number so that
/// threads rarely contend on one lock. Large reads that cover whole blocks bypass the cache so
/// that streaming file content does not evict metadata.
#[derive(Debug)]
pub struct CachedSource {
    inner: SharedSource,
    block_size: u64,
    shards: Vec<Mutex<Shard>>,
}

#[derive(Debug, Default)]
struct Shard {
    map: std::collections::HashMap<u64, (Arc<[u8]>, u64)>,
    tick: u64,
    capacity: usize,
}

impl Shard {
    fn get(&mut self, block: u64) -> Option<Arc<[u8]>> {
        self.tick = self.tick.wrapping_add(1);
        let tick = self.tick;
        self.map.get_mut(&block).map(|(data, used)| {
            *used = tick;
            data.clone()
        })
    }

    fn put(&mut self, block: u64, data: Arc<[u8]>) {
        if self.map.len() >= self.capacity {
            // Evict the least recently used eighth in one pass: O(n) but rare.
            let mut ages: Vec<u64> = self.map.values().map(|(_, used)| *used).collect();
            ages.sort_unstable();
            let cutoff = ages.get(ages.len() / 8).copied().unwrap_or(0);
            self.map.retain(|_, (_, used)| *used > cutoff);
        }
        self.tick = self.tick.wrapping_add(1);
        self.map.insert(block, (data, self.tick));
    }
}

/// Number of cache shards (a power of two).
const CACHE_SHARDS: usize = 16;

impl CachedSource {
    /// Default cache block size: 64 KiB.
    pub const DEFAULT_BLOCK_SIZE: u64 = 64 * 1024;
    /// Default cache capacity in bytes: 64 MiB.
    pub const DEFAULT_CAPACITY: u64 = 64 * 1024 * 1024;

    /// Caches `inner` with the default block size and capacity.
    pub fn new(inner: SharedSource) -> Self {
        Self::with_params(inner, Self::DEFAULT_BLOCK_SIZE, Self::DEFAULT_CAPACITY)
    }

    /// Caches `inner` in blocks of `block_size` bytes (a power of two), up to about `capacity`
    /// bytes in all.
    pub fn with_params(inner: SharedSource, block_size: u64, capacity: u64) -> Self {
        let block_size = block_size.max(512).next_power_of_two();
        let blocks = (capacity / block_size).max(CACHE_SHARDS as u64);
        let per_shard = usize::try_from(blocks / CACHE_SHARDS as u64)
            .unwrap_or(1)
            .max(1);
        let shards = (0..CACHE_SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    capacity: per_shard,
                    ..Shard::default()
                })
            })
            .collect();
        CachedSource {
            inner,
            block_size,
            shards,
        }
    }

    fn block(&self, index: u64) -> Result<Arc<[u8]>> {
        let shard = &self.shards[(index as usize) & (CACHE_SHARDS - 1)];
        if let Some(b) = shard.lock().unwrap_or_else(|p| p.into_inner()).get(index) {
            return Ok(b);
        }
        let start = index * self.block_size;
        let len = self.block_size.min(self.inner.size() - start);
        let mut data = vec![0u8; len as usize];
        self.inner.read_exact_at(start, &mut data)?;
        let data: Arc<[u8]> = data.into();
        shard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(index, data.clone());
        Ok(data)
    }
}

impl BlockSource for CachedSource {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_bounds(self.inner.name(), offset, buf.len(), self.inner.size())?;
        // Large reads go straight through: streaming content must not flush metadata.
        if buf.len() as u64 >= self.block_size * 4 {
            return self.inner.read_exact_at(offset, buf);
        }
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let index = pos / self.block_size;
            let within = (pos % self.block_size) as usize;
            let block = self.block(index)?;
            let n = (block.len() - within).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&block[within..within + n]);
            done += n;
        }
        Ok(())
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn logical_sector_size(&self) -> u32 {
        self.inner.logical_sector_size()
    }
}

/// A `std::io::Read + Seek` cursor over a block source, for crates that read through `std::io`.
/// Its `Write` implementation always fails: nothing may write a guest disk.
#[derive(Debug, Clone)]
pub struct SourceCursor {
    src: SharedSource,
    pos: u64,
}

impl SourceCursor {
    /// A cursor at offset 0 of `src`.
    pub fn new(src: SharedSource) -> Self {
        SourceCursor { src, pos: 0 }
    }
}

impl std::io::Read for SourceCursor {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let remaining = self.src.size().saturating_sub(self.pos);
        let n = (buf.len() as u64).min(remaining) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.src
            .read_exact_at(self.pos, &mut buf[..n])
            .map_err(Error::into_io)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for SourceCursor {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        let new = match pos {
            std::io::SeekFrom::Start(p) => Some(p),
            std::io::SeekFrom::End(d) => self.src.size().checked_add_signed(d),
            std::io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before start",
            )),
        }
    }
}

impl std::io::Write for SourceCursor {
    fn write(&mut self, _buf: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "coldscan never writes guest disks",
        ))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(n: usize) -> SharedSource {
        Arc::new(MemSource::new(
            (0..n).map(|i| i as u8).collect::<Vec<u8>>(),
            "mem",
        ))
    }

    #[test]
    fn window_rejects_ranges_past_the_end() {
        let m = mem(100);
        assert!(Window::new(m.clone(), 50, 50, "w").is_ok());
        let err = Window::new(m.clone(), 50, 51, "w").unwrap_err();
        assert!(err.to_string().contains("runs past the end"), "{err}");
        assert!(Window::new(m, u64::MAX, 2, "w").is_err());
    }

    #[test]
    fn reads_past_the_end_are_errors_not_short_reads() {
        let m = mem(10);
        let mut b = [0u8; 4];
        assert!(matches!(
            m.read_exact_at(8, &mut b),
            Err(Error::OutOfBounds { offset: 8, .. })
        ));
        assert!(m.read_exact_at(u64::MAX, &mut b).is_err());
        m.read_exact_at(6, &mut b).unwrap();
        assert_eq!(b, [6, 7, 8, 9]);
    }

    #[test]
    fn cache_returns_the_same_bytes_across_block_boundaries() {
        let m = mem(300_000);
        let c = CachedSource::with_params(m.clone(), 4096, 64 * 1024);
        for (off, len) in [
            (0u64, 10usize),
            (4090, 20),
            (8191, 1),
            (299_990, 10),
            (1000, 70_000),
            (5, 4096 * 5),
        ] {
            let mut a = vec![0u8; len];
            let mut b = vec![0u8; len];
            m.read_exact_at(off, &mut a).unwrap();
            c.read_exact_at(off, &mut b).unwrap();
            assert_eq!(a, b, "offset {off} len {len}");
        }
        let mut b = [0u8; 20];
        assert!(c.read_exact_at(299_990, &mut b).is_err());
    }

    #[test]
    fn cursor_refuses_writes() {
        use std::io::Write;
        let mut c = SourceCursor::new(mem(10));
        assert!(c.write(b"x").is_err());
    }
}
