//! Native, read-only FAT12/16/32 reader.
//!
//! Follows Microsoft's FAT specification (fatgen103, "FAT: General Overview of On-Disk Format",
//! version 1.03): the boot sector and BPB (sections 3 and 4, [`boot_sector`]), the FAT and its
//! cluster chains (section 4, [`fat_table`]), directory entries and VFAT long names (sections 6
//! and 7, [`dir_entry`]). File contents are read by following cluster chains ([`reader`]).
//!
//! Everything on the volume is untrusted: cluster numbers are range-checked, chains are checked
//! for loops, directories are walked at most once each (a subdirectory that points back at an
//! ancestor, or two directories sharing clusters, is reported and skipped), and depth and
//! directory size are bounded by [`MAX_DEPTH`] and [`MAX_DIR_ENTRIES`]. Problems in one directory
//! or file are reported as [`WalkEvent::Error`] or as a read error for that file; the walk goes on.

pub mod boot_sector;
pub mod dir_entry;
pub mod fat_table;
pub mod reader;

use std::collections::HashSet;

use crate::block::{read_vec, SharedSource};
use crate::error::{Error, Result};
use crate::fs::{EntryKind, FileEntry, FileId, FileReader, Filesystem, FsKind, WalkEvent};

use boot_sector::BootSector;
use dir_entry::{LongNameBuilder, RawEntry, ShortEntry, ENTRY_SIZE};
use fat_table::Chain;

/// Deepest directory nesting walked (path components below the root).
pub const MAX_DEPTH: usize = 4096;
/// Most 32-byte slots read from one directory: fatgen103 section 6 limits a directory to 65,536
/// entries (2 MiB).
pub const MAX_DIR_ENTRIES: u64 = 65_536;
/// Largest cluster read in one piece (BPB allows 128 sectors of 4096 bytes: 512 KiB).
const MAX_CLUSTER_BYTES: u64 = 512 * 1024;

/// Identifies a FAT boot sector and its FAT type (by count of clusters, fatgen103 section 3.5),
/// or `None`. `boot_sector` is the first sector of the volume (at least 512 bytes).
pub fn probe_fat(boot_sector: &[u8]) -> Option<FsKind> {
    boot_sector::parse(boot_sector).map(|b| b.kind)
}

/// An opened FAT volume. `Send + Sync`: every read goes through the shared volume source
/// (give it a [`crate::block::CachedSource`]: FAT entries and directory slots are small reads).
#[derive(Debug)]
pub struct FatVolume {
    src: SharedSource,
    bs: BootSector,
    label: Option<String>,
    notes: Vec<String>,
}

/// Where a directory's slots are.
#[derive(Debug, Clone, Copy)]
enum DirLocation {
    /// The fixed root directory of FAT12/16.
    FixedRoot,
    /// A cluster chain starting here (subdirectories, FAT32 root).
    Chain(u32),
}

/// One name found in a directory.
#[derive(Debug)]
struct DirItem {
    name: String,
    entry: ShortEntry,
    /// Byte offset of the short entry in the volume.
    offset: u64,
}

/// What reading one directory produced.
#[derive(Debug, Default)]
struct DirListing {
    items: Vec<DirItem>,
    label: Option<String>,
    /// Set when the directory could only be read in part.
    error: Option<Error>,
}

impl FatVolume {
    /// Opens the FAT volume on `src`.
    pub fn open(src: SharedSource) -> Result<Self> {
        let mut sector = [0u8; 512];
        src.read_exact_at(0, &mut sector)?;
        let bs = boot_sector::parse(&sector)
            .ok_or_else(|| Error::corrupt(src.name(), 0, "not a valid FAT boot sector"))?;
        let mut notes = bs.notes.clone();
        if bs.volume_size > src.size() {
            notes.push(format!(
                "boot sector declares {} bytes but the volume has {}: files in the missing part are unreadable",
                bs.volume_size,
                src.size()
            ));
        }
        let mut vol = FatVolume {
            src,
            bs,
            label: None,
            notes,
        };
        let root = vol.read_dir(vol.root_location(), "/", &mut HashSet::new());
        // The label entry of the root directory is what Windows shows; the boot sector copy is
        // often stale.
        vol.label = root.label.or_else(|| vol.bs.label.clone());
        Ok(vol)
    }

    /// The parsed boot sector.
    pub fn boot_sector(&self) -> &BootSector {
        &self.bs
    }

    fn root_location(&self) -> DirLocation {
        if self.bs.kind == FsKind::Fat32 {
            DirLocation::Chain(self.bs.root_cluster)
        } else {
            DirLocation::FixedRoot
        }
    }

    /// First cluster of a short entry: DIR_FstClusHI only means something on FAT32.
    fn first_cluster(&self, e: &ShortEntry) -> u32 {
        if self.bs.kind == FsKind::Fat32 {
            e.first_cluster & 0x0fff_ffff
        } else {
            e.first_cluster & 0xffff
        }
    }

