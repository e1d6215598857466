//! Volume group assembly and logical volume reads on hand-made metadata: correct mappings, and
//! hostile metadata (loops, gaps, extents past the PV, huge counts, missing PVs) giving errors
//! for the LVs concerned while the rest are listed.

use std::sync::Arc;

use super::label::PvLabel;
use super::{assemble, parse_vg_text, PvScan, VolumeGroup};
use crate::block::{MemSource, SharedSource};
use crate::error::{Error, Reason};

const UUID_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const UUID_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
/// 1 KiB extents (2 sectors), PE start at 4 KiB, 16 extents per PV: a 20 KiB PV.
const PV_SIZE: usize = 20 << 10;

/// A PV whose every byte at `pe_start + i` is the byte `tag ^ (i / 512)` (a different value per
/// sector, so misplaced reads show).
fn pv(tag: u8) -> Vec<u8> {
    let mut v = vec![0u8; PV_SIZE];
    for (i, b) in v.iter_mut().enumerate().skip(4096) {
        *b = tag ^ ((i - 4096) / 512) as u8;
    }
    v
}

fn vg_text(lvs: &str) -> String {
    format!(
        r#"vg {{
id = "vgid"
seqno = 2
extent_size = 2
physical_volumes {{
pv0 {{ id = "{UUID_A}" pe_start = 8 pe_count = 16 }}
pv1 {{ id = "{UUID_B}" pe_start = 8 pe_count = 16 }}
}}
logical_volumes {{
{lvs}
}}
}}
"#
    )
}

fn scan(uuid: &str, text: Option<&str>) -> PvScan {
    PvScan {
        label: PvLabel {
            sector: 1,
            uuid: uuid.into(),
            device_size: PV_SIZE as u64,
            data_areas: Vec::new(),
            metadata_areas: Vec::new(),
        },
        metadata: text.map(|t| parse_vg_text(t.as_bytes(), "test").unwrap()),
        problems: Vec::new(),
    }
}

fn vg_with(lvs: &str, both: bool) -> VolumeGroup {
    let text = vg_text(lvs);
    let a: SharedSource = Arc::new(MemSource::new(pv(0x10), "pvA"));
    let b: SharedSource = Arc::new(MemSource::new(pv(0x80), "pvB"));
    let mut pvs = vec![(a, scan(UUID_A, Some(&text)))];
    if both {
        pvs.push((b, scan(UUID_B, None)));
    }
    let mut vgs = assemble(&pvs);
    assert_eq!(vgs.len(), 1);
    vgs.remove(0)
}

fn lv<'a>(vg: &'a VolumeGroup, name: &str) -> &'a super::LvEntry {
    vg.lvs.iter().find(|l| l.name == name).unwrap()
}

fn read(vg: &VolumeGroup, name: &str) -> Vec<u8> {
    let l = lv(vg, name);
    let src = l.source.as_ref().unwrap_or_else(|e| panic!("{e}"));
    let mut buf = vec![0u8; usize::try_from(src.size()).unwrap()];
    src.read_exact_at(0, &mut buf).unwrap();
    buf
}

fn err(vg: &VolumeGroup, name: &str) -> Arc<Error> {
    lv(vg, name).source.as_ref().err().cloned().unwrap()
}

fn seg(start: u64, count: u64, body: &str) -> String {
    format!("segment{start} {{ start_extent = {start} extent_count = {count} {body} }}")
}

fn lin(name: &str, segs: &[String]) -> String {
    format!(
        "{name} {{ id = \"{name}-id\" status = [\"READ\", \"VISIBLE\"] segment_count = {} {} }}",
        segs.len(),
        segs.join("\n")
    )
}

/// Sector `s` of PV `tag` as the test PV holds it.
fn sector(tag: u8, s: usize) -> Vec<u8> {
    vec![tag ^ s as u8; 512]
}

