//! The end-to-end checks, shared by the test files in `tests/tests/`: each takes a built
//! fixture and returns a readable error describing every difference it found.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::SystemTime;

use anyhow::{bail, ensure, Context};
use sha2::{Digest, Sha256};

use crate::content::sha256_hex;
use crate::fixtures::{Fixture, VolumeMeta};
use crate::manifest::{self, Record};
use crate::{coldscan, tsk};

/// How many files of one volume are compared with `icat` at most (all of them in small
/// volumes; an even sample of the 10,000-file directory).
pub const ICAT_SAMPLE: usize = 200;

fn sample<T>(items: &[T], max: usize) -> impl Iterator<Item = &T> {
    let step = items.len().div_ceil(max.max(1)).max(1);
    items.iter().step_by(step)
}

/// The factory against The Sleuth Kit: `mmls` finds the partitions where the fixture says,
/// `fls -r -p` lists exactly the manifest's paths, and `icat` gives the manifest's hashes.
pub fn manifest_agrees_with_tsk(f: &Fixture) -> anyhow::Result<()> {
    let raw = tsk_view(f)?;
    let disk = raw.path.clone();
    let manifest = f.manifest()?;
    let mut problems = String::new();
    if f.meta.scheme != "none" {
        let starts = tsk::mmls_starts(&disk, f.meta.sector_size)?;
        let ours: BTreeSet<u64> = f.meta.volumes.iter().map(|v| v.start).collect();
        if starts != ours {
            let _ = writeln!(
                problems,
                "mmls partition starts {starts:?}, fixture says {ours:?}"
            );
        }
    }
    for v in f.meta.volumes.iter().filter(|v| v.tsk && v.listed) {
        if let Err(e) = volume_agrees_with_tsk(&disk, v, &manifest) {
            let _ = writeln!(problems, "partition {} ({}): {e:#}", v.partition, v.fs);
        }
    }
    ensure!(
        problems.is_empty(),
        "{}: manifest and The Sleuth Kit disagree:\n{problems}",
        f.meta.name
    );
    Ok(())
}

fn volume_agrees_with_tsk(disk: &Path, v: &VolumeMeta, manifest: &[Record]) -> anyhow::Result<()> {
    let entries = tsk::fls(disk, v.start)?;
    let hidden: BTreeSet<&str> = v.tsk_hidden.iter().map(String::as_str).collect();
    // TSK prints an empty named NTFS stream without its name (as a second line for the file).
    let tsk_blind = |r: &Record| v.fs == "ntfs" && r.stream.is_some() && r.size == Some(0);
    let ours: Vec<&Record> = manifest
        .iter()
        .filter(|r| {
            r.partition == v.partition && !hidden.contains(r.path.as_str()) && !tsk_blind(r)
        })
        .collect();
    let ours_paths: BTreeSet<String> = ours.iter().map(|r| tsk::sanitize(&r.path)).collect();
    // NTFS metafiles live in the root and start with `$`; user files of the fixtures never do.
    let theirs: BTreeSet<String> = tsk::paths(&entries)
        .into_iter()
        .filter(|p| !(v.fs == "ntfs" && p.starts_with("/$")))
        .collect();
    if ours_paths != theirs {
        let missing: Vec<_> = ours_paths.difference(&theirs).collect();
        let extra: Vec<_> = theirs.difference(&ours_paths).collect();
        bail!("fls paths differ: planted but not listed by fls {missing:?}; listed by fls but not planted {extra:?}");
    }
    let by_path: BTreeMap<String, &tsk::FlsEntry> = entries
        .iter()
        .map(|e| (format!("/{}", e.path), e))
        .collect();
    let files: Vec<&&Record> = ours.iter().filter(|r| r.kind == "file").collect();
    let mut bad = Vec::new();
    for r in sample(&files, ICAT_SAMPLE) {
        let e = by_path.get(&tsk::sanitize(&r.path)).context("fls entry")?;
        let data = tsk::icat(disk, v.start, &e.addr)?;
        if Some(sha256_hex(&data)) != r.sha256 || Some(data.len() as u64) != r.size {
            bad.push(format!(
                "{} (icat {}: {} bytes)",
                r.path,
                e.addr,
                data.len()
            ));
        }
    }
    for r in ours.iter().filter(|r| r.kind != "file") {
        let e = by_path.get(&tsk::sanitize(&r.path)).context("fls entry")?;
        // TSK shows NTFS symlinks (reparse points) as regular files.
        let want = match r.kind.as_str() {
            "dir" => "d/d",
            _ if v.fs == "ntfs" => "r/r",
            _ => "l/l",
        };
        if e.kind != want {
            bad.push(format!(
                "{} is {} for fls, {} planted",
                r.path, e.kind, r.kind
            ));
        }
    }
    ensure!(bad.is_empty(), "content or kind differs: {bad:?}");
    Ok(())
}

