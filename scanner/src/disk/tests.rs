//! Opening with a known top-layer format ([`open_as`]) against probing ([`open`]).

use super::testutil::{guest_content, p, read_all, run, write_raw};
use super::*;

#[test]
fn a_raw_disk_that_starts_with_a_qcow2_header_is_served_raw() {
    let dir = tempfile::tempdir().unwrap();
    // A real qcow2 header naming a backing file, as a guest could write it to its own disk.
    let planted = dir.path().join("planted.qcow2");
    let secret = dir.path().join("secret.raw");
    write_raw(&secret, &[0x5a; 4096]);
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "secret.raw",
            "-F",
            "raw",
            p(&planted),
            "1M",
        ],
    );
    let mut guest = std::fs::read(&planted).unwrap();
    guest.resize(1 << 20, 0x11);
    let disk = dir.path().join("guest.raw");
    write_raw(&disk, &guest);

    // Probing follows the planted header; the stated format does not.
    assert_eq!(
        open(&disk, &OpenOptions::default()).unwrap().format,
        DiskFormat::Qcow2
    );
    let opened = open_as(&disk, DiskFormat::Raw, &OpenOptions::default()).unwrap();
    assert_eq!(opened.format, DiskFormat::Raw);
    assert_eq!(opened.source.size(), guest.len() as u64);
    assert_eq!(opened.chain.len(), 1);
    assert_eq!(read_all(opened.source.as_ref()), guest);
}

#[test]
fn a_qcow2_opened_as_qcow2_equals_probing_it() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.raw");
    write_raw(&base, &guest_content(2 << 20, 7));
    let top = dir.path().join("top.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.raw",
            "-F",
            "raw",
            p(&top),
        ],
    );
    run("qemu-io", &["-c", "write -P 0xab 1M 64k", p(&top)]);
    let probed = open(&top, &OpenOptions::default()).unwrap();
    let stated = open_as(&top, DiskFormat::Qcow2, &OpenOptions::default()).unwrap();
    assert_eq!(stated.format, DiskFormat::Qcow2);
    assert_eq!(stated.source.size(), probed.source.size());
    let chain = |d: &OpenedDisk| {
        d.chain
            .iter()
            .map(|l| (l.path.clone(), l.format, l.virtual_size))
            .collect::<Vec<_>>()
    };
    assert_eq!(chain(&stated), chain(&probed));
    assert_eq!(chain(&stated).len(), 2);
    assert_eq!(
        read_all(stated.source.as_ref()),
        read_all(probed.source.as_ref())
    );
}

#[test]
fn a_raw_file_stated_as_qcow2_is_refused_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("plain.img");
    write_raw(&disk, &guest_content(64 << 10, 3));
    let err = open_as(&disk, DiskFormat::Qcow2, &OpenOptions::default()).unwrap_err();
    match &err {
        Error::Corrupt { object, offset, .. } => {
            assert_eq!(object, &disk.display().to_string());
            assert_eq!(*offset, 0);
        }
        other => panic!("expected a corrupt error, got {other}"),
    }
    assert!(err.to_string().contains("qcow2"), "{err}");
    // A VMDK stated for a qcow2 is refused too, naming what the header really is.
    let q = dir.path().join("q.qcow2");
    run("qemu-img", &["create", "-q", "-f", "qcow2", p(&q), "1M"]);
    let err = open_as(&q, DiskFormat::Vmdk, &OpenOptions::default()).unwrap_err();
    assert!(err.to_string().contains("a qcow2 header"), "{err}");
    // An NBD export is no file format.
    assert!(open_as(&q, DiskFormat::Nbd, &OpenOptions::default()).is_err());
}