#[test]
fn linear_and_striped_map_extents_to_pv_bytes() {
    let vg = vg_with(
        &[
            lin(
                "lin",
                &[
                    seg(0, 1, "type = \"striped\" stripe_count = 1 stripes = [\"pv0\", 3]"),
                    seg(1, 1, "type = \"striped\" stripe_count = 1 stripes = [\"pv1\", 0]"),
                ],
            ),
            lin(
                "str",
                &[seg(
                    0,
                    2,
                    "type = \"striped\" stripe_count = 2 stripe_size = 1 stripes = [\"pv0\", 8, \"pv1\", 8]",
                )],
            ),
        ]
        .join("\n"),
        true,
    );
    assert!(vg.missing.is_empty() && vg.error.is_none());
    // lin: extent 3 of A (sectors 6, 7), then extent 0 of B (sectors 0, 1).
    let want = [
        sector(0x10, 6),
        sector(0x10, 7),
        sector(0x80, 0),
        sector(0x80, 1),
    ]
    .concat();
    assert_eq!(read(&vg, "vg/lin"), want);
    // str: 512-byte stripes alternating A and B from extent 8 (sector 16) of each.
    let want = [
        sector(0x10, 16),
        sector(0x80, 16),
        sector(0x10, 17),
        sector(0x80, 17),
    ]
    .concat();
    assert_eq!(read(&vg, "vg/str"), want);
    assert_eq!(lv(&vg, "vg/lin").home_offset, 4096 + 3 * 1024);
}

#[test]
fn missing_pv_names_its_uuid_and_spares_the_other_lvs() {
    let vg = vg_with(
        &[
            lin(
                "onA",
                &[seg(0, 1, "type = \"striped\" stripes = [\"pv0\", 0]")],
            ),
            lin(
                "onB",
                &[seg(0, 1, "type = \"striped\" stripes = [\"pv1\", 0]")],
            ),
        ]
        .join("\n"),
        false,
    );
    assert_eq!(vg.missing, vec!["bbbbbb-bbbb-bbbb-bbbb-bbbb-bbbb-bbbbbb"]);
    assert_eq!(read(&vg, "vg/onA").len(), 1024);
    let e = err(&vg, "vg/onB");
    assert_eq!(e.reason(), Reason::MissingDevice);
    assert!(
        e.to_string()
            .contains("bbbbbb-bbbb-bbbb-bbbb-bbbb-bbbb-bbbbbb"),
        "{e}"
    );
}

#[test]
fn mirror_reads_the_first_image_that_is_present() {
    let hidden = |name: &str, pvk: &str| {
        format!(
            "{name} {{ id = \"x\" status = [\"READ\"] segment1 {{ start_extent = 0 extent_count = 2 type = \"striped\" stripes = [\"{pvk}\", 4] }} }}"
        )
    };
    let vg = vg_with(
        &[
            hidden("m_rimage_0", "pv1"),
            hidden("m_rimage_1", "pv0"),
            lin(
                "m",
                &[seg(
                    0,
                    2,
                    "type = \"raid1\" device_count = 2 raids = [\"a\", \"m_rimage_0\", \"b\", \"m_rimage_1\"]",
                )],
            ),
        ]
        .join("\n"),
        false,
    );
    // Image 0 is on the missing PV: image 1 (on A, extent 4 = sector 8) is read.
    assert_eq!(vg.lvs.len(), 1, "hidden images are not listed");
    let want = [8, 9, 10, 11].map(|s| sector(0x10, s)).concat();
    assert_eq!(read(&vg, "vg/m"), want);
}

