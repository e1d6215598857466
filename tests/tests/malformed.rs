//! Malformed disks: each gives a clear error naming what and where, the intact volumes are
//! still listed exactly, exit code 2, no panic, no hang (every run has a time limit).

use coldscan_tests::{checks, coldscan, fixture};

macro_rules! malformed {
    ($($test:ident => $name:literal),* $(,)?) => {$(
        #[test]
        fn $test() {
            let f = fixture($name).unwrap_or_else(|e| panic!("{e:#}"));
            assert_eq!(f.meta.expect.exit_code, 2);
            checks::ls_matches_manifest(&f).unwrap_or_else(|e| panic!("{e:#}"));
            // `info` does not walk directories, so it may find nothing wrong inside a
            // filesystem; it must still finish without panicking.
            let disk = f.disk().display().to_string();
            let out = coldscan::run(&["info", "--json", &disk]).unwrap_or_else(|e| panic!("{e:#}"));
            assert!(matches!(out.code, Some(0) | Some(2)), "info exit {:?}: {}", out.code, out.stderr);
            assert!(!out.stderr.contains("panicked"), "info panicked: {}", out.stderr);
        }
    )*};
}

malformed! {
    truncated => "truncated",
    zeroed_superblock => "zeroed-superblock",
    gpt_infected_zeroed => "gpt-infected-zeroed",
    gpt_corrupt_primary => "gpt-corrupt-primary",
    partition_past_end => "partition-past-end",
    gpt_partition_past_end => "gpt-partition-past-end",
    mbr_ext_loop => "mbr-ext-loop",
    ext4_dir_loop => "ext4-dir-loop",
    ntfs_attr_overrun => "ntfs-attr-overrun",
}
