//! The fixture catalogue: every guest disk the end-to-end tests use, how each is built, and
//! what `coldscan` must say about it (ground-truth manifest, expected exit code and problems).

use std::path::PathBuf;

use anyhow::{ensure, Context};
use serde::{Deserialize, Serialize};

use crate::cache;
use crate::content::Content;
use crate::images::{self, ExtOptions, PartSpec, Placed};
use crate::layers;
use crate::manifest::{self, Record};
use crate::tree::{Flavour, Node, Tree};
use crate::trees::{self, MIB};

/// File name of the disk image inside a fixture directory.
pub const DISK_FILE: &str = "disk.img";
/// File name of the ground-truth manifest inside a fixture directory.
pub const MANIFEST_FILE: &str = "manifest.jsonl";
/// File name of the fixture description inside a fixture directory.
pub const META_FILE: &str = "fixture.json";
/// File name of the expected detections inside a fixture directory (JSON lines of
/// [`ExpectedDetection`]; empty for fixtures without planted test malware).
pub const DETECTIONS_FILE: &str = "detections.jsonl";

/// A planted file or stream that `coldscan scan` with the test database
/// ([`crate::testdb::write_test_db`]) must report, and nothing else.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ExpectedDetection {
    /// Partition index (0 for a whole-disk filesystem).
    pub partition: u32,
    /// Path as `coldscan` reports it (`path:stream` for a named stream).
    pub path: String,
    /// Stream name for named streams.
    pub stream: Option<String>,
}

/// One volume of a fixture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMeta {
    /// Partition index (0 for a whole-disk filesystem).
    pub partition: u32,
    /// Filesystem kind as `coldscan` names it.
    pub fs: String,
    /// Byte offset on the disk.
    pub start: u64,
    /// Byte length.
    pub size: u64,
    /// Whether the manifest holds this volume's content and `coldscan ls` must match it. False
    /// for volumes a malformed fixture destroys on purpose.
    pub listed: bool,
    /// Whether The Sleuth Kit reads this volume (compare with `fls`/`icat`).
    pub tsk: bool,
    /// Manifest paths TSK cannot see (planted only in a journal that TSK does not replay).
    pub tsk_hidden: Vec<String>,
    /// Paths `coldscan` may list or not (a directory entry that closes a loop, the record a
    /// malformed fixture breaks), beyond the manifest.
    pub optional: Vec<String>,
}

/// What `coldscan ls`/`info` must do on a fixture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expectation {
    /// Exit code of `ls` and `info`.
    pub exit_code: i32,
    /// Strings stderr must contain (case-insensitive): the object and where. `a|b` accepts
    /// either.
    pub stderr: Vec<String>,
}

/// Description of a built fixture (`fixture.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixtureMeta {
    /// Fixture name.
    pub name: String,
    /// What it is and what it tests.
    pub description: String,
    /// Logical sector size of the disk.
    pub sector_size: u32,
    /// `gpt`, `mbr` or `none`.
    pub scheme: String,
    /// Volumes.
    pub volumes: Vec<VolumeMeta>,
    /// Expected outcome.
    pub expect: Expectation,
}

/// A built fixture on disk.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// Its directory.
    pub dir: PathBuf,
    /// Its description.
    pub meta: FixtureMeta,
}

impl Fixture {
    /// The disk image.
    pub fn disk(&self) -> PathBuf {
        self.dir.join(DISK_FILE)
    }

    /// The ground-truth manifest.
    pub fn manifest(&self) -> anyhow::Result<Vec<Record>> {
        manifest::read_jsonl(&self.dir.join(MANIFEST_FILE))
    }

    /// What a scan with the test database must report (empty for clean fixtures).
    pub fn expected_detections(&self) -> anyhow::Result<Vec<ExpectedDetection>> {
        let path = self.dir.join(DETECTIONS_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("{}: {l}", path.display())))
            .collect()
    }

    /// A further ground-truth manifest of the fixture (`manifest-NAME.jsonl`): for the chain
    /// fixtures, what one lower layer alone (`NAME` is its file) or an internal snapshot
    /// (`snapshot-NAME`) holds.
    pub fn other_manifest(&self, name: &str) -> anyhow::Result<Vec<Record>> {
        manifest::read_jsonl(&self.dir.join(format!("manifest-{name}.jsonl")))
    }

    /// The manifest entries of one volume.
    pub fn volume_manifest(&self, partition: u32) -> anyhow::Result<Vec<Record>> {
        Ok(self
            .manifest()?
            .into_iter()
            .filter(|r| r.partition == partition)
            .collect())
    }
}

/// A catalogue entry.
#[derive(Debug, Clone, Copy)]
pub struct FixtureDef {
    /// Name (directory name under `target/fixtures`).
    pub name: &'static str,
    /// Whether the fixture is broken on purpose.
    pub malformed: bool,
    /// Whether it needs the NTFS populator (libntfs-3g).
    pub needs_ntfs: bool,
    build: fn(&mut Builder) -> anyhow::Result<Outline>,
}

