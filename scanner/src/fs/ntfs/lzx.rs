//! LZX decompression of one WOF chunk, in the form WIM resources and WOF's LZX algorithm use it
//! ("Microsoft LZX Data Compression Format" (1997) as corrected by [MS-PATCH] 2.2, restricted as
//! wimlib documents for WIM): a 32 KiB window equal to the chunk, every chunk decoded on its own
//! (recent offsets reset to 1 and code lengths to 0), no E8 header bit (E8 translation is always
//! undone, with the fixed translation size 12,000,000), no LZX DELTA extensions.
//!
//! Blocks: 3-bit type (1 verbatim, 2 aligned offset, 3 uncompressed), a 1-bit flag for the
//! default size of 32,768 bytes or else a 16-bit size. Code lengths are delta-coded through a
//! 20-symbol pretree. A main symbol below 256 is a literal; otherwise `(sym - 256) % 8` is the
//! length header (7: more from the length code) and `(sym - 256) / 8` the offset slot (0-2:
//! recent offsets).

use super::huffman::{copy_match, BitReader, DecodeError, HuffmanCode};

/// Window (and chunk) size.
pub const WINDOW_SIZE: usize = 32 * 1024;
const NUM_CHARS: usize = 256;
/// Offset slots for a 32 KiB window.
const NUM_OFFSET_SLOTS: usize = 30;
const NUM_MAIN_SYMS: usize = NUM_CHARS + 8 * NUM_OFFSET_SLOTS;
const NUM_LEN_SYMS: usize = 249;
const NUM_PRE_SYMS: usize = 20;
const NUM_ALIGNED_SYMS: usize = 8;
const MIN_MATCH: usize = 2;
const DEFAULT_BLOCK_SIZE: usize = 32 * 1024;
/// The fixed "file size" of WIM/WOF E8 translation.
const E8_FILE_SIZE: i32 = 12_000_000;

const OFFSET_SLOT_BASE: [u32; NUM_OFFSET_SLOTS] = [
    0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536,
    2048, 3072, 4096, 6144, 8192, 12288, 16384, 24576,
];
const EXTRA_OFFSET_BITS: [u32; NUM_OFFSET_SLOTS] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

/// Decompresses one chunk of at most [`WINDOW_SIZE`] bytes into `out`.
pub fn decompress(input: &[u8], out: &mut [u8]) -> Result<(), DecodeError> {
    if out.len() > WINDOW_SIZE {
        return Err(DecodeError {
            offset: 0,
            detail: "LZX chunk larger than the 32 KiB window",
        });
    }
    let mut r = BitReader::new(input);
    let bad = |r: &BitReader<'_>, detail: &'static str| DecodeError {
        offset: r.position(),
        detail,
    };
    let mut recent = [1u32; 3];
    let mut main_lens = [0u8; NUM_MAIN_SYMS];
    let mut len_lens = [0u8; NUM_LEN_SYMS];
    let mut pos = 0usize;
    while pos < out.len() {
        let block_type = r.bits(3)?;
        let size = if r.bits(1)? == 1 {
            DEFAULT_BLOCK_SIZE
        } else {
            ((r.bits(8)? << 8) | r.bits(8)?) as usize
        };
        if size > out.len() - pos {
            return Err(bad(&r, "LZX block runs past the chunk end"));
        }
        match block_type {
            1 | 2 => {
                let aligned = if block_type == 2 {
                    let mut lens = [0u8; NUM_ALIGNED_SYMS];
                    for l in &mut lens {
                        *l = r.bits(3)? as u8;
                    }
                    Some(HuffmanCode::new(&lens, 7).map_err(|d| bad(&r, d))?)
                } else {
                    None
                };
                read_lens(&mut r, &mut main_lens[..NUM_CHARS])?;
                read_lens(&mut r, &mut main_lens[NUM_CHARS..])?;
                let main = HuffmanCode::new(&main_lens, 16).map_err(|d| bad(&r, d))?;
                read_lens(&mut r, &mut len_lens)?;
                let lengths = HuffmanCode::new(&len_lens, 16).map_err(|d| bad(&r, d))?;
                let end = pos + size;
                while pos < end {
                    let sym = usize::from(main.decode(&mut r)?);
                    if sym < NUM_CHARS {
                        out[pos] = sym as u8;
                        pos += 1;
                        continue;
                    }
                    let sym = sym - NUM_CHARS;
                    let mut len = sym % 8;
                    let slot = sym / 8;
                    if len == 7 {
                        len += usize::from(lengths.decode(&mut r)?);
                    }
                    len += MIN_MATCH;
                    let offset = if slot < 3 {
                        // Not a true LRU: R1 or R2 swaps with R0 (as the format defines).
                        recent.swap(slot, 0);
                        recent[0]
                    } else {
                        let extra = EXTRA_OFFSET_BITS[slot];
                        let mut o = OFFSET_SLOT_BASE[slot];
                        match &aligned {
                            Some(a) if extra >= 3 => {
                                o += r.bits(extra - 3)? << 3;
                                o += u32::from(a.decode(&mut r)?);
                            }
                            _ => o += r.bits(extra)?,
                        }
                        let o = o - 2;
                        recent[2] = recent[1];
                        recent[1] = recent[0];
                        recent[0] = o;
                        o
                    };
                    if len > end - pos {
                        return Err(bad(&r, "LZX match runs past its block"));
                    }
                    copy_match(out, pos, offset as usize, len).map_err(|d| bad(&r, d))?;
                    pos += len;
                }
            }
            3 => {
                // Align to 16 bits; an already aligned stream drops the next 16 bits.
                r.ensure(1)?;
                r.align();
                for slot in &mut recent {
                    *slot = r.u32_le()?;
                    if *slot == 0 {
                        return Err(bad(&r, "LZX recent offset of 0"));
                    }
                }
                r.bytes(&mut out[pos..pos + size])?;
                pos += size;
                if size % 2 == 1 {
                    // Re-align on a word; the padding byte may be missing at the very end.
                    let _ = r.byte();
                }
            }
            _ => return Err(bad(&r, "unknown LZX block type")),
        }
    }
    undo_e8(out);
    Ok(())
}