    /// Reads a directory's names. `dir_clusters` holds every cluster of every directory read so
    /// far in this walk: a directory reaching one of them again is a loop or a cross-link.
    fn read_dir(
        &self,
        loc: DirLocation,
        path: &str,
        dir_clusters: &mut HashSet<u32>,
    ) -> DirListing {
        let mut out = DirListing::default();
        let mut lfn = LongNameBuilder::default();
        let mut slots = 0u64;
        let name = self.src.name();
        // Returns false at the end-of-directory mark.
        let mut take = |block: &[u8], base: u64, out: &mut DirListing, slots: &mut u64| -> bool {
            for (i, raw) in block.chunks_exact(ENTRY_SIZE).enumerate() {
                *slots += 1;
                let offset = base + (i * ENTRY_SIZE) as u64;
                match dir_entry::parse(raw) {
                    None | Some(RawEntry::End) => return false,
                    Some(RawEntry::Deleted) => lfn.reset(),
                    Some(RawEntry::LongName {
                        ord,
                        checksum,
                        units,
                    }) => lfn.push(ord, checksum, units),
                    Some(RawEntry::Short(e)) => {
                        let long = lfn.finish(&e.name);
                        if e.is_volume_label() {
                            if out.label.is_none() {
                                out.label = Some(e.label()).filter(|l| !l.is_empty());
                            }
                            continue;
                        }
                        if e.is_dot() {
                            continue;
                        }
                        let shown = safe_name(long, &e);
                        out.items.push(DirItem {
                            name: shown,
                            entry: e,
                            offset,
                        });
                    }
                }
            }
            true
        };
        match loc {
            DirLocation::FixedRoot => {
                let len = u64::from(self.bs.root_entries) * ENTRY_SIZE as u64;
                match read_vec(
                    self.src.as_ref(),
                    self.bs.root_dir_offset,
                    len,
                    2 * 1024 * 1024,
                ) {
                    Ok(block) => {
                        take(&block, self.bs.root_dir_offset, &mut out, &mut slots);
                    }
                    Err(e) => out.error = Some(e),
                }
            }
            DirLocation::Chain(first) => {
                if let Err(e) = fat_table::check_cluster(self.src.as_ref(), &self.bs, first, 0) {
                    out.error = Some(Error::corrupt(
                        name,
                        0,
                        format!("directory {path}: first cluster: {e}"),
                    ));
                    return out;
                }
                let mut chain = Chain::new(first);
                let cluster_bytes = u64::from(self.bs.cluster_size);
                let mut index = 0u64;
                loop {
                    if let Err(e) = chain.extend_to(self.src.as_ref(), &self.bs, index + 1) {
                        out.error = Some(in_dir(path, e));
                        break;
                    }
                    let Some((cluster, _)) = chain.locate(index) else {
                        break; // end of chain
                    };
                    if slots >= MAX_DIR_ENTRIES {
                        out.error = Some(Error::limit(
                            name,
                            format!(
                                "directory {path} has more than {MAX_DIR_ENTRIES} entries; the rest are not listed"
                            ),
                        ));
                        break;
                    }
                    if !dir_clusters.insert(cluster) {
                        let at = self.bs.cluster_offset(cluster).unwrap_or(0);
                        out.error = Some(Error::corrupt(
                            name,
                            at,
                            format!(
                                "directory {path}: cluster {cluster} already belongs to a directory (directory loop or cross-linked clusters)"
                            ),
                        ));
                        break;
                    }
                    let Some(at) = self.bs.cluster_offset(cluster) else {
                        break; // checked by the chain; unreachable in practice
                    };
                    match read_vec(self.src.as_ref(), at, cluster_bytes, MAX_CLUSTER_BYTES) {
                        Ok(block) => {
                            if !take(&block, at, &mut out, &mut slots) {
                                break;
                            }
                        }
                        Err(e) => {
                            out.error = Some(in_dir(path, e));
                            break;
                        }
                    }
                    index += 1;
                }
            }
        }
        out
    }

    fn entry(&self, path: String, item: &DirItem) -> FileEntry {
        let dir = item.entry.is_dir();
        FileEntry {
            path,
            stream: None,
            kind: if dir { EntryKind::Dir } else { EntryKind::File },
            size: if dir { 0 } else { u64::from(item.entry.size) },
            id: FileId {
                node: item.offset,
                stream: 0,
            },
            unreadable: None,
        }
    }
}

/// The name to show for an entry: its long name, else its 8.3 name. A hostile directory must
/// not forge paths: `/` and NUL become U+FFFD, and an empty, `.` or `..` name is replaced.
fn safe_name(long: Option<String>, e: &ShortEntry) -> String {
    let bad = |n: &str| n.is_empty() || n == "." || n == "..";
    let name = match long {
        Some(l) if !bad(&l) => l,
        _ => e.display_name(),
    };
    let name = if bad(&name) {
        "\u{fffd}".to_string()
    } else {
        name
    };
    name.chars()
        .map(|c| if c == '/' || c == '\0' { '\u{fffd}' } else { c })
        .collect()
}

/// Prefixes an error's detail with the directory it happened in.
fn in_dir(path: &str, e: Error) -> Error {
    match e {
        Error::Corrupt {
            object,
            offset,
            detail,
        } => Error::Corrupt {
            object,
            offset,
            detail: format!("directory {path}: {detail}"),
        },
        other => other,
    }
}

