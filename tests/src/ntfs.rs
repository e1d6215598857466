//! NTFS images: `mkntfs` on a file, populated through libntfs-3g by the populator in
//! `tests/ntfs/` (compiled once into `target/fixtures/bin`), and the MFT patching the
//! malformed NTFS fixture needs.

use std::path::{Path, PathBuf};

use std::io::Write;

use anyhow::{ensure, Context};

use crate::content::Content;
use crate::tools::{check, check_with, command};
use crate::tree::{Node, Tree};

/// The populator's C source, relative to the workspace root.
pub const POPULATOR_SOURCE: &str = "tests/ntfs/ntfs_populate.c";

/// Compiles the populator once (rebuilt when its source is newer than the binary).
pub fn populator() -> anyhow::Result<PathBuf> {
    let src = crate::cache::workspace_root().join(POPULATOR_SOURCE);
    ensure!(
        src.exists(),
        "{} is missing: NTFS fixtures cannot be populated",
        src.display()
    );
    let bin_dir = crate::cache::fixtures_root().join("bin");
    std::fs::create_dir_all(&bin_dir)?;
    let bin = bin_dir.join("ntfs-populate");
    let _lock = crate::cache::BuildLock::acquire(&bin_dir, "ntfs-populate")?;
    let fresh = match (std::fs::metadata(&bin), std::fs::metadata(&src)) {
        (Ok(b), Ok(s)) => b.modified()? >= s.modified()?,
        _ => false,
    };
    if !fresh {
        let tmp = bin_dir.join("ntfs-populate.tmp");
        check(
            command("cc")
                .args(["-O1", "-Wall", "-o"])
                .arg(&tmp)
                .arg(&src)
                .arg("-lntfs-3g"),
        )
        .context("compiling the NTFS populator (needs ntfs-3g-dev)")?;
        std::fs::rename(&tmp, &bin)?;
    }
    Ok(bin)
}

/// Makes an NTFS image of `size` bytes with `sector`-byte sectors holding `tree`.
pub fn ntfs_image(img: &Path, size: u64, sector: u32, tree: &Tree) -> anyhow::Result<()> {
    let bin = populator()?;
    crate::images::sparse_file(img, size)?;
    check(
        command("mkntfs")
            .args([
                "-F",
                "-f",
                "-Q",
                "-q",
                "-T",
                "-s",
                &sector.to_string(),
                "-L",
                "COLDSCAN",
            ])
            .arg(img),
    )?;
    // Contents go through host files with plain names (blob-N), so no path needs escaping
    // inside DATA.
    let blobs = img.with_extension("blobs");
    let _ = std::fs::remove_dir_all(&blobs);
    std::fs::create_dir_all(&blobs)?;
    let script = populate_script(tree, &blobs)?;
    check_with(
        command(&bin.display().to_string()).arg(img),
        script.as_bytes(),
    )
    .context("populating NTFS")?;
    std::fs::remove_dir_all(&blobs)?;
    Ok(())
}

