//! FAT tests: images made by `mkfs.vfat` + `mcopy -s` from a planted tree, compared with the
//! planted ground truth and with The Sleuth Kit; hostile images patched from those.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use super::*;
use crate::block::{FileSource, MemSource};
use crate::fs::{read_all, FileEntry};

/// Planted files: path -> content (directories are implied).
fn planted() -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    let mut add = |p: &str, c: Vec<u8>| {
        m.insert(p.to_string(), c);
    };
    add("/README.TXT", b"plain 8.3 upper case\n".to_vec());
    add("/lower.txt", b"8.3 name in lower case\n".to_vec());
    add("/Mixed Case Name With Spaces.text", b"spaces\n".to_vec());
    add("/empty.dat", Vec::new());
    add("/日本語のファイル名.txt", "日本語\n".as_bytes().to_vec());
    // mtools (4.0.x) truncates code points above U+FFFF to 16 bits and drops combining marks:
    // such names are planted by rewriting long-name entries (see
    // `astral_and_combining_characters_in_long_names`).
    add("/Ünïcödé ñame.txt", b"latin-1 range\n".to_vec());
    // Several clusters whatever the cluster size, and not a multiple of any of them.
    add(
        "/docs/big.bin",
        (0..300_001u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect(),
    );
    add("/docs/nested/deeper/leaf.txt", b"leaf\n".to_vec());
    add(
        "/docs/a very long directory name that needs several lfn entries/x.txt",
        b"x".to_vec(),
    );
    let mut deep = String::new();
    for i in 0..55 {
        deep.push_str(&format!("/d{i}"));
    }
    add(&format!("{deep}/bottom.txt"), b"55 levels down\n".to_vec());
    m
}

fn all_dirs(files: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    let mut dirs = std::collections::BTreeSet::new();
    for p in files.keys() {
        let mut cur = p.as_str();
        while let Some(i) = cur.rfind('/') {
            cur = &cur[..i];
            if !cur.is_empty() {
                dirs.insert(cur.to_string());
            }
        }
    }
    dirs.into_iter().collect()
}

fn run(cmd: &mut Command) {
    let out = cmd
        .env("LC_ALL", "C.UTF-8")
        .stdin(Stdio::null())
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes a FAT image of `fat_bits` (12, 16, 32) and `kib` KiB holding the planted tree.
fn make_image(dir: &Path, fat_bits: u32, kib: u64, label: &str) -> std::path::PathBuf {
    make_image_with(dir, fat_bits, kib, label, &[])
}

/// Like [`make_image`] with extra `mkfs.vfat` arguments.
fn make_image_with(
    dir: &Path,
    fat_bits: u32,
    kib: u64,
    label: &str,
    extra: &[&str],
) -> std::path::PathBuf {
    let tree = dir.join(format!("tree{fat_bits}"));
    for (p, c) in planted() {
        let f = tree.join(&p[1..]);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, c).unwrap();
    }
    let img = dir.join(format!("fat{fat_bits}.img"));
    let mut mkfs = Command::new("mkfs.vfat");
    mkfs.arg("-F")
        .arg(fat_bits.to_string())
        .arg("-n")
        .arg(label)
        .args(extra);
    if fat_bits == 32 {
        mkfs.arg("-s").arg("1");
    }
    run(mkfs.arg("-C").arg(&img).arg(kib.to_string()));
    let mut mcopy = Command::new("mcopy");
    mcopy.arg("-s").arg("-i").arg(&img);
    for e in std::fs::read_dir(&tree).unwrap() {
        mcopy.arg(e.unwrap().path());
    }
    run(mcopy.arg("::/"));
    img
}

fn open_file(img: &Path) -> FatVolume {
    FatVolume::open(Arc::new(FileSource::open(img).unwrap())).unwrap()
}

fn open_bytes(d: Vec<u8>) -> Result<FatVolume> {
    FatVolume::open(Arc::new(MemSource::new(d, "vol")))
}

