//! The VHDX log ([MS-VHDX] section 2.3). A non-zero log GUID in the current header means the
//! log may hold updates not yet applied to the file (the image was not closed cleanly). This
//! reader never writes; it does not replay the log either, and refuses such images with a clear
//! reason, as section 2.3.3 requires of implementations that cannot replay.

use crate::disk::vhdx::header::{guid_string, Header};
use crate::error::{Error, Result};

/// Refuses an image whose log must be replayed.
pub fn check_clean(name: &str, header: &Header) -> Result<()> {
    if header.log_guid == [0u8; 16] {
        return Ok(());
    }
    Err(Error::unsupported(
        name,
        format!(
            "VHDX log {} is not empty (image not closed cleanly; log replay is not implemented): \
             open and close it once with Hyper-V or `qemu-img check -r all` on a copy",
            guid_string(&header.log_guid)
        ),
    ))
}