/// Escapes a path for the populator: `%XX` for `%`, spaces and control characters.
fn escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c == '%' || (c as u32) <= 0x20 || c == '\u{7f}' {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// The populator's input for `tree` (format documented at the top of the populator source).
/// Content is written to files in `blobs` and referenced as `@HOSTPATH`.
fn populate_script(tree: &Tree, blobs: &Path) -> anyhow::Result<String> {
    let mut n = 0u32;
    let mut blob = |c: &Content| -> anyhow::Result<String> {
        if c.is_empty() {
            return Ok("hex:".to_string());
        }
        n += 1;
        let p = blobs.join(format!("blob-{n}"));
        let mut f = std::fs::File::create(&p)?;
        c.for_each_chunk(&mut |b| f.write_all(b))?;
        let s = p.display().to_string();
        ensure!(
            !s.contains(|c: char| c == '%' || c.is_whitespace()),
            "blob path {s:?} needs escaping"
        );
        Ok(format!("@{s}"))
    };
    let mut s = String::new();
    for (path, node) in &tree.nodes {
        let p = escape(path);
        match node {
            Node::Dir if tree.compressed_dirs.contains(path) => {
                s.push_str(&format!("compressdir {p}\n"))
            }
            Node::Dir => s.push_str(&format!("mkdir {p}\n")),
            Node::File(c) => s.push_str(&format!("file {p} {}\n", blob(c)?)),
            Node::Sparse { size, runs } => {
                // The populator has no truncate: a file ending in a hole gets one explicit zero
                // byte at its end, which leaves its content unchanged.
                let mut runs = runs.clone();
                let end = runs.last().map_or(0, |(o, c)| o + c.len());
                if end < *size {
                    runs.push((size - 1, Content::Bytes(vec![0])));
                }
                for (i, (off, c)) in runs.iter().enumerate() {
                    let cmd = if i == 0 { "sparse" } else { "append" };
                    s.push_str(&format!("{cmd} {p} {off} {}\n", blob(c)?));
                }
                if runs.is_empty() {
                    s.push_str(&format!("file {p} hex:\n"));
                }
            }
            Node::HardLink(_) | Node::Symlink(_) => {}
        }
    }
    for (path, node) in &tree.nodes {
        match node {
            Node::HardLink(t) => s.push_str(&format!("link {} {}\n", escape(t), escape(path))),
            Node::Symlink(t) => s.push_str(&format!("symlink {} {}\n", escape(path), escape(t))),
            _ => {}
        }
    }
    for st in &tree.streams {
        s.push_str(&format!(
            "stream {} {} {}\n",
            escape(&st.file),
            escape(&st.name),
            blob(&st.content)?
        ));
    }
    Ok(s)
}

/// Finds the MFT record of the file named `name` and makes its `$DATA` attribute's length
/// run past the record's end, changing nothing else. Returns the record number.
pub fn break_data_attribute(img: &Path, name: &str) -> anyhow::Result<u64> {
    let data = std::fs::read(img)?;
    let boot = data.get(..512).context("image too small")?;
    let bytes_per_sector = u64::from(u16::from_le_bytes([boot[0x0b], boot[0x0c]]));
    let cluster = bytes_per_sector * u64::from(boot[0x0d]);
    let rec_size = match boot[0x40] as i8 {
        n if n < 0 => 1u64 << (-n),
        n => u64::try_from(n)? * cluster,
    };
    let rec_len = usize::try_from(rec_size)?;
    let mft_start = u64::from_le_bytes(boot[0x30..0x38].try_into()?) * cluster;
    let want: Vec<u8> = name.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let mut found = None;
    for off in (0..data.len().saturating_sub(rec_len)).step_by(512) {
        if &data[off..off + 4] != b"FILE" {
            continue;
        }
        let mut rec = data[off..off + rec_len].to_vec();
        // Undo the update-sequence fixups to read the record as written.
        let usa_off = usize::from(u16::from_le_bytes([rec[4], rec[5]]));
        let usa_cnt = usize::from(u16::from_le_bytes([rec[6], rec[7]]));
        for i in 1..usa_cnt {
            let (s, d) = (usa_off + 2 * i, i * 512 - 2);
            if s + 2 <= rec.len() && d + 2 <= rec.len() {
                let v = [rec[s], rec[s + 1]];
                rec[d..d + 2].copy_from_slice(&v);
            }
        }
        let mut a = usize::from(u16::from_le_bytes([rec[0x14], rec[0x15]]));
        let mut has_name = false;
        let mut data_attr = None;
        while a + 8 <= rec.len() {
            let ty = u32::from_le_bytes(rec[a..a + 4].try_into()?);
            if ty == 0xffff_ffff {
                break;
            }
            let len = usize::try_from(u32::from_le_bytes(rec[a + 4..a + 8].try_into()?))?;
            if len == 0 || a + len > rec.len() {
                break;
            }
            if ty == 0x30 && rec[a + 8] == 0 {
                let c = a + usize::from(u16::from_le_bytes([rec[a + 0x14], rec[a + 0x15]]));
                let n = usize::from(rec[c + 0x40]);
                has_name |= rec.get(c + 0x42..c + 0x42 + 2 * n) == Some(&want[..]);
            }
            if ty == 0x80 && data_attr.is_none() {
                data_attr = Some(a);
            }
            a += len;
        }
        if let (true, Some(a)) = (has_name, data_attr) {
            found = Some((off, a));
            break;
        }
    }
    let (rec_off, attr) = found.with_context(|| format!("no MFT record for {name}"))?;
    let field = attr + 4;
    ensure!(
        field % 512 < 508,
        "length field overlaps an update-sequence slot"
    );
    let new_len = u32::try_from(rec_size - attr as u64 + 0x100)?;
    let at = rec_off as u64 + field as u64;
    crate::images::patch(img, at, &new_len.to_le_bytes())?;
    Ok((rec_off as u64 - mft_start) / rec_size)
}
