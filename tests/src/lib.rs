//! coldscan's fixture factory: builds guest disks with known content and writes a ground-truth
//! manifest of what it planted (DESIGN.md section 5). Fixtures are cached under `target/fixtures`.
#![forbid(unsafe_code)]
pub mod testdb;
