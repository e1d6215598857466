//! Backing (qcow2) and parent (VHD, VHDX) layers: opening them through [`ChainPolicy`] and
//! reading them as the layer above sees them.
//!
//! A layer reads its unallocated ranges from the layer below. When the lower disk is smaller
//! than the upper one, the part beyond its end reads as zeros (what QEMU does for a backing file
//! shorter than its overlay); without a lower layer everything unallocated reads as zeros.

use std::path::{Path, PathBuf};

use crate::block::SharedSource;
use crate::disk::{open_file_as, open_layer, ChainState, DiskFormat, OpenOptions, OpenedDisk};
use crate::error::Result;

/// Opens the layer that the image at `this` names as its backing/parent file `named`, resolved
/// by the chain policy (relative to `this`'s directory, refusing escapes) and carrying the chain
/// state (depth, loops). Internal-snapshot selection applies to the top layer only.
pub(crate) fn open_lower(
    this: &Path,
    named: &str,
    opts: &OpenOptions,
    state: &mut ChainState,
) -> Result<OpenedDisk> {
    let path = resolve(opts, this, named)?;
    open_resolved(&path, opts, state)
}

/// Opens the lower layer `named` as a raw image whatever its content, as QEMU does when the
/// image says the backing format is `raw` (a raw backing file whose bytes happen to start with
/// another format's magic must not be reinterpreted, nor may it name further files).
pub(crate) fn open_lower_raw(
    this: &Path,
    named: &str,
    opts: &OpenOptions,
    state: &mut ChainState,
) -> Result<OpenedDisk> {
    let path = resolve(opts, this, named)?;
    state.enter(&path)?;
    let file: SharedSource = std::sync::Arc::new(crate::block::FileSource::open(&path)?);
    open_file_as(&path, file, DiskFormat::Raw, opts, state)
}

/// Resolves a backing/parent name through the chain policy.
pub(crate) fn resolve(opts: &OpenOptions, this: &Path, named: &str) -> Result<PathBuf> {
    opts.chain.resolve(this, named)
}

/// Opens a lower layer already resolved by the chain policy.
pub(crate) fn open_resolved(
    path: &Path,
    opts: &OpenOptions,
    state: &mut ChainState,
) -> Result<OpenedDisk> {
    let lower_opts = OpenOptions {
        snapshot: None,
        ..opts.clone()
    };
    open_layer(path, &lower_opts, state)
}

/// Fills `buf` with the bytes at `offset` of `lower` as seen from the layer above: zeros
/// beyond its end, zeros everywhere without a lower layer.
pub(crate) fn read_lower(lower: Option<&SharedSource>, offset: u64, buf: &mut [u8]) -> Result<()> {
    let Some(lower) = lower else {
        buf.fill(0);
        return Ok(());
    };
    let size = lower.size();
    let avail = size.saturating_sub(offset);
    let n = usize::try_from(avail).unwrap_or(usize::MAX).min(buf.len());
    let (inside, beyond) = buf.split_at_mut(n);
    if !inside.is_empty() {
        lower.read_exact_at(offset, inside)?;
    }
    beyond.fill(0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemSource;
    use std::sync::Arc;

    #[test]
    fn escaping_names_are_recognised_lexically() {
        for n in ["/etc/shadow", "../x", "a/../../x", "./../x"] {
            assert!(crate::disk::escapes_lexically(n), "{n}");
        }
        for n in ["x", "./x", "a/../x", "a/b/../../x"] {
            assert!(!crate::disk::escapes_lexically(n), "{n}");
        }
    }

    #[test]
    fn lower_layer_reads_zeros_past_its_end() {
        let lower: SharedSource = Arc::new(MemSource::new(vec![7u8; 10], "lower"));
        let mut buf = [1u8; 8];
        read_lower(Some(&lower), 6, &mut buf).unwrap();
        assert_eq!(buf, [7, 7, 7, 7, 0, 0, 0, 0]);
        read_lower(Some(&lower), 100, &mut buf).unwrap();
        assert_eq!(buf, [0; 8]);
        let mut buf = [1u8; 4];
        read_lower(None, 0, &mut buf).unwrap();
        assert_eq!(buf, [0; 4]);
    }
}
