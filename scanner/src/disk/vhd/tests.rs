//! VHD reader tests: qemu-made fixed and dynamic disks, and differencing chains made by the
//! test writer (whose dynamic output qemu-img reads back).

use std::path::{Path, PathBuf};

use super::test_writer::{write_vhd, VhdSpec};
use super::VhdImage;
use crate::block::{BlockSource, FileSource, SharedSource};
use crate::disk::testutil::{check_ranges, guest_content, p, qemu_raw, read_all, run, write_raw};
use crate::disk::{open, DiskFormat, OpenOptions};
use crate::error::Error;

const SIZE: usize = 6 << 20;

#[test]
fn qemu_fixed_and_dynamic_read_like_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("raw.img");
    let data = guest_content(SIZE, 9);
    write_raw(&raw, &data);
    for (name, args) in [
        ("dyn.vhd", vec![]),
        ("fixed.vhd", vec!["-o", "subformat=fixed"]),
    ] {
        let img = dir.path().join(name);
        let mut a = vec!["convert", "-f", "raw", "-O", "vpc"];
        a.extend(args);
        a.extend([p(&raw), p(&img)]);
        run("qemu-img", &a);
        let disk = open(&img, &OpenOptions::default()).unwrap();
        assert_eq!(disk.format, DiskFormat::Vhd);
        let want = qemu_raw(&img, "vpc");
        // qemu rounds the size up to a CHS geometry: same size as qemu, data then zeros.
        assert_eq!(disk.source.size(), want.len() as u64, "{name}");
        let got = read_all(disk.source.as_ref());
        assert!(got == want, "{name} differs from qemu-img");
        assert!(got[..SIZE] == data[..], "{name}");
        check_ranges(disk.source.as_ref(), &want);
    }
}

fn sector_of(data: &[u8], s: u64) -> [u8; 512] {
    let mut b = [0u8; 512];
    b.copy_from_slice(&data[s as usize * 512..s as usize * 512 + 512]);
    b
}

/// Writes a dynamic VHD of `data` with the test writer.
fn writer_dynamic(path: &Path, data: &[u8], id: u8) {
    let f = |s: u64| {
        let sec = sector_of(data, s);
        (sec != [0u8; 512]).then_some(sec)
    };
    write_vhd(
        path,
        &VhdSpec {
            size: data.len() as u64,
            block_size: 512 * 1024,
            unique_id: [id; 16],
            parent: None,
            sector: &f,
        },
    );
}

/// Writes a differencing VHD over parent `parent_id`, overriding `changes` (sector -> fill byte).
fn writer_child(
    path: &Path,
    size: u64,
    id: u8,
    parent_id: [u8; 16],
    locators: Vec<(&'static [u8; 4], String)>,
    changes: &[(u64, u8)],
) {
    let f = |s: u64| {
        changes
            .iter()
            .find(|(c, _)| *c == s)
            .map(|(_, b)| [*b; 512])
    };
    write_vhd(
        path,
        &VhdSpec {
            size,
            block_size: 512 * 1024,
            unique_id: [id; 16],
            parent: Some((parent_id, locators)),
            sector: &f,
        },
    );
}

#[test]
fn the_test_writer_is_read_by_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let data = guest_content(SIZE, 21);
    let img = dir.path().join("w.vhd");
    writer_dynamic(&img, &data, 1);
    assert!(
        qemu_raw(&img, "vpc") == data,
        "qemu-img reads the writer's VHD differently"
    );
    let disk = open(&img, &OpenOptions::default()).unwrap();
    assert!(read_all(disk.source.as_ref()) == data);
}

fn changes() -> Vec<(u64, u8)> {
    // A few sectors in one block, a whole block, and the last sector.
    let mut c: Vec<(u64, u8)> = vec![(0, 0xa1), (1, 0xa2), (7, 0xa3), (4000, 0xa4)];
    c.extend((2048..3072).map(|s| (s, 0xb0)));
    c.push(((SIZE as u64 / 512) - 1, 0xc0));
    c
}

fn apply(data: &mut [u8], changes: &[(u64, u8)]) {
    for &(s, b) in changes {
        data[s as usize * 512..s as usize * 512 + 512].fill(b);
    }
}

fn parent_id(path: &Path) -> [u8; 16] {
    let f: SharedSource = std::sync::Arc::new(FileSource::open(path).unwrap());
    VhdImage::parse(f).unwrap().footer().unique_id
}

#[test]
fn differencing_chains_read_the_top_state() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The base is made by qemu-img itself (dynamic, CHS-rounded size).
    let raw = d.join("raw.img");
    let mut data = guest_content(SIZE, 33);
    write_raw(&raw, &data);
    let base = d.join("parent.vhd");
    run(
        "qemu-img",
        &["convert", "-f", "raw", "-O", "vpc", p(&raw), p(&base)],
    );
    let size = qemu_raw(&base, "vpc").len() as u64;
    data.resize(size as usize, 0);

    let mid = d.join("mid.vhd");
    let loc = |n: &str| {
        vec![
            (b"W2ru", format!(".\\{n}")),
            (b"W2ku", format!("C:\\vms\\{n}")),
        ]
    };
    writer_child(
        &mid,
        size,
        2,
        parent_id(&base),
        loc("parent.vhd"),
        &changes(),
    );
    apply(&mut data, &changes());
    let top_changes: Vec<(u64, u8)> = vec![(1, 0xd1), (2047, 0xd2), (2048, 0xd3), (5000, 0xd4)];
    let top = d.join("top.vhd");
    writer_child(&top, size, 3, [2; 16], loc("mid.vhd"), &top_changes);
    apply(&mut data, &top_changes);

    let disk = open(&top, &OpenOptions::default()).unwrap();
    assert_eq!(disk.chain.len(), 3);
    let got = read_all(disk.source.as_ref());
    let first_diff = got.iter().zip(&data).position(|(a, b)| a != b);
    assert_eq!(first_diff, None, "sizes {} {}", got.len(), data.len());
    check_ranges(disk.source.as_ref(), &data);
    assert!(format!("{:?}", disk.details).contains("differencing"));

    // Only an absolute Windows path: its file name is looked for beside the image.
    let only_abs = d.join("abs.vhd");
    writer_child(
        &only_abs,
        size,
        4,
        [2; 16],
        vec![(b"W2ku", "D:\\x\\mid.vhd".into())],
        &[],
    );
    assert_eq!(
        open(&only_abs, &OpenOptions::default())
            .unwrap()
            .chain
            .len(),
        3
    );
}