/// `coldscan ls` against The Sleuth Kit directly: on every volume TSK reads, the same path
/// set as `fls -r -p`, and for a sample of files the same content hash as `icat`.
pub fn ls_agrees_with_tsk(f: &Fixture) -> anyhow::Result<()> {
    let (listed, _) = coldscan::ls(&f.disk().display().to_string())?;
    let raw = tsk_view(f)?;
    let disk = raw.path.clone();
    let mut problems = String::new();
    let mut compared = 0;
    for v in f.meta.volumes.iter().filter(|v| v.tsk && v.listed) {
        compared += 1;
        let entries = tsk::fls(&disk, v.start)?;
        let hidden: BTreeSet<&str> = v.tsk_hidden.iter().map(String::as_str).collect();
        let ours: Vec<&Record> = listed
            .iter()
            .filter(|r| r.partition == v.partition && !hidden.contains(r.path.as_str()))
            .filter(|r| !(v.fs == "ntfs" && r.stream.is_some() && r.size == Some(0)))
            .collect();
        let ours_paths: BTreeSet<String> = ours.iter().map(|r| tsk::sanitize(&r.path)).collect();
        let theirs: BTreeSet<String> = tsk::paths(&entries)
            .into_iter()
            .filter(|p| !(v.fs == "ntfs" && p.starts_with("/$")))
            .collect();
        if ours_paths != theirs {
            let missing: Vec<_> = theirs.difference(&ours_paths).collect();
            let extra: Vec<_> = ours_paths.difference(&theirs).collect();
            let _ = writeln!(problems, "partition {}: fls lists but coldscan does not: {missing:?}; coldscan lists but fls does not: {extra:?}", v.partition);
            continue;
        }
        let by_path: BTreeMap<String, &tsk::FlsEntry> = entries
            .iter()
            .map(|e| (format!("/{}", e.path), e))
            .collect();
        let files: Vec<&&Record> = ours.iter().filter(|r| r.kind == "file").collect();
        for r in sample(&files, 100) {
            let Some(e) = by_path.get(&tsk::sanitize(&r.path)) else {
                continue;
            };
            let data = tsk::icat(&disk, v.start, &e.addr)?;
            if Some(sha256_hex(&data)) != r.sha256 {
                let _ = writeln!(
                    problems,
                    "partition {} {}: icat {} and coldscan hashes differ",
                    v.partition, r.path, e.addr
                );
            }
        }
    }
    ensure!(
        problems.is_empty(),
        "{}: coldscan and The Sleuth Kit disagree:\n{problems}",
        f.meta.name
    );
    // A fixture without a volume TSK reads would pass without comparing anything.
    ensure!(
        compared > 0,
        "{}: no volume The Sleuth Kit reads: nothing compared",
        f.meta.name
    );
    Ok(())
}

/// The fixture's disk as The Sleuth Kit is given it: the disk itself when it is raw, else a
/// raw copy made by `qemu-img convert` (an independent reader of the image format), removed
/// on drop.
#[derive(Debug)]
pub struct TskView {
    /// The raw disk.
    pub path: std::path::PathBuf,
    scratch: Option<std::path::PathBuf>,
}

