//! LZNT1 decompression (MS-XCA section 2.5 "LZNT1 Algorithm Details"), as used by NTFS for
//! compressed attributes.
//!
//! The input is a sequence of chunks, each with a 16-bit little-endian header (MS-XCA 2.5.1.1):
//! bits 0-11 are the chunk's total size minus 3 (header included), bits 12-14 a signature (3,
//! not checked: NTFS itself does not) and bit 15 says whether the chunk is compressed. A
//! header of 0 ends the stream. An uncompressed chunk holds 4096 literal bytes; a compressed
//! chunk is a series of flag bytes, each followed by eight items (bit set: a 16-bit copy token,
//! bit clear: a literal byte). The split of a copy token between displacement and length
//! depends on how much of the current 4096-byte chunk is already decompressed (MS-XCA 2.5.1.1,
//! "the number of bits used for the displacement ... is a function of the current position").
//!
//! NTFS semantics on top (what Windows and libntfs-3g do): every chunk decompresses into its own
//! 4096-byte slot of the output, and a chunk that yields fewer bytes is zero-filled to the end of
//! its slot; the output after the last chunk is zero-filled too.
//!
//! Everything is bounds-checked: a hostile chunk can neither read outside the input nor write
//! outside the output, and each loop advances through the input, so decoding always ends.

use std::fmt;

/// Uncompressed size of one LZNT1 chunk.
pub const CHUNK_SIZE: usize = 4096;

/// Why an LZNT1 stream could not be decoded; `offset` is the byte position in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lznt1Error {
    /// Byte offset in the compressed input where the problem was found.
    pub offset: usize,
    /// What is wrong.
    pub detail: &'static str,
}

impl fmt::Display for Lznt1Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "LZNT1 data corrupt at byte {}: {}",
            self.offset, self.detail
        )
    }
}

impl std::error::Error for Lznt1Error {}

fn err(offset: usize, detail: &'static str) -> Lznt1Error {
    Lznt1Error { offset, detail }
}

/// Decompresses `input` into `out`, filling all of `out` (bytes no chunk produced are zeros).
///
/// Chunk `i` lands at `out[i * 4096..]`; decoding stops at a zero header, at the end of the
/// input, or when `out` is full (trailing input is ignored then, as NTFS does). Fails on a chunk
/// that runs past the input, a copy token reaching before the chunk start, a chunk that would
/// decompress beyond 4096 bytes or beyond `out`, and an uncompressed chunk of the wrong size.
pub fn decompress(input: &[u8], out: &mut [u8]) -> Result<(), Lznt1Error> {
    let mut src = 0usize;
    let mut dst = 0usize;
    loop {
        if dst >= out.len() || src >= input.len() {
            break;
        }
        let Some(header) = crate::block::le::u16(input, src) else {
            // A single trailing byte cannot be a header: treat it as padding.
            break;
        };
        if header == 0 {
            break;
        }
        let total = usize::from(header & 0x0FFF) + 3;
        let compressed = header & 0x8000 != 0;
        let chunk_end = src
            .checked_add(total)
            .filter(|&e| e <= input.len())
            .ok_or_else(|| err(src, "chunk runs past the end of the compressed data"))?;
        let slot_end = dst.saturating_add(CHUNK_SIZE).min(out.len());
        let body = input.get(src + 2..chunk_end).unwrap_or(&[]);
        let slot = out.get_mut(dst..slot_end).unwrap_or(&mut []);
        if compressed {
            let produced = decompress_chunk(body, slot, src + 2)?;
            slot.get_mut(produced..)
                .unwrap_or(&mut [])
                .iter_mut()
                .for_each(|b| *b = 0);
        } else {
            // An uncompressed chunk holds exactly one chunk of literals; the slot may be
            // shorter at the end of the output.
            if body.len() != CHUNK_SIZE {
                return Err(err(src, "uncompressed chunk is not 4096 bytes"));
            }
            let n = slot.len();
            slot.copy_from_slice(&body[..n]);
        }
        src = chunk_end;
        dst = slot_end;
    }
    out.get_mut(dst..)
        .unwrap_or(&mut [])
        .iter_mut()
        .for_each(|b| *b = 0);
    Ok(())
}

