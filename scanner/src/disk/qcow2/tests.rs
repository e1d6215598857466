//! qcow2 reader tests against images made by the real `qemu-img` / `qemu-io`.

use std::path::{Path, PathBuf};

use crate::disk::testutil::{
    check_ranges, guest_content, p, patch, qemu_raw, read_all, run, write_raw,
};
use crate::disk::{open, ChainPolicy, DiskFormat, OpenOptions};
use crate::error::Error;

const SIZE: usize = 6 << 20;

fn opts() -> OpenOptions {
    OpenOptions::default()
}

fn convert(dir: &Path, raw: &Path, name: &str, args: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let mut a = vec!["convert", "-f", "raw", "-O", "qcow2"];
    a.extend_from_slice(args);
    a.push(p(raw));
    a.push(p(&out));
    run("qemu-img", &a);
    out
}

#[test]
fn every_qemu_variant_reads_like_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("raw.img");
    let data = guest_content(SIZE, 7);
    write_raw(&raw, &data);
    let variants: &[(&str, &[&str], &str)] = &[
        ("v2.qcow2", &["-o", "compat=0.10"], "2"),
        ("v3.qcow2", &[], "3"),
        ("zlib.qcow2", &["-c"], "zlib"),
        ("zstd.qcow2", &["-c", "-o", "compression_type=zstd"], "zstd"),
        ("extl2.qcow2", &["-o", "extended_l2=on"], "extended"),
        (
            "extl2z.qcow2",
            &["-c", "-o", "extended_l2=on,cluster_size=16k"],
            "extended",
        ),
        ("c512.qcow2", &["-o", "cluster_size=512"], "512"),
        ("c2m.qcow2", &["-o", "cluster_size=2M"], "2097152"),
        (
            "c4k-zstd.qcow2",
            &["-c", "-o", "cluster_size=4k,compression_type=zstd"],
            "zstd",
        ),
    ];
    for (name, args, fact) in variants {
        let img = convert(dir.path(), &raw, name, args);
        let disk = open(&img, &opts()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(disk.format, DiskFormat::Qcow2);
        assert_eq!(disk.chain.len(), 1);
        let got = read_all(disk.source.as_ref());
        assert!(got == data, "{name}: content differs from the raw image");
        assert!(
            got == qemu_raw(&img, "qcow2"),
            "{name}: differs from qemu-img"
        );
        check_ranges(disk.source.as_ref(), &data);
        let details = format!("{:?}", disk.details);
        assert!(details.contains(fact), "{name}: {details}");
    }
}

/// Builds base (raw or qcow2) <- mid <- top with writes in both overlays; returns the top.
fn chain(dir: &Path, base_fmt: &str) -> PathBuf {
    let raw = dir.join("base.raw");
    write_raw(&raw, &guest_content(SIZE, 11));
    let base = if base_fmt == "raw" {
        raw.clone()
    } else {
        convert(dir, &raw, "base.qcow2", &[])
    };
    let base_name = base.file_name().unwrap().to_str().unwrap();
    let mid = dir.join("mid.qcow2");
    let top = dir.join("top.qcow2");
    // The overlays are larger than the base: the part beyond reads as zeros.
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            base_name,
            "-F",
            base_fmt,
            p(&mid),
            "8M",
        ],
    );
    run(
        "qemu-io",
        &[
            "-c",
            "write -P 0xab 1M 300k",
            "-c",
            "write -P 0x5a 7M 4k",
            p(&mid),
        ],
    );
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "mid.qcow2",
            "-F",
            "qcow2",
            p(&top),
        ],
    );
    run(
        "qemu-io",
        &[
            "-c",
            "write -P 0xcd 1200k 1M",
            "-c",
            "write -z 5M 64k",
            "-c",
            "write -P 1 6000k 1k",
            p(&top),
        ],
    );
    top
}

#[test]
fn three_level_chains_read_the_top_state() {
    for base_fmt in ["raw", "qcow2"] {
        let dir = tempfile::tempdir().unwrap();
        let top = chain(dir.path(), base_fmt);
        let disk = open(&top, &opts()).unwrap();
        assert_eq!(disk.chain.len(), 3, "{base_fmt}");
        assert_eq!(disk.source.size(), 8 << 20);
        let want = qemu_raw(&top, "qcow2");
        let got = read_all(disk.source.as_ref());
        assert!(got == want, "{base_fmt} chain differs from qemu-img");
        check_ranges(disk.source.as_ref(), &want);
    }
}

#[test]
fn backing_files_of_other_formats() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_raw(&d.join("base.raw"), &guest_content(SIZE, 23));
    for (fmt, name) in [
        ("vpc", "base.vhd"),
        ("vhdx", "base.vhdx"),
        ("qcow2", "base.qcow2"),
    ] {
        run(
            "qemu-img",
            &[
                "convert",
                "-f",
                "raw",
                "-O",
                fmt,
                p(&d.join("base.raw")),
                p(&d.join(name)),
            ],
        );
        let top = d.join(format!("over-{fmt}.qcow2"));
        run(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                name,
                "-F",
                fmt,
                p(&top),
                "7M",
            ],
        );
        run("qemu-io", &["-c", "write -P 0x66 100k 200k", p(&top)]);
        let disk = open(&top, &opts()).unwrap();
        assert_eq!(disk.chain.len(), 2, "{fmt}");
        let want = qemu_raw(&top, "qcow2");
        assert!(read_all(disk.source.as_ref()) == want, "qcow2 over {fmt}");
    }
}

