//! Partition table parsing (GPT, MBR with EBR chains, none) on arbitrary bytes: never panics,
//! never hangs. The first byte picks the logical sector size the source reports (512 or 4096),
//! so 4Kn tables are exercised as well as the 512/4096 detection on image files.
#![no_main]

use coldscan_scanner::block::MemSource;
use coldscan_scanner::partition::read_table;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let sector_size = if first & 1 == 0 { 512 } else { 4096 };
    let src = MemSource::new(rest.to_vec(), "fuzz").with_sector_size(sector_size);
    if let Ok(table) = read_table(&src) {
        for p in &table.partitions {
            let _ = p.start.checked_add(p.size);
        }
    }
});