/// Every fixture.
pub const FIXTURES: &[FixtureDef] = &[
    FixtureDef {
        name: "gpt-mixed",
        malformed: false,
        needs_ntfs: true,
        build: gpt_mixed,
    },
    FixtureDef {
        name: "mbr-logical",
        malformed: false,
        needs_ntfs: true,
        build: mbr_logical,
    },
    FixtureDef {
        name: "ext4-whole",
        malformed: false,
        needs_ntfs: false,
        build: ext4_whole,
    },
    FixtureDef {
        name: "gpt-4k",
        malformed: false,
        needs_ntfs: true,
        build: gpt_4k,
    },
    FixtureDef {
        name: "ext4-dirty-journal-csum",
        malformed: false,
        needs_ntfs: false,
        build: dirty_journal_csum,
    },
    FixtureDef {
        name: "ext4-dirty-journal-plain",
        malformed: false,
        needs_ntfs: false,
        build: dirty_journal_plain,
    },
    FixtureDef {
        name: "ext3-sparse",
        malformed: false,
        needs_ntfs: false,
        build: ext3_sparse,
    },
    FixtureDef {
        name: "xfs-whole",
        malformed: false,
        needs_ntfs: false,
        build: xfs_whole,
    },
    FixtureDef {
        name: "xfs-4k-sectors",
        malformed: false,
        needs_ntfs: false,
        build: xfs_4k_sectors,
    },
    FixtureDef {
        name: "xfs-crash",
        malformed: false,
        needs_ntfs: false,
        build: xfs_crash,
    },
    FixtureDef {
        name: "xfs-crash-small-log",
        malformed: false,
        needs_ntfs: false,
        build: xfs_crash_small_log,
    },
    FixtureDef {
        name: "btrfs-crash",
        malformed: false,
        needs_ntfs: false,
        build: btrfs_crash,
    },
    FixtureDef {
        name: "ext4-crash",
        malformed: false,
        needs_ntfs: false,
        build: ext4_crash,
    },
    FixtureDef {
        name: "btrfs-subvolumes",
        malformed: false,
        needs_ntfs: false,
        build: btrfs_subvolumes,
    },
    FixtureDef {
        name: "btrfs-subvolumes-qcow2",
        malformed: false,
        needs_ntfs: false,
        build: |b| converted_from(b, "btrfs-subvolumes", "qcow2", &["-O", "qcow2"]),
    },
    FixtureDef {
        name: "truncated",
        malformed: true,
        needs_ntfs: false,
        build: truncated,
    },
    FixtureDef {
        name: "zeroed-superblock",
        malformed: true,
        needs_ntfs: false,
        build: zeroed_superblock,
    },
    FixtureDef {
        name: "gpt-corrupt-primary",
        malformed: true,
        needs_ntfs: false,
        build: gpt_corrupt_primary,
    },
    FixtureDef {
        name: "partition-past-end",
        malformed: true,
        needs_ntfs: false,
        build: partition_past_end,
    },
    FixtureDef {
        name: "gpt-partition-past-end",
        malformed: true,
        needs_ntfs: false,
        build: gpt_partition_past_end,
    },
    FixtureDef {
        name: "mbr-ext-loop",
        malformed: true,
        needs_ntfs: false,
        build: mbr_ext_loop,
    },
    FixtureDef {
        name: "ext4-dir-loop",
        malformed: true,
        needs_ntfs: false,
        build: ext4_dir_loop,
    },
    FixtureDef {
        name: "ntfs-attr-overrun",
        malformed: true,
        needs_ntfs: true,
        build: ntfs_attr_overrun,
    },
    FixtureDef {
        name: "gpt-infected",
        malformed: false,
        needs_ntfs: true,
        build: gpt_infected,
    },
    FixtureDef {
        name: "gpt-infected-zeroed",
        malformed: true,
        needs_ntfs: true,
        build: gpt_infected_zeroed,
    },
    FixtureDef {
        name: "ntfs-wof",
        malformed: false,
        needs_ntfs: true,
        build: ntfs_wof,
    },
    FixtureDef {
        name: "mbr-logical-qcow2",
        malformed: false,
        needs_ntfs: true,
        build: |b| converted(b, "qcow2", &["-O", "qcow2"]),
    },
    FixtureDef {
        name: "mbr-logical-qcow2-zstd",
        malformed: false,
        needs_ntfs: true,
        build: |b| {
            converted(
                b,
                "qcow2 (compressed clusters, zstd)",
                &["-c", "-O", "qcow2", "-o", "compression_type=zstd"],
            )
        },
    },
    FixtureDef {
        name: "mbr-logical-vmdk",
        malformed: false,
        needs_ntfs: true,
        build: |b| {
            converted(
                b,
                "VMDK monolithicSparse",
                &["-O", "vmdk", "-o", "subformat=monolithicSparse"],
            )
        },
    },
    FixtureDef {
        name: "mbr-logical-vmdk-stream",
        malformed: false,
        needs_ntfs: true,
        build: |b| {
            converted(
                b,
                "VMDK streamOptimized",
                &["-O", "vmdk", "-o", "subformat=streamOptimized"],
            )
        },
    },
    FixtureDef {
        name: "mbr-logical-vhdx",
        malformed: false,
        needs_ntfs: true,
        build: |b| converted(b, "VHDX (dynamic)", &["-O", "vhdx"]),
    },
    FixtureDef {
        name: "mbr-logical-vhd",
        malformed: false,
        needs_ntfs: true,
        build: |b| {
            converted(
                b,
                "VHD (dynamic)",
                &["-O", "vpc", "-o", "subformat=dynamic,force_size=on"],
            )
        },
    },
    FixtureDef {
        name: "chain-qcow2",
        malformed: false,
        needs_ntfs: false,
        build: chain_qcow2,
    },
    FixtureDef {
        name: "chain-qcow2-compressed",
        malformed: false,
        needs_ntfs: false,
        build: chain_qcow2_compressed,
    },
    FixtureDef {
        name: "chain-vmdk",
        malformed: false,
        needs_ntfs: false,
        build: chain_vmdk,
    },
    FixtureDef {
        name: "snapshot-qcow2",
        malformed: false,
        needs_ntfs: false,
        build: snapshot_qcow2,
    },
];

/// The raw fixture the disk-format fixtures are converted from.
const CONVERTED_BASE: &str = "mbr-logical";

/// The `mbr-logical` disk converted with `qemu-img convert ARGS` into another image format:
/// same volumes, same manifest, reached through the format's layer. TSK reads the raw form
/// (`qemu-img convert -O raw`): its own image-format support depends on how it was built.
fn converted(b: &mut Builder, format: &'static str, args: &[&str]) -> anyhow::Result<Outline> {
    converted_from(b, CONVERTED_BASE, format, args)
}

/// The fixture `base` converted with `qemu-img convert ARGS`: same manifest and detections.
fn converted_from(
    b: &mut Builder,
    base: &str,
    format: &'static str,
    args: &[&str],
) -> anyhow::Result<Outline> {
    let base = fixture(base)?;
    crate::tools::check(
        crate::tools::command("qemu-img")
            .arg("convert")
            .args(args)
            .arg(base.disk())
            .arg(b.disk()),
    )?;
    b.records = base.manifest()?;
    // TSK compares against the raw form (`checks::tsk_view`), so the base's TSK flags hold.
    b.volumes = base.meta.volumes.clone();
    b.detections = base.expected_detections()?;
    let description = format!("{} converted to {format} with qemu-img", base.meta.name);
    let scheme = match base.meta.scheme.as_str() {
        "gpt" => "gpt",
        "mbr" => "mbr",
        _ => "none",
    };
    Ok(Outline::ok(&description, base.meta.sector_size, scheme))
}

/// Looks a fixture up by name.
pub fn def(name: &str) -> anyhow::Result<&'static FixtureDef> {
    FIXTURES.iter().find(|d| d.name == name).with_context(|| {
        let names: Vec<_> = FIXTURES.iter().map(|d| d.name).collect();
        format!("no fixture {name:?}; known: {}", names.join(", "))
    })
}

/// Returns the fixture `name`, building it first unless it is cached.
pub fn fixture(name: &str) -> anyhow::Result<Fixture> {
    let d = def(name)?;
    let dir = cache::cached(name, &|tmp| {
        let mut b = Builder {
            dir: tmp.to_path_buf(),
            volumes: Vec::new(),
            records: Vec::new(),
            detections: Vec::new(),
        };
        let outline = (d.build)(&mut b)?;
        let meta = FixtureMeta {
            name: name.to_string(),
            description: outline.description.to_string(),
            sector_size: outline.sector_size,
            scheme: outline.scheme.to_string(),
            volumes: b.volumes,
            expect: outline.expect,
        };
        std::fs::write(tmp.join(META_FILE), serde_json::to_vec_pretty(&meta)?)?;
        b.records.sort();
        manifest::write_jsonl(&tmp.join(MANIFEST_FILE), &b.records)?;
        b.detections.sort();
        let mut lines = String::new();
        for d in &b.detections {
            lines.push_str(&serde_json::to_string(d)?);
            lines.push('\n');
        }
        std::fs::write(tmp.join(DETECTIONS_FILE), lines)?;
        Ok(())
    })?;
    let meta: FixtureMeta =
        serde_json::from_slice(&std::fs::read(dir.join(META_FILE))?).context("fixture.json")?;
    Ok(Fixture { dir, meta })
}

/// What a build function says about the fixture it built.
#[derive(Debug)]
pub struct Outline {
    description: String,
    sector_size: u32,
    scheme: &'static str,
    expect: Expectation,
}

impl Outline {
    fn ok(description: &str, sector_size: u32, scheme: &'static str) -> Outline {
        Outline {
            description: description.to_string(),
            sector_size,
            scheme,
            expect: Expectation {
                exit_code: 0,
                stderr: Vec::new(),
            },
        }
    }

    fn broken(
        description: &str,
        sector_size: u32,
        scheme: &'static str,
        stderr: &[&str],
    ) -> Outline {
        Outline {
            description: description.to_string(),
            sector_size,
            scheme,
            expect: Expectation {
                exit_code: 2,
                stderr: stderr.iter().map(|s| s.to_string()).collect(),
            },
        }
    }
}

/// State of one fixture build: its directory, volumes and manifest so far.
#[derive(Debug)]
pub struct Builder {
    dir: PathBuf,
    volumes: Vec<VolumeMeta>,
    records: Vec<Record>,
    detections: Vec<ExpectedDetection>,
}

/// A filesystem to make.
#[derive(Debug, Clone)]
enum FsSpec {
    Ext(ExtOptions),
    Fat { bits: u32, sector: u32 },
    Ntfs { sector: u32 },
    Xfs(crate::xfs::XfsOptions),
}

impl FsSpec {
    fn flavour(&self) -> Flavour {
        match self {
            FsSpec::Ext(_) => Flavour::Ext,
            FsSpec::Fat { .. } => Flavour::Fat,
            FsSpec::Ntfs { .. } => Flavour::Ntfs,
            FsSpec::Xfs(_) => Flavour::Ext,
        }
    }

