//! The qcow2 header and its header extensions (QEMU `docs/interop/qcow2.txt`, "Header" and
//! "Header extensions"). All fields are big-endian.
//!
//! Version 2 headers are 72 bytes; version 3 adds feature bitmaps, the refcount order, the header
//! length and (from 104 bytes on) the compression type. Only what reading needs is validated
//! strictly; refcounts are never consulted (reading is refcount-free).

use crate::block::{be, read_vec, BlockSource};
use crate::disk::MAX_VIRTUAL_SIZE;
use crate::error::{Error, Result};

/// `QFI\xfb`.
pub const MAGIC: [u8; 4] = *b"QFI\xfb";
/// Smallest cluster size (`cluster_bits` 9, 512 bytes).
pub const MIN_CLUSTER_BITS: u32 = 9;
/// Largest cluster size (`cluster_bits` 21, 2 MiB), as QEMU.
pub const MAX_CLUSTER_BITS: u32 = 21;
/// Largest L1 table accepted (QEMU's `QCOW_MAX_L1_SIZE`, 32 MiB).
pub const MAX_L1_BYTES: u64 = 32 << 20;
/// Longest backing file name (QEMU refuses more than 1023 bytes).
pub const MAX_BACKING_NAME: u32 = 1023;
/// Most header extensions walked before the list is declared corrupt.
const MAX_EXTENSIONS: usize = 1024;

/// Incompatible feature bit 0: the image was not closed cleanly (refcounts may be stale;
/// irrelevant for reading).
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
/// Incompatible feature bit 1: QEMU found corruption and marked the image.
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Incompatible feature bit 2: guest data lives in an external data file.
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// Incompatible feature bit 3: the compression type field is valid.
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
/// Incompatible feature bit 4: extended L2 entries (32 subclusters per cluster).
pub const INCOMPAT_EXTL2: u64 = 1 << 4;
/// Every incompatible feature this reader understands.
pub const INCOMPAT_KNOWN: u64 =
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;

const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
const EXT_BITMAPS: u32 = 0x2385_2875;
const EXT_CRYPTO: u32 = 0x0537_be77;
const EXT_DATA_FILE: u32 = 0x4441_5441;

/// How compressed clusters are compressed (header field `compression_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Raw deflate (zlib without header), type 0.
    Zlib,
    /// Zstandard frames, type 1.
    Zstd,
}

impl Compression {
    /// Name for `info`.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Zlib => "zlib",
            Compression::Zstd => "zstd",
        }
    }
}

/// A parsed, validated qcow2 header.
#[derive(Debug, Clone)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Virtual disk size in bytes.
    pub size: u64,
    /// Entries in the active L1 table.
    pub l1_size: u32,
    /// Byte offset of the active L1 table.
    pub l1_table_offset: u64,
    /// Number of internal snapshots.
    pub nb_snapshots: u32,
    /// Byte offset of the snapshot table.
    pub snapshots_offset: u64,
    /// Incompatible feature bits.
    pub incompatible: u64,
    /// Compression of compressed clusters.
    pub compression: Compression,
    /// Backing file name, as written in the image (untrusted).
    pub backing_file: Option<String>,
    /// Backing format from the header extension (untrusted, informative).
    pub backing_format: Option<String>,
    /// Names of incompatible features from the feature name table (bit -> name).
    pub feature_names: Vec<(u8, String)>,
    /// Whether a bitmaps extension is present (ignored for reading).
    pub has_bitmaps: bool,
}