/// Walks and returns entries by path, plus the errors.
fn walk(vol: &FatVolume) -> (BTreeMap<String, FileEntry>, Vec<(String, Error)>) {
    let mut entries = BTreeMap::new();
    let mut errors = Vec::new();
    vol.walk(&mut |ev| match ev {
        WalkEvent::Entry(e) => {
            assert!(entries.insert(e.path.clone(), e).is_none(), "listed twice");
        }
        WalkEvent::Error { path, error } => errors.push((path, error)),
    })
    .unwrap();
    (entries, errors)
}

fn read(vol: &FatVolume, e: &FileEntry) -> Result<Vec<u8>> {
    let mut r = vol.open(e)?;
    let mut out = Vec::new();
    read_all(r.as_mut(), &e.path, &mut |c| out.extend_from_slice(c))?;
    Ok(out)
}

fn check_tree(vol: &FatVolume) {
    let files = planted();
    let (entries, errors) = walk(vol);
    assert!(errors.is_empty(), "{errors:?}");
    let mut want: Vec<String> = files.keys().cloned().collect();
    want.extend(all_dirs(&files));
    want.sort();
    let got: Vec<String> = entries.keys().cloned().collect();
    assert_eq!(got, want);
    for d in all_dirs(&files) {
        let e = &entries[&d];
        assert_eq!((e.kind, e.size), (EntryKind::Dir, 0), "{d}");
    }
    for (p, content) in &files {
        let e = &entries[p];
        assert_eq!(e.kind, EntryKind::File);
        assert_eq!(e.size, content.len() as u64, "{p}");
        assert_eq!(&read(vol, e).unwrap(), content, "{p}");
    }
    // Positional reads in the middle of a multi-cluster file.
    let big = &entries["/docs/big.bin"];
    let mut r = vol.open(big).unwrap();
    let mut buf = vec![0u8; 10_000];
    let n = r.read_at(123_457, &mut buf).unwrap();
    assert!(n > 0);
    assert_eq!(buf[..n], files["/docs/big.bin"][123_457..123_457 + n]);
    assert_eq!(r.read_at(300_001, &mut buf).unwrap(), 0);
    // lookup finds by path, exactly, case-insensitively, or by 8.3 name; agrees with walk.
    assert_eq!(vol.lookup("/lower.txt").unwrap().size, 23);
    assert_eq!(vol.lookup("/LOWER.TXT").unwrap().path, "/lower.txt");
    let e = vol.lookup("/DOCS/Nested/deeper/leaf.txt").unwrap();
    assert_eq!(e, entries["/docs/nested/deeper/leaf.txt"]);
    for (p, e) in &entries {
        assert_eq!(&vol.lookup(p).unwrap(), e, "{p}");
    }
    assert!(matches!(vol.lookup("/nope"), Err(Error::NotFound { .. })));
    assert!(matches!(
        vol.lookup("/lower.txt/x"),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(vol.lookup("/"), Err(Error::NotFound { .. })));
}

#[test]
fn fat12_image_from_mkfs_and_mcopy() {
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), 12, 2 * 1024, "SMALL12");
    let vol = open_file(&img);
    assert_eq!(vol.kind(), FsKind::Fat12);
    assert_eq!(vol.label().as_deref(), Some("SMALL12"));
    check_tree(&vol);
}

#[test]
fn fat12_image_with_4096_byte_sectors() {
    let dir = tempfile::tempdir().unwrap();
    let img = make_image_with(dir.path(), 12, 4 * 1024, "SECTOR4K", &["-S", "4096"]);
    let vol = open_file(&img);
    assert_eq!(vol.boot_sector().bytes_per_sector, 4096);
    assert_eq!(vol.kind(), FsKind::Fat12);
    check_tree(&vol);
}

