//! The fsync tree log, replayed in memory (kernel `fs/btrfs/tree-log.c`:
//! `btrfs_recover_log_trees`, `replay_one_buffer`, `replay_one_extent`, `add_inode_ref`,
//! `replay_one_dir_item`, `replay_dir_deletes`).
//!
//! The superblock's `log_root` points to a log root tree whose ROOT_ITEMs, keyed
//! (`TREE_LOG_OBJECTID`, ROOT_ITEM, subvolume id), locate one log tree per subvolume that had
//! fsync'ed changes since the last commit. Nothing is written: the log's items are collected
//! into a [`SubvolLog`] per subvolume, and the subvolume's readers overlay them as replay would:
//! - an INODE_ITEM in the log replaces the subvolume's, and a regular file's extents past its
//!   logged size are dropped (the kernel truncates to the logged size);
//! - EXTENT_DATA items replace whatever the subvolume maps in their file range (overlapping
//!   extents are trimmed, as `btrfs_drop_extents` does);
//! - INODE_REF / INODE_EXTREF items add their names to the parent directory; a logged inode's
//!   names in a parent that the log lists refs for, but not this name, are removed;
//! - DIR_INDEX items add names; a DIR_LOG_INDEX range marks where the log holds the whole
//!   directory: names of the subvolume inside it that the log lacks were deleted;
//! - a name the log adds replaces another entry of the same name in that directory.
//!
//! A log that cannot be read or replayed is not used: the volume opens as on disk and a note
//! says so.

use std::collections::{BTreeMap, HashMap};

use super::dir::{self, DirEntry};
use super::extent::{ExtentBody, FileExtent};
use super::inode::{self, InodeItem};
use super::root_tree::{key_type, objectid, RootItem};
use super::tree::{Key, RootRef, TreeReader};
use crate::error::{Error, Result};

/// Most items taken from all log trees together.
pub const MAX_LOG_ITEMS: usize = 1 << 22;

/// What the log holds for one subvolume.
#[derive(Debug, Default)]
pub struct SubvolLog {
    /// Logged inode items.
    pub inodes: HashMap<u64, InodeItem>,
    /// Logged extents per inode, by file offset.
    pub extents: HashMap<u64, Vec<FileExtent>>,
    /// Names the log adds per directory, by name.
    pub names: HashMap<u64, BTreeMap<Vec<u8>, DirEntry>>,
    /// Directory index ranges the log holds completely, per directory.
    pub dir_ranges: HashMap<u64, Vec<(u64, u64)>>,
    /// Names of logged inodes per (inode, parent directory).
    pub refs: HashMap<(u64, u64), Vec<Vec<u8>>>,
    /// Items taken.
    pub items: usize,
}

/// The replayed log of every subvolume, by subvolume id.
#[derive(Debug, Default)]
pub struct LogReplay {
    /// Per subvolume.
    pub subvols: HashMap<u64, SubvolLog>,
    /// Problems met that did not stop the replay (listed as notes).
    pub notes: Vec<String>,
}