    /// The kind `coldscan` reports: ext4 if extents are on, ext3 with a journal, else ext2.
    fn kind(&self) -> String {
        match self {
            FsSpec::Ext(o) => o.fs_type.to_string(),
            FsSpec::Fat { bits, .. } => format!("fat{bits}"),
            FsSpec::Ntfs { .. } => "ntfs".to_string(),
            FsSpec::Xfs(_) => "xfs".to_string(),
        }
    }

    fn ext4() -> FsSpec {
        FsSpec::Ext(ExtOptions::ext4())
    }
}

impl Builder {
    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn disk(&self) -> PathBuf {
        self.path(DISK_FILE)
    }

    /// Makes a filesystem image of `size` bytes holding what `fs` can hold of `tree`, records
    /// its manifest for `partition`, and returns the image path and the planted tree.
    fn filesystem(
        &mut self,
        partition: u32,
        size: u64,
        fs: &FsSpec,
        tree: &Tree,
    ) -> anyhow::Result<(PathBuf, Tree)> {
        let mut tree = tree.for_flavour(fs.flavour());
        let img = self.path(&format!("part{partition}.img"));
        match fs {
            FsSpec::Ext(o) => {
                images::ext_image(&img, size, &tree, o)?;
                // mke2fs creates it; it is a directory like any other.
                tree.dir("/lost+found");
            }
            FsSpec::Fat { bits, sector } => images::fat_image(&img, size, *bits, *sector, &tree)?,
            FsSpec::Ntfs { sector } => crate::ntfs::ntfs_image(&img, size, *sector, &tree)?,
            FsSpec::Xfs(o) => crate::xfs::xfs_image(&img, size, &tree, *o)?,
        }
        Ok((img, tree))
    }

    /// Records a volume and (if `listed`) its manifest.
    fn volume(
        &mut self,
        partition: u32,
        fs: &FsSpec,
        at: (u64, u64),
        tree: &Tree,
        listed: bool,
    ) -> &mut VolumeMeta {
        if listed {
            self.records
                .extend(manifest::from_tree(partition, &fs.kind(), tree));
        }
        self.volumes.push(VolumeMeta {
            partition,
            fs: fs.kind(),
            start: at.0,
            size: at.1,
            listed,
            tsk: true,
            tsk_hidden: Vec::new(),
            optional: Vec::new(),
        });
        self.volumes.last_mut().expect("just pushed")
    }

    /// A whole-disk filesystem.
    fn whole_disk(&mut self, size: u64, fs: &FsSpec, tree: &Tree) -> anyhow::Result<Tree> {
        let (img, planted) = self.filesystem(0, size, fs, tree)?;
        std::fs::rename(img, self.disk())?;
        self.volume(0, fs, (0, size), &planted, true);
        Ok(planted)
    }

    /// A partitioned disk: makes every filesystem, the table, and places the images. Parts
    /// are `(spec, filesystem, tree)`; returns where they went.
    fn partitioned(
        &mut self,
        label: &str,
        disk_size: u64,
        parts: &[(PartSpec, FsSpec, Tree)],
    ) -> anyhow::Result<Vec<(Placed, Tree)>> {
        let disk = self.disk();
        images::sparse_file(&disk, disk_size)?;
        let specs: Vec<PartSpec> = parts.iter().map(|p| p.0.clone()).collect();
        let placed = match label {
            "gpt-4k" => images::gpt_4k_table(&disk, &specs)?,
            l => images::sfdisk_table(&disk, l, &specs)?,
        };
        ensure!(
            placed.len() == parts.len(),
            "{} partitions made, {} asked",
            placed.len(),
            parts.len()
        );
        let mut out = Vec::new();
        for ((spec, fs, tree), pl) in parts.iter().zip(&placed) {
            let sector = if label == "gpt-4k" { 4096 } else { 512 };
            ensure!(
                pl.start == spec.start * sector,
                "partition {} placed at {} not {}",
                pl.index,
                pl.start,
                spec.start * sector
            );
            let (img, planted) = self.filesystem(pl.index, pl.size, fs, tree)?;
            images::place(&disk, pl.start, &img, pl.size)?;
            std::fs::remove_file(&img)?;
            self.volume(pl.index, fs, (pl.start, pl.size), &planted, true);
            out.push((*pl, planted));
        }
        Ok(out)
    }

    fn unlist(&mut self, partition: u32) {
        self.records.retain(|r| r.partition != partition);
        self.detections.retain(|d| d.partition != partition);
        for v in &mut self.volumes {
            if v.partition == partition {
                v.listed = false;
            }
        }
    }

    fn volume_mut(&mut self, partition: u32) -> &mut VolumeMeta {
        self.volumes
            .iter_mut()
            .find(|v| v.partition == partition)
            .expect("volume exists")
    }
}

/// Sectors per MiB at 512 bytes.
const MIB_S: u64 = 2048;

fn part(start_mib: u64, size_mib: u64, ptype: &str) -> PartSpec {
    PartSpec {
        start: start_mib * MIB_S,
        sectors: size_mib * MIB_S,
        ptype: ptype.to_string(),
        logical: false,
    }
}

fn logical(start_mib: u64, size_mib: u64, ptype: &str) -> PartSpec {
    PartSpec {
        logical: true,
        ..part(start_mib, size_mib, ptype)
    }
}

const GPT_BASIC_DATA: &str = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7";

fn gpt_mixed(b: &mut Builder) -> anyhow::Result<Outline> {
    let mut ntfs = trees::rich_tree("gpt-mixed-ntfs");
    trees::add_ntfs_parts(&mut ntfs);
    trees::add_big_file(&mut ntfs, "/big/random-101m.bin");
    // Deep nesting and a large directory on every filesystem kind: a multi-level NTFS index
    // (B+ tree of INDX blocks), a FAT directory of many clusters of long-name entries (mcopy
    // is quadratic in the directory size: 2,000 files take minutes).
    trees::add_deep_nesting(&mut ntfs, 55);
    trees::add_many_files(&mut ntfs, 10_000);
    let mut ext4 = trees::rich_tree("gpt-mixed-ext4");
    trees::add_deep_nesting(&mut ext4, 55);
    let mut fat = trees::rich_tree("gpt-mixed-fat32");
    trees::add_deep_nesting(&mut fat, 55);
    trees::add_many_files(&mut fat, 400);
    b.partitioned(
        "gpt",
        310 * MIB,
        &[
            (part(1, 48, "L"), FsSpec::ext4(), ext4),
            (
                part(49, 192, GPT_BASIC_DATA),
                FsSpec::Ntfs { sector: 512 },
                ntfs,
            ),
            (
                part(241, 64, "U"),
                FsSpec::Fat {
                    bits: 32,
                    sector: 512,
                },
                fat,
            ),
        ],
    )?;
    Ok(Outline::ok("GPT disk with ext4, NTFS (streams, compressed folder, 101 MiB file) and FAT32 (EFI system) partitions", 512, "gpt"))
}

fn mbr_logical(b: &mut Builder) -> anyhow::Result<Outline> {
    let mut ntfs = trees::rich_tree("mbr-ntfs");
    trees::add_ntfs_parts(&mut ntfs);
    b.partitioned(
        "dos",
        124 * MIB,
        &[
            (
                part(1, 32, "83"),
                FsSpec::ext4(),
                trees::rich_tree("mbr-ext4"),
            ),
            (
                part(33, 32, "6"),
                FsSpec::Fat {
                    bits: 16,
                    sector: 512,
                },
                trees::rich_tree("mbr-fat16"),
            ),
            (
                logical(66, 24, "83"),
                FsSpec::Ext(ExtOptions {
                    fs_type: "ext2",
                    block_size: 1024,
                    extra: vec![],
                }),
                trees::rich_tree("mbr-ext2"),
            ),
            (logical(91, 32, "7"), FsSpec::Ntfs { sector: 512 }, ntfs),
        ],
    )?;
    Ok(Outline::ok(
        "MBR disk: ext4 and FAT16 primaries, an extended partition holding ext2 and NTFS logicals",
        512,
        "mbr",
    ))
}

