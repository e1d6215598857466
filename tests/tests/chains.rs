//! Backing chains and internal snapshots at the filesystem level: an ext4 changed twice (files
//! added, changed, deleted), each change written into its own copy-on-write layer, must list
//! as exactly the state of the layer opened (needs the `coldscan` binary built:
//! `cargo build --bins`).

use coldscan_tests::{checks, coldscan, fixture, Fixture};

/// `info --json` on the top of a chain shows its layers, top first, with their formats, all
/// of the same virtual size.
fn chain_info(f: &Fixture, layers: &[(&str, &str)]) {
    let disk = f.disk().display().to_string();
    let (info, out) = coldscan::info(&disk).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(out.code, Some(0), "info: {}", out.stderr);
    let chain = info["chain"].as_array().expect("chain in info --json");
    let got: Vec<(String, String)> = chain
        .iter()
        .map(|l| {
            let path = l["path"].as_str().unwrap_or_default();
            let file = path.rsplit('/').next().unwrap_or_default().to_string();
            (file, l["format"].as_str().unwrap_or_default().to_string())
        })
        .collect();
    let want: Vec<(String, String)> = layers
        .iter()
        .map(|(p, fm)| (p.to_string(), fm.to_string()))
        .collect();
    assert_eq!(got, want, "chain in info --json: {chain:?}");
    let size = info["size"].as_u64();
    for l in chain {
        assert_eq!(l["virtual_size"].as_u64(), size, "layer size: {l}");
    }
}

/// Each lower layer opened alone lists its own state.
fn lower_layers_list_their_state(f: &Fixture, lower: &[&str]) {
    for file in lower {
        let want = f.other_manifest(file).unwrap_or_else(|e| panic!("{e:#}"));
        let disk = f.dir.join(file).display().to_string();
        checks::ls_equals(&disk, &[], &want).unwrap_or_else(|e| panic!("{e:#}"));
    }
}

macro_rules! chain_tests {
    ($($module:ident => $name:literal, $layers:expr),* $(,)?) => {$(
        mod $module {
            use super::*;

            #[test]
            fn ls_lists_the_top_state() {
                let f = fixture($name).unwrap_or_else(|e| panic!("{e:#}"));
                checks::ls_matches_manifest(&f).unwrap_or_else(|e| panic!("{e:#}"));
            }

            #[test]
            fn cat_reads_through_the_chain() {
                let f = fixture($name).unwrap_or_else(|e| panic!("{e:#}"));
                checks::cat_matches(&f).unwrap_or_else(|e| panic!("{e:#}"));
            }

            #[test]
            fn info_shows_the_chain() {
                let f = fixture($name).unwrap_or_else(|e| panic!("{e:#}"));
                checks::info_matches(&f).unwrap_or_else(|e| panic!("{e:#}"));
                chain_info(&f, &$layers);
            }

            #[test]
            fn lower_layers_list_their_own_state() {
                let f = fixture($name).unwrap_or_else(|e| panic!("{e:#}"));
                let layers: &[(&str, &str)] = &$layers;
                let lower: Vec<&str> = layers[1..].iter().map(|l| l.0).collect();
                lower_layers_list_their_state(&f, &lower);
            }
        }
    )*};
}

chain_tests! {
    qcow2 => "chain-qcow2", [("disk.img", "qcow2"), ("mid.qcow2", "qcow2"), ("base.img", "raw")],
    qcow2_compressed => "chain-qcow2-compressed", [("disk.img", "qcow2"), ("mid.qcow2", "qcow2"), ("base.qcow2", "qcow2")],
    vmdk => "chain-vmdk", [("disk.img", "vmdk"), ("mid.vmdk", "vmdk"), ("base.vmdk", "vmdk")],
}

mod snapshot {
    use super::*;

    #[test]
    fn active_state_lists_v2() {
        let f = fixture("snapshot-qcow2").unwrap_or_else(|e| panic!("{e:#}"));
        checks::ls_matches_manifest(&f).unwrap_or_else(|e| panic!("{e:#}"));
        checks::cat_matches(&f).unwrap_or_else(|e| panic!("{e:#}"));
    }

    #[test]
    fn snapshot_by_name_and_id_lists_v1() {
        let f = fixture("snapshot-qcow2").unwrap_or_else(|e| panic!("{e:#}"));
        let want = f
            .other_manifest("snapshot-snap1")
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_ne!(want, f.manifest().expect("manifest"), "states must differ");
        let disk = f.disk().display().to_string();
        for id in ["snap1", "1"] {
            checks::ls_equals(&disk, &["--snapshot", id], &want)
                .unwrap_or_else(|e| panic!("--snapshot {id}: {e:#}"));
        }
    }

    #[test]
    fn unknown_snapshot_is_an_error() {
        let f = fixture("snapshot-qcow2").unwrap_or_else(|e| panic!("{e:#}"));
        let disk = f.disk().display().to_string();
        let out = coldscan::run(&["ls", "--snapshot", "no-such-snapshot", &disk])
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_ne!(out.code, Some(0), "stdout: {}", out.stdout_text());
        assert!(
            out.stderr.contains("no-such-snapshot"),
            "stderr: {}",
            out.stderr
        );
        assert!(out.stdout.is_empty(), "stdout: {}", out.stdout_text());
    }
}
