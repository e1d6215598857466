//! `ls`, `info` and `cat`: the inventory commands.

use std::collections::HashMap;
use std::io::Write;

use anyhow::Context;
use coldscan_scanner::fs::{self, EntryKind, FileEntry, FileId, SharedFilesystem, WalkEvent};
use coldscan_scanner::inventory::{self, DiskTarget, Volume};
use coldscan_scanner::Error;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::cli::{CatArgs, InfoArgs, LsArgs, LsFormat};

/// Exit code: everything read, nothing wrong.
pub const EXIT_OK: u8 = 0;
/// Exit code: errors occurred (something could not be read).
pub const EXIT_ERROR: u8 = 2;

/// Prints a problem on stderr in one consistent shape.
fn report_problem(what: &str, err: &dyn std::fmt::Display) {
    eprintln!("coldscan: {what}: {err}");
}

/// One line of `ls --format jsonl`.
#[derive(Debug, Serialize)]
struct LsRecord<'a> {
    disk: &'a str,
    partition: u32,
    /// `vg/lv` for a logical volume; absent for partitions (the contract before LVM).
    #[serde(skip_serializing_if = "Option::is_none")]
    volume: Option<&'a str>,
    fs: &'a str,
    path: &'a str,
    stream: Option<&'a str>,
    size: u64,
    sha256: Option<&'a str>,
    kind: &'a str,
}

/// Escapes control characters and backslashes so that one entry is one text line.
fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Hashes the content of `entry`, or says why it could not be read.
fn hash_entry(fsys: &SharedFilesystem, entry: &FileEntry) -> Result<String, Error> {
    if let Some(u) = &entry.unreadable {
        return Err(Error::Unsupported {
            object: entry.path.clone(),
            detail: u.detail.clone(),
            reason: u.reason,
        });
    }
    let mut reader = fsys.open(entry)?;
    let mut hasher = Sha256::new();
    fs::read_all(reader.as_mut(), &entry.path, &mut |chunk| {
        hasher.update(chunk)
    })?;
    Ok(hex::encode(hasher.finalize()))
}

/// Entries held at once by `ls --hash` before they are hashed (in parallel, largest first) and
/// printed in walk order: the walk streams, memory is bounded by this window.
const LS_HASH_WINDOW: usize = 4096;
/// Content hashes remembered for hard links met later in the walk; past this many the memory
/// is released (a later hard link is then hashed again: same output, one more read).
const LS_KNOWN_HASHES: usize = 1 << 20;

/// Streams one volume's listing: entries are printed as the walk finds them (with `--hash`,
/// window by window), in walk order.
struct VolumeListing<'a> {
    target: &'a str,
    index: u32,
    /// The logical volume (`vg/lv`), if the volume is one.
    volume: Option<&'a str>,
    /// `3` or `3 vg/lv`: the volume in messages and text output.
    label: &'a str,
    fs_name: &'a str,
    fsys: &'a SharedFilesystem,
    args: &'a LsArgs,
    out: &'a mut dyn Write,
    errors: &'a mut u64,
    pending: Vec<FileEntry>,
    known: HashMap<FileId, Result<String, String>>,
    /// The first output error (a closed pipe): printing stops.
    write_error: Option<std::io::Error>,
}