fn ext4_whole(b: &mut Builder) -> anyhow::Result<Outline> {
    let mut t = trees::rich_tree("ext4-whole");
    trees::add_deep_nesting(&mut t, 60);
    trees::add_many_files(&mut t, 10_000);
    trees::add_big_file(&mut t, "/big/random-101m.bin");
    let opts = ExtOptions {
        extra: vec!["-N".into(), "16384".into()],
        ..ExtOptions::ext4()
    };
    b.whole_disk(320 * MIB, &FsSpec::Ext(opts), &t)?;
    Ok(Outline::ok(
        "whole-disk ext4: 60-deep nesting, a directory of 10,000 files, a 101 MiB file",
        512,
        "none",
    ))
}

fn xfs_whole(b: &mut Builder) -> anyhow::Result<Outline> {
    let mut t = trees::rich_tree("xfs-whole");
    trees::add_deep_nesting(&mut t, 60);
    trees::add_many_files(&mut t, 10_000);
    trees::add_fragmented(&mut t, "/fragmented/every-other-block.img", 3000);
    let opts = crate::xfs::XfsOptions {
        crc: true,
        sector: 512,
    };
    b.whole_disk(320 * MIB, &FsSpec::Xfs(opts), &t)?;
    Ok(Outline::ok(
        "whole-disk XFS v5: 60-deep nesting, a directory of 10,000 files (node directory), a file of 3,000 extents (btree extent map)",
        512,
        "none",
    ))
}

fn xfs_4k_sectors(b: &mut Builder) -> anyhow::Result<Outline> {
    let mut t = trees::rich_tree("xfs-4k-sectors");
    trees::add_many_files(&mut t, 1000);
    trees::add_fragmented(&mut t, "/fragmented/every-other-block.img", 400);
    // v4 (crc=0) cannot be written here: this kernel refuses to mount it; the scanner's unit
    // tests cover v4 with mkfs.xfs -p.
    let opts = crate::xfs::XfsOptions {
        crc: true,
        sector: 4096,
    };
    b.whole_disk(320 * MIB, &FsSpec::Xfs(opts), &t)?;
    Ok(Outline::ok(
        "whole-disk XFS v5 with 4096-byte sectors: node directory, btree extent map",
        512,
        "none",
    ))
}

fn xfs_crash(b: &mut Builder) -> anyhow::Result<Outline> {
    xfs_crash_common(b, "xfs-crash", 512, None)?;
    Ok(Outline::ok(
        "whole-disk XFS v5 copied while a writer runs (dirty log; EICAR fsync'ed just before the copy); the manifest is the kernel's view after recovery",
        512,
        "none",
    ))
}

fn xfs_crash_small_log(b: &mut Builder) -> anyhow::Result<Outline> {
    xfs_crash_common(b, "xfs-crash-small-log", 4096, Some("5m"))?;
    Ok(Outline::ok(
        "whole-disk XFS v5, 4096-byte sectors and a 5 MiB log that wraps, copied while a writer runs; the manifest is the kernel's view after recovery",
        512,
        "none",
    ))
}

/// A crash-consistent XFS image ([`crate::crash`]): the manifest is what the kernel lists after
/// replaying its log, and the fsync'ed EICAR planted just before the copy must be detected.
fn xfs_crash_common(
    b: &mut Builder,
    tag: &str,
    sector: u32,
    log: Option<&str>,
) -> anyhow::Result<()> {
    let opts = crate::xfs::XfsOptions { crc: true, sector };
    crash_common(
        b,
        tag,
        crate::crash::CrashFs::Xfs {
            opts,
            log_size: log,
        },
    )
}

/// A crash-consistent image of `fs` ([`crate::crash`]) as a whole disk: the manifest is the
/// kernel's view after recovery, and the EICAR fsync'ed just before the copy is detected.
fn crash_common(b: &mut Builder, tag: &str, fs: crate::crash::CrashFs) -> anyhow::Result<()> {
    let seed = trees::rich_tree(tag).for_flavour(Flavour::Ext);
    let size = 320 * MIB;
    let disk = b.disk();
    let eicar = crate::testdb::eicar();
    let spec = crate::crash::CrashSpec {
        size,
        fs,
        planted_path: "/planted/eicar.com",
        planted: &eicar,
    };
    let c = crate::crash::crash_image(&b.dir, &disk, &seed, &spec)?;
    b.records.extend(c.records);
    b.volumes.push(VolumeMeta {
        partition: 0,
        fs: fs.kind().into(),
        start: 0,
        size,
        listed: true,
        tsk: false,
        tsk_hidden: Vec::new(),
        optional: Vec::new(),
    });
    b.detections.push(ExpectedDetection {
        partition: 0,
        path: c.planted,
        stream: None,
    });
    Ok(())
}

fn btrfs_crash(b: &mut Builder) -> anyhow::Result<Outline> {
    crash_common(b, "btrfs-crash", crate::crash::CrashFs::Btrfs)?;
    Ok(Outline::ok(
        "whole-disk Btrfs copied while a writer runs (a tree log to replay; EICAR fsync'ed just before the copy); the manifest is the kernel's view after recovery",
        512,
        "none",
    ))
}

fn ext4_crash(b: &mut Builder) -> anyhow::Result<Outline> {
    crash_common(b, "ext4-crash", crate::crash::CrashFs::Ext4)?;
    Ok(Outline::ok(
        "whole-disk ext4 copied while a writer runs (journal needs recovery; EICAR fsync'ed just before the copy); the manifest is the kernel's view after recovery",
        512,
        "none",
    ))
}

/// Btrfs with subvolumes, a snapshot and compressed files ([`crate::btrfs`]): the manifest is
/// the kernel's view; the EICAR in a subvolume is found there and in its snapshot.
fn btrfs_subvolumes(b: &mut Builder) -> anyhow::Result<Outline> {
    let mut seed = trees::rich_tree("btrfs-subvolumes").for_flavour(Flavour::Ext);
    // 10,000 entries: the directory's DIR_ITEM and DIR_INDEX items span many leaves.
    trees::add_many_files(&mut seed, 10_000);
    let size = 320 * MIB;
    let disk = b.disk();
    let built = crate::btrfs::btrfs_image(&b.dir, &disk, size, &seed)?;
    b.records.extend(built.records);
    b.volumes.push(VolumeMeta {
        partition: 0,
        fs: "btrfs".into(),
        start: 0,
        size,
        listed: true,
        tsk: false,
        tsk_hidden: Vec::new(),
        optional: Vec::new(),
    });
    for path in built.detections {
        b.detections.push(ExpectedDetection {
            partition: 0,
            path,
            stream: None,
        });
    }
    Ok(Outline::ok(
        "whole-disk Btrfs: the rich tree and a directory of 10,000 files at the top level, subvolumes home and data, a snapshot of home taken before home changed, zstd- and zlib-compressed files (inline and regular extents)",
        512,
        "none",
    ))
}

fn gpt_4k(b: &mut Builder) -> anyhow::Result<Outline> {
    let mut ntfs = trees::rich_tree("gpt-4k-ntfs");
    trees::add_ntfs_parts(&mut ntfs);
    // In 4096-byte sectors: 1 MiB = 256 sectors.
    let p = |start_mib: u64, size_mib: u64, t: &str| PartSpec {
        start: start_mib * 256,
        sectors: size_mib * 256,
        ptype: t.to_string(),
        logical: false,
    };
    b.partitioned(
        "gpt-4k",
        370 * MIB,
        &[
            (
                p(1, 32, "20"),
                FsSpec::ext4(),
                trees::rich_tree("gpt-4k-ext4"),
            ),
            // FAT32 with 4 KiB sectors needs 65,525 clusters of at least one sector: 300 MiB.
            (
                p(33, 300, "1"),
                FsSpec::Fat {
                    bits: 32,
                    sector: 4096,
                },
                trees::rich_tree("gpt-4k-fat32"),
            ),
            (p(333, 32, "11"), FsSpec::Ntfs { sector: 4096 }, ntfs),
        ],
    )?;
    Ok(Outline::ok("GPT disk with 4096-byte logical sectors: ext4, FAT32 (4 KiB sectors), NTFS (4 KiB sectors)", 4096, "gpt"))
}

