//! The only module of coldscan that calls C: libclamav through `clamav-sys` 1.0.0 bindings
//! (libclamav 1.x API, `clamav.h`).
//!
//! Everything unsafe is here and small: a handle that owns a `cl_engine` and frees it on drop,
//! `cl_load`/`cl_engine_compile`/`cl_engine_set_num` calls, and one scan function that maps a
//! [`FileReader`] into libclamav with `cl_fmap_open_handle` and a `pread` callback, so content is
//! never copied to a temporary file or held in memory whole. The safe policy (options, what a
//! signature name means) lives in the parent module.
//!
//! Thread safety: libclamav documents a compiled engine as usable from many threads at once
//! (clamd does exactly this); loading and compiling need exclusive access, which `&mut self`
//! gives. The scan context (reader, collected names, first error) lives on the scanning thread's
//! stack for the duration of one `cl_scanmap_callback` call.
#![allow(unsafe_code)]

use std::cell::{Cell, OnceCell, RefCell};
use std::ffi::{c_char, c_int, c_uint, c_ulong, c_void, CStr, CString};
use std::os::fd::OwnedFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Once;

use clamav_sys as sys;

use crate::error::{Error, Result};
use crate::fs::FileReader;

static INIT: Once = Once::new();
static HASHED_INLINE: AtomicU64 = AtomicU64::new(0);
static HASHED_AFTER: AtomicU64 = AtomicU64::new(0);

/// Records how much of a content's hash came from libclamav's own reads (`inline`) and how much
/// had to be read again afterwards (`after`).
pub fn note_hash_coverage(inline: u64, after: u64) {
    HASHED_INLINE.fetch_add(inline, Ordering::Relaxed);
    HASHED_AFTER.fetch_add(after, Ordering::Relaxed);
}

/// Bytes hashed from libclamav's reads and bytes read again for the hash, since the start of
/// the process.
pub fn hash_coverage() -> (u64, u64) {
    (
        HASHED_INLINE.load(Ordering::Relaxed),
        HASHED_AFTER.load(Ordering::Relaxed),
    )
}
static INIT_RESULT: AtomicU32 = AtomicU32::new(0);

thread_local! {
    /// libclamav's error and warning messages, captured while this thread loads databases so the
    /// error we return says *why* a database was refused (libclamav prints to stderr otherwise).
    static CAPTURED: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
    /// libclamav's page-map read failures (`fmap_readpage: ...`) during this thread's scan.
    /// libclamav takes the handle of a callback map for a file descriptor (`handle_is_fd`): when
    /// it reads a page again after ageing it out, it `fstat`s our context pointer as an fd,
    /// which fails, and the parser then sees the content end early without an error. A scan
    /// during which this happened is reported as not completely scanned.
    static MAP_FAILURES: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
    /// The `ScanContext` of the callback map this thread is scanning, when the map's handle is
    /// [`MAP_HANDLE_FD`] rather than the context itself.
    static CURRENT: Cell<*mut c_void> = const { Cell::new(std::ptr::null_mut()) };
    /// This thread's stand-in file descriptor for callback maps (see [`map_handle_fd`]).
    static MAP_HANDLE_FD: OnceCell<Option<OwnedFd>> = const { OnceCell::new() };
}

/// libclamav's message callback: captured during loads, otherwise dropped (libclamav reports
/// benign parser warnings for malformed guest files, which are not ours to print).
unsafe extern "C" fn on_message(
    severity: sys::cl_msg,
    _fullmsg: *const c_char,
    msg: *const c_char,
    _context: *mut c_void,
) {
    if msg.is_null() || severity.0 < sys::cl_msg::CL_MSG_WARN.0 {
        return;
    }
    // SAFETY: libclamav passes a NUL-terminated message valid for the duration of the call.
    let text = unsafe { CStr::from_ptr(msg) }
        .to_string_lossy()
        .trim()
        .to_string();
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let target = if text.starts_with("fmap_readpage") {
            &MAP_FAILURES
        } else {
            &CAPTURED
        };
        target.with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                if let Some(v) = c.as_mut() {
                    v.push(text);
                }
            }
        })
    }));
}

