//! End-to-end tests on images made at test time by `mkntfs` and populated through libntfs-3g
//! (`tests/ntfs/ntfs_populate.c`), checked against the planted tree and The Sleuth Kit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};

use sha2::{Digest, Sha256};

use super::*;
use crate::block::{FileSource, MemSource};
use crate::fs::{self, read_all};

/// Compiles the libntfs-3g helper once per test process.
fn populate_tool() -> &'static Path {
    static TOOL: OnceLock<PathBuf> = OnceLock::new();
    TOOL.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let out = dir.join("ntfs_populate");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/ntfs/ntfs_populate.c");
        let st = Command::new("cc")
            .args(["-O1", "-o"])
            .arg(&out)
            .arg(&src)
            .arg("-lntfs-3g")
            .status()
            .expect("cc (install build-essential and ntfs-3g-dev)");
        assert!(st.success(), "compiling {}", src.display());
        out
    })
}

/// Makes an NTFS image of `mib` MiB (512-byte sectors, 4 KiB clusters) in `dir` and applies
/// `spec`.
fn make_image(dir: &Path, mib: u64, spec: &str) -> PathBuf {
    make_image_with(dir, mib, 512, 4096, spec)
}

/// Like [`make_image`] with the given sector and cluster sizes.
fn make_image_with(dir: &Path, mib: u64, sector: u32, cluster: u32, spec: &str) -> PathBuf {
    let img = dir.join("ntfs.img");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(mib << 20).unwrap();
    drop(f);
    let out = Command::new("mkntfs")
        .args(["-F", "-f", "-Q", "-q", "-L", "COLDVOL", "-s"])
        .arg(sector.to_string())
        .arg("-c")
        .arg(cluster.to_string())
        .arg(&img)
        .arg(((mib << 20) / u64::from(sector)).to_string())
        .output()
        .expect("mkntfs (package ntfs-3g)");
    assert!(
        out.status.success(),
        "mkntfs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut child = Command::new(populate_tool())
        .arg(&img)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(spec.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "ntfs_populate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    img
}

fn open_image(img: &Path) -> NtfsVolume {
    let src: SharedSource = Arc::new(FileSource::open(img).unwrap());
    assert_eq!(fs::probe(&src).unwrap(), Some(FsKind::Ntfs));
    NtfsVolume::open(src).unwrap()
}

fn walk_all(vol: &NtfsVolume) -> (Vec<FileEntry>, Vec<(String, Error)>) {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    vol.walk(&mut |ev| match ev {
        WalkEvent::Entry(e) => entries.push(e),
        WalkEvent::Error { path, error } => errors.push((path, error)),
    })
    .unwrap();
    (entries, errors)
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn content(vol: &NtfsVolume, e: &FileEntry) -> Result<Vec<u8>> {
    let mut r = vol.open(e)?;
    let mut v = Vec::new();
    read_all(r.as_mut(), &e.path, &mut |c| v.extend_from_slice(c))?;
    Ok(v)
}

/// Compressible but varied text: every LZNT1 token length split gets used.
fn compressible(n: usize) -> Vec<u8> {
    let words = [
        "alpha ", "beta ", "gamma ", "delta\n", "epsilon ", "zeta,", "eta ",
    ];
    let mut v = Vec::new();
    let mut i = 0usize;
    while v.len() < n {
        v.extend_from_slice(words[(i * 7 + i / 13) % words.len()].as_bytes());
        v.extend_from_slice(format!("{} ", i % 1000).as_bytes());
        i += 1;
    }
    v.truncate(n);
    v
}

fn random(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

/// Planted content of the main fixture: path -> (kind, bytes or None when unreadable).
struct Planted {
    dir: tempfile::TempDir,
    img: PathBuf,
    files: BTreeMap<String, (EntryKind, Option<Vec<u8>>)>,
}

fn main_fixture() -> Planted {
    let dir = tempfile::tempdir().unwrap();
    let comp = compressible(300_000);
    let rnd = random(200_000, 7);
    let eicar_like = compressible(70_000);
    std::fs::write(dir.path().join("comp.bin"), &comp).unwrap();
    std::fs::write(dir.path().join("rnd.bin"), &rnd).unwrap();
    std::fs::write(dir.path().join("small.bin"), &eicar_like).unwrap();
    let mut wof_files: Vec<(String, Vec<u8>)> = Vec::new();
    let spec = "\
mkdir /docs
mkdir /docs/deep
mkdir /docs/deep/er
file /docs/deep/er/leaf.txt text:leaf
file /docs/readme.txt text:hello%20world
file /empty hex:
stream /docs/readme.txt Zone.Identifier text:[ZoneTransfer]
stream /docs hidden text:dirstream
file /random.bin @rnd.bin
compressdir /packed
file /packed/text.txt @comp.bin
file /packed/random.bin @rnd.bin
file /packed/small.txt @small.bin
stream /packed/text.txt alt @small.bin
sparse /sparse.bin 5000000 text:tail
link /docs/readme.txt /readme-link.txt
link /packed/text.txt /docs/deep/text-link.txt
symlink /ln docs/readme.txt
junction /jn C:\\Windows
mkdir /Ünïcödé
file /Ünïcödé/日本語.txt text:nihongo
file /Ünïcödé/Long%20File%20Name.txt text:long
dosname /Ünïcödé/Long%20File%20Name.txt LONGFI~1.TXT
file /secret.txt text:secret
encrypt /secret.txt
wof /compact.exe 9 100000 fill:ab:3000
wof /wof-xpress4k.exe 0 70001 @wof0.bin
wof /wof-lzx.exe 1 70001 @wof1.bin
wof /wof-xpress8k.exe 2 70001 @wof2.bin
wof /wof-xpress16k.exe 3 70001 @wof3.bin
";
    let wof_plain = super::wof::tests::contents().swap_remove(10);
    for (id, name) in [
        (0, "xpress4k"),
        (1, "lzx"),
        (2, "xpress8k"),
        (3, "xpress16k"),
    ] {
        let algo = super::wof::WofAlgorithm::from_id(id).unwrap();
        let stream = super::wof::tests::wof_stream(dir.path(), algo, &wof_plain);
        std::fs::write(dir.path().join(format!("wof{id}.bin")), stream).unwrap();
        wof_files.push((format!("/wof-{name}.exe"), wof_plain.clone()));
    }
    let img = make_image(dir.path(), 48, spec);
    let mut files = BTreeMap::new();
    let mut put = |p: &str, k, d: Option<&[u8]>| {
        files.insert(p.to_string(), (k, d.map(<[u8]>::to_vec)));
    };
    use EntryKind::*;
    put("/docs", Dir, Some(b""));
    put("/docs:hidden", File, Some(b"dirstream"));
    put("/docs/deep", Dir, Some(b""));
    put("/docs/deep/er", Dir, Some(b""));
    put("/docs/deep/er/leaf.txt", File, Some(b"leaf"));
    put("/docs/readme.txt", File, Some(b"hello world"));
    put(
        "/docs/readme.txt:Zone.Identifier",
        File,
        Some(b"[ZoneTransfer]"),
    );
    put("/readme-link.txt", File, Some(b"hello world"));
    put(
        "/readme-link.txt:Zone.Identifier",
        File,
        Some(b"[ZoneTransfer]"),
    );
    put("/empty", File, Some(b""));
    put("/random.bin", File, Some(&rnd));
    put("/packed", Dir, Some(b""));
    put("/packed/text.txt", File, Some(&comp));
    put("/packed/text.txt:alt", File, Some(&eicar_like));
    put("/docs/deep/text-link.txt", File, Some(&comp));
    put("/docs/deep/text-link.txt:alt", File, Some(&eicar_like));
    put("/packed/random.bin", File, Some(&rnd));
    put("/packed/small.txt", File, Some(&eicar_like));
    let mut sparse = vec![0u8; 5_000_000];
    sparse.extend_from_slice(b"tail");
    put("/sparse.bin", File, Some(&sparse));
    put("/ln", Symlink, Some(b"docs/readme.txt"));
    put("/jn", Symlink, Some(b"C:\\Windows"));
    put("/Ünïcödé", Dir, Some(b""));
    put("/Ünïcödé/日本語.txt", File, Some(b"nihongo"));
    put("/Ünïcödé/Long File Name.txt", File, Some(b"long"));
    put("/secret.txt", File, None);
    put("/compact.exe", File, None);
    put("/compact.exe:WofCompressedData", File, Some(&[0xAB; 3000]));
    // Decodable CompactOS files: listed with their uncompressed content, without the stream.
    for (path, data) in &wof_files {
        put(path, File, Some(data));
    }
    Planted { dir, img, files }
}

#[test]
fn walk_matches_the_planted_tree() {
    let p = main_fixture();
    let vol = open_image(&p.img);
    assert_eq!(vol.label().as_deref(), Some("COLDVOL"));
    let (entries, errors) = walk_all(&vol);
    assert!(errors.is_empty(), "{errors:?}");
    let mut seen = BTreeMap::new();
    for e in &entries {
        assert!(
            seen.insert(e.path.clone(), e.clone()).is_none(),
            "listed twice: {}",
            e.path
        );
    }
    let got: Vec<&String> = seen.keys().collect();
    let want: Vec<&String> = p.files.keys().collect();
    assert_eq!(got, want);
    for (path, (kind, data)) in &p.files {
        let e = &seen[path];
        assert_eq!(e.kind, *kind, "{path}");
        assert_eq!(e.stream.is_some(), path.contains(':'), "{path}");
        match data {
            Some(d) => {
                if *kind != EntryKind::Dir {
                    assert_eq!(e.size, d.len() as u64, "{path}");
                }
                if *kind == EntryKind::File {
                    let c = content(&vol, e).unwrap_or_else(|err| panic!("{path}: {err}"));
                    assert_eq!(sha(&c), sha(d), "{path}");
                }
            }
            None => {
                assert!(e.unreadable.is_some(), "{path}");
                assert!(vol.open(e).is_err(), "{path}");
            }
        }
    }
    let u = seen["/secret.txt"].unreadable.clone().unwrap();
    assert_eq!(u.reason, Reason::Encrypted);
    let u = seen["/compact.exe"].unreadable.clone().unwrap();
    assert_eq!(u.reason, Reason::UnsupportedCompression);
    assert_eq!(u.detail, "CompactOS algorithm 9");
    // Hard links: one id.
    assert_eq!(seen["/docs/readme.txt"].id, seen["/readme-link.txt"].id);
    assert_eq!(
        seen["/packed/text.txt:alt"].id,
        seen["/docs/deep/text-link.txt:alt"].id
    );
    assert_ne!(seen["/packed/text.txt:alt"].id, seen["/packed/text.txt"].id);
    // The compressed file really is LZNT1-compressed on disk (flag set, sparse tails).
    let file = vol.load(seen["/packed/text.txt"].id.node).unwrap();
    let data = VolumeFixture::unnamed_data(&file);
    assert_eq!(data.flags & attribute::ATTR_COMPRESSION_MASK, 1);
    let StreamData::NonResident(nr) =
        StreamData::from_extents(&[data], 4096, vol.boot.total_clusters, "t").unwrap()
    else {
        panic!("resident");
    };
    assert_eq!(nr.compression_unit, Some(16));
    assert!(
        nr.runs.iter().any(|r| r.lcn.is_none()),
        "no sparse tail: not compressed"
    );
    // The DOS alias exists on disk but is not listed.
    let long = vol
        .load(seen["/Ünïcödé/Long File Name.txt"].id.node)
        .unwrap();
    let node = vol.describe(&long);
    assert!(
        node.names
            .iter()
            .any(|n| n.namespace == attribute::NAMESPACE_DOS && n.name == "LONGFI~1.TXT"),
        "{:?}",
        node.names
    );
    // Metafiles and the $Extend subtree are never listed.
    assert!(entries
        .iter()
        .all(|e| e.id.node >= FIRST_USER_RECORD && !e.path.starts_with("/$")));
    // Lookup through the default walk.
    assert_eq!(
        vol.lookup("/docs/readme.txt:Zone.Identifier").unwrap().size,
        14
    );
    drop(p.dir);
}

struct VolumeFixture;
impl VolumeFixture {
    fn unnamed_data(file: &FileRecord) -> &Attribute {
        file.attributes
            .iter()
            .find(|a| a.type_code == AT_DATA && a.name.is_empty() && a.lowest_vcn() == 0)
            .unwrap()
    }
}

/// `fls -r -p` lines as (path, type letter), without metafiles and orphans.
fn sleuthkit_list(img: &Path) -> BTreeMap<String, char> {
    let out = Command::new("fls")
        .arg("-r")
        .arg("-p")
        .arg(img)
        .output()
        .expect("fls (sleuthkit)");
    assert!(out.status.success());
    let mut m = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((meta, path)) = line.split_once(":\t") else {
            continue;
        };
        let inode: u64 = meta
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.split('-').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        // TSK also lists a directory's streams through its "." entry (`dir/.:stream`).
        if inode < FIRST_USER_RECORD
            || path.starts_with("$OrphanFiles")
            || path.starts_with("$Extend")
            || path.contains("/.:")
        {
            continue;
        }
        let kind = meta.chars().nth(2).unwrap_or('?');
        m.insert(format!("/{path}"), kind);
    }
    m
}

#[test]
fn agrees_with_the_sleuth_kit() {
    let p = main_fixture();
    let vol = open_image(&p.img);
    let (entries, _) = walk_all(&vol);
    let ours: BTreeMap<String, char> = entries
        .iter()
        .map(|e| {
            let k = match e.kind {
                EntryKind::Dir => 'd',
                // TSK types reparse points by their underlying record.
                EntryKind::Symlink if e.path == "/jn" => 'd',
                _ => 'r',
            };
            (e.path.clone(), k)
        })
        .collect();
    // TSK lists a CompactOS file's WofCompressedData stream; we read it as the file's content.
    let mut tsk = sleuthkit_list(&p.img);
    tsk.retain(|path, _| !(path.starts_with("/wof-") && path.ends_with(":WofCompressedData")));
    assert_eq!(ours, tsk);
    // icat of the compressed file equals our decompressed content.
    let e = entries
        .iter()
        .find(|e| e.path == "/packed/text.txt")
        .unwrap();
    let out = Command::new("icat")
        .arg(&p.img)
        .arg(e.id.node.to_string())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(sha(&out.stdout), sha(&content(&vol, e).unwrap()));
}

/// Byte offset of record `n` in a fresh (unfragmented) image.
fn record_at(vol: &NtfsVolume, n: u64) -> usize {
    vol.record_offset(n) as usize
}

/// Offset (within the record) of the first attribute of `type_code`, read from raw bytes.
fn raw_attr(rec: &[u8], type_code: u32) -> usize {
    let mut at = usize::from(crate::block::le::u16(rec, 0x14).unwrap());
    loop {
        let t = crate::block::le::u32(rec, at).unwrap();
        assert_ne!(t, 0xFFFF_FFFF, "attribute {type_code:#x} not found");
        if t == type_code {
            return at;
        }
        at += crate::block::le::u32(rec, at + 4).unwrap() as usize;
    }
}

fn hostile_fixture() -> (
    tempfile::TempDir,
    Vec<u8>,
    NtfsVolume,
    BTreeMap<String, FileEntry>,
) {
    let dir = tempfile::tempdir().unwrap();
    let spec = "mkdir /a\nmkdir /a/b\nfile /a/b/f.txt text:f\nfile /g.txt text:g\nfile /h.txt text:h\nmkdir /c\nfile /c/i.txt text:i\n";
    let img = make_image(dir.path(), 8, spec);
    let bytes = std::fs::read(&img).unwrap();
    let vol = open_image(&img);
    let (entries, errors) = walk_all(&vol);
    assert!(errors.is_empty());
    let map = entries.into_iter().map(|e| (e.path.clone(), e)).collect();
    (dir, bytes, vol, map)
}

fn mem_volume(bytes: Vec<u8>) -> NtfsVolume {
    NtfsVolume::open(Arc::new(MemSource::new(bytes, "hostile.img"))).unwrap()
}

#[test]
fn corrupt_fixup_skips_only_that_record() {
    let (_d, mut bytes, vol, map) = hostile_fixture();
    let n = map["/g.txt"].id.node;
    let at = record_at(&vol, n);
    bytes[at + 1022] ^= 0xFF;
    let (entries, errors) = walk_all(&mem_volume(bytes));
    assert_eq!(errors.len(), 1, "{errors:?}");
    let msg = errors[0].1.to_string();
    assert!(
        msg.contains(&format!("MFT record {n}")) && msg.contains("fixup"),
        "{msg}"
    );
    assert!(msg.contains(&format!("{:#x}", at + 1022)), "{msg}");
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert!(!paths.contains(&"/g.txt"));
    assert!(
        paths.contains(&"/h.txt") && paths.contains(&"/a/b/f.txt"),
        "{paths:?}"
    );
}

#[test]
fn attribute_past_the_record_end_skips_only_that_record() {
    let (_d, mut bytes, vol, map) = hostile_fixture();
    let n = map["/h.txt"].id.node;
    let at = record_at(&vol, n);
    let a = raw_attr(&bytes[at..at + 1024], AT_FILE_NAME);
    bytes[at + a + 4..at + a + 8].copy_from_slice(&0x2000u32.to_le_bytes());
    let (entries, errors) = walk_all(&mem_volume(bytes));
    assert_eq!(errors.len(), 1, "{errors:?}");
    let msg = errors[0].1.to_string();
    assert!(
        msg.contains(&format!("MFT record {n}")) && msg.contains(&format!("{a:#x}")),
        "{msg}"
    );
    assert!(msg.contains("runs past the record end"), "{msg}");
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert!(
        !paths.contains(&"/h.txt") && paths.contains(&"/g.txt"),
        "{paths:?}"
    );
}

#[test]
fn cyclic_parents_terminate_and_are_reported() {
    let (_d, mut bytes, vol, map) = hostile_fixture();
    let a = map["/a"].id.node;
    let b = map["/a/b"].id.node;
    // /a's parent becomes /a/b: a two-directory cycle cut off from the root.
    let at = record_at(&vol, a);
    let fa = raw_attr(&bytes[at..at + 1024], AT_FILE_NAME);
    let value = at + fa + usize::from(crate::block::le::u16(&bytes, at + fa + 0x14).unwrap());
    bytes[value..value + 8].copy_from_slice(&(b | (1u64 << 48)).to_le_bytes());
    let (entries, errors) = walk_all(&mem_volume(bytes));
    assert!(!errors.is_empty());
    assert!(
        errors.iter().all(|(_, e)| e.to_string().contains("cycle")),
        "{errors:?}"
    );
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert!(
        paths.contains(&"/g.txt") && paths.contains(&"/c/i.txt"),
        "{paths:?}"
    );
    // The cut-off files are still listed (and so still scanned), under $OrphanFiles.
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("/$OrphanFiles/") && p.ends_with("/f.txt")),
        "{paths:?}"
    );
}

#[test]
fn fragmented_file_with_attribute_list() {
    let dir = tempfile::tempdir().unwrap();
    // One cluster of data every other cluster: hundreds of runs, more than one record holds.
    let mut spec = String::from("file /frag.bin hex:00\n");
    let mut want = Vec::new();
    for k in 0..400u64 {
        let off = k * 8192;
        spec.push_str(&format!(
            "append /frag.bin {off} fill:{:02x}:4096\n",
            (k % 250) as u8 + 1
        ));
        want.resize(off as usize, 0);
        want.extend(std::iter::repeat_n((k % 250) as u8 + 1, 4096));
    }
    let img = make_image(dir.path(), 16, &spec);
    let vol = open_image(&img);
    let (entries, errors) = walk_all(&vol);
    assert!(errors.is_empty(), "{errors:?}");
    let e = entries.iter().find(|e| e.path == "/frag.bin").unwrap();
    let base = vol.read_record(e.id.node).unwrap().unwrap();
    assert!(
        base.attributes
            .iter()
            .any(|a| a.type_code == AT_ATTRIBUTE_LIST),
        "fixture did not produce an attribute list"
    );
    let c = content(&vol, e).unwrap();
    assert_eq!(c.len(), want.len());
    assert_eq!(sha(&c), sha(&want));
}

#[test]
fn probe_rejects_other_data() {
    let zeros: SharedSource = Arc::new(MemSource::new(vec![0u8; 4096], "z"));
    assert_eq!(fs::probe(&zeros).unwrap(), None);
    let tiny: SharedSource = Arc::new(MemSource::new(vec![0u8; 10], "t"));
    assert_eq!(fs::probe(&tiny).unwrap(), None);
    let mut s = super::boot::tests::sample();
    s.resize(32768, 0);
    // Sane boot sector but no MFT behind it: probe says NTFS, open fails cleanly.
    let src: SharedSource = Arc::new(MemSource::new(s, "b"));
    assert_eq!(fs::probe(&src).unwrap(), Some(FsKind::Ntfs));
    assert!(NtfsVolume::open(src).is_err());
}

#[test]
fn other_geometries_small_and_large_clusters() {
    let comp = compressible(100_000);
    for (sector, cluster) in [(512u32, 512u32), (512, 2048), (4096, 4096), (512, 65536)] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("comp.bin"), &comp).unwrap();
        let spec = "compressdir /c\nfile /c/t.txt @comp.bin\nstream /c/t.txt s @comp.bin\nsparse /c/s.bin 300000 @comp.bin\nmkdir /d\nfile /d/x text:x\n";
        let img = make_image_with(dir.path(), 16, sector, cluster, spec);
        let vol = open_image(&img);
        assert_eq!(u64::from(cluster), vol.boot.cluster_size);
        if sector == 4096 {
            assert_eq!(
                vol.boot.record_size, 4096,
                "4 KiB sectors give 4 KiB records"
            );
        }
        let (entries, errors) = walk_all(&vol);
        assert!(errors.is_empty(), "{errors:?}");
        let get = |p: &str| {
            entries
                .iter()
                .find(|e| e.path == p)
                .unwrap_or_else(|| panic!("{p} missing"))
        };
        assert_eq!(
            sha(&content(&vol, get("/c/t.txt")).unwrap()),
            sha(&comp),
            "{cluster}"
        );
        assert_eq!(
            sha(&content(&vol, get("/c/t.txt:s")).unwrap()),
            sha(&comp),
            "{cluster}"
        );
        let mut sparse = vec![0u8; 300_000];
        sparse.extend_from_slice(&comp);
        assert_eq!(
            sha(&content(&vol, get("/c/s.bin")).unwrap()),
            sha(&sparse),
            "{cluster}"
        );
        assert_eq!(content(&vol, get("/d/x")).unwrap(), b"x");
    }
}