fn ext3_sparse(b: &mut Builder) -> anyhow::Result<Outline> {
    let mut t = trees::rich_tree("ext3-sparse");
    let run = |p: &str, len| crate::content::Content::Random {
        seed: crate::content::seed_of(p),
        len,
    };
    // With 1 KiB blocks, direct blocks cover 12 KiB, the indirect block 256 KiB more, the
    // double-indirect 64 MiB more: data past ~64.3 MiB needs the triple-indirect block.
    t.add(
        "/sparse/triple-indirect.img",
        Node::Sparse {
            size: 80 * MIB,
            runs: vec![
                (0, run("t0", 3000)),
                (100 * 1024, run("t1", 2048)),
                (5 * MIB, run("t2", 10_000)),
                (70 * MIB + 7, run("t3", 50_000)),
            ],
        },
    );
    t.add(
        "/sparse/only-end.img",
        Node::Sparse {
            size: 30 * MIB,
            runs: vec![(30 * MIB - 1000, run("e", 1000))],
        },
    );
    t.add(
        "/sparse/gap-in-indirect.img",
        Node::Sparse {
            size: 600 * 1024,
            runs: vec![(11 * 1024, run("g0", 3000)), (400 * 1024, run("g1", 1))],
        },
    );
    let opts = ExtOptions {
        fs_type: "ext3",
        block_size: 1024,
        extra: vec![],
    };
    b.whole_disk(128 * MIB, &FsSpec::Ext(opts), &t)?;
    Ok(Outline::ok("whole-disk ext3 (no extents, 1 KiB blocks): sparse files with holes through indirect, double- and triple-indirect blocks", 512, "none"))
}

/// Builds an ext4 whole disk whose last transaction (a new directory and file) is only in the
/// journal: the manifest is the state after replay.
fn dirty_journal(b: &mut Builder, csum: bool) -> anyhow::Result<Outline> {
    let tag = if csum {
        "journal-csum"
    } else {
        "journal-plain"
    };
    let t = trees::rich_tree(tag);
    let extra: Vec<String> = if csum {
        vec![]
    } else {
        vec!["-O".into(), "^metadata_csum".into()]
    };
    let fs = FsSpec::Ext(ExtOptions {
        extra,
        ..ExtOptions::ext4()
    });
    let mut t = b.whole_disk(64 * MIB, &fs, &t)?;
    let disk = b.disk();
    let after = b.path("after.img");
    std::fs::copy(&disk, &after)?;
    let data = crate::content::Content::Random {
        seed: 4242,
        len: 20_000,
    };
    let data_file = b.path("journaled.bin");
    std::fs::write(&data_file, data.to_vec())?;
    crate::journal::debugfs(
        &after,
        &format!(
            "mkdir /journaled
write {} /journaled/only-in-journal.bin
",
            data_file.display()
        ),
    )?;
    crate::journal::journal_difference(&disk, &after, 4096, csum, &b.path("blocks.dat"))?;
    crate::journal::check_replay(
        &disk,
        "/journaled/only-in-journal.bin",
        &data.to_vec(),
        &b.path("replayed.img"),
    )?;
    for f in ["after.img", "journaled.bin", "blocks.dat"] {
        std::fs::remove_file(b.path(f))?;
    }
    t.dir("/journaled");
    t.add("/journaled/only-in-journal.bin", Node::File(data));
    b.records.clear();
    b.volumes.clear();
    let v = b.volume(0, &fs, (0, 64 * MIB), &t, true);
    v.tsk_hidden = vec!["/journaled".into(), "/journaled/only-in-journal.bin".into()];
    Ok(Outline::ok(
        if csum {
            "whole-disk ext4 (metadata_csum, journal csum v3) with a committed transaction not yet replayed"
        } else {
            "whole-disk ext4 without metadata_csum, plain journal (no checksums) with a committed transaction not yet replayed"
        },
        512,
        "none",
    ))
}

fn dirty_journal_csum(b: &mut Builder) -> anyhow::Result<Outline> {
    dirty_journal(b, true)
}

fn dirty_journal_plain(b: &mut Builder) -> anyhow::Result<Outline> {
    dirty_journal(b, false)
}

/// A small tree for the malformed fixtures (their point is the breakage).
fn small_tree(tag: &str) -> Tree {
    let mut t = Tree::new();
    t.file(
        "/volume-tag.txt",
        format!(
            "coldscan fixture volume {tag}
"
        )
        .as_bytes(),
    );
    t.file(
        "/a/b/c.txt",
        b"nested
",
    );
    t.random_file(&format!("/data/{tag}.bin"), 70_000);
    t.file("/docs/empty.txt", b"");
    t.file(
        "/docs/日本語のファイル名.txt",
        "こんにちは
"
        .as_bytes(),
    );
    t
}

fn truncated(b: &mut Builder) -> anyhow::Result<Outline> {
    let placed = b.partitioned(
        "gpt",
        80 * MIB,
        &[
            (part(1, 32, "L"), FsSpec::ext4(), small_tree("truncated-1")),
            (part(33, 32, "L"), FsSpec::ext4(), small_tree("truncated-2")),
        ],
    )?;
    let cut = placed[1].0.start + 16 * MIB;
    std::fs::OpenOptions::new()
        .write(true)
        .open(b.disk())?
        .set_len(cut)?;
    b.unlist(2);
    Ok(Outline::broken(
        "GPT disk cut in the middle of partition 2 (the backup GPT is gone too)",
        512,
        "gpt",
        &["partition 2"],
    ))
}

fn zeroed_superblock(b: &mut Builder) -> anyhow::Result<Outline> {
    let placed = b.partitioned(
        "gpt",
        100 * MIB,
        &[
            (part(1, 32, "L"), FsSpec::ext4(), small_tree("zeroed-1")),
            (
                part(33, 64, GPT_BASIC_DATA),
                FsSpec::Fat {
                    bits: 32,
                    sector: 512,
                },
                small_tree("zeroed-2"),
            ),
        ],
    )?;
    images::patch(&b.disk(), placed[0].0.start + 1024, &[0u8; 1024])?;
    b.unlist(1);
    Ok(Outline::broken(
        "GPT disk whose ext4 partition 1 has its superblock zeroed; FAT32 partition 2 intact",
        512,
        "gpt",
        // A Linux-typed partition promises a filesystem: corrupt at the superblock's offset.
        &["partition 1", "corrupt at byte 0x400"],
    ))
}

fn gpt_corrupt_primary(b: &mut Builder) -> anyhow::Result<Outline> {
    b.partitioned(
        "gpt",
        100 * MIB,
        &[
            (
                part(1, 32, "L"),
                FsSpec::ext4(),
                small_tree("gpt-corrupt-1"),
            ),
            (
                part(33, 64, GPT_BASIC_DATA),
                FsSpec::Fat {
                    bits: 32,
                    sector: 512,
                },
                small_tree("gpt-corrupt-2"),
            ),
        ],
    )?;
    // Flip a byte of the disk GUID in the primary header (LBA 1, offset 0x38): its CRC no
    // longer matches; the backup header at the end of the disk is intact.
    let disk = b.disk();
    let byte = images::read_at(&disk, 512 + 0x38, 1)?;
    images::patch(&disk, 512 + 0x38, &[byte[0] ^ 0xff])?;
    Ok(Outline::broken("GPT disk whose primary header CRC is broken; the backup is intact, so everything is still listed", 512, "gpt", &["gpt", "0x"]))
}