/// A file descriptor to give libclamav as the handle of a callback map, one per thread.
///
/// libclamav 1.4 takes the handle of every callback map for a file descriptor: before reading a
/// page a second time (after ageing it out of a large file's map) it `fstat`s the handle and
/// compares its `st_mtime` with the map's, which is 0 for callback maps. Given our context
/// pointer, that `fstat` fails and the parser sees the content end early: a ZIP member behind
/// aged pages went unscanned without an error (regression test `reread_tests`). An empty
/// memfd whose mtime is set to 0 passes that check; our reads still go through the callback,
/// which finds the context in [`CURRENT`]. Other uses of the fd by libclamav (`lseek`, a
/// gzip fallback that `dup`s it when zlib cannot initialise) read an empty file. `None` when
/// the memfd cannot be made (libclamav's failures are then caught by [`MAP_FAILURES`]).
fn map_handle_fd() -> Option<c_int> {
    use std::os::fd::AsRawFd;
    MAP_HANDLE_FD.with(|cell| {
        cell.get_or_init(|| {
            let fd =
                rustix::fs::memfd_create("coldscan-fmap-handle", rustix::fs::MemfdFlags::CLOEXEC)
                    .ok()?;
            let zero = rustix::fs::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            let times = rustix::fs::Timestamps {
                last_access: zero,
                last_modification: zero,
            };
            rustix::fs::futimens(&fd, &times).ok()?;
            let st = rustix::fs::fstat(&fd).ok()?;
            (st.st_mtime == 0).then_some(fd)
        })
        .as_ref()
        .map(|fd| fd.as_raw_fd())
    })
}

extern "C" {
    /// glibc's thread-local `errno`.
    fn __errno_location() -> *mut c_int;
}

/// Sets `errno` to EIO before a callback returns -1: libclamav retries a failed read forever
/// while `errno` says EINTR, and `errno` may hold a stale EINTR from an earlier call.
fn set_errno_eio() {
    const EIO: c_int = 5;
    // SAFETY: __errno_location returns this thread's errno slot, always valid and writable.
    unsafe { *__errno_location() = EIO };
}

/// Initializes libclamav once per process (`cl_init`), installing the message callback.
pub fn init() -> Result<()> {
    INIT.call_once(|| {
        // SAFETY: called exactly once (Once) before any other libclamav use; the callback is a
        // plain function that never unwinds into C.
        unsafe {
            sys::cl_set_clcb_msg(Some(on_message));
            let rc = sys::cl_init(sys::CL_INIT_DEFAULT);
            INIT_RESULT.store(rc.0, Ordering::SeqCst);
        }
    });
    let rc = INIT_RESULT.load(Ordering::SeqCst);
    if rc == sys::cl_error_t::CL_SUCCESS.0 {
        Ok(())
    } else {
        Err(Error::Engine {
            object: "libclamav".into(),
            detail: format!("cl_init failed: {}", strerror(sys::cl_error_t(rc))),
        })
    }
}

