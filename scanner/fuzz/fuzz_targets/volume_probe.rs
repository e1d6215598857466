//! The volume layer on an arbitrary device: probing (LVM2 label, LUKS, BitLocker, MD, swap),
//! then for a PV its label, metadata areas (ring buffer, checksums) and text, VG assembly and
//! reads of every LV; never panics, never hangs.
#![no_main]

use std::sync::Arc;

use coldscan_scanner::block::{MemSource, SharedSource};
use coldscan_scanner::volume::{self, lvm2};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let src: SharedSource = Arc::new(MemSource::new(data.to_vec(), "fuzz"));
    let _ = volume::probe(src.as_ref());
    let Ok(Some(scan)) = lvm2::scan_pv(src.as_ref()) else {
        return;
    };
    for vg in lvm2::assemble(&[(src, scan)]) {
        for lv in &vg.lvs {
            let Ok(s) = &lv.source else { continue };
            let mut buf = [0u8; 1024];
            for at in [0, lv.size / 2, lv.size.saturating_sub(1024)] {
                let _ = s.read_exact_at(at, &mut buf);
            }
        }
    }
});
