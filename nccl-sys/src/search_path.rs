//! Where the dynamic loader looks for a library opened by a bare name, as
//! far as the working directory is concerned.
//!
//! glibc searches `LD_LIBRARY_PATH` before its cache, and an empty entry
//! (`/usr/local/cuda/lib64:`, what `export LD_LIBRARY_PATH=/x:$LD_LIBRARY_PATH`
//! makes when the variable was unset) or a relative one names the working
//! directory: a library of that name placed there is loaded, and its
//! initializers run. The loader reads the variable once, when the program
//! starts; a program that changes it later changes nothing for `dlopen`. So
//! both values count here: the one the process started with (from
//! `/proc/self/environ`, the environment block the kernel gave it) and the
//! current one. A setuid or setgid program (secure-execution mode) has
//! neither: glibc ignores the variable there.
//!
//! This crate's runtime loader uses it to skip the by-name step (and to
//! refuse bare names) where the working directory would be searched; the
//! safe crate uses it before cudarc opens the CUDA driver by name.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Most bytes of `/proc/self/environ` read (Linux caps a process's
/// arguments and environment together well below this).
const ENVIRON_LIMIT: u64 = 16 << 20;

/// The first entry of the `LD_LIBRARY_PATH` the loader uses (as the process
/// started, or as it is now) that makes it search the working directory, as
/// an error text shows it: `"an empty entry"` or `the relative entry "lib"`.
/// `None` where no entry does, or in secure-execution mode.
pub fn working_dir_entry() -> Option<String> {
    values().iter().find_map(|v| cwd_entry(Some(v)))
}

/// The folders, relative to the working directory, that the loader searches
/// by those entries (`.` for an empty one), each once, in order. An entry
/// with a dynamic string the loader expands (`$LIB`, `$PLATFORM`, or
/// `$ORIGIN` not at its start) is returned as written: see
/// [`is_unexpanded`].
pub fn working_dir_folders() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for v in values() {
        for e in path_entries(&v) {
            if !searches_working_dir(e) {
                continue;
            }
            let dir = if e.is_empty() {
                PathBuf::from(".")
            } else {
                PathBuf::from(OsStr::from_bytes(e))
            };
            if !out.contains(&dir) {
                out.push(dir);
            }
        }
    }
    out
}

/// Whether a folder of [`working_dir_folders`] holds a dynamic string the
/// loader expands and this crate does not (`$ORIGIN`, `$LIB`, `$PLATFORM`,
/// or their `${…}` forms, a bare name not followed by a letter, a digit or
/// `_`): which folder of the working directory it names is not known. Any
/// other `$` the loader keeps as written.
pub fn is_unexpanded(folder: &Path) -> bool {
    const NAMES: [&[u8]; 3] = [b"ORIGIN", b"LIB", b"PLATFORM"];
    let b = folder.as_os_str().as_bytes();
    b.iter()
        .enumerate()
        .filter(|&(_, &c)| c == b'$')
        .any(|(i, _)| {
            let rest = &b[i + 1..];
            NAMES.iter().any(|n| {
                if let Some(r) = rest.strip_prefix(b"{").and_then(|r| r.strip_prefix(*n)) {
                    return r.first() == Some(&b'}');
                }
                rest.strip_prefix(*n).is_some_and(|r| {
                    !r.first()
                        .is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_')
                })
            })
        })
}

/// Whether `folder` is, once canonical, one of the system's library folders
/// (those of `/etc/ld.so.conf.d` and the default ones), which the loader
/// searches anyway: a library found there through the working directory is
/// the one it would load without it.
pub fn is_system_folder(folder: &Path) -> bool {
    let Ok(canon) = std::fs::canonicalize(folder) else {
        return false;
    };
    system_dirs()
        .iter()
        .any(|d| std::fs::canonicalize(d).is_ok_and(|d| d == canon))
}

/// The `LD_LIBRARY_PATH` the loader uses: the last of the environment the
/// process started with (where `/proc/self/environ` can be read; `None` if
/// it had none), else the current one; `None` in secure-execution mode.
#[cfg_attr(not(nccl_sys_mode = "runtime"), allow(dead_code))]
pub(crate) fn loader_value() -> Option<OsString> {
    if secure_execution() {
        return None;
    }
    match read_environ() {
        Some(raw) => startup_values_in(&raw).pop(),
        None => std::env::var_os("LD_LIBRARY_PATH"),
    }
}

