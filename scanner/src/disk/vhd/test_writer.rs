//! A test-only VHD writer (dynamic and differencing disks) following the "Virtual Hard Disk
//! Image Format Specification": qemu-img cannot create differencing VHDs, so the tests make
//! them here. Its dynamic output is checked against `qemu-img convert -f vpc` in the tests.

use std::path::Path;

use super::footer::checksum;

/// Parent locators: platform code and path.
pub(crate) type Locators<'a> = Vec<(&'a [u8; 4], String)>;

/// What to write.
pub(crate) struct VhdSpec<'a> {
    /// Virtual size (a multiple of 512).
    pub size: u64,
    /// Block size (a power of two, >= 512).
    pub block_size: u32,
    /// Footer unique id.
    pub unique_id: [u8; 16],
    /// Differencing: the parent's unique id and locators (platform code, path).
    pub parent: Option<([u8; 16], Locators<'a>)>,
    /// Sector contents present in this file (`None`: absent, i.e. parent or zeros).
    pub sector: &'a dyn Fn(u64) -> Option<[u8; 512]>,
}

fn footer(spec: &VhdSpec, disk_type: u32, data_offset: u64) -> [u8; 512] {
    let mut f = [0u8; 512];
    f[0..8].copy_from_slice(b"conectix");
    f[8..12].copy_from_slice(&2u32.to_be_bytes());
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    f[16..24].copy_from_slice(&data_offset.to_be_bytes());
    // "win ": readers (QEMU included) take the size from the current size field.
    f[28..32].copy_from_slice(b"win ");
    f[36..40].copy_from_slice(b"Wi2k");
    f[40..48].copy_from_slice(&spec.size.to_be_bytes());
    f[48..56].copy_from_slice(&spec.size.to_be_bytes());
    f[56..58].copy_from_slice(&1024u16.to_be_bytes());
    f[58] = 16;
    f[59] = 63;
    f[60..64].copy_from_slice(&disk_type.to_be_bytes());
    f[68..84].copy_from_slice(&spec.unique_id);
    let c = checksum(&f, 64..68);
    f[64..68].copy_from_slice(&c.to_be_bytes());
    f
}

/// Writes the disk to `path`.
pub(crate) fn write_vhd(path: &Path, spec: &VhdSpec) {
    let bs = u64::from(spec.block_size);
    let blocks = spec.size.div_ceil(bs);
    let sectors_per_block = bs / 512;
    let bitmap_size = sectors_per_block.div_ceil(8).div_ceil(512) * 512;
    let disk_type = if spec.parent.is_some() { 4 } else { 3 };

    // Layout: footer copy, dynamic header, locator data (512 bytes each), BAT, blocks, footer.
    let locators = spec
        .parent
        .as_ref()
        .map(|(_, l)| l.clone())
        .unwrap_or_default();
    let locator_start = 512 + 1024;
    let bat_offset = locator_start + 512 * locators.len() as u64;
    let bat_bytes = (blocks * 4).div_ceil(512) * 512;
    let mut out = vec![0u8; (bat_offset + bat_bytes) as usize];
    out[0..512].copy_from_slice(&footer(spec, disk_type, 512));

    let mut h = [0u8; 1024];
    h[0..8].copy_from_slice(b"cxsparse");
    h[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
    h[16..24].copy_from_slice(&bat_offset.to_be_bytes());
    h[24..28].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    h[28..32].copy_from_slice(&(blocks as u32).to_be_bytes());
    h[32..36].copy_from_slice(&spec.block_size.to_be_bytes());
    if let Some((parent_id, _)) = &spec.parent {
        h[40..56].copy_from_slice(parent_id);
        let name: Vec<u8> = "parent.vhd"
            .encode_utf16()
            .flat_map(|u| u.to_be_bytes())
            .collect();
        h[64..64 + name.len()].copy_from_slice(&name);
    }
    for (i, (code, text)) in locators.iter().enumerate() {
        let data: Vec<u8> = if code == &b"MacX" {
            text.as_bytes().to_vec()
        } else {
            text.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
        };
        let off = locator_start + 512 * i as u64;
        out[off as usize..off as usize + data.len()].copy_from_slice(&data);
        let at = 576 + i * 24;
        h[at..at + 4].copy_from_slice(*code);
        h[at + 4..at + 8].copy_from_slice(&512u32.to_be_bytes());
        h[at + 8..at + 12].copy_from_slice(&(data.len() as u32).to_be_bytes());
        h[at + 16..at + 24].copy_from_slice(&off.to_be_bytes());
    }
    let c = checksum(&h, 36..40);
    h[36..40].copy_from_slice(&c.to_be_bytes());
    out[512..1536].copy_from_slice(&h);

    for b in 0..blocks {
        let first = b * sectors_per_block;
        let present: Vec<Option<[u8; 512]>> = (first..first + sectors_per_block)
            .map(|s| {
                if s * 512 < spec.size {
                    (spec.sector)(s)
                } else {
                    None
                }
            })
            .collect();
        let bat_entry = if present.iter().any(Option::is_some) {
            let start = out.len() as u64;
            let mut bitmap = vec![0u8; bitmap_size as usize];
            let mut data = vec![0u8; bs as usize];
            for (i, s) in present.iter().enumerate() {
                if let Some(sec) = s {
                    bitmap[i / 8] |= 0x80 >> (i % 8);
                    data[i * 512..(i + 1) * 512].copy_from_slice(sec);
                }
            }
            out.extend_from_slice(&bitmap);
            out.extend_from_slice(&data);
            (start / 512) as u32
        } else {
            u32::MAX
        };
        let at = (bat_offset + b * 4) as usize;
        out[at..at + 4].copy_from_slice(&bat_entry.to_be_bytes());
    }
    out.extend_from_slice(&footer(spec, disk_type, 512));
    std::fs::write(path, out).unwrap();
}