/// Decodes one compressed chunk body into `out` (at most 4096 bytes), returning the number of
/// bytes produced. `base` is the body's offset in the whole input, for error messages.
fn decompress_chunk(body: &[u8], out: &mut [u8], base: usize) -> Result<usize, Lznt1Error> {
    let mut s = 0usize;
    let mut d = 0usize;
    while s < body.len() {
        let flags = body[s];
        s += 1;
        for bit in 0..8 {
            if s >= body.len() {
                break;
            }
            if flags & (1 << bit) == 0 {
                let slot = out
                    .get_mut(d)
                    .ok_or_else(|| err(base + s, "literal past the end of the chunk"))?;
                *slot = body[s];
                s += 1;
                d += 1;
                continue;
            }
            let token = crate::block::le::u16(body, s)
                .ok_or_else(|| err(base + s, "copy token cut off by the chunk end"))?;
            if d == 0 {
                return Err(err(base + s, "copy token at the start of a chunk"));
            }
            // Displacement gets 4 bits at the chunk start and one more each time the position
            // passes a power of two from 16 on (MS-XCA 2.5.1.1).
            let mut disp_extra = 0u32;
            let mut i = d - 1;
            while i >= 0x10 {
                disp_extra += 1;
                i >>= 1;
            }
            let len_bits = 12 - disp_extra.min(12);
            let back = usize::from(token >> len_bits) + 1;
            let len = usize::from(token & ((1u16 << len_bits) - 1)) + 3;
            if back > d {
                return Err(err(base + s, "copy token reaches before the chunk start"));
            }
            let end = d
                .checked_add(len)
                .filter(|&e| e <= out.len())
                .ok_or_else(|| err(base + s, "copy runs past the end of the chunk"))?;
            // Byte by byte: source and destination may overlap (run-length style copies).
            for k in d..end {
                out[k] = out[k - back];
            }
            d = end;
            s += 2;
        }
    }
    Ok(d)
}