#[test]
fn fat16_image_from_mkfs_and_mcopy() {
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), 16, 20 * 1024, "MEDIUM16");
    let vol = open_file(&img);
    assert_eq!(vol.kind(), FsKind::Fat16);
    assert_eq!(vol.label().as_deref(), Some("MEDIUM16"));
    check_tree(&vol);
}

#[test]
fn fat32_image_from_mkfs_and_mcopy_matches_the_sleuth_kit() {
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), 32, 40 * 1024, "BIG32");
    let src: SharedSource = Arc::new(FileSource::open(&img).unwrap());
    assert_eq!(crate::fs::probe(&src).unwrap(), Some(FsKind::Fat32));
    let fs = crate::fs::open(src, FsKind::Fat32).unwrap();
    assert_eq!(fs.label().as_deref(), Some("BIG32"));
    let vol = open_file(&img);
    check_tree(&vol);

    // TSK's view: every allocated name, without its virtual $ entries and the label.
    let out = Command::new("fls")
        .arg("-r")
        .arg("-p")
        .arg(&img)
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut tsk: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| {
            !l.starts_with("v/v")
                && !l.starts_with("V/V")
                && !l.contains(" * ")
                && !l.ends_with("(Volume Label Entry)")
        })
        .filter_map(|l| l.split_once(":\t").map(|(_, p)| format!("/{p}")))
        .collect();
    tsk.sort();
    let (entries, _) = walk(&vol);
    let ours: Vec<String> = entries.keys().cloned().collect();
    assert_eq!(ours, tsk);
}

#[test]
fn probe_refuses_non_fat_boot_sectors() {
    assert_eq!(probe_fat(&[0u8; 512]), None);
    let mut ntfs = [0u8; 512];
    ntfs[..11].copy_from_slice(b"\xebR\x90NTFS    ");
    ntfs[11..14].copy_from_slice(&[0, 2, 8]);
    ntfs[21] = 0xf8;
    assert_eq!(probe_fat(&ntfs), None, "NTFS has 0 reserved sectors");
    assert_eq!(probe_fat(&[0xeb; 20]), None);
}

// ---- hostile images ----

struct Img {
    data: Vec<u8>,
    bs: BootSector,
}

impl Img {
    fn new(fat_bits: u32) -> (Self, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let kib = match fat_bits {
            12 => 2 * 1024,
            16 => 20 * 1024,
            _ => 40 * 1024,
        };
        let img = make_image(dir.path(), fat_bits, kib, "HOSTILE");
        let data = std::fs::read(img).unwrap();
        let bs = boot_sector::parse(&data).unwrap();
        (Img { data, bs }, dir)
    }

    fn vol(&self) -> FatVolume {
        open_bytes(self.data.clone()).unwrap()
    }

    fn entry(&self, path: &str) -> FileEntry {
        self.vol().lookup(path).unwrap()
    }

    fn first_cluster(&self, path: &str) -> u32 {
        let at = self.entry(path).id.node as usize;
        let e = &self.data[at..at + 32];
        let hi = u32::from(u16::from_le_bytes([e[20], e[21]]));
        let lo = u32::from(u16::from_le_bytes([e[26], e[27]]));
        if self.bs.kind == FsKind::Fat32 {
            (hi << 16) | lo
        } else {
            lo
        }
    }

    fn set_first_cluster(&mut self, path: &str, c: u32) {
        let at = self.entry(path).id.node as usize;
        self.data[at + 20..at + 22].copy_from_slice(&((c >> 16) as u16).to_le_bytes());
        self.data[at + 26..at + 28].copy_from_slice(&(c as u16).to_le_bytes());
    }

