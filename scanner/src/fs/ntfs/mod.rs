//! NTFS, read natively from the MFT.
//!
//! # Why a native parser and not the `ntfs` crate
//! The `ntfs` 0.4 crate returns LZNT1-compressed content as raw compressed bytes without a word
//! (DESIGN.md section 2), knows neither EFS nor CompactOS, and walks directories through index
//! B+ trees, where one corrupt index node hides a whole subtree. A scanner wants the opposite:
//! every in-use file, found even when directory indexes are damaged, read once, fast. So this
//! module reads the MFT sequentially in large chunks, keeps the `$FILE_NAME` links of every
//! in-use base record, and rebuilds paths from the parent references; content is read through
//! the data runs, with our own LZNT1 decoder ([`lznt1`]).
//!
//! # Specifications followed
//! The Linux-NTFS project's "NTFS Documentation" (Russon, Fledel) and libntfs-3g's `layout.h`:
//! boot sector ([`boot`]), file records and fixups ([`record`]), attribute headers, `$FILE_NAME`,
//! `$ATTRIBUTE_LIST` and `$REPARSE_POINT` ([`attribute`]), data runs ([`runlist`]), compression
//! units and sparse/initialized semantics ([`stream`]), LZNT1 per MS-XCA section 2.5
//! ([`lznt1`]). Reparse tags and the WOF (CompactOS) layout from Microsoft's `ntifs.h` /
//! `[MS-FSCC]` section 2.1.2.1.
//!
//! # What is listed
//! Every name of every in-use base record from record 24 on: metafiles (records 0-23) and the
//! `$Extend` subtree (parent record 11) are recognised by record number, never by name. Hard
//! links give one entry per Win32/POSIX name (DOS 8.3 aliases are dropped), all with the same
//! [`FileId`]. Named `$DATA` streams are extra entries `path:stream` whose `FileId::stream` is
//! the 1-based position of the name in the record's sorted stream names. Symbolic links and
//! junctions are [`EntryKind::Symlink`] and not followed. In-use files whose parent chain does
//! not reach the root (parent deleted or reused, or a cycle) are listed under `/$OrphanFiles`
//! like The Sleuth Kit does, so they are still scanned; a cycle is also reported as an error.
//! EFS-encrypted streams and CompactOS / deduplicated files are listed as unreadable.

pub mod attribute;
pub mod boot;
pub mod huffman;
pub mod lznt1;
pub mod lzx;
pub mod record;
pub mod runlist;
pub mod stream;
pub mod wof;
pub mod xpress;

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::block::{read_vec, BlockSource, SharedSource};
use crate::error::{Error, Reason, Result};
use crate::fs::{
    EntryKind, FileEntry, FileId, FileReader, Filesystem, FsKind, Unreadable, WalkEvent,
};

use attribute::{
    AttrBody, Attribute, FileName, ReparsePoint, AT_ATTRIBUTE_LIST, AT_DATA, AT_FILE_NAME,
    AT_LOGGED_UTILITY_STREAM, AT_REPARSE_POINT, AT_STANDARD_INFORMATION, AT_VOLUME_NAME,
};
use boot::BootSector;
use record::{ref_record, ref_sequence, MftRecord, RecordLocation, FLAG_DIRECTORY};
use stream::{StreamData, StreamReader};

/// Record number of the root directory.
const ROOT_RECORD: u64 = 5;
/// Record number of `$Volume`.
const VOLUME_RECORD: u64 = 3;
/// Record number of `$Extend`, whose subtree holds metafiles.
const EXTEND_RECORD: u64 = 11;
/// First record that can hold a user file (0-15 system files, 16-23 reserved).
const FIRST_USER_RECORD: u64 = 24;
/// Most MFT records scanned (2^28 records of 1 KiB is a 256 GiB MFT).
const MAX_MFT_RECORDS: u64 = 1 << 28;
/// Bytes of MFT read per request during the scan.
const MFT_SCAN_CHUNK: u64 = 4 << 20;
/// Deepest directory nesting followed.
const MAX_DEPTH: usize = 1024;
/// Most extension records gathered for one file through its attribute list.
const MAX_EXTENSION_RECORDS: usize = 4096;
/// Largest attribute list read.
const MAX_ATTR_LIST_BYTES: u64 = 4 << 20;
/// Bytes of attribute-list processing allowed per walk beyond twice the MFT size.
const ATTR_LIST_BUDGET_SLACK: u64 = 64 << 20;
/// Largest reparse point value (Windows limits reparse data to 16 KiB).
const MAX_REPARSE_BYTES: u64 = 16 * 1024 + 8;
/// Directory under which files unreachable from the root are listed.
const ORPHAN_DIR: &str = "/$OrphanFiles";

