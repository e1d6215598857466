//! LZO1X decompression and Btrfs's segmented LZO framing (kernel `lib/lzo/lzo1x_decompress_safe.c`
//! and `Documentation/staging/lzo.rst` for the bitstream; `fs/btrfs/lzo.c` for the framing).
//!
//! Written here because no maintained pure-Rust LZO1X decoder was at hand; every length and
//! back-reference is checked against the input, the output limit and the segment start.
//!
//! Framing: a 4-byte little-endian total length (itself included), then segments, each a
//! 4-byte length and that many bytes of an independent LZO1X stream decoding to at most one
//! sector. A segment header never straddles a sector: fewer than 4 bytes left in a sector are
//! padding.

use std::fmt;

/// Most zero bytes accepted in one run-length extension (each adds 255 to a length).
const MAX_255_COUNT: usize = 1 << 16;
/// Largest compressed segment accepted (the kernel's `lzo1x_worst_compress(PAGE_SIZE)` for
/// 64 KiB pages, rounded up).
pub const MAX_SEGMENT: usize = 70_000;

/// Why an LZO stream could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LzoError {
    /// The input ended inside an instruction.
    InputOverrun,
    /// The output would exceed its limit.
    OutputOverrun,
    /// A back-reference points before the start of the output.
    LookbehindOverrun,
    /// A run-length extension is absurdly long, or the end marker is malformed.
    Malformed,
}

impl fmt::Display for LzoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LzoError::InputOverrun => "LZO input ends inside an instruction",
            LzoError::OutputOverrun => "LZO output exceeds its size",
            LzoError::LookbehindOverrun => "LZO back-reference before the start of the output",
            LzoError::Malformed => "malformed LZO stream",
        })
    }
}

struct Decoder<'a> {
    input: &'a [u8],
    ip: usize,
    out: &'a mut Vec<u8>,
    base: usize,
    limit: usize,
}

impl Decoder<'_> {
    fn byte(&mut self) -> Result<usize, LzoError> {
        let b = *self.input.get(self.ip).ok_or(LzoError::InputOverrun)?;
        self.ip += 1;
        Ok(usize::from(b))
    }

    fn le16(&mut self) -> Result<usize, LzoError> {
        let lo = self.byte()?;
        let hi = self.byte()?;
        Ok(lo | (hi << 8))
    }

    /// A run-length extension: zero bytes add 255 each, then a final byte.
    fn extension(&mut self) -> Result<usize, LzoError> {
        let mut zeros = 0usize;
        while *self.input.get(self.ip).ok_or(LzoError::InputOverrun)? == 0 {
            self.ip += 1;
            zeros += 1;
            if zeros > MAX_255_COUNT {
                return Err(LzoError::Malformed);
            }
        }
        Ok(zeros * 255 + self.byte()?)
    }

    fn room(&self, n: usize) -> Result<(), LzoError> {
        if self.out.len() - self.base + n > self.limit {
            return Err(LzoError::OutputOverrun);
        }
        Ok(())
    }

    fn literals(&mut self, n: usize) -> Result<(), LzoError> {
        self.room(n)?;
        let end = self.ip.checked_add(n).ok_or(LzoError::InputOverrun)?;
        let src = self.input.get(self.ip..end).ok_or(LzoError::InputOverrun)?;
        self.out.extend_from_slice(src);
        self.ip = end;
        Ok(())
    }

    fn copy_match(&mut self, dist: usize, len: usize) -> Result<(), LzoError> {
        if dist == 0 || dist > self.out.len() - self.base {
            return Err(LzoError::LookbehindOverrun);
        }
        self.room(len)?;
        let start = self.out.len() - dist;
        // Byte by byte: a match may overlap the bytes it produces.
        for i in 0..len {
            let b = self.out[start + i];
            self.out.push(b);
        }
        Ok(())
    }
}