impl VolumeListing<'_> {
    fn entry(&mut self, e: FileEntry) {
        self.pending.push(e);
        if self.args.hash.is_none() || self.pending.len() >= LS_HASH_WINDOW {
            self.flush();
        }
    }

    /// Hashes what is pending (each content once, largest first) and prints it in walk order.
    fn flush(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        if self.write_error.is_some() {
            return;
        }
        if self.args.hash.is_some() {
            if self.known.len() > LS_KNOWN_HASHES {
                self.known.clear();
            }
            let mut unique: HashMap<FileId, &FileEntry> = HashMap::new();
            for e in pending.iter().filter(|e| e.kind == EntryKind::File) {
                if !self.known.contains_key(&e.id) {
                    unique.entry(e.id).or_insert(e);
                }
            }
            let mut work: Vec<&FileEntry> = unique.into_values().collect();
            work.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.id.cmp(&b.id)));
            let fsys = self.fsys;
            let hashed = coldscan_scanner::parallel::map_each(&work, |e| {
                (e.id, hash_entry(fsys, e).map_err(|err| err.to_string()))
            });
            self.known.extend(hashed);
        }
        for e in &pending {
            if self.write_error.is_none() {
                if let Err(err) = self.print(e) {
                    self.write_error = Some(err);
                }
            }
        }
    }

    fn print(&mut self, e: &FileEntry) -> std::io::Result<()> {
        let sha = match self.known.get(&e.id) {
            Some(Ok(h)) if e.kind == EntryKind::File => Some(h.clone()),
            Some(Err(msg)) if e.kind == EntryKind::File => {
                *self.errors += 1;
                report_problem(
                    &format!("{} partition {}: {}", self.target, self.label, e.path),
                    msg,
                );
                None
            }
            _ => None,
        };
        match self.args.format {
            LsFormat::Jsonl => {
                let rec = LsRecord {
                    disk: self.target,
                    partition: self.index,
                    volume: self.volume,
                    fs: self.fs_name,
                    path: &e.path,
                    stream: e.stream.as_deref(),
                    size: e.size,
                    sha256: sha.as_deref(),
                    kind: e.kind.as_str(),
                };
                serde_json::to_writer(&mut *self.out, &rec)?;
                writeln!(self.out)
            }
            LsFormat::Text => {
                let hash_col = match (self.args.hash, sha) {
                    (Some(_), Some(h)) => format!("{h}\t"),
                    (Some(_), None) => format!("{:<64}\t", "-"),
                    (None, _) => String::new(),
                };
                writeln!(
                    self.out,
                    "{}\t{}\t{:<7}\t{:>12}\t{hash_col}{}",
                    self.label,
                    self.fs_name,
                    e.kind.as_str(),
                    e.size,
                    escape_text(&e.path)
                )
            }
        }
    }
}

/// `3`, or `3 vg/lv` for a logical volume: how a volume is named in messages and text output.
fn volume_label(v: &Volume) -> String {
    match &v.name {
        Some(n) => format!("{} {n}", v.partition.index),
        None => v.partition.index.to_string(),
    }
}

fn problem_volume(target: &DiskTarget, v: &Volume, errors: &mut u64) {
    if let Some(e) = v.problem() {
        *errors += 1;
        report_problem(
            &format!("{} partition {}", target.name, volume_label(v)),
            &e,
        );
    }
}