/// libclamav's message for an error code.
pub fn strerror(rc: sys::cl_error_t) -> String {
    // SAFETY: cl_strerror returns a pointer to a static string for every code.
    let p = unsafe { sys::cl_strerror(rc) };
    if p.is_null() {
        return format!("libclamav error {}", rc.0);
    }
    // SAFETY: non-null, NUL-terminated, static.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// libclamav's version string (`1.4.6`).
pub fn version() -> String {
    // SAFETY: cl_retver returns a pointer to a static string.
    let p = unsafe { sys::cl_retver() };
    if p.is_null() {
        return "unknown".into();
    }
    // SAFETY: non-null, NUL-terminated, static.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// libclamav's compiled-in default database directory (`/var/lib/clamav` on Debian).
pub fn default_db_dir() -> String {
    // SAFETY: cl_retdbdir returns a pointer to a static string.
    let p = unsafe { sys::cl_retdbdir() };
    if p.is_null() {
        return "/var/lib/clamav".into();
    }
    // SAFETY: non-null, NUL-terminated, static.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Engine fields we set (`cl_engine_field`).
#[derive(Debug, Clone, Copy)]
pub enum Field {
    /// CL_ENGINE_MAX_SCANSIZE
    MaxScanSize,
    /// CL_ENGINE_MAX_FILESIZE
    MaxFileSize,
    /// CL_ENGINE_MAX_RECURSION
    MaxRecursion,
    /// CL_ENGINE_MAX_FILES
    MaxFiles,
    /// CL_ENGINE_MAX_SCANTIME (milliseconds)
    MaxScanTime,
    /// CL_ENGINE_DB_VERSION (read only: the version of the `daily` database loaded, 0 if none)
    DbVersion,
}

impl Field {
    fn raw(self) -> sys::cl_engine_field {
        match self {
            Field::MaxScanSize => sys::cl_engine_field::CL_ENGINE_MAX_SCANSIZE,
            Field::MaxFileSize => sys::cl_engine_field::CL_ENGINE_MAX_FILESIZE,
            Field::MaxRecursion => sys::cl_engine_field::CL_ENGINE_MAX_RECURSION,
            Field::MaxFiles => sys::cl_engine_field::CL_ENGINE_MAX_FILES,
            Field::MaxScanTime => sys::cl_engine_field::CL_ENGINE_MAX_SCANTIME,
            Field::DbVersion => sys::cl_engine_field::CL_ENGINE_DB_VERSION,
        }
    }
}

/// Owns one `cl_engine`; freed on drop.
#[derive(Debug)]
pub struct EngineHandle {
    ptr: *mut sys::cl_engine,
    compiled: bool,
}

// SAFETY: a cl_engine is a heap object with no thread affinity; libclamav allows using it from
// any thread. Mutation (load, set, compile) takes `&mut self`, so it is never concurrent.
unsafe impl Send for EngineHandle {}
// SAFETY: after `cl_engine_compile`, libclamav documents the engine as safe for concurrent scans
// (clamd shares one engine between its scanning threads). The only `&self` operation is `scan`,
// which refuses to run before compilation.
unsafe impl Sync for EngineHandle {}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from cl_engine_new, is non-null, and is freed only here.
        unsafe {
            sys::cl_engine_free(self.ptr);
        }
    }
}

/// Raw result of one scan.
#[derive(Debug, Default)]
pub struct RawScan {
    /// Every signature name reported, in order, duplicates removed.
    pub names: Vec<String>,
    /// The error libclamav returned, if the scan did not complete (not CL_CLEAN / CL_VIRUS).
    pub engine_error: Option<String>,
    /// The first error our reader returned inside the pread callback.
    pub read_error: Option<Error>,
    /// The content ended before the size the map was opened with.
    pub short_read_at: Option<u64>,
    /// libclamav's own page-map read failures (see `MAP_FAILURES`).
    pub map_failures: Vec<String>,
    /// The content hash, when one was asked for: fed by every read that continued the content in
    /// order, and by the caller for whatever libclamav did not read in order (see
    /// [`InlineHash`]).
    pub hash: Option<InlineHash>,
}

/// A SHA-256 computed from the reads libclamav makes anyway (one read of the content, not two).
///
/// libclamav reads through its page map mostly in order, but not always: it may look at the end
/// first (archives, PE overlays), skip what it does not need, stop at the first match, or read a
/// page again after ageing it out. Only a read that starts exactly where the hashed prefix ends
/// extends it; the caller reads the rest (from [`InlineHash::next`] to the end) after the scan.
#[derive(Debug, Clone, Default)]
pub struct InlineHash {
    /// The hasher over `[0, next)`.
    pub hasher: sha2::Sha256,
    /// End of the hashed prefix.
    pub next: u64,
}

/// State shared with the C callbacks during one scan.
struct ScanContext<'a> {
    /// The content, for handle maps (`None` for memory maps).
    reader: Option<&'a mut dyn FileReader>,
    len: u64,
    result: RawScan,
}

