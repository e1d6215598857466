//! Partition table tests: hand-built tables in memory, and tables written by `sfdisk`/`fdisk`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use super::*;
use crate::block::{FileSource, MemSource};

const LINUX: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";
const ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";

/// Encodes a lowercase hyphenated GUID into the mixed-endian on-disk layout.
fn guid_bytes(s: &str) -> [u8; 16] {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let b: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).unwrap())
        .collect();
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&[b[3], b[2], b[1], b[0]]);
    out[4..6].copy_from_slice(&[b[5], b[4]]);
    out[6..8].copy_from_slice(&[b[7], b[6]]);
    out[8..].copy_from_slice(&b[8..]);
    out
}

struct GptEntry {
    type_guid: &'static str,
    first: u64,
    last: u64,
    name: &'static str,
}

/// Builds a disk of `sectors` sectors of `ss` bytes with a protective MBR and both GPT headers.
fn build_gpt(ss: usize, sectors: u64, entry_size: usize, entries: &[GptEntry]) -> Vec<u8> {
    let mut d = vec![0u8; ss * sectors as usize];
    // Protective MBR.
    d[446 + 4] = 0xee;
    d[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
    d[446 + 12..446 + 16].copy_from_slice(&(sectors as u32 - 1).to_le_bytes());
    d[510] = 0x55;
    d[511] = 0xaa;
    let num = 128usize;
    let mut array = vec![0u8; num * entry_size];
    for (i, e) in entries.iter().enumerate() {
        let a = &mut array[i * entry_size..];
        a[..16].copy_from_slice(&guid_bytes(e.type_guid));
        a[16..32].copy_from_slice(&guid_bytes(&format!(
            "00000000-0000-4000-8000-0000000000{:02x}",
            i + 1
        )));
        a[32..40].copy_from_slice(&e.first.to_le_bytes());
        a[40..48].copy_from_slice(&e.last.to_le_bytes());
        for (j, u) in e.name.encode_utf16().enumerate() {
            a[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
        }
    }
    let array_sectors = (array.len() as u64).div_ceil(ss as u64);
    let last = sectors - 1;
    let backup_array = last - array_sectors;
    let header = |my: u64, alt: u64, entries_lba: u64| {
        let mut h = vec![0u8; 92];
        h[..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&my.to_le_bytes());
        h[32..40].copy_from_slice(&alt.to_le_bytes());
        h[40..48].copy_from_slice(&(2 + array_sectors).to_le_bytes());
        h[48..56].copy_from_slice(&(backup_array - 1).to_le_bytes());
        h[56..72].copy_from_slice(&guid_bytes("11223344-5566-7788-99aa-bbccddeeff00"));
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(num as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(entry_size as u32).to_le_bytes());
        h[88..92].copy_from_slice(&crc32fast::hash(&array).to_le_bytes());
        let crc = crc32fast::hash(&h);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };
    let p = header(1, last, 2);
    d[ss..ss + 92].copy_from_slice(&p);
    d[2 * ss..2 * ss + array.len()].copy_from_slice(&array);
    let b = header(last, 1, backup_array);
    let bo = backup_array as usize * ss;
    d[bo..bo + array.len()].copy_from_slice(&array);
    d[last as usize * ss..last as usize * ss + 92].copy_from_slice(&b);
    d
}

fn two_entries() -> Vec<GptEntry> {
    vec![
        GptEntry {
            type_guid: ESP,
            first: 40,
            last: 99,
            name: "EFI system",
        },
        GptEntry {
            type_guid: LINUX,
            first: 100,
            last: 199,
            name: "root ü",
        },
    ]
}

fn mem(d: Vec<u8>) -> MemSource {
    MemSource::new(d, "disk")
}

#[test]
fn gpt_is_read_with_names_guids_and_types() {
    let t = read_table(&mem(build_gpt(512, 256, 128, &two_entries()))).unwrap();
    assert_eq!(t.scheme, Scheme::Gpt);
    assert_eq!(t.sector_size, 512);
    assert_eq!(
        t.disk_id.as_deref(),
        Some("11223344-5566-7788-99aa-bbccddeeff00")
    );
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    assert_eq!(t.partitions.len(), 2);
    let p = &t.partitions[0];
    assert_eq!((p.index, p.start, p.size), (1, 40 * 512, 60 * 512));
    assert_eq!(p.type_id, ESP);
    assert_eq!(p.type_name.as_deref(), Some("efi-system"));
    assert_eq!(p.label.as_deref(), Some("EFI system"));
    assert_eq!(
        p.guid.as_deref(),
        Some("00000000-0000-4000-8000-000000000001")
    );
    let p = &t.partitions[1];
    assert_eq!((p.index, p.start, p.size), (2, 100 * 512, 100 * 512));
    assert_eq!(p.type_name.as_deref(), Some("linux-data"));
    assert_eq!(p.label.as_deref(), Some("root ü"));
}

#[test]
fn gpt_entry_index_is_the_entry_number_and_large_entries_work() {
    let mut e = two_entries();
    e[0].first = 70; // after the 64 sectors of 256-byte entries
                     // Leave entry 2 unused: the Linux partition is entry 3.
    e.insert(
        1,
        GptEntry {
            type_guid: "00000000-0000-0000-0000-000000000000",
            first: 0,
            last: 0,
            name: "",
        },
    );
    let t = read_table(&mem(build_gpt(512, 400, 256, &e))).unwrap();
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    let idx: Vec<u32> = t.partitions.iter().map(|p| p.index).collect();
    assert_eq!(idx, [1, 3]);
    assert_eq!(t.partitions[1].label.as_deref(), Some("root ü"));
}

#[test]
fn corrupt_primary_gpt_header_falls_back_to_backup_with_a_problem() {
    let mut d = build_gpt(512, 256, 128, &two_entries());
    d[512 + 40] ^= 0xff; // FirstUsableLBA: header CRC no longer matches
    let t = read_table(&mem(d)).unwrap();
    assert_eq!(t.scheme, Scheme::Gpt);
    assert_eq!(t.partitions.len(), 2);
    assert_eq!(t.problems.len(), 1, "{:?}", t.problems);
    let msg = t.problems[0].to_string();
    assert!(msg.contains("backup") && msg.contains("0x200"), "{msg}");
}

#[test]
fn corrupt_primary_entry_array_falls_back_to_backup() {
    let mut d = build_gpt(512, 256, 128, &two_entries());
    d[2 * 512 + 60] ^= 0xff; // a name byte of entry 1
    let t = read_table(&mem(d)).unwrap();
    assert_eq!(t.partitions.len(), 2);
    assert_eq!(t.partitions[0].label.as_deref(), Some("EFI system"));
    assert_eq!(t.problems.len(), 1, "{:?}", t.problems);
}

#[test]
fn zeroed_primary_gpt_and_mbr_still_find_the_backup() {
    let mut d = build_gpt(512, 256, 128, &two_entries());
    d[..1024].fill(0);
    let t = read_table(&mem(d)).unwrap();
    assert_eq!(t.scheme, Scheme::Gpt);
    assert_eq!(t.partitions.len(), 2);
    assert_eq!(t.problems.len(), 1);
}

#[test]
fn gpt_without_mbr_is_detected() {
    let mut d = build_gpt(512, 256, 128, &two_entries());
    d[..512].fill(0);
    let t = read_table(&mem(d)).unwrap();
    assert_eq!(t.scheme, Scheme::Gpt);
    assert!(t.problems.is_empty());
}

#[test]
fn protective_mbr_with_both_gpt_headers_bad_is_an_error() {
    let mut d = build_gpt(512, 256, 128, &two_entries());
    d[512 + 40] ^= 0xff;
    let len = d.len();
    d[len - 512 + 40] ^= 0xff;
    let err = read_table(&mem(d)).unwrap_err();
    assert!(err.to_string().contains("GPT"), "{err}");
}

#[test]
fn gpt_on_4k_sectors_is_found_on_a_source_reporting_512() {
    let d = build_gpt(4096, 256, 128, &two_entries());
    for src in [mem(d.clone()), mem(d).with_sector_size(4096)] {
        let t = read_table(&src).unwrap();
        assert_eq!(t.scheme, Scheme::Gpt);
        assert_eq!(t.sector_size, 4096);
        assert_eq!(t.partitions[0].start, 40 * 4096);
    }
}

#[test]
fn gpt_entry_sizes_that_are_not_multiples_of_128_are_refused_without_panic() {
    let mut d = build_gpt(512, 256, 128, &two_entries());
    for (size, count) in [(100u32, 128u32), (0, 128), (128, u32::MAX), (u32::MAX, 1)] {
        d[512 + 80..512 + 84].copy_from_slice(&count.to_le_bytes());
        d[512 + 84..512 + 88].copy_from_slice(&size.to_le_bytes());
        d[512 + 16..512 + 20].fill(0);
        let crc = crc32fast::hash(&d[512..512 + 92]);
        d[512 + 16..512 + 20].copy_from_slice(&crc.to_le_bytes());
        // The backup is intact: it is used, with a problem.
        let t = read_table(&mem(d.clone())).unwrap();
        assert_eq!(t.partitions.len(), 2);
        assert_eq!(t.problems.len(), 1);
    }
}

#[test]
fn gpt_partition_past_the_end_is_listed_with_a_problem() {
    let mut e = two_entries();
    e[1].last = 10_000;
    let d = build_gpt(512, 256, 128, &e);
    let t = read_table(&mem(d)).unwrap();
    assert_eq!(t.partitions.len(), 2);
    let msgs: Vec<String> = t.problems.iter().map(|p| p.to_string()).collect();
    assert!(
        msgs.iter()
            .any(|m| m.contains("partition 2") && m.contains("past the end")),
        "{msgs:?}"
    );
}

/// Writes an MBR record.
fn record(d: &mut [u8], sector_off: usize, slot: usize, kind: u8, start: u32, sectors: u32) {
    let at = sector_off + 446 + slot * 16;
    d[at + 4] = kind;
    d[at + 8..at + 12].copy_from_slice(&start.to_le_bytes());
    d[at + 12..at + 16].copy_from_slice(&sectors.to_le_bytes());
    d[sector_off + 510] = 0x55;
    d[sector_off + 511] = 0xaa;
}

/// An MBR disk of 4096 sectors: primary 1 (0x83, 64..1024), extended 2 (1024..4096) with
/// logicals 5 (EBR 1024, data 1088..2048) and 6 (EBR 2048, data 2112..3072).
fn build_mbr() -> Vec<u8> {
    let mut d = vec![0u8; 4096 * 512];
    d[440..444].copy_from_slice(&0xdeadbeefu32.to_le_bytes());
    record(&mut d, 0, 0, 0x83, 64, 960);
    record(&mut d, 0, 1, 0x05, 1024, 3072);
    record(&mut d, 1024 * 512, 0, 0x07, 64, 960);
    record(&mut d, 1024 * 512, 1, 0x05, 1024, 1024); // next EBR at ext + 1024
    record(&mut d, 2048 * 512, 0, 0x0c, 64, 960);
    d
}

#[test]
fn mbr_with_extended_and_logical_partitions() {
    let t = read_table(&mem(build_mbr())).unwrap();
    assert_eq!(t.scheme, Scheme::Mbr);
    assert_eq!(t.disk_id.as_deref(), Some("0xdeadbeef"));
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    let got: Vec<(u32, u64, u64, &str, Option<&str>)> = t
        .partitions
        .iter()
        .map(|p| {
            (
                p.index,
                p.start / 512,
                p.size / 512,
                p.type_id.as_str(),
                p.type_name.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (1, 64, 960, "0x83", Some("linux")),
            (5, 1088, 960, "0x07", Some("ntfs/exfat")),
            (6, 2112, 960, "0x0c", Some("fat32-lba")),
        ]
    );
}

#[test]
fn looping_ebr_chain_keeps_partitions_found_and_reports_the_loop() {
    let mut d = build_mbr();
    // The second EBR links back to the first.
    record(&mut d, 2048 * 512, 1, 0x05, 0, 1024);
    let t = read_table(&mem(d)).unwrap();
    assert_eq!(t.partitions.len(), 3);
    assert_eq!(t.problems.len(), 1, "{:?}", t.problems);
    assert!(t.problems[0].to_string().contains("loops"));
    // A self-link, too.
    let mut d = build_mbr();
    record(&mut d, 2048 * 512, 1, 0x05, 1024, 1024);
    let t = read_table(&mem(d)).unwrap();
    assert_eq!(t.partitions.len(), 3);
    assert!(t.problems[0].to_string().contains("loops"));
}

#[test]
fn long_ebr_chain_is_capped() {
    // Each EBR links to the next sector: more than MAX_LOGICAL_PARTITIONS logicals.
    let n = mbr::MAX_LOGICAL_PARTITIONS + 10;
    let mut d = vec![0u8; (n + 20) * 512];
    record(&mut d, 0, 0, 0x0f, 1, (n + 10) as u32);
    for i in 0..n + 5 {
        let ebr = (1 + i) * 512;
        record(&mut d, ebr, 0, 0x83, 0, 1);
        record(&mut d, ebr, 1, 0x05, (i + 1) as u32, 1);
    }
    let t = read_table(&mem(d)).unwrap();
    assert_eq!(t.partitions.len(), mbr::MAX_LOGICAL_PARTITIONS);
    assert!(t.problems.iter().any(|p| matches!(p, Error::Limit { .. })));
}

#[test]
fn mbr_partition_past_end_and_overlaps_are_problems() {
    let mut d = vec![0u8; 1024 * 512];
    record(&mut d, 0, 0, 0x83, 64, 500);
    record(&mut d, 0, 1, 0x83, 500, 100); // overlaps 1
    record(&mut d, 0, 2, 0x83, 900, 1000); // past the end
    let t = read_table(&mem(d)).unwrap();
    assert_eq!(t.partitions.len(), 3);
    let msgs: Vec<String> = t.problems.iter().map(|p| p.to_string()).collect();
    assert!(
        msgs.iter()
            .any(|m| m.contains("partition 2") && m.contains("overlaps partition 1")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("partition 3") && m.contains("past the end")),
        "{msgs:?}"
    );
}

#[test]
fn no_table_is_one_whole_disk_volume() {
    for d in [vec![0u8; 8192], vec![0u8; 100], Vec::new()] {
        let len = d.len() as u64;
        let t = read_table(&mem(d)).unwrap();
        assert_eq!(t.scheme, Scheme::None);
        assert_eq!(t.partitions.len(), 1);
        assert_eq!((t.partitions[0].index, t.partitions[0].size), (0, len));
        assert_eq!(t.partitions[0].type_id, "");
    }
    // 0x55AA with garbage status bytes (boot code) is not a table.
    let mut d = vec![0u8; 8192];
    for (i, b) in d[446..510].iter_mut().enumerate() {
        *b = (i * 37 + 11) as u8;
    }
    d[510] = 0x55;
    d[511] = 0xaa;
    assert_eq!(read_table(&mem(d)).unwrap().scheme, Scheme::None);
}

// ---- tables written by the real tools ----

fn tool(cmd: &mut Command, stdin: &str) {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn partitioning tool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sparse(dir: &Path, name: &str, size: u64) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().set_len(size).unwrap();
    p
}

fn open(p: &Path) -> Arc<FileSource> {
    Arc::new(FileSource::open(p).unwrap())
}

#[test]
fn sfdisk_gpt() {
    let dir = tempfile::tempdir().unwrap();
    let img = sparse(dir.path(), "gpt.img", 64 << 20);
    tool(
        Command::new("sfdisk").arg("-q").arg(&img),
        "label: gpt\nlabel-id: 01234567-89AB-CDEF-0123-456789ABCDEF\n\
         start=2048, size=4096, type=uefi, name=\"EFI\"\n\
         start=6144, size=8192, type=linux, name=\"rootfs\", uuid=AABBCCDD-1122-3344-5566-778899AABBCC\n\
         start=14336, size=2048, type=swap\n\
         start=16384, size=4096, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n",
    );
    let t = read_table(open(&img).as_ref()).unwrap();
    assert_eq!(t.scheme, Scheme::Gpt);
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    assert_eq!(
        t.disk_id.as_deref(),
        Some("01234567-89ab-cdef-0123-456789abcdef")
    );
    let got: Vec<(u32, u64, u64, Option<&str>)> = t
        .partitions
        .iter()
        .map(|p| (p.index, p.start / 512, p.size / 512, p.type_name.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            (1, 2048, 4096, Some("efi-system")),
            (2, 6144, 8192, Some("linux-data")),
            (3, 14336, 2048, Some("linux-swap")),
            (4, 16384, 4096, Some("microsoft-basic-data")),
        ]
    );
    assert_eq!(t.partitions[1].label.as_deref(), Some("rootfs"));
    assert_eq!(
        t.partitions[1].guid.as_deref(),
        Some("aabbccdd-1122-3344-5566-778899aabbcc")
    );
    // mmls (The Sleuth Kit) agrees on the starts and lengths.
    let out = Command::new("mmls").arg(&img).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for p in &t.partitions {
        let row = format!(
            "{:010}   {:010}   {:010}",
            p.start / 512,
            (p.start + p.size) / 512 - 1,
            p.size / 512
        );
        assert!(text.contains(&row), "mmls lacks {row}:\n{text}");
    }
    // Now break the primary header: the backup written by sfdisk must be used.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.write_all_at(b"XX", 512 + 24).unwrap();
    }
    let t2 = read_table(open(&img).as_ref()).unwrap();
    assert_eq!(t2.partitions, t.partitions);
    assert_eq!(t2.problems.len(), 1);
}

#[test]
fn sfdisk_mbr_with_logical_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let img = sparse(dir.path(), "mbr.img", 64 << 20);
    tool(
        Command::new("sfdisk").arg("-q").arg(&img),
        "label: dos\nlabel-id: 0x1234abcd\n\
         start=2048, size=8192, type=83, bootable\n\
         start=10240, size=40960, type=5\n\
         start=12288, size=4096, type=7\n\
         start=18432, size=4096, type=82\n\
         start=24576, size=8192, type=c\n",
    );
    let t = read_table(open(&img).as_ref()).unwrap();
    assert_eq!(t.scheme, Scheme::Mbr);
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    assert_eq!(t.disk_id.as_deref(), Some("0x1234abcd"));
    let got: Vec<(u32, u64, u64, &str)> = t
        .partitions
        .iter()
        .map(|p| (p.index, p.start / 512, p.size / 512, p.type_id.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (1, 2048, 8192, "0x83"),
            (5, 12288, 4096, "0x07"),
            (6, 18432, 4096, "0x82"),
            (7, 24576, 8192, "0x0c"),
        ]
    );
    // mmls (The Sleuth Kit) agrees on the data partitions.
    let out = Command::new("mmls").arg("-a").arg(&img).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for p in &t.partitions {
        let start = format!("{:010}", p.start / 512);
        assert!(text.contains(&start), "mmls lacks {start}:\n{text}");
    }
}

#[test]
fn fdisk_gpt_and_mbr_with_4k_sectors_on_image_files() {
    let dir = tempfile::tempdir().unwrap();
    let gpt = sparse(dir.path(), "gpt4k.img", 64 << 20);
    tool(
        Command::new("fdisk").arg("-b").arg("4096").arg(&gpt),
        "g\nn\n1\n256\n+8M\nn\n2\n4096\n+4M\nw\n",
    );
    let t = read_table(open(&gpt).as_ref()).unwrap();
    assert_eq!((t.scheme, t.sector_size), (Scheme::Gpt, 4096));
    let got: Vec<(u32, u64, u64)> = t
        .partitions
        .iter()
        .map(|p| (p.index, p.start, p.size))
        .collect();
    assert_eq!(got, [(1, 256 * 4096, 8 << 20), (2, 4096 * 4096, 4 << 20)]);

    // MBR on a 4Kn disk: the partition holds a FAT boot sector only visible at 4096-byte LBAs.
    let mbr = sparse(dir.path(), "mbr4k.img", 64 << 20);
    tool(
        Command::new("fdisk").arg("-b").arg("4096").arg(&mbr),
        "o\nn\np\n1\n256\n+8M\nw\n",
    );
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&mbr).unwrap();
        f.write_all_at(&[0x55, 0xaa], 256 * 4096 + 510).unwrap();
    }
    let t = read_table(open(&mbr).as_ref()).unwrap();
    assert_eq!((t.scheme, t.sector_size), (Scheme::Mbr, 4096));
    assert_eq!(t.partitions[0].start, 256 * 4096);
    assert_eq!(t.partitions[0].size, 8 << 20);
}