#[test]
fn bytes_past_the_initialized_size_read_as_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let data = random(50_000, 3);
    std::fs::write(dir.path().join("r.bin"), &data).unwrap();
    let img = make_image(dir.path(), 8, "file /r.bin @r.bin\n");
    let vol = open_image(&img);
    let (entries, _) = walk_all(&vol);
    let n = entries.iter().find(|e| e.path == "/r.bin").unwrap().id.node;
    let mut bytes = std::fs::read(&img).unwrap();
    let at = record_at(&vol, n);
    let a = raw_attr(&bytes[at..at + 1024], AT_DATA);
    // Initialized size (0x38) down to 10,000 bytes: the rest must read as zeros.
    bytes[at + a + 0x38..at + a + 0x40].copy_from_slice(&10_000u64.to_le_bytes());
    let vol = mem_volume(bytes);
    let (entries, errors) = walk_all(&vol);
    assert!(errors.is_empty());
    let e = entries.iter().find(|e| e.path == "/r.bin").unwrap();
    let c = content(&vol, e).unwrap();
    assert_eq!(c.len(), 50_000);
    assert_eq!(&c[..10_000], &data[..10_000]);
    assert!(c[10_000..].iter().all(|&b| b == 0));
}

#[test]
fn huge_mft_size_is_capped_by_the_volume() {
    let (_d, mut bytes, vol, _) = hostile_fixture();
    let at = record_at(&vol, 0);
    let a = raw_attr(&bytes[at..at + 1024], AT_DATA);
    for field in [0x28usize, 0x30, 0x38] {
        bytes[at + a + field..at + a + field + 8].copy_from_slice(&(1u64 << 50).to_le_bytes());
    }
    let vol = mem_volume(bytes);
    assert!(
        vol.notes().iter().any(|n| n.contains("claims")),
        "{:?}",
        vol.notes()
    );
    let (entries, errors) = walk_all(&vol);
    assert!(entries.iter().any(|e| e.path == "/c/i.txt"));
    assert!(errors.len() <= 4, "{errors:?}");
}