/// `coldscan ls`.
pub fn ls(args: &LsArgs) -> anyhow::Result<u8> {
    if let Some(jobs) = args.jobs {
        rayon::ThreadPoolBuilder::new()
            .num_threads(jobs.max(1))
            .build_global()
            .ok();
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut errors = 0u64;
    let opts = args.disk.open_options();
    let opened = inventory::open_disks(&args.targets, &opts);
    for (target_name, target) in args.targets.iter().zip(opened) {
        let target = match target {
            Ok(t) => t,
            Err(e) => {
                errors += 1;
                report_problem(target_name, &e);
                continue;
            }
        };
        for p in &target.table.problems {
            errors += 1;
            report_problem(target_name, p);
        }
        for v in &target.volumes {
            problem_volume(&target, v, &mut errors);
            let Ok(fsys) = &v.filesystem else { continue };
            let index = v.partition.index;
            let label = volume_label(v);
            let fs_name = fsys.kind().as_str();
            let mut listing = VolumeListing {
                target: target_name,
                index,
                volume: v.name.as_deref(),
                label: &label,
                fs_name,
                fsys,
                args,
                out: &mut out,
                errors: &mut errors,
                pending: Vec::new(),
                known: HashMap::new(),
                write_error: None,
            };
            let walked = fsys.walk(&mut |ev| match ev {
                WalkEvent::Entry(e) => listing.entry(e),
                WalkEvent::Error { path, error } => {
                    *listing.errors += 1;
                    report_problem(&format!("{target_name} partition {label}: {path}"), &error);
                }
            });
            listing.flush();
            if let Some(e) = listing.write_error.take() {
                return Err(e).context("writing the listing");
            }
            if let Err(e) = walked {
                errors += 1;
                report_problem(&format!("{target_name} partition {label}"), &e);
            }
        }
    }
    out.flush()?;
    Ok(if errors > 0 { EXIT_ERROR } else { EXIT_OK })
}

/// `info --json` output for one target.
#[derive(Debug, Serialize)]
struct InfoRecord {
    target: String,
    format: String,
    size: u64,
    chain: Vec<coldscan_scanner::disk::ChainLink>,
    details: Vec<(String, String)>,
    scheme: String,
    sector_size: u32,
    disk_id: Option<String>,
    problems: Vec<String>,
    partitions: Vec<InfoPartition>,
}

#[derive(Debug, Serialize)]
struct InfoPartition {
    index: u32,
    /// `vg/lv` for a logical volume.
    #[serde(skip_serializing_if = "Option::is_none")]
    volume: Option<String>,
    /// What the volume layer recognised, outermost first (kind, UUID, label).
    content: Vec<InfoContent>,
    start: u64,
    size: u64,
    #[serde(rename = "type")]
    type_id: String,
    type_name: Option<String>,
    label: Option<String>,
    guid: Option<String>,
    fs: Option<String>,
    fs_label: Option<String>,
    status: String,
    notes: Vec<String>,
}

/// One recognised volume-layer structure in `info`.
#[derive(Debug, Serialize)]
struct InfoContent {
    kind: String,
    uuid: Option<String>,
    label: Option<String>,
}

fn info_record(t: &DiskTarget) -> InfoRecord {
    InfoRecord {
        target: t.name.clone(),
        format: t.disk.format.as_str().to_string(),
        size: t.disk.source.size(),
        chain: t.disk.chain.clone(),
        details: t.disk.details.clone(),
        scheme: t.table.scheme.as_str().to_string(),
        sector_size: t.table.sector_size,
        disk_id: t.table.disk_id.clone(),
        problems: t.table.problems.iter().map(|p| p.to_string()).collect(),
        partitions: t
            .volumes
            .iter()
            .map(|v| InfoPartition {
                index: v.partition.index,
                volume: v.name.clone(),
                content: v
                    .content
                    .iter()
                    .map(|c| InfoContent {
                        kind: c.kind(),
                        uuid: c.uuid(),
                        label: c.label(),
                    })
                    .collect(),
                start: v.partition.start,
                size: v.partition.size,
                type_id: v.partition.type_id.clone(),
                type_name: v.partition.type_name.clone(),
                label: v.partition.label.clone(),
                guid: v.partition.guid.clone(),
                fs: v.fs_kind.map(|k| k.as_str().to_string()),
                fs_label: v.filesystem.as_ref().ok().and_then(|f| f.label()),
                status: v.status(),
                notes: v
                    .notes
                    .iter()
                    .cloned()
                    .chain(v.filesystem.as_ref().map(|f| f.notes()).unwrap_or_default())
                    .collect(),
            })
            .collect(),
    }
}

/// `coldscan info`.
pub fn info(args: &InfoArgs) -> anyhow::Result<u8> {
    let mut errors = 0u64;
    let opts = args.disk.open_options();
    let mut records = Vec::new();
    let opened = inventory::open_disks(&args.targets, &opts);
    for (name, t) in args.targets.iter().zip(opened) {
        match t {
            Ok(t) => {
                errors += t.table.problems.len() as u64;
                for v in &t.volumes {
                    problem_volume(&t, v, &mut errors);
                }
                records.push(info_record(&t));
            }
            Err(e) => {
                errors += 1;
                report_problem(name, &e);
            }
        }
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &records)?;
        writeln!(out)?;
    } else {
        for r in &records {
            print_info_text(&mut out, r)?;
        }
    }
    Ok(if errors > 0 { EXIT_ERROR } else { EXIT_OK })
}

