//! The persistent exception store of a classic LVM2 snapshot (dm-snapshot's COW device) on
//! arbitrary bytes: never panics, never hangs (areas are as many as fit in the device), and
//! every placement it gives stays inside the origin or the COW device. The first 16 bytes give
//! the origin's size and an offset to place; the rest is the COW device.
#![no_main]

use coldscan_scanner::volume::lvm2::snapshot::{read_store, Placement};
use coldscan_scanner::Error;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((keys, cow)) = data.split_at_checked(16) else {
        return;
    };
    // Origins up to 1 TiB: chunk numbers past them must be refused.
    let origin = u64::from_le_bytes(keys[..8].try_into().unwrap_or_default()) % (1 << 40);
    let offset = u64::from_le_bytes(keys[8..].try_into().unwrap_or_default());
    let read = |off: u64, buf: &mut [u8]| -> Result<(), Error> {
        let o = usize::try_from(off).map_err(|_| Error::corrupt("fuzz", off, "offset"))?;
        let src = o
            .checked_add(buf.len())
            .and_then(|e| cow.get(o..e))
            .ok_or_else(|| Error::corrupt("fuzz", off, "past the end"))?;
        buf.copy_from_slice(src);
        Ok(())
    };
    let Ok(store) = read_store(&read, cow.len() as u64, origin, "fuzz") else {
        return;
    };
    if origin == 0 {
        return;
    }
    for at in [offset % origin, 0, origin - 1, (offset / 2) % origin] {
        let want = (origin - at).min(1 << 20);
        match store.place(at, want) {
            Placement::Origin { len } => assert!(len > 0 && len <= want),
            Placement::Cow { at: c, len } => {
                assert!(len > 0 && len <= want);
                assert!(c.checked_add(len).is_some_and(|e| e <= cow.len() as u64));
            }
        }
    }
});
