//! LVM2 fixtures made by the real tools: `pvcreate`, `vgcreate` and `lvcreate` on loop devices
//! with activation off (no device-mapper here), then each LV's content (an ext4 image, a swap
//! area) written at the PV offsets `lvs --segments` reports, following linear and striped
//! mappings. Also a LUKS2 partition made by `cryptsetup luksFormat` on a plain file.
//!
//! Ground truth: the manifest of each planted tree, with `volume` set to `vg/lv`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context};
use serde::{Deserialize, Serialize};

use crate::cache;
use crate::images::{self, ExtOptions, PartSpec};
use crate::manifest::{self, Record};
use crate::tools::{check, command, tool};
use crate::tree::Tree;
use crate::trees::{self, MIB};

/// Manifest file of an LVM fixture.
pub const MANIFEST: &str = "manifest.jsonl";
/// Expected detections of an LVM fixture (JSON lines of [`PlantedDetection`]).
pub const DETECTIONS: &str = "detections.jsonl";

/// A planted test file that `coldscan scan` must report.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PlantedDetection {
    /// Partition index.
    pub partition: u32,
    /// `vg/lv`, or `None` for a partition.
    pub volume: Option<String>,
    /// Path.
    pub path: String,
}

/// A loop device attached to an image file, detached when dropped.
#[derive(Debug)]
pub struct LoopDevice {
    /// `/dev/loopN`.
    pub dev: String,
}

impl LoopDevice {
    /// Attaches `file` to a free loop device.
    pub fn attach(file: &Path) -> anyhow::Result<LoopDevice> {
        let out = tool(
            "losetup",
            &["-f".as_ref(), "--show".as_ref(), file.as_os_str()],
        )
        .context("attaching a loop device (LVM fixtures need loop devices: run as root)")?;
        let dev = out.stdout_text().trim().to_string();
        ensure!(dev.starts_with("/dev/loop"), "losetup printed {dev:?}");
        Ok(LoopDevice { dev })
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = command("losetup").args(["-d", &self.dev]).status();
    }
}

/// Runs an LVM command that sees only `devs`, with activation, udev, backups and archives off.
pub fn lvm(program: &str, devs: &[&LoopDevice], args: &[&str]) -> anyhow::Result<String> {
    let accept: Vec<String> = devs.iter().map(|d| format!("\"a|^{}$|\"", d.dev)).collect();
    let config = format!(
        "global{{activation=0}} devices{{filter=[{},\"r|.*|\"] obtain_device_list_from_udev=0 \
         scan=[\"/dev\"]}} backup{{backup=0 archive=0}}",
        accept.join(",")
    );
    let mut cmd = command(program);
    cmd.arg("--config").arg(&config).args(args);
    // LVM complains about inherited descriptors; harmless.
    cmd.env("LVM_SUPPRESS_FD_WARNINGS", "1");
    Ok(check(&mut cmd)?.stdout_text())
}

/// One segment of an LV as `lvs --segments` reports it.
#[derive(Debug, Clone)]
pub struct LvSegment {
    /// First logical extent.
    pub start_pe: u64,
    /// Extents.
    pub size_pe: u64,
    /// Stripe size in bytes (0 for linear).
    pub stripe_size: u64,
    /// (device, first physical extent) of each stripe.
    pub stripes: Vec<(String, u64)>,
}

/// The segments of every LV of `vg`, and each device's `pe_start` in bytes, and the extent size.
pub type Layout = (BTreeMap<String, Vec<LvSegment>>, BTreeMap<String, u64>, u64);

fn field<'a>(v: &'a serde_json::Value, k: &str) -> anyhow::Result<&'a str> {
    v[k].as_str()
        .map(str::trim)
        .with_context(|| format!("no {k} in {v}"))
}

fn bytes(s: &str) -> anyhow::Result<u64> {
    s.trim_end_matches('B')
        .parse()
        .with_context(|| format!("not a byte count: {s}"))
}

