//! The bit input and canonical Huffman decoding shared by the XPRESS Huffman ([`super::xpress`])
//! and LZX ([`super::lzx`]) decoders of WOF (CompactOS) chunks.
//!
//! Both formats read 16-bit little-endian words, most significant bit first ([MS-XCA] 2.1,
//! "Microsoft LZX Data Compression Format" / [MS-PATCH] 2.2), and both code symbols with
//! canonical Huffman codes: codes are assigned in order of (length, symbol). The bit reader
//! models the reference decoders exactly (a buffer refilled by one word when fewer bits than
//! needed remain), because XPRESS interleaves whole bytes read from the current word position
//! and LZX aligns uncompressed blocks on that position. Reading past the end yields zero bits,
//! as in wimlib, but at most [`MAX_PHANTOM_WORDS`] words of them: a stream that needs more is
//! truncated.

/// Zero words that may be supplied past the end of the input (look-ahead of the last codeword).
pub const MAX_PHANTOM_WORDS: u32 = 2;

/// Why a chunk could not be decoded; `offset` is the input byte position reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset in the compressed chunk.
    pub offset: usize,
    /// What is wrong.
    pub detail: &'static str,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "corrupt at chunk byte {}: {}", self.offset, self.detail)
    }
}

impl std::error::Error for DecodeError {}

/// Reads bits MSB-first from 16-bit little-endian words, and bytes at the word position.
#[derive(Debug)]
pub struct BitReader<'a> {
    data: &'a [u8],
    next: usize,
    /// Buffered bits, left-aligned.
    buf: u32,
    /// Number of valid bits in `buf` (at most 32).
    left: u32,
    phantom: u32,
}

impl<'a> BitReader<'a> {
    /// A reader at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        BitReader {
            data,
            next: 0,
            buf: 0,
            left: 0,
            phantom: 0,
        }
    }

    /// The byte position of the next word or byte to be loaded.
    pub fn position(&self) -> usize {
        self.next
    }

    fn error(&self, detail: &'static str) -> DecodeError {
        DecodeError {
            offset: self.next,
            detail,
        }
    }

    /// Makes sure at least `n` (at most 16) bits are buffered.
    pub fn ensure(&mut self, n: u32) -> Result<(), DecodeError> {
        if self.left >= n {
            return Ok(());
        }
        let word = match self.data.get(self.next..self.next + 2) {
            Some(w) => {
                self.next += 2;
                u32::from(u16::from_le_bytes([w[0], w[1]]))
            }
            None => {
                self.phantom += 1;
                if self.phantom > MAX_PHANTOM_WORDS {
                    return Err(self.error("compressed data ends too early"));
                }
                0
            }
        };
        self.buf |= word << (16 - self.left);
        self.left += 16;
        Ok(())
    }

    /// The next `n` (at most 16) bits without consuming them; [`Self::ensure`] first.
    pub fn peek(&self, n: u32) -> u32 {
        if n == 0 {
            0
        } else {
            self.buf >> (32 - n)
        }
    }

    /// Drops `n` buffered bits.
    pub fn consume(&mut self, n: u32) {
        let n = n.min(self.left);
        self.buf = if n >= 32 { 0 } else { self.buf << n };
        self.left -= n;
    }

    /// Reads `n` (at most 16) bits.
    pub fn bits(&mut self, n: u32) -> Result<u32, DecodeError> {
        self.ensure(n)?;
        let v = self.peek(n);
        self.consume(n);
        Ok(v)
    }

    /// Reads one byte at the word position (XPRESS match lengths, LZX uncompressed blocks).
    pub fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self
            .data
            .get(self.next)
            .ok_or_else(|| self.error("compressed data ends too early"))?;
        self.next += 1;
        Ok(b)
    }

    /// Reads a little-endian 16-bit value at the word position.
    pub fn u16_le(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }

    /// Reads a little-endian 32-bit value at the word position.
    pub fn u32_le(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from(self.u16_le()?) | (u32::from(self.u16_le()?) << 16))
    }

    /// Discards the buffered bits (LZX uncompressed block alignment).
    pub fn align(&mut self) {
        self.buf = 0;
        self.left = 0;
    }

    /// Copies `out.len()` bytes from the word position.
    pub fn bytes(&mut self, out: &mut [u8]) -> Result<(), DecodeError> {
        let src = self
            .data
            .get(self.next..self.next + out.len())
            .ok_or_else(|| self.error("uncompressed block runs past the chunk"))?;
        out.copy_from_slice(src);
        self.next += out.len();
        Ok(())
    }
}

/// Bits resolved by the direct lookup table; longer codes are decoded canonically.
const TABLE_BITS: u32 = 10;

/// A canonical Huffman code prepared for decoding.
#[derive(Debug, Clone)]
pub struct HuffmanCode {
    max_len: u32,
    /// Direct lookup on the next `TABLE_BITS` bits: `(symbol, length)`, length 0 = longer code.
    table: Vec<(u16, u8)>,
    /// Number of codes of each length (index = length).
    counts: [u16; 17],
    /// Symbols sorted by (length, symbol).
    sorted: Vec<u16>,
    /// All lengths are zero: every decode yields symbol 0 and consumes nothing (as wimlib does).
    empty: bool,
}