impl LogReplay {
    /// Reads the log root tree at `root` and every log tree it names.
    pub fn read(trees: &TreeReader, root: RootRef) -> Result<Self> {
        let (roots, errors) = trees.range(
            root,
            Key::new(objectid::TREE_LOG, key_type::ROOT_ITEM, 0),
            Key::new(objectid::TREE_LOG, key_type::ROOT_ITEM, u64::MAX),
        )?;
        if let Some(e) = errors.into_iter().next() {
            return Err(e);
        }
        let mut replay = LogReplay::default();
        let mut total = 0usize;
        for r in roots {
            let subvol = r.key.offset;
            let ri = RootItem::parse(&r.data)
                .ok_or_else(|| Error::corrupt(&trees.name, r.logical, "log root item too short"))?;
            let (items, errors) = trees.range(
                RootRef {
                    bytenr: ri.bytenr,
                    level: ri.level,
                    generation: 0,
                },
                Key::new(0, 0, 0),
                Key::new(u64::MAX, u8::MAX, u64::MAX),
            )?;
            if let Some(e) = errors.into_iter().next() {
                return Err(e);
            }
            total = total.saturating_add(items.len());
            if total > MAX_LOG_ITEMS {
                return Err(Error::limit(
                    &trees.name,
                    format!("tree log holds more than {MAX_LOG_ITEMS} items"),
                ));
            }
            let mut log = SubvolLog {
                items: items.len(),
                ..SubvolLog::default()
            };
            for it in items {
                let bad = |what: &str| {
                    Error::corrupt(
                        &trees.name,
                        it.logical,
                        format!(
                            "log tree of subvolume {subvol}: bad {what} item {:?}",
                            it.key
                        ),
                    )
                };
                let k = it.key;
                match k.ty {
                    key_type::INODE_ITEM => {
                        let i = InodeItem::parse(&it.data).ok_or_else(|| bad("inode"))?;
                        log.inodes.insert(k.objectid, i);
                    }
                    key_type::EXTENT_DATA => {
                        let e = FileExtent::parse(&it.data, k.offset)
                            .map_err(|d| bad(&format!("extent ({d})")))?;
                        log.extents.entry(k.objectid).or_default().push(e);
                    }
                    key_type::INODE_REF | key_type::INODE_EXTREF => {
                        let refs = if k.ty == key_type::INODE_REF {
                            inode::parse_refs(&it.data, k.offset)
                        } else {
                            inode::parse_extrefs(&it.data)
                        }
                        .ok_or_else(|| bad("inode ref"))?;
                        for r in refs {
                            log.refs
                                .entry((k.objectid, r.parent))
                                .or_default()
                                .push(r.name.clone());
                            log.names.entry(r.parent).or_default().insert(
                                r.name.clone(),
                                DirEntry {
                                    location: Key::new(k.objectid, key_type::INODE_ITEM, 0),
                                    name: r.name,
                                    file_type: 0,
                                    index: r.index,
                                },
                            );
                        }
                    }
                    key_type::DIR_INDEX => {
                        for e in dir::parse(&it.data, k.offset).ok_or_else(|| bad("dir index"))? {
                            log.names
                                .entry(k.objectid)
                                .or_default()
                                .insert(e.name.clone(), e);
                        }
                    }
                    key_type::DIR_LOG_INDEX => {
                        let end = crate::block::le::u64(&it.data, 0)
                            .ok_or_else(|| bad("dir log index"))?;
                        log.dir_ranges
                            .entry(k.objectid)
                            .or_default()
                            .push((k.offset, end));
                    }
                    // DIR_ITEMs duplicate DIR_INDEX by name hash; checksums and xattrs do not
                    // change what is listed or read.
                    _ => {}
                }
            }
            if replay.subvols.insert(subvol, log).is_some() {
                replay
                    .notes
                    .push(format!("tree log names subvolume {subvol} twice"));
            }
        }
        Ok(replay)
    }

    /// Total items taken.
    pub fn items(&self) -> usize {
        self.subvols.values().map(|s| s.items).sum()
    }
}

impl SubvolLog {
    /// A directory's entries after replay, given the subvolume's own `base` entries (in index
    /// order); the result is in index order.
    pub fn merge_dir(&self, dir: u64, base: Vec<DirEntry>) -> Vec<DirEntry> {
        let added = self.names.get(&dir);
        let ranges = self.dir_ranges.get(&dir);
        let mut out: Vec<DirEntry> = base
            .into_iter()
            .filter(|e| {
                let in_log = added.is_some_and(|a| a.contains_key(&e.name));
                if in_log {
                    // The log's entry of that name replaces it.
                    return false;
                }
                let logged_range =
                    ranges.is_some_and(|r| r.iter().any(|&(s, t)| (s..=t).contains(&e.index)));
                if logged_range {
                    return false;
                }
                // A logged inode with names in this directory keeps only the logged ones.
                if e.location.ty == key_type::INODE_ITEM {
                    if let Some(names) = self.refs.get(&(e.location.objectid, dir)) {
                        if self.inodes.contains_key(&e.location.objectid)
                            && !names.contains(&e.name)
                        {
                            return false;
                        }
                    }
                }
                true
            })
            .collect();
        if let Some(a) = added {
            out.extend(a.values().cloned());
        }
        out.sort_by_key(|e| e.index);
        out
    }

