//! VHDX reader tests: qemu-made fixed and dynamic disks, and differencing chains made by the
//! test writer (whose dynamic output qemu-img reads back).

use std::path::Path;
use std::sync::Arc;

use super::header::{checksum, Header};
use super::test_writer::{write_vhdx, VhdxSpec};
use super::VhdxImage;
use crate::block::{BlockSource, FileSource, MemSource, SharedSource};
use crate::disk::testutil::{check_ranges, guest_content, p, qemu_raw, read_all, run, write_raw};
use crate::disk::{open, DiskFormat, OpenOptions};
use crate::error::Error;

const SIZE: usize = 6 << 20;

#[test]
fn qemu_variants_read_like_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("raw.img");
    let data = guest_content(SIZE, 13);
    write_raw(&raw, &data);
    for (name, opts) in [
        ("dyn.vhdx", ""),
        ("fixed.vhdx", "subformat=fixed"),
        ("b1.vhdx", "block_size=1M"),
        ("b32.vhdx", "block_size=32M,log_size=8M"),
        // Fixed, 8 MiB blocks over 6 MiB: the file ends inside the last block.
        ("fixed-nz.vhdx", "subformat=fixed,block_state_zero=off"),
        ("nz.vhdx", "block_state_zero=off"),
    ] {
        let img = dir.path().join(name);
        let mut a = vec!["convert", "-f", "raw", "-O", "vhdx"];
        if !opts.is_empty() {
            a.extend(["-o", opts]);
        }
        a.extend([p(&raw), p(&img)]);
        run("qemu-img", &a);
        let disk = open(&img, &OpenOptions::default()).unwrap();
        assert_eq!(disk.format, DiskFormat::Vhdx);
        let got = read_all(disk.source.as_ref());
        assert!(got == data, "{name}");
        assert!(
            got == qemu_raw(&img, "vhdx"),
            "{name} differs from qemu-img"
        );
        check_ranges(disk.source.as_ref(), &data);
    }
}

fn writer_dynamic(path: &Path, data: &[u8], guid: u8) {
    let f = |s: u64| {
        let mut b = [0u8; 512];
        b.copy_from_slice(&data[s as usize * 512..s as usize * 512 + 512]);
        (b != [0u8; 512]).then_some(b)
    };
    write_vhdx(
        path,
        &VhdxSpec {
            size: data.len() as u64,
            data_write_guid: [guid; 16],
            parent: None,
            sector: &f,
        },
    );
}

fn writer_child(
    path: &Path,
    size: u64,
    guid: u8,
    parent: [u8; 16],
    rel: &str,
    changes: &[(u64, u8)],
) {
    let f = |s: u64| {
        changes
            .iter()
            .find(|(c, _)| *c == s)
            .map(|(_, b)| [*b; 512])
    };
    write_vhdx(
        path,
        &VhdxSpec {
            size,
            data_write_guid: [guid; 16],
            parent: Some((
                parent,
                vec![
                    ("relative_path", rel.to_string()),
                    ("absolute_win32_path", "C:\\nowhere\\gone.vhdx".to_string()),
                ],
            )),
            sector: &f,
        },
    );
}

#[test]
fn the_test_writer_is_read_by_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let data = guest_content(SIZE, 17);
    let img = dir.path().join("w.vhdx");
    writer_dynamic(&img, &data, 1);
    assert!(
        qemu_raw(&img, "vhdx") == data,
        "qemu-img reads the writer's VHDX differently"
    );
    assert!(read_all(open(&img, &OpenOptions::default()).unwrap().source.as_ref()) == data);
}

fn apply(data: &mut [u8], changes: &[(u64, u8)]) {
    for &(s, b) in changes {
        data[s as usize * 512..s as usize * 512 + 512].fill(b);
    }
}