    fn set_fat(&mut self, cluster: u32, value: u32) {
        let at = fat_table::entry_offset(&self.bs, cluster) as usize;
        match self.bs.kind {
            FsKind::Fat12 => {
                let old = u16::from_le_bytes([self.data[at], self.data[at + 1]]);
                let v = value as u16 & 0x0fff;
                let new = if cluster % 2 == 0 {
                    (old & 0xf000) | v
                } else {
                    (old & 0x000f) | (v << 4)
                };
                self.data[at..at + 2].copy_from_slice(&new.to_le_bytes());
            }
            FsKind::Fat16 => self.data[at..at + 2].copy_from_slice(&(value as u16).to_le_bytes()),
            _ => self.data[at..at + 4].copy_from_slice(&value.to_le_bytes()),
        }
    }
}

#[test]
fn cluster_chain_loop_is_an_error_not_a_hang() {
    for bits in [12, 16, 32] {
        let (mut img, _dir) = Img::new(bits);
        let first = img.first_cluster("/docs/big.bin");
        // The third cluster links back to the first.
        let second =
            fat_table::next(&MemSource::new(img.data.clone(), "v"), &img.bs, first).unwrap();
        let fat_table::Next::Cluster(second) = second else {
            panic!("big.bin has one cluster")
        };
        img.set_fat(second, first);
        let vol = img.vol();
        let e = vol.lookup("/docs/big.bin").unwrap();
        let err = read(&vol, &e).unwrap_err();
        assert!(err.to_string().contains("loops"), "FAT{bits}: {err}");
        // The rest of the volume still reads.
        assert_eq!(
            read(&vol, &vol.lookup("/lower.txt").unwrap())
                .unwrap()
                .len(),
            23
        );
    }
}

#[test]
fn directory_loop_is_reported_and_the_walk_goes_on() {
    for bits in [12, 32] {
        let (mut img, _dir) = Img::new(bits);
        let docs = img.first_cluster("/docs");
        // /docs/nested/deeper now points back at /docs.
        img.set_first_cluster("/docs/nested/deeper", docs);
        let (entries, errors) = walk(&img.vol());
        assert_eq!(errors.len(), 1, "FAT{bits}: {errors:?}");
        assert_eq!(errors[0].0, "/docs/nested/deeper");
        assert!(errors[0].1.to_string().contains("loop"), "{}", errors[0].1);
        assert!(entries.contains_key("/lower.txt"));
        assert!(entries.contains_key("/docs/big.bin"));
        assert!(!entries.contains_key("/docs/nested/deeper/leaf.txt"));

        // A subdirectory naming cluster 0 (the root) is a loop too.
        img.set_first_cluster("/docs/nested", 0);
        let (_, errors) = walk(&img.vol());
        assert!(
            errors
                .iter()
                .any(|(p, e)| p == "/docs/nested" && e.to_string().contains("root")),
            "{errors:?}"
        );
    }
}

#[test]
fn out_of_range_clusters_and_huge_sizes_are_errors() {
    for bits in [12, 16, 32] {
        let (mut img, _dir) = Img::new(bits);
        // A file starting past the data region.
        let bad = img.bs.cluster_count + 5;
        img.set_first_cluster("/README.TXT", bad);
        // A chain stepping out of the data region.
        let first = img.first_cluster("/docs/big.bin");
        img.set_fat(first, img.bs.cluster_count + 2);
        // A directory entry claiming 4 GiB - 1.
        let at = img.entry("/lower.txt").id.node as usize;
        img.data[at + 28..at + 32].copy_from_slice(&u32::MAX.to_le_bytes());
        // A directory starting past the data region.
        img.set_first_cluster("/docs/nested", bad);
        let vol = img.vol();
        let (entries, errors) = walk(&vol);
        let e = &entries["/README.TXT"];
        let err = read(&vol, e).unwrap_err();
        assert!(err.to_string().contains("outside the data region"), "{err}");
        let err = read(&vol, &entries["/docs/big.bin"]).unwrap_err();
        assert!(err.to_string().contains("outside the data region"), "{err}");
        let e = &entries["/lower.txt"];
        assert_eq!(e.size, u64::from(u32::MAX));
        let err = read(&vol, e).unwrap_err();
        assert!(err.to_string().contains("chain ends"), "{err}");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, "/docs/nested");
        assert!(errors[0].1.to_string().contains("outside the data region"));
        assert!(entries.contains_key("/docs/nested"));
        assert!(!entries.contains_key("/docs/nested/deeper"));
        assert!(entries.contains_key("/docs/big.bin"));
    }
}