fn partition_past_end(b: &mut Builder) -> anyhow::Result<Outline> {
    b.partitioned(
        "dos",
        80 * MIB,
        &[
            (part(1, 32, "83"), FsSpec::ext4(), small_tree("past-end-1")),
            (part(33, 32, "83"), FsSpec::ext4(), small_tree("past-end-2")),
        ],
    )?;
    // MBR entry 2 (offset 446 + 16): its length (offset +12) now runs far past the disk's end.
    let len = u32::try_from(160 * MIB_S)?;
    images::patch(&b.disk(), 446 + 16 + 12, &len.to_le_bytes())?;
    b.unlist(2);
    Ok(Outline::broken(
        "MBR disk whose partition 2 entry extends past the end of the disk",
        512,
        "mbr",
        &["partition 2"],
    ))
}

fn gpt_partition_past_end(b: &mut Builder) -> anyhow::Result<Outline> {
    b.partitioned(
        "gpt",
        80 * MIB,
        &[
            (
                part(1, 32, "L"),
                FsSpec::ext4(),
                small_tree("gpt-past-end-1"),
            ),
            (
                part(33, 32, "L"),
                FsSpec::ext4(),
                small_tree("gpt-past-end-2"),
            ),
        ],
    )?;
    // Entry 2's last LBA now lies far past the disk; both headers and the entry array CRC are
    // recomputed, so the table itself is valid and only the partition is impossible.
    images::gpt_set_last_lba(&b.disk(), 512, 1, 160 * MIB_S)?;
    b.unlist(2);
    Ok(Outline::broken(
        "GPT disk (valid CRCs) whose partition 2 ends past the end of the disk",
        512,
        "gpt",
        &["partition 2"],
    ))
}

fn mbr_ext_loop(b: &mut Builder) -> anyhow::Result<Outline> {
    b.partitioned(
        "dos",
        100 * MIB,
        &[
            (part(1, 32, "83"), FsSpec::ext4(), small_tree("ext-loop-1")),
            (
                logical(34, 24, "83"),
                FsSpec::ext4(),
                small_tree("ext-loop-5"),
            ),
            (
                logical(59, 24, "6"),
                FsSpec::Fat {
                    bits: 16,
                    sector: 512,
                },
                small_tree("ext-loop-6"),
            ),
        ],
    )?;
    // Follow the chain: the extended partition's first EBR, then the second (last) one; make
    // the last EBR's link entry point back at the first EBR.
    let disk = b.disk();
    let mbr = images::read_at(&disk, 0, 512)?;
    let ext_start = (0..4)
        .map(|i| 446 + 16 * i)
        .find(|&e| matches!(mbr[e + 4], 0x05 | 0x0f | 0x85))
        .map(|e| u32::from_le_bytes(mbr[e + 8..e + 12].try_into().expect("4 bytes")))
        .context("no extended partition")?;
    let ebr1 = u64::from(ext_start) * 512;
    let e1 = images::read_at(&disk, ebr1, 512)?;
    let next = u32::from_le_bytes(e1[446 + 16 + 8..446 + 16 + 12].try_into().expect("4 bytes"));
    ensure!(
        e1[446 + 16 + 4] == 0x05 && next != 0,
        "first EBR has no link"
    );
    let ebr2 = ebr1 + u64::from(next) * 512;
    let e2 = images::read_at(&disk, ebr2, 512)?;
    ensure!(e2[446 + 16 + 4] == 0, "second EBR already links on");
    let mut link = [0u8; 16];
    link[4] = 0x05; // type: extended
    link[8..12].copy_from_slice(&0u32.to_le_bytes()); // relative start 0: the first EBR
    link[12..16].copy_from_slice(&2048u32.to_le_bytes());
    images::patch(&disk, ebr2 + 446 + 16, &link)?;
    Ok(Outline::broken(
        "MBR disk whose extended-partition chain loops: the last EBR links back to the first",
        512,
        "mbr",
        &["0x"],
    ))
}

fn ext4_dir_loop(b: &mut Builder) -> anyhow::Result<Outline> {
    let t = small_tree("dir-loop");
    b.whole_disk(32 * MIB, &FsSpec::ext4(), &t)?;
    // A second name for /a inside its own child /a/b: walking it naively never ends.
    crate::journal::debugfs(
        &b.disk(),
        "link /a /a/b/loop
",
    )?;
    b.volume_mut(0).optional = vec!["/a/b/loop".into()];
    b.volume_mut(0).tsk = false;
    Ok(Outline::broken(
        "whole-disk ext4 where /a/b/loop is a directory entry naming /a (a cycle)",
        512,
        "none",
        &["/a/b"],
    ))
}

fn ntfs_attr_overrun(b: &mut Builder) -> anyhow::Result<Outline> {
    let mut t = small_tree("attr-overrun");
    t.file(
        "/victim/overrun-victim.txt",
        b"the record of this file is broken
",
    );
    b.whole_disk(32 * MIB, &FsSpec::Ntfs { sector: 512 }, &t)?;
    let record = crate::ntfs::break_data_attribute(&b.disk(), "overrun-victim.txt")?;
    let victim = "/victim/overrun-victim.txt".to_string();
    b.records.retain(|r| r.path != victim);
    let v = b.volume_mut(0);
    v.optional = vec![victim];
    v.tsk = false;
    // The error names the file, or its MFT record (which an MFT-scanning reader meets before
    // it knows the name).
    let what = format!("overrun-victim.txt|record {record}");
    Ok(Outline::broken(
        "whole-disk NTFS: the MFT record of one file has a $DATA attribute whose length runs past the record's end",
        512,
        "none",
        &[&what, "0x"],
    ))
}

/// A whole-disk NTFS volume with CompactOS files ([`crate::wof`]), one per WOF algorithm,
/// EICAR across the first chunk boundary of the LZX one, and an alternate data stream on a
/// compressed file. TSK reads them as sparse zeros beside `WofCompressedData`: not asked.
fn ntfs_wof(b: &mut Builder) -> anyhow::Result<Outline> {
    use crate::wof::{WofAlgorithm, WofFile};
    let mut t = small_tree("wof");
    t.dir("/Windows/System32");
    b.whole_disk(32 * MIB, &FsSpec::Ntfs { sector: 512 }, &t)?;
    let files: Vec<WofFile> = WofAlgorithm::ALL
        .iter()
        .enumerate()
        .map(|(i, &algorithm)| {
            let mut content = crate::wof::program_like(i as u64 + 1, 100_003 + 4096 * i);
            let path = format!("/Windows/System32/compact-{}.exe", algorithm.id());
            if algorithm == WofAlgorithm::Lzx {
                let at = algorithm.chunk_size() as usize - 30;
                let eicar = crate::testdb::eicar();
                content[at..at + eicar.len()].copy_from_slice(&eicar);
                b.detections.push(ExpectedDetection {
                    partition: 0,
                    path: path.clone(),
                    stream: None,
                });
            }
            WofFile {
                path,
                algorithm,
                content,
            }
        })
        .collect();
    let zone = b"[ZoneTransfer]\r\nZoneId=3\r\n";
    let marked = files[0].path.clone();
    crate::wof::plant(
        &b.disk(),
        &b.dir,
        &files,
        &[(&marked, "Zone.Identifier", zone)],
    )?;
    b.records.extend(files.iter().map(|f| f.record(0)));
    let mut ads = files[0].record(0);
    ads.path = format!("{marked}:Zone.Identifier");
    ads.stream = Some("Zone.Identifier".into());
    ads.size = Some(zone.len() as u64);
    ads.sha256 = Some(crate::content::sha256_hex(zone));
    b.records.push(ads);
    b.volume_mut(0).tsk = false;
    Ok(Outline::ok(
        "whole-disk NTFS with CompactOS (WOF) files compressed by wimlib: XPRESS4K, LZX (holding EICAR), XPRESS8K, XPRESS16K",
        512,
        "none",
    ))
}

/// Where the NTFS partition of `gpt-infected` hides EICAR beyond plain files.
const NTFS_COMPRESSED_DIR: &str = "/Users/Public/compressed";