/// The error for a record 0 that neither the MFT nor its mirror holds.
fn primary_with_mirror(primary: &Error) -> Error {
    match primary {
        Error::Corrupt {
            object,
            offset,
            detail,
        } => Error::corrupt(
            object.clone(),
            *offset,
            format!("{detail} (and $MFTMirr is unusable too)"),
        ),
        other => Error::corrupt(
            "NTFS volume",
            0,
            format!("{other} (and $MFTMirr is unusable too)"),
        ),
    }
}

/// Whether the first sector of `src` is an NTFS boot sector with a sane BPB.
pub fn probe(src: &dyn BlockSource) -> Result<bool> {
    if src.size() < 512 {
        return Ok(false);
    }
    let mut sector = [0u8; 512];
    src.read_exact_at(0, &mut sector)?;
    Ok(boot::has_oem_id(&sector) && BootSector::parse(&sector, src.size(), src.name()).is_ok())
}

/// An opened NTFS volume.
#[derive(Debug)]
pub struct NtfsVolume {
    src: SharedSource,
    boot: BootSector,
    /// `$MFT`'s own data stream.
    mft: StreamData,
    /// Records scanned by a walk (up to the MFT's initialized size).
    records: u64,
    label: Option<String>,
    notes: Vec<String>,
}

/// A base record with the attributes of its extension records.
#[derive(Debug)]
struct FileRecord {
    number: u64,
    sequence: u16,
    flags: u16,
    attributes: Vec<Attribute>,
}

/// What the walk keeps per in-use base record.
#[derive(Debug)]
struct Node {
    sequence: u16,
    is_dir: bool,
    names: Vec<FileName>,
    kind: EntryKind,
    size: u64,
    unreadable: Option<Unreadable>,
    /// Named data streams in [`FileId::stream`] order: name, size, unreadable.
    streams: Vec<(String, u64, Option<Unreadable>)>,
    /// For a decodable CompactOS file, its algorithm: the content is read through
    /// `WofCompressedData`, which is then not listed as a stream of its own.
    wof: Option<wof::WofAlgorithm>,
    /// A problem found while summarising the record (unreadable reparse point), reported by
    /// the walk at the file's first listed path.
    problem: Option<Error>,
}

impl NtfsVolume {
    /// Opens the NTFS volume on `src`: boot sector, `$MFT`'s own mapping, the volume label.
    pub fn open(src: SharedSource) -> Result<Self> {
        let boot = BootSector::read(src.as_ref())?;
        let name = src.name().to_string();
        let rs = boot.record_size;
        let pos = boot.mft_lcn * boot.cluster_size;
        let mut notes = Vec::new();
        let read_rec0 = |at: u64| -> Result<MftRecord> {
            let mut buf = read_vec(src.as_ref(), at, rs, rs)?;
            let loc = RecordLocation {
                volume: &name,
                number: 0,
                volume_offset: at,
            };
            MftRecord::parse(&mut buf, &loc)?
                .filter(MftRecord::in_use)
                .ok_or_else(|| Error::corrupt(&name, at, "MFT record 0 ($MFT) is not in use"))
        };
        // Record 0 is the key to everything else: fall back to its copy in $MFTMirr.
        let rec0 = match read_rec0(pos) {
            Ok(r) => r,
            Err(primary) => {
                let mirror = boot
                    .mft_mirror_lcn
                    .and_then(|l| l.checked_mul(boot.cluster_size))
                    .ok_or_else(|| Error::corrupt(&name, pos, format!("{primary}; no $MFTMirr")))?;
                let r = read_rec0(mirror).map_err(|_| primary_with_mirror(&primary))?;
                notes.push(format!("$MFT record 0 read from $MFTMirr: {primary}"));
                r
            }
        };
        let mut extents: Vec<Attribute> = rec0
            .attributes
            .iter()
            .filter(|a| a.type_code == AT_DATA && a.name.is_empty())
            .cloned()
            .collect();
        let build = |ext: &[Attribute]| {
            let refs: Vec<&Attribute> = ext.iter().collect();
            StreamData::from_extents(
                &refs,
                boot.cluster_size,
                boot.total_clusters,
                &format!("{name} $MFT"),
            )
        };
        let mut mft = build(&extents)?;
        // A very fragmented $MFT keeps further $DATA extents in extension records, located
        // through record 0's attribute list: fetch them with the mapping known so far.
        let mut vol = NtfsVolume {
            src: src.clone(),
            boot,
            mft: mft.clone(),
            records: 0,
            label: None,
            notes: Vec::new(),
        };
        if let Some(list) = rec0
            .attributes
            .iter()
            .find(|a| a.type_code == AT_ATTRIBUTE_LIST)
        {
            let value = vol.attribute_value(list, MAX_ATTR_LIST_BYTES, "$MFT attribute list")?;
            let (entries, bad) = attribute::parse_attribute_list(&value);
            if let Some(at) = bad {
                notes.push(format!("$MFT attribute list malformed at byte {at}"));
            }
            let mut wanted: Vec<u64> = entries
                .iter()
                .filter(|e| e.type_code == AT_DATA && e.record != 0)
                .map(|e| e.record)
                .collect();
            wanted.sort_unstable();
            wanted.dedup();
            wanted.truncate(MAX_EXTENSION_RECORDS);
            for n in wanted {
                match vol.read_record(n) {
                    Ok(Some(r)) if r.in_use() && r.is_extension() && r.base == 0 => {
                        extents.extend(
                            r.attributes
                                .into_iter()
                                .filter(|a| a.type_code == AT_DATA && a.name.is_empty()),
                        );
                        if let Ok(m) = build(&extents) {
                            mft = m;
                            vol.mft = mft.clone();
                        }
                    }
                    Ok(_) => notes.push(format!(
                        "$MFT extension record {n} is not an in-use extension of record 0"
                    )),
                    Err(e) => notes.push(format!("$MFT extension record {n}: {e}")),
                }
            }
        }
        let mft_bytes = match &mft {
            StreamData::Resident(v) => v.len() as u64,
            StreamData::NonResident(nr) => nr.initialized_size.min(nr.data_size),
        };
        let mut records = mft_bytes / rs;
        // The MFT cannot hold more records than the volume has room for: a hostile size
        // (with sparse or unreadable runs) must not make the scan loop over terabytes.
        let room = src.size() / rs;
        if records > room {
            notes.push(format!(
                "$MFT claims {records} records but the volume holds at most {room}"
            ));
            records = room;
        }
        if records > MAX_MFT_RECORDS {
            notes.push(format!(
                "$MFT has {records} records; only the first {MAX_MFT_RECORDS} are scanned"
            ));
            records = MAX_MFT_RECORDS;
        }
        vol.records = records;
        vol.label = match vol.load(VOLUME_RECORD) {
            Ok(f) => f
                .attributes
                .iter()
                .find(|a| a.type_code == AT_VOLUME_NAME)
                .and_then(Attribute::resident_value)
                .map(attribute::utf16_name)
                .filter(|s| !s.is_empty()),
            Err(e) => {
                notes.push(format!("volume label unreadable: {e}"));
                None
            }
        };
        vol.notes = notes;
        Ok(vol)
    }