    /// A file's extents after replay, given the subvolume's own `base` extents and the
    /// inode's size after replay.
    pub fn merge_extents(
        &self,
        ino: u64,
        mut base: Vec<FileExtent>,
        sectorsize: u64,
    ) -> Vec<FileExtent> {
        if let Some(i) = self.inodes.get(&ino) {
            if i.kind() == crate::fs::EntryKind::File {
                let end = i.size.div_ceil(sectorsize).saturating_mul(sectorsize);
                base.retain(|e| e.file_offset < end);
            }
        }
        let Some(logged) = self.extents.get(&ino) else {
            return base;
        };
        for l in logged {
            let (a, b) = (l.file_offset, l.file_offset.saturating_add(l.len().max(1)));
            let mut kept = Vec::with_capacity(base.len() + 1);
            for e in base {
                let (s, t) = (e.file_offset, e.file_offset.saturating_add(e.len()));
                if t <= a || s >= b {
                    kept.push(e);
                    continue;
                }
                if s < a {
                    if let Some(front) = trim(&e, s, a) {
                        kept.push(front);
                    }
                }
                if t > b {
                    if let Some(back) = trim(&e, b, t) {
                        kept.push(back);
                    }
                }
            }
            kept.push(l.clone());
            base = kept;
        }
        base.sort_by_key(|e| e.file_offset);
        base
    }
}

/// The part of extent `e` covering file bytes `[from, to)` (within it), or `None` for an
/// inline extent, which cannot be split.
fn trim(e: &FileExtent, from: u64, to: u64) -> Option<FileExtent> {
    let skip = from.checked_sub(e.file_offset)?;
    let len = to.checked_sub(from)?;
    let body = match &e.body {
        ExtentBody::Inline(_) => return None,
        ExtentBody::Regular {
            disk_bytenr,
            disk_num_bytes,
            offset,
            ..
        } => ExtentBody::Regular {
            disk_bytenr: *disk_bytenr,
            disk_num_bytes: *disk_num_bytes,
            offset: offset.checked_add(skip)?,
            num_bytes: len,
        },
        ExtentBody::Prealloc { .. } => ExtentBody::Prealloc { num_bytes: len },
    };
    Some(FileExtent {
        file_offset: from,
        body,
        ..e.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(fo: u64, bytenr: u64, len: u64) -> FileExtent {
        FileExtent {
            file_offset: fo,
            ram_bytes: len,
            compression: 0,
            encryption: 0,
            other_encoding: 0,
            body: ExtentBody::Regular {
                disk_bytenr: bytenr,
                disk_num_bytes: len,
                offset: 0,
                num_bytes: len,
            },
        }
    }

    fn entry(name: &str, ino: u64, index: u64) -> DirEntry {
        DirEntry {
            location: Key::new(ino, key_type::INODE_ITEM, 0),
            name: name.as_bytes().to_vec(),
            file_type: dir::ft::REG_FILE,
            index,
        }
    }

    #[test]
    fn logged_extents_replace_the_range_they_cover() {
        let mut log = SubvolLog::default();
        log.extents.insert(257, vec![reg(4096, 0x90000, 4096)]);
        let merged = log.merge_extents(257, vec![reg(0, 0x10000, 12288)], 4096);
        assert_eq!(merged.len(), 3);
        assert_eq!(merged[0].len(), 4096);
        assert_eq!(merged[1], reg(4096, 0x90000, 4096));
        assert_eq!(merged[2].file_offset, 8192);
        assert!(matches!(
            merged[2].body,
            ExtentBody::Regular {
                offset: 8192,
                num_bytes: 4096,
                ..
            }
        ));
    }

    #[test]
    fn logged_names_add_replace_and_delete() {
        let mut log = SubvolLog::default();
        log.names
            .entry(256)
            .or_default()
            .insert(b"new".to_vec(), entry("new", 300, 9));
        log.names
            .entry(256)
            .or_default()
            .insert(b"same".to_vec(), entry("same", 301, 10));
        log.dir_ranges.insert(256, vec![(5, 6)]);
        let base = vec![
            entry("kept", 257, 2),
            entry("same", 258, 3),
            entry("deleted", 259, 5),
        ];
        let names: Vec<String> = log
            .merge_dir(256, base)
            .iter()
            .map(|e| {
                format!(
                    "{}={}",
                    String::from_utf8_lossy(&e.name),
                    e.location.objectid
                )
            })
            .collect();
        assert_eq!(names, ["kept=257", "new=300", "same=301"]);
    }
}
