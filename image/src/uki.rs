//! The UKI step: a unified kernel image, systemd's EFI stub (`linuxx64.efi.stub`) with the
//! `.osrel`, `.cmdline`, `.initrd` and `.linux` sections appended, as systemd's ukify lays them out
//! (the UAPI Group's UKI specification; PE/COFF as in Microsoft's "PE Format", sections "COFF File
//! Header", "Optional Header Windows-Specific Fields", "Section Table").
//!
//! New sections get virtual addresses after the stub's last section, aligned to
//! `SectionAlignment`, and file offsets aligned to `FileAlignment`; `SizeOfImage`,
//! `SizeOfInitializedData` and the checksum are recomputed; a certificate table (signature) is
//! dropped, since the image changed.

use anyhow::{bail, ensure, Context, Result};

use crate::util::align_up;

/// Offset of `e_lfanew` in the DOS header.
const DOS_LFANEW: usize = 0x3c;
/// COFF file header size after the `PE\0\0` signature.
const COFF_HEADER: usize = 20;
/// Section header size.
const SECTION_HEADER: usize = 40;
/// `PE32+` optional header magic.
const PE32_PLUS: u16 = 0x20b;
/// `IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ`.
const DATA_READ: u32 = 0x4000_0040;
/// Data directory index of the certificate table.
const DIR_SECURITY: usize = 4;
/// Largest stub accepted (systemd's is ~100 KiB).
const MAX_STUB: usize = 16 << 20;

/// The sections a UKI adds to the stub, in file order (`.linux` last, as ukify does).
#[derive(Debug)]
pub struct Payload<'a> {
    /// os-release text (`.osrel`).
    pub osrel: &'a [u8],
    /// Kernel command line (`.cmdline`).
    pub cmdline: &'a [u8],
    /// Compressed initramfs (`.initrd`).
    pub initrd: &'a [u8],
    /// The kernel's EFI-stub image (`.linux`).
    pub linux: &'a [u8],
}