/// Reads the layout of `vg` from the LVM tools.
pub fn layout(vg: &str, devs: &[&LoopDevice]) -> anyhow::Result<Layout> {
    let out = lvm(
        "lvs",
        devs,
        &[
            "--segments",
            "--units",
            "b",
            "--reportformat",
            "json",
            "-a",
            "-o",
            "lv_name,seg_start_pe,seg_size_pe,stripe_size,seg_pe_ranges",
            vg,
        ],
    )?;
    let v: serde_json::Value = serde_json::from_str(&out).context("lvs json")?;
    let mut lvs: BTreeMap<String, Vec<LvSegment>> = BTreeMap::new();
    for s in v["report"][0]["seg"].as_array().context("lvs report")? {
        let mut stripes = Vec::new();
        for range in field(s, "seg_pe_ranges")?.split_whitespace() {
            let (dev, r) = range.rsplit_once(':').context("pe range")?;
            let first = r.split('-').next().context("pe range")?.parse()?;
            stripes.push((dev.to_string(), first));
        }
        // Hidden LVs are shown in brackets (`[pool_tmeta]`).
        let name = field(s, "lv_name")?.trim_matches(|c| c == '[' || c == ']');
        lvs.entry(name.to_string()).or_default().push(LvSegment {
            start_pe: field(s, "seg_start_pe")?.parse()?,
            size_pe: field(s, "seg_size_pe")?.parse()?,
            stripe_size: bytes(field(s, "stripe_size")?)?,
            stripes,
        });
    }
    let out = lvm(
        "pvs",
        devs,
        &[
            "--units",
            "b",
            "--reportformat",
            "json",
            "-o",
            "pv_name,pe_start,vg_extent_size",
        ],
    )?;
    let v: serde_json::Value = serde_json::from_str(&out).context("pvs json")?;
    let mut pe_start = BTreeMap::new();
    let mut extent = 0;
    for p in v["report"][0]["pv"].as_array().context("pvs report")? {
        pe_start.insert(
            field(p, "pv_name")?.to_string(),
            bytes(field(p, "pe_start")?)?,
        );
        extent = bytes(field(p, "vg_extent_size")?)?;
    }
    ensure!(extent > 0, "no extent size from pvs");
    Ok((lvs, pe_start, extent))
}