#[test]
fn dos_aliases_are_dropped_only_beside_a_long_name() {
    let name = |parent: u64, n: &str, namespace: u8| FileName {
        parent: parent | (1 << 48),
        name: n.into(),
        namespace,
    };
    let node = Node {
        sequence: 1,
        is_dir: false,
        names: vec![
            name(5, "Long Name.txt", 1),
            name(5, "LONGNA~1.TXT", 2),
            name(30, "ONLYDOS.TXT", 2),
            name(31, "posix", 0),
            name(31, "posix", 0),
        ],
        kind: EntryKind::File,
        size: 0,
        unreadable: None,
        streams: Vec::new(),
        wof: None,
        problem: None,
    };
    let got: Vec<(u64, &str)> = link_names(&node)
        .into_iter()
        .map(|(p, _, n)| (p, n))
        .collect();
    assert_eq!(
        got,
        vec![(5, "Long Name.txt"), (30, "ONLYDOS.TXT"), (31, "posix")]
    );
}

/// Random byte flips in the MFT of a real image: the walk and every read must end without a
/// panic (a deterministic, in-tree complement to the `ntfs` fuzz target).
#[test]
fn random_mft_damage_never_panics_or_hangs() {
    let (_d, bytes, vol, _) = hostile_fixture();
    let mft = record_at(&vol, 0);
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..100 {
        let mut b = bytes.clone();
        for _ in 0..(next() % 40 + 1) {
            let at = mft + (next() % (80 * 1024)) as usize;
            b[at] = next() as u8;
        }
        let Ok(vol) = NtfsVolume::open(Arc::new(MemSource::new(b, "damaged.img"))) else {
            continue;
        };
        let mut entries = Vec::new();
        let _ = vol.walk(&mut |ev| {
            if let WalkEvent::Entry(e) = ev {
                entries.push(e);
            }
        });
        for e in &entries {
            if let Ok(mut r) = vol.open(e) {
                let mut buf = vec![0u8; 65536];
                let mut pos = 0;
                while pos < r.size().min(1 << 20) {
                    match r.read_at(pos, &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => pos += n as u64,
                    }
                }
            }
        }
    }
}

