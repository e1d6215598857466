//! Block maps of ext2/ext3 files: direct, indirect, double and triple indirect blocks.
//!
//! Follows Documentation/filesystems/ext4, section 4.2.2 "Direct/Indirect Block Addressing":
//! `i_block[0..12]` point at the first twelve data blocks, `i_block[12]` at a block of pointers,
//! `i_block[13]` at a block of pointers to pointer blocks, `i_block[14]` one level more. A zero
//! pointer at any level is a hole: the whole range below it reads as zeros (sparse files; this
//! is what ext4-view misreads). Pointer blocks are read lazily and the last one of each level is
//! kept, so a sequential read costs one pointer-block read per `block_size / 4` data blocks.

use super::superblock::Superblock;
use super::Run;
use crate::block::{le, BlockSource};
use crate::error::{Error, Result};

/// Number of direct pointers.
const DIRECT: u64 = 12;
/// Deepest indirection (triple).
const MAX_LEVELS: usize = 3;

/// Lazily resolved block map of one inode.
#[derive(Debug)]
pub struct IndirectMap {
    roots: [u32; 15],
    ino: u32,
    /// Byte offset of `i_block` in the volume (for errors about the roots).
    roots_offset: u64,
    /// Last pointer block read at each level: (physical block, pointers).
    cache: [Option<(u64, Vec<u32>)>; MAX_LEVELS],
}

impl IndirectMap {
    /// A map over the 15 pointers of `i_block` of inode `ino`.
    pub fn new(i_block: &[u8], ino: u32, roots_offset: u64) -> Self {
        let mut roots = [0u32; 15];
        for (i, r) in roots.iter_mut().enumerate() {
            *r = le::u32(i_block, i * 4).unwrap_or(0);
        }
        IndirectMap {
            roots,
            ino,
            roots_offset,
            cache: [None, None, None],
        }
    }

    /// Maps logical block `lblock`: physical block (or `None` for a hole) and the number of
    /// blocks from there that map contiguously the same way.
    pub fn map(
        &mut self,
        src: &dyn BlockSource,
        sb: &Superblock,
        object: &str,
        lblock: u64,
    ) -> Result<Run> {
        let p = u64::from(sb.block_size / 4);
        if lblock < DIRECT {
            let i = lblock as usize; // < 12
            let run = run_of(&self.roots[i..DIRECT as usize], 1);
            if let Some(phys) = run.physical {
                check_data(
                    sb,
                    object,
                    self.ino,
                    phys,
                    run.len,
                    self.roots_offset + lblock * 4,
                )?;
            }
            return Ok(run);
        }
        let mut rel = lblock - DIRECT;
        let mut span = p; // blocks covered by the subtree
        let mut root = DIRECT as usize;
        let mut levels = 1usize;
        while rel >= span {
            rel -= span;
            root += 1;
            levels += 1;
            if levels > MAX_LEVELS {
                // Beyond what triple indirection addresses: nothing can be there.
                return Ok(Run {
                    physical: None,
                    len: u64::MAX,
                });
            }
            span = span.saturating_mul(p);
        }
        let mut ptr = self.roots[root];
        let mut ptr_offset = self.roots_offset + root as u64 * 4;
        for level in 0..levels {
            // `span` is what the current pointer covers; each entry below covers span / p.
            if ptr == 0 {
                return Ok(Run {
                    physical: None,
                    len: span - rel,
                });
            }
            let block = u64::from(ptr);
            if block < u64::from(sb.first_data_block) || block >= sb.blocks_count {
                return Err(Error::corrupt(
                    object,
                    ptr_offset,
                    format!(
                        "inode {}: indirect pointer to block {block} outside the filesystem ({} blocks)",
                        self.ino, sb.blocks_count
                    ),
                ));
            }
            span /= p;
            let idx = (rel / span) as usize; // < p
            rel %= span;
            let table = self.load(src, sb, level, block)?;
            let base = sb.block_offset(block).unwrap_or(0);
            if level + 1 == levels {
                let mut run = run_of(table.get(idx..).unwrap_or(&[]), 1);
                if let Some(phys) = run.physical {
                    check_data(sb, object, self.ino, phys, run.len, base + idx as u64 * 4)?;
                }
                run.len = run.len.max(1);
                return Ok(run);
            }
            ptr = table.get(idx).copied().unwrap_or(0);
            ptr_offset = base + idx as u64 * 4;
        }
        Ok(Run {
            physical: None,
            len: 1,
        })
    }

    fn load(
        &mut self,
        src: &dyn BlockSource,
        sb: &Superblock,
        level: usize,
        block: u64,
    ) -> Result<&[u32]> {
        let hit = matches!(&self.cache[level], Some((b, _)) if *b == block);
        if !hit {
            let mut buf = vec![0u8; sb.block_size as usize];
            let off = sb.block_offset(block).unwrap_or(u64::MAX);
            src.read_exact_at(off, &mut buf)?;
            let ptrs = buf
                .chunks_exact(4)
                .map(|c| le::u32(c, 0).unwrap_or(0))
                .collect();
            self.cache[level] = Some((block, ptrs));
        }
        Ok(self.cache[level]
            .as_ref()
            .map(|(_, v)| v.as_slice())
            .unwrap_or(&[]))
    }
}

fn check_data(sb: &Superblock, object: &str, ino: u32, phys: u64, len: u64, at: u64) -> Result<()> {
    if phys < u64::from(sb.first_data_block)
        || phys.checked_add(len).is_none_or(|e| e > sb.blocks_count)
    {
        return Err(Error::corrupt(
            object,
            at,
            format!(
                "inode {ino}: data block {phys} outside the filesystem ({} blocks)",
                sb.blocks_count
            ),
        ));
    }
    Ok(())
}

/// The run starting at `ptrs[0]`: contiguous physical blocks, or consecutive zero pointers.
fn run_of(ptrs: &[u32], min: u64) -> Run {
    let Some(&first) = ptrs.first() else {
        return Run {
            physical: None,
            len: min,
        };
    };
    let mut len = 1u64;
    for (i, &p) in ptrs.iter().enumerate().skip(1) {
        let contiguous = if first == 0 {
            p == 0
        } else {
            u64::from(p) == u64::from(first) + i as u64
        };
        if !contiguous {
            break;
        }
        len += 1;
    }
    Run {
        physical: (first != 0).then_some(u64::from(first)),
        len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_coalesce_contiguous_and_zero_pointers() {
        assert_eq!(
            run_of(&[5, 6, 7, 9], 1),
            Run {
                physical: Some(5),
                len: 3
            }
        );
        assert_eq!(
            run_of(&[0, 0, 3], 1),
            Run {
                physical: None,
                len: 2
            }
        );
        assert_eq!(
            run_of(&[], 1),
            Run {
                physical: None,
                len: 1
            }
        );
    }
}
