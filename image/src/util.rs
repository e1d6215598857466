//! Small helpers shared by the build steps: running tools, hashing, identifiers derived from the
//! build's inputs.

use std::io::Read;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// Runs `cmd`, returning its standard output; a failure carries the tool's standard error.
pub fn run(cmd: &mut Command) -> Result<String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().with_context(|| {
        format!("cannot run {program} (is it installed? see scripts/bootstrap)")
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!("{program} failed ({}): {}", out.status, stderr.trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Hex SHA-256 of bytes.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// `value` rounded up to a multiple of `align` (a power of two or any non-zero value).
pub fn align_up(value: u64, align: u64) -> Result<u64> {
    let rem = value % align;
    if rem == 0 {
        return Ok(value);
    }
    value
        .checked_add(align - rem)
        .context("size overflows while aligning")
}

/// Identifiers (GUIDs, serials, volume ids) derived from a digest of the build's inputs, so that
/// two builds from the same inputs are byte-identical and different inputs differ.
#[derive(Debug, Clone)]
pub struct IdSeed([u8; 32]);

impl IdSeed {
    /// A seed from the digest of everything that went into the image.
    pub fn new(inputs_digest: &[u8]) -> Self {
        Self(Sha256::digest(inputs_digest).into())
    }

    /// `N` bytes for the purpose `label` (different labels give unrelated bytes).
    pub fn bytes<const N: usize>(&self, label: &str) -> [u8; N] {
        let mut out = [0u8; N];
        let mut counter = 0u32;
        let mut filled = 0;
        while filled < N {
            let block = Sha256::new()
                .chain_update(self.0)
                .chain_update(label.as_bytes())
                .chain_update(counter.to_le_bytes())
                .finalize();
            let n = (N - filled).min(block.len());
            out[filled..filled + n].copy_from_slice(&block[..n]);
            filled += n;
            counter += 1;
        }
        out
    }

    /// A random-looking (version 4, RFC 4122 variant) GUID in the mixed-endian on-disk layout
    /// of GPT and VHDX.
    pub fn guid(&self, label: &str) -> [u8; 16] {
        let mut g = self.bytes::<16>(label);
        g[7] = (g[7] & 0x0f) | 0x40; // time_hi_and_version is little-endian: version in byte 7
        g[8] = (g[8] & 0x3f) | 0x80;
        g
    }

    /// A 32-bit identifier (FAT volume id, VMDK CID).
    pub fn u32(&self, label: &str) -> u32 {
        u32::from_le_bytes(self.bytes::<4>(label))
    }
}

/// Parses a GUID string (`C12A7328-F81F-11D2-BA4B-00A0C93EC93B`) into the mixed-endian on-disk
/// layout used by GPT and VHDX.
pub const fn guid(s: &str) -> [u8; 16] {
    let b = s.as_bytes();
    assert!(b.len() == 36);
    // Byte order on disk: the first three fields little-endian, the rest as written.
    const ORDER: [usize; 16] = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
    let mut hexpos = [0usize; 16];
    let mut i = 0;
    let mut n = 0;
    while i < 36 {
        if b[i] != b'-' {
            hexpos[n] = i;
            n += 1;
            i += 2;
        } else {
            i += 1;
        }
    }
    let mut out = [0u8; 16];
    let mut k = 0;
    while k < 16 {
        let p = hexpos[ORDER[k]];
        out[k] = (hexval(b[p]) << 4) | hexval(b[p + 1]);
        k += 1;
    }
    out
}

const fn hexval(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => panic!("not a hex digit in a GUID constant"),
    }
}

/// Formats a mixed-endian on-disk GUID as text.
pub fn guid_text(g: &[u8; 16]) -> String {
    format!(
        "{:08X}-{:04X}-{:04X}-{}-{}",
        u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
        u16::from_le_bytes([g[4], g[5]]),
        u16::from_le_bytes([g[6], g[7]]),
        hex::encode_upper(&g[8..10]),
        hex::encode_upper(&g[10..16])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_round_trips() {
        let t = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
        let g = guid(t);
        assert_eq!(g[0], 0x28);
        assert_eq!(guid_text(&g), t);
    }

    #[test]
    fn seeds_are_deterministic_and_labelled() {
        let a = IdSeed::new(b"x");
        assert_eq!(a.guid("disk"), IdSeed::new(b"x").guid("disk"));
        assert_ne!(a.guid("disk"), a.guid("part"));
        assert_ne!(a.guid("disk"), IdSeed::new(b"y").guid("disk"));
        assert_eq!(guid_text(&a.guid("disk")).as_bytes()[14], b'4');
        assert_eq!(a.bytes::<40>("long").len(), 40);
    }

    #[test]
    fn align_up_works() {
        assert_eq!(align_up(0, 512).unwrap(), 0);
        assert_eq!(align_up(1, 512).unwrap(), 512);
        assert_eq!(align_up(1024, 512).unwrap(), 1024);
        assert!(align_up(u64::MAX, 512).is_err());
    }
}
