//! Regression tests for libclamav's page-map re-reads through callback maps.

use super::tests::{eicar, engine, MemReader};
use super::*;
use std::io::Write;

/// A ZIP with a deflated EICAR member first and a large stored member after it: libclamav
/// hashes the whole file first (ageing out the first pages of its page map), then reads the
/// central directory at the end and goes back to the first member.
fn big_zip() -> Vec<u8> {
    let mut deflated =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    deflated.write_all(&eicar()).unwrap();
    let member1 = deflated.finish().unwrap();
    let filler: Vec<u8> = (0..24u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let crc1 = crc32fast::hash(&eicar());
    let crc2 = crc32fast::hash(&filler);
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, method, data, crc, usize_) in [
        ("a.com", 8u16, &member1, crc1, eicar().len()),
        ("filler.bin", 0u16, &filler, crc2, filler.len()),
    ] {
        let offset = out.len() as u32;
        let mut local = Vec::new();
        local.extend(0x0403_4b50u32.to_le_bytes());
        local.extend(20u16.to_le_bytes());
        local.extend(0u16.to_le_bytes());
        local.extend(method.to_le_bytes());
        local.extend([0u8; 4]);
        local.extend(crc.to_le_bytes());
        local.extend((data.len() as u32).to_le_bytes());
        local.extend((usize_ as u32).to_le_bytes());
        local.extend((name.len() as u16).to_le_bytes());
        local.extend(0u16.to_le_bytes());
        local.extend(name.as_bytes());
        out.extend(&local);
        out.extend(data.iter());
        central.extend(0x0201_4b50u32.to_le_bytes());
        central.extend(20u16.to_le_bytes());
        central.extend(20u16.to_le_bytes());
        central.extend(0u16.to_le_bytes());
        central.extend(method.to_le_bytes());
        central.extend([0u8; 4]);
        central.extend(crc.to_le_bytes());
        central.extend((data.len() as u32).to_le_bytes());
        central.extend((usize_ as u32).to_le_bytes());
        central.extend((name.len() as u16).to_le_bytes());
        central.extend([0u8; 12]);
        central.extend(offset.to_le_bytes());
        central.extend(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    out.extend(&central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0u8; 4]);
    out.extend(2u16.to_le_bytes());
    out.extend(2u16.to_le_bytes());
    out.extend((central.len() as u32).to_le_bytes());
    out.extend(cd_offset.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out
}

/// Regression: through a callback map, libclamav's second read of an aged-out page failed
/// (it fstat()s the map handle as if it were a file descriptor) and the archive member was
/// silently not scanned: the file was reported clean. It is found from memory and through
/// the reader alike.
#[test]
fn member_behind_aged_pages_is_found() {
    let e = engine(Limits::default());
    let zip = big_zip();
    let v = e.scan_bytes(&zip, "big.zip").unwrap();
    assert_eq!(
        v.signatures,
        vec!["Test.EICAR.UNOFFICIAL".to_string()],
        "{v:?}"
    );
    let (v, sha) = e
        .scan_hashed(&mut MemReader::new(zip.clone()), "big.zip")
        .unwrap();
    assert_eq!(
        v.signatures,
        vec!["Test.EICAR.UNOFFICIAL".to_string()],
        "{v:?}"
    );
    assert!(v.incomplete.is_empty(), "{v:?}");
    use sha2::Digest;
    assert_eq!(sha, Some(sha2::Sha256::digest(&zip).into()));
}

/// If libclamav reports that it could not read its page map again, the verdict says so.
#[test]
fn map_read_failures_are_not_clean() {
    let raw = ffi::RawScan {
        map_failures: vec!["fmap_readpage: fstat failed: Bad file descriptor".into()],
        ..ffi::RawScan::default()
    };
    let v = verdict_of(raw, "x", 10);
    assert_eq!(v.incomplete.len(), 1);
    assert_eq!(v.incomplete[0].reason, Reason::EngineError);
}
