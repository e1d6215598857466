//! LVM2 text metadata on arbitrary bytes: the parser, VG assembly and the logical volume read
//! path never panic, never hang. The text is taken as the newest metadata of one PV (a 4 MiB
//! zeroed device whose UUID is the first PV's `id` in the text, so that real mappings are
//! exercised), and each LV is read at its start, middle and end.
#![no_main]

use std::sync::Arc;

use coldscan_scanner::block::{MemSource, SharedSource};
use coldscan_scanner::volume::lvm2::label::PvLabel;
use coldscan_scanner::volume::lvm2::{assemble, parse_vg_text, PvScan};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(vt) = parse_vg_text(data, "fuzz") else {
        return;
    };
    let uuid: String = vt
        .vg
        .section("physical_volumes")
        .and_then(|p| p.sections().next().and_then(|(_, s)| s.str("id").map(str::to_string)))
        .unwrap_or_default()
        .chars()
        .filter(|c| *c != '-')
        .collect();
    let src: SharedSource = Arc::new(MemSource::new(vec![0u8; 4 << 20], "pv"));
    let scan = PvScan {
        label: PvLabel {
            sector: 1,
            uuid,
            device_size: 4 << 20,
            data_areas: Vec::new(),
            metadata_areas: Vec::new(),
        },
        metadata: Some(vt),
        problems: Vec::new(),
    };
    for vg in assemble(&[(src, scan)]) {
        for lv in &vg.lvs {
            let Ok(s) = &lv.source else { continue };
            let mut buf = [0u8; 4096];
            for at in [0, lv.size / 2, lv.size.saturating_sub(4096)] {
                let _ = s.read_exact_at(at, &mut buf);
            }
        }
    }
});