fn print_info_text(out: &mut dyn Write, r: &InfoRecord) -> std::io::Result<()> {
    writeln!(out, "{}", r.target)?;
    writeln!(out, "  format:      {}", r.format)?;
    writeln!(
        out,
        "  size:        {} bytes ({})",
        r.size,
        human_size(r.size)
    )?;
    if r.chain.len() > 1 {
        writeln!(out, "  chain:")?;
        for (depth, link) in r.chain.iter().enumerate() {
            writeln!(
                out,
                "    {depth}: {} ({}, {} bytes)",
                link.path,
                link.format.as_str(),
                link.virtual_size
            )?;
        }
    }
    for (k, v) in &r.details {
        writeln!(out, "  {k}: {v}")?;
    }
    writeln!(
        out,
        "  partitions:  {} ({}-byte sectors)",
        r.scheme, r.sector_size
    )?;
    if let Some(id) = &r.disk_id {
        writeln!(out, "  disk id:     {id}")?;
    }
    for p in &r.problems {
        writeln!(out, "  problem:     {p}")?;
    }
    for p in &r.partitions {
        let content: Vec<String> = p
            .content
            .iter()
            .map(|c| {
                let mut s = c.kind.clone();
                if let Some(u) = &c.uuid {
                    s.push_str(&format!(" uuid {u}"));
                }
                if let Some(l) = &c.label {
                    s.push_str(&format!(" label {l:?}"));
                }
                s
            })
            .collect();
        writeln!(
            out,
            "  [{}{}] start {} size {} ({}) type {}{}{}{} fs {}{} status {}",
            p.index,
            p.volume
                .as_ref()
                .map(|v| format!(" {v}"))
                .unwrap_or_default(),
            p.start,
            p.size,
            human_size(p.size),
            p.type_id,
            p.type_name
                .as_ref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default(),
            p.label
                .as_ref()
                .map(|l| format!(" name {l:?}"))
                .unwrap_or_default(),
            if content.is_empty() {
                String::new()
            } else {
                format!(" [{}]", content.join(" / "))
            },
            p.fs.as_deref().unwrap_or("-"),
            p.fs_label
                .as_ref()
                .map(|l| format!(" label {l:?}"))
                .unwrap_or_default(),
            p.status,
        )?;
        for n in &p.notes {
            writeln!(out, "      note: {n}")?;
        }
    }
    Ok(())
}

/// `1.5 GiB`-style size.
fn human_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Standard output as a file when it is an empty regular file at offset 0, not opened for
/// appending (`coldscan cat disk > x.raw`): the whole-disk copy can then leave holes for zero
/// ranges, as `qemu-img convert` and `cp --sparse` do, instead of writing gigabytes of zeros.
/// Anything else gets every byte written: an `O_APPEND` stdout (`>> x.raw`) ignores seeks, and
/// a non-empty file (`1<> x.raw`) would keep its old bytes where the copy seeks over zeros.
fn fresh_regular_stdout() -> Option<std::fs::File> {
    use std::io::Seek;
    use std::os::fd::AsFd;
    let fd = std::io::stdout().as_fd().try_clone_to_owned().ok()?;
    let append = rustix::fs::fcntl_getfl(&fd)
        .ok()?
        .contains(rustix::fs::OFlags::APPEND);
    let mut file = std::fs::File::from(fd);
    let meta = file.metadata().ok()?;
    let fresh = meta.is_file() && meta.len() == 0 && !append;
    (fresh && file.stream_position().ok()? == 0).then_some(file)
}

/// Copies the virtual disk `src` into `file`, seeking over all-zero 64 KiB pieces and setting
/// the final length, so the copy is sparse.
fn cat_sparse(
    src: &dyn coldscan_scanner::block::BlockSource,
    mut file: std::fs::File,
) -> anyhow::Result<()> {
    use std::io::{Seek, SeekFrom};
    const PIECE: usize = 64 * 1024;
    let zeros = vec![0u8; PIECE];
    let size = src.size();
    let ctx = || "writing to standard output";
    read_ahead(src, |buf| {
        let n = buf.len();
        // Write runs of non-zero pieces in one call; seek over zero pieces.
        let mut start = 0usize;
        while start < n {
            let end = (start + PIECE).min(n);
            let zero = buf[start..end] == zeros[..end - start];
            let mut stop = end;
            while stop < n {
                let next = (stop + PIECE).min(n);
                if (buf[stop..next] == zeros[..next - stop]) != zero {
                    break;
                }
                stop = next;
            }
            if zero {
                file.seek(SeekFrom::Current((stop - start) as i64))
                    .with_context(ctx)?;
            } else {
                file.write_all(&buf[start..stop]).with_context(ctx)?;
            }
            start = stop;
        }
        Ok(())
    })?;
    file.set_len(size).with_context(ctx)?;
    Ok(())
}

