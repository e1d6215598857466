//! Tests of the libclamav engine, and helpers (EICAR, a test database, an in-memory reader)
//! shared with the scan tests.

use super::*;

/// The EICAR test string, assembled at run time so that this source file does not contain it.
pub(crate) fn eicar() -> Vec<u8> {
    let parts = [
        "X5O!P%@AP[4\\PZX54(P^)7CC)7}$",
        "EICAR-STANDARD-",
        "ANTIVIRUS-TEST-",
        "FILE!$H+H*",
    ];
    parts.concat().into_bytes()
}

/// Writes a database detecting EICAR (`.ndb` body signature) and clam.exe (`.hsb` sha256).
pub(crate) fn write_db(dir: &Path) {
    let hex: String = eicar().iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(dir.join("eicar.ndb"), format!("Test.EICAR:0:*:{hex}\n")).unwrap();
    let clam = std::fs::read("/usr/share/clamav-testfiles/clam.exe").unwrap();
    use sha2::Digest;
    let h = hex::encode(sha2::Sha256::digest(&clam));
    std::fs::write(
        dir.join("clam.hsb"),
        format!("{h}:{}:clam.exe\n", clam.len()),
    )
    .unwrap();
}

/// A [`FileReader`] over bytes, optionally failing past a byte offset.
#[derive(Debug)]
pub(crate) struct MemReader {
    pub data: Vec<u8>,
    pub fail_at: Option<u64>,
    pub size_override: Option<u64>,
    /// Return at most this many bytes per read (short reads are legal).
    pub max_read: usize,
}

impl MemReader {
    pub(crate) fn new(data: Vec<u8>) -> Self {
        MemReader {
            data,
            fail_at: None,
            size_override: None,
            max_read: usize::MAX,
        }
    }
}

impl FileReader for MemReader {
    fn size(&self) -> u64 {
        self.size_override.unwrap_or(self.data.len() as u64)
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if let Some(f) = self.fail_at {
            if offset + buf.len() as u64 > f {
                return Err(Error::io(
                    "mem",
                    offset,
                    std::io::Error::other("planted read error"),
                ));
            }
        }
        let Ok(off) = usize::try_from(offset) else {
            return Ok(0);
        };
        let Some(src) = self.data.get(off..) else {
            return Ok(0);
        };
        let n = src.len().min(buf.len()).min(self.max_read);
        buf[..n].copy_from_slice(&src[..n]);
        Ok(n)
    }
}

pub(crate) fn engine(limits: Limits) -> ClamAvEngine {
    let dir = tempfile::tempdir().unwrap();
    write_db(dir.path());
    ClamAvEngine::load(&[dir.path().to_path_buf()], limits).unwrap()
}

#[test]
fn detects_eicar_in_the_middle_of_a_file() {
    let e = engine(Limits::default());
    assert!(e.signatures() >= 2);
    assert_eq!(e.version(), ffi::version());
    let mut data = vec![b'a'; 100_000];
    data.extend(eicar());
    data.extend(vec![b'b'; 100_000]);
    let v = e.scan(&mut MemReader::new(data), "x").unwrap();
    assert_eq!(v.signatures, vec!["Test.EICAR.UNOFFICIAL".to_string()]);
    assert!(v.incomplete.is_empty());
}

#[test]
fn short_reads_are_completed() {
    let e = engine(Limits::default());
    let mut data = vec![0x90u8; 50_001];
    data.extend(eicar());
    data.extend(vec![0x90u8; 50_003]);
    let mut r = MemReader::new(data);
    r.max_read = 7;
    let v = e.scan(&mut r, "short-reads").unwrap();
    assert_eq!(v.signatures, vec!["Test.EICAR.UNOFFICIAL".to_string()]);
    assert!(v.incomplete.is_empty(), "{v:?}");
}

#[test]
fn clean_and_empty_content() {
    let e = engine(Limits::default());
    let v = e
        .scan(&mut MemReader::new(b"hello world".to_vec()), "x")
        .unwrap();
    assert!(v.is_clean(), "{v:?}");
    let v = e.scan(&mut MemReader::new(Vec::new()), "empty").unwrap();
    assert!(v.is_clean(), "{v:?}");
}

#[test]
fn hash_signature_matches_clam_exe() {
    let e = engine(Limits::default());
    let clam = std::fs::read("/usr/share/clamav-testfiles/clam.exe").unwrap();
    let v = e.scan(&mut MemReader::new(clam), "clam.exe").unwrap();
    assert_eq!(v.signatures, vec!["clam.exe.UNOFFICIAL".to_string()]);
}

#[test]
fn read_error_is_not_clean() {
    let e = engine(Limits::default());
    let mut r = MemReader::new(vec![0u8; 1 << 20]);
    r.fail_at = Some(4096);
    let v = e.scan(&mut r, "bad").unwrap();
    assert!(v.signatures.is_empty());
    assert_eq!(v.incomplete.len(), 1, "{v:?}");
    assert_eq!(v.incomplete[0].reason, Reason::IoError);
}

#[test]
fn truncated_content_is_not_clean() {
    let e = engine(Limits::default());
    let mut r = MemReader::new(vec![0u8; 10_000]);
    r.size_override = Some(50_000);
    let v = e.scan(&mut r, "short").unwrap();
    assert!(!v.is_clean(), "{v:?}");
    assert_eq!(v.incomplete[0].reason, Reason::Corrupt);
}

