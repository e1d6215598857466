//! VMDK tests: images made by `qemu-img` / `qemu-io` at test time (compared byte for byte with
//! the raw data and with `qemu-img convert -O raw`), hand-made descriptors and extents, and
//! hostile patched copies.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use super::*;
use crate::block::MemSource;
use crate::disk::{ChainPolicy, OpenOptions};

/// Deterministic pseudo-random bytes (xorshift), with zero regions so sparse formats skip grains.
fn test_data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    // Zero regions: one aligned to grains, one unaligned, and the tail.
    for (start, end) in [(256 << 10, 768 << 10), (1_000_003, 1_300_001)] {
        if end <= len {
            v[start..end].fill(0);
        }
    }
    let tail = len - len / 8;
    v[tail..].fill(0);
    v
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn qemu_img(args: &[&str]) {
    run("qemu-img", args);
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Reads the whole virtual disk in pieces of `chunk` bytes.
fn read_all(src: &dyn BlockSource, chunk: usize) -> Vec<u8> {
    let mut out = vec![0u8; src.size() as usize];
    for (i, piece) in out.chunks_mut(chunk).enumerate() {
        src.read_exact_at((i * chunk) as u64, piece).unwrap();
    }
    out
}

fn open_path(path: &Path) -> Result<OpenedDisk> {
    crate::disk::open(path, &OpenOptions::default())
}

fn qemu_raw(dir: &Path, image: &Path) -> Vec<u8> {
    let out = dir.join("qemu-out.raw");
    qemu_img(&["convert", "-O", "raw", p(image), p(&out)]);
    std::fs::read(out).unwrap()
}

fn assert_same(a: &[u8], b: &[u8], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: size");
    if let Some(i) = a.iter().zip(b).position(|(x, y)| x != y) {
        panic!("{what}: first difference at byte {i:#x}");
    }
}

#[test]
fn every_qemu_subformat_reads_like_the_raw_disk() {
    let dir = tempfile::tempdir().unwrap();
    let data = test_data(3 << 20, 7);
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, &data).unwrap();
    for sub in [
        "monolithicSparse",
        "streamOptimized",
        "monolithicFlat",
        "twoGbMaxExtentSparse",
        "twoGbMaxExtentFlat",
    ] {
        let image = dir.path().join(format!("{sub}.vmdk"));
        let opt = format!("subformat={sub}");
        qemu_img(&["convert", "-O", "vmdk", "-o", &opt, p(&raw), p(&image)]);
        let disk = open_path(&image).unwrap_or_else(|e| panic!("{sub}: {e}"));
        assert_eq!(disk.format, DiskFormat::Vmdk);
        assert!(
            disk.details
                .iter()
                .any(|(k, v)| k == "create type" && v == sub),
            "{sub}: {:?}",
            disk.details
        );
        for chunk in [4096, 65536 * 3 + 512, 1 << 20] {
            assert_same(&read_all(disk.source.as_ref(), chunk), &data, sub);
        }
        assert_same(
            &read_all(disk.source.as_ref(), 1 << 20),
            &qemu_raw(dir.path(), &image),
            sub,
        );
        // Unaligned reads across grain boundaries.
        let mut b = vec![0u8; 70_001];
        disk.source.read_exact_at(65_530, &mut b).unwrap();
        assert_same(&b, &data[65_530..65_530 + 70_001], sub);
    }
}

#[test]
fn zeroed_grain_images_read_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let data = test_data(2 << 20, 3);
    let raw = dir.path().join("d.raw");
    std::fs::write(&raw, &data).unwrap();
    let image = dir.path().join("z.vmdk");
    qemu_img(&[
        "convert",
        "-O",
        "vmdk",
        "-o",
        "zeroed_grain=on",
        p(&raw),
        p(&image),
    ]);
    run("qemu-io", &["-c", "write -z 0 128k", p(&image)]);
    let disk = open_path(&image).unwrap();
    let got = read_all(disk.source.as_ref(), 65536);
    assert_same(&got, &qemu_raw(dir.path(), &image), "zeroed grain");
    assert!(got[..128 << 10].iter().all(|&b| b == 0));
}

