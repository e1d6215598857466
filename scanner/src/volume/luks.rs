//! LUKS1 and LUKS2 headers: recognised and named (version, UUID, label), never decrypted.
//!
//! Follows the LUKS1 on-disk format specification 1.2.3 (section 2.4, `phdr`) and the LUKS2
//! on-disk format specification 1.1.x (section 2, binary header): both start with the magic
//! `LUKS\xba\xbe` and a big-endian version; the UUID sits at byte 168 in both.

use crate::block::{be, BlockSource};
use crate::error::Result;

/// LUKS magic at byte 0.
pub const LUKS_MAGIC: &[u8; 6] = b"LUKS\xba\xbe";
/// Bytes read to recognise a header.
const HEADER_PROBE: usize = 512;

/// A recognised LUKS header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LuksHeader {
    /// 1 or 2.
    pub version: u16,
    /// The volume UUID.
    pub uuid: String,
    /// The LUKS2 label, if set.
    pub label: Option<String>,
    /// Cipher (LUKS1 header: `aes-xts-plain64`); LUKS2 keeps it in its JSON area.
    pub cipher: Option<String>,
}

fn c_string(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let s = String::from_utf8_lossy(&b[..end]).trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// Reads the LUKS header of `dev`, if it has one.
pub fn probe(dev: &dyn BlockSource) -> Result<Option<LuksHeader>> {
    if dev.size() < HEADER_PROBE as u64 {
        return Ok(None);
    }
    let mut b = [0u8; HEADER_PROBE];
    dev.read_exact_at(0, &mut b)?;
    Ok(parse(&b))
}

/// Parses a LUKS header from its first 512 bytes.
pub fn parse(b: &[u8]) -> Option<LuksHeader> {
    if b.get(..6)? != LUKS_MAGIC {
        return None;
    }
    let version = be::u16(b, 6)?;
    let uuid = c_string(b.get(168..208)?).unwrap_or_default();
    match version {
        1 => {
            let cipher = c_string(b.get(8..40)?);
            let mode = c_string(b.get(40..72)?);
            Some(LuksHeader {
                version,
                uuid,
                label: None,
                cipher: match (cipher, mode) {
                    (Some(c), Some(m)) => Some(format!("{c}-{m}")),
                    (c, _) => c,
                },
            })
        }
        2 => Some(LuksHeader {
            version,
            uuid,
            label: c_string(b.get(24..72)?),
            cipher: None,
        }),
        _ => Some(LuksHeader {
            version,
            uuid,
            label: None,
            cipher: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luks2_header() {
        let mut b = vec![0u8; 512];
        b[..6].copy_from_slice(LUKS_MAGIC);
        b[7] = 2;
        b[24..29].copy_from_slice(b"label");
        b[168..172].copy_from_slice(b"abcd");
        let h = parse(&b).unwrap();
        assert_eq!(
            (h.version, h.uuid.as_str(), h.label.as_deref()),
            (2, "abcd", Some("label"))
        );
        b[0] = b'X';
        assert!(parse(&b).is_none());
        assert!(parse(&b[..4]).is_none());
    }
}