#[test]
fn long_symlink_target_in_a_non_resident_reparse_point() {
    let dir = tempfile::tempdir().unwrap();
    let target = "segment/".repeat(120) + "end";
    let img = make_image(
        dir.path(),
        8,
        &format!("symlink /long {target}\nfile /f text:f\n"),
    );
    let vol = open_image(&img);
    let (entries, errors) = walk_all(&vol);
    assert!(errors.is_empty(), "{errors:?}");
    let e = entries.iter().find(|e| e.path == "/long").unwrap();
    let file = vol.load(e.id.node).unwrap();
    let rp = file
        .attributes
        .iter()
        .find(|a| a.type_code == AT_REPARSE_POINT)
        .unwrap();
    assert!(
        rp.resident_value().is_none(),
        "fixture did not make the reparse point non-resident"
    );
    assert_eq!(e.kind, EntryKind::Symlink);
    assert_eq!(e.size, target.len() as u64);
    assert_eq!(content(&vol, e).unwrap(), target.as_bytes());
}

#[test]
fn damaged_mft_record_0_falls_back_to_the_mirror() {
    let (_d, mut bytes, vol, map) = hostile_fixture();
    let at = record_at(&vol, 0);
    bytes[at + 510] ^= 0xFF;
    let vol = mem_volume(bytes.clone());
    assert!(
        vol.notes().iter().any(|n| n.contains("$MFTMirr")),
        "{:?}",
        vol.notes()
    );
    let (entries, _) = walk_all(&vol);
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    let want: Vec<&str> = map.keys().map(String::as_str).collect();
    assert_eq!(paths.len(), want.len());
    // Both copies damaged: a clear error naming the volume.
    let mirror = (vol.boot.mft_mirror_lcn.unwrap() * vol.boot.cluster_size) as usize;
    bytes[mirror + 510] ^= 0xFF;
    let err = NtfsVolume::open(Arc::new(MemSource::new(bytes, "hostile.img"))).unwrap_err();
    assert!(err.to_string().contains("$MFTMirr is unusable"), "{err}");
}