#[test]
fn delta_chain_reads_the_top_state() {
    let dir = tempfile::tempdir().unwrap();
    let data = test_data(4 << 20, 11);
    let raw = dir.path().join("d.raw");
    std::fs::write(&raw, &data).unwrap();
    let base = dir.path().join("base.vmdk");
    qemu_img(&["convert", "-O", "vmdk", p(&raw), p(&base)]);
    let mid = dir.path().join("base-000001.vmdk");
    let top = dir.path().join("base-000002.vmdk");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-b",
        "base.vmdk",
        "-F",
        "vmdk",
        p(&mid),
    ]);
    run("qemu-io", &["-c", "write -P 0xab 100k 200k", p(&mid)]);
    run("qemu-io", &["-c", "write -P 0x11 3M 1M", p(&mid)]);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-b",
        "base-000001.vmdk",
        "-F",
        "vmdk",
        p(&top),
    ]);
    run("qemu-io", &["-c", "write -P 0xcd 150k 64k", p(&top)]);
    run("qemu-io", &["-c", "write -P 0xee 4000k 96k", p(&top)]);
    let disk = open_path(&top).unwrap();
    assert_eq!(disk.chain.len(), 3);
    assert!(disk.chain[2].path.ends_with("base.vmdk"));
    let got = read_all(disk.source.as_ref(), 100_000);
    assert_same(&got, &qemu_raw(dir.path(), &top), "chain");
    assert!(got[150 << 10..214 << 10].iter().all(|&b| b == 0xcd));
    assert!(got[100 << 10..150 << 10].iter().all(|&b| b == 0xab));
    assert_eq!(got[0..100 << 10], data[0..100 << 10]);
}

#[test]
fn parent_cid_mismatch_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("d.raw"), test_data(1 << 20, 5)).unwrap();
    let base = dir.path().join("base.vmdk");
    qemu_img(&[
        "convert",
        "-O",
        "vmdk",
        p(&dir.path().join("d.raw")),
        p(&base),
    ]);
    let top = dir.path().join("top.vmdk");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-b",
        "base.vmdk",
        "-F",
        "vmdk",
        p(&top),
    ]);
    // Writing the base after the snapshot changes its CID.
    run("qemu-io", &["-c", "write -P 1 0 4k", p(&base)]);
    let err = open_path(&top).unwrap_err();
    assert!(err.to_string().contains("parentCID"), "{err}");
}

fn patch_u64(path: &Path, at: usize, v: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    std::fs::write(path, b).unwrap();
}

fn sparse_image(dir: &Path, name: &str, sub: &str) -> (PathBuf, Vec<u8>) {
    let data = test_data(1 << 20, 9);
    let raw = dir.join(format!("{name}.raw"));
    std::fs::write(&raw, &data).unwrap();
    let image = dir.join(name);
    let opt = format!("subformat={sub}");
    qemu_img(&["convert", "-O", "vmdk", "-o", &opt, p(&raw), p(&image)]);
    (image, data)
}

#[test]
fn stream_optimized_with_the_directory_in_the_footer() {
    let dir = tempfile::tempdir().unwrap();
    let (image, data) = sparse_image(dir.path(), "s.vmdk", "streamOptimized");
    // Rewrite as a real stream: GD_AT_END in the header, footer + end-of-stream at the end.
    let mut b = std::fs::read(&image).unwrap();
    let header = b[..512].to_vec();
    b[56..64].copy_from_slice(&sparse_header::GD_AT_END.to_le_bytes());
    let mut footer_marker = vec![0u8; 512];
    footer_marker[0..8].copy_from_slice(&1u64.to_le_bytes());
    footer_marker[12..16].copy_from_slice(&stream_optimized::MARKER_FOOTER.to_le_bytes());
    b.extend_from_slice(&footer_marker);
    b.extend_from_slice(&header);
    b.extend_from_slice(&[0u8; 512]);
    std::fs::write(&image, &b).unwrap();
    let disk = open_path(&image).unwrap();
    assert_same(&read_all(disk.source.as_ref(), 4096), &data, "footer");
    // Without the end-of-stream marker the footer is not trusted.
    b.truncate(b.len() - 512);
    std::fs::write(&image, &b).unwrap();
    let err = open_path(&image).unwrap_err();
    assert!(err.to_string().contains("marker"), "{err}");
}

#[test]
fn redundant_grain_directory_replaces_a_broken_primary() {
    let dir = tempfile::tempdir().unwrap();
    let (image, data) = sparse_image(dir.path(), "r.vmdk", "monolithicSparse");
    patch_u64(&image, 56, 1 << 40);
    let disk = open_path(&image).unwrap();
    assert!(disk.details.iter().any(|(_, v)| v.contains("redundant")));
    assert_same(&read_all(disk.source.as_ref(), 65536), &data, "rgd");
}