#[test]
fn differencing_chains_read_the_top_state() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = d.join("raw.img");
    let mut data = guest_content(SIZE, 41);
    write_raw(&raw, &data);
    let base = d.join("base.vhdx");
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "vhdx",
            "-o",
            "block_size=1M",
            p(&raw),
            p(&base),
        ],
    );
    let base_guid = Header::read(&FileSource::open(&base).unwrap())
        .unwrap()
        .data_write_guid;

    // Mid: scattered sectors, one fully present block (block 3), the last sector.
    let mut mid_changes: Vec<(u64, u8)> = vec![(0, 0xa1), (5, 0xa2), (4000, 0xa3)];
    mid_changes.extend((6144..8192).map(|s| (s, 0xb0)));
    mid_changes.push((SIZE as u64 / 512 - 1, 0xc0));
    writer_child(
        &d.join("mid.vhdx"),
        SIZE as u64,
        2,
        base_guid,
        ".\\base.vhdx",
        &mid_changes,
    );
    apply(&mut data, &mid_changes);
    let top_changes = [(1u64, 0xd1u8), (2047, 0xd2), (6144, 0xd3), (9000, 0xd4)];
    writer_child(
        &d.join("top.vhdx"),
        SIZE as u64,
        3,
        [2; 16],
        "mid.vhdx",
        &top_changes,
    );
    apply(&mut data, &top_changes);

    let disk = open(&d.join("top.vhdx"), &OpenOptions::default()).unwrap();
    assert_eq!(disk.chain.len(), 3);
    let got = read_all(disk.source.as_ref());
    assert_eq!(got.iter().zip(&data).position(|(a, b)| a != b), None);
    check_ranges(disk.source.as_ref(), &data);
    assert!(format!("{:?}", disk.details).contains("differencing"));

    // A parent whose data write GUID changed since.
    writer_child(
        &d.join("stale.vhdx"),
        SIZE as u64,
        4,
        [9; 16],
        "mid.vhdx",
        &[],
    );
    let err = open(&d.join("stale.vhdx"), &OpenOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    // Escaping parents.
    for rel in ["..\\..\\x", "/etc/shadow"] {
        writer_child(&d.join("esc.vhdx"), SIZE as u64, 5, [2; 16], rel, &[]);
        let err = open(&d.join("esc.vhdx"), &OpenOptions::default()).unwrap_err();
        assert!(matches!(err, Error::Refused { .. }), "{rel}: {err}");
    }
}

/// Sets the log GUID of both headers (fixing their checksums).
fn set_log_guid(b: &mut [u8], guid: &[u8]) {
    for h in [64 * 1024usize, 128 * 1024] {
        b[h + 48..h + 64].copy_from_slice(guid);
        let c = checksum(&b[h..h + 4096], 4);
        b[h + 4..h + 8].copy_from_slice(&c.to_le_bytes());
    }
}

#[test]
fn a_dirty_log_is_replayed_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("d.vhdx");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "vhdx",
            "-o",
            "block_size=1M,log_size=1M",
            p(&img),
            "8M",
        ],
    );
    // Each block allocation goes through QEMU's log (BAT updates), which it clears on close.
    run(
        "qemu-io",
        &[
            "-c",
            "write -P 0x41 0 3M",
            "-c",
            "write -P 0x42 5M 100k",
            p(&img),
        ],
    );
    let want = qemu_raw(&img, "vhdx");
    let mut b = std::fs::read(&img).unwrap();
    let hdr = Header::read(&MemSource::new(b.clone(), "h")).unwrap();
    assert_eq!(hdr.log_guid, [0; 16]);
    let log = hdr.log_offset as usize;
    assert_eq!(&b[log..log + 4], b"loge");
    // QEMU starts a new log GUID for every update: a crash after the last one leaves the
    // header with the newest entry's GUID.
    let newest = (0..1usize << 20)
        .step_by(4096)
        .map(|p| log + p)
        .filter(|&p| &b[p..p + 4] == b"loge")
        .max_by_key(|&p| u64::from_le_bytes(b[p + 16..p + 24].try_into().unwrap()))
        .unwrap();
    let entry_guid = b[newest + 32..newest + 48].to_vec();
    // Lose the BAT's first sector as a crash before the metadata write would: only the log
    // still has it.
    let regions = super::region::RegionTable::read(&MemSource::new(b.clone(), "r")).unwrap();
    let bat = regions.bat.offset as usize;
    b[bat..bat + 4096].fill(0);
    let src: SharedSource = Arc::new(MemSource::new(b.clone(), "lost"));
    let lost = read_all(&VhdxImage::parse(src).unwrap());
    assert!(lost != want, "zeroing the BAT should lose data");
    set_log_guid(&mut b, &entry_guid);
    let src: SharedSource = Arc::new(MemSource::new(b.clone(), "dirty"));
    let image = VhdxImage::parse(src).unwrap();
    assert!(format!("{:?}", image.details()).contains("replayed"));
    let got = read_all(&image);
    let diff = got.iter().zip(&want).position(|(a, b)| a != b);
    assert_eq!(diff, None, "replayed image differs from qemu-img's");
    // A log GUID that no entry carries: no valid sequence, refused with the reason.
    set_log_guid(&mut b, &[0x5a; 16]);
    let err = parse_bytes(b).unwrap_err();
    assert!(err.to_string().contains("log"), "{err}");
}

fn parse_bytes(b: Vec<u8>) -> crate::Result<u64> {
    let src: SharedSource = Arc::new(MemSource::new(b, "patched"));
    let img = VhdxImage::parse(src)?;
    let mut buf = vec![0u8; img.size().min(1 << 20) as usize];
    img.read_exact_at(0, &mut buf)?;
    Ok(img.size())
}

