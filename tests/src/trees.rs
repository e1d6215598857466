//! The contents planted in fixtures: one rich tree covering the list (deep nesting,
//! Unicode and odd names, empty and sparse files, hard links, symlinks, streams, compressed
//! directories), plus the large parts only some fixtures carry.

use crate::content::{seed_of, Content};
use crate::tree::{Node, Tree};

/// Mebibyte.
pub const MIB: u64 = 1 << 20;

/// The content every filesystem of every fixture gets; `tag` makes each volume's content
/// distinct (a file naming it, and seeds of random files).
pub fn rich_tree(tag: &str) -> Tree {
    let mut t = Tree::new();
    t.file(
        "/volume-tag.txt",
        format!("coldscan fixture volume {tag}\n").as_bytes(),
    );
    t.file("/docs/readme.txt", b"coldscan fixture: plain text file\n");
    t.file("/docs/empty.txt", b"");
    t.dir("/docs/empty-dir");
    t.file("/docs/Name With Spaces.txt", b"spaces in the name\n");
    t.file("/docs/UPPER CASE NAME.TXT", b"upper case\n");
    t.file(
        "/unicode/日本語のファイル名.txt",
        "こんにちは、世界\n".as_bytes(),
    );
    t.file(
        "/unicode/ディレクトリ名/中のファイル.txt",
        b"inside a Japanese directory\n",
    );
    t.file("/unicode/emoji 🦀🎉 file.bin", b"emoji in the name\n");
    t.file(
        "/unicode/cafe\u{301} combining mark.txt",
        b"e + U+0301 (not precomposed)\n",
    );
    t.file("/unicode/Ünïcödé Ωmega ÅÄÖ.txt", b"latin and greek\n");
    t.file("/odd/line\nbreak in name.txt", b"a newline in the name\n");
    t.file("/odd/tab\tin name.txt", b"a tab in the name\n");
    t.file("/odd/trailing dots and spaces. x", b"dots\n");
    t.random_file(&format!("/bin/random-{tag}-1m.bin"), MIB + 17);
    t.random_file("/bin/random-4095.bin", 4095);
    t.random_file("/bin/random-4096.bin", 4096);
    t.random_file("/bin/random-4097.bin", 4097);
    t.random_file("/bin/random-300k.bin", 300 * 1024 + 3);
    let run = |p: &str, len| Content::Random {
        seed: seed_of(p),
        len,
    };
    t.add(
        "/sparse/holes.img",
        Node::Sparse {
            size: 8 * MIB,
            runs: vec![
                (0, run("h0", 5000)),
                (3 * MIB + 123, run("h1", 70_000)),
                (8 * MIB - 4096, run("h2", 4096)),
            ],
        },
    );
    t.add(
        "/sparse/all-hole.img",
        Node::Sparse {
            size: 4 * MIB,
            runs: vec![],
        },
    );
    t.add(
        "/sparse/hole-at-end.img",
        Node::Sparse {
            size: 2 * MIB + 1,
            runs: vec![(0, run("he", 8192))],
        },
    );
    t.file("/links/target.txt", b"hard and symbolic link target\n");
    t.add(
        "/links/hardlink.txt",
        Node::HardLink("/links/target.txt".into()),
    );
    t.add(
        "/links/sub/hardlink-elsewhere.txt",
        Node::HardLink("/links/target.txt".into()),
    );
    t.add(
        "/links/relative-symlink",
        Node::Symlink("target.txt".into()),
    );
    t.add(
        "/links/absolute-symlink",
        Node::Symlink("/docs/readme.txt".into()),
    );
    t.add("/links/dir-symlink", Node::Symlink("../docs".into()));
    t.add(
        "/links/dangling-symlink",
        Node::Symlink("does/not/exist".into()),
    );
    t.add(
        "/links/long-symlink",
        Node::Symlink(format!("/{}", "long-target-component/".repeat(8)) + "end"),
    );
    let mut deep = String::from("/deep");
    for i in 1..=12 {
        deep.push_str(&format!("/level{i:02}"));
    }
    t.file(&format!("{deep}/deep.txt"), b"twelve levels down\n");
    t
}

/// Directory nesting `depth` levels below `/nested`, with a file at the bottom.
pub fn add_deep_nesting(t: &mut Tree, depth: usize) {
    let mut p = String::from("/nested");
    for i in 1..=depth {
        p.push_str(&format!("/d{i:02}"));
    }
    t.file(
        &format!("{p}/bottom.txt"),
        format!("{depth} levels down\n").as_bytes(),
    );
}

/// A directory of `n` tiny files.
pub fn add_many_files(t: &mut Tree, n: usize) {
    for i in 0..n {
        t.file(
            &format!("/many/file-{i:05}.txt"),
            format!("file {i}\n").as_bytes(),
        );
    }
}

