//! NTFS images: `mkntfs` on a file, populated through libntfs-3g by the populator in
//! `tests/ntfs/` (compiled once into `target/fixtures/bin`), and the MFT patching the
//! malformed NTFS fixture needs.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context};

use crate::content::Content;
use crate::images::{host_path, materialize};
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
    // File contents come from a staging copy of the tree; the populator copies them.
    let staging = img.with_extension("staging");
    let _ = std::fs::remove_dir_all(&staging);
    let mut plain = tree.clone();
    plain
        .nodes
        .retain(|_, n| matches!(n, Node::File(_) | Node::Sparse { .. } | Node::Dir));
    materialize(&plain, &staging)?;
    let script = populate_script(tree, &staging)?;
    std::fs::write(img.with_extension("script"), &script)?;
    check_with(
        command(&bin.display().to_string()).arg(img),
        script.as_bytes(),
    )
    .context("populating NTFS")?;
    std::fs::remove_dir_all(&staging)?;
    std::fs::remove_file(img.with_extension("script"))?;
    Ok(())
}

/// The populator's input for `tree` (format documented at the top of the populator source).
fn populate_script(tree: &Tree, staging: &Path) -> anyhow::Result<String> {
    let _ = (
        tree,
        staging,
        host_path as fn(&Path, &str) -> PathBuf,
        Content::text,
    );
    bail!("NTFS populator input format not wired yet")
}

/// Finds the MFT record of the file named `name` and makes its `$DATA` attribute's length
/// run past the record's end, changing nothing else. Returns the byte offset of the patched
/// length field.
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
    Ok(at)
}