#[test]
fn whole_disk_fat_is_not_mistaken_for_an_mbr() {
    let dir = tempfile::tempdir().unwrap();
    let img = sparse(dir.path(), "fat.img", 8 << 20);
    let st = Command::new("mkfs.vfat")
        .arg(&img)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let t = read_table(open(&img).as_ref()).unwrap();
    assert_eq!(t.scheme, Scheme::None);
    assert_eq!(t.partitions[0].size, 8 << 20);
}

#[test]
fn valid_mbr_without_protective_record_wins_over_a_stale_gpt() {
    let mut d = build_gpt(512, 4096, 128, &two_entries());
    d[446..510].fill(0);
    record(&mut d, 0, 0, 0x83, 2048, 1024);
    let t = read_table(&mem(d)).unwrap();
    assert_eq!(t.scheme, Scheme::Mbr);
    assert_eq!(t.partitions.len(), 1);
    assert!(t.problems.is_empty());
}

#[test]
fn hybrid_mbr_means_gpt() {
    let mut d = build_gpt(512, 256, 128, &two_entries());
    record(&mut d, 0, 1, 0x0c, 40, 60);
    let t = read_table(&mem(d.clone())).unwrap();
    assert_eq!(t.scheme, Scheme::Gpt);
    assert_eq!(t.partitions.len(), 2);
    // With both GPT headers broken, the hybrid's MBR records are used, with a problem.
    d[512 + 40] ^= 0xff;
    let len = d.len();
    d[len - 512 + 40] ^= 0xff;
    let t = read_table(&mem(d)).unwrap();
    assert_eq!(t.scheme, Scheme::Mbr);
    assert_eq!(t.partitions.len(), 1);
    assert_eq!(t.partitions[0].index, 2);
    assert_eq!(t.problems.len(), 1);
}

