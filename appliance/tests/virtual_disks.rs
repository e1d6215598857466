//! End-to-end: `coldscan cat TARGET` (whole virtual disk) of VMDK images and NBD exports is
//! byte-identical to `qemu-img convert -O raw`, and `coldscan info` shows a delta disk's chain.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn coldscan(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_coldscan"))
        .args(args)
        .output()
        .expect("coldscan")
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A few MiB of pseudo-random data with zero regions.
fn disk_data() -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut v: Vec<u8> = (0..(3usize << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    v[1 << 20..(2 << 20) + 12_345].fill(0);
    v
}

fn qemu_raw(dir: &Path, image: &Path) -> Vec<u8> {
    let out = dir.join("expected.raw");
    run("qemu-img", &["convert", "-O", "raw", s(image), s(&out)]);
    std::fs::read(out).unwrap()
}

fn cat(target: &str) -> Vec<u8> {
    let out = coldscan(&["cat", target]);
    assert!(
        out.status.success(),
        "cat {target}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn cat_of_every_vmdk_subformat_equals_qemu_img_convert() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, disk_data()).unwrap();
    for sub in [
        "monolithicSparse",
        "streamOptimized",
        "monolithicFlat",
        "twoGbMaxExtentSparse",
    ] {
        let image = dir.path().join(format!("{sub}.vmdk"));
        let opt = format!("subformat={sub}");
        run(
            "qemu-img",
            &["convert", "-O", "vmdk", "-o", &opt, s(&raw), s(&image)],
        );
        assert!(
            cat(s(&image)) == qemu_raw(dir.path(), &image),
            "{sub}: coldscan cat differs from qemu-img convert -O raw"
        );
    }
}

#[test]
fn info_shows_a_delta_chain_and_cat_reads_its_top_state() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, disk_data()).unwrap();
    let base = dir.path().join("base.vmdk");
    run("qemu-img", &["convert", "-O", "vmdk", s(&raw), s(&base)]);
    let top = dir.path().join("top.vmdk");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-b",
            "base.vmdk",
            "-F",
            "vmdk",
            s(&top),
        ],
    );
    run("qemu-io", &["-c", "write -P 0xab 1000k 300k", s(&top)]);
    assert!(cat(s(&top)) == qemu_raw(dir.path(), &top));
    let out = coldscan(&["info", "--json", s(&top)]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let chain = json[0]["chain"].as_array().unwrap();
    assert_eq!(chain.len(), 2, "{json}");
    assert!(chain[1]["path"].as_str().unwrap().ends_with("base.vmdk"));
    // A hostile extent path is an error naming it, with exit code 2 and nothing on stdout.
    let evil = dir.path().join("evil.vmdk");
    std::fs::write(
        &evil,
        "# Disk DescriptorFile\nRW 8 FLAT \"/etc/shadow\" 0\n",
    )
    .unwrap();
    let out = coldscan(&["cat", s(&evil)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/etc/shadow"));
}

/// `qemu-nbd`, killed through its own handle when the test ends.
struct QemuNbd(Child);

impl Drop for QemuNbd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn cat_of_an_nbd_export_equals_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, disk_data()).unwrap();
    let qcow2 = dir.path().join("disk.qcow2");
    run("qemu-img", &["convert", "-O", "qcow2", s(&raw), s(&qcow2)]);
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = QemuNbd(
        Command::new("qemu-nbd")
            .args([
                "--read-only",
                "--persistent",
                "-f",
                "qcow2",
                "-b",
                "127.0.0.1",
            ])
            .args(["-p", &port.to_string(), s(&qcow2)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu-nbd"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "qemu-nbd did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("nbd://127.0.0.1:{port}/");
    assert!(cat(&url) == std::fs::read(&raw).unwrap());
    let out = coldscan(&["info", &url]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("format:      nbd"));
}

/// `coldscan cat DISK >> out` (an `O_APPEND` stdout ignores seeks) and `1<> out` on a non-empty
/// file (seeking would keep its old bytes) must write every byte, zeros included; `> out` may
/// leave holes but reads back the same. Regression: `>>` gave a same-sized, different copy.
#[test]
fn cat_into_an_append_mode_or_non_empty_stdout_writes_the_zeros() {
    use std::fs::OpenOptions;
    let dir = tempfile::tempdir().unwrap();
    let data = disk_data();
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, &data).unwrap();
    let cat_to = |file: std::fs::File| {
        let out = Command::new(env!("CARGO_BIN_EXE_coldscan"))
            .args(["cat", s(&raw)])
            .stdout(Stdio::from(file))
            .output()
            .expect("coldscan");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // Empty file opened for appending.
    let appended = dir.path().join("appended.raw");
    cat_to(
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&appended)
            .unwrap(),
    );
    assert!(std::fs::read(&appended).unwrap() == data, ">> empty file");
    // Appending after existing content: the copy follows it.
    let prefix = b"existing content\n";
    let after = dir.path().join("after.raw");
    std::fs::write(&after, prefix).unwrap();
    cat_to(OpenOptions::new().append(true).open(&after).unwrap());
    let got = std::fs::read(&after).unwrap();
    assert!(got[..prefix.len()] == prefix[..] && got[prefix.len()..] == data[..]);
    // Read-write without truncation over old non-zero bytes.
    let over = dir.path().join("over.raw");
    std::fs::write(&over, vec![0xFFu8; data.len()]).unwrap();
    cat_to(OpenOptions::new().write(true).open(&over).unwrap());
    assert!(std::fs::read(&over).unwrap() == data, "1<> non-empty file");
    // A fresh truncated file still reads back the same.
    let fresh = dir.path().join("fresh.raw");
    cat_to(std::fs::File::create(&fresh).unwrap());
    assert!(std::fs::read(&fresh).unwrap() == data, "> file");
}
