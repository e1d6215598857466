//! A classic (non-thin) LVM2 snapshot whose origin moved on after the snapshot was taken.
//!
//! The VG is made by the real LVM tools on a loop device; the snapshot is added to its metadata
//! with `vgcfgrestore --force` (lvm2 refuses `lvcreate -s` without device-mapper, which this
//! machine kind lacks), and `lvs` must then report the snapshot with its origin. The contents
//! are the kernel's: an ext4 image holds the state at snapshot time; a guest kernel
//! ([`crate::dm_guest`]) snapshots it with device-mapper's own `snapshot` target (persistent,
//! 4 KiB chunks, as lvm2 loads it), mounts the origin and changes it (files added, rewritten
//! in place, deleted, a test file removed and another added), so that the origin image and the
//! copy-on-write store are both written by the kernel. The builder checks that the store
//! (read as `drivers/md/dm-snap-persistent.c` lays it out) turns the origin back into the
//! snapshot state byte for byte, and that it spans several metadata areas.
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

/// Chunk size of the snapshot (lvm2's default, 8 sectors).
const CHUNK: usize = 4096;
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

/// The snapshot state rebuilt from `origin` and the store, as a reader of the format would, and
/// the number of exceptions.
fn apply_store(origin: &[u8], cow: &[u8]) -> (Vec<u8>, usize) {
    let mut out = origin.to_vec();
    let mut n = 0;
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
            n += 1;
        }
        area += stride;
    }
    (out, n)
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

/// The origin's changes after the snapshot, run by the guest in the mounted origin (busybox
/// sh); `/eicar.com` is the test file, made at build time.
const CHANGES: &str = r#"set -e
rm planted/before-snapshot.com
cp /eicar.com planted/after-snapshot.com
mkdir -p added/deeper
i=0
while [ $i -lt 40 ]; do
  j=0
  while [ $j -le $i ]; do echo "added after the snapshot, note $i"; j=$((j+1)); done > added/deeper/note-$i.txt
  i=$((i+1))
done
# A large new file: its data fills chunks free at snapshot time (many exceptions).
dd if=/dev/urandom of=added/large.bin bs=4096 count=770 2>/dev/null
# Rewritten in place, then extended past a hole; a file and a directory deleted.
dd if=/dev/urandom of=changed/in-place.bin bs=10000 count=1 seek=7 conv=notrunc 2>/dev/null
printf 'appended after the snapshot' | dd of=changed/in-place.bin bs=1 seek=300000 conv=notrunc 2>/dev/null
rm changed/deleted.txt
rm -r changed/removed-dir
"#;

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
        let cow_img = dir.join("cow.img");
        images::sparse_file(&cow_img, COW)?;
        let eicar = eicar();
        crate::dm_guest::snapshot_and_change(
            &dir.join("guest"),
            &origin_img,
            &cow_img,
            CHANGES,
            &[("/eicar.com", &eicar)],
        )?;
        fs::remove_dir_all(dir.join("guest"))?;
        let mut records = kernel_view(&snap_img, &dir.join("snap.mnt"), "svg/snap")?;
        records.extend(kernel_view(&origin_img, &dir.join("data.mnt"), "svg/data")?);
        let snapshot = fs::read(&snap_img)?;
        let (rebuilt, exceptions) = apply_store(&fs::read(&origin_img)?, &fs::read(&cow_img)?);
        ensure!(
            rebuilt == snapshot,
            "the kernel's exception store does not rebuild the snapshot state"
        );
        ensure!(
            exceptions > 2 * (CHUNK / 16),
            "only {exceptions} exceptions: the store should span several metadata areas"
        );

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
