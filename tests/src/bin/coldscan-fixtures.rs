//! `coldscan-fixtures`: builds the test fixtures (cached under `target/fixtures`) for the demo,
//! benchmarks and manual runs.
//!
//! ```text
//! coldscan-fixtures build [NAME...]   build (all by default), print each fixture's directory
//! coldscan-fixtures list              names and descriptions
//! coldscan-fixtures path NAME         build if needed, print the disk image's path
//! coldscan-fixtures ntfs-populate-path compile the libntfs-3g populator if needed, print its path
//! ```
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Instant;

use coldscan_tests::fixtures;

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("build") => {
            let names: Vec<String> = if args.len() > 1 {
                args[1..].to_vec()
            } else {
                fixtures::names().iter().map(|s| s.to_string()).collect()
            };
            let all = Instant::now();
            for n in &names {
                let t = Instant::now();
                let f = fixtures::fixture(n)?;
                eprintln!("{n}: {:.1} s", t.elapsed().as_secs_f64());
                println!("{}", f.dir.display());
            }
            eprintln!(
                "{} fixtures in {:.1} s",
                names.len(),
                all.elapsed().as_secs_f64()
            );
        }
        Some("list") => {
            for d in fixtures::FIXTURES {
                println!(
                    "{}{}",
                    d.name,
                    if d.malformed { " (malformed)" } else { "" }
                );
            }
        }
        Some("path") if args.len() == 2 => {
            println!("{}", fixtures::fixture(&args[1])?.disk().display());
        }
        Some("ntfs-populate-path") => {
            println!("{}", coldscan_tests::ntfs::populator()?.display());
        }
        _ => anyhow::bail!(
            "usage: coldscan-fixtures build [NAME...] | list | path NAME | ntfs-populate-path"
        ),
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coldscan-fixtures: {e:#}");
            ExitCode::FAILURE
        }
    }
}