/// Applies the update sequence array to a record built in memory (the inverse of
/// `apply_fixups`), with update sequence number `usn`.
fn protect(rec: &mut [u8], usn: u16) {
    let usa = usize::from(crate::block::le::u16(rec, 4).unwrap());
    rec[usa..usa + 2].copy_from_slice(&usn.to_le_bytes());
    for i in 1..=rec.len() / 512 {
        let tail = i * 512 - 2;
        let (a, b) = (rec[tail], rec[tail + 1]);
        rec[usa + 2 * i] = a;
        rec[usa + 2 * i + 1] = b;
        rec[tail..tail + 2].copy_from_slice(&usn.to_le_bytes());
    }
}

/// A non-resident unnamed $DATA attribute mapping `len` clusters at `lcn` from VCN `low`.
fn data_extent(low: u64, len: u64, lcn: u64, sizes: u64, id: u16) -> Vec<u8> {
    let mut a = vec![0u8; 0x50];
    a[0..4].copy_from_slice(&AT_DATA.to_le_bytes());
    a[4..8].copy_from_slice(&0x50u32.to_le_bytes());
    a[8] = 1;
    a[0x0A..0x0C].copy_from_slice(&0x40u16.to_le_bytes());
    a[0x0E..0x10].copy_from_slice(&id.to_le_bytes());
    a[0x10..0x18].copy_from_slice(&low.to_le_bytes());
    a[0x18..0x20].copy_from_slice(&(low + len - 1).to_le_bytes());
    a[0x20..0x22].copy_from_slice(&0x40u16.to_le_bytes());
    for f in [0x28usize, 0x30, 0x38] {
        a[f..f + 8].copy_from_slice(&sizes.to_le_bytes());
    }
    a[0x40] = 0x44;
    a[0x41..0x45].copy_from_slice(&(len as u32).to_le_bytes());
    a[0x45..0x49].copy_from_slice(&(lcn as u32).to_le_bytes());
    a
}

