//! The shared-library closure of the `coldscan` binary, resolved the way glibc's dynamic loader
//! does (ld.so(8)): the program interpreter from `PT_INTERP`; each `DT_NEEDED` name searched in
//! `DT_RPATH` (only when there is no `DT_RUNPATH`), `DT_RUNPATH` (with `$ORIGIN`), the directories
//! of `/etc/ld.so.conf` (what `ld.so.cache` indexes) and the default system directories.
//!
//! In the image, every library is placed under [`IMAGE_LIB_DIR`], a default directory of the
//! loader, so that it is found without an `ld.so.cache`; the interpreter keeps its absolute path.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use object::elf;
use object::read::elf::{Dyn, ElfFile64, FileHeader, ProgramHeader};
use object::{Endianness, Object};

/// Where libraries go in the image: a default search directory of x86-64 glibc's loader.
pub const IMAGE_LIB_DIR: &str = "usr/lib/x86_64-linux-gnu";

/// The loader's default directories (x86-64 Debian, multiarch first), searched last.
const SYSTEM_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib",
    "/usr/lib",
    "/lib64",
    "/usr/lib64",
];

/// Bound on libraries in a closure (libclamav's is ~40): a runaway resolution stops here.
const MAX_LIBRARIES: usize = 512;
/// Bound on nested `include` lines in ld.so.conf.
const MAX_CONF_DEPTH: usize = 8;

/// The interpreter and libraries a program needs.
#[derive(Debug, Default)]
pub struct Closure {
    /// `PT_INTERP` as written (e.g. `/lib64/ld-linux-x86-64.so.2`), if dynamically linked.
    pub interpreter: Option<PathBuf>,
    /// `DT_NEEDED` name -> the host file it resolved to.
    pub libraries: BTreeMap<String, PathBuf>,
}

/// The dynamic-linking facts of one ELF file.
#[derive(Debug, Default)]
struct DynamicInfo {
    interpreter: Option<String>,
    needed: Vec<String>,
    rpath: Vec<String>,
    runpath: Vec<String>,
}

fn dynamic_info(path: &Path) -> Result<DynamicInfo> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = ElfFile64::<Endianness>::parse(&*data)
        .with_context(|| format!("{} is not a 64-bit ELF file", path.display()))?;
    if file.architecture() != object::Architecture::X86_64 {
        bail!("{} is not an x86-64 ELF file", path.display());
    }
    let endian = file.endian();
    let header = file.elf_header();
    let mut info = DynamicInfo::default();
    let phdrs = header
        .program_headers(endian, &*data)
        .with_context(|| format!("{}: bad program headers", path.display()))?;
    for ph in phdrs {
        if ph.p_type(endian) == elf::PT_INTERP {
            let bytes = ph
                .data(endian, &*data)
                .ok()
                .with_context(|| format!("{}: PT_INTERP outside the file", path.display()))?;
            let s = bytes.split(|&b| b == 0).next().unwrap_or_default();
            info.interpreter = Some(String::from_utf8_lossy(s).into_owned());
        }
        let Some(dynamic) = ph
            .dynamic(endian, &*data)
            .with_context(|| format!("{}: bad PT_DYNAMIC", path.display()))?
        else {
            continue;
        };
        // String offsets refer to the dynamic string table found through the section headers.
        let sections = header
            .sections(endian, &*data)
            .with_context(|| format!("{}: bad section headers", path.display()))?;
        let (_, dynsec) = sections
            .dynamic(endian, &*data)
            .ok()
            .flatten()
            .with_context(|| format!("{}: no .dynamic section", path.display()))?;
        let strings = sections
            .strings(endian, &*data, dynsec)
            .with_context(|| format!("{}: no dynamic string table", path.display()))?;
        for d in dynamic {
            let tag = d.d_tag(endian) as u32;
            let list = match tag {
                elf::DT_NEEDED => &mut info.needed,
                elf::DT_RPATH => &mut info.rpath,
                elf::DT_RUNPATH => &mut info.runpath,
                _ => continue,
            };
            let value = d
                .string(endian, strings)
                .with_context(|| format!("{}: bad dynamic string", path.display()))?;
            let value = String::from_utf8_lossy(value).into_owned();
            if tag == elf::DT_NEEDED {
                list.push(value);
            } else {
                list.extend(value.split(':').map(str::to_string));
            }
        }
    }
    Ok(info)
}