    fn object(&self) -> &str {
        self.src.name()
    }

    /// Volume byte offset where record `n` starts (for error messages; 0 if unmapped).
    fn record_offset(&self, n: u64) -> u64 {
        let cs = self.boot.cluster_size;
        let byte = n.saturating_mul(self.boot.record_size);
        match &self.mft {
            StreamData::NonResident(nr) => runlist::find(&nr.runs, byte / cs)
                .and_then(|i| nr.runs.get(i))
                .and_then(|r| {
                    r.lcn?
                        .checked_mul(cs)?
                        .checked_add(byte - r.vcn.checked_mul(cs)?)
                })
                .unwrap_or(0),
            StreamData::Resident(_) => 0,
        }
    }

    fn mft_reader(&self) -> StreamReader<'_> {
        StreamReader::new(
            self.src.as_ref(),
            self.boot.cluster_size,
            self.mft.clone(),
            format!("{} $MFT", self.object()),
        )
    }

    /// Reads and parses record `n`.
    fn read_record(&self, n: u64) -> Result<Option<MftRecord>> {
        let rs = self.boot.record_size as usize;
        let mut buf = vec![0u8; rs];
        let at = n
            .checked_mul(self.boot.record_size)
            .ok_or_else(|| Error::corrupt(self.object(), 0, format!("MFT record number {n}")))?;
        self.mft_reader().read_exact(at, &mut buf)?;
        let loc = RecordLocation {
            volume: self.object(),
            number: n,
            volume_offset: self.record_offset(n),
        };
        MftRecord::parse(&mut buf, &loc)
    }

    /// Reads an attribute's whole value (resident or not), up to `limit` bytes.
    fn attribute_value(&self, a: &Attribute, limit: u64, what: &str) -> Result<Vec<u8>> {
        if let Some(v) = a.resident_value() {
            return Ok(v.to_vec());
        }
        let object = format!("{} {what}", self.object());
        let data = StreamData::from_extents(
            &[a],
            self.boot.cluster_size,
            self.boot.total_clusters,
            &object,
        )?;
        let size = data.size();
        if size > limit {
            return Err(Error::limit(
                &object,
                format!("{size} bytes exceed the {limit}-byte limit"),
            ));
        }
        let mut v = vec![0u8; size as usize];
        StreamReader::new(self.src.as_ref(), self.boot.cluster_size, data, object)
            .read_exact(0, &mut v)?;
        Ok(v)
    }

    /// Loads base record `n` with its extension records.
    fn load(&self, n: u64) -> Result<FileRecord> {
        let rec = self
            .read_record(n)?
            .filter(|r| r.in_use() && !r.is_extension())
            .ok_or_else(|| {
                Error::corrupt(
                    self.object(),
                    self.record_offset(n),
                    format!("MFT record {n} is not an in-use base record"),
                )
            })?;
        let mut unlimited = u64::MAX;
        self.complete(rec, &mut unlimited)
    }

    /// Adds the attributes of the extension records named by `rec`'s attribute list. Every
    /// byte read for that (lists and extension records) is taken from `budget`, so a hostile MFT
    /// whose every record names thousands of extension records cannot make a walk quadratic.
    fn complete(&self, rec: MftRecord, budget: &mut u64) -> Result<FileRecord> {
        let mut file = FileRecord {
            number: rec.number,
            sequence: rec.sequence,
            flags: rec.flags,
            attributes: rec.attributes,
        };
        let Some(list) = file
            .attributes
            .iter()
            .find(|a| a.type_code == AT_ATTRIBUTE_LIST)
        else {
            return Ok(file);
        };
        let what = format!("MFT record {} attribute list", file.number);
        let value = self.attribute_value(list, MAX_ATTR_LIST_BYTES, &what)?;
        let exhausted = |object: &str| {
            Error::limit(
                object,
                format!("{what}: attribute list read budget of this walk exhausted"),
            )
        };
        *budget = budget
            .checked_sub(value.len() as u64)
            .ok_or_else(|| exhausted(self.object()))?;
        let (entries, bad) = attribute::parse_attribute_list(&value);
        if let Some(at) = bad {
            return Err(Error::corrupt(
                self.object(),
                self.record_offset(file.number),
                format!("{what}: malformed entry at list byte {at}"),
            ));
        }
        let mut others: Vec<u64> = entries
            .iter()
            .map(|e| e.record)
            .filter(|&r| r != file.number)
            .collect();
        others.sort_unstable();
        others.dedup();
        if others.len() > MAX_EXTENSION_RECORDS {
            return Err(Error::limit(
                self.object(),
                format!(
                    "{what}: {} extension records (limit {MAX_EXTENSION_RECORDS})",
                    others.len()
                ),
            ));
        }
        for n in others {
            *budget = budget
                .checked_sub(self.boot.record_size)
                .ok_or_else(|| exhausted(self.object()))?;
            let ext = self.read_record(n)?;
            match ext {
                Some(r) if r.in_use() && r.is_extension() && r.base == file.number => {
                    file.attributes.extend(r.attributes)
                }
                _ => {
                    return Err(Error::corrupt(
                        self.object(),
                        self.record_offset(n),
                        format!(
                            "{what}: extension record {n} does not belong to record {}",
                            file.number
                        ),
                    ))
                }
            }
        }
        Ok(file)
    }

    /// The data streams of a file: the unnamed one (key "") and the named ones, sorted by name;
    /// each with its extents.
    fn data_streams(file: &FileRecord) -> BTreeMap<&str, Vec<&Attribute>> {
        let mut m: BTreeMap<&str, Vec<&Attribute>> = BTreeMap::new();
        for a in file.attributes.iter().filter(|a| a.type_code == AT_DATA) {
            m.entry(a.name.as_str()).or_default().push(a);
        }
        m
    }

    /// The file's reparse point, `None` if it has none. Its value is usually resident but is
    /// non-resident for long link targets (libntfs-3g moves values of a few hundred bytes out),
    /// and a non-resident value may be split into extents held by extension records: all
    /// extents of the unnamed `$REPARSE_POINT` are mapped together, like a `$DATA` stream.
    /// Unreadable or malformed values are errors, never "no reparse point": the caller must
    /// not classify such a file silently as a plain file.
    fn reparse_point(&self, file: &FileRecord) -> Result<Option<ReparsePoint>> {
        let extents: Vec<&Attribute> = file
            .attributes
            .iter()
            .filter(|a| a.type_code == AT_REPARSE_POINT && a.name.is_empty())
            .collect();
        if extents.is_empty() {
            return Ok(None);
        }
        let object = format!("{} MFT record {} reparse point", self.object(), file.number);
        let at = self.record_offset(file.number);
        let data = StreamData::from_extents(
            &extents,
            self.boot.cluster_size,
            self.boot.total_clusters,
            &object,
        )?;
        let size = data.size();
        if size > MAX_REPARSE_BYTES {
            return Err(Error::limit(
                &object,
                format!("{size} bytes exceed the {MAX_REPARSE_BYTES}-byte reparse point limit"),
            ));
        }
        let value = match data {
            StreamData::Resident(v) => v,
            nr @ StreamData::NonResident(_) => {
                // Bounded by MAX_REPARSE_BYTES just above.
                let mut v = vec![0u8; size as usize];
                StreamReader::new(
                    self.src.as_ref(),
                    self.boot.cluster_size,
                    nr,
                    object.clone(),
                )
                .read_exact(0, &mut v)?;
                v
            }
        };
        ReparsePoint::parse(&value).map(Some).ok_or_else(|| {
            Error::corrupt(
                &object,
                at,
                format!("reparse point value of {size} bytes is shorter than its 8-byte header"),
            )
        })
    }

    /// The target of a symlink or junction reparse point, or an error naming what is wrong.
    fn link_target(&self, file: &FileRecord) -> Result<String> {
        let object = format!("{} MFT record {} reparse point", self.object(), file.number);
        let at = self.record_offset(file.number);
        let rp = self
            .reparse_point(file)?
            .ok_or_else(|| Error::corrupt(&object, at, "symbolic link without a reparse point"))?;
        rp.link_target().ok_or_else(|| {
            Error::corrupt(
                &object,
                at,
                format!(
                    "reparse tag {:#010x}: link target outside the {}-byte reparse data",
                    rp.tag,
                    rp.data.len()
                ),
            )
        })
    }

    /// Summarises a file for the walk.
    fn describe(&self, file: &FileRecord) -> Node {
        let names: Vec<FileName> = file
            .attributes
            .iter()
            .filter(|a| a.type_code == AT_FILE_NAME)
            .filter_map(Attribute::resident_value)
            .filter_map(FileName::parse)
            .collect();
        let std_flags = file
            .attributes
            .iter()
            .find(|a| a.type_code == AT_STANDARD_INFORMATION)
            .and_then(Attribute::resident_value)
            .and_then(|v| crate::block::le::u32(v, 0x20))
            .unwrap_or(0);
        let streams = Self::data_streams(file);
        let encrypted = std_flags & attribute::FILE_ATTR_ENCRYPTED != 0
            || streams
                .values()
                .flatten()
                .any(|a| a.flags & attribute::ATTR_ENCRYPTED != 0)
            || file
                .attributes
                .iter()
                .any(|a| a.type_code == AT_LOGGED_UTILITY_STREAM && a.name == "$EFS");
        let stream_unreadable = |extents: &[&Attribute]| -> Option<Unreadable> {
            if encrypted {
                return Some(Unreadable {
                    reason: Reason::Encrypted,
                    detail: "EFS".into(),
                });
            }
            let first = extents.iter().find(|a| a.lowest_vcn() == 0)?;
            let method = first.flags & attribute::ATTR_COMPRESSION_MASK;
            if matches!(first.body, AttrBody::NonResident { .. }) && method > 1 {
                return Some(Unreadable {
                    reason: Reason::UnsupportedCompression,
                    detail: format!("NTFS compression method {method}"),
                });
            }
            None
        };
        let stream_size = |extents: &[&Attribute]| -> u64 {
            extents
                .iter()
                .find(|a| a.lowest_vcn() == 0)
                .map(|a| match &a.body {
                    AttrBody::Resident { value } => value.len() as u64,
                    AttrBody::NonResident { data_size, .. } => *data_size,
                })
                .unwrap_or(0)
        };
        let is_dir = file.flags & FLAG_DIRECTORY != 0;
        // An unreadable reparse point leaves the kind unknown: the file is listed by its
        // record flags (so its streams are still scanned) and the walk reports the error.
        let mut problem = None;
        let reparse = self.reparse_point(file).unwrap_or_else(|e| {
            problem = Some(e);
            None
        });
        let mut kind = if is_dir {
            EntryKind::Dir
        } else {
            EntryKind::File
        };
        let mut size = if is_dir {
            0
        } else {
            streams.get("").map(|e| stream_size(e)).unwrap_or(0)
        };
        let mut unreadable = if is_dir {
            None
        } else {
            streams.get("").and_then(|e| stream_unreadable(e))
        };
        let mut wof_algorithm = None;
        if let Some(rp) = &reparse {
            match rp.tag {
                attribute::IO_REPARSE_TAG_SYMLINK
                | attribute::IO_REPARSE_TAG_MOUNT_POINT
                | attribute::IO_REPARSE_TAG_LX_SYMLINK => {
                    kind = EntryKind::Symlink;
                    // Size convention: the target's length in bytes (UTF-8), as `open` gives it.
                    size = match rp.link_target() {
                        Some(t) => t.len() as u64,
                        None => {
                            problem = self.link_target(file).err();
                            0
                        }
                    };
                    unreadable = None;
                }
                attribute::IO_REPARSE_TAG_WOF if !is_dir => {
                    wof_algorithm = wof::WofAlgorithm::from_reparse_data(&rp.data)
                        .filter(|_| streams.contains_key(wof::WOF_STREAM));
                    if wof_algorithm.is_none() {
                        unreadable = Some(Unreadable {
                            reason: Reason::UnsupportedCompression,
                            detail: rp.wof_algorithm(),
                        });
                    }
                }
                attribute::IO_REPARSE_TAG_DEDUP if !is_dir => {
                    unreadable = Some(Unreadable {
                        reason: Reason::UnsupportedCompression,
                        detail: "Windows Data Deduplication (content in the chunk store)".into(),
                    });
                }
                t if attribute::IO_REPARSE_TAGS_LX_SPECIAL.contains(&t) && !is_dir => {
                    kind = EntryKind::Other;
                    size = 0;
                    unreadable = None;
                }
                _ => {}
            }
        }
        let named = listed_streams(&streams, wof_algorithm)
            .map(|(n, e)| (n.to_string(), stream_size(e), stream_unreadable(e)))
            .collect();
        Node {
            sequence: file.sequence,
            is_dir,
            names,
            kind,
            size,
            unreadable,
            streams: named,
            wof: wof_algorithm,
            problem,
        }
    }

    /// Reads every MFT record once, in large sequential chunks, and summarises the in-use base
    /// records. Records that cannot be parsed are reported through `visit` and skipped.
    fn scan(&self, visit: &mut dyn FnMut(WalkEvent)) -> HashMap<u64, Node> {
        let rs = self.boot.record_size;
        let per_chunk = (MFT_SCAN_CHUNK / rs).max(1);
        let mut nodes = HashMap::new();
        let mut reader = self.mft_reader();
        let mut buf = Vec::new();
        let mut first = 0u64;
        // Legitimately each extension record belongs to one base record, and attribute lists
        // are small: the whole MFT twice plus some slack covers every real volume.
        let mut budget = self
            .records
            .saturating_mul(rs)
            .saturating_mul(2)
            .saturating_add(ATTR_LIST_BUDGET_SLACK);
        while first < self.records {
            let count = per_chunk.min(self.records - first);
            buf.resize((count * rs) as usize, 0);
            if reader.read_exact(first * rs, &mut buf).is_ok() {
                for (i, raw) in buf.chunks_exact_mut(rs as usize).enumerate() {
                    self.scan_record(first + i as u64, raw, &mut budget, &mut nodes, visit);
                }
            } else {
                // Part of the chunk is unreadable (bad run, I/O error): fall back to single
                // records so that one bad cluster costs only the records in it, and report
                // each unreadable stretch once.
                let mut failed: Option<(u64, u64, Error)> = None;
                for n in first..first + count {
                    let raw = &mut buf[..rs as usize];
                    match reader.read_exact(n * rs, raw) {
                        Ok(()) => {
                            if let Some((a, b, error)) = failed.take() {
                                visit(WalkEvent::Error {
                                    path: format!("$MFT records {a}-{b}"),
                                    error,
                                });
                            }
                            self.scan_record(n, raw, &mut budget, &mut nodes, visit);
                        }
                        Err(e) => match &mut failed {
                            Some((_, b, _)) => *b = n,
                            None => failed = Some((n, n, e)),
                        },
                    }
                }
                if let Some((a, b, error)) = failed {
                    visit(WalkEvent::Error {
                        path: format!("$MFT records {a}-{b}"),
                        error,
                    });
                }
            }
            first += count;
        }
        nodes
    }

    /// Parses one raw record of the scan and summarises it into `nodes` if it is an in-use
    /// base record; problems go to `visit`.
    fn scan_record(
        &self,
        n: u64,
        raw: &mut [u8],
        budget: &mut u64,
        nodes: &mut HashMap<u64, Node>,
        visit: &mut dyn FnMut(WalkEvent),
    ) {
        let loc = RecordLocation {
            volume: self.object(),
            number: n,
            volume_offset: self.record_offset(n),
        };
        let rec = match MftRecord::parse(raw, &loc) {
            Ok(Some(r)) if r.in_use() && !r.is_extension() => r,
            Ok(_) => return,
            Err(error) => {
                visit(WalkEvent::Error {
                    path: format!("$MFT record {n}"),
                    error,
                });
                return;
            }
        };
        match self.complete(rec, budget) {
            Ok(file) => {
                nodes.insert(n, self.describe(&file));
            }
            Err(error) => visit(WalkEvent::Error {
                path: format!("$MFT record {n}"),
                error,
            }),
        }
    }
}