impl ScanContext<'_> {
    fn add_name(&mut self, name: String) {
        if !self.result.names.contains(&name) {
            self.result.names.push(name);
        }
    }

    /// Fills `buf` from `offset`, looping over short reads; records the first error.
    fn pread(&mut self, offset: u64, buf: &mut [u8]) -> Option<usize> {
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset.checked_add(done as u64)?;
            let rest = buf.get_mut(done..)?;
            let reader = self.reader.as_mut()?;
            match reader.read_at(pos, rest) {
                Ok(0) => {
                    if pos < self.len && self.result.short_read_at.is_none() {
                        self.result.short_read_at = Some(pos);
                    }
                    break;
                }
                Ok(n) => done = done.saturating_add(n.min(rest.len())),
                Err(e) => {
                    if self.result.read_error.is_none() {
                        self.result.read_error = Some(e);
                    }
                    return None;
                }
            }
        }
        if let (Some(h), Some(got)) = (self.result.hash.as_mut(), buf.get(..done)) {
            if offset == h.next && done > 0 {
                use sha2::Digest;
                h.hasher.update(got);
                h.next = h.next.saturating_add(done as u64);
            }
        }
        Some(done)
    }
}

/// libclamav's pread callback: `handle` is our `ScanContext`.
unsafe extern "C" fn pread_cb(
    handle: *mut c_void,
    buf: *mut c_void,
    count: usize,
    offset: sys::off_t,
) -> sys::off_t {
    let current = CURRENT.with(|c| c.get());
    let handle = if current.is_null() { handle } else { current };
    if handle.is_null() || buf.is_null() || offset < 0 {
        set_errno_eio();
        return -1;
    }
    // SAFETY: `handle` is the `&mut ScanContext` of the scan running on this thread (given as
    // the map's handle, or set in CURRENT for the scan's duration), alive for the whole scan;
    // libclamav calls back on the scanning thread only, never concurrently for one map.
    let ctx = unsafe { &mut *(handle as *mut ScanContext<'_>) };
    // SAFETY: libclamav passes a writable buffer of `count` bytes.
    let out = unsafe { std::slice::from_raw_parts_mut(buf as *mut u8, count) };
    let offset = offset as u64; // checked non-negative above
    let n = match catch_unwind(AssertUnwindSafe(|| ctx.pread(offset, out))) {
        Ok(Some(n)) => sys::off_t::try_from(n).unwrap_or(-1),
        Ok(None) => -1,
        Err(_) => {
            if ctx.result.read_error.is_none() {
                ctx.result.read_error = Some(Error::Engine {
                    object: "pread".into(),
                    detail: "reader panicked".into(),
                });
            }
            -1
        }
    };
    if n < 0 {
        set_errno_eio();
    }
    n
}

/// libclamav's per-alert callback (called for every match in all-match mode); `context` is our
/// `ScanContext`.
unsafe extern "C" fn virus_found_cb(_fd: c_int, virname: *const c_char, context: *mut c_void) {
    if context.is_null() || virname.is_null() {
        return;
    }
    // SAFETY: `context` is the `&mut ScanContext` passed to cl_scanmap_callback, alive for the
    // call; no other reference to it is live while libclamav runs this callback.
    let ctx = unsafe { &mut *(context as *mut ScanContext<'_>) };
    // SAFETY: libclamav passes a NUL-terminated name valid for the duration of the call.
    let name = unsafe { CStr::from_ptr(virname) }
        .to_string_lossy()
        .into_owned();
    let _ = catch_unwind(AssertUnwindSafe(|| ctx.add_name(name)));
}

/// Scan option bit sets (`struct cl_scan_options`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ScanBits {
    /// `general` bits.
    pub general: u32,
    /// `parse` bits.
    pub parse: u32,
    /// `heuristic` bits.
    pub heuristic: u32,
}

/// Bit constants re-exported for the safe layer (all `u32` in clamav-sys 1.0.0).
pub mod bits {
    use clamav_sys as sys;
    /// Report every match, not only the first.
    pub const GENERAL_ALLMATCHES: u32 = sys::CL_SCAN_GENERAL_ALLMATCHES;
    /// Enable heuristic alerts.
    pub const GENERAL_HEURISTICS: u32 = sys::CL_SCAN_GENERAL_HEURISTICS;
    /// Alert when a scan limit is exceeded.
    pub const HEURISTIC_EXCEEDS_MAX: u32 = sys::CL_SCAN_HEURISTIC_EXCEEDS_MAX;
    /// Alert on encrypted archives.
    pub const HEURISTIC_ENCRYPTED_ARCHIVE: u32 = sys::CL_SCAN_HEURISTIC_ENCRYPTED_ARCHIVE;
    /// Alert on encrypted documents.
    pub const HEURISTIC_ENCRYPTED_DOC: u32 = sys::CL_SCAN_HEURISTIC_ENCRYPTED_DOC;
    /// Every parser (archives, PE, ELF, PDF, mail, OLE2, HTML, ...): `~0`, as clamscan does.
    pub const PARSE_ALL: u32 = !0;
}

impl EngineHandle {
    /// A new, empty engine.
    pub fn new() -> Result<Self> {
        init()?;
        // SAFETY: libclamav is initialized; cl_engine_new has no preconditions otherwise.
        let ptr = unsafe { sys::cl_engine_new() };
        if ptr.is_null() {
            return Err(Error::Engine {
                object: "libclamav".into(),
                detail: "cl_engine_new failed (out of memory)".into(),
            });
        }
        Ok(EngineHandle {
            ptr,
            compiled: false,
        })
    }

    /// Sets a numeric engine field (before compilation).
    pub fn set_num(&mut self, field: Field, value: i64) -> Result<()> {
        // SAFETY: valid engine pointer, exclusive access through `&mut self`.
        let rc = unsafe { sys::cl_engine_set_num(self.ptr, field.raw(), value) };
        if rc != sys::cl_error_t::CL_SUCCESS {
            return Err(Error::Engine {
                object: "libclamav".into(),
                detail: format!("setting {field:?} to {value}: {}", strerror(rc)),
            });
        }
        Ok(())
    }

    /// Reads a numeric engine field.
    pub fn get_num(&self, field: Field) -> Option<i64> {
        let mut err: c_int = 0;
        // SAFETY: valid engine pointer; cl_engine_get_num only reads.
        let v = unsafe { sys::cl_engine_get_num(self.ptr, field.raw(), &mut err) };
        (err == 0).then_some(v)
    }

    /// Loads a database file or directory (`cl_load` with `CL_DB_STDOPT`), returning the number
    /// of signatures it added. libclamav's own messages are part of the error.
    pub fn load(&mut self, path: &std::path::Path) -> Result<u32> {
        use std::os::unix::ffi::OsStrExt;
        let object = path.display().to_string();
        let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::Engine {
            object: object.clone(),
            detail: "path contains a NUL byte".into(),
        })?;
        let mut signo: c_uint = 0;
        CAPTURED.with(|c| *c.borrow_mut() = Some(Vec::new()));
        // SAFETY: valid engine pointer with exclusive access, NUL-terminated path, valid out ptr.
        let rc = unsafe { sys::cl_load(c_path.as_ptr(), self.ptr, &mut signo, sys::CL_DB_STDOPT) };
        let messages = CAPTURED.with(|c| c.borrow_mut().take()).unwrap_or_default();
        if rc != sys::cl_error_t::CL_SUCCESS {
            let mut detail = format!("cannot load signature database: {}", strerror(rc));
            if !messages.is_empty() {
                detail.push_str(" (");
                detail.push_str(&messages.join("; "));
                detail.push(')');
            }
            return Err(Error::Engine { object, detail });
        }
        Ok(signo)
    }

    /// Compiles the loaded signatures; the engine can scan afterwards.
    pub fn compile(&mut self) -> Result<()> {
        CAPTURED.with(|c| *c.borrow_mut() = Some(Vec::new()));
        // SAFETY: valid engine pointer with exclusive access.
        let rc = unsafe { sys::cl_engine_compile(self.ptr) };
        let messages = CAPTURED.with(|c| c.borrow_mut().take()).unwrap_or_default();
        if rc != sys::cl_error_t::CL_SUCCESS {
            return Err(Error::Engine {
                object: "libclamav".into(),
                detail: format!(
                    "cl_engine_compile failed: {} {}",
                    strerror(rc),
                    messages.join("; ")
                ),
            });
        }
        // SAFETY: valid engine pointer; installs a plain function as the per-alert callback.
        unsafe { sys::cl_engine_set_clcb_virus_found(self.ptr, Some(virus_found_cb)) };
        self.compiled = true;
        Ok(())
    }

    /// Scans `len` bytes of `reader` as one file named `name` (used by libclamav only for
    /// logging and file-type hints), through a page map that calls back into `reader`.
    ///
    /// With `hash`, the reads libclamav makes also feed [`RawScan::hash`].
    pub fn scan(
        &self,
        reader: &mut dyn FileReader,
        len: u64,
        name: &str,
        options: ScanBits,
        hash: bool,
    ) -> Result<RawScan> {
        self.check_compiled(name)?;
        if len == 0 {
            // cl_fmap_open_handle refuses length 0; an empty memory map goes through libclamav's
            // normal path, so an empty file gets libclamav's own verdict (which is clean: the
            // scanner returns before any matcher for empty input; measured with a wildcard-size
            // hash signature for the empty file's sha256).
            let mut raw = self.scan_memory(&[], name, options)?;
            if hash {
                raw.hash = Some(InlineHash::default());
            }
            return Ok(raw);
        }
        let len_usize = usize::try_from(len).map_err(|_| Error::limit(name, "file too large"))?;
        let mut ctx = ScanContext {
            reader: Some(reader),
            len,
            result: RawScan {
                hash: hash.then(InlineHash::default),
                ..RawScan::default()
            },
        };
        let ctx_ptr: *mut ScanContext<'_> = &mut ctx;
        let handle = match map_handle_fd() {
            Some(fd) => fd as isize as *mut c_void,
            None => ctx_ptr as *mut c_void,
        };
        // SAFETY: ctx outlives the map (closed in scan_map before ctx is dropped); the callback
        // finds the ScanContext in CURRENT or the handle. use_aging=1 lets libclamav unmap pages
        // of large files it has passed.
        let map = unsafe { sys::cl_fmap_open_handle(handle, 0, len_usize, Some(pread_cb), 1) };
        if map.is_null() {
            return Err(Error::Engine {
                object: name.into(),
                detail: format!("cl_fmap_open_handle failed for {len} bytes"),
            });
        }
        let previous = CURRENT.with(|c| c.replace(ctx_ptr as *mut c_void));
        // SAFETY: `map` was just opened over `ctx`, which lives until this function returns.
        unsafe { self.scan_map(map, ctx_ptr, name, options) };
        CURRENT.with(|c| c.set(previous));
        Ok(ctx.result)
    }

    /// Scans `data` as one file named `name`, through a memory map: no page faults in a fresh
    /// anonymous mapping and no copy per page, which is what makes small files cheap (libclamav
    /// takes a process-wide lock around the page faults of a handle map).
    pub fn scan_memory(&self, data: &[u8], name: &str, options: ScanBits) -> Result<RawScan> {
        self.check_compiled(name)?;
        static EMPTY: [u8; 1] = [0];
        let start = if data.is_empty() {
            EMPTY.as_ptr()
        } else {
            data.as_ptr()
        };
        // SAFETY: `start` points to `data.len()` readable bytes (or the static EMPTY for length
        // 0) that outlive the map, which scan_map closes before returning.
        let map = unsafe { sys::cl_fmap_open_memory(start as *const c_void, data.len()) };
        if map.is_null() {
            return Err(Error::Engine {
                object: name.into(),
                detail: format!("cl_fmap_open_memory failed for {} bytes", data.len()),
            });
        }
        let mut ctx = ScanContext {
            reader: None,
            len: data.len() as u64,
            result: RawScan::default(),
        };
        let ctx_ptr: *mut ScanContext<'_> = &mut ctx;
        // SAFETY: `map` is a fresh memory map over `data`, which outlives this call.
        unsafe { self.scan_map(map, ctx_ptr, name, options) };
        Ok(ctx.result)
    }

    fn check_compiled(&self, name: &str) -> Result<()> {
        if self.compiled {
            Ok(())
        } else {
            Err(Error::Engine {
                object: name.into(),
                detail: "engine used before compilation".into(),
            })
        }
    }

    /// Scans an opened map and closes it, leaving names and errors in `*ctx_ptr`.
    ///
    /// # Safety
    /// `map` is a non-null map from `cl_fmap_open_*` not used elsewhere; `ctx_ptr` points to a
    /// live `ScanContext` (the map's handle, for handle maps) that nothing else accesses until
    /// this returns.
    unsafe fn scan_map(
        &self,
        map: *mut sys::cl_fmap_t,
        ctx_ptr: *mut ScanContext<'_>,
        name: &str,
        options: ScanBits,
    ) {
        let c_name = CString::new(name.replace('\0', "?")).unwrap_or_default();
        let mut opts = sys::cl_scan_options {
            general: options.general,
            parse: options.parse,
            heuristic: options.heuristic,
            mail: 0,
            dev: 0,
        };
        let mut virname: *const c_char = std::ptr::null();
        let mut scanned: c_ulong = 0;
        MAP_FAILURES.with(|c| *c.borrow_mut() = Some(Vec::new()));
        // SAFETY: map, engine and options are valid for the call; the engine is compiled; the
        // context pointer is the ScanContext our callbacks use, on this thread only, never at
        // the same time (libclamav calls them sequentially).
        let rc = unsafe {
            sys::cl_scanmap_callback(
                map,
                c_name.as_ptr(),
                &mut virname,
                &mut scanned,
                self.ptr,
                &mut opts,
                ctx_ptr as *mut c_void,
            )
        };
        let last = if rc == sys::cl_error_t::CL_VIRUS && !virname.is_null() {
            // SAFETY: on CL_VIRUS, virname points to a NUL-terminated name owned by the engine.
            Some(
                unsafe { CStr::from_ptr(virname) }
                    .to_string_lossy()
                    .into_owned(),
            )
        } else {
            None
        };
        // SAFETY: map came from cl_fmap_open_*, is closed once, after the scan returned.
        unsafe { sys::cl_fmap_close(map) };
        let map_failures = MAP_FAILURES
            .with(|c| c.borrow_mut().take())
            .unwrap_or_default();
        // SAFETY: the scan is over: no callback holds a reference to the context any more.
        let ctx = unsafe { &mut *ctx_ptr };
        ctx.result.map_failures = map_failures;
        if let Some(n) = last {
            ctx.add_name(n);
        }
        if rc != sys::cl_error_t::CL_CLEAN && rc != sys::cl_error_t::CL_VIRUS {
            ctx.result.engine_error = Some(strerror(rc));
        }
    }
}