#[test]
fn garbage_in_ebr_records_3_and_4_is_ignored_unless_inside_the_extended_partition() {
    let mut d = build_mbr();
    record(&mut d, 1024 * 512, 2, 0x83, 100_000, 50); // outside: garbage
    let t = read_table(&mem(d.clone())).unwrap();
    assert_eq!(t.partitions.len(), 3);
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    record(&mut d, 1024 * 512, 3, 0x83, 1500, 10); // inside: a logical partition
    let t = read_table(&mem(d)).unwrap();
    let idx: Vec<(u32, u64)> = t
        .partitions
        .iter()
        .map(|p| (p.index, p.start / 512))
        .collect();
    assert_eq!(idx, [(1, 64), (5, 1088), (6, 2524), (7, 2112)]);
}

#[test]
fn gpt_signature_without_mbr_and_both_headers_bad_is_a_whole_disk_with_a_problem() {
    let mut d = build_gpt(512, 256, 128, &two_entries());
    d[..512].fill(0);
    d[512 + 40] ^= 0xff;
    let len = d.len();
    d[len - 512 + 40] ^= 0xff;
    let t = read_table(&mem(d)).unwrap();
    assert_eq!(t.scheme, Scheme::None);
    assert_eq!(t.partitions.len(), 1);
    assert_eq!(t.problems.len(), 1);
    assert!(t.problems[0].to_string().contains("both GPT headers"));
}
