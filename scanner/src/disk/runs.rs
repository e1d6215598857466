//! Reading a virtual disk range through a block map, shared by the VHD and VHDX readers.
//!
//! The format code maps one guest byte at a time to a [`Piece`] (data in the image, zeros, or
//! the parent disk) plus how many following bytes share it; this module merges adjacent pieces
//! into runs (host-contiguous data becomes one `pread`) and fills the buffer.

use crate::block::{BlockSource, SharedSource};
use crate::disk::backing::read_lower;
use crate::error::Result;

/// Where a range of guest bytes lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Piece {
    /// At this byte offset of the image file.
    Data(u64),
    /// Reads as zeros.
    Zero,
    /// In the parent disk at the same guest offset (zeros without a parent).
    Parent,
}

/// Fills `buf` with the guest bytes at `offset`, asking `map` where each range lives.
/// `map(pos)` returns the piece holding guest byte `pos` and the (non-zero) number of bytes from
/// `pos` on that are mapped the same way.
pub(crate) fn read_mapped(
    file: &dyn BlockSource,
    parent: Option<&SharedSource>,
    offset: u64,
    buf: &mut [u8],
    mut map: impl FnMut(u64) -> Result<(Piece, u64)>,
) -> Result<()> {
    let flush = |piece: Piece, guest: u64, out: &mut [u8]| -> Result<()> {
        match piece {
            Piece::Data(host) => file.read_exact_at(host, out),
            Piece::Zero => {
                out.fill(0);
                Ok(())
            }
            Piece::Parent => read_lower(parent, guest, out),
        }
    };
    let mut run: Option<(Piece, u64, usize)> = None; // piece, guest start, buf start
    let mut done = 0usize;
    while done < buf.len() {
        let pos = offset + done as u64;
        let (piece, avail) = map(pos)?;
        let n = usize::try_from(avail.max(1))
            .unwrap_or(usize::MAX)
            .min(buf.len() - done);
        let continues = match (run, piece) {
            (Some((Piece::Data(a), g, _)), Piece::Data(b)) => a.checked_add(pos - g) == Some(b),
            (Some((Piece::Zero, ..)), Piece::Zero) | (Some((Piece::Parent, ..)), Piece::Parent) => {
                true
            }
            _ => false,
        };
        if !continues {
            if let Some((p, g, start)) = run.take() {
                flush(p, g, &mut buf[start..done])?;
            }
            run = Some((piece, pos, done));
        }
        done += n;
    }
    if let Some((p, g, start)) = run {
        flush(p, g, &mut buf[start..done])?;
    }
    Ok(())
}
