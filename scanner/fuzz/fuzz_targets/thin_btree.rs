//! Thin pool metadata (superblock, two-level mapping btree) on arbitrary bytes: never panics,
//! never hangs (descent depth is bounded, node numbers are checked against the device size).
//! The first 16 bytes choose the device id and virtual block looked up.
#![no_main]

use coldscan_scanner::volume::lvm2::thin::{map_block, read_superblock};
use coldscan_scanner::Error;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((keys, meta)) = data.split_at_checked(16) else {
        return;
    };
    let dev = u64::from_le_bytes(keys[..8].try_into().unwrap_or_default());
    let vblock = u64::from_le_bytes(keys[8..].try_into().unwrap_or_default());
    let read = |off: u64, buf: &mut [u8]| -> Result<(), Error> {
        let o = usize::try_from(off).map_err(|_| Error::corrupt("fuzz", off, "offset"))?;
        let src = o
            .checked_add(buf.len())
            .and_then(|e| meta.get(o..e))
            .ok_or_else(|| Error::corrupt("fuzz", off, "past the end"))?;
        buf.copy_from_slice(src);
        Ok(())
    };
    if let Ok(sb) = read_superblock(&read, meta.len() as u64, "fuzz") {
        for v in [vblock, 0, vblock.wrapping_add(1)] {
            let _ = map_block(&read, &sb, dev, v, "fuzz");
        }
    }
});