/// The values of `LD_LIBRARY_PATH` the loader may use: those of the
/// environment the process started with, then the current one, non-empty
/// and each once; none in secure-execution mode.
fn values() -> Vec<OsString> {
    if secure_execution() {
        return Vec::new();
    }
    let mut out = startup_values();
    if let Some(now) = std::env::var_os("LD_LIBRARY_PATH") {
        out.push(now);
    }
    out.retain(|v| !v.is_empty());
    out.dedup();
    out
}

/// Every `LD_LIBRARY_PATH=` of the environment block the process started
/// with (glibc takes the last; all are checked). Empty where
/// `/proc/self/environ` cannot be read.
fn startup_values() -> Vec<OsString> {
    read_environ().map_or_else(Vec::new, |raw| startup_values_in(&raw))
}

/// The environment block the process started with, as the kernel keeps it.
fn read_environ() -> Option<Vec<u8>> {
    let mut raw = Vec::new();
    std::fs::File::open("/proc/self/environ")
        .and_then(|f| f.take(ENVIRON_LIMIT).read_to_end(&mut raw))
        .ok()?;
    Some(raw)
}

/// Every `LD_LIBRARY_PATH=` value of an environment block, in order.
fn startup_values_in(raw: &[u8]) -> Vec<OsString> {
    raw.split(|&b| b == 0)
        .filter_map(|kv| kv.strip_prefix(b"LD_LIBRARY_PATH="))
        .map(|v| OsString::from_vec(v.to_vec()))
        .collect()
}

/// The folders the loader searches besides `LD_LIBRARY_PATH` (by full
/// path, where `LD_LIBRARY_PATH` cannot be used): those of
/// `/etc/ld.so.conf.d/*.conf` (absolute lines only), then the default
/// ones.
pub(crate) fn system_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/etc/ld.so.conf.d") {
        let mut confs: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
            .collect();
        confs.sort();
        for c in confs {
            let Ok(text) = std::fs::read_to_string(&c) else {
                continue;
            };
            dirs.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| l.starts_with('/'))
                    .map(PathBuf::from),
            );
        }
    }
    let arch = if cfg!(target_arch = "aarch64") {
        "aarch64-linux-gnu"
    } else if cfg!(target_arch = "powerpc64") {
        "powerpc64le-linux-gnu"
    } else {
        "x86_64-linux-gnu"
    };
    for d in ["/lib", "/usr/lib"] {
        dirs.push(PathBuf::from(format!("{d}/{arch}")));
    }
    for d in ["/lib64", "/usr/lib64", "/lib", "/usr/lib"] {
        dirs.push(PathBuf::from(d));
    }
    dirs.dedup();
    dirs
}