/// A GPT disk with ext4, NTFS and FAT32 partitions, each holding every file of Debian's
/// `clamav-testfiles` and EICAR in nested directories among clean files; on NTFS also EICAR
/// in an LZNT1-compressed folder (a small resident file, and inside a large compressible
/// file, so that the match needs decompressed compression units) and in two alternate data
/// streams of a clean file (one resident, one not). The expected detections are written to [`DETECTIONS_FILE`].
fn gpt_infected(b: &mut Builder) -> anyhow::Result<Outline> {
    let (ext4, bad_ext4) = trees::infected_tree("gpt-infected-ext4")?;
    let (mut ntfs, mut bad_ntfs) = trees::infected_tree("gpt-infected-ntfs")?;
    let (fat, bad_fat) = trees::infected_tree("gpt-infected-fat32")?;
    let eicar = crate::testdb::eicar();
    ntfs.dir(NTFS_COMPRESSED_DIR);
    ntfs.compressed_dirs.insert(NTFS_COMPRESSED_DIR.into());
    let small = format!("{NTFS_COMPRESSED_DIR}/eicar.com");
    ntfs.file(&small, &eicar);
    // EICAR past the first 64 KiB compression unit of a compressible file.
    let mut text: Vec<u8> = (0..3000)
        .flat_map(|i| format!("log line {i}: nothing to see here\n").into_bytes())
        .collect();
    let mut tail = text.split_off(70_000);
    text.extend_from_slice(&eicar);
    text.append(&mut tail);
    let large = format!("{NTFS_COMPRESSED_DIR}/install log.txt");
    ntfs.file(&large, &text);
    ntfs.file(
        &format!("{NTFS_COMPRESSED_DIR}/clean.txt"),
        &b"compressible clean text\n".repeat(4000),
    );
    ntfs.file(
        "/Users/Public/notes.txt",
        b"a clean file with a hidden stream\n",
    );
    ntfs.stream(
        "/Users/Public/notes.txt",
        "payload",
        Content::Bytes(eicar.clone()),
    );
    // A second, non-resident stream (past what an MFT record holds) with EICAR at its end.
    let mut big = b"padding line of a hidden stream\n".repeat(300);
    big.extend_from_slice(&eicar);
    ntfs.stream(
        "/Users/Public/notes.txt",
        "big payload",
        Content::Bytes(big),
    );
    ntfs.stream(
        "/Users/Public/notes.txt",
        "Zone.Identifier",
        Content::text("[ZoneTransfer]\r\nZoneId=3\r\n"),
    );
    bad_ntfs.push(small);
    bad_ntfs.push(large);
    let placed = b.partitioned(
        "gpt",
        130 * MIB,
        &[
            (part(1, 24, "L"), FsSpec::ext4(), ext4),
            (
                part(25, 32, GPT_BASIC_DATA),
                FsSpec::Ntfs { sector: 512 },
                ntfs,
            ),
            (
                part(57, 64, GPT_BASIC_DATA),
                FsSpec::Fat {
                    bits: 32,
                    sector: 512,
                },
                fat,
            ),
        ],
    )?;
    for ((pl, planted), bad) in placed.iter().zip([&bad_ext4, &bad_ntfs, &bad_fat]) {
        for path in bad {
            // Every malicious name must be planted: a name the filesystem cannot hold would
            // silently shrink what the scan is checked against.
            ensure!(
                planted.nodes.contains_key(path),
                "partition {}: {path} was not planted",
                pl.index
            );
            b.detections.push(ExpectedDetection {
                partition: pl.index,
                path: path.clone(),
                stream: None,
            });
        }
    }
    for stream in ["payload", "big payload"] {
        b.detections.push(ExpectedDetection {
            partition: placed[1].0.index,
            path: format!("/Users/Public/notes.txt:{stream}"),
            stream: Some(stream.into()),
        });
    }
    Ok(Outline::ok(
        "GPT disk with ext4, NTFS and FAT32 partitions holding Debian's clamav-testfiles and EICAR among clean files; on NTFS also EICAR in a compressed folder and in an alternate data stream",
        512,
        "gpt",
    ))
}

/// `gpt-infected` with the ext4 superblock of partition 1 zeroed: the NTFS and FAT32
/// partitions still hold their planted test malware.
fn gpt_infected_zeroed(b: &mut Builder) -> anyhow::Result<Outline> {
    let base = fixture("gpt-infected")?;
    std::fs::copy(base.disk(), b.disk())?;
    b.records = base.manifest()?;
    b.volumes = base.meta.volumes.clone();
    b.detections = base.expected_detections()?;
    let ext4 = b.volume_mut(1);
    ensure!(
        ext4.fs == "ext4",
        "partition 1 of gpt-infected is {}",
        ext4.fs
    );
    let start = ext4.start;
    images::patch(&b.disk(), start + 1024, &[0u8; 1024])?;
    b.unlist(1);
    Ok(Outline::broken(
        "gpt-infected whose ext4 partition 1 has its superblock zeroed; the NTFS and FAT32 partitions with their test malware are intact",
        512,
        "gpt",
        &["partition 1"],
    ))
}

/// Names of every fixture.
pub fn names() -> Vec<&'static str> {
    FIXTURES.iter().map(|d| d.name).collect()
}

/// Paths of every file of a fixture directory (for the read-only test).
pub fn files_of(f: &Fixture) -> anyhow::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(&f.dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    v.sort();
    Ok(v)
}

/// Size of the disk of the chain fixtures (a whole-disk ext4, small so that they build fast).
const CHAIN_DISK: u64 = 24 * MIB;