/// Decodes one LZO1X stream, appending at most `limit` bytes to `out`.
pub fn decompress(input: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), LzoError> {
    if input.len() < 3 {
        return Err(LzoError::InputOverrun);
    }
    let base = out.len();
    let mut d = Decoder {
        input,
        ip: 0,
        out,
        base,
        limit,
    };
    let mut state = 0usize;
    if input[0] > 17 {
        d.ip = 1;
        let t = usize::from(input[0]) - 17;
        d.literals(t)?;
        state = if t < 4 { t } else { 4 };
    }
    loop {
        let t = d.byte()?;
        let (dist, len, next);
        if t < 16 {
            if state == 0 {
                let mut n = t;
                if n == 0 {
                    n = 15 + d.extension()?;
                }
                d.literals(n + 3)?;
                state = 4;
                continue;
            } else if state != 4 {
                next = t & 3;
                let dist = 1 + (t >> 2) + (d.byte()? << 2);
                d.copy_match(dist, 2)?;
                d.literals(next)?;
                state = next;
                continue;
            } else {
                next = t & 3;
                dist = 1 + 0x800 + (t >> 2) + (d.byte()? << 2);
                len = 3;
            }
        } else if t >= 64 {
            next = t & 3;
            dist = 1 + ((t >> 2) & 7) + (d.byte()? << 3);
            len = (t >> 5) + 1;
        } else if t >= 32 {
            let mut n = (t & 31) + 2;
            if n == 2 {
                n += 31 + d.extension()?;
            }
            let v = d.le16()?;
            dist = 1 + (v >> 2);
            next = v & 3;
            len = n;
        } else {
            let high = (t & 8) << 11;
            let mut n = (t & 7) + 2;
            if n == 2 {
                n += 7 + d.extension()?;
            }
            let v = d.le16()?;
            next = v & 3;
            let d0 = high + (v >> 2);
            if d0 == 0 {
                // End of stream: must be the 3-byte marker.
                return if n == 3 {
                    Ok(())
                } else {
                    Err(LzoError::Malformed)
                };
            }
            dist = d0 + 0x4000;
            len = n;
        }
        d.copy_match(dist, len)?;
        d.literals(next)?;
        state = next;
    }
}

/// Decodes a Btrfs LZO extent (`data` as stored, possibly sector-padded) into at most
/// `ram_bytes` bytes; `sectorsize` is the segment size and the padding unit.
pub fn decompress_btrfs(
    data: &[u8],
    ram_bytes: usize,
    sectorsize: usize,
) -> Result<Vec<u8>, String> {
    let total = data
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or("LZO extent shorter than its header")?;
    if total < 4 || total > data.len() {
        return Err(format!(
            "LZO total length {total} does not fit the {} stored bytes",
            data.len()
        ));
    }
    let mut out = Vec::with_capacity(ram_bytes);
    let mut at = 4usize;
    while at < total && out.len() < ram_bytes {
        let left_in_sector = sectorsize - at % sectorsize;
        if left_in_sector < 4 {
            at += left_in_sector;
            continue;
        }
        let seg = data
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or("LZO segment header past the end")?;
        at += 4;
        if seg > MAX_SEGMENT {
            return Err(format!("LZO segment of {seg} bytes at byte {:#x}", at - 4));
        }
        let end = at
            .checked_add(seg)
            .filter(|&e| e <= total)
            .ok_or_else(|| format!("LZO segment at byte {:#x} runs past the extent", at - 4))?;
        let limit = sectorsize.min(ram_bytes - out.len());
        decompress(&data[at..end], &mut out, limit)
            .map_err(|e| format!("{e} (segment at byte {:#x})", at - 4))?;
        at = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_literals_and_an_overlapping_match() {
        // 5 literals "abcab", then an M2 match (t >= 64) of length 3 at distance 3 -> "cab",
        // then the end marker.
        // M2: t = ((len-1) << 5) | ((dist-1) & 7) << 2 | next; second byte = (dist-1) >> 3.
        let t = ((3 - 1) << 5) | (((3 - 1) & 7) << 2);
        let input = [17 + 5, b'a', b'b', b'c', b'a', b'b', t as u8, 0, 0x11, 0, 0];
        let mut out = Vec::new();
        decompress(&input, &mut out, 100).unwrap();
        assert_eq!(out, b"abcabcab");
    }

    #[test]
    fn refuses_lookbehind_and_output_overruns() {
        let t = ((3 - 1) << 5) | (((7 - 1) & 7) << 2);
        let input = [17 + 2, b'a', b'b', t as u8, 0, 0x11, 0, 0];
        let mut out = Vec::new();
        assert_eq!(
            decompress(&input, &mut out, 100),
            Err(LzoError::LookbehindOverrun)
        );
        let input = [17 + 5, b'a', b'b', b'c', b'a', b'b', 0x11, 0, 0];
        let mut out = Vec::new();
        assert_eq!(
            decompress(&input, &mut out, 4),
            Err(LzoError::OutputOverrun)
        );
    }

    #[test]
    fn btrfs_framing_bounds_its_lengths() {
        assert!(decompress_btrfs(&[1, 0], 10, 4096).is_err());
        assert!(decompress_btrfs(&[200, 0, 0, 0, 1, 0, 0, 0], 10, 4096).is_err());
        let seg = [17 + 2, b'h', b'i', 0x11, 0, 0];
        let mut d = Vec::new();
        d.extend_from_slice(&(4u32 + 4 + seg.len() as u32).to_le_bytes());
        d.extend_from_slice(&(seg.len() as u32).to_le_bytes());
        d.extend_from_slice(&seg);
        assert_eq!(decompress_btrfs(&d, 2, 4096).unwrap(), b"hi");
    }
}