#[test]
fn hostile_sparse_headers_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    // Grain directory past the end (no redundant one: flags cleared).
    let (image, _) = sparse_image(dir.path(), "a.vmdk", "monolithicSparse");
    patch_u64(&image, 56, 1 << 40);
    patch_u64(&image, 48, 0);
    let err = open_path(&image).unwrap_err();
    assert!(err.to_string().contains("grain directory"), "{err}");
    // Absurd capacity.
    let (image, _) = sparse_image(dir.path(), "b.vmdk", "monolithicSparse");
    patch_u64(&image, 12, u64::MAX / 512);
    let err = open_path(&image).unwrap_err();
    assert!(err.to_string().contains("capacity"), "{err}");
    // A grain directory entry pointing past the end of the file.
    let (image, _) = sparse_image(dir.path(), "c.vmdk", "monolithicSparse");
    let b = std::fs::read(&image).unwrap();
    let gd = u64::from_le_bytes(b[56..64].try_into().unwrap()) as usize * 512;
    let rgd = u64::from_le_bytes(b[48..56].try_into().unwrap()) as usize * 512;
    let mut b2 = b.clone();
    for at in [gd, rgd] {
        b2[at..at + 4].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    }
    std::fs::write(&image, &b2).unwrap();
    let err = open_path(&image).unwrap_err();
    assert!(err.to_string().contains("past the end"), "{err}");
    // A grain table entry pointing past the end: a read error, not a panic or a short read.
    let gt = u32::from_le_bytes(b[gd..gd + 4].try_into().unwrap()) as usize * 512;
    let mut b3 = b.clone();
    b3[gt..gt + 4].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
    let rgt = u32::from_le_bytes(b[rgd..rgd + 4].try_into().unwrap()) as usize * 512;
    b3[rgt..rgt + 4].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
    std::fs::write(&image, &b3).unwrap();
    let disk = open_path(&image).unwrap();
    let mut buf = vec![0u8; 4096];
    let err = disk.source.read_exact_at(0, &mut buf).unwrap_err();
    assert!(err.to_string().contains("past the end"), "{err}");
}

#[test]
fn hostile_descriptor_paths_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("vm");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(root.path().join("x"), vec![0u8; 4096]).unwrap();
    std::fs::write(dir.join("ok-flat.vmdk"), vec![0u8; 4096]).unwrap();
    for (name, extent) in [("abs", "/etc/shadow"), ("up", "../x"), ("up2", "../../x")] {
        let d = dir.join(format!("{name}.vmdk"));
        std::fs::write(
            &d,
            format!("# Disk DescriptorFile\nCID=1\nparentCID=ffffffff\nRW 8 FLAT \"{extent}\" 0\n"),
        )
        .unwrap();
        let err = open_path(&d).unwrap_err();
        assert!(
            matches!(err, Error::Refused { .. } | Error::NotFound { .. }),
            "{name}: {err}"
        );
    }
    // `../x` is allowed once the user names its directory.
    let opts = OpenOptions {
        chain: ChainPolicy {
            allowed_dirs: vec![root.path().to_path_buf()],
        },
        ..OpenOptions::default()
    };
    let disk = crate::disk::open(&dir.join("up.vmdk"), &opts).unwrap();
    assert_eq!(disk.source.size(), 4096);
    // A parent that is the disk itself.
    let d = dir.join("self.vmdk");
    std::fs::write(
        &d,
        "# Disk DescriptorFile\nCID=1\nparentCID=1\nparentFileNameHint=\"self.vmdk\"\n\
         RW 8 FLAT \"ok-flat.vmdk\" 0\n",
    )
    .unwrap();
    let err = open_path(&d).unwrap_err();
    assert!(err.to_string().contains("loops"), "{err}");
    // Two disks naming each other.
    for (a, b) in [("a.vmdk", "b.vmdk"), ("b.vmdk", "a.vmdk")] {
        std::fs::write(
            dir.join(a),
            format!(
                "# Disk DescriptorFile\nCID=1\nparentCID=1\nparentFileNameHint=\"{b}\"\n\
                 RW 8 FLAT \"ok-flat.vmdk\" 0\n"
            ),
        )
        .unwrap();
    }
    let err = open_path(&dir.join("a.vmdk")).unwrap_err();
    assert!(err.to_string().contains("loops"), "{err}");
    // A flat extent larger than its file, and a huge descriptor.
    let d = dir.join("short.vmdk");
    std::fs::write(
        &d,
        "# Disk DescriptorFile\nRW 800 FLAT \"ok-flat.vmdk\" 0\n",
    )
    .unwrap();
    assert!(open_path(&d).is_err());
    let d = dir.join("huge.vmdk");
    let mut text = b"# Disk DescriptorFile\n".to_vec();
    text.resize(2 << 20, b'#');
    std::fs::write(&d, text).unwrap();
    assert!(matches!(open_path(&d), Err(Error::Limit { .. })));
    // A SESPARSE extent that is not one, and unsupported variants, say which.
    std::fs::write(dir.join("x-sesparse.vmdk"), vec![0u8; 4096]).unwrap();
    for (kind, expect) in [
        ("SESPARSE", "SESPARSE"),
        ("VMFSRDM", "raw device mapping"),
        ("VSANSPARSE", "VSANSPARSE"),
    ] {
        let d = dir.join(format!("{kind}.vmdk"));
        std::fs::write(
            &d,
            format!("# Disk DescriptorFile\nRW 8 {kind} \"x-sesparse.vmdk\"\n"),
        )
        .unwrap();
        let err = open_path(&d).unwrap_err();
        assert!(err.to_string().contains(expect), "{kind}: {err}");
    }
}