/// Writes `content` (a file no longer than the LV) into the LV `lv`: each piece at the PV
/// offset the segment maps it to. `pv_files` maps each device to (image file, byte offset of
/// the PV inside it).
pub fn write_lv(
    layout: &Layout,
    lv: &str,
    content: &Path,
    pv_files: &BTreeMap<String, (PathBuf, u64)>,
) -> anyhow::Result<()> {
    let (lvs, pe_start, extent) = layout;
    let data = fs::read(content)?;
    let segs = lvs.get(lv).with_context(|| format!("no LV {lv}"))?;
    let mut files: BTreeMap<&str, fs::File> = BTreeMap::new();
    for (dev, (path, _)) in pv_files {
        files.insert(
            dev,
            fs::OpenOptions::new()
                .write(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?,
        );
    }
    use std::os::unix::fs::FileExt;
    for seg in segs {
        let seg_start = seg.start_pe * extent;
        let seg_len = seg.size_pe * extent;
        let n = seg.stripes.len() as u64;
        let chunk = if n == 1 { seg_len } else { seg.stripe_size };
        ensure!(chunk > 0, "{lv}: striped segment without a stripe size");
        let mut off = 0u64;
        while off < seg_len {
            let lv_off = seg_start + off;
            if lv_off >= data.len() as u64 {
                break;
            }
            let i = off / chunk;
            let (dev, first_pe) = &seg.stripes[(i % n) as usize];
            let area_off = (i / n) * chunk;
            let (_, base) = pv_files
                .get(dev)
                .with_context(|| format!("no file for {dev}"))?;
            let at = base + pe_start[dev] + first_pe * extent + area_off;
            let end = (lv_off + chunk).min(data.len() as u64);
            files[dev.as_str()].write_all_at(&data[lv_off as usize..end as usize], at)?;
            off += chunk;
        }
    }
    Ok(())
}

/// An ext4 image of `size` bytes holding `tree`; adds to `tree` the `/lost+found` that
/// mke2fs creates.
pub(crate) fn ext4(dir: &Path, name: &str, size: u64, tree: &mut Tree) -> anyhow::Result<PathBuf> {
    let img = dir.join(format!("{name}.ext4"));
    images::ext_image(&img, size, tree, &ExtOptions::ext4())?;
    tree.dir("/lost+found");
    Ok(img)
}

/// A swap area of `size` bytes.
pub(crate) fn swap(dir: &Path, size: u64) -> anyhow::Result<PathBuf> {
    let img = dir.join("swap.img");
    images::sparse_file(&img, size)?;
    tool(
        "mkswap",
        &[
            "-q",
            "-L",
            "guestswap",
            "-U",
            "0b5e55ed-0000-4000-8000-00000000000a",
        ]
        .iter()
        .map(std::ffi::OsStr::new)
        .chain([img.as_os_str()])
        .collect::<Vec<_>>(),
    )?;
    Ok(img)
}

pub(crate) fn with_volume(
    records: Vec<Record>,
    partition: u32,
    volume: Option<&str>,
) -> Vec<Record> {
    records
        .into_iter()
        .map(|mut r| {
            r.partition = partition;
            r.volume = volume.map(str::to_string);
            r
        })
        .collect()
}

pub(crate) fn write_detections(dir: &Path, d: &[PlantedDetection]) -> anyhow::Result<()> {
    let mut s = String::new();
    for x in d {
        s.push_str(&serde_json::to_string(x)?);
        s.push('\n');
    }
    fs::write(dir.join(DETECTIONS), s)?;
    Ok(())
}

/// A built LVM fixture.
#[derive(Debug, Clone)]
pub struct LvmFixture {
    /// Its directory.
    pub dir: PathBuf,
    /// The disks, in the order they are given to `coldscan`.
    pub disks: Vec<PathBuf>,
}

impl LvmFixture {
    /// The ground truth of all disks together.
    pub fn manifest(&self) -> anyhow::Result<Vec<Record>> {
        manifest::read_jsonl(&self.dir.join(MANIFEST))
    }

    /// What `coldscan scan` must find.
    pub fn detections(&self) -> anyhow::Result<Vec<PlantedDetection>> {
        let text = fs::read_to_string(self.dir.join(DETECTIONS))?;
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| Ok(serde_json::from_str(l)?))
            .collect()
    }

    /// A further file of the fixture.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Ubuntu-style disk: GPT with `/boot` ext4 (partition 1) and an LVM2 PV (partition 2) whose VG
/// `ubuntu-vg` holds `root` (ext4 with the clamav test files and EICAR) and `swap`; the same
/// disk as qcow2 in `disk.qcow2`.
pub fn ubuntu() -> anyhow::Result<LvmFixture> {
    let dir = cache::cached("lvm-ubuntu", &|dir| {
        let mut boot_tree = trees::rich_tree("ubuntu boot");
        let (mut root_tree, malicious) = trees::infected_tree("ubuntu root")?;
        let disk = dir.join("disk.img");
        images::sparse_file(&disk, 200 * MIB)?;
        let placed = images::sfdisk_table(
            &disk,
            "gpt",
            &[
                PartSpec {
                    start: 2048,
                    sectors: 64 * 2048,
                    ptype: "L".into(),
                    logical: false,
                },
                PartSpec {
                    start: 66 * 2048,
                    sectors: 128 * 2048,
                    ptype: "E6D6D379-F507-44C2-A23C-238F2A3DF928".into(),
                    logical: false,
                },
            ],
        )?;
        let boot = ext4(dir, "boot", 64 * MIB, &mut boot_tree)?;
        images::place(&disk, placed[0].start, &boot, placed[0].size)?;
        let pv = dir.join("pv.img");
        images::sparse_file(&pv, placed[1].size)?;
        let layout = {
            let l = LoopDevice::attach(&pv)?;
            lvm("pvcreate", &[&l], &["-q", &l.dev])?;
            lvm("vgcreate", &[&l], &["-q", "ubuntu-vg", &l.dev])?;
            lvm(
                "lvcreate",
                &[&l],
                &["-q", "-an", "-Zn", "-L", "96M", "-n", "root", "ubuntu-vg"],
            )?;
            lvm(
                "lvcreate",
                &[&l],
                &["-q", "-an", "-Zn", "-L", "16M", "-n", "swap", "ubuntu-vg"],
            )?;
            let lay = layout("ubuntu-vg", &[&l])?;
            let files = BTreeMap::from([(l.dev.clone(), (pv.clone(), 0))]);
            let root = ext4(dir, "root", 96 * MIB, &mut root_tree)?;
            write_lv(&lay, "root", &root, &files)?;
            write_lv(&lay, "swap", &swap(dir, 16 * MIB)?, &files)?;
            lay
        };
        let _ = layout;
        images::place(&disk, placed[1].start, &pv, placed[1].size)?;
        let mut records = with_volume(manifest::from_tree(1, "ext4", &boot_tree), 1, None);
        records.extend(with_volume(
            manifest::from_tree(2, "ext4", &root_tree),
            2,
            Some("ubuntu-vg/root"),
        ));
        records.sort();
        manifest::write_jsonl(&dir.join(MANIFEST), &records)?;
        let planted: Vec<PlantedDetection> = malicious
            .into_iter()
            .map(|path| PlantedDetection {
                partition: 2,
                volume: Some("ubuntu-vg/root".into()),
                path,
            })
            .collect();
        write_detections(dir, &planted)?;
        for f in ["boot.ext4", "root.ext4", "swap.img", "pv.img"] {
            fs::remove_file(dir.join(f))?;
        }
        check(
            command("qemu-img")
                .args(["convert", "-f", "raw", "-O", "qcow2"])
                .arg(&disk)
                .arg(dir.join("disk.qcow2")),
        )?;
        Ok(())
    })?;
    Ok(LvmFixture {
        disks: vec![dir.join("disk.img")],
        dir,
    })
}

/// A VG `data` spanning two whole disks: `stripes` striped over both (64 KiB stripes, ext4),
/// `spread` linear but larger than the room left on either disk alone (so it spans both), and
/// `solo` linear on the first disk only. Also both disks as qcow2 (`disk1.qcow2`,
/// `disk2.qcow2`).
pub fn spanning() -> anyhow::Result<LvmFixture> {
    let dir = cache::cached("lvm-spanning", &|dir| {
        let mut trees_: [(&str, Tree); 3] = [
            ("stripes", trees::rich_tree("striped lv")),
            ("spread", trees::rich_tree("spread lv")),
            ("solo", trees::rich_tree("solo lv")),
        ];
        let d1 = dir.join("disk1.img");
        let d2 = dir.join("disk2.img");
        images::sparse_file(&d1, 100 * MIB)?;
        images::sparse_file(&d2, 100 * MIB)?;
        let l1 = LoopDevice::attach(&d1)?;
        let l2 = LoopDevice::attach(&d2)?;
        let devs = [&l1, &l2];
        lvm("pvcreate", &devs, &["-q", &l1.dev, &l2.dev])?;
        lvm("vgcreate", &devs, &["-q", "data", &l1.dev, &l2.dev])?;
        lvm(
            "lvcreate",
            &devs,
            &[
                "-q", "-an", "-Zn", "-i", "2", "-I", "64k", "-L", "64M", "-n", "stripes", "data",
            ],
        )?;
        lvm(
            "lvcreate",
            &devs,
            &[
                "-q", "-an", "-Zn", "-L", "24M", "-n", "solo", "data", &l1.dev,
            ],
        )?;
        lvm(
            "lvcreate",
            &devs,
            &["-q", "-an", "-Zn", "-L", "80M", "-n", "spread", "data"],
        )?;
        let lay = layout("data", &devs)?;
        ensure!(
            lay.0["spread"].len() >= 2,
            "spread LV does not span both disks: {:?}",
            lay.0["spread"]
        );
        let files = BTreeMap::from([
            (l1.dev.clone(), (d1.clone(), 0)),
            (l2.dev.clone(), (d2.clone(), 0)),
        ]);
        let sizes = [
            ("stripes", 64 * MIB),
            ("spread", 80 * MIB),
            ("solo", 24 * MIB),
        ];
        let mut records = Vec::new();
        for ((name, tree), (_, size)) in trees_.iter_mut().zip(sizes) {
            let img = ext4(dir, name, size, tree)?;
            let tree = &*tree;
            write_lv(&lay, name, &img, &files)?;
            fs::remove_file(img)?;
            records.extend(with_volume(
                manifest::from_tree(0, "ext4", tree),
                0,
                Some(&format!("data/{name}")),
            ));
        }
        drop(l1);
        drop(l2);
        records.sort();
        manifest::write_jsonl(&dir.join(MANIFEST), &records)?;
        write_detections(dir, &[])?;
        for (raw, q) in [(&d1, "disk1.qcow2"), (&d2, "disk2.qcow2")] {
            check(
                command("qemu-img")
                    .args(["convert", "-f", "raw", "-O", "qcow2"])
                    .arg(raw)
                    .arg(dir.join(q)),
            )?;
        }
        Ok(())
    })?;
    Ok(LvmFixture {
        disks: vec![dir.join("disk1.img"), dir.join("disk2.img")],
        dir,
    })
}

/// A GPT disk with a clean ext4 partition (1) and a LUKS2 partition (2, label
/// `secret`) made by `cryptsetup luksFormat` on a plain file.
pub fn luks() -> anyhow::Result<LvmFixture> {
    let dir = cache::cached("luks2", &|dir| {
        let mut tree = trees::rich_tree("beside luks");
        let disk = dir.join("disk.img");
        images::sparse_file(&disk, 100 * MIB)?;
        let placed = images::sfdisk_table(
            &disk,
            "gpt",
            &[
                PartSpec {
                    start: 2048,
                    sectors: 40 * 2048,
                    ptype: "L".into(),
                    logical: false,
                },
                PartSpec {
                    start: 42 * 2048,
                    sectors: 40 * 2048,
                    ptype: "CA7D7CCB-63ED-4C53-861C-1742536059CC".into(),
                    logical: false,
                },
            ],
        )?;
        let fs_img = ext4(dir, "plain", 40 * MIB, &mut tree)?;
        images::place(&disk, placed[0].start, &fs_img, placed[0].size)?;
        let part = dir.join("luks.img");
        images::sparse_file(&part, placed[1].size)?;
        let key = dir.join("key");
        fs::write(&key, b"coldscan fixture key, not a secret")?;
        check(
            command("cryptsetup")
                .args([
                    "luksFormat",
                    "-q",
                    "--type",
                    "luks2",
                    "--pbkdf",
                    "pbkdf2",
                    "--pbkdf-force-iterations",
                    "1000",
                    "--label",
                    "secret",
                    "--uuid",
                    "0b5e55ed-1c5e-4000-8000-000000000002",
                    "--key-file",
                ])
                .arg(&key)
                .arg(&part),
        )?;
        images::place(&disk, placed[1].start, &part, placed[1].size)?;
        fs::remove_file(&part)?;
        fs::remove_file(&fs_img)?;
        let records = manifest::from_tree(1, "ext4", &tree);
        manifest::write_jsonl(&dir.join(MANIFEST), &records)?;
        write_detections(dir, &[])?;
        Ok(())
    })?;
    Ok(LvmFixture {
        disks: vec![dir.join("disk.img")],
        dir,
    })
}

/// Fails with a clear message when `what` is not an LVM fixture disk.
pub fn disk_str(p: &Path) -> anyhow::Result<String> {
    if !p.exists() {
        bail!("{} does not exist", p.display());
    }
    Ok(p.display().to_string())
}