fn u16_at(b: &[u8], off: usize) -> Result<u16> {
    let s = b
        .get(off..off + 2)
        .with_context(|| format!("PE header truncated at {off:#x}"))?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32> {
    let s = b
        .get(off..off + 4)
        .with_context(|| format!("PE header truncated at {off:#x}"))?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// Builds the UKI from the stub and the payload.
pub fn build(stub: &[u8], payload: &Payload) -> Result<Vec<u8>> {
    ensure!(
        payload.linux.is_empty() || payload.linux.starts_with(b"MZ"),
        "the kernel image is not an EFI application (no MZ header): the kernel needs CONFIG_EFI_STUB"
    );
    ensure!(
        stub.len() <= MAX_STUB,
        "the EFI stub is larger than {MAX_STUB} bytes"
    );
    ensure!(
        stub.starts_with(b"MZ"),
        "the EFI stub has no DOS header (MZ)"
    );
    let pe = u32_at(stub, DOS_LFANEW)? as usize;
    ensure!(
        stub.get(pe..pe + 4) == Some(b"PE\0\0"),
        "no PE signature at {pe:#x}"
    );
    let coff = pe + 4;
    let nsections = u16_at(stub, coff + 2)? as usize;
    let opt_size = u16_at(stub, coff + 16)? as usize;
    let opt = coff + COFF_HEADER;
    ensure!(u16_at(stub, opt)? == PE32_PLUS, "the EFI stub is not PE32+");
    let section_align = u64::from(u32_at(stub, opt + 32)?);
    let file_align = u64::from(u32_at(stub, opt + 36)?);
    let size_of_headers = u32_at(stub, opt + 60)? as usize;
    let ndirs = u32_at(stub, opt + 108)? as usize;
    ensure!(
        section_align.is_power_of_two() && file_align.is_power_of_two() && file_align >= 512,
        "bad alignment: SectionAlignment {section_align:#x}, FileAlignment {file_align:#x}"
    );
    let table = opt + opt_size;

    // The end of the stub's image in memory and in the file.
    let mut vm_end = 0u64;
    let mut first_raw = u64::MAX;
    for i in 0..nsections {
        let h = table + i * SECTION_HEADER;
        let name = stub.get(h..h + 8).context("section table truncated")?;
        let name = String::from_utf8_lossy(name)
            .trim_end_matches('\0')
            .to_string();
        if [".osrel", ".cmdline", ".initrd", ".linux"].contains(&name.as_str()) {
            bail!("the EFI stub already has a {name} section");
        }
        let vsize = u64::from(u32_at(stub, h + 8)?);
        let va = u64::from(u32_at(stub, h + 12)?);
        let raw_size = u64::from(u32_at(stub, h + 16)?);
        let raw_ptr = u64::from(u32_at(stub, h + 20)?);
        vm_end = vm_end.max(va + vsize.max(raw_size));
        if raw_size > 0 {
            first_raw = first_raw.min(raw_ptr);
        }
    }
    let new_table_end = table + (nsections + 4) * SECTION_HEADER;
    ensure!(
        (new_table_end as u64) <= first_raw.min(size_of_headers as u64),
        "the EFI stub's headers have no room for four more section headers"
    );

    ensure!(
        new_table_end <= stub.len(),
        "the EFI stub is shorter than its own headers"
    );
    let mut out = stub.to_vec();
    // Drop a certificate table (it sits at the end of the file, outside any section).
    if ndirs > DIR_SECURITY {
        let dir = opt + 112 + DIR_SECURITY * 8;
        let cert_off = u32_at(&out, dir)? as usize;
        let cert_size = u32_at(&out, dir + 4)? as usize;
        if cert_size != 0 {
            ensure!(
                cert_off >= new_table_end && cert_off <= out.len(),
                "certificate table at {cert_off:#x} overlaps the headers or lies outside the file"
            );
            out.truncate(cert_off);
            put_u32(&mut out, dir, 0);
            put_u32(&mut out, dir + 4, 0);
        }
    }

    let sections: [(&[u8; 8], &[u8]); 4] = [
        (b".osrel\0\0", payload.osrel),
        (b".cmdline", payload.cmdline),
        (b".initrd\0", payload.initrd),
        (b".linux\0\0", payload.linux),
    ];
    let mut va = align_up(vm_end, section_align)?;
    let mut initialized = u64::from(u32_at(&out, opt + 8)?);
    for (i, (name, data)) in sections.iter().enumerate() {
        let file_off = align_up(out.len() as u64, file_align)?;
        let raw_size = align_up(data.len() as u64, file_align)?;
        let end = file_off.checked_add(raw_size).context("UKI too large")?;
        ensure!(end <= u64::from(u32::MAX), "UKI larger than 4 GiB");
        ensure!(
            va + data.len() as u64 <= u64::from(u32::MAX),
            "UKI image larger than 4 GiB"
        );
        let h = table + (nsections + i) * SECTION_HEADER;
        out[h..h + 8].copy_from_slice(*name);
        put_u32(&mut out, h + 8, data.len() as u32); // VirtualSize
        put_u32(&mut out, h + 12, va as u32); // VirtualAddress
        put_u32(&mut out, h + 16, raw_size as u32); // SizeOfRawData
        put_u32(&mut out, h + 20, file_off as u32); // PointerToRawData
        out[h + 24..h + 36].fill(0); // relocations, line numbers
        put_u32(&mut out, h + 36, DATA_READ);
        out.resize(file_off as usize, 0);
        out.extend_from_slice(data);
        out.resize(end as usize, 0);
        initialized += raw_size;
        va = align_up(va + data.len() as u64, section_align)?;
    }
    let n = u16::try_from(nsections + 4).context("too many sections")?;
    out[coff + 2..coff + 4].copy_from_slice(&n.to_le_bytes());
    out[coff + 4..coff + 8].fill(0); // TimeDateStamp: reproducible
    put_u32(
        &mut out,
        opt + 8,
        u32::try_from(initialized).context("UKI too large")?,
    );
    put_u32(&mut out, opt + 56, va as u32); // SizeOfImage (already section-aligned)
    put_u32(&mut out, opt + 64, 0);
    let sum = checksum(&out, opt + 64);
    put_u32(&mut out, opt + 64, sum);
    Ok(out)
}

/// The PE image checksum (as `imagehlp!CheckSumMappedFile`): 16-bit one's-complement-style sum of
/// the file with the checksum field skipped, plus the file length.
pub fn checksum(data: &[u8], checksum_offset: usize) -> u32 {
    let mut sum: u64 = 0;
    for (i, chunk) in data.chunks(2).enumerate() {
        let off = i * 2;
        if off == checksum_offset || off == checksum_offset + 2 {
            continue;
        }
        let word = u64::from(chunk[0]) | (u64::from(*chunk.get(1).unwrap_or(&0)) << 8);
        sum += word;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    (sum as u32).wrapping_add(data.len() as u32)
}

/// A section of a PE file: name, virtual address, virtual size, file offset, raw size.
#[cfg(test)]
pub type SectionInfo = (String, u32, u32, u32, u32);

/// Lists the sections of a PE file.
#[cfg(test)]
pub fn sections(pe_file: &[u8]) -> Result<Vec<SectionInfo>> {
    let pe = u32_at(pe_file, DOS_LFANEW)? as usize;
    let coff = pe + 4;
    let n = u16_at(pe_file, coff + 2)? as usize;
    let table = coff + COFF_HEADER + u16_at(pe_file, coff + 16)? as usize;
    (0..n)
        .map(|i| {
            let h = table + i * SECTION_HEADER;
            let name = pe_file.get(h..h + 8).context("section table truncated")?;
            Ok((
                String::from_utf8_lossy(name)
                    .trim_end_matches('\0')
                    .to_string(),
                u32_at(pe_file, h + 12)?,
                u32_at(pe_file, h + 8)?,
                u32_at(pe_file, h + 20)?,
                u32_at(pe_file, h + 16)?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal PE32+ EFI application: headers in 0x400 bytes, one `.text` section.
    fn tiny_stub() -> Vec<u8> {
        let mut f = vec![0u8; 0x600];
        f[0..2].copy_from_slice(b"MZ");
        put_u32(&mut f, DOS_LFANEW, 0x40);
        f[0x40..0x44].copy_from_slice(b"PE\0\0");
        let coff = 0x44;
        f[coff..coff + 2].copy_from_slice(&0x8664u16.to_le_bytes());
        f[coff + 2..coff + 4].copy_from_slice(&1u16.to_le_bytes());
        f[coff + 16..coff + 18].copy_from_slice(&240u16.to_le_bytes());
        f[coff + 18..coff + 20].copy_from_slice(&0x22u16.to_le_bytes());
        let opt = coff + COFF_HEADER;
        f[opt..opt + 2].copy_from_slice(&PE32_PLUS.to_le_bytes());
        put_u32(&mut f, opt + 16, 0x1000); // AddressOfEntryPoint
        put_u32(&mut f, opt + 32, 0x1000);
        put_u32(&mut f, opt + 36, 0x200);
        put_u32(&mut f, opt + 56, 0x2000);
        put_u32(&mut f, opt + 60, 0x400);
        f[opt + 68..opt + 70].copy_from_slice(&10u16.to_le_bytes()); // EFI application
        put_u32(&mut f, opt + 108, 16);
        let h = opt + 240;
        f[h..h + 8].copy_from_slice(b".text\0\0\0");
        put_u32(&mut f, h + 8, 0x10);
        put_u32(&mut f, h + 12, 0x1000);
        put_u32(&mut f, h + 16, 0x200);
        put_u32(&mut f, h + 20, 0x400);
        put_u32(&mut f, h + 36, 0x6000_0020);
        f[0x400] = 0xc3;
        f
    }

    #[test]
    fn sections_follow_the_stub_aligned() {
        let mut linux = vec![0xaa; 5000];
        linux[..2].copy_from_slice(b"MZ");
        let uki = build(
            &tiny_stub(),
            &Payload {
                osrel: b"ID=x\n",
                cmdline: b"console=ttyS0",
                initrd: &[1; 700],
                linux: &linux,
            },
        )
        .unwrap();
        let s = sections(&uki).unwrap();
        let names: Vec<_> = s.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(names, [".text", ".osrel", ".cmdline", ".initrd", ".linux"]);
        assert_eq!(s[1].1, 0x2000);
        for w in s.windows(2) {
            assert_eq!(w[1].1 % 0x1000, 0, "VMA not section-aligned");
            assert_eq!(w[1].3 % 0x200, 0, "file offset not file-aligned");
            assert!(w[1].1 >= w[0].1 + w[0].2, "sections overlap in memory");
        }
        let linux_sec = &s[4];
        assert_eq!(&uki[linux_sec.3 as usize..][..linux.len()], &linux[..]);
        // objdump reads it as a PE image with the same sections.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uki.efi");
        std::fs::write(&path, &uki).unwrap();
        let out = std::process::Command::new("objdump")
            .arg("-h")
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("pei-x86-64"),
            "{text}"
        );
        assert!(text.contains(".linux") && text.contains(".osrel"), "{text}");
        // SizeOfImage covers the last section; the checksum verifies.
        let opt = 0x44 + COFF_HEADER;
        let size_of_image = u32_at(&uki, opt + 56).unwrap();
        assert_eq!(
            size_of_image,
            align_up(u64::from(s[4].1 + s[4].2), 0x1000).unwrap() as u32
        );
        assert_eq!(u32_at(&uki, opt + 64).unwrap(), checksum(&uki, opt + 64));
    }

    #[test]
    fn damaged_stubs_give_errors_not_panics() {
        let stub = tiny_stub();
        let payload = Payload {
            osrel: b"x",
            cmdline: b"y",
            initrd: b"z",
            linux: b"MZ",
        };
        for len in 0..stub.len() {
            let _ = build(&stub[..len], &payload);
        }
        // Overwrite each header field (every 4 bytes of the headers) with extreme values.
        for off in (0..0x400).step_by(2) {
            for v in [0u32, 1, 0x7fff_ffff, u32::MAX, 0x400, 0x600] {
                let mut s = stub.clone();
                let end = (off + 4).min(s.len());
                s[off..end].copy_from_slice(&v.to_le_bytes()[..end - off]);
                let _ = build(&s, &payload);
            }
        }
    }

    #[test]
    fn a_stub_already_holding_a_kernel_is_refused() {
        let uki = build(
            &tiny_stub(),
            &Payload {
                osrel: b"",
                cmdline: b"",
                initrd: b"",
                linux: b"MZ",
            },
        )
        .unwrap();
        let e = build(
            &uki,
            &Payload {
                osrel: b"",
                cmdline: b"",
                initrd: b"",
                linux: b"MZ",
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("already has"), "{e}");
        assert!(build(
            b"not a PE",
            &Payload {
                osrel: b"",
                cmdline: b"",
                initrd: b"",
                linux: b""
            }
        )
        .is_err());
    }
}