/// Rewrites `$MFT` as a two-extent attribute: record 0 keeps VCNs 0-7 and gets an attribute
/// list naming extension record 17, which maps the rest. Files live past VCN 7, so they are
/// found only if the bootstrap through the attribute list works.
#[test]
fn mft_split_over_an_attribute_list() {
    let (_d, mut bytes, vol, map) = hostile_fixture();
    let StreamData::NonResident(nr) = &vol.mft else {
        panic!("resident $MFT")
    };
    assert_eq!(nr.runs.len(), 1, "fixture $MFT is fragmented already");
    let (lcn, clusters) = (nr.runs[0].lcn.unwrap(), nr.runs[0].len);
    let split = 8u64;
    assert!(map.values().all(|e| e.id.node * 1024 / 4096 >= split));
    let base = (lcn * 4096) as usize;
    // Raw attributes of record 0 to keep: $STANDARD_INFORMATION, $FILE_NAME, $BITMAP.
    let mut rec0 = bytes[base..base + 1024].to_vec();
    let loc = RecordLocation {
        volume: "t",
        number: 0,
        volume_offset: 0,
    };
    record::apply_fixups(&mut rec0, &loc).unwrap();
    let mut keep = Vec::new();
    let mut at = usize::from(crate::block::le::u16(&rec0, 0x14).unwrap());
    loop {
        let t = crate::block::le::u32(&rec0, at).unwrap();
        if t == 0xFFFF_FFFF {
            break;
        }
        let len = crate::block::le::u32(&rec0, at + 4).unwrap() as usize;
        if t != AT_DATA {
            keep.push((t, rec0[at..at + len].to_vec()));
        }
        at += len;
    }
    let entry = |t: u32, vcn: u64, record: u64| {
        let mut e = vec![0u8; 0x20];
        e[0..4].copy_from_slice(&t.to_le_bytes());
        e[4..6].copy_from_slice(&0x20u16.to_le_bytes());
        e[6] = 0;
        e[7] = 0x1A;
        e[8..16].copy_from_slice(&vcn.to_le_bytes());
        e[16..24].copy_from_slice(&(record | (1 << 48)).to_le_bytes());
        e
    };
    let mut list_value = Vec::new();
    for (t, _) in &keep {
        list_value.extend(entry(*t, 0, 0));
    }
    list_value.extend(entry(AT_DATA, 0, 0));
    list_value.extend(entry(AT_DATA, split, 17));
    let mut list = vec![0u8; 0x18];
    list[0..4].copy_from_slice(&AT_ATTRIBUTE_LIST.to_le_bytes());
    list[0x10..0x14].copy_from_slice(&(list_value.len() as u32).to_le_bytes());
    list[0x14..0x16].copy_from_slice(&0x18u16.to_le_bytes());
    list[0x0E] = 0x20;
    list.extend(&list_value);
    let list_len = list.len() as u32;
    list[4..8].copy_from_slice(&list_len.to_le_bytes());
    let total = clusters * 4096;
    let mut attrs: Vec<Vec<u8>> = Vec::new();
    for (t, a) in &keep {
        if *t == AT_STANDARD_INFORMATION {
            attrs.push(a.clone());
            attrs.push(list.clone());
        }
    }
    for (t, a) in &keep {
        if *t != AT_STANDARD_INFORMATION {
            attrs.push(a.clone());
        }
    }
    attrs.push(data_extent(0, split, lcn, total, 0x21));
    let build = |attrs: &[Vec<u8>], base_ref: u64, number: u32| {
        let mut r = vec![0u8; 1024];
        r[0..4].copy_from_slice(b"FILE");
        r[4..6].copy_from_slice(&0x30u16.to_le_bytes());
        r[6..8].copy_from_slice(&3u16.to_le_bytes());
        r[0x10..0x12].copy_from_slice(&1u16.to_le_bytes());
        r[0x14..0x16].copy_from_slice(&0x38u16.to_le_bytes());
        r[0x16..0x18].copy_from_slice(&1u16.to_le_bytes());
        r[0x1C..0x20].copy_from_slice(&1024u32.to_le_bytes());
        r[0x20..0x28].copy_from_slice(&base_ref.to_le_bytes());
        r[0x28..0x2A].copy_from_slice(&0x30u16.to_le_bytes());
        r[0x2C..0x30].copy_from_slice(&number.to_le_bytes());
        let mut at = 0x38;
        for a in attrs {
            r[at..at + a.len()].copy_from_slice(a);
            at += a.len();
        }
        r[at..at + 4].copy_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
        r[0x18..0x1C].copy_from_slice(&((at + 8) as u32).to_le_bytes());
        protect(&mut r, 0x0707);
        r
    };
    let new0 = build(&attrs, 0, 0);
    let ext = build(
        &[data_extent(split, clusters - split, lcn + split, 0, 0)],
        1 << 48,
        17,
    );
    bytes[base..base + 1024].copy_from_slice(&new0);
    bytes[base + 17 * 1024..base + 18 * 1024].copy_from_slice(&ext);

    let vol = mem_volume(bytes);
    assert!(vol.notes().is_empty(), "{:?}", vol.notes());
    let (entries, errors) = walk_all(&vol);
    assert!(errors.is_empty(), "{errors:?}");
    let got: Vec<&String> = entries.iter().map(|e| &e.path).collect();
    let want: Vec<&String> = map.keys().collect();
    assert_eq!(got, want);
    let e = entries.iter().find(|e| e.path == "/c/i.txt").unwrap();
    assert_eq!(content(&vol, e).unwrap(), b"i");
}