#[test]
fn hostile_mappings_are_errors_for_their_lv_only() {
    let raid = |name: &str, image: &str| {
        lin(
            name,
            &[seg(
                0,
                1,
                &format!("type = \"raid1\" device_count = 1 raids = [\"{image}\"]"),
            )],
        )
    };
    let vg = vg_with(
        &[
            lin(
                "good",
                &[seg(0, 1, "type = \"striped\" stripes = [\"pv0\", 0]")],
            ),
            lin(
                "past",
                &[seg(0, 4, "type = \"striped\" stripes = [\"pv0\", 14]")],
            ),
            lin(
                "overlap",
                &[
                    seg(0, 2, "type = \"striped\" stripes = [\"pv0\", 0]"),
                    seg(1, 2, "type = \"striped\" stripes = [\"pv0\", 4]"),
                ],
            ),
            lin(
                "gap",
                &[seg(1, 1, "type = \"striped\" stripes = [\"pv0\", 0]")],
            ),
            lin(
                "huge",
                &[seg(
                    0,
                    i64::MAX as u64,
                    "type = \"striped\" stripes = [\"pv0\", 0]",
                )],
            ),
            lin(
                "hugestart",
                &[seg(
                    0,
                    1,
                    &format!("type = \"striped\" stripes = [\"pv0\", {}]", i64::MAX),
                )],
            ),
            raid("loop1", "loop2"),
            raid("loop2", "loop1"),
            raid("self", "self"),
            lin(
                "nopv",
                &[seg(0, 1, "type = \"striped\" stripes = [\"pv9\", 0]")],
            ),
            lin(
                "thin",
                &[seg(
                    0,
                    1,
                    "type = \"thin\" thin_pool = \"nopool\" device_id = 1",
                )],
            ),
            lin("cache", &[seg(0, 1, "type = \"cache\" cache_pool = \"c\"")]),
        ]
        .join("\n"),
        true,
    );
    assert_eq!(read(&vg, "vg/good").len(), 1024);
    for (name, needle) in [
        ("past", "which has 16"),
        ("overlap", "overlap or gap"),
        ("gap", "overlap or gap"),
        ("huge", "overflows"),
        ("hugestart", "which has 16"),
        ("loop1", "loop"),
        ("loop2", "loop"),
        ("self", "loop"),
        ("nopv", "unknown PV pv9"),
        ("cache", "cache segments are not read"),
        ("thin", "unknown pool nopool"),
    ] {
        let e = err(&vg, &format!("vg/{name}"));
        assert!(e.to_string().contains(needle), "{name}: {e}");
    }
    assert_eq!(err(&vg, "vg/cache").reason(), Reason::UnsupportedFilesystem);
}

#[test]
fn pv_area_past_the_device_fails_the_vg_with_its_offset() {
    let text = vg_text("").replace("pe_count = 16 }\npv1", "pe_count = 17 }\npv1");
    let a: SharedSource = Arc::new(MemSource::new(pv(0x10), "pvA"));
    let vgs = assemble(&[(a, scan(UUID_A, Some(&text)))]);
    let e = vgs[0].error.clone().unwrap();
    assert!(e.to_string().contains("run past the end of pvA"), "{e}");
}

#[test]
fn newest_metadata_copy_wins() {
    let old = vg_text(&lin(
        "old",
        &[seg(0, 1, "type = \"striped\" stripes = [\"pv0\", 0]")],
    ));
    let new = vg_text(&lin(
        "new",
        &[seg(0, 1, "type = \"striped\" stripes = [\"pv0\", 0]")],
    ))
    .replace("seqno = 2", "seqno = 3");
    let a: SharedSource = Arc::new(MemSource::new(pv(0x10), "pvA"));
    let b: SharedSource = Arc::new(MemSource::new(pv(0x80), "pvB"));
    let vgs = assemble(&[(a, scan(UUID_A, Some(&old))), (b, scan(UUID_B, Some(&new)))]);
    assert_eq!(vgs.len(), 1);
    assert_eq!(vgs[0].seqno, 3);
    assert_eq!(vgs[0].lvs[0].name, "vg/new");
    assert_eq!(vgs[0].problems.len(), 1, "{:?}", vgs[0].problems);
}

/// A metadata text written by lvm2 2.03 (`vgcfgbackup` of a VG with a linear, a striped and a
/// spanning LV): parsed and assembled.
#[test]
fn real_lvm2_text_parses() {
    let text = include_str!("testdata/seedvg.txt");
    let vt = parse_vg_text(text.as_bytes(), "t").unwrap();
    assert_eq!(vt.vg_name, "seedvg");
    let lvs = vt.vg.section("logical_volumes").unwrap();
    assert_eq!(lvs.sections().count(), 3);
}