/// Reads code lengths delta-coded against `lens` (the previous block's) through the pretree.
fn read_lens(r: &mut BitReader<'_>, lens: &mut [u8]) -> Result<(), DecodeError> {
    let mut pre_lens = [0u8; NUM_PRE_SYMS];
    for l in &mut pre_lens {
        *l = r.bits(4)? as u8;
    }
    let pre = HuffmanCode::new(&pre_lens, 15).map_err(|detail| DecodeError {
        offset: r.position(),
        detail,
    })?;
    let delta = |old: u8, sym: u16| ((u16::from(old) + 17 - sym) % 17) as u8;
    let mut i = 0usize;
    while i < lens.len() {
        let sym = pre.decode(r)?;
        let (run, value) = match sym {
            0..=16 => (1, delta(lens[i], sym)),
            17 => (4 + r.bits(4)? as usize, 0),
            18 => (20 + r.bits(5)? as usize, 0),
            _ => {
                let run = 4 + r.bits(1)? as usize;
                let s = pre.decode(r)?;
                if s > 17 {
                    return Err(DecodeError {
                        offset: r.position(),
                        detail: "LZX pretree run of a run",
                    });
                }
                (run, delta(lens[i], s))
            }
        };
        // A run past the end only happens in invalid data: it is cut, never written outside.
        let end = (i + run).min(lens.len());
        lens[i..end].fill(value);
        i = end;
    }
    Ok(())
}

/// Undoes E8 (x86 CALL) translation: absolute targets back to relative ones.
fn undo_e8(data: &mut [u8]) {
    if data.len() <= 10 {
        return;
    }
    let mut i = 0usize;
    while i < data.len() - 10 {
        if data[i] != 0xE8 {
            i += 1;
            continue;
        }
        let pos = i as i32;
        let t = &mut data[i + 1..i + 5];
        let abs = i32::from_le_bytes([t[0], t[1], t[2], t[3]]);
        let rel = if abs >= 0 {
            (abs < E8_FILE_SIZE).then(|| abs - pos)
        } else {
            (abs >= -pos).then(|| abs + E8_FILE_SIZE)
        };
        if let Some(rel) = rel {
            t.copy_from_slice(&rel.to_le_bytes());
        }
        i += 5;
    }
}
