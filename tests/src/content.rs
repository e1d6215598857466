//! Deterministic file content: given bytes, or pseudo-random bytes from a seeded xorshift
//! generator (fast enough to make files of hundreds of megabytes in a second).

use sha2::{Digest, Sha256};

/// The content of a planted file or stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Exactly these bytes.
    Bytes(Vec<u8>),
    /// `len` pseudo-random bytes from `seed` (see [`Xorshift`]).
    Random {
        /// Generator seed.
        seed: u64,
        /// Length in bytes.
        len: u64,
    },
}

impl Content {
    /// Content made of the UTF-8 bytes of `s`.
    pub fn text(s: &str) -> Content {
        Content::Bytes(s.as_bytes().to_vec())
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Content::Bytes(b) => b.len() as u64,
            Content::Random { len, .. } => *len,
        }
    }

    /// Whether the content is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Feeds the content to `sink` in chunks of at most 1 MiB.
    pub fn for_each_chunk(
        &self,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        match self {
            Content::Bytes(b) => sink(b),
            Content::Random { seed, len } => {
                let mut rng = Xorshift::new(*seed);
                let mut buf = vec![0u8; 1 << 20];
                let mut left = *len;
                while left > 0 {
                    let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
                    rng.fill(&mut buf[..n]);
                    sink(&buf[..n])?;
                    left -= n as u64;
                }
                Ok(())
            }
        }
    }

    /// The whole content in memory (for small contents).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.for_each_chunk(&mut |c| {
            v.extend_from_slice(c);
            Ok(())
        })
        .expect("in-memory sink does not fail");
        v
    }
}

/// xorshift64* (Vigna): deterministic, fast, not cryptographic.
#[derive(Debug, Clone)]
pub struct Xorshift(u64);

impl Xorshift {
    /// A generator; seed 0 is replaced by a fixed non-zero constant.
    pub fn new(seed: u64) -> Xorshift {
        Xorshift(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let last = self.next_u64().to_le_bytes();
            rest.copy_from_slice(&last[..rest.len()]);
        }
    }
}

/// A stable seed derived from a string (FNV-1a), so that a file's content depends on its path.
pub fn seed_of(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Hex SHA-256 of a byte slice.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_content_is_deterministic_and_chunk_independent() {
        let c = Content::Random {
            seed: 7,
            len: (1 << 20) + 5,
        };
        let a = c.to_vec();
        assert_eq!(a.len(), (1 << 20) + 5);
        assert_eq!(a, c.to_vec());
        // The first bytes do not depend on the total length.
        let short = Content::Random { seed: 7, len: 16 }.to_vec();
        assert_eq!(&a[..16], &short[..]);
        assert_ne!(
            a,
            Content::Random {
                seed: 8,
                len: (1 << 20) + 5
            }
            .to_vec()
        );
    }
}
