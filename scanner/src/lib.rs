//! coldscan's scanner library: read-only, user-space parsing of virtual disks, partition tables
//! and filesystems, and malware scanning of every file found (DESIGN.md section 1).
//!
//! The layers, each a module: [`block`] (the [`block::BlockSource`] read interface), [`disk`]
//! (image formats and chains), [`partition`] (GPT/MBR), [`fs`] (ext2/3/4, NTFS, FAT),
//! [`inventory`] (target -> volumes), [`engine`] (libclamav), [`cache`] (verdicts by content
//! hash), [`scan`] (the parallel scan of
//! targets), [`report`] (the JSON report).
#![deny(unsafe_code)]

pub mod block;
#[cfg(feature = "engine")]
pub mod cache;
pub mod disk;
#[cfg(feature = "engine")]
pub mod engine;
pub mod error;
pub mod fs;
pub mod inventory;
pub mod parallel;
pub mod partition;
pub mod report;
#[cfg(feature = "engine")]
pub mod scan;
pub mod volume;

pub use error::{Error, Reason, Result};