/// A simple LZNT1 compressor (greedy, brute-force match search), for tests only: it produces
/// valid streams so round trips can exercise every token length split.
#[cfg(test)]
pub fn compress_for_tests(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in data.chunks(CHUNK_SIZE) {
        let mut body = Vec::new();
        let mut pos = 0usize;
        while pos < chunk.len() {
            let flag_at = body.len();
            body.push(0u8);
            for bit in 0..8 {
                if pos >= chunk.len() {
                    break;
                }
                let mut disp_extra = 0u32;
                if pos > 0 {
                    let mut i = pos - 1;
                    while i >= 0x10 {
                        disp_extra += 1;
                        i >>= 1;
                    }
                }
                let len_bits = 12 - disp_extra;
                let max_len = ((1usize << len_bits) - 1) + 3;
                let max_back = 1usize << (16 - len_bits);
                let (mut best_len, mut best_back) = (0usize, 0usize);
                for back in 1..=pos.min(max_back) {
                    let mut l = 0;
                    while pos + l < chunk.len()
                        && l < max_len
                        && chunk[pos + l - back] == chunk[pos + l]
                    {
                        l += 1;
                    }
                    if l > best_len {
                        best_len = l;
                        best_back = back;
                    }
                }
                if best_len >= 3 {
                    let token = (((best_back - 1) << len_bits) | (best_len - 3)) as u16;
                    body.extend_from_slice(&token.to_le_bytes());
                    body[flag_at] |= 1 << bit;
                    pos += best_len;
                } else {
                    body.push(chunk[pos]);
                    pos += 1;
                }
            }
        }
        if chunk.len() == CHUNK_SIZE && body.len() >= CHUNK_SIZE {
            out.extend_from_slice(&(0x3000u16 | 0x0FFF).to_le_bytes());
            out.extend_from_slice(chunk);
        } else {
            let header = 0xB000u16 | (body.len() + 2 - 3) as u16;
            out.extend_from_slice(&header.to_le_bytes());
            out.extend_from_slice(&body);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_made_literals_and_overlapping_copy() {
        // "abc" then a copy of back 3, length 6 -> "abcabcabc".
        // Position 3: disp bits 4, len bits 12: token = ((3-1) << 12) | (6-3).
        let token: u16 = (2 << 12) | 3;
        let mut body = vec![0b0000_1000u8, b'a', b'b', b'c'];
        body.extend_from_slice(&token.to_le_bytes());
        let mut input = (0xB000u16 | (body.len() as u16 + 2 - 3))
            .to_le_bytes()
            .to_vec();
        input.extend_from_slice(&body);
        let mut out = vec![0xEEu8; 16];
        decompress(&input, &mut out).unwrap();
        assert_eq!(&out[..9], b"abcabcabc");
        assert!(out[9..].iter().all(|&b| b == 0), "rest zero-filled");
    }

    #[test]
    fn run_of_one_byte() {
        // 'x' then back 1, len 4098-... capped by chunk: use len 100.
        let token: u16 = 100 - 3; // back 1 -> displacement field 0
        let mut body = vec![0b10u8, b'x'];
        body.extend_from_slice(&token.to_le_bytes());
        let mut input = (0xB000u16 | (body.len() as u16 - 1)).to_le_bytes().to_vec();
        input.extend_from_slice(&body);
        let mut out = vec![0u8; 4096];
        decompress(&input, &mut out).unwrap();
        assert!(out[..101].iter().all(|&b| b == b'x'));
        assert_eq!(out[101], 0);
    }

    #[test]
    fn uncompressed_chunk_and_zero_header_end() {
        let raw: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
        let mut input = 0x3FFFu16.to_le_bytes().to_vec();
        input.extend_from_slice(&raw);
        input.extend_from_slice(&[0, 0, 0xFF, 0xFF]);
        let mut out = vec![1u8; 8192];
        decompress(&input, &mut out).unwrap();
        assert_eq!(&out[..4096], &raw[..]);
        assert!(out[4096..].iter().all(|&b| b == 0));
    }

    #[test]
    fn hostile_inputs_fail_cleanly() {
        let mut out = vec![0u8; 4096];
        // Chunk longer than the input.
        assert!(decompress(&[0x10, 0xB0, 0], &mut out).is_err());
        // Copy token at chunk start.
        assert!(decompress(&[0x02, 0xB0, 0x01, 0x00, 0x00], &mut out).is_err());
        // Copy reaching back too far: literal then back 5.
        let token: u16 = 4 << 12;
        let mut body = vec![0b10u8, b'a'];
        body.extend_from_slice(&token.to_le_bytes());
        let mut input = (0xB000u16 | (body.len() as u16 - 1)).to_le_bytes().to_vec();
        input.extend_from_slice(&body);
        assert!(decompress(&input, &mut out).is_err());
        // Uncompressed chunk of the wrong size.
        assert!(decompress(&[0x05, 0x30, 1, 2, 3, 4, 5, 6], &mut out).is_err());
        // Copy longer than the chunk slot.
        let token: u16 = 0x0FFF;
        let mut body = vec![0b10u8, b'a'];
        body.extend_from_slice(&token.to_le_bytes());
        let mut input = (0xB000u16 | (body.len() as u16 - 1)).to_le_bytes().to_vec();
        input.extend_from_slice(&body);
        let mut small = vec![0u8; 100];
        assert!(decompress(&input, &mut small).is_err());
    }

    #[test]
    fn round_trips_through_the_test_compressor() {
        let mut seed = 0x1234_5678u32;
        let mut rnd = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let mut data = Vec::new();
        while data.len() < 3 * CHUNK_SIZE + 123 {
            match rnd() % 4 {
                0 => data.extend(std::iter::repeat_n(rnd() as u8, (rnd() % 300) as usize)),
                1 => data.extend((0..(rnd() % 50)).map(|_| rnd() as u8)),
                _ => {
                    let n = (rnd() % 40) as usize + 3;
                    if data.len() > n {
                        let at = (rnd() as usize) % (data.len() - n);
                        let copy = data[at..at + n].to_vec();
                        data.extend(copy);
                    }
                }
            }
        }
        let packed = compress_for_tests(&data);
        assert!(packed.len() < data.len());
        let mut out = vec![0u8; 4 * CHUNK_SIZE];
        decompress(&packed, &mut out).unwrap();
        assert_eq!(&out[..data.len()], &data[..]);
        // Random bytes: at least no panic and the output stays bounded.
        for _ in 0..200 {
            let junk: Vec<u8> = (0..(rnd() % 600)).map(|_| rnd() as u8).collect();
            let _ = decompress(&junk, &mut out);
        }
    }
}