#[test]
fn extended_l2_overlays_mix_subclusters_with_the_backing_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_raw(&d.join("base.raw"), &guest_content(SIZE, 19));
    let top = d.join("top.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "extended_l2=on",
            "-b",
            "base.raw",
            "-F",
            "raw",
            p(&top),
        ],
    );
    // 4 KiB writes and zero writes inside 64 KiB clusters (2 KiB subclusters).
    run(
        "qemu-io",
        &[
            "-c",
            "write -P 0x31 4k 4k",
            "-c",
            "write -P 0x32 70k 2k",
            "-c",
            "write -z 140k 6k",
            "-c",
            "write -P 0x33 1M 130k",
            "-c",
            "discard 1M 64k",
            p(&top),
        ],
    );
    let disk = open(&top, &opts()).unwrap();
    let want = qemu_raw(&top, "qcow2");
    let got = read_all(disk.source.as_ref());
    assert_eq!(got.iter().zip(&want).position(|(a, b)| a != b), None);
    check_ranges(disk.source.as_ref(), &want);
}

#[test]
fn internal_snapshots_read_their_own_state() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("raw.img");
    write_raw(&raw, &guest_content(SIZE, 3));
    let img = convert(dir.path(), &raw, "snap.qcow2", &[]);
    run("qemu-io", &["-c", "write -P 0x11 0 2M", p(&img)]);
    let first = qemu_raw(&img, "qcow2");
    run("qemu-img", &["snapshot", "-c", "first", p(&img)]);
    run("qemu-io", &["-c", "write -P 0x22 1M 2M", p(&img)]);
    run("qemu-img", &["resize", "-q", p(&img), "8M"]);
    let active = qemu_raw(&img, "qcow2");

    let disk = open(&img, &opts()).unwrap();
    assert!(read_all(disk.source.as_ref()) == active);
    assert!(format!("{:?}", disk.details).contains("first"));
    for sel in ["first", "1"] {
        let o = OpenOptions {
            snapshot: Some(sel.into()),
            ..opts()
        };
        let snap = open(&img, &o).unwrap();
        assert_eq!(snap.source.size(), SIZE as u64, "{sel}");
        assert!(read_all(snap.source.as_ref()) == first, "snapshot {sel}");
    }
    let o = OpenOptions {
        snapshot: Some("nope".into()),
        ..opts()
    };
    match open(&img, &o) {
        Err(Error::NotFound { detail, .. }) => assert!(detail.contains("first"), "{detail}"),
        other => panic!("unexpected {other:?}"),
    }
}

fn overlay_named(dir: &Path, file: &str, backing: &str) -> PathBuf {
    let img = dir.join(file);
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-b",
            backing,
            "-F",
            "raw",
            p(&img),
            "1M",
        ],
    );
    img
}

#[test]
fn hostile_backing_paths_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("a/b");
    std::fs::create_dir_all(&sub).unwrap();
    write_raw(&dir.path().join("x"), &[0u8; 4096]);
    for name in ["/etc/shadow", "../../x"] {
        let img = overlay_named(&sub, "top.qcow2", name);
        let err = open(&img, &opts()).unwrap_err();
        assert!(matches!(err, Error::Refused { .. }), "{name}: {err}");
    }
    // Allowed when the user names the directory.
    let img = overlay_named(&sub, "top.qcow2", "../../x");
    let o = OpenOptions {
        chain: ChainPolicy {
            allowed_dirs: vec![dir.path().to_path_buf()],
        },
        ..opts()
    };
    let disk = open(&img, &o).unwrap();
    assert_eq!(disk.chain.len(), 2);
}

#[test]
fn a_raw_backing_format_is_not_reinterpreted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The backing file is a qcow2 image, but the overlay says it is raw: its bytes are the disk.
    let raw = d.join("r.img");
    write_raw(&raw, &guest_content(1 << 20, 8));
    let inner = convert(d, &raw, "inner.qcow2", &[]);
    let top = d.join("top.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-b",
            "inner.qcow2",
            "-F",
            "raw",
            p(&top),
            "4M",
        ],
    );
    let disk = open(&top, &opts()).unwrap();
    assert_eq!(disk.chain[1].format, DiskFormat::Raw);
    let want = qemu_raw(&top, "qcow2");
    assert!(read_all(disk.source.as_ref()) == want);
    assert!(want.starts_with(b"QFI\xfb"));
    let _ = inner;
}