/// The named streams listed for a file, in [`FileId::stream`] order: a CompactOS file's
/// `WofCompressedData` is its content, not a stream of its own.
fn listed_streams<'s, 'a>(
    streams: &'s BTreeMap<&'a str, Vec<&'a Attribute>>,
    wof: Option<wof::WofAlgorithm>,
) -> impl Iterator<Item = (&'s &'a str, &'s Vec<&'a Attribute>)> {
    streams
        .iter()
        .filter(move |(n, _)| !n.is_empty() && (wof.is_none() || **n != wof::WOF_STREAM))
}

/// The names a record is listed under: DOS-only 8.3 aliases are dropped when the same parent
/// has a long name for it; duplicates are dropped.
fn link_names(node: &Node) -> Vec<(u64, u16, &str)> {
    let mut out: Vec<(u64, u16, &str)> = Vec::new();
    for f in &node.names {
        if f.namespace == attribute::NAMESPACE_DOS
            && node
                .names
                .iter()
                .any(|o| o.namespace != attribute::NAMESPACE_DOS && o.parent == f.parent)
        {
            continue;
        }
        let link = (
            ref_record(f.parent),
            ref_sequence(f.parent),
            f.name.as_str(),
        );
        if !out.contains(&link) {
            out.push(link);
        }
    }
    out
}

