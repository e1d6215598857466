//! One subvolume's tree read as the kernel would see it after log replay: inodes, directory
//! entries and file extents (btrfs on-disk format documentation, "FS tree").

use super::dir::{self, DirEntry};
use super::extent::FileExtent;
use super::inode::InodeItem;
use super::log_tree::SubvolLog;
use super::root_tree::key_type;
use super::tree::{Key, RootRef, TreeReader};
use crate::error::{Error, Result};

/// Most entries read from one directory.
pub const MAX_DIR_ENTRIES: usize = 1 << 22;
/// Most extents of one file.
pub const MAX_EXTENTS: usize = 1 << 22;

/// A subvolume (the top level, a created subvolume, or a snapshot).
#[derive(Debug, Clone)]
pub struct Subvol {
    /// Tree id.
    pub id: u64,
    /// Its tree's root block.
    pub root: RootRef,
    /// Inode number of its root directory.
    pub root_dirid: u64,
}

/// A subvolume bound to the reader and its log, if any.
#[derive(Debug, Clone, Copy)]
pub struct SubvolView<'a> {
    /// The tree reader.
    pub trees: &'a TreeReader,
    /// The subvolume.
    pub subvol: &'a Subvol,
    /// Its replayed log.
    pub log: Option<&'a SubvolLog>,
    /// Data block size.
    pub sectorsize: u32,
}

impl SubvolView<'_> {
    fn all_of(&self, objectid: u64, ty: u8) -> Result<(Vec<super::tree::Item>, Vec<Error>)> {
        self.trees.range(
            self.subvol.root,
            Key::new(objectid, ty, 0),
            Key::new(objectid, ty, u64::MAX),
        )
    }

    /// The inode item of `ino`, `None` if it has none.
    pub fn inode(&self, ino: u64) -> Result<Option<InodeItem>> {
        if let Some(i) = self.log.and_then(|l| l.inodes.get(&ino)) {
            return Ok(Some(*i));
        }
        let (items, errors) = self.all_of(ino, key_type::INODE_ITEM)?;
        match items.first() {
            Some(it) => InodeItem::parse(&it.data).map(Some).ok_or_else(|| {
                Error::corrupt(
                    &self.trees.name,
                    it.logical,
                    format!(
                        "subvolume {} inode {ino}: inode item of {} bytes is too short",
                        self.subvol.id,
                        it.data.len()
                    ),
                )
            }),
            None => match errors.into_iter().next() {
                Some(e) => Err(e),
                None => Ok(None),
            },
        }
    }

    /// The entries of directory `dir` in index order, plus errors of parts that could not be
    /// read.
    pub fn dir_entries(&self, dir: u64) -> Result<(Vec<DirEntry>, Vec<Error>)> {
        let (items, mut errors) = self.all_of(dir, key_type::DIR_INDEX)?;
        if items.len() > MAX_DIR_ENTRIES {
            return Err(Error::limit(
                &self.trees.name,
                format!("directory {dir} has more than {MAX_DIR_ENTRIES} entries"),
            ));
        }
        let mut out = Vec::with_capacity(items.len());
        for it in items {
            match dir::parse(&it.data, it.key.offset) {
                Some(mut e) if e.len() == 1 => out.push(e.remove(0)),
                _ => errors.push(Error::corrupt(
                    &self.trees.name,
                    it.logical,
                    format!(
                        "subvolume {} directory {dir}: bad DIR_INDEX item {}",
                        self.subvol.id, it.key.offset
                    ),
                )),
            }
        }
        if let Some(log) = self.log {
            out = log.merge_dir(dir, out);
        }
        Ok((out, errors))
    }

    /// The extents of `ino` by file offset. A bad item fails the whole file: its content
    /// would be incomplete.
    pub fn extents(&self, ino: u64) -> Result<Vec<FileExtent>> {
        let (items, errors) = self.all_of(ino, key_type::EXTENT_DATA)?;
        if let Some(e) = errors.into_iter().next() {
            return Err(e);
        }
        if items.len() > MAX_EXTENTS {
            return Err(Error::limit(
                &self.trees.name,
                format!("inode {ino} has more than {MAX_EXTENTS} extents"),
            ));
        }
        let mut out = Vec::with_capacity(items.len());
        for it in items {
            let e = FileExtent::parse(&it.data, it.key.offset).map_err(|d| {
                Error::corrupt(
                    &self.trees.name,
                    it.logical,
                    format!(
                        "subvolume {} inode {ino} extent at file offset {}: {d}",
                        self.subvol.id, it.key.offset
                    ),
                )
            })?;
            out.push(e);
        }
        if let Some(log) = self.log {
            out = log.merge_extents(ino, out, u64::from(self.sectorsize));
        }
        Ok(out)
    }
}
