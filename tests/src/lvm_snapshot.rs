//! A classic (non-thin) LVM2 snapshot whose origin moved on after the snapshot was taken.
//!
//! The VG is made by the real LVM tools on a loop device; the snapshot is added to its metadata
//! with `vgcfgrestore --force` (lvm2 refuses `lvcreate -s` without device-mapper, which this
//! machine kind lacks), and `lvs` must then report the snapshot with its origin. The filesystem
//! states are the kernel's: an ext4 image is the state at snapshot time; a copy of it is
//! loop-mounted read-write and changed (files added, rewritten in place, deleted, a test file
//! removed and another added) to make the origin's state. The copy-on-write store holds, for
//! every 4 KiB chunk in which the two states differ, the old chunk, laid out as the kernel's
//! `drivers/md/dm-snap-persistent.c` writes it (header, metadata areas of `(old, new)` chunk
//! pairs, data chunks, new chunks allocated as `persistent_prepare_exception` does), in a
//! scattered order as writes would come. Before the store is used, the builder rebuilds the
//! snapshot state from origin and store and checks it byte for byte.
//!
//! Ground truth: the kernel's view of each state, walked while mounted read-only.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{ensure, Context};

use crate::cache;
use crate::crash::walk_records;
use crate::images;
use crate::lvm::{
    ext4, layout, lvm, with_volume, write_detections, write_lv, LoopDevice, LvmFixture,
    PlantedDetection, MANIFEST,
};
use crate::manifest::{self, Record};
use crate::testdb::eicar;
use crate::tools::{check, command};
use crate::trees::{self, MIB};
use crate::xfs::LoopMount;

/// Chunk size of the snapshot (lvm2's default, 8 sectors).
const CHUNK: usize = 4096;
/// `SnAp`.
const SNAP_MAGIC: u32 = 0x7041_6e53;
/// Size of the origin LV and of the COW LV.
const ORIGIN: u64 = 48 * MIB;
const COW: u64 = 24 * MIB;

/// The hidden `snapshotN` LV section lvm2 writes for a snapshot of `origin` stored in `cow`.
fn snapshot_section(extents: u64, origin: &str, cow: &str) -> String {
    format!(
        "\t\tsnapshot0 {{\n\t\t\tid = \"0b5e55-0000-0000-0000-0000-0000-000005\"\n\t\t\tstatus = [\"READ\", \"WRITE\", \"VISIBLE\"]\n\t\t\tflags = []\n\t\t\tsegment_count = 1\n\t\t\tsegment1 {{\n\t\t\t\tstart_extent = 0\n\t\t\t\textent_count = {extents}\n\t\t\t\ttype = \"snapshot\"\n\t\t\t\tchunk_size = {}\n\t\t\t\torigin = \"{origin}\"\n\t\t\t\tcow_store = \"{cow}\"\n\t\t\t}}\n\t\t}}\n",
        CHUNK / 512
    )
}

/// The COW store turning `origin` back into `snapshot` (same length), `cow_len` bytes.
fn exception_store(snapshot: &[u8], origin: &[u8], cow_len: usize) -> anyhow::Result<Vec<u8>> {
    ensure!(snapshot.len() == origin.len() && snapshot.len() % CHUNK == 0);
    let mut changed: Vec<u64> = (0..snapshot.len() / CHUNK)
        .filter(|&c| snapshot[c * CHUNK..(c + 1) * CHUNK] != origin[c * CHUNK..(c + 1) * CHUNK])
        .map(|c| c as u64)
        .collect();
    // Writes come in no particular order: scatter the table (and so the data chunks).
    changed.sort_by_key(|c| (c.wrapping_mul(2_654_435_761) % 1_000_003, *c));
    let per_area = CHUNK / 16;
    let stride = per_area + 1;
    let mut cow = vec![0u8; cow_len];
    cow[0..4].copy_from_slice(&SNAP_MAGIC.to_le_bytes());
    cow[4..8].copy_from_slice(&1u32.to_le_bytes()); // valid
    cow[8..12].copy_from_slice(&1u32.to_le_bytes()); // version
    cow[12..16].copy_from_slice(&((CHUNK / 512) as u32).to_le_bytes());
    let mut next_free = 2usize; // after the header and the first area
    for (n, &old) in changed.iter().enumerate() {
        let new = next_free;
        next_free += 1;
        if next_free % stride == 1 {
            next_free += 1; // the next metadata area
        }
        ensure!(
            (new + 1) * CHUNK <= cow_len && (1 + (n / per_area) * stride + 1) * CHUNK <= cow_len,
            "{} changed chunks do not fit a COW store of {cow_len} bytes",
            changed.len()
        );
        let at = (1 + (n / per_area) * stride) * CHUNK + (n % per_area) * 16;
        cow[at..at + 8].copy_from_slice(&old.to_le_bytes());
        cow[at + 8..at + 16].copy_from_slice(&(new as u64).to_le_bytes());
        let o = old as usize * CHUNK;
        cow[new * CHUNK..(new + 1) * CHUNK].copy_from_slice(&snapshot[o..o + CHUNK]);
    }
    ensure!(
        changed.len() > 2 * per_area,
        "only {} chunks changed: the store should span several metadata areas",
        changed.len()
    );
    Ok(cow)
}