/// State of one walk's tree reconstruction.
struct Tree<'a> {
    nodes: &'a HashMap<u64, Node>,
    children: HashMap<u64, Vec<(&'a str, u64)>>,
    listed: HashSet<u64>,
    expanded: HashSet<u64>,
    /// [`Node::problem`]s not reported yet, by record number.
    problems: HashMap<u64, Error>,
}

impl Tree<'_> {
    /// Lists record `number` (and its named streams) under `path`; a problem found in the
    /// record is reported right after its first listing.
    fn emit(&mut self, number: u64, path: &str, visit: &mut dyn FnMut(WalkEvent)) {
        let Some(node) = self.nodes.get(&number) else {
            return;
        };
        visit(WalkEvent::Entry(FileEntry {
            path: path.to_string(),
            stream: None,
            kind: node.kind,
            size: node.size,
            id: FileId {
                node: number,
                stream: 0,
            },
            unreadable: node.unreadable.clone(),
        }));
        for (i, (name, size, unreadable)) in node.streams.iter().enumerate() {
            visit(WalkEvent::Entry(FileEntry {
                path: format!("{path}:{name}"),
                stream: Some(name.clone()),
                kind: EntryKind::File,
                size: *size,
                id: FileId {
                    node: number,
                    stream: u32::try_from(i + 1).unwrap_or(u32::MAX),
                },
                unreadable: unreadable.clone(),
            }));
        }
        if let Some(error) = self.problems.remove(&number) {
            visit(WalkEvent::Error {
                path: path.to_string(),
                error,
            });
        }
    }

    /// Lists the subtree under directory `start` (whose path is `prefix`) depth-first, with an
    /// explicit stack; every directory is expanded once, so cycles and directory hard links
    /// cannot loop. With `silent`, entries are only marked as seen (the `$Extend` subtree).
    fn descend(
        &mut self,
        start: u64,
        prefix: String,
        silent: bool,
        visit: &mut dyn FnMut(WalkEvent),
    ) {
        if !self.expanded.insert(start) {
            return;
        }
        let mut stack: Vec<(u64, String, usize)> = vec![(start, prefix, 0)];
        while let Some((dir, dir_path, idx)) = stack.last_mut() {
            let Some(&(name, child)) = self.children.get(dir).and_then(|c| c.get(*idx)) else {
                stack.pop();
                continue;
            };
            *idx += 1;
            if child < FIRST_USER_RECORD {
                continue;
            }
            let path = format!("{dir_path}/{name}");
            self.listed.insert(child);
            if !silent {
                self.emit(child, &path, visit);
            }
            let is_dir = self.nodes.get(&child).is_some_and(|n| n.is_dir);
            if !is_dir {
                continue;
            }
            if stack.len() >= MAX_DEPTH {
                if !silent {
                    visit(WalkEvent::Error {
                        path: path.clone(),
                        error: Error::limit(
                            path,
                            format!("directory nesting deeper than {MAX_DEPTH}"),
                        ),
                    });
                }
                continue;
            }
            if self.expanded.insert(child) {
                stack.push((child, path, 0));
            }
        }
    }
}