#[test]
fn broken_long_name_falls_back_to_the_short_name() {
    let (mut img, _dir) = Img::new(16);
    let at = img.entry("/Mixed Case Name With Spaces.text").id.node as usize;
    // The LFN entry just before the short entry: break its checksum.
    img.data[at - 32 + 13] ^= 0xff;
    let (entries, errors) = walk(&img.vol());
    assert!(errors.is_empty());
    assert!(!entries.contains_key("/Mixed Case Name With Spaces.text"));
    let short: Vec<&String> = entries
        .keys()
        .filter(|k| k.starts_with("/MIXEDC"))
        .collect();
    assert_eq!(short.len(), 1, "{:?}", entries.keys().collect::<Vec<_>>());
}

#[test]
fn truncated_and_garbage_volumes_do_not_panic() {
    let (img, _dir) = Img::new(12);
    for cut in [0usize, 100, 512, 4096, 20_000, img.data.len() / 2] {
        if let Ok(vol) = open_bytes(img.data[..cut].to_vec()) {
            let _ = vol.walk(&mut |ev| {
                if let WalkEvent::Entry(e) = ev {
                    if e.kind == EntryKind::File {
                        let _ = read(&vol, &e);
                    }
                }
            });
        }
    }
}

/// Overwrites the long-name entries in front of the short entry at `short_at` with `name`,
/// which must need exactly as many entries as are there.
fn rewrite_lfn(data: &mut [u8], short_at: usize, name: &str) {
    let mut units: Vec<u16> = name.encode_utf16().collect();
    let entries = units.len().div_ceil(13);
    if units.len() % 13 != 0 {
        units.push(0);
    }
    units.resize(entries * 13, 0xffff);
    let offsets = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
    for seq in 1..=entries {
        let at = short_at - 32 * seq;
        assert_eq!(data[at] & 0x1f, seq as u8, "LFN entry count differs");
        assert_eq!(
            data[at] & 0x40 != 0,
            seq == entries,
            "LFN entry count differs"
        );
        for (k, off) in offsets.iter().enumerate() {
            let u = units[(seq - 1) * 13 + k];
            data[at + off..at + off + 2].copy_from_slice(&u.to_le_bytes());
        }
    }
}

#[test]
fn astral_and_combining_characters_in_long_names() {
    let (mut img, _dir) = Img::new(32);
    let old = "/Mixed Case Name With Spaces.text"; // 33 units: 3 entries
    let new = "emoji 😀 cafe\u{301} 日本語 name ok.bin"; // 30 units: 3 entries
    assert_eq!(new.encode_utf16().count().div_ceil(13), 3);
    let e = img.entry(old);
    rewrite_lfn(&mut img.data, e.id.node as usize, new);
    let vol = img.vol();
    let (entries, errors) = walk(&vol);
    assert!(errors.is_empty());
    let got = &entries[&format!("/{new}")];
    assert_eq!(got.id, e.id);
    assert_eq!(read(&vol, got).unwrap(), b"spaces\n");
    assert!(!entries.contains_key(old));
}