impl Header {
    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1u64 << self.cluster_bits
    }

    /// Whether L2 entries are 128-bit extended entries with subcluster bitmaps.
    pub fn extended_l2(&self) -> bool {
        self.incompatible & INCOMPAT_EXTL2 != 0
    }

    /// Reads and validates the header of `file`.
    pub fn read(file: &dyn BlockSource) -> Result<Header> {
        let name = file.name();
        let corrupt = |off: u64, d: String| Error::corrupt(name, off, format!("qcow2 header: {d}"));
        let head = read_vec(file, 0, 72.min(file.size()), 72)?;
        if head.len() < 72 || head.get(0..4) != Some(&MAGIC[..]) {
            return Err(corrupt(0, "too short or bad magic".into()));
        }
        // Offsets are constants inside the 72 bytes just checked: the reads cannot fail.
        let f32 = |at: usize| be::u32(&head, at).unwrap_or(0);
        let f64 = |at: usize| be::u64(&head, at).unwrap_or(0);
        let version = f32(4);
        if version != 2 && version != 3 {
            return Err(Error::unsupported(
                name,
                format!("qcow2 version {version} (only 2 and 3 are read)"),
            ));
        }
        let backing_file_offset = f64(8);
        let backing_file_size = f32(16);
        let cluster_bits = f32(20);
        let size = f64(24);
        let crypt_method = f32(32);
        let l1_size = f32(36);
        let l1_table_offset = f64(40);
        let nb_snapshots = f32(60);
        let snapshots_offset = f64(64);

        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(corrupt(
                20,
                format!(
                    "cluster_bits {cluster_bits} outside {MIN_CLUSTER_BITS}..={MAX_CLUSTER_BITS}"
                ),
            ));
        }
        let cluster_size = 1u64 << cluster_bits;
        if crypt_method != 0 {
            let which = match crypt_method {
                1 => "AES-CBC (qcow2 crypt_method 1)".to_string(),
                2 => "LUKS (qcow2 crypt_method 2)".to_string(),
                m => format!("qcow2 crypt_method {m}"),
            };
            return Err(Error::Encrypted {
                object: name.to_string(),
                detail: which,
            });
        }
        if size > MAX_VIRTUAL_SIZE {
            return Err(corrupt(
                24,
                format!("virtual size {size} exceeds the {MAX_VIRTUAL_SIZE}-byte limit"),
            ));
        }

        let (incompatible, header_length, compression_byte) = if version >= 3 {
            let v3 = read_vec(file, 0, 104.min(file.size()), 104)?;
            if v3.len() < 104 {
                return Err(corrupt(
                    72,
                    "version 3 header shorter than 104 bytes".into(),
                ));
            }
            let incompatible = be::u64(&v3, 72).unwrap_or(0);
            let header_length = be::u32(&v3, 100).unwrap_or(0);
            if header_length < 104 || u64::from(header_length) > cluster_size {
                return Err(corrupt(
                    100,
                    format!("header_length {header_length} outside 104..={cluster_size}"),
                ));
            }
            let compression_byte = if header_length > 104 {
                let b = read_vec(file, 104, 1, 1)?;
                b.first().copied().unwrap_or(0)
            } else {
                0
            };
            (incompatible, header_length, compression_byte)
        } else {
            (0, 72, 0)
        };

        let compression = match compression_byte {
            0 => Compression::Zlib,
            1 => Compression::Zstd,
            t => {
                return Err(Error::unsupported_compression(
                    name,
                    format!("qcow2 compression type {t}"),
                ))
            }
        };
        if compression != Compression::Zlib && incompatible & INCOMPAT_COMPRESSION == 0 {
            return Err(corrupt(
                104,
                "compression type set without the compression-type incompatible bit".into(),
            ));
        }

        let mut header = Header {
            version,
            cluster_bits,
            size,
            l1_size,
            l1_table_offset,
            nb_snapshots,
            snapshots_offset,
            incompatible,
            compression,
            backing_file: None,
            backing_format: None,
            feature_names: Vec::new(),
            has_bitmaps: false,
        };

        // Header extensions follow the header and end before the backing file name (if any)
        // and within the first cluster.
        let ext_end = if backing_file_offset != 0 {
            backing_file_offset.min(cluster_size)
        } else {
            cluster_size
        }
        .min(file.size());
        header.read_extensions(file, u64::from(header_length), ext_end)?;

        let unknown = incompatible & !INCOMPAT_KNOWN;
        if unknown != 0 {
            let names: Vec<String> = (0..64u8)
                .filter(|b| unknown & (1u64 << b) != 0)
                .map(|b| {
                    header
                        .feature_names
                        .iter()
                        .find(|(bit, _)| *bit == b)
                        .map(|(_, n)| format!("bit {b} ({n})"))
                        .unwrap_or_else(|| format!("bit {b}"))
                })
                .collect();
            return Err(Error::unsupported(
                name,
                format!("qcow2 incompatible features {}", names.join(", ")),
            ));
        }
        if incompatible & INCOMPAT_DATA_FILE != 0 {
            return Err(Error::unsupported(
                name,
                "qcow2 with an external data file (incompatible feature bit 2)",
            ));
        }

        if backing_file_offset != 0 {
            if backing_file_size == 0 || backing_file_size > MAX_BACKING_NAME {
                return Err(corrupt(
                    16,
                    format!("backing file name length {backing_file_size} outside 1..={MAX_BACKING_NAME}"),
                ));
            }
            let raw = read_vec(
                file,
                backing_file_offset,
                u64::from(backing_file_size),
                u64::from(MAX_BACKING_NAME),
            )
            .map_err(|_| {
                corrupt(
                    8,
                    format!(
                        "backing file name ({backing_file_size} bytes at {backing_file_offset:#x}) lies past the end of the file"
                    ),
                )
            })?;
            let s = String::from_utf8(raw).map_err(|_| {
                corrupt(backing_file_offset, "backing file name is not UTF-8".into())
            })?;
            header.backing_file = Some(s);
        }
        Ok(header)
    }

    fn read_extensions(&mut self, file: &dyn BlockSource, start: u64, end: u64) -> Result<()> {
        let name = file.name();
        let mut pos = start;
        for _ in 0..MAX_EXTENSIONS {
            let Some(data_start) = pos.checked_add(8).filter(|&p| p <= end) else {
                // No room for another extension header: the list just ends here.
                return Ok(());
            };
            let h = read_vec(file, pos, 8, 8)?;
            let ty = be::u32(&h, 0).unwrap_or(0);
            let len = be::u32(&h, 4).unwrap_or(0);
            if ty == EXT_END {
                return Ok(());
            }
            let data_end = data_start
                .checked_add(u64::from(len))
                .filter(|&e| e <= end)
                .ok_or_else(|| {
                    Error::corrupt(
                        name,
                        pos,
                        format!("qcow2 header extension {ty:#x} of {len} bytes runs past the header area"),
                    )
                })?;
            let data = read_vec(file, data_start, u64::from(len), end)?;
            match ty {
                EXT_BACKING_FORMAT => {
                    self.backing_format = Some(String::from_utf8_lossy(&data).into_owned());
                }
                EXT_FEATURE_TABLE => {
                    // 48-byte entries: type (0 = incompatible), bit number, 46-byte name.
                    for e in data.chunks_exact(48) {
                        if e.first() == Some(&0) {
                            let bit = e.get(1).copied().unwrap_or(0);
                            let raw = e.get(2..).unwrap_or(&[]);
                            let n = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
                            let text = String::from_utf8_lossy(raw.get(..n).unwrap_or(&[]));
                            self.feature_names.push((bit, text.into_owned()));
                        }
                    }
                }
                EXT_BITMAPS => self.has_bitmaps = true,
                EXT_CRYPTO => {
                    return Err(Error::Encrypted {
                        object: name.to_string(),
                        detail: "qcow2 full disk encryption header extension".into(),
                    })
                }
                EXT_DATA_FILE => {} // refused through the incompatible bit
                _ => {}             // unknown extensions are ignorable by the spec
            }
            // Extension data is padded to a multiple of 8 bytes.
            pos = data_end
                .checked_add(7)
                .map(|p| p & !7)
                .ok_or_else(|| Error::corrupt(name, pos, "qcow2 header extension overflow"))?;
        }
        Err(Error::corrupt(
            name,
            start,
            format!("more than {MAX_EXTENSIONS} qcow2 header extensions"),
        ))
    }
}