/// Calls `sink` with the whole content of `src` in order, in 1 MiB chunks, while a second
/// thread already reads (and decodes: qcow2, VHDX...) the next chunks: reading and writing
/// overlap, as in `qemu-img convert`.
fn read_ahead(
    src: &dyn coldscan_scanner::block::BlockSource,
    mut sink: impl FnMut(&[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    use std::sync::mpsc;
    const CHUNK: u64 = 1 << 20;
    const IN_FLIGHT: usize = 4;
    let size = src.size();
    let (full_tx, full_rx) = mpsc::sync_channel::<coldscan_scanner::Result<Vec<u8>>>(IN_FLIGHT);
    let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut pos = 0u64;
            while pos < size {
                let n = (size - pos).min(CHUNK) as usize;
                let mut buf = empty_rx.try_recv().unwrap_or_default();
                buf.resize(n, 0);
                let r = src.read_exact_at(pos, &mut buf).map(|()| buf);
                let failed = r.is_err();
                // The receiver hung up (write error): stop reading.
                if full_tx.send(r).is_err() || failed {
                    return;
                }
                pos += n as u64;
            }
        });
        for chunk in full_rx {
            let chunk = chunk?;
            sink(&chunk)?;
            let _ = empty_tx.send(chunk);
        }
        Ok(())
    })
}

/// `coldscan cat`.
pub fn cat(args: &CatArgs) -> anyhow::Result<u8> {
    let opts = args.disk.open_options();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    match (&args.partition, &args.path) {
        (None, None) => {
            let disk = coldscan_scanner::disk::open_target(&args.target, &opts)
                .with_context(|| format!("opening {}", args.target))?;
            let src = disk.source;
            if let Some(file) = fresh_regular_stdout() {
                return cat_sparse(src.as_ref(), file).map(|()| EXIT_OK);
            }
            read_ahead(src.as_ref(), |chunk| {
                out.write_all(chunk).context("writing to standard output")
            })?;
        }
        (Some(index), Some(path)) => {
            let target = inventory::open_disk(&args.target, &opts)
                .with_context(|| format!("opening {}", args.target))?;
            let volume = target
                .volumes
                .iter()
                .find(|v| v.partition.index == *index && v.name.is_none())
                .with_context(|| format!("{}: no partition {index}", args.target))?;
            let fsys = volume
                .filesystem
                .as_ref()
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("{}: partition {index}", args.target))?;
            let entry = fsys.lookup(path)?;
            if entry.kind != EntryKind::File {
                anyhow::bail!(
                    "{}: partition {index}: {path} is a {}, not a file",
                    args.target,
                    entry.kind.as_str()
                );
            }
            let mut reader = fsys.open(&entry)?;
            let mut write_err = None;
            fs::read_all(reader.as_mut(), &entry.path, &mut |chunk| {
                if write_err.is_none() {
                    write_err = out.write_all(chunk).err();
                }
            })?;
            if let Some(e) = write_err {
                return Err(e).context("writing to standard output");
            }
        }
        _ => anyhow::bail!("give both PARTITION and PATH, or neither for the whole virtual disk"),
    }
    out.flush().context("writing to standard output")?;
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_escaping_keeps_one_entry_per_line() {
        assert_eq!(escape_text("a\nb\tc\\d"), "a\\nb\\tc\\\\d");
        assert_eq!(escape_text("日本語 ✓"), "日本語 ✓");
        assert_eq!(escape_text("\u{7}"), "\\u{7}");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
    }
}