impl Filesystem for NtfsVolume {
    fn kind(&self) -> FsKind {
        FsKind::Ntfs
    }

    fn label(&self) -> Option<String> {
        self.label.clone()
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    fn walk(&self, visit: &mut dyn FnMut(WalkEvent)) -> Result<()> {
        let mut nodes = self.scan(visit);
        let problems = nodes
            .iter_mut()
            .filter_map(|(&n, node)| node.problem.take().map(|e| (n, e)))
            .collect();
        if !nodes.get(&ROOT_RECORD).is_some_and(|n| n.is_dir) {
            return Err(Error::corrupt(
                self.object(),
                self.record_offset(ROOT_RECORD),
                "MFT record 5 (root directory) is not an in-use directory",
            ));
        }
        let mut tree = Tree {
            nodes: &nodes,
            children: HashMap::new(),
            listed: HashSet::new(),
            expanded: HashSet::new(),
            problems,
        };
        let mut orphans: Vec<(u64, &str)> = Vec::new();
        for (&number, node) in &nodes {
            if number < FIRST_USER_RECORD {
                continue;
            }
            for (parent, seq, name) in link_names(node) {
                let valid = (parent >= FIRST_USER_RECORD
                    || parent == ROOT_RECORD
                    || parent == EXTEND_RECORD)
                    && nodes
                        .get(&parent)
                        .is_some_and(|p| p.is_dir && (seq == 0 || seq == p.sequence));
                if valid {
                    tree.children
                        .entry(parent)
                        .or_default()
                        .push((name, number));
                } else {
                    orphans.push((number, name));
                }
            }
        }
        for c in tree.children.values_mut() {
            c.sort_unstable();
        }
        tree.descend(EXTEND_RECORD, String::new(), true, visit);
        tree.descend(ROOT_RECORD, String::new(), false, visit);
        // Files whose parent is gone, then whatever hangs in parent cycles.
        orphans.sort_unstable();
        let mut rest: Vec<u64> = nodes
            .keys()
            .copied()
            .filter(|&n| n >= FIRST_USER_RECORD)
            .collect();
        rest.sort_unstable();
        let mut roots: Vec<(u64, String, bool)> = orphans
            .iter()
            .map(|&(n, name)| (n, name.to_string(), false))
            .collect();
        roots.extend(rest.into_iter().map(|n| {
            let name = nodes
                .get(&n)
                .and_then(|node| link_names(node).first().map(|l| l.2.to_string()))
                .unwrap_or_else(|| format!("OrphanFile-{n}"));
            (n, name, true)
        }));
        for (n, name, unreachable) in roots {
            if tree.listed.contains(&n) {
                continue;
            }
            let path = format!("{ORPHAN_DIR}/{name}");
            if unreachable {
                visit(WalkEvent::Error {
                    path: path.clone(),
                    error: Error::corrupt(
                        self.object(),
                        self.record_offset(n),
                        format!("MFT record {n}: its parent chain does not reach the root directory (cycle); listed under {ORPHAN_DIR}"),
                    ),
                });
            }
            tree.listed.insert(n);
            tree.emit(n, &path, visit);
            if nodes.get(&n).is_some_and(|node| node.is_dir) {
                tree.descend(n, path, false, visit);
            }
        }
        Ok(())
    }

    fn open(&self, entry: &FileEntry) -> Result<Box<dyn FileReader + '_>> {
        let object = format!("{} {}", self.object(), entry.path);
        if let Some(u) = &entry.unreadable {
            return Err(match u.reason {
                Reason::Encrypted => Error::Encrypted {
                    object,
                    detail: u.detail.clone(),
                },
                reason => Error::Unsupported {
                    object,
                    detail: u.detail.clone(),
                    reason,
                },
            });
        }
        let file = self.load(entry.id.node)?;
        let cs = self.boot.cluster_size;
        let empty = || -> Box<dyn FileReader + '_> {
            Box::new(StreamReader::new(
                self.src.as_ref(),
                cs,
                StreamData::Resident(Vec::new()),
                object.clone(),
            ))
        };
        if entry.id.stream == 0 && entry.kind == EntryKind::Symlink {
            let target = self.link_target(&file)?;
            return Ok(Box::new(StreamReader::new(
                self.src.as_ref(),
                cs,
                StreamData::Resident(target.into_bytes()),
                object.clone(),
            )));
        }
        let streams = Self::data_streams(&file);
        // Checked again here: an entry built by hand must not get compressed bytes either.
        let node = self.describe(&file);
        let extents = if entry.id.stream == 0 {
            if entry.kind != EntryKind::File {
                return Ok(empty());
            }
            if let (Some(algorithm), Some(e), None) =
                (node.wof, streams.get(wof::WOF_STREAM), &node.unreadable)
            {
                let data = StreamData::from_extents(e, cs, self.boot.total_clusters, &object)?;
                let compressed = StreamReader::new(self.src.as_ref(), cs, data, object.clone());
                return Ok(Box::new(wof::WofReader::new(
                    Box::new(compressed),
                    algorithm,
                    node.size,
                    object,
                )?));
            }
            match streams.get("") {
                Some(e) => e,
                None => return Ok(empty()),
            }
        } else {
            let index = usize::try_from(entry.id.stream - 1).unwrap_or(usize::MAX);
            let (name, e) = listed_streams(&streams, node.wof)
                .nth(index)
                .ok_or_else(|| Error::NotFound {
                    object: object.clone(),
                    detail: format!("stream {} of MFT record {}", entry.id.stream, entry.id.node),
                })?;
            if entry.stream.as_deref().is_some_and(|s| s != *name) {
                return Err(Error::NotFound {
                    object: object.clone(),
                    detail: format!(
                        "stream {:?} (MFT record {} changed)",
                        entry.stream, entry.id.node
                    ),
                });
            }
            e
        };
        let unreadable = if entry.id.stream == 0 {
            node.unreadable
        } else {
            node.streams
                .get(entry.id.stream as usize - 1)
                .and_then(|s| s.2.clone())
        };
        if let Some(u) = unreadable {
            return Err(Error::Unsupported {
                object,
                detail: u.detail,
                reason: u.reason,
            });
        }
        let data = StreamData::from_extents(extents, cs, self.boot.total_clusters, &object)?;
        Ok(Box::new(StreamReader::new(
            self.src.as_ref(),
            cs,
            data,
            object,
        )))
    }
}

#[cfg(test)]
mod tests;
