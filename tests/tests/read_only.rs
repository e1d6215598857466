//! coldscan never writes its inputs: the SHA-256 and modification time of every file of every
//! fixture are unchanged after `ls`, `info` and `cat` ran on all of them.

use coldscan_tests::{checks, coldscan, fixture, FIXTURES};

#[test]
fn inputs_are_never_written() {
    let fixtures: Vec<_> = FIXTURES
        .iter()
        .map(|d| fixture(d.name).unwrap_or_else(|e| panic!("{e:#}")))
        .collect();
    let before: Vec<_> = fixtures
        .iter()
        .map(|f| checks::fingerprint(f).expect("fingerprint"))
        .collect();
    for f in &fixtures {
        let disk = f.disk().display().to_string();
        for args in [
            vec!["ls", "--format", "jsonl", "--hash", "sha256", disk.as_str()],
            vec!["ls", disk.as_str()],
            vec!["info", "--json", disk.as_str()],
            vec!["info", disk.as_str()],
        ] {
            let out = coldscan::run(&args).unwrap_or_else(|e| panic!("{e:#}"));
            assert!(
                !out.stderr.contains("panicked"),
                "{args:?} panicked: {}",
                out.stderr
            );
        }
        let manifest = f.manifest().expect("manifest");
        if let Some(r) = manifest.iter().find(|r| r.kind == "file") {
            let _ = coldscan::run(&["cat", &disk, &r.partition.to_string(), &r.path]);
        }
    }
    let after: Vec<_> = fixtures
        .iter()
        .map(|f| checks::fingerprint(f).expect("fingerprint"))
        .collect();
    for ((f, b), a) in fixtures.iter().zip(&before).zip(&after) {
        assert!(!b.is_empty(), "{}: no files fingerprinted", f.meta.name);
        assert_eq!(b, a, "{}: a fixture file changed", f.meta.name);
    }
}