#[test]
fn hostile_images_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("w.vhdx");
    writer_dynamic(&img, &guest_content(4 << 20, 3), 1);
    let good = std::fs::read(&img).unwrap();
    assert!(parse_bytes(good.clone()).is_ok());
    let bat = 3 << 20;
    let entry = |b: &[u8], i: usize| {
        u64::from_le_bytes(b[bat + i * 8..bat + i * 8 + 8].try_into().unwrap())
    };

    // Overlapping BAT entries.
    let mut b = good.clone();
    let first = entry(&b, 0);
    b[bat + 8..bat + 16].copy_from_slice(&first.to_le_bytes());
    let err = parse_bytes(b).unwrap_err();
    assert!(
        matches!(err, Error::Corrupt { .. }) && err.to_string().contains("overlaps"),
        "{err}"
    );
    // A block over the metadata region.
    let mut b = good.clone();
    b[bat..bat + 8].copy_from_slice(&(6u64 | (2 << 20)).to_le_bytes());
    assert!(matches!(parse_bytes(b).unwrap_err(), Error::Corrupt { .. }));
    // A block past the end of the file.
    let mut b = good.clone();
    b[bat..bat + 8].copy_from_slice(&(6u64 | (1 << 40)).to_le_bytes());
    assert!(matches!(parse_bytes(b).unwrap_err(), Error::Corrupt { .. }));
    // Absurd virtual size (metadata item 2 at +64 KiB + 8).
    let mut b = good.clone();
    let at = (2 << 20) + 64 * 1024 + 8;
    b[at..at + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
    assert!(matches!(parse_bytes(b).unwrap_err(), Error::Corrupt { .. }));
    // A dirty log without any valid entry: refused with the reason.
    let mut b = good.clone();
    set_log_guid(&mut b, &[0x5a; 16]);
    let err = parse_bytes(b).unwrap_err();
    assert!(err.to_string().contains("log"), "{err}");
    // Both headers with bad checksums.
    let mut b = good.clone();
    b[64 * 1024 + 8] ^= 1;
    b[128 * 1024 + 8] ^= 1;
    assert!(matches!(parse_bytes(b).unwrap_err(), Error::Corrupt { .. }));
    // Truncations anywhere: errors, no panics.
    for n in [
        0usize,
        8,
        70_000,
        200_000,
        1 << 20,
        (2 << 20) + 100,
        (3 << 20) + 8,
    ] {
        assert!(parse_bytes(good[..n].to_vec()).is_err(), "truncated at {n}");
    }
}

/// Filesystem level: an ext4 in a qemu-made dynamic VHDX (state v1) under a differencing disk
/// holding only the sectors where v2 differs lists exactly v2, every file read through both
/// layers.
#[test]
fn differencing_disk_lists_the_child_filesystem_state() {
    use crate::disk::testutil::{assert_fs_lists, ext4_history};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let h = ext4_history(d);
    let raw = d.join("v1.raw");
    write_raw(&raw, &h.v1);
    let base = d.join("base.vhdx");
    run(
        "qemu-img",
        &["convert", "-f", "raw", "-O", "vhdx", p(&raw), p(&base)],
    );
    let base_guid = Header::read(&FileSource::open(&base).unwrap())
        .unwrap()
        .data_write_guid;
    let sector_of = |data: &[u8], s: u64| {
        let at = usize::try_from(s).unwrap() * 512;
        let mut b = [0u8; 512];
        b.copy_from_slice(&data[at..at + 512]);
        b
    };
    let differs = |s: u64| sector_of(&h.v1, s) != sector_of(&h.v2, s);
    let sectors = h.v2.len() as u64 / 512;
    let changed = (0..sectors).filter(|&s| differs(s)).count() as u64;
    assert!(
        changed > 0 && changed < sectors / 4,
        "{changed} of {sectors} sectors differ: the child would not exercise the parent"
    );
    let f = |s: u64| differs(s).then(|| sector_of(&h.v2, s));
    let child = d.join("child.vhdx");
    write_vhdx(
        &child,
        &VhdxSpec {
            size: h.v2.len() as u64,
            data_write_guid: [7; 16],
            parent: Some((
                base_guid,
                vec![("relative_path", ".\\base.vhdx".to_string())],
            )),
            sector: &f,
        },
    );
    let disk = open(&child, &OpenOptions::default()).unwrap();
    assert_eq!(disk.chain.len(), 2);
    assert!(read_all(disk.source.as_ref()) == h.v2);
    assert_fs_lists(&child, &h.v2_tree);
    assert_fs_lists(&base, &h.v1_tree);
}
