//! A test-only VHDX writer (dynamic and differencing disks) following [MS-VHDX]: qemu-img cannot
//! create differencing VHDX files, so the tests make them here. Its dynamic output is checked
//! against `qemu-img convert -f vhdx` in the tests.
//!
//! Layout: header section (1 MiB), log (1 MiB, empty), metadata region (1 MiB), BAT (1 MiB),
//! then the blocks; 1 MiB blocks and 512-byte sectors.

use std::path::Path;

use super::header::{checksum, guid_string, Guid};
use super::metadata::VHDX_LOCATOR_TYPE;
use super::region::{BAT_GUID, METADATA_GUID};

const MIB: usize = 1 << 20;
const BLOCK: usize = MIB;
const CHUNK_RATIO: usize = (1 << 23) * 512 / BLOCK;

/// What to write.
pub(crate) struct VhdxSpec<'a> {
    /// Virtual size (a multiple of 512).
    pub size: u64,
    /// The header's data write GUID (children record it).
    pub data_write_guid: Guid,
    /// Differencing: the parent's data write GUID and locator entries (key, value).
    pub parent: Option<(Guid, Vec<(&'a str, String)>)>,
    /// Sector contents present in this file (`None`: absent).
    pub sector: &'a dyn Fn(u64) -> Option<[u8; 512]>,
}

fn put(out: &mut [u8], at: usize, bytes: &[u8]) {
    out[at..at + bytes.len()].copy_from_slice(bytes);
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

/// Writes the disk to `path`.
pub(crate) fn write_vhdx(path: &Path, spec: &VhdxSpec) {
    let log_off = MIB;
    let meta_off = 2 * MIB;
    let bat_off = 3 * MIB;
    let mut out = vec![0u8; 4 * MIB];
    put(&mut out, 0, b"vhdxfile");
    put(&mut out, 8, &utf16("coldscan test writer"));

    for (i, at) in [64 * 1024usize, 128 * 1024].into_iter().enumerate() {
        let mut h = vec![0u8; 4096];
        put(&mut h, 0, b"head");
        put(&mut h, 8, &(i as u64 + 1).to_le_bytes());
        put(&mut h, 16, &[0x11; 16]);
        put(&mut h, 32, &spec.data_write_guid);
        put(&mut h, 66, &1u16.to_le_bytes());
        put(&mut h, 68, &(MIB as u32).to_le_bytes());
        put(&mut h, 72, &(log_off as u64).to_le_bytes());
        let c = checksum(&h, 4);
        put(&mut h, 4, &c.to_le_bytes());
        put(&mut out, at, &h);
    }
    for at in [192 * 1024usize, 256 * 1024] {
        let mut r = vec![0u8; 64 * 1024];
        put(&mut r, 0, b"regi");
        put(&mut r, 8, &2u32.to_le_bytes());
        for (j, (g, off)) in [(BAT_GUID, bat_off), (METADATA_GUID, meta_off)]
            .into_iter()
            .enumerate()
        {
            let e = 16 + j * 32;
            put(&mut r, e, &g);
            put(&mut r, e + 16, &(off as u64).to_le_bytes());
            put(&mut r, e + 24, &(MIB as u32).to_le_bytes());
            put(&mut r, e + 28, &1u32.to_le_bytes());
        }
        let c = checksum(&r, 4);
        put(&mut r, 4, &c.to_le_bytes());
        put(&mut out, at, &r);
    }

    // Metadata: table, then items from +64 KiB.
    let differencing = spec.parent.is_some();
    let mut items: Vec<(Guid, u32, Vec<u8>)> = vec![
        (
            super::header::guid(
                0xcaa1_6737,
                0xfa36,
                0x4d43,
                [0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b],
            ),
            4,
            [
                (BLOCK as u32).to_le_bytes(),
                (if differencing { 2u32 } else { 0 }).to_le_bytes(),
            ]
            .concat(),
        ),
        (
            super::header::guid(
                0x2fa5_4224,
                0xcd1b,
                0x4876,
                [0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8],
            ),
            6,
            spec.size.to_le_bytes().to_vec(),
        ),
        (
            super::header::guid(
                0x8141_bf1d,
                0xa96f,
                0x4709,
                [0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f],
            ),
            6,
            512u32.to_le_bytes().to_vec(),
        ),
        (
            super::header::guid(
                0xcda3_48c7,
                0x445d,
                0x4471,
                [0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56],
            ),
            6,
            512u32.to_le_bytes().to_vec(),
        ),
        (
            super::header::guid(
                0xbeca_12ab,
                0xb2e6,
                0x4523,
                [0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46],
            ),
            6,
            vec![0x42; 16],
        ),
    ];
    if let Some((parent_guid, entries)) = &spec.parent {
        let mut kv: Vec<(String, String)> = vec![(
            "parent_linkage".into(),
            format!("{{{}}}", guid_string(parent_guid)),
        )];
        kv.extend(entries.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let mut item = VHDX_LOCATOR_TYPE.to_vec();
        item.extend_from_slice(&0u16.to_le_bytes());
        item.extend_from_slice(&(kv.len() as u16).to_le_bytes());
        let mut strings = Vec::new();
        let base = 20 + kv.len() * 12;
        for (k, v) in &kv {
            let (k, v) = (utf16(k), utf16(v));
            let ko = base + strings.len();
            strings.extend_from_slice(&k);
            let vo = base + strings.len();
            strings.extend_from_slice(&v);
            item.extend_from_slice(&(ko as u32).to_le_bytes());
            item.extend_from_slice(&(vo as u32).to_le_bytes());
            item.extend_from_slice(&(k.len() as u16).to_le_bytes());
            item.extend_from_slice(&(v.len() as u16).to_le_bytes());
        }
        item.extend_from_slice(&strings);
        items.push((
            super::header::guid(
                0xa8d3_5f2d,
                0xb30b,
                0x454d,
                [0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c],
            ),
            4,
            item,
        ));
    }
    put(&mut out, meta_off, b"metadata");
    put(&mut out, meta_off + 10, &(items.len() as u16).to_le_bytes());
    let mut data_at = 64 * 1024;
    for (i, (g, flags, data)) in items.iter().enumerate() {
        let e = meta_off + 32 + i * 32;
        put(&mut out, e, g);
        put(&mut out, e + 16, &(data_at as u32).to_le_bytes());
        put(&mut out, e + 20, &(data.len() as u32).to_le_bytes());
        put(&mut out, e + 24, &flags.to_le_bytes());
        put(&mut out, meta_off + data_at, data);
        data_at += data.len().div_ceil(8) * 8;
    }

    // Blocks and the BAT (payload entries with a sector bitmap entry after each chunk).
    let blocks = (spec.size as usize).div_ceil(BLOCK);
    let sectors = BLOCK / 512;
    let mut bitmap = vec![0u8; MIB]; // the one sector bitmap block (chunk 0 covers 4 GiB)
    let mut any_partial = false;
    for b in 0..blocks {
        let present: Vec<Option<[u8; 512]>> = (0..sectors)
            .map(|i| {
                let s = (b * sectors + i) as u64;
                if s * 512 < spec.size {
                    (spec.sector)(s)
                } else {
                    None
                }
            })
            .collect();
        let n = present.iter().filter(|s| s.is_some()).count();
        let state: u64 = if n == 0 {
            0
        } else if n == sectors || !differencing {
            6
        } else {
            7
        };
        let mut entry = state;
        if n > 0 {
            let off = out.len();
            let mut data = vec![0u8; BLOCK];
            for (i, s) in present.iter().enumerate() {
                if let Some(sec) = s {
                    data[i * 512..(i + 1) * 512].copy_from_slice(sec);
                    let bit = b * sectors + i;
                    bitmap[bit / 8] |= 1 << (bit % 8);
                }
            }
            out.extend_from_slice(&data);
            entry |= off as u64;
            any_partial |= state == 7;
        }
        let index = b + b / CHUNK_RATIO;
        put(&mut out, bat_off + index * 8, &entry.to_le_bytes());
    }
    if differencing && any_partial {
        let off = out.len();
        out.extend_from_slice(&bitmap);
        put(
            &mut out,
            bat_off + CHUNK_RATIO * 8,
            &(6u64 | off as u64).to_le_bytes(),
        );
    }
    std::fs::write(path, out).unwrap();
}