/// The fixture factory's `/links/long-symlink`: an absolute 180-character target makes
/// libntfs-3g store the 740-byte `$REPARSE_POINT` non-resident.
fn long_target() -> String {
    format!("/{}end", "long-target-component/".repeat(8))
}

/// Regression: a symlink whose `$REPARSE_POINT` is non-resident (180-character target, as in
/// the fixture factory's images) was listed as an empty regular file.
#[test]
fn long_symlink_was_listed_as_an_empty_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let target = long_target();
    assert_eq!(target.len(), 180);
    let img = make_image(
        dir.path(),
        8,
        &format!("mkdir /links\nsymlink /links/long-symlink {target}\nsymlink /links/short x\n"),
    );
    let vol = open_image(&img);
    let (entries, errors) = walk_all(&vol);
    assert!(errors.is_empty(), "{errors:?}");
    let e = entries
        .iter()
        .find(|e| e.path == "/links/long-symlink")
        .unwrap();
    let file = vol.load(e.id.node).unwrap();
    let rp = file
        .attributes
        .iter()
        .find(|a| a.type_code == AT_REPARSE_POINT)
        .unwrap();
    assert!(
        rp.resident_value().is_none(),
        "fixture did not make the reparse point non-resident"
    );
    assert_eq!((e.kind, e.size), (EntryKind::Symlink, 180));
    assert_eq!(content(&vol, e).unwrap(), target.as_bytes());
    let short = entries.iter().find(|e| e.path == "/links/short").unwrap();
    assert_eq!((short.kind, short.size), (EntryKind::Symlink, 1));
    assert_eq!(content(&vol, short).unwrap(), b"x");
}

/// Reparse points that libntfs-3g places in an extension record, reached through a
/// non-resident `$ATTRIBUTE_LIST` (a file with many streams turned into a symlink afterwards),
/// both resident and non-resident.
#[test]
fn long_symlink_in_an_extension_record_behind_a_non_resident_attribute_list() {
    let dir = tempfile::tempdir().unwrap();
    // 300 characters: a 1220-byte value fits in no 1 KiB record, so it is non-resident
    // wherever libntfs-3g puts it.
    let target = long_target() + &"/x".repeat(60);
    let mut spec = String::new();
    for (path, link) in [("/long", target.as_str()), ("/short", "short/target")] {
        spec.push_str(&format!("file {path} hex:\n"));
        for i in 0..40 {
            spec.push_str(&format!(
                "stream {path} stream-name-number-{i} fill:41:100\n"
            ));
        }
        spec.push_str(&format!("makelink {path} {link}\n"));
    }
    let img = make_image(dir.path(), 8, &spec);
    let vol = open_image(&img);
    let (entries, errors) = walk_all(&vol);
    assert!(errors.is_empty(), "{errors:?}");
    for (path, target, resident) in [
        ("/long", target.as_str(), false),
        ("/short", "short/target", true),
    ] {
        let e = entries.iter().find(|e| e.path == path).unwrap();
        let base = vol.read_record(e.id.node).unwrap().unwrap();
        let list = base
            .attributes
            .iter()
            .find(|a| a.type_code == AT_ATTRIBUTE_LIST)
            .expect("fixture made no attribute list");
        assert!(list.resident_value().is_none(), "attribute list resident");
        assert!(
            !base
                .attributes
                .iter()
                .any(|a| a.type_code == AT_REPARSE_POINT),
            "fixture left the reparse point in the base record"
        );
        let file = vol.load(e.id.node).unwrap();
        let rp = file
            .attributes
            .iter()
            .find(|a| a.type_code == AT_REPARSE_POINT)
            .unwrap();
        assert_eq!(rp.resident_value().is_some(), resident, "{path}");
        assert_eq!(
            (e.kind, e.size),
            (EntryKind::Symlink, target.len() as u64),
            "{path}"
        );
        assert_eq!(content(&vol, e).unwrap(), target.as_bytes(), "{path}");
        let streams = entries
            .iter()
            .filter(|s| s.path.starts_with(&format!("{path}:")))
            .count();
        assert_eq!(streams, 40, "{path}");
    }
}