#[test]
fn multiple_extents_of_every_kind_compose() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = test_data(1 << 20, 21);
    std::fs::write(d.join("s.raw"), &data[..512 << 10]).unwrap();
    qemu_img(&[
        "convert",
        "-O",
        "vmdk",
        p(&d.join("s.raw")),
        p(&d.join("s.vmdk")),
    ]);
    // A flat file whose data starts at sector 16.
    let mut flat = vec![0x5a; 16 * 512];
    flat.extend_from_slice(&data[512 << 10..]);
    std::fs::write(d.join("f-flat.vmdk"), &flat).unwrap();
    let desc = d.join("multi.vmdk");
    std::fs::write(
        &desc,
        "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n\
         createType=\"custom\"\n\n# Extent description\n\
         RW 1024 SPARSE \"s.vmdk\"\nRDONLY 100 ZERO\nRW 1024 FLAT \"f-flat.vmdk\" 16\n",
    )
    .unwrap();
    let disk = open_path(&desc).unwrap();
    let mut want = data[..512 << 10].to_vec();
    want.extend_from_slice(&[0u8; 100 * 512]);
    want.extend_from_slice(&data[512 << 10..]);
    assert_same(&read_all(disk.source.as_ref(), 3000), &want, "multi");
}

/// A small COWD (ESX sparse) extent: 64-sector capacity, 8-sector grains, GD at sector 4.
fn cowd_image(grains: &[(u32, u8)]) -> Vec<u8> {
    let mut b = vec![0u8; 2048];
    b[0..4].copy_from_slice(cowd_header::MAGIC);
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    b[8..12].copy_from_slice(&3u32.to_le_bytes());
    b[12..16].copy_from_slice(&64u32.to_le_bytes());
    b[16..20].copy_from_slice(&8u32.to_le_bytes());
    b[20..24].copy_from_slice(&4u32.to_le_bytes());
    b[24..28].copy_from_slice(&1u32.to_le_bytes());
    // GD at sector 4 (one entry -> GT at sector 5, 4096 entries = 32 sectors).
    b.resize(512 * 37, 0);
    b[2048..2052].copy_from_slice(&5u32.to_le_bytes());
    for (i, &(grain, fill)) in grains.iter().enumerate() {
        let sector = 37 + 8 * i as u32;
        let at = 2560 + grain as usize * 4;
        b[at..at + 4].copy_from_slice(&sector.to_le_bytes());
        b.extend_from_slice(&[fill; 4096]);
    }
    b
}

