//! LZXPRESS Huffman decompression of one WOF chunk ([MS-XCA] section 2.1 "LZ77+Huffman
//! Compression Algorithm Details" and 2.2 "Decompression"), as WOF's XPRESS4K/8K/16K and WIM's
//! XPRESS resources use it: each chunk (at most 64 KiB) is one block with its own code.
//!
//! A chunk starts with 256 bytes of 4-bit code lengths for 512 symbols (symbol `2k` in the low
//! nibble of byte `k`). Symbols 0-255 are literals; symbol `256 + 16 * log2(offset) + l` is a
//! match whose offset is `2^log2 + next log2 bits` and whose length is `l + 3`, with `l == 15`
//! extended by one byte and `255` by a 16-bit value, both read at the word position.

use super::huffman::{copy_match, BitReader, DecodeError, HuffmanCode};

/// Symbols of the code: 256 literals and 256 match headers.
const NUM_SYMBOLS: usize = 512;
/// Longest codeword.
const MAX_CODEWORD_LEN: u32 = 15;
/// Shortest match.
const MIN_MATCH: usize = 3;

/// Decompresses one chunk into `out` (its uncompressed size, known from the chunk table).
pub fn decompress(input: &[u8], out: &mut [u8]) -> Result<(), DecodeError> {
    let table = input.get(..NUM_SYMBOLS / 2).ok_or(DecodeError {
        offset: 0,
        detail: "chunk shorter than its 256-byte Huffman table",
    })?;
    let lens: Vec<u8> = table.iter().flat_map(|b| [b & 0x0F, b >> 4]).collect();
    let code = HuffmanCode::new(&lens, MAX_CODEWORD_LEN)
        .map_err(|detail| DecodeError { offset: 0, detail })?;
    let mut r = BitReader::new(&input[NUM_SYMBOLS / 2..]);
    let at = |r: &BitReader<'_>, detail| DecodeError {
        offset: NUM_SYMBOLS / 2 + r.position(),
        detail,
    };
    let mut pos = 0usize;
    while pos < out.len() {
        let sym = usize::from(code.decode(&mut r)?);
        if sym < 256 {
            out[pos] = sym as u8;
            pos += 1;
            continue;
        }
        let mut len = sym & 0x0F;
        let log2 = ((sym >> 4) & 0x0F) as u32;
        r.ensure(16)?;
        let offset = (1usize << log2) | r.peek(log2) as usize;
        r.consume(log2);
        if len == 0x0F {
            len += usize::from(r.byte()?);
            if len == 0x0F + 0xFF {
                len = usize::from(r.u16_le()?);
            }
        }
        len += MIN_MATCH;
        copy_match(out, pos, offset, len).map_err(|d| at(&r, d))?;
        pos += len;
    }
    Ok(())
}
