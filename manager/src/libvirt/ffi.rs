//! The two libvirt calls that the `virt` crate (0.4/0.5) has no safe wrapper for:
//! `virDomainBackupBegin` and `virDomainAbortJob` (libvirt's `libvirt-domain.h`). Everything else
//! goes through `virt`'s safe API.
#![allow(unsafe_code)]

use std::ffi::CStr;

use virt::domain::Domain;
use virt::error::Error;

/// Starts a backup job described by `backup_xml` (`<domainbackup>`), without a checkpoint.
pub fn backup_begin(domain: &Domain, xml: &CStr) -> Result<(), Error> {
    // SAFETY: `domain.as_ptr()` is a live virDomainPtr owned by `domain` for the whole call;
    // `xml` is a NUL-terminated string borrowed for the whole call; a null checkpoint XML is allowed
    // by the API ("no checkpoint"); libvirt copies what it keeps.
    let ret = unsafe {
        virt::sys::virDomainBackupBegin(domain.as_ptr(), xml.as_ptr(), std::ptr::null(), 0)
    };
    if ret < 0 {
        return Err(Error::last_error());
    }
    Ok(())
}

/// Aborts the domain's current job (for a pull-mode backup: ends it; libvirt stops the NBD
/// server and deletes the scratch files it created).
pub fn abort_job(domain: &Domain) -> Result<(), Error> {
    // SAFETY: `domain.as_ptr()` is a live virDomainPtr owned by `domain` for the whole call.
    let ret = unsafe { virt::sys::virDomainAbortJob(domain.as_ptr()) };
    if ret < 0 {
        return Err(Error::last_error());
    }
    Ok(())
}