/// The snapshot state rebuilt from `origin` and the store, as a reader of the format would.
fn apply_store(origin: &[u8], cow: &[u8]) -> Vec<u8> {
    let mut out = origin.to_vec();
    let stride = CHUNK / 16 + 1;
    let mut area = 1usize;
    'areas: while (area + 1) * CHUNK <= cow.len() {
        for e in cow[area * CHUNK..(area + 1) * CHUNK].chunks(16) {
            let old = u64::from_le_bytes(e[..8].try_into().expect("8 bytes")) as usize;
            let new = u64::from_le_bytes(e[8..].try_into().expect("8 bytes")) as usize;
            if new == 0 {
                break 'areas;
            }
            out[old * CHUNK..(old + 1) * CHUNK]
                .copy_from_slice(&cow[new * CHUNK..(new + 1) * CHUNK]);
        }
        area += stride;
    }
    out
}

/// Mounts `img` read-only and walks it as `volume`.
fn kernel_view(img: &Path, mnt: &Path, volume: &str) -> anyhow::Result<Vec<Record>> {
    fs::create_dir_all(mnt)?;
    check(
        command("mount")
            .args(["-o", "loop,ro,noload"])
            .arg(img)
            .arg(mnt),
    )
    .context("this fixture needs loop mounts (root, loop devices, the kernel's ext4)")?;
    let walked = walk_records(mnt, "ext4");
    let _ = command("umount").arg(mnt).status();
    let _ = fs::remove_dir(mnt);
    Ok(with_volume(walked?, 0, Some(volume)))
}

/// The origin's changes after the snapshot, made by the kernel on the mounted copy.
fn change_origin(root: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::FileExt;
    fs::remove_file(root.join("planted/before-snapshot.com"))?;
    fs::write(root.join("planted/after-snapshot.com"), eicar())?;
    fs::create_dir_all(root.join("added/deeper"))?;
    for i in 0..40 {
        fs::write(
            root.join(format!("added/deeper/note-{i:02}.txt")),
            format!("added after the snapshot, note {i}\n").repeat(i + 1),
        )?;
    }
    // A large new file: its data fills chunks free at snapshot time (many exceptions).
    let big: Vec<u8> = (0..3 * MIB as usize + 4321)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(root.join("added/large.bin"), big)?;
    // Rewritten in place, then extended; and a file deleted.
    let f = fs::OpenOptions::new()
        .write(true)
        .open(root.join("changed/in-place.bin"))?;
    f.write_all_at(&[0x5a; 10_000], 70_000)?;
    f.write_all_at(b"appended after the snapshot", 300_000)?;
    drop(f);
    fs::remove_file(root.join("changed/deleted.txt"))?;
    fs::remove_dir_all(root.join("changed/removed-dir"))?;
    check(command("sync").arg("-f").arg(root))?;
    Ok(())
}