/// A sparse file of `runs` 4 KiB data blocks each followed by a 4 KiB hole: one extent per
/// block, so that with more than a few dozen the filesystem needs a btree-format extent map.
pub fn add_fragmented(t: &mut Tree, path: &str, runs: u64) {
    let runs: Vec<(u64, Content)> = (0..runs)
        .map(|i| {
            (
                i * 8192,
                Content::Random {
                    seed: seed_of(&format!("{path}-{i}")),
                    len: 4096,
                },
            )
        })
        .collect();
    t.add(
        path,
        Node::Sparse {
            size: runs_end(&runs),
            runs,
        },
    );
}

fn runs_end(runs: &[(u64, Content)]) -> u64 {
    runs.last().map_or(0, |(o, c)| o + c.len())
}

/// A file larger than 100 MB of pseudo-random bytes.
pub fn add_big_file(t: &mut Tree, path: &str) {
    t.random_file(path, 101 * MIB + 3);
}

/// NTFS-only parts: alternate data streams and a compressed directory.
pub fn add_ntfs_parts(t: &mut Tree) {
    t.stream(
        "/docs/readme.txt",
        "Zone.Identifier",
        Content::text("[ZoneTransfer]\r\nZoneId=3\r\n"),
    );
    t.stream(
        "/docs/readme.txt",
        "hidden stream",
        Content::Random {
            seed: 99,
            len: 70_000,
        },
    );
    t.stream(
        "/docs/empty.txt",
        "empty-stream",
        Content::Bytes(Vec::new()),
    );
    t.dir("/compressed");
    t.compressed_dirs.insert("/compressed".into());
    let text: String = (0..20_000)
        .map(|i| format!("compressible line {i}\n"))
        .collect();
    t.file("/compressed/text.txt", text.as_bytes());
    t.random_file("/compressed/random.bin", 200 * 1024 + 5);
    t.file("/compressed/small.txt", b"small compressed file\n");
    t.file("/compressed/sub/nested.txt", &text.as_bytes()[..100_000]);
}

/// Directories the infected trees spread the test malware over: nested, with dots, spaces and
/// mixed case, as a real guest has them.
const INFECTED_DIRS: &[&str] = &[
    "/home/alice/Downloads",
    "/home/alice/.cache/mozilla/firefox/abc.default/cache2/entries",
    "/home/bob/Documents/2024/Invoices Q3",
    "/srv/www/uploads/2025/11/24",
    "/var/mail",
    "/opt/tools/bin",
];

/// A tree of test malware among clean files: the files of Debian's `clamav-testfiles` (read
/// now from [`crate::testdb::TESTFILES_DIR`], never committed) spread over nested
/// directories, EICAR (assembled at run time by [`crate::testdb::eicar`]) in a name with a
/// space, and clean neighbours. Returns the tree and the paths of the files a scan with the
/// test database must detect.
pub fn infected_tree(tag: &str) -> anyhow::Result<(Tree, Vec<String>)> {
    let mut t = Tree::new();
    let mut malicious = Vec::new();
    t.file(
        "/volume-tag.txt",
        format!("coldscan fixture volume {tag}\n").as_bytes(),
    );
    for (i, src) in crate::testdb::testfiles()?.iter().enumerate() {
        let name = src
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow::anyhow!("odd test file name {}", src.display()))?;
        let dir = INFECTED_DIRS[i % INFECTED_DIRS.len()];
        let path = format!("{dir}/{name}");
        let data =
            std::fs::read(src).map_err(|e| anyhow::anyhow!("reading {}: {e}", src.display()))?;
        t.add(&path, Node::File(Content::Bytes(data)));
        malicious.push(path);
    }
    anyhow::ensure!(
        malicious.len() >= 40,
        "{}: only {} test files",
        crate::testdb::TESTFILES_DIR,
        malicious.len()
    );
    let eicar = "/home/alice/Downloads/free game.com";
    t.file(eicar, &crate::testdb::eicar());
    malicious.push(eicar.to_string());
    for (i, dir) in INFECTED_DIRS.iter().enumerate() {
        for j in 0..5 {
            t.file(
                &format!("{dir}/clean note {j}.txt"),
                format!("an ordinary file {i}.{j} of {tag}\n").as_bytes(),
            );
        }
        t.random_file(&format!("{dir}/clean-{i}.bin"), 20_000 + 1000 * i as u64);
    }
    // Almost EICAR (one byte changed): must not be detected.
    let mut near = crate::testdb::eicar();
    near[0] = b'Y';
    t.file("/home/bob/Documents/almost.com", &near);
    t.file("/home/bob/empty.txt", b"");
    malicious.sort();
    Ok((t, malicious))
}