#[test]
fn over_max_file_size_is_too_large() {
    let e = engine(Limits {
        max_file_size: 1000,
        ..Limits::default()
    });
    let mut data = eicar();
    data.resize(2000, b' ');
    let v = e.scan(&mut MemReader::new(data), "big").unwrap();
    assert!(v.signatures.is_empty());
    assert_eq!(v.incomplete[0].reason, Reason::TooLarge);
}

#[test]
fn alert_names_are_classified() {
    assert_eq!(
        classify("Heuristics.Limits.Exceeded.MaxFileSize"),
        Alert::NotScanned(Reason::TooLarge)
    );
    assert_eq!(
        classify("Heuristics.Limits.Exceeded.MaxRecursion"),
        Alert::NotScanned(Reason::Limit)
    );
    assert_eq!(
        classify("Heuristics.Encrypted.Zip"),
        Alert::NotScanned(Reason::Encrypted)
    );
    assert_eq!(
        classify("Win.Test.EICAR_HDB-1"),
        Alert::Detection("Win.Test.EICAR_HDB-1".into())
    );
}

#[test]
fn bad_databases_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let err = ClamAvEngine::load(&[missing], Limits::default()).unwrap_err();
    assert!(err.to_string().contains("cannot open"), "{err}");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = ClamAvEngine::load(&[empty], Limits::default()).unwrap_err();
    assert!(err.to_string().contains("no signatures"), "{err}");
    let bad = dir.path().join("bad.ndb");
    std::fs::write(&bad, "this is not a signature\n").unwrap();
    let err = ClamAvEngine::load(&[bad], Limits::default()).unwrap_err();
    assert!(err.to_string().contains("Malformed"), "{err}");
}

#[test]
fn corrupt_cvd_is_an_error_and_versions_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut head = b"ClamAV-VDB:24 Nov 2026 02-00 +0000:27042:100:90:x:y:builder:1".to_vec();
    head.resize(512, b' ');
    assert_eq!(
        cvd_version(&write(dir.path(), "daily.cvd", &head)),
        Some(27042)
    );
    assert_eq!(cvd_version(&write(dir.path(), "x.ndb", &head)), None);
    assert_eq!(
        cvd_version(&write(dir.path(), "short.cld", b"ClamAV-VDB:1:2")),
        None
    );
    // A truncated .cvd (header, no signed archive) is refused with libclamav's reason.
    let only = tempfile::tempdir().unwrap();
    let cvd = write(only.path(), "main.cvd", &head);
    let err = ClamAvEngine::load(&[cvd], Limits::default()).unwrap_err();
    assert_eq!(err.reason(), Reason::EngineError);
    assert!(err.to_string().contains("main.cvd"), "{err}");
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

#[test]
fn engine_is_shared_across_threads() {
    let e = std::sync::Arc::new(engine(Limits::default()));
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let e = e.clone();
            std::thread::spawn(move || {
                let mut data = vec![b'x'; 1000 * (i + 1)];
                data.extend(eicar());
                e.scan(&mut MemReader::new(data), "t").unwrap().signatures
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), vec!["Test.EICAR.UNOFFICIAL".to_string()]);
    }
}

#[test]
fn the_report_names_the_database_version_and_digest() {
    // Unsigned databases: version 0, and the digest over the directory's database files.
    let dir = tempfile::tempdir().unwrap();
    write_db(dir.path());
    std::fs::write(dir.path().join("notes.txt"), b"not loaded, not digested").unwrap();
    let e = ClamAvEngine::load(&[dir.path().to_path_buf()], Limits::default()).unwrap();
    let db = e.info().db.unwrap();
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for name in ["clam.hsb", "eicar.ndb"] {
        let c = std::fs::read(dir.path().join(name)).unwrap();
        h.update(name.as_bytes());
        h.update([0]);
        h.update((c.len() as u64).to_le_bytes());
        h.update(&c);
    }
    assert_eq!(db.version, 0);
    assert_eq!(db.sha256, hex::encode(h.finalize()));
    assert_eq!(db.manager_version, None);

    // A container database named like the official daily one (`daily.cud`, built by sigtool
    // with version 4242): libclamav's CL_ENGINE_DB_VERSION is the daily database's version.
    let build = tempfile::tempdir().unwrap();
    std::fs::write(build.path().join("COPYING"), b"test").unwrap();
    std::fs::write(
        build.path().join("daily.ndb"),
        b"Coldscan.Test.Cud:0:*:4142434445464748\n",
    )
    .unwrap();
    let mut sigtool = std::process::Command::new("sigtool")
        .args(["--build=daily.cud", "--unsigned", "--cvd-version=4242"])
        .current_dir(build.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    // sigtool asks for a builder name.
    sigtool
        .stdin
        .take()
        .unwrap()
        .write_all(b"coldscan\n")
        .unwrap();
    assert!(sigtool.wait().unwrap().success());
    let cud = tempfile::tempdir().unwrap();
    std::fs::copy(build.path().join("daily.cud"), cud.path().join("daily.cud")).unwrap();
    let e = ClamAvEngine::load(&[cud.path().to_path_buf()], Limits::default()).unwrap();
    assert_eq!(e.info().db.unwrap().version, 4242);
}
