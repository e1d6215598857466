//! CompactOS (WOF-compressed) files on NTFS through the CLI: `ls --hash sha256` lists each
//! with its uncompressed size and hash and without its `WofCompressedData` stream, `cat`
//! gives the uncompressed content, and `scan` finds EICAR inside the LZX one (needs the
//! `coldscan` binary built: `cargo build --bins`).

use coldscan_tests::{checks, coldscan, fixture};

const NAME: &str = "ntfs-wof";

#[test]
fn ls_lists_uncompressed_size_and_hash_of_every_algorithm() {
    let f = fixture(NAME).unwrap_or_else(|e| panic!("{e:#}"));
    checks::ls_matches_manifest(&f).unwrap_or_else(|e| panic!("{e:#}"));
    let (listed, _) = coldscan::ls(&f.disk().display().to_string()).unwrap();
    let compact: Vec<_> = listed
        .iter()
        .filter(|r| r.path.starts_with("/Windows/System32/compact-"))
        .collect();
    // One file per algorithm, plus the Zone.Identifier stream of one of them.
    assert_eq!(compact.len(), 5, "{compact:#?}");
    assert!(
        listed
            .iter()
            .all(|r| r.stream.as_deref() != Some("WofCompressedData")),
        "WofCompressedData listed: {listed:#?}"
    );
}

#[test]
fn cat_gives_uncompressed_content() {
    let f = fixture(NAME).unwrap_or_else(|e| panic!("{e:#}"));
    checks::cat_matches(&f).unwrap_or_else(|e| panic!("{e:#}"));
}

#[test]
fn info_shows_the_volume() {
    let f = fixture(NAME).unwrap_or_else(|e| panic!("{e:#}"));
    checks::info_matches(&f).unwrap_or_else(|e| panic!("{e:#}"));
}

#[test]
fn scan_finds_eicar_in_a_compact_file() {
    let f = fixture(NAME).unwrap_or_else(|e| panic!("{e:#}"));
    let report = checks::scan_finds_expected(&f).unwrap_or_else(|e| panic!("{e:#}"));
    let d = &report["detections"][0];
    let want = f
        .manifest()
        .unwrap()
        .into_iter()
        .find(|r| r.path == d["path"])
        .unwrap();
    // The detection carries the uncompressed content's size and hash.
    assert_eq!(d["size"].as_u64(), want.size, "{d}");
    assert_eq!(d["sha256"].as_str(), want.sha256.as_deref(), "{d}");
}