/// One change a guest makes to a file system between two states of the chain fixtures.
#[derive(Debug, Clone)]
enum Change {
    /// Create a directory (its parent exists).
    Mkdir(&'static str),
    /// Create or replace a file.
    Write(&'static str, crate::content::Content),
    /// Delete a file.
    Remove(&'static str),
    /// Delete an empty directory.
    Rmdir(&'static str),
}

/// v1 of the chain fixtures' filesystem, and the changes making v2 (files added, one
/// changed, one deleted) and v3 (more of each; a directory removed whole, a v2 file grown).
fn chain_history() -> (Tree, [Vec<Change>; 2]) {
    use crate::content::Content;
    let mut v1 = small_tree("chain");
    v1.file("/docs/readme.txt", b"state v1\n");
    // Most of the data never changes, so that most of what is read comes from the base.
    v1.random_file("/bin/stays.bin", 4 * MIB);
    v1.random_file("/bin/changed-in-v2.bin", 200_000);
    v1.random_file("/bin/deleted-in-v2.bin", 150_000);
    v1.file(
        "/removed-in-v3/sub/file.txt",
        b"goes away with its directory\n",
    );
    let rnd = |seed, len| Content::Random { seed, len };
    let v2 = vec![
        Change::Remove("/bin/deleted-in-v2.bin"),
        Change::Write("/bin/changed-in-v2.bin", rnd(2, 200_000)),
        Change::Write(
            "/docs/readme.txt",
            Content::text("state v2, one line longer\nsecond line\n"),
        ),
        Change::Mkdir("/added-in-v2"),
        Change::Write("/added-in-v2/new.bin", rnd(20, 500_000)),
        Change::Write("/added-in-v2/note.txt", Content::text("added in v2\n")),
    ];
    let v3 = vec![
        Change::Remove("/removed-in-v3/sub/file.txt"),
        Change::Rmdir("/removed-in-v3/sub"),
        Change::Rmdir("/removed-in-v3"),
        Change::Remove("/added-in-v2/note.txt"),
        Change::Write("/added-in-v2/new.bin", rnd(30, 900_000)),
        Change::Write("/docs/readme.txt", Content::text("state v3\n")),
        Change::Mkdir("/added-in-v3"),
        Change::Mkdir("/added-in-v3/deep"),
        Change::Write("/added-in-v3/deep/file.bin", rnd(31, 70_000)),
    ];
    (v1, [v2, v3])
}

/// Applies `changes` to the image `img` with `debugfs` (as a guest would: untouched files keep
/// their blocks) and to `tree`.
fn apply_changes(
    b: &Builder,
    img: &std::path::Path,
    tree: &mut Tree,
    changes: &[Change],
) -> anyhow::Result<()> {
    let mut script = String::new();
    let mut temps = Vec::new();
    for (i, c) in changes.iter().enumerate() {
        match c {
            Change::Mkdir(p) => {
                script.push_str(&format!("mkdir {p}\n"));
                tree.dir(p);
            }
            Change::Write(p, content) => {
                if tree.nodes.contains_key(*p) {
                    script.push_str(&format!("rm {p}\n"));
                }
                let host = b.path(&format!("change-{i}.bin"));
                std::fs::write(&host, content.to_vec())?;
                script.push_str(&format!("write {} {p}\n", host.display()));
                temps.push(host);
                tree.add(p, Node::File(content.clone()));
            }
            Change::Remove(p) => {
                script.push_str(&format!("rm {p}\n"));
                tree.nodes.remove(*p);
            }
            Change::Rmdir(p) => {
                script.push_str(&format!("rmdir {p}\n"));
                tree.nodes.remove(*p);
            }
        }
    }
    crate::journal::debugfs(img, &script)?;
    for t in temps {
        std::fs::remove_file(t)?;
    }
    Ok(())
}

/// Makes the three states of [`chain_history`] as raw ext4 images `state-N.raw` in the
/// fixture directory (v1 with `mke2fs -d`, the others by changing a copy of the previous one);
/// returns the images and the planted trees.
fn chain_states(b: &mut Builder) -> anyhow::Result<Vec<(PathBuf, Tree)>> {
    let (v1, changes) = chain_history();
    let (img, mut tree) = b.filesystem(0, CHAIN_DISK, &FsSpec::ext4(), &v1)?;
    let first = b.path("state-0.raw");
    std::fs::rename(img, &first)?;
    let mut out = vec![(first, tree.clone())];
    for (i, c) in changes.iter().enumerate() {
        let next = b.path(&format!("state-{}.raw", i + 1));
        std::fs::copy(&out[i].0, &next)?;
        apply_changes(b, &next, &mut tree, c)?;
        out.push((next, tree.clone()));
    }
    Ok(out)
}

/// Writes the manifest of `tree` (a whole-disk ext4) as `manifest-NAME.jsonl`.
fn other_manifest(b: &Builder, name: &str, tree: &Tree) -> anyhow::Result<()> {
    let mut records = manifest::from_tree(0, "ext4", tree);
    records.sort();
    manifest::write_jsonl(&b.path(&format!("manifest-{name}.jsonl")), &records)
}

/// `qemu-img create -f FMT [OPTIONS] -b BACKING -F BACKING_FMT IMAGE`, with `backing` named
/// relative to the image's directory (as images moved around together name their parents).
fn overlay(
    b: &Builder,
    image: &str,
    fmt: &str,
    options: &[&str],
    backing: &str,
    backing_fmt: &str,
) -> anyhow::Result<PathBuf> {
    let path = b.path(image);
    crate::tools::check(
        crate::tools::command("qemu-img")
            .args(["create", "-q", "-f", fmt])
            .args(options)
            .args(["-b", backing, "-F", backing_fmt])
            .arg(&path),
    )?;
    Ok(path)
}

/// A three-layer chain: `base` (format `base_fmt`, state v1) <- `mid` (v2's changes) <-
/// `disk.img` (v3's changes), both overlays of format `fmt`, each checked to be sparse. The
/// manifest is v3; `manifest-MID.jsonl` is v2 and `manifest-BASE.jsonl` v1 (each layer opened
/// alone).
fn chain(
    b: &mut Builder,
    (base, base_fmt, base_args): (&str, &str, &[&str]),
    (mid, mid_options): (&str, &[&str]),
    fmt: &str,
) -> anyhow::Result<()> {
    let states = chain_states(b)?;
    let base_path = b.path(base);
    if base_fmt == "raw" {
        std::fs::copy(&states[0].0, &base_path)?;
    } else {
        crate::tools::check(
            crate::tools::command("qemu-img")
                .args(["convert", "-O", base_fmt])
                .args(base_args)
                .arg(&states[0].0)
                .arg(&base_path),
        )?;
    }
    let mid_path = overlay(b, mid, fmt, mid_options, base, base_fmt)?;
    layers::write_changes(&mid_path, fmt, &states[0].0, &states[1].0, &b.dir)?;
    let top = overlay(b, DISK_FILE, fmt, &[], mid, fmt)?;
    layers::write_changes(&top, fmt, &states[1].0, &states[2].0, &b.dir)?;
    layers::ensure_sparse_layer(&mid_path, fmt)?;
    layers::ensure_sparse_layer(&top, fmt)?;
    other_manifest(b, base, &states[0].1)?;
    other_manifest(b, mid, &states[1].1)?;
    let fs = FsSpec::ext4();
    b.volume(0, &fs, (0, CHAIN_DISK), &states[2].1, true).tsk = false;
    for (state, _) in states {
        std::fs::remove_file(state)?;
    }
    Ok(())
}

fn chain_qcow2(b: &mut Builder) -> anyhow::Result<Outline> {
    chain(
        b,
        ("base.img", "raw", &[]),
        ("mid.qcow2", &["-o", "extended_l2=on"]),
        "qcow2",
    )?;
    Ok(Outline::ok(
        "whole-disk ext4 in a three-layer chain: raw base (v1) <- qcow2 overlay with subclusters (extended_l2) holding only v2's changed blocks <- qcow2 overlay holding only v3's; lists v3",
        512,
        "none",
    ))
}

fn chain_qcow2_compressed(b: &mut Builder) -> anyhow::Result<Outline> {
    chain(
        b,
        ("base.qcow2", "qcow2", &["-c"]),
        ("mid.qcow2", &["-o", "cluster_size=16384"]),
        "qcow2",
    )?;
    Ok(Outline::ok(
        "whole-disk ext4 in a three-layer qcow2 chain: compressed qcow2 base (v1) <- overlay with 16 KiB clusters holding only v2's changed blocks <- overlay with 64 KiB clusters holding only v3's; lists v3",
        512,
        "none",
    ))
}

fn chain_vmdk(b: &mut Builder) -> anyhow::Result<Outline> {
    chain(
        b,
        ("base.vmdk", "vmdk", &["-o", "subformat=monolithicSparse"]),
        ("mid.vmdk", &[]),
        "vmdk",
    )?;
    Ok(Outline::ok(
        "whole-disk ext4 in a three-layer VMDK chain: monolithicSparse base (v1) <- delta with v2's changed blocks <- delta with v3's; lists v3",
        512,
        "none",
    ))
}

fn snapshot_qcow2(b: &mut Builder) -> anyhow::Result<Outline> {
    let states = chain_states(b)?;
    let disk = b.disk();
    crate::tools::check(
        crate::tools::command("qemu-img")
            .args(["convert", "-O", "qcow2"])
            .arg(&states[0].0)
            .arg(&disk),
    )?;
    crate::tools::check(
        crate::tools::command("qemu-img")
            .args(["snapshot", "-c", "snap1"])
            .arg(&disk),
    )?;
    layers::write_changes(&disk, "qcow2", &states[0].0, &states[1].0, &b.dir)?;
    other_manifest(b, "snapshot-snap1", &states[0].1)?;
    let fs = FsSpec::ext4();
    b.volume(0, &fs, (0, CHAIN_DISK), &states[1].1, true).tsk = false;
    for (state, _) in states {
        std::fs::remove_file(state)?;
    }
    Ok(Outline::ok(
        "whole-disk ext4 in a qcow2 with internal snapshot snap1 (state v1); the active state holds v2's changes on top (copy-on-write of the snapshot's clusters); lists v2, and v1 with --snapshot snap1",
        512,
        "none",
    ))
}