#[test]
fn esx_delta_over_a_flat_parent_in_memory() {
    let parent_flat: Vec<u8> = test_data(64 * 512, 4);
    let files = vec![
        (
            "base.vmdk".to_string(),
            Arc::new(MemSource::new(
                &b"# Disk DescriptorFile\nCID=0000abcd\nparentCID=ffffffff\n\
                   createType=\"vmfs\"\nRW 64 VMFS \"base-flat.vmdk\"\n"[..],
                "base.vmdk",
            )) as SharedSource,
        ),
        (
            "base-flat.vmdk".to_string(),
            Arc::new(MemSource::new(parent_flat.clone(), "base-flat.vmdk")) as SharedSource,
        ),
        (
            "base-000001-delta.vmdk".to_string(),
            Arc::new(MemSource::new(cowd_image(&[(1, 0x77), (6, 0x88)]), "delta")) as SharedSource,
        ),
    ];
    let top: SharedSource = Arc::new(MemSource::new(
        &b"# Disk DescriptorFile\nCID=00000001\nparentCID=0000abcd\ncreateType=\"vmfsSparse\"\n\
           parentFileNameHint=\"base.vmdk\"\nRW 64 VMFSSPARSE \"base-000001-delta.vmdk\"\n"[..],
        "top.vmdk",
    ));
    let disk = open_source(top.clone(), &mut MemoryFiles::new(files.clone())).unwrap();
    assert_eq!(disk.chain.len(), 2);
    let got = read_all(disk.source.as_ref(), 1000);
    let mut want = parent_flat;
    want[4096..8192].fill(0x77);
    want[6 * 4096..7 * 4096].fill(0x88);
    assert_same(&got, &want, "cowd delta");

    // A parent naming itself, in memory: bounded, an error.
    let looping: SharedSource = Arc::new(MemSource::new(
        &b"# Disk DescriptorFile\nCID=1\nparentCID=1\nparentFileNameHint=\"loop.vmdk\"\nRW 1 ZERO\n"
            [..],
        "loop.vmdk",
    ));
    let mut files = files;
    files.push(("loop.vmdk".into(), looping.clone()));
    let err = open_source(looping, &mut MemoryFiles::new(files)).unwrap_err();
    assert!(matches!(err, Error::Limit { .. }), "{err}");
}

#[test]
fn truncated_and_garbage_inputs_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (image, _) = sparse_image(dir.path(), "t.vmdk", "streamOptimized");
    let b = std::fs::read(&image).unwrap();
    for cut in [
        0usize,
        4,
        100,
        511,
        512,
        1024,
        10_000,
        b.len() / 2,
        b.len() - 1,
    ] {
        let src: SharedSource = Arc::new(MemSource::new(b[..cut].to_vec(), "t.vmdk"));
        if let Ok(d) = open_source(src, &mut MemoryFiles::default()) {
            let _ = d
                .source
                .read_exact_at(0, &mut vec![0u8; d.source.size().min(1 << 20) as usize]);
        }
    }
}

/// A SESPARSE extent of 2048 sectors with 4 KiB grains: const header (sector 0), volatile header
/// (1), grain directory (2), grain table 0 (3..67), grains from sector 67. `map` gives GT entries.
fn sesparse_image(map: &[(usize, u64)], grains: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 67 * 512];
    let fields: [(usize, u64); 10] = [
        (0, sesparse_header::CONST_MAGIC),
        (1, sesparse_header::VERSION),
        (2, 2048),
        (3, 8),
        (4, 64),
        (10, 1),
        (16, 2),
        (17, 1),
        (18, 3),
        (24, 67),
    ];
    for (i, v) in fields {
        b[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
    }
    b[512..520].copy_from_slice(&sesparse_header::VOLATILE_MAGIC.to_le_bytes());
    b[1024..1032].copy_from_slice(&0x1000_0000_0000_0000u64.to_le_bytes());
    for &(grain, entry) in map {
        let at = 3 * 512 + grain * 8;
        b[at..at + 8].copy_from_slice(&entry.to_le_bytes());
    }
    b.extend_from_slice(grains);
    b
}

/// A SESPARSE "allocated" GT entry for grain number `n`.
fn se_allocated(n: u64) -> u64 {
    (3 << 60) | ((n & 0xfff) << 48) | (n >> 12)
}