/// The directories `/etc/ld.so.conf` lists (following `include` globs), in order.
fn ld_so_conf_dirs(conf: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if depth > MAX_CONF_DEPTH {
        return;
    }
    let Ok(text) = std::fs::read_to_string(conf) else {
        return;
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if let Some(pattern) = line.strip_prefix("include") {
            let pattern = pattern.trim();
            let pattern = if Path::new(pattern).is_absolute() {
                PathBuf::from(pattern)
            } else {
                conf.parent().unwrap_or(Path::new("/")).join(pattern)
            };
            for file in glob_files(&pattern) {
                ld_so_conf_dirs(&file, depth + 1, out);
            }
        } else if line.starts_with('/') {
            out.push(PathBuf::from(line));
        }
    }
}

/// Files matching `DIR/PREFIX*SUFFIX` (the only glob form ld.so.conf uses), sorted.
fn glob_files(pattern: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (pattern.parent(), pattern.file_name()) else {
        return Vec::new();
    };
    let name = name.to_string_lossy();
    let (prefix, suffix) = name.split_once('*').unwrap_or((&name, ""));
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            if name.contains('*') {
                n.starts_with(prefix) && n.ends_with(suffix)
            } else {
                n == name.as_ref()
            }
        })
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}

/// Resolves the closure of the program at `program`.
pub fn closure(program: &Path) -> Result<Closure> {
    let mut conf_dirs = Vec::new();
    ld_so_conf_dirs(Path::new("/etc/ld.so.conf"), 0, &mut conf_dirs);
    let mut out = Closure::default();
    let main = dynamic_info(program)?;
    out.interpreter = main.interpreter.as_deref().map(PathBuf::from);
    let mut queue: VecDeque<(PathBuf, DynamicInfo)> = VecDeque::from([(program.into(), main)]);
    let mut seen = BTreeSet::new();
    while let Some((path, info)) = queue.pop_front() {
        let origin = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let expand = |d: &String| PathBuf::from(d.replace("$ORIGIN", &origin.to_string_lossy()));
        let mut dirs: Vec<PathBuf> = Vec::new();
        if info.runpath.is_empty() {
            dirs.extend(info.rpath.iter().map(expand));
        }
        dirs.extend(info.runpath.iter().map(expand));
        dirs.extend(conf_dirs.iter().cloned());
        dirs.extend(SYSTEM_DIRS.iter().map(PathBuf::from));
        for name in &info.needed {
            if !seen.insert(name.clone()) {
                continue;
            }
            if seen.len() > MAX_LIBRARIES {
                bail!("more than {MAX_LIBRARIES} shared libraries: refusing the closure");
            }
            let found = if name.contains('/') {
                Some(PathBuf::from(name)).filter(|p| p.is_file())
            } else {
                dirs.iter().map(|d| d.join(name)).find(|p| p.is_file())
            };
            let found = found.with_context(|| {
                format!(
                    "{} needs {name}, which the loader's search path does not hold",
                    path.display()
                )
            })?;
            let info = dynamic_info(&found)?;
            out.libraries.insert(name.clone(), found.clone());
            queue.push_back((found, info));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closure_of_a_system_program_matches_the_loader() {
        // /bin/ls needs libc and (on Debian) libselinux, which needs libpcre2.
        let c = closure(Path::new("/bin/ls")).unwrap();
        assert_eq!(
            c.interpreter.as_deref(),
            Some(Path::new("/lib64/ld-linux-x86-64.so.2"))
        );
        assert!(c.libraries.contains_key("libc.so.6"), "{c:?}");
        // Compare with what the loader itself resolves.
        let out = std::process::Command::new("ldd")
            .arg("/bin/ls")
            .output()
            .unwrap();
        let ldd = String::from_utf8_lossy(&out.stdout);
        for line in ldd.lines().filter(|l| l.contains("=>")) {
            let name = line.split_whitespace().next().unwrap();
            assert!(c.libraries.contains_key(name), "ldd has {name}, we do not");
        }
    }

    #[test]
    fn non_elf_is_an_error() {
        let e = closure(Path::new("/etc/hostname")).unwrap_err();
        assert!(e.to_string().contains("ELF"), "{e}");
    }
}