/// Metadata written by lvm2 2.03 for a classic snapshot (`vgcfgrestore` of a snapshot section,
/// then `vgcfgbackup`): the COW LV `snap` is written hidden, `snapshot0` visible; listed are the
/// origin and the snapshot under the COW LV's name, and a store never activated (zeros) reads
/// as the origin.
#[test]
fn real_lvm2_snapshot_metadata_lists_origin_and_snapshot() {
    let text = include_str!("testdata/snapvg.txt");
    let uuid = "8DIUXGxiZtvU11nNhcMKmoLd6kwPlch3";
    let mut dev = vec![0u8; 64 << 20];
    dev[(1 << 20) + 5000] = 0xAB; // origin byte 5000
    let a: SharedSource = Arc::new(MemSource::new(dev, "pv"));
    let mut s = scan(uuid, Some(text));
    s.label.device_size = 64 << 20;
    let vgs = assemble(&[(a, s)]);
    let vg = &vgs[0];
    let names: Vec<&str> = vg.lvs.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["tvg/origin", "tvg/snap"]);
    assert_eq!(lv(vg, "tvg/snap").segment_types, ["snapshot"]);
    assert_eq!(lv(vg, "tvg/snap").size, 16 << 20);
    let src = lv(vg, "tvg/snap").source.clone().unwrap();
    let mut b = [0u8; 2];
    src.read_exact_at(4999, &mut b).unwrap();
    assert_eq!(b, [0, 0xAB]);
}

/// A VG on one PV (`pv(0x10)`) with `origin` (extents 0..4, 4 KiB) and the COW LV `snap`
/// (extents 4..12, sixteen 512-byte chunks) holding `cow`, tied by `snapshot0` of
/// `snap_extents` extents (`kind` names the store: `cow_store` or `merging_store`).
fn snapshot_vg(cow: &[u8], kind: &str, snap_extents: u32) -> VolumeGroup {
    let mut dev = pv(0x10);
    dev[4096 + 4096..4096 + 4096 + cow.len()].copy_from_slice(cow);
    let text = vg_text(
        &[
            lin("origin", &[seg(0, 4, "type = \"striped\" stripes = [\"pv0\", 0]")]),
            // As lvm2 writes it: the COW LV hidden, snapshot0 visible.
            lin("snap", &[seg(0, 8, "type = \"striped\" stripes = [\"pv0\", 4]")])
                .replace("\"READ\", \"VISIBLE\"", "\"READ\", \"WRITE\""),
            format!("snapshot0 {{ id = \"s\" status = [\"READ\", \"VISIBLE\"] segment1 {{ start_extent = 0 extent_count = {snap_extents} type = \"snapshot\" chunk_size = 1 origin = \"origin\" {kind} = \"snap\" }} }}"),
        ]
        .join("\n"),
    );
    let a: SharedSource = Arc::new(MemSource::new(dev, "pvA"));
    let mut vgs = assemble(&[(a, scan(UUID_A, Some(&text)))]);
    vgs.remove(0)
}

/// Origin chunks 3, 1 and 6 changed after the snapshot: their old content is in the COW LV.
fn cow_with_three_exceptions() -> Vec<u8> {
    super::snapshot::tests::cow_device(512, 16, &[3, 1, 6], |old| 0xE0 | old as u8)
}

#[test]
fn classic_snapshot_reads_as_the_origin_at_snapshot_time() {
    let vg = snapshot_vg(&cow_with_three_exceptions(), "cow_store", 4);
    let names: Vec<&str> = vg.lvs.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["vg/origin", "vg/snap"], "snapshot0 is hidden");
    let origin = read(&vg, "vg/origin");
    assert_eq!(
        origin,
        (0..8).map(|s| sector(0x10, s)).collect::<Vec<_>>().concat()
    );
    let snap = read(&vg, "vg/snap");
    let want: Vec<u8> = (0..8)
        .map(|s| match s {
            1 | 3 | 6 => vec![0xE0 | s as u8; 512],
            _ => sector(0x10, s),
        })
        .collect::<Vec<_>>()
        .concat();
    assert_eq!(snap, want);
    assert_eq!(lv(&vg, "vg/snap").size, 4096);
    assert_eq!(lv(&vg, "vg/snap").segment_types, ["snapshot"]);
    // Reads crossing exception boundaries, at odd offsets.
    let src = lv(&vg, "vg/snap").source.clone().unwrap();
    for (off, len) in [
        (1000u64, 700usize),
        (511, 2),
        (3 * 512 - 1, 1026),
        (0, 4096),
    ] {
        let mut b = vec![0u8; len];
        src.read_exact_at(off, &mut b).unwrap();
        assert_eq!(b, want[off as usize..off as usize + len], "{off}+{len}");
    }
    // A COW store never activated (header of zeros) reads as the origin.
    let vg = snapshot_vg(&[0u8; 512], "cow_store", 4);
    assert_eq!(read(&vg, "vg/snap"), origin);
}

