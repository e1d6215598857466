//! `coldscan ls`, `info` and `cat` on every well-formed fixture against its ground-truth
//! manifest (needs the `coldscan` binary built: `cargo build --bins`).

use coldscan_tests::{checks, fixture};

macro_rules! inventory {
    ($($module:ident => $name:literal),* $(,)?) => {$(
        mod $module {
            use super::*;

            #[test]
            fn ls_equals_manifest() {
                let f = fixture($name).unwrap_or_else(|e| panic!("{e:#}"));
                checks::ls_matches_manifest(&f).unwrap_or_else(|e| panic!("{e:#}"));
            }

            #[test]
            fn ls_agrees_with_the_sleuth_kit() {
                let f = fixture($name).unwrap_or_else(|e| panic!("{e:#}"));
                checks::ls_agrees_with_tsk(&f).unwrap_or_else(|e| panic!("{e:#}"));
            }

            #[test]
            fn info_shows_planted_partitions() {
                let f = fixture($name).unwrap_or_else(|e| panic!("{e:#}"));
                checks::info_matches(&f).unwrap_or_else(|e| panic!("{e:#}"));
            }

            #[test]
            fn cat_gives_planted_content() {
                let f = fixture($name).unwrap_or_else(|e| panic!("{e:#}"));
                checks::cat_matches(&f).unwrap_or_else(|e| panic!("{e:#}"));
            }
        }
    )*};
}

inventory! {
    gpt_mixed => "gpt-mixed",
    gpt_infected => "gpt-infected",
    mbr_logical => "mbr-logical",
    ext4_whole => "ext4-whole",
    gpt_4k => "gpt-4k",
    ext4_dirty_journal_csum => "ext4-dirty-journal-csum",
    ext4_dirty_journal_plain => "ext4-dirty-journal-plain",
    ext3_sparse => "ext3-sparse",
    mbr_logical_qcow2 => "mbr-logical-qcow2",
    mbr_logical_qcow2_zstd => "mbr-logical-qcow2-zstd",
    mbr_logical_vmdk => "mbr-logical-vmdk",
    mbr_logical_vmdk_stream => "mbr-logical-vmdk-stream",
    mbr_logical_vhdx => "mbr-logical-vhdx",
    mbr_logical_vhd => "mbr-logical-vhd",
}

/// XFS and Btrfs (and the crash-consistent ext4, whose oracle is the kernel's view after
/// recovery): The Sleuth Kit reads neither, so the planted manifest is the oracle.
macro_rules! inventory_xfs {
    ($($module:ident => $name:literal),* $(,)?) => {$(
        mod $module {
            use super::*;

            #[test]
            fn ls_equals_manifest() {
                let f = fixture($name).unwrap_or_else(|e| panic!("{e:#}"));
                checks::ls_matches_manifest(&f).unwrap_or_else(|e| panic!("{e:#}"));
            }

            #[test]
            fn info_shows_planted_partitions() {
                let f = fixture($name).unwrap_or_else(|e| panic!("{e:#}"));
                checks::info_matches(&f).unwrap_or_else(|e| panic!("{e:#}"));
            }

            #[test]
            fn cat_gives_planted_content() {
                let f = fixture($name).unwrap_or_else(|e| panic!("{e:#}"));
                checks::cat_matches(&f).unwrap_or_else(|e| panic!("{e:#}"));
            }
        }
    )*};
}

inventory_xfs! {
    xfs_whole => "xfs-whole",
    xfs_4k_sectors => "xfs-4k-sectors",
    xfs_crash => "xfs-crash",
    xfs_crash_small_log => "xfs-crash-small-log",
    btrfs_subvolumes => "btrfs-subvolumes",
    btrfs_subvolumes_qcow2 => "btrfs-subvolumes-qcow2",
    btrfs_crash => "btrfs-crash",
    ext4_crash => "ext4-crash",
}