fn child_error(
    d: &Path,
    name: &str,
    parent: [u8; 16],
    locators: Vec<(&'static [u8; 4], String)>,
) -> Error {
    let img: PathBuf = d.join(name);
    writer_child(&img, 1 << 20, 9, parent, locators, &[(0, 1)]);
    open(&img, &OpenOptions::default()).unwrap_err()
}

#[test]
fn hostile_parents_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("a/b");
    std::fs::create_dir_all(&d).unwrap();
    writer_dynamic(&dir.path().join("x"), &vec![1u8; 1 << 20], 1);
    writer_dynamic(&d.join("p.vhd"), &vec![1u8; 1 << 20], 1);
    for (code, path) in [
        (b"W2ru", "..\\..\\x"),
        (b"W2ku", "/etc/shadow"),
        (b"MacX", "file:///etc/shadow"),
    ] {
        let err = child_error(&d, "c.vhd", [1; 16], vec![(code, path.to_string())]);
        assert!(matches!(err, Error::Refused { .. }), "{path}: {err}");
    }
    // Wrong parent unique id.
    let err = child_error(&d, "c.vhd", [7; 16], vec![(b"W2ru", ".\\p.vhd".into())]);
    assert!(
        matches!(err, Error::Corrupt { .. }) && err.to_string().contains("unique id"),
        "{err}"
    );
    // A child naming itself.
    let err = child_error(
        &d,
        "self.vhd",
        [9; 16],
        vec![(b"W2ru", ".\\self.vhd".into())],
    );
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}

#[test]
fn hostile_headers_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("w.vhd");
    writer_dynamic(&img, &guest_content(1 << 20, 2), 1);
    let good = std::fs::read(&img).unwrap();
    let try_patch = |at: usize, bytes: &[u8]| {
        let mut b = good.clone();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        // Both footer copies, so the reader cannot fall back to the intact one.
        if at < 512 {
            let end = b.len() - 512 + at;
            b[end..end + bytes.len()].copy_from_slice(bytes);
        }
        let src: SharedSource = std::sync::Arc::new(crate::block::MemSource::new(b, "patched"));
        VhdImage::parse(src).and_then(|i| {
            let v = vec![0u8; 4096];
            let mut v = v;
            i.read_exact_at(0, &mut v).map(|_| i.size())
        })
    };
    // Absurd size, BAT past the end, bad block size, BAT entry past the end.
    assert!(matches!(
        try_patch(48, &(1u64 << 62).to_be_bytes()),
        Err(Error::Corrupt { .. })
    ));
    assert!(try_patch(512 + 16, &(1u64 << 50).to_be_bytes()).is_err());
    assert!(try_patch(512 + 32, &3u32.to_be_bytes()).is_err());
    let bat = u64::from_be_bytes(good[512 + 16..512 + 24].try_into().unwrap()) as usize;
    assert!(try_patch(bat, &0x7fff_fff0u32.to_be_bytes()).is_err());
    // Too many BAT entries for the file.
    assert!(try_patch(512 + 28, &u32::MAX.to_be_bytes()).is_err());
}

/// Filesystem level: an ext4 in a dynamic VHD (state v1) under a differencing VHD holding
/// only the sectors where v2 differs lists exactly v2, every file read through both layers.
#[test]
fn differencing_disk_lists_the_child_filesystem_state() {
    use crate::disk::testutil::{assert_fs_lists, ext4_history};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let h = ext4_history(d);
    let base = d.join("base.vhd");
    writer_dynamic(&base, &h.v1, 1);
    let differs = |s: u64| sector_of(&h.v1, s) != sector_of(&h.v2, s);
    let sectors = h.v2.len() as u64 / 512;
    let changed = (0..sectors).filter(|&s| differs(s)).count() as u64;
    assert!(
        changed > 0 && changed < sectors / 4,
        "{changed} of {sectors} sectors differ: the child would not exercise the parent"
    );
    let f = |s: u64| differs(s).then(|| sector_of(&h.v2, s));
    let child = d.join("child.vhd");
    write_vhd(
        &child,
        &VhdSpec {
            size: h.v2.len() as u64,
            block_size: 512 * 1024,
            unique_id: [7; 16],
            parent: Some((parent_id(&base), vec![(b"W2ru", ".\\base.vhd".to_string())])),
            sector: &f,
        },
    );
    let disk = open(&child, &OpenOptions::default()).unwrap();
    assert_eq!(disk.chain.len(), 2);
    assert!(read_all(disk.source.as_ref()) == h.v2);
    assert_fs_lists(&child, &h.v2_tree);
    assert_fs_lists(&base, &h.v1_tree);
}