/// `lvcreate -s --virtualsize`: a sparse snapshot over a hidden virtual origin of zeros; only
/// the snapshot is listed, zeros but for its exceptions.
#[test]
fn snapshot_of_a_virtual_origin_reads_zeros_and_its_exceptions() {
    let mut dev = pv(0x10);
    let cow = cow_with_three_exceptions();
    dev[4096 + 4096..4096 + 4096 + cow.len()].copy_from_slice(&cow);
    let text = vg_text(
        &[
            "lvol0_vorigin { id = \"v\" status = [\"READ\", \"WRITE\"] segment1 { start_extent = 0 extent_count = 4 type = \"zero\" } }".to_string(),
            lin("sparse", &[seg(0, 8, "type = \"striped\" stripes = [\"pv0\", 4]")])
                .replace("\"READ\", \"VISIBLE\"", "\"READ\", \"WRITE\""),
            "snapshot0 { id = \"s\" status = [\"READ\", \"VISIBLE\"] segment1 { start_extent = 0 extent_count = 4 type = \"snapshot\" chunk_size = 1 origin = \"lvol0_vorigin\" cow_store = \"sparse\" } }".to_string(),
        ]
        .join("\n"),
    );
    let a: SharedSource = Arc::new(MemSource::new(dev, "pvA"));
    let vgs = assemble(&[(a, scan(UUID_A, Some(&text)))]);
    let names: Vec<&str> = vgs[0].lvs.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["vg/sparse"]);
    let got = read(&vgs[0], "vg/sparse");
    for s in 0..8usize {
        let want = if [1, 3, 6].contains(&s) {
            0xE0 | s as u8
        } else {
            0
        };
        assert!(
            got[s * 512..(s + 1) * 512].iter().all(|&b| b == want),
            "sector {s}"
        );
    }
}

#[test]
fn invalid_merging_and_hostile_snapshots_are_errors_and_the_origin_is_read() {
    // Valid flag 0: the kernel dropped the snapshot.
    let mut cow = cow_with_three_exceptions();
    cow[4] = 0;
    let vg = snapshot_vg(&cow, "cow_store", 4);
    let e = err(&vg, "vg/snap");
    assert_eq!(e.reason(), Reason::Corrupt);
    assert!(e.to_string().contains("invalid"), "{e}");
    assert_eq!(read(&vg, "vg/origin").len(), 4096);
    // An exception past the origin's 8 chunks: an error at the entry's offset.
    let mut cow = cow_with_three_exceptions();
    cow[512 + 16..512 + 24].copy_from_slice(&8u64.to_le_bytes());
    let e = err(&snapshot_vg(&cow, "cow_store", 4), "vg/snap").to_string();
    assert!(e.contains("past the origin") && e.contains("0x210"), "{e}");
    // A snapshot whose size is not its origin's.
    let e = err(
        &snapshot_vg(&cow_with_three_exceptions(), "cow_store", 3),
        "vg/snap",
    );
    assert!(e.to_string().contains("origin"), "{e}");
    // Merging: the snapshot is not scanned, the origin reads as the merged state.
    let vg = snapshot_vg(&cow_with_three_exceptions(), "merging_store", 4);
    let e = err(&vg, "vg/snap");
    assert!(e.to_string().contains("being merged into vg/origin"), "{e}");
    let merged = read(&vg, "vg/origin");
    assert_eq!(merged[512..1024], [0xE1; 512]);
    assert_eq!(merged[..512], sector(0x10, 0)[..]);
    // A snapshot that is its own COW store: a loop, reported, never followed.
    let text = vg_text(
        &[
            lin("origin", &[seg(0, 4, "type = \"striped\" stripes = [\"pv0\", 0]")]),
            "snapshot0 { id = \"s\" status = [\"READ\", \"VISIBLE\"] segment1 { start_extent = 0 extent_count = 4 type = \"snapshot\" chunk_size = 1 origin = \"origin\" cow_store = \"snapshot0\" } }".to_string(),
        ]
        .join("\n"),
    );
    let a: SharedSource = Arc::new(MemSource::new(pv(0x10), "pvA"));
    let vgs = assemble(&[(a, scan(UUID_A, Some(&text)))]);
    let names: Vec<&str> = vgs[0].lvs.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["vg/origin"]);
}