#[test]
fn sesparse_delta_over_a_flat_parent() {
    let parent: Vec<u8> = test_data(2048 * 512, 8);
    let mut grains = vec![0x31u8; 4096];
    grains.extend_from_slice(&[0x32; 4096]);
    grains.extend_from_slice(&[0x33; 4096]);
    let se = sesparse_image(
        &[
            (0, se_allocated(0)),
            (1, se_allocated(1)),
            (2, 2 << 60),
            (3, 1 << 60),
            (5, se_allocated(2)),
        ],
        &grains,
    );
    let mem = |data: Vec<u8>, name: &str| Arc::new(MemSource::new(data, name)) as SharedSource;
    let files = vec![
        (
            "base.vmdk".to_string(),
            mem(
                b"# Disk DescriptorFile\nCID=00000007\nRW 2048 FLAT \"base-flat.vmdk\" 0\n"
                    .to_vec(),
                "base.vmdk",
            ),
        ),
        ("base-flat.vmdk".to_string(), mem(parent.clone(), "flat")),
        ("s-sesparse.vmdk".to_string(), mem(se.clone(), "se")),
    ];
    let top = mem(
        b"# Disk DescriptorFile\nCID=1\nparentCID=00000007\ncreateType=\"seSparse\"\n\
          parentFileNameHint=\"base.vmdk\"\nRW 2048 SESPARSE \"s-sesparse.vmdk\"\n"
            .to_vec(),
        "top.vmdk",
    );
    let disk = open_source(top.clone(), &mut MemoryFiles::new(files.clone())).unwrap();
    let got = read_all(disk.source.as_ref(), 3000);
    let mut want = parent;
    want[0..4096].fill(0x31);
    want[4096..8192].fill(0x32);
    want[8192..16384].fill(0);
    want[5 * 4096..6 * 4096].fill(0x33);
    assert_same(&got, &want, "sesparse");

    // Hostile variants: an entry of an unknown type, a table number past the end of the file, a
    // journal to replay.
    let mut bad_entry = se.clone();
    let at = 3 * 512 + 6 * 8;
    bad_entry[at..at + 8].copy_from_slice(&(7u64 << 60).to_le_bytes());
    let mut bad_gd = se.clone();
    bad_gd[1024..1032].copy_from_slice(&0x1000_0000_0000_0100u64.to_le_bytes());
    let mut dirty = se;
    dirty[512 + 24] = 1;
    for (what, image) in [("entry", bad_entry), ("gd", bad_gd), ("dirty", dirty)] {
        let mut files = files.clone();
        files[2].1 = mem(image, "se");
        match open_source(top.clone(), &mut MemoryFiles::new(files)) {
            Err(e) => assert!(
                e.to_string().contains("SESPARSE") || e.to_string().contains("past the end"),
                "{what}: {e}"
            ),
            Ok(d) => {
                let err = d
                    .source
                    .read_exact_at(6 * 4096, &mut [0u8; 512])
                    .unwrap_err();
                assert!(err.to_string().contains("SESPARSE"), "{what}: {err}");
            }
        }
    }
}

#[test]
fn absolute_parent_hints_fall_back_to_the_file_beside_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("base-flat.vmdk"), test_data(8 * 512, 2)).unwrap();
    std::fs::write(
        d.join("base.vmdk"),
        "# Disk DescriptorFile\nCID=0000abcd\nRW 8 VMFS \"base-flat.vmdk\"\n",
    )
    .unwrap();
    std::fs::write(d.join("delta.vmdk"), cowd_image(&[])).unwrap();
    for hint in [
        "/vmfs/volumes/datastore1/vm/base.vmdk",
        "C:\\VMs\\vm\\base.vmdk",
    ] {
        let top = d.join("top.vmdk");
        std::fs::write(
            &top,
            format!(
                "# Disk DescriptorFile\nCID=1\nparentCID=0000abcd\nparentFileNameHint=\"{hint}\"\n\
                 RW 8 VMFSSPARSE \"delta.vmdk\"\n"
            ),
        )
        .unwrap();
        let disk = open_path(&top).unwrap_or_else(|e| panic!("{hint}: {e}"));
        assert_eq!(disk.chain.len(), 2);
        assert!(disk
            .details
            .iter()
            .any(|(_, v)| v.contains("beside the image")));
        assert_eq!(
            read_all(disk.source.as_ref(), 4096),
            test_data(8 * 512, 2),
            "{hint}"
        );
    }
    // Nothing beside the image: the original refusal stands.
    let top = d.join("top2.vmdk");
    std::fs::write(
        &top,
        "# Disk DescriptorFile\nCID=1\nparentCID=2\nparentFileNameHint=\"/etc/passwd\"\n\
         RW 8 VMFSSPARSE \"delta.vmdk\"\n",
    )
    .unwrap();
    assert!(matches!(open_path(&top), Err(Error::Refused { .. })));
}
