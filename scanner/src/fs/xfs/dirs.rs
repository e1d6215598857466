//! Reading a directory's names: short form from the inode, otherwise every data block in
//! logical order (block, leaf, node and B+tree directories keep their names in data blocks;
//! their leaf and free-index blocks are only indexes and are not needed to enumerate). See
//! [`super::dir2`] for the on-disk structures.

use super::dir2::{self, RawEntry};
use super::inode::{format, Inode};
use super::{Content, Fs, MAX_DIR_ENTRIES, MAX_DIR_ERRORS};
use crate::error::{Error, Result};

impl Fs {
    /// Directory blocks one walk may read: twice the blocks the volume really has, so that
    /// directories sharing blocks (a hostile image) cannot make the work grow past the image.
    pub(super) fn dir_block_budget(&self) -> u64 {
        (self.src.size() / u64::from(self.sb.dir_block_size))
            .saturating_mul(2)
            .saturating_add(64)
    }

    /// The names in directory `inode`, and the errors met reading parts of it; each directory
    /// block read is taken from `budget`.
    pub(super) fn dir_entries(
        &self,
        inode: &Inode,
        budget: &mut u64,
    ) -> Result<(Vec<RawEntry>, Vec<Error>)> {
        let object = self.object(inode.ino);
        if inode.format == format::LOCAL {
            let entries = dir2::shortform::parse(
                &inode.data_fork,
                inode.size,
                self.sb.has_ftype(),
                inode.fork_offset,
                &object,
            )?;
            return Ok((entries, Vec::new()));
        }
        let map = self.extent_map(inode)?;
        let bs = u64::from(self.sb.block_size);
        let dbs = u64::from(self.sb.dir_block_size);
        let fsb_per_dirblk = dbs / bs;
        let data_end = dir2::LEAF_OFFSET / bs;
        // Directory blocks that hold data, in logical order, each once.
        let mut dirblocks = Vec::new();
        let real_blocks = self.src.size() / bs;
        let limit = self.sb.dblocks.min(real_blocks) / fsb_per_dirblk + 1;
        for e in map.extents() {
            if e.startoff >= data_end {
                break;
            }
            let first = e.startoff / fsb_per_dirblk;
            let last = (e.startoff.saturating_add(e.blockcount).min(data_end) - 1) / fsb_per_dirblk;
            for d in first..=last {
                if dirblocks.last() != Some(&d) {
                    dirblocks.push(d);
                }
                if dirblocks.len() as u64 > limit {
                    return Err(Error::corrupt(
                        &object,
                        inode.offset,
                        "the directory maps more data blocks than the filesystem has",
                    ));
                }
            }
        }
        let mut out = Vec::new();
        let mut errors = Vec::new();
        let mut buf = vec![0u8; self.sb.dir_block_size as usize];
        let content = Content::Map(map);
        for d in dirblocks {
            if *budget == 0 {
                errors.push(Error::limit(
                    &object,
                    "directory blocks read exceed twice the volume's blocks; the rest is skipped",
                ));
                break;
            }
            *budget -= 1;
            let lpos = d * dbs;
            let at = match content {
                Content::Map(ref m) => m.map(&self.sb, d * fsb_per_dirblk).byte.unwrap_or(0),
                Content::Bytes(_) => 0,
            };
            let res = self
                .read_dir_block(&content, lpos, &mut buf)
                .and_then(|()| {
                    dir2::data::parse_block(
                        &buf,
                        self.sb.has_crc(),
                        self.sb.has_ftype(),
                        at,
                        &object,
                        &mut out,
                    )
                });
            if let Err(e) = res {
                errors.push(e);
            }
            if errors.len() >= MAX_DIR_ERRORS {
                errors.push(Error::corrupt(
                    &object,
                    inode.offset,
                    "too many bad directory blocks, the rest is skipped",
                ));
                break;
            }
            if out.len() > MAX_DIR_ENTRIES {
                errors.push(Error::limit(
                    &object,
                    format!("more than {MAX_DIR_ENTRIES} entries"),
                ));
                break;
            }
        }
        Ok((out, errors))
    }

    /// Reads one whole directory block at logical byte `lpos`; a hole in it is an error.
    fn read_dir_block(&self, content: &Content, lpos: u64, buf: &mut [u8]) -> Result<()> {
        let Content::Map(map) = content else {
            return Ok(());
        };
        let bs = u64::from(self.sb.block_size);
        for (i, chunk) in buf.chunks_mut(bs as usize).enumerate() {
            let lblock = lpos / bs + i as u64;
            match map.map(&self.sb, lblock).byte {
                Some(b) if b != u64::MAX => self.src.read_exact_at(b, chunk)?,
                _ => {
                    return Err(Error::corrupt(
                        &self.name,
                        0,
                        format!("directory block at logical byte {lpos:#x} is not mapped"),
                    ))
                }
            }
        }
        Ok(())
    }
}