/// A thin pool whose metadata `thin_restore` wrote ([`super::thin::tests::XML`]): thin volumes
/// read their mapped blocks from the pool's data LV, unmapped blocks as zeros; the pool itself is
/// not listed.
#[test]
fn thin_volumes_read_through_the_pool_metadata() {
    const EXT: usize = 64 << 10;
    let meta = super::thin::tests::restored(super::thin::tests::XML);
    let mut dev = vec![0u8; 4096 + 61 * EXT];
    dev[4096..4096 + EXT].copy_from_slice(&meta[..EXT]);
    for k in 0..60 {
        let at = 4096 + (1 + k) * EXT;
        dev[at..at + EXT].fill(k as u8 + 1);
    }
    let hidden = |name: &str, start: u32, count: u32| {
        format!("{name} {{ id = \"{name}\" status = [\"READ\"] segment1 {{ start_extent = 0 extent_count = {count} type = \"striped\" stripes = [\"pv0\", {start}] }} }}")
    };
    let text = format!(
        r#"vg {{ id = "vgid" seqno = 1 extent_size = 128
physical_volumes {{ pv0 {{ id = "{UUID_A}" pe_start = 8 pe_count = 61 }} }}
logical_volumes {{
{}
{}
pool {{ id = "p" status = ["READ", "VISIBLE"] segment1 {{ start_extent = 0 extent_count = 60 type = "thin-pool" metadata = "pool_tmeta" pool = "pool_tdata" transaction_id = 2 chunk_size = 128 }} }}
thin1 {{ id = "t1" status = ["READ", "VISIBLE"] segment1 {{ start_extent = 0 extent_count = 8 type = "thin" thin_pool = "pool" transaction_id = 0 device_id = 1 }} }}
thin2 {{ id = "t2" status = ["READ", "VISIBLE"] segment1 {{ start_extent = 0 extent_count = 2 type = "thin" thin_pool = "pool" transaction_id = 1 device_id = 2 }} }}
thin3 {{ id = "t3" status = ["READ", "VISIBLE"] segment1 {{ start_extent = 0 extent_count = 1 type = "thin" thin_pool = "pool" transaction_id = 1 device_id = 3 }} }}
}} }}"#,
        hidden("pool_tmeta", 0, 1),
        hidden("pool_tdata", 1, 60)
    );
    let a: SharedSource = Arc::new(MemSource::new(dev, "pvA"));
    let vgs = assemble(&[(a, scan(UUID_A, Some(&text)))]);
    let vg = &vgs[0];
    let names: Vec<&str> = vg.lvs.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["vg/thin1", "vg/thin2", "vg/thin3"]);
    let t1 = read(vg, "vg/thin1");
    let block = |i: usize| &t1[i * EXT..(i + 1) * EXT];
    assert!(block(0).iter().all(|&b| b == 11));
    assert!(block(1).iter().all(|&b| b == 12));
    assert!((2..7).all(|i| block(i).iter().all(|&b| b == 0)));
    assert!(block(7).iter().all(|&b| b == 4));
    // A read across a block boundary.
    let src = lv(vg, "vg/thin1").source.clone().unwrap();
    let mut b = vec![0u8; 10];
    src.read_exact_at(EXT as u64 - 5, &mut b).unwrap();
    assert_eq!(b, [11, 11, 11, 11, 11, 12, 12, 12, 12, 12]);
    let t2 = read(vg, "vg/thin2");
    assert!(t2[..EXT].iter().all(|&b| b == 51) && t2[EXT..].iter().all(|&b| b == 0));
    // A device missing from the pool's mapping tree: an error naming it, at read time.
    let src = lv(vg, "vg/thin3").source.clone().unwrap();
    let e = src.read_exact_at(0, &mut b).unwrap_err().to_string();
    assert!(e.contains("thin device 3"), "{e}");
}
