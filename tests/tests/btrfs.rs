//! Btrfs with subvolumes, a snapshot and compressed files: `coldscan scan` finds the planted
//! test file in its subvolume and in the snapshot that shares it, raw and in qcow2. (`ls`
//! against the kernel's view is in `inventory.rs`.) Needs the `coldscan` binary built.

use coldscan_tests::{checks, fixture};

#[test]
fn scan_finds_the_test_file_in_the_subvolume_and_its_snapshot() {
    for name in ["btrfs-subvolumes", "btrfs-subvolumes-qcow2"] {
        let f = fixture(name).unwrap_or_else(|e| panic!("{e:#}"));
        let report = checks::scan_finds_expected(&f).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        // The snapshot shares the file's extents: one content, scanned once.
        let stats = &report["stats"];
        assert!(stats["files"].as_u64().unwrap() > 0, "{report}");
    }
}
