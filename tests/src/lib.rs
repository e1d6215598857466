//! coldscan's fixture factory: builds guest disks with known content and writes a ground-truth
//! manifest of what it planted (DESIGN.md section 5). Fixtures are cached under
//! `target/fixtures`. Also holds what the end-to-end tests share: running `coldscan` and The
//! Sleuth Kit and comparing listings.
#![forbid(unsafe_code)]

pub mod btrfs;
pub mod cache;
pub mod checks;
pub mod coldscan;
pub mod content;
pub mod crash;
pub mod dissect;
pub mod dm_guest;
pub mod fixtures;
pub mod images;
pub mod journal;
pub mod layers;
pub mod libvirt;
pub mod lvm;
pub mod lvm_snapshot;
pub mod manifest;
pub mod md;
pub mod ntfs;
pub mod rhel;
pub mod testdb;
pub mod thin;
pub mod tls;
pub mod tools;
pub mod tree;
pub mod trees;
pub mod tsk;
pub mod wof;
pub mod xfs;

pub use fixtures::{fixture, Fixture, FixtureMeta, VolumeMeta, FIXTURES};
pub use manifest::Record;