#[test]
fn looping_and_deep_chains_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Self-reference and a two-file loop.
    let img = overlay_named(d, "self.qcow2", "self.qcow2");
    assert!(matches!(
        open(&img, &opts()).unwrap_err(),
        Error::Corrupt { .. }
    ));
    let a = dir.path().join("a.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-b",
            "b.qcow2",
            "-F",
            "qcow2",
            p(&a),
            "1M",
        ],
    );
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-b",
            "a.qcow2",
            "-F",
            "qcow2",
            p(&d.join("b.qcow2")),
            "1M",
        ],
    );
    let err = open(&a, &opts()).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    // 34 layers: deeper than MAX_CHAIN_DEPTH.
    write_raw(&d.join("l0"), &[0u8; 4096]);
    for i in 1..=34 {
        let fmt = if i == 1 { "raw" } else { "qcow2" };
        let prev = format!("l{}", i - 1);
        run(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-u",
                "-b",
                &prev,
                "-F",
                fmt,
                p(&d.join(format!("l{i}"))),
                "1M",
            ],
        );
    }
    let err = open(&d.join("l34"), &opts()).unwrap_err();
    assert!(matches!(err, Error::Limit { .. }), "{err}");
    assert!(open(&d.join("l31"), &opts()).is_ok());
}

#[test]
fn hostile_headers_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("raw.img");
    write_raw(&raw, &guest_content(1 << 20, 5));
    let good = convert(dir.path(), &raw, "good.qcow2", &[]);
    let copy = |n: &str| {
        let c = dir.path().join(n);
        std::fs::copy(&good, &c).unwrap();
        c
    };
    // L1 table past the end of the file.
    let c = copy("l1.qcow2");
    patch(&c, 40, &(1u64 << 40).to_be_bytes());
    let err = open(&c, &opts()).unwrap_err();
    assert!(
        matches!(err, Error::Corrupt { .. }) && err.to_string().contains("L1"),
        "{err}"
    );
    // Absurd virtual size.
    let c = copy("size.qcow2");
    patch(&c, 24, &(1u64 << 62).to_be_bytes());
    assert!(matches!(
        open(&c, &opts()).unwrap_err(),
        Error::Corrupt { .. }
    ));
    // Virtual size larger than the L1 table maps.
    let c = copy("l1small.qcow2");
    patch(&c, 24, &(1u64 << 40).to_be_bytes());
    assert!(matches!(
        open(&c, &opts()).unwrap_err(),
        Error::Corrupt { .. }
    ));
    // Encrypted: a real LUKS image, and the legacy AES method patched in.
    let luks = dir.path().join("luks.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "--object",
            "secret,id=s0,data=pw",
            "-o",
            "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10",
            p(&luks),
            "1M",
        ],
    );
    let err = open(&luks, &opts()).unwrap_err();
    assert!(matches!(err, Error::Encrypted { .. }), "{err}");
    assert_eq!(err.reason(), crate::error::Reason::Encrypted);
    let c = copy("crypt.qcow2");
    patch(&c, 32, &1u32.to_be_bytes());
    assert!(matches!(
        open(&c, &opts()).unwrap_err(),
        Error::Encrypted { .. }
    ));
    // Unknown incompatible feature.
    let c = copy("feat.qcow2");
    patch(&c, 72, &(1u64 << 40).to_be_bytes());
    assert!(matches!(
        open(&c, &opts()).unwrap_err(),
        Error::Unsupported { .. }
    ));
    // External data file.
    let c = copy("data.qcow2");
    patch(&c, 72, &4u64.to_be_bytes());
    assert!(matches!(
        open(&c, &opts()).unwrap_err(),
        Error::Unsupported { .. }
    ));
    // Bad cluster size.
    let c = copy("cbits.qcow2");
    patch(&c, 20, &40u32.to_be_bytes());
    assert!(matches!(
        open(&c, &opts()).unwrap_err(),
        Error::Corrupt { .. }
    ));
    // An L2 table pointer past the end of the file fails the read, not the process.
    let c = copy("l2.qcow2");
    let l1_off = u64::from_be_bytes(std::fs::read(&c).unwrap()[40..48].try_into().unwrap());
    patch(&c, l1_off, &((1u64 << 40) | (1 << 63)).to_be_bytes());
    let disk = open(&c, &opts()).unwrap();
    let mut b = [0u8; 512];
    assert!(disk.source.read_exact_at(0, &mut b).is_err());
    // The last data cluster cut short: zeros past the end of the file, as QEMU reads it.
    let c = copy("short.qcow2");
    let len = std::fs::metadata(&c).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&c)
        .unwrap()
        .set_len(len - 1000)
        .unwrap();
    let disk = open(&c, &opts()).unwrap();
    let got = read_all(disk.source.as_ref());
    assert!(got == qemu_raw(&c, "qcow2"), "short last cluster");
    // Truncated files.
    let bytes = std::fs::read(&good).unwrap();
    for n in [0usize, 4, 71, 100, 200] {
        let c = dir.path().join(format!("trunc{n}.qcow2"));
        std::fs::write(&c, &bytes[..n]).unwrap();
        let _ = open(&c, &opts()); // any error (or raw for tiny files), no panic
    }
}