/// Whether this process runs in secure-execution mode (a setuid or setgid
/// program, or one with file capabilities: glibc's `AT_SECURE`), where
/// glibc ignores `LD_LIBRARY_PATH` and this crate trusts no path from the
/// environment.
pub(crate) fn secure_execution() -> bool {
    // SAFETY: getauxval only reads the auxiliary vector; 0 for an entry
    // that is not there.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// The first entry of an `LD_LIBRARY_PATH` value that makes the loader
/// search the working directory (an empty entry, or a relative one;
/// `$ORIGIN`-style entries name the program's folder and are not), as
/// the error text shows it; `None` for an unset or safe value.
pub(crate) fn cwd_entry(value: Option<&OsStr>) -> Option<String> {
    let value = value?;
    if value.is_empty() {
        return None;
    }
    path_entries(value)
        .into_iter()
        .find(|e| searches_working_dir(e))
        .map(|e| {
            if e.is_empty() {
                "an empty entry".to_string()
            } else {
                format!("the relative entry {:?}", String::from_utf8_lossy(e))
            }
        })
}

fn searches_working_dir(e: &[u8]) -> bool {
    e.is_empty() || !(e.starts_with(b"/") || origin_rest(e).is_some())
}

/// What follows `$ORIGIN` (or `${ORIGIN}`) at the start of an entry,
/// without its leading `/`; `None` when the entry does not start so
/// (glibc takes `$ORIGIN` only when it is not followed by a letter, a
/// digit or `_`: `$ORIGINAL` stays as written, a relative name).
pub(crate) fn origin_rest(e: &[u8]) -> Option<&[u8]> {
    let rest = if let Some(r) = e.strip_prefix(b"${ORIGIN}") {
        r
    } else {
        let r = e.strip_prefix(b"$ORIGIN")?;
        if r.first()
            .is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_')
        {
            return None;
        }
        r
    };
    match rest {
        [] => Some(rest),
        [b'/', tail @ ..] => Some(tail),
        _ => None,
    }
}

/// The entries of an `LD_LIBRARY_PATH` value, split as glibc splits
/// them (on `:` and `;`).
pub(crate) fn path_entries(value: &OsStr) -> Vec<&[u8]> {
    value
        .as_bytes()
        .split(|&b| b == b':' || b == b';')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{cwd_entry, is_system_folder, is_unexpanded, origin_rest, startup_values_in};
    use std::ffi::{OsStr, OsString};
    use std::path::Path;

    #[test]
    fn folders_the_loader_searches_anyway_and_dynamic_strings() {
        let system = ["/usr/lib", "/lib", "/usr/lib64", "/lib64"]
            .into_iter()
            .find(|d| Path::new(d).is_dir())
            .expect("a system library folder");
        assert!(is_system_folder(Path::new(system)));
        assert!(!is_system_folder(&std::env::temp_dir()));
        assert!(!is_system_folder(Path::new("/nonexistent")));
        assert!(is_unexpanded(Path::new("$LIB")));
        assert!(is_unexpanded(Path::new("x$ORIGIN/lib")));
        assert!(is_unexpanded(Path::new("a/${PLATFORM}/b")));
        assert!(is_unexpanded(Path::new("$PLATFORM-x")));
        assert!(!is_unexpanded(Path::new("lib")));
        // kept as written by the loader: a folder of that very name
        assert!(!is_unexpanded(Path::new("$LD_LIBRARY_PATH")));
        assert!(!is_unexpanded(Path::new("$ORIGINAL/lib")));
        assert!(!is_unexpanded(Path::new("$LIB_x")));
        assert!(!is_unexpanded(Path::new("${LIBX}")));
        assert!(!is_unexpanded(Path::new("$")));
    }

    #[test]
    fn every_value_of_an_environment_block() {
        let block = b"A=1\0LD_LIBRARY_PATH=/a:\0B=LD_LIBRARY_PATH=x\0LD_LIBRARY_PATH=/b\0";
        assert_eq!(
            startup_values_in(block),
            vec![OsString::from("/a:"), OsString::from("/b")]
        );
        assert!(startup_values_in(b"").is_empty());
    }

    #[test]
    fn ld_library_path_entries_that_search_the_working_directory() {
        for safe in [
            None,
            Some(""),
            Some("/usr/lib"),
            Some("/a:/b"),
            Some("$ORIGIN/../lib:/x"),
            Some("${ORIGIN}/lib"),
            Some("$ORIGIN"),
        ] {
            assert_eq!(cwd_entry(safe.map(OsStr::new)), None, "{safe:?}");
        }
        for (bad, says) in [
            ("/a:", "an empty entry"),
            (":/a", "an empty entry"),
            ("/a::/b", "an empty entry"),
            (".", "relative entry \".\""),
            ("/a:lib", "relative entry \"lib\""),
            ("/a;b", "relative entry \"b\""),
            ("$LIB/x", "relative entry \"$LIB/x\""),
            ("$PLATFORM", "relative entry \"$PLATFORM\""),
            ("$ORIGINAL/lib", "relative entry \"$ORIGINAL/lib\""),
            ("$ORIGIN_x", "relative entry \"$ORIGIN_x\""),
        ] {
            let got = cwd_entry(Some(OsStr::new(bad))).unwrap_or_default();
            assert!(got.contains(says), "{bad:?}: {got:?}");
        }
        // what follows `$ORIGIN`, as the fallback joins it to the program's folder
        assert_eq!(origin_rest(b"$ORIGIN/../lib"), Some(&b"../lib"[..]));
        assert_eq!(origin_rest(b"${ORIGIN}/x"), Some(&b"x"[..]));
        assert_eq!(origin_rest(b"$ORIGIN"), Some(&b""[..]));
        assert_eq!(origin_rest(b"$ORIGINAL/lib"), None);
        assert_eq!(origin_rest(b"/usr/lib"), None);
    }
}