impl Filesystem for FatVolume {
    fn kind(&self) -> FsKind {
        self.bs.kind
    }

    fn label(&self) -> Option<String> {
        self.label.clone()
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    fn walk(&self, visit: &mut dyn FnMut(WalkEvent)) -> Result<()> {
        let mut dir_clusters = HashSet::new();
        let root = self.read_dir(self.root_location(), "/", &mut dir_clusters);
        if let Some(e) = root.error {
            if root.items.is_empty() {
                return Err(e);
            }
            visit(WalkEvent::Error {
                path: "/".into(),
                error: e,
            });
        }
        // Depth-first with an explicit stack (no recursion: depth comes from the disk).
        let mut stack: Vec<(String, std::vec::IntoIter<DirItem>)> =
            vec![(String::new(), root.items.into_iter())];
        while let Some((prefix, items)) = stack.last_mut() {
            let Some(item) = items.next() else {
                stack.pop();
                continue;
            };
            let path = format!("{prefix}/{}", item.name);
            visit(WalkEvent::Entry(self.entry(path.clone(), &item)));
            if !item.entry.is_dir() {
                continue;
            }
            if stack.len() >= MAX_DEPTH {
                visit(WalkEvent::Error {
                    path,
                    error: Error::limit(
                        self.src.name(),
                        format!("directories nested deeper than {MAX_DEPTH} levels are not walked"),
                    ),
                });
                continue;
            }
            let first = self.first_cluster(&item.entry);
            if first == 0 {
                // Cluster 0 in a subdirectory entry means the root: a loop.
                visit(WalkEvent::Error {
                    error: Error::corrupt(
                        self.src.name(),
                        item.offset,
                        format!("directory {path} points at the root directory (cluster 0): directory loop"),
                    ),
                    path,
                });
                continue;
            }
            if let Err(e) =
                fat_table::check_cluster(self.src.as_ref(), &self.bs, first, item.offset)
            {
                visit(WalkEvent::Error {
                    error: in_dir(&path, e),
                    path,
                });
                continue;
            }
            let listing = self.read_dir(DirLocation::Chain(first), &path, &mut dir_clusters);
            if let Some(e) = listing.error {
                visit(WalkEvent::Error {
                    path: path.clone(),
                    error: e,
                });
            }
            stack.push((path, listing.items.into_iter()));
        }
        Ok(())
    }

    /// Looks `path` up directory by directory (no full walk). Names match exactly, else
    /// case-insensitively (FAT names are case-insensitive), else by their 8.3 short name. The
    /// returned entry carries the names as stored.
    fn lookup(&self, path: &str) -> Result<FileEntry> {
        let not_found = || Error::NotFound {
            object: format!("{} volume {}", self.bs.kind, self.src.name()),
            detail: path.to_string(),
        };
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        if comps.is_empty() || comps.len() > MAX_DEPTH {
            return Err(not_found());
        }
        let mut loc = self.root_location();
        let mut cur = String::new();
        for (i, comp) in comps.iter().enumerate() {
            let shown = if cur.is_empty() { "/" } else { cur.as_str() };
            let listing = self.read_dir(loc, shown, &mut HashSet::new());
            let lower = comp.to_lowercase();
            let items = &listing.items;
            let item = items
                .iter()
                .find(|it| it.name == *comp)
                .or_else(|| items.iter().find(|it| it.name.to_lowercase() == lower))
                .or_else(|| {
                    items
                        .iter()
                        .find(|it| it.entry.display_name().eq_ignore_ascii_case(comp))
                });
            let Some(item) = item else {
                return Err(listing.error.unwrap_or_else(not_found));
            };
            cur = format!("{cur}/{}", item.name);
            if i + 1 == comps.len() {
                return Ok(self.entry(cur, item));
            }
            if !item.entry.is_dir() {
                return Err(not_found());
            }
            let first = self.first_cluster(&item.entry);
            fat_table::check_cluster(self.src.as_ref(), &self.bs, first, item.offset)
                .map_err(|e| in_dir(&cur, e))?;
            loc = DirLocation::Chain(first);
        }
        Err(not_found())
    }

    fn open(&self, entry: &FileEntry) -> Result<Box<dyn FileReader + '_>> {
        let mut raw = [0u8; ENTRY_SIZE];
        self.src.read_exact_at(entry.id.node, &mut raw)?;
        let short = match dir_entry::parse(&raw) {
            Some(RawEntry::Short(e)) if !e.is_volume_label() => e,
            _ => {
                return Err(Error::corrupt(
                    self.src.name(),
                    entry.id.node,
                    format!("{}: no directory entry at this position", entry.path),
                ))
            }
        };
        if short.is_dir() {
            return Err(Error::unsupported(
                self.src.name(),
                format!("{} is a directory", entry.path),
            ));
        }
        let first = self.first_cluster(&short);
        reader::FatFile::new(self, entry.path.clone(), entry.id.node, first, short.size)
            .map(|r| Box::new(r) as Box<dyn FileReader + '_>)
    }
}

#[cfg(test)]
mod tests;
