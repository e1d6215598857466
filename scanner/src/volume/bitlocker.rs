//! BitLocker volumes: recognised by the `-FVE-FS-` signature of their boot sector and named by
//! the volume GUID of their first FVE metadata block; never decrypted.
//!
//! Follows libbde's "BitLocker Drive Encryption (BDE) format" document: section 3 (volume
//! header: FVE metadata block offsets at 0xb0, 0xb8 and 0xc0) and section 4 (FVE metadata block
//! header of 64 bytes, then the metadata header whose volume identifier GUID is at byte 16).

use crate::block::{le, BlockSource};
use crate::error::Result;

/// Boot-sector signature of a BitLocker volume (Windows Vista and later).
pub const FVE_SIGNATURE: &[u8; 8] = b"-FVE-FS-";

/// A recognised BitLocker volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitLockerVolume {
    /// The volume identifier GUID from the FVE metadata, if it could be read.
    pub guid: Option<String>,
}

/// Formats a little-endian Windows GUID.
pub fn guid_string(b: &[u8]) -> Option<String> {
    let d1 = le::u32(b, 0)?;
    let d2 = le::u16(b, 4)?;
    let d3 = le::u16(b, 6)?;
    let tail = b.get(8..16)?;
    Some(format!(
        "{d1:08x}-{d2:04x}-{d3:04x}-{}-{}",
        hex::encode(&tail[..2]),
        hex::encode(&tail[2..])
    ))
}

/// Recognises a BitLocker volume on `dev`.
pub fn probe(dev: &dyn BlockSource) -> Result<Option<BitLockerVolume>> {
    if dev.size() < 512 {
        return Ok(None);
    }
    let mut boot = [0u8; 512];
    dev.read_exact_at(0, &mut boot)?;
    if boot.get(3..11) != Some(FVE_SIGNATURE.as_slice()) {
        return Ok(None);
    }
    let mut guid = None;
    if let Some(off) = le::u64(&boot, 0xb0) {
        let mut m = [0u8; 96];
        if off
            .checked_add(m.len() as u64)
            .is_some_and(|e| e <= dev.size())
            && dev.read_exact_at(off, &mut m).is_ok()
            && m.get(..8) == Some(FVE_SIGNATURE.as_slice())
        {
            guid = m.get(80..96).and_then(guid_string);
        }
    }
    Ok(Some(BitLockerVolume { guid }))
}