#[test]
fn partitioned_disk_inventory_opens_fat_on_primary_and_logical_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let mut sfdisk = Command::new("sfdisk")
        .arg("-q")
        .arg(&img)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        sfdisk
            .stdin
            .take()
            .unwrap()
            .write_all(
                b"label: dos\nstart=2048, size=20480, type=e\n\
                  start=22528, size=40960, type=5\nstart=24576, size=30720, type=1\n",
            )
            .unwrap();
    }
    assert!(sfdisk.wait().unwrap().success());
    run(Command::new("mkfs.vfat")
        .args(["-F", "16", "-n", "PRIMARY", "--offset", "2048"])
        .arg(&img)
        .arg("10240"));
    run(Command::new("mkfs.vfat")
        .args(["-F", "12", "-n", "LOGICAL", "--offset", "24576"])
        .arg(&img)
        .arg("15360"));
    let hello = dir.path().join("hello.txt");
    std::fs::write(&hello, b"hello from a logical partition\n").unwrap();
    run(Command::new("mcopy")
        .arg("-i")
        .arg(format!("{}@@{}", img.display(), 24576 * 512))
        .arg(&hello)
        .arg("::/"));

    let target = crate::inventory::open_disk(img.to_str().unwrap(), &Default::default()).unwrap();
    let got: Vec<(u32, Option<FsKind>, Option<String>)> = target
        .volumes
        .iter()
        .map(|v| {
            (
                v.partition.index,
                v.fs_kind,
                v.filesystem.as_ref().ok().and_then(|f| f.label()),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (1, Some(FsKind::Fat16), Some("PRIMARY".into())),
            (5, Some(FsKind::Fat12), Some("LOGICAL".into())),
        ]
    );
    let fs = target.volumes[1].filesystem.as_ref().unwrap();
    let e = fs.lookup("/hello.txt").unwrap();
    let mut r = fs.open(&e).unwrap();
    let mut out = Vec::new();
    read_all(r.as_mut(), &e.path, &mut |c| out.extend_from_slice(c)).unwrap();
    assert_eq!(out, b"hello from a logical partition\n");
}

#[test]
fn volume_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<FatVolume>();
}

#[test]
fn directory_with_more_than_the_maximum_entries_is_cut_with_a_limit_error() {
    let (mut img, _dir) = Img::new(32);
    assert_eq!(img.bs.cluster_size, 512);
    let per_cluster = 512 / 32;
    let clusters = (MAX_DIR_ENTRIES as u32).div_ceil(per_cluster) + 3;
    // Free clusters at the end of the volume become one long directory full of file entries.
    let start = img.bs.cluster_count + 2 - clusters - 1;
    let template = {
        let at = img.entry("/README.TXT").id.node as usize;
        img.data[at..at + 32].to_vec()
    };
    for k in 0..clusters {
        let c = start + k;
        img.set_fat(
            c,
            if k + 1 == clusters {
                0x0fff_ffff
            } else {
                c + 1
            },
        );
        let off = img.bs.cluster_offset(c).unwrap() as usize;
        for slot in 0..per_cluster as usize {
            let e = &mut img.data[off + slot * 32..off + slot * 32 + 32];
            e.copy_from_slice(&template);
            e[..8].copy_from_slice(format!("F{:07}", k * per_cluster + slot as u32).as_bytes());
        }
    }
    img.set_first_cluster("/docs/nested", start);
    let (entries, errors) = walk(&img.vol());
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "/docs/nested");
    assert!(
        matches!(errors[0].1, Error::Limit { .. }),
        "{}",
        errors[0].1
    );
    let listed = entries
        .keys()
        .filter(|p| p.starts_with("/docs/nested/"))
        .count();
    assert_eq!(listed as u64, MAX_DIR_ENTRIES);
    assert!(entries.contains_key("/lower.txt"));
}