/// A reparse point that cannot be read (size beyond the 16 KiB limit) or whose link target is
/// outside its buffer is reported as a walk error at the file's path, not silently listed as
/// a plain file or an empty link; the rest of the volume is unaffected.
#[test]
fn unreadable_reparse_point_is_a_walk_error() {
    let dir = tempfile::tempdir().unwrap();
    let target = long_target();
    let img = make_image(
        dir.path(),
        8,
        &format!("symlink /long {target}\nsymlink /short abc\nfile /f text:f\n"),
    );
    let mut bytes = std::fs::read(&img).unwrap();
    let vol = open_image(&img);
    let (entries, _) = walk_all(&vol);
    let node = |p: &str| entries.iter().find(|e| e.path == p).unwrap().id.node;
    let rs = 1024;
    let fixup_free = |r: std::ops::Range<usize>| {
        assert!(
            !r.contains(&510) && !r.contains(&511) && !r.contains(&1022) && !r.contains(&1023),
            "patch overlaps a fixup"
        );
    };
    // Non-resident value claiming 1 MiB.
    let at = record_at(&vol, node("/long"));
    let a = raw_attr(&bytes[at..at + rs], AT_REPARSE_POINT);
    assert_eq!(bytes[at + a + 8], 1, "reparse point resident");
    fixup_free(a + 0x28..a + 0x40);
    for field in [0x28, 0x30, 0x38] {
        bytes[at + a + field..at + a + field + 8].copy_from_slice(&(1u64 << 20).to_le_bytes());
    }
    // Resident symlink whose name offsets point past its buffer.
    let at = record_at(&vol, node("/short"));
    let a = raw_attr(&bytes[at..at + rs], AT_REPARSE_POINT);
    assert_eq!(bytes[at + a + 8], 0, "reparse point non-resident");
    let value = a + usize::from(crate::block::le::u16(&bytes[at..], a + 0x14).unwrap());
    fixup_free(value + 8..value + 16);
    for f in 0..4 {
        let o = at + value + 8 + 2 * f;
        bytes[o..o + 2].copy_from_slice(&0xFFF0u16.to_le_bytes());
    }
    let vol = mem_volume(bytes);
    let (entries, errors) = walk_all(&vol);
    let by_path: BTreeMap<&str, &FileEntry> =
        entries.iter().map(|e| (e.path.as_str(), e)).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    let long_err = errors
        .iter()
        .find(|(p, _)| p == "/long")
        .expect("no error for /long");
    assert!(
        matches!(long_err.1, Error::Limit { .. }),
        "{:?}",
        long_err.1
    );
    assert!(
        long_err.1.to_string().contains("reparse point"),
        "{}",
        long_err.1
    );
    let short_err = errors
        .iter()
        .find(|(p, _)| p == "/short")
        .expect("no error for /short");
    assert!(
        matches!(short_err.1, Error::Corrupt { .. }),
        "{:?}",
        short_err.1
    );
    assert!(
        short_err.1.to_string().contains("link target"),
        "{}",
        short_err.1
    );
    // Still listed (their streams get scanned), the readable link still a link.
    assert!(by_path.contains_key("/long"));
    let short = by_path["/short"];
    assert_eq!((short.kind, short.size), (EntryKind::Symlink, 0));
    assert!(content(&vol, short).is_err());
    assert_eq!(content(&vol, by_path["/f"]).unwrap(), b"f");
}

/// Replays a fuzzer input through probe, open, walk and reads, as the `ntfs` fuzz target does.
fn replay_fuzz_input(data: &[u8]) {
    let src: SharedSource = Arc::new(MemSource::new(data.to_vec(), "fuzz.img"));
    if !matches!(crate::fs::probe(&src), Ok(Some(FsKind::Ntfs))) {
        return;
    }
    let Ok(vol) = crate::fs::open(src, FsKind::Ntfs) else {
        return;
    };
    let mut entries = Vec::new();
    let _ = vol.walk(&mut |ev| {
        if let WalkEvent::Entry(e) = ev {
            entries.push(e);
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    for e in entries.iter().take(256) {
        let Ok(mut r) = vol.open(e) else { continue };
        let end = r.size().min(1 << 20);
        let mut pos = 0u64;
        while pos < end {
            match r.read_at(pos, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => pos += n as u64,
            }
        }
    }
}

/// Fuzz finding (`ntfs` target): reading a compressed stream divided by a zero-sized
/// compression unit and panicked. Must fail with an error for that stream instead.
#[test]
fn fuzz_compression_unit_of_zero_bytes_does_not_panic() {
    replay_fuzz_input(include_bytes!(
        "testdata/fuzz-compression-unit-div-zero.bin"
    ));
}
