//! Failing builds: each error names its step, exits with status 2 and leaves no image behind.

mod support;

use std::path::Path;

use support::*;

#[test]
fn missing_kernel_package_names_the_kernel_step() {
    assert_fails(
        &["--kernel-deb", "/nonexistent/linux-image.deb"],
        "kernel",
        "does not exist",
    );
}

#[test]
fn corrupt_kernel_package_names_the_kernel_step() {
    let dir = tempfile::tempdir().unwrap();
    let deb = dir.path().join("linux-image-corrupt_1_amd64.deb");
    std::fs::write(&deb, b"!<arch>\ngarbage that is no Debian package").unwrap();
    assert_fails(
        &["--kernel-deb", deb.to_str().unwrap()],
        "kernel",
        "not a readable Debian package",
    );
}

#[test]
fn unknown_module_names_the_kernel_step() {
    assert_fails(
        &["--module", "no_such_driver"],
        "kernel",
        "unknown kernel module \"no_such_driver\"",
    );
}

#[test]
fn database_libclamav_cannot_load_names_the_database_step() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("broken.ndb"),
        "not:a:valid:signature:line\n",
    )
    .unwrap();
    assert_fails(
        &["--db", dir.path().to_str().unwrap()],
        "database",
        "libclamav cannot load",
    );
}

#[test]
fn unwritable_output_directory_names_the_output_step() {
    let out = build(Path::new("/proc/coldscan-image-test/out"), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("error: step output:"), "{stderr}");
}
