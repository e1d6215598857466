//! The libvirt calls that the `virt` crate (0.4/0.5) has no safe wrapper for:
//! `virDomainBackupBegin`, `virDomainBackupGetXMLDesc`, `virDomainAbortJob`,
//! `virDomainBlockCommit`, `virDomainGetBlockJobInfo` and `virDomainBlockJobAbort` (libvirt's
//! `libvirt-domain.h`). Everything else goes through `virt`'s safe API.
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

/// The `<domainbackup>` XML of the domain's running backup job (with the NBD server's actual
/// address), or an error when it has none.
pub fn backup_xml(domain: &Domain) -> Result<String, Error> {
    // SAFETY: `domain.as_ptr()` is a live virDomainPtr owned by `domain` for the whole call.
    let ptr = unsafe { virt::sys::virDomainBackupGetXMLDesc(domain.as_ptr(), 0) };
    if ptr.is_null() {
        return Err(Error::last_error());
    }
    // SAFETY: on success libvirt returns a NUL-terminated string that the caller owns and must
    // release with free(); it is copied before being freed exactly once, and not used after.
    let text = unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: see above: `ptr` came from libvirt's malloc and is freed once.
    unsafe { libc::free(ptr.cast()) };
    Ok(text)
}

/// Starts a commit block job on disk `disk` (`virDomainBlockCommit`) with `base` and `top`
/// left to `flags` (null: the defaults those flags select) and no bandwidth limit.
pub fn block_commit(domain: &Domain, disk: &CStr, flags: u32) -> Result<(), Error> {
    // SAFETY: `domain.as_ptr()` is a live virDomainPtr owned by `domain` for the whole call;
    // `disk` is a NUL-terminated string borrowed for the call; null `base` and `top` are
    // allowed by the API (the active layer and, with VIR_DOMAIN_BLOCK_COMMIT_SHALLOW, its
    // backing file); libvirt copies what it keeps.
    let ret = unsafe {
        virt::sys::virDomainBlockCommit(
            domain.as_ptr(),
            disk.as_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            0,
            flags,
        )
    };
    if ret < 0 {
        return Err(Error::last_error());
    }
    Ok(())
}

/// Progress of the block job on disk `disk`: `None` when it has none, else (cur, end) (a
/// commit of the active layer is ready to pivot once they are equal).
pub fn block_job_info(domain: &Domain, disk: &CStr) -> Result<Option<(u64, u64)>, Error> {
    let mut info = virt::sys::virDomainBlockJobInfo {
        type_: 0,
        bandwidth: 0,
        cur: 0,
        end: 0,
    };
    // SAFETY: `domain.as_ptr()` is a live virDomainPtr owned by `domain` for the whole call;
    // `disk` is a NUL-terminated string borrowed for the call; `info` is a valid, writable
    // virDomainBlockJobInfo that libvirt fills and does not keep.
    let ret = unsafe {
        virt::sys::virDomainGetBlockJobInfo(domain.as_ptr(), disk.as_ptr(), &mut info, 0)
    };
    match ret {
        r if r < 0 => Err(Error::last_error()),
        0 => Ok(None),
        _ => Ok(Some((info.cur, info.end))),
    }
}

/// Ends the block job on disk `disk` (`virDomainBlockJobAbort`); with
/// `VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT` a ready commit of the active layer switches the disk to
/// its base.
pub fn block_job_abort(domain: &Domain, disk: &CStr, flags: u32) -> Result<(), Error> {
    // SAFETY: `domain.as_ptr()` is a live virDomainPtr owned by `domain` for the whole call;
    // `disk` is a NUL-terminated string borrowed for the call.
    let ret = unsafe { virt::sys::virDomainBlockJobAbort(domain.as_ptr(), disk.as_ptr(), flags) };
    if ret < 0 {
        return Err(Error::last_error());
    }
    Ok(())
}