#[test]
fn nesting_deeper_than_the_maximum_depth_is_cut_with_a_limit_error() {
    let (mut img, _dir) = Img::new(32);
    let levels = MAX_DEPTH as u32 + 10;
    let start = img.bs.cluster_count + 2 - levels - 1;
    let template = {
        let at = img.entry("/docs").id.node as usize;
        img.data[at..at + 32].to_vec()
    };
    // Cluster k holds one subdirectory "D" whose first cluster is k + 1.
    for k in 0..levels {
        let c = start + k;
        img.set_fat(c, 0x0fff_ffff);
        let off = img.bs.cluster_offset(c).unwrap() as usize;
        img.data[off..off + 512].fill(0);
        let e = &mut img.data[off..off + 32];
        e.copy_from_slice(&template);
        e[..11].copy_from_slice(b"D          ");
        let next = c + 1;
        e[20..22].copy_from_slice(&((next >> 16) as u16).to_le_bytes());
        e[26..28].copy_from_slice(&(next as u16).to_le_bytes());
    }
    // The last level's "D" points at a cluster we leave as is; it is never reached.
    img.set_first_cluster("/docs/nested", start);
    let (entries, errors) = walk(&img.vol());
    assert_eq!(
        errors.len(),
        1,
        "{:?}",
        errors.iter().map(|e| e.1.to_string()).collect::<Vec<_>>()
    );
    assert!(
        matches!(errors[0].1, Error::Limit { .. }),
        "{}",
        errors[0].1
    );
    let deepest = entries
        .keys()
        .map(|p| p.matches('/').count())
        .max()
        .unwrap();
    assert_eq!(deepest, MAX_DEPTH);
    assert!(entries.contains_key("/lower.txt"));
}

#[test]
fn hostile_names_cannot_forge_paths() {
    let (mut img, _dir) = Img::new(16);
    // A long name of "..", a short name with a slash, and an all-space short name.
    let e = img.entry("/Mixed Case Name With Spaces.text");
    let at = e.id.node as usize;
    let units: Vec<u16> = "..".encode_utf16().chain([0]).collect();
    let offsets = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
    // Make it a one-entry long name: the entry just before the short one is ordinal 1.
    let lfn = at - 32;
    img.data[lfn] = 0x41;
    for (k, off) in offsets.iter().enumerate() {
        let u = units.get(k).copied().unwrap_or(0xffff);
        img.data[lfn + off..lfn + off + 2].copy_from_slice(&u.to_le_bytes());
    }
    // Older ordinals in front of it are now orphans and must be ignored.
    let at = img.entry("/README.TXT").id.node as usize;
    img.data[at..at + 11].copy_from_slice(b"A/B     TXT");
    let at2 = img.entry("/lower.txt").id.node as usize;
    img.data[at2..at2 + 11].copy_from_slice(b"           ");
    let (entries, errors) = walk(&img.vol());
    assert!(errors.is_empty(), "{errors:?}");
    for p in entries.keys() {
        assert!(
            !p.split('/')
                .skip(1)
                .any(|c| c.is_empty() || c == "." || c == ".."),
            "{p}"
        );
    }
    // The ".." long name fell back to the 8.3 name mtools generated.
    let renamed = entries.values().find(|x| x.id == e.id).unwrap();
    assert!(renamed.path.starts_with("/MIXED"), "{}", renamed.path);
    assert!(entries.contains_key("/A\u{fffd}B.TXT"));
    assert!(entries.contains_key("/\u{fffd}"));
}

#[test]
fn fat32_with_mirroring_off_reads_the_active_fat() {
    let (mut img, _dir) = Img::new(32);
    assert_eq!(img.bs.num_fats, 2);
    let fat0 = img.bs.fat_offset as usize;
    let len = img.bs.fat_size as usize;
    // Garbage in FAT 0; FAT 1 made active (BPB_ExtFlags bit 7 set, active FAT 1).
    img.data[fat0 + 64..fat0 + len].fill(0x5a);
    img.data[40..42].copy_from_slice(&0x0081u16.to_le_bytes());
    let vol = img.vol();
    assert_eq!(vol.boot_sector().active_fat, 1);
    check_tree(&vol);
    // With mirroring on again, FAT 0 (garbage) is read: errors, but no panic.
    img.data[40..42].copy_from_slice(&0u16.to_le_bytes());
    let vol = img.vol();
    let e = vol.lookup("/docs/big.bin").unwrap();
    assert!(read(&vol, &e).is_err());
}