impl HuffmanCode {
    /// Builds the code from per-symbol lengths (0 = unused) of at most `max_len` (<= 16) bits.
    /// Over-subscribed and incomplete codes are rejected; an all-zero code is accepted.
    pub fn new(lens: &[u8], max_len: u32) -> Result<Self, &'static str> {
        let mut counts = [0u16; 17];
        for &l in lens {
            if u32::from(l) > max_len {
                return Err("Huffman code length too long");
            }
            counts[usize::from(l)] += 1;
        }
        let mut remainder: i64 = 1;
        for c in counts.iter().take(max_len as usize + 1).skip(1) {
            remainder = (remainder << 1) - i64::from(*c);
            if remainder < 0 {
                return Err("over-subscribed Huffman code");
            }
        }
        let used = lens.len() - usize::from(counts[0]);
        if used == 0 {
            return Ok(HuffmanCode {
                max_len,
                table: Vec::new(),
                counts,
                sorted: Vec::new(),
                empty: true,
            });
        }
        if remainder != 0 {
            return Err("incomplete Huffman code");
        }
        let mut sorted: Vec<u16> = (0..lens.len())
            .filter(|&s| lens[s] != 0)
            .map(|s| s as u16)
            .collect();
        sorted.sort_by_key(|&s| (lens[usize::from(s)], s));
        let table_bits = TABLE_BITS.min(max_len);
        let mut table = vec![(0u16, 0u8); 1 << table_bits];
        let mut code = 0u32;
        let mut prev_len = 0u32;
        for &s in &sorted {
            let len = u32::from(lens[usize::from(s)]);
            code <<= len - prev_len;
            prev_len = len;
            if len <= table_bits {
                let shift = table_bits - len;
                let first = (code << shift) as usize;
                for e in &mut table[first..first + (1 << shift)] {
                    *e = (s, len as u8);
                }
            }
            code += 1;
        }
        counts[0] = 0;
        Ok(HuffmanCode {
            max_len,
            table,
            counts,
            sorted,
            empty: false,
        })
    }

    /// Decodes one symbol from `r`.
    pub fn decode(&self, r: &mut BitReader<'_>) -> Result<u16, DecodeError> {
        if self.empty {
            return Ok(0);
        }
        r.ensure(self.max_len)?;
        let table_bits = TABLE_BITS.min(self.max_len);
        let (sym, len) = self.table[r.peek(table_bits) as usize];
        if len != 0 {
            r.consume(u32::from(len));
            return Ok(sym);
        }
        // Canonical decoding bit by bit (codes longer than the table).
        let bits = r.peek(self.max_len);
        let mut code = 0u32;
        let mut first = 0u32;
        let mut index = 0u32;
        for len in 1..=self.max_len {
            code |= (bits >> (self.max_len - len)) & 1;
            let count = u32::from(self.counts[len as usize]);
            if code < first + count {
                r.consume(len);
                return Ok(self.sorted[(index + code - first) as usize]);
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        // Unreachable for a complete code; kept as an error rather than a panic.
        Err(r.error("no Huffman codeword matches"))
    }
}

/// Copies a match of `len` bytes from `offset` bytes back, within `out[..]` at `pos`.
pub fn copy_match(
    out: &mut [u8],
    pos: usize,
    offset: usize,
    len: usize,
) -> Result<(), &'static str> {
    if offset == 0 || offset > pos {
        return Err("match offset before the chunk start");
    }
    if len > out.len() - pos {
        return Err("match runs past the chunk end");
    }
    for i in pos..pos + len {
        out[i] = out[i - offset];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_codes_decode_short_and_long() {
        // Lengths: a=1, b=2, c..: a complete code with some codes longer than the table.
        let mut lens = vec![1u8, 2];
        lens.extend(std::iter::repeat_n(0, 3));
        // Fill the remaining half of the half: 2^-2 left -> 2 codes of 3, ... one of 12, two of 12.
        let mut l = vec![3u8, 4, 5, 6, 7, 8, 9, 10, 11, 12, 12];
        lens.append(&mut l);
        let code = HuffmanCode::new(&lens, 16).unwrap();
        // Encode: symbol 0 = "0", 1 = "10", 5 (len 3) = "110", last (len 12) = "111111111111".
        // Bits: 0 10 110 111111111111 -> pad to 32 bits.
        #[allow(clippy::unusual_byte_groupings)] // grouped by codeword
        let bits: u32 = 0b0_10_110_111111111111 << (32 - 18);
        let words = [(bits >> 16) as u16, bits as u16];
        let data: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut r = BitReader::new(&data);
        assert_eq!(code.decode(&mut r).unwrap(), 0);
        assert_eq!(code.decode(&mut r).unwrap(), 1);
        assert_eq!(code.decode(&mut r).unwrap(), 5);
        assert_eq!(code.decode(&mut r).unwrap(), (lens.len() - 1) as u16);
    }

    #[test]
    fn bad_codes_are_rejected() {
        assert!(HuffmanCode::new(&[1, 1, 1], 16).is_err());
        assert!(HuffmanCode::new(&[1, 2], 16).is_err());
        assert!(HuffmanCode::new(&[0, 0], 16).is_ok());
        assert!(HuffmanCode::new(&[17, 1], 16).is_err());
    }

    #[test]
    fn reading_past_the_end_is_bounded() {
        let mut r = BitReader::new(&[0xff, 0xff]);
        assert_eq!(r.bits(16).unwrap(), 0xffff);
        for _ in 0..MAX_PHANTOM_WORDS {
            assert_eq!(r.bits(16).unwrap(), 0);
        }
        assert!(r.bits(16).is_err());
    }
}