impl Drop for TskView {
    fn drop(&mut self) {
        if let Some(d) = &self.scratch {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The raw form of `f`'s disk for The Sleuth Kit (see [`TskView`]).
pub fn tsk_view(f: &Fixture) -> anyhow::Result<TskView> {
    let disk = f.disk();
    let info = crate::tools::check(
        crate::tools::command("qemu-img")
            .args(["info", "--output=json"])
            .arg(&disk),
    )?;
    let info: serde_json::Value = serde_json::from_slice(&info.stdout)?;
    let format = info["format"].as_str().context("qemu-img info: format")?;
    if format == "raw" {
        return Ok(TskView {
            path: disk,
            scratch: None,
        });
    }
    let scratch = crate::cache::target_dir().join(format!(
        "tsk-raw/{}-{}-{:?}",
        f.meta.name,
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let view = TskView {
        path: scratch.join("disk.raw"),
        scratch: Some(scratch),
    };
    crate::tools::check(
        crate::tools::command("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&disk)
            .arg(&view.path),
    )
    .with_context(|| format!("converting {} ({format}) to raw for TSK", disk.display()))?;
    Ok(view)
}

/// `coldscan ls --format jsonl --hash sha256` on the fixture: exit code as expected, and for
/// every listed volume exactly the manifest's records (paths the fixture marks optional may
/// appear too); stderr names the expected objects.
pub fn ls_matches_manifest(f: &Fixture) -> anyhow::Result<()> {
    ls_matches_manifest_at(f, &f.disk().display().to_string())
}

/// [`ls_matches_manifest`] on another target holding the fixture's disk (an NBD export of it).
pub fn ls_matches_manifest_at(f: &Fixture, disk: &str) -> anyhow::Result<()> {
    let (listed, out) = coldscan::ls(disk)?;
    let manifest = f.manifest()?;
    let mut problems = String::new();
    if out.code != Some(f.meta.expect.exit_code) {
        let _ = writeln!(
            problems,
            "exit code {:?}, expected {}; stderr:\n{}",
            out.code, f.meta.expect.exit_code, out.stderr
        );
    }
    check_stderr(f, &out.stderr, &mut problems);
    for v in f.meta.volumes.iter().filter(|v| v.listed) {
        let want: Vec<Record> = manifest
            .iter()
            .filter(|r| r.partition == v.partition)
            .cloned()
            .collect();
        let optional: BTreeSet<&str> = v.optional.iter().map(String::as_str).collect();
        let got: Vec<Record> = listed
            .iter()
            .filter(|r| r.partition == v.partition)
            .filter(|r| !optional.contains(r.path.as_str()))
            .cloned()
            .collect();
        if let Some(d) = manifest::diff(&want, &got) {
            let _ = writeln!(problems, "partition {} ({}):\n{d}", v.partition, v.fs);
        }
    }
    let known: BTreeSet<u32> = f.meta.volumes.iter().map(|v| v.partition).collect();
    let strays: BTreeSet<u32> = listed
        .iter()
        .map(|r| r.partition)
        .filter(|p| !known.contains(p))
        .collect();
    if !strays.is_empty() {
        let _ = writeln!(
            problems,
            "entries listed for partitions the disk does not have: {strays:?}"
        );
    }
    ensure!(
        problems.is_empty(),
        "{}: coldscan ls differs from the ground truth:\n{problems}",
        f.meta.name
    );
    Ok(())
}

/// `coldscan ls --format jsonl --hash sha256 [EXTRA...] DISK` exits 0 and lists exactly `want`.
pub fn ls_equals(disk: &str, extra: &[&str], want: &[Record]) -> anyhow::Result<()> {
    let mut args = vec!["ls", "--format", "jsonl", "--hash", "sha256"];
    args.extend_from_slice(extra);
    args.push(disk);
    let out = coldscan::run(&args)?;
    ensure!(
        out.code == Some(0),
        "coldscan {args:?}: exit {:?}; stderr:\n{}",
        out.code,
        out.stderr
    );
    let listed = manifest::parse_jsonl(&out.stdout_text()).context("parsing coldscan ls output")?;
    if let Some(d) = manifest::diff(want, &listed) {
        bail!("coldscan {args:?} differs from the ground truth:\n{d}");
    }
    Ok(())
}

fn check_stderr(f: &Fixture, stderr: &str, problems: &mut String) {
    let lower = stderr.to_lowercase();
    for needle in &f.meta.expect.stderr {
        if !needle
            .to_lowercase()
            .split('|')
            .any(|alt| lower.contains(alt))
        {
            let _ = writeln!(problems, "stderr does not mention {needle:?}:\n{stderr}");
        }
    }
    if stderr.contains("panicked") || stderr.contains("RUST_BACKTRACE") {
        let _ = writeln!(problems, "coldscan panicked:\n{stderr}");
    }
}

/// `coldscan info --json`: exit code, partition starts and filesystem kinds as planted.
pub fn info_matches(f: &Fixture) -> anyhow::Result<()> {
    info_matches_at(f, &f.disk().display().to_string())
}

/// [`info_matches`] on another target holding the fixture's disk (an NBD export of it).
pub fn info_matches_at(f: &Fixture, disk: &str) -> anyhow::Result<()> {
    let (info, out) = coldscan::info(disk)?;
    let mut problems = String::new();
    if out.code != Some(f.meta.expect.exit_code) {
        let _ = writeln!(
            problems,
            "exit code {:?}, expected {}; stderr:\n{}",
            out.code, f.meta.expect.exit_code, out.stderr
        );
    }
    check_stderr(f, &out.stderr, &mut problems);
    let parts = info["partitions"].as_array().cloned().unwrap_or_default();
    for v in f.meta.volumes.iter().filter(|v| v.listed) {
        let found = parts
            .iter()
            .find(|p| p["index"].as_u64() == Some(u64::from(v.partition)));
        match found {
            None => {
                let _ = writeln!(problems, "partition {} not in info: {parts:?}", v.partition);
            }
            Some(p) => {
                if p["start"].as_u64() != Some(v.start) || p["fs"].as_str() != Some(v.fs.as_str()) {
                    let _ = writeln!(
                        problems,
                        "partition {}: info says start {} fs {}, planted start {} fs {}",
                        v.partition, p["start"], p["fs"], v.start, v.fs
                    );
                }
            }
        }
    }
    if f.meta.scheme != "none" && f.meta.expect.exit_code == 0 {
        let scheme = info["scheme"].as_str().unwrap_or_default();
        if scheme != f.meta.scheme {
            let _ = writeln!(problems, "scheme {scheme:?}, planted {:?}", f.meta.scheme);
        }
        if info["sector_size"].as_u64() != Some(u64::from(f.meta.sector_size)) {
            let _ = writeln!(
                problems,
                "sector size {}, planted {}",
                info["sector_size"], f.meta.sector_size
            );
        }
    }
    ensure!(
        problems.is_empty(),
        "{}: coldscan info differs:\n{problems}",
        f.meta.name
    );
    Ok(())
}

/// `coldscan cat` of a sample of files (every kind of content: small, sparse, hard-linked,
/// big, streams) gives the manifest's hash.
pub fn cat_matches(f: &Fixture) -> anyhow::Result<()> {
    let disk = f.disk().display().to_string();
    let manifest = f.manifest()?;
    let mut bad = Vec::new();
    for v in f.meta.volumes.iter().filter(|v| v.listed) {
        let files: Vec<&Record> = manifest
            .iter()
            .filter(|r| r.partition == v.partition && r.kind == "file")
            .collect();
        for r in sample(&files, 40) {
            match coldscan::cat(&disk, v.partition, &r.path) {
                Ok(data) if Some(sha256_hex(&data)) == r.sha256 => {}
                Ok(data) => bad.push(format!(
                    "partition {} {}: {} bytes, wrong content",
                    v.partition,
                    r.path,
                    data.len()
                )),
                Err(e) => bad.push(format!("{e:#}")),
            }
        }
    }
    ensure!(
        bad.is_empty(),
        "{}: coldscan cat differs:\n{}",
        f.meta.name,
        bad.join("\n")
    );
    Ok(())
}

/// SHA-256 and modification time of every file of a fixture directory.
pub fn fingerprint(f: &Fixture) -> anyhow::Result<BTreeMap<String, (String, SystemTime)>> {
    let mut m = BTreeMap::new();
    for p in crate::fixtures::files_of(f)? {
        let meta = std::fs::metadata(&p)?;
        if !meta.is_file() {
            continue;
        }
        let mut h = Sha256::new();
        let mut file = std::fs::File::open(&p)?;
        std::io::copy(&mut file, &mut h)?;
        m.insert(
            p.display().to_string(),
            (hex::encode(h.finalize()), meta.modified()?),
        );
    }
    Ok(m)
}

/// `coldscan scan --json` of the fixture with the test database reports exactly its expected
/// detections (EICAR by its test signature), exit 1, and nothing unscanned. Returns the report.
pub fn scan_finds_expected(f: &Fixture) -> anyhow::Result<serde_json::Value> {
    let db = crate::testdb::write_test_db(&f.dir.join("db"))?;
    let disk = f.disk().display().to_string();
    let out = crate::coldscan::run(&[
        "scan",
        "--db",
        &db.display().to_string(),
        "--json",
        "-",
        &disk,
    ])?;
    anyhow::ensure!(
        out.code == Some(1),
        "scan of {disk}: exit {:?}, expected 1 (found); stderr: {}",
        out.code,
        out.stderr
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut got = std::collections::BTreeSet::new();
    for d in report["detections"].as_array().context("detections")? {
        anyhow::ensure!(
            d["signature"] == crate::testdb::EICAR_REPORTED,
            "unexpected signature: {d}"
        );
        got.insert(crate::fixtures::ExpectedDetection {
            partition: u32::try_from(d["partition"].as_u64().context("partition")?)?,
            path: d["path"].as_str().context("path")?.to_string(),
            stream: d["stream"].as_str().map(str::to_string),
        });
    }
    let want: std::collections::BTreeSet<_> = f.expected_detections()?.into_iter().collect();
    anyhow::ensure!(
        got == want,
        "detections of {disk}: got {got:?}, want {want:?}"
    );
    anyhow::ensure!(
        report["not_scanned"].as_array().map(Vec::len) == Some(0),
        "nothing unscanned expected: {report}"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{Expectation, FixtureMeta};

    #[test]
    fn fingerprint_sees_content_and_mtime_changes() {
        let dir = crate::cache::target_dir().join("fingerprint-selftest");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let f = Fixture {
            dir: dir.clone(),
            meta: FixtureMeta {
                name: "selftest".into(),
                description: String::new(),
                sector_size: 512,
                scheme: "none".into(),
                volumes: vec![],
                expect: Expectation {
                    exit_code: 0,
                    stderr: vec![],
                },
            },
        };
        let disk = dir.join("disk.img");
        std::fs::write(&disk, b"abc").unwrap();
        let a = fingerprint(&f).unwrap();
        assert_eq!(a, fingerprint(&f).unwrap());
        std::fs::write(&disk, b"abd").unwrap();
        assert_ne!(a, fingerprint(&f).unwrap());
        // Same content, new mtime.
        std::fs::write(&disk, b"abc").unwrap();
        let file = std::fs::File::options().write(true).open(&disk).unwrap();
        file.set_modified(SystemTime::UNIX_EPOCH).unwrap();
        assert_ne!(a, fingerprint(&f).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
