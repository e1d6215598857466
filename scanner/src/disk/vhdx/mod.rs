//! VHDX (stub).
use crate::block::SharedSource;
use crate::disk::{ChainState, OpenOptions, OpenedDisk};
use crate::error::{Error, Result};
use std::path::Path;
/// Opens.
pub fn open(
    path: &Path,
    _file: SharedSource,
    _opts: &OpenOptions,
    _state: &mut ChainState,
) -> Result<OpenedDisk> {
    Err(Error::unsupported(path.display().to_string(), "vhdx"))
}