/// A whole-disk PV whose VG `svg` holds `data` (ext4, 48 MiB) and its classic snapshot `snap`
/// (COW LV of 24 MiB, 4 KiB chunks), as described in the module comment. Planted test files:
/// `/planted/before-snapshot.com` in the snapshot only, `/planted/after-snapshot.com` in the
/// origin only, `/common/eicar.com` in both.
pub fn classic_snapshot() -> anyhow::Result<LvmFixture> {
    let dir = cache::cached("lvm-snapshot", &|dir| {
        let mut tree = trees::rich_tree("lvm snapshot");
        tree.file("/planted/before-snapshot.com", &eicar());
        tree.file("/common/eicar.com", &eicar());
        tree.random_file("/changed/in-place.bin", 200_000);
        tree.file(
            "/changed/deleted.txt",
            b"deleted from the origin after the snapshot\n",
        );
        tree.file("/changed/removed-dir/a.txt", b"a\n");
        tree.file("/changed/removed-dir/b.txt", b"b\n");
        let snap_img = ext4(dir, "snapshot-state", ORIGIN, &mut tree)?;
        let origin_img = dir.join("origin-state.ext4");
        fs::copy(&snap_img, &origin_img)?;
        {
            let m = LoopMount::new(&origin_img, &dir.join("origin.mnt"))?;
            change_origin(&m.dir)?;
        }
        let mut records = kernel_view(&snap_img, &dir.join("snap.mnt"), "svg/snap")?;
        records.extend(kernel_view(&origin_img, &dir.join("data.mnt"), "svg/data")?);
        let snapshot = fs::read(&snap_img)?;
        let origin = fs::read(&origin_img)?;
        let cow = exception_store(&snapshot, &origin, COW as usize)?;
        ensure!(
            apply_store(&origin, &cow) == snapshot,
            "the exception store does not rebuild the snapshot state"
        );
        let cow_img = dir.join("cow.img");
        fs::write(&cow_img, &cow)?;

        let disk = dir.join("disk.img");
        images::sparse_file(&disk, 96 * MIB)?;
        let l = LoopDevice::attach(&disk)?;
        lvm("pvcreate", &[&l], &["-q", &l.dev])?;
        lvm("vgcreate", &[&l], &["-q", "svg", &l.dev])?;
        for (name, size) in [("data", "48M"), ("snap", "24M")] {
            lvm(
                "lvcreate",
                &[&l],
                &["-q", "-an", "-Zn", "-L", size, "-n", name, "svg"],
            )?;
        }
        let lay = layout("svg", &[&l])?;
        let backup = dir.join("svg.txt");
        let backup_s = backup.to_str().context("path")?;
        lvm("vgcfgbackup", &[&l], &["-q", "-f", backup_s, "svg"])?;
        let text = fs::read_to_string(&backup)?;
        let end = text
            .rfind("\t}\n\n}")
            .context("end of logical_volumes in vgcfgbackup")?;
        let extents = ORIGIN / lay.2;
        let text = format!(
            "{}{}{}",
            &text[..end],
            snapshot_section(extents, "data", "snap"),
            &text[end..]
        );
        fs::write(&backup, text)?;
        lvm(
            "vgcfgrestore",
            &[&l],
            &["-q", "--force", "-f", backup_s, "svg"],
        )?;
        // lvm2 itself must now see `snap` as a snapshot of `data`.
        let seen = lvm(
            "lvs",
            &[&l],
            &["--noheadings", "-o", "lv_name,origin,lv_attr", "svg/snap"],
        )?;
        let cols: Vec<&str> = seen.split_whitespace().collect();
        ensure!(
            cols.len() == 3 && cols[..2] == ["snap", "data"] && cols[2].starts_with('s'),
            "lvs does not report snap as a snapshot of data: {seen:?}"
        );
        let files = BTreeMap::from([(l.dev.clone(), (disk.clone(), 0))]);
        write_lv(&lay, "data", &origin_img, &files)?;
        write_lv(&lay, "snap", &cow_img, &files)?;
        drop(l);
        for f in [snap_img, origin_img, cow_img, backup] {
            fs::remove_file(f)?;
        }
        records.sort();
        manifest::write_jsonl(&dir.join(MANIFEST), &records)?;
        let planted = |volume: &str, path: &str| PlantedDetection {
            partition: 0,
            volume: Some(volume.into()),
            path: path.into(),
        };
        let mut detections = vec![
            planted("svg/snap", "/planted/before-snapshot.com"),
            planted("svg/snap", "/common/eicar.com"),
            planted("svg/data", "/planted/after-snapshot.com"),
            planted("svg/data", "/common/eicar.com"),
        ];
        detections.sort();
        write_detections(dir, &detections)?;
        Ok(())
    })?;
    Ok(LvmFixture {
        disks: vec![dir.join("disk.img")],
        dir,
    })
}
