//! The factory's ground truth against The Sleuth Kit: for every fixture TSK can read, `mmls`
//! finds the planted partitions, `fls -r -p` lists exactly the manifest's paths and `icat`
//! returns the manifest's content. This validates the fixtures themselves (no coldscan).

use coldscan_tests::{checks, fixture};

macro_rules! tsk_agrees {
    ($($test:ident => $name:literal),* $(,)?) => {$(
        #[test]
        fn $test() {
            let f = fixture($name).unwrap_or_else(|e| panic!("{e:#}"));
            checks::manifest_agrees_with_tsk(&f).unwrap_or_else(|e| panic!("{e:#}"));
        }
    )*};
}

tsk_agrees! {
    gpt_mixed => "gpt-mixed",
    gpt_infected => "gpt-infected",
    mbr_logical => "mbr-logical",
    ext4_whole => "ext4-whole",
    gpt_4k => "gpt-4k",
    ext4_dirty_journal_csum => "ext4-dirty-journal-csum",
    ext4_dirty_journal_plain => "ext4-dirty-journal-plain",
    ext3_sparse => "ext3-sparse",
    truncated => "truncated",
    zeroed_superblock => "zeroed-superblock",
    gpt_corrupt_primary => "gpt-corrupt-primary",
    partition_past_end => "partition-past-end",
    gpt_partition_past_end => "gpt-partition-past-end",
    mbr_ext_loop => "mbr-ext-loop",
}
