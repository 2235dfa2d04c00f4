//! Every NCCL release from the floor (2.18) to the newest: headers fetched
//! from NVIDIA's wheels on PyPI (`nvidia-nccl-cu12`, or `nvidia-nccl-cu13`
//! for a release only it has; one file each, by HTTP Range requests, see
//! `pypi_files.py`), the committed bindings of each minor
//! (`nccl-sys/bindings/nccl_2_N.rs`, from that minor's newest release) and the
//! `since` table (`nccl-sys/src/since_table.rs`: the first release whose header
//! declares each function, config field, result code and constant).
//!
//! `cargo xtask bindgen` writes them, `cargo xtask bindgen --check` fails when
//! a committed file differs from what the headers give now.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Result;
use crate::bindings;
use crate::scan::{self, Declarations};
use crate::version;

/// The package the headers come from (`nvidia-nccl-cu12` has every release
/// since 2.16 but the ones in [`CU13_ONLY`]; `-cu13` starts at 2.27.7).
pub const PACKAGE: &str = "nvidia-nccl-cu12";

/// The other wheel: NVIDIA publishes some releases for CUDA 13 only.
pub const PACKAGE_CU13: &str = "nvidia-nccl-cu13";

/// Both wheels, the one headers come from first.
pub const PACKAGES: [&str; 2] = [PACKAGE, PACKAGE_CU13];

/// Every release on PyPI from the floor on, in either wheel (`.postN`
/// rebuilds left out: same header). A new NCCL release is added here (and to
/// [`CU13_ONLY`] when only [`PACKAGE_CU13`] has it), then `cargo xtask
/// bindgen` regenerates the bindings and the table; `cargo xtask
/// nccl-releases` lists what PyPI has, in either wheel, that this list lacks.
pub const RELEASES: &[&str] = &[
    "2.18.1", "2.18.3", "2.19.3", "2.20.3", "2.20.5", "2.21.5", "2.22.3", "2.23.4", "2.24.3",
    "2.25.1", "2.26.2", "2.26.5", "2.27.3", "2.27.5", "2.27.6", "2.27.7", "2.28.3", "2.28.7",
    "2.28.9", "2.29.2", "2.29.3", "2.29.7", "2.30.3", "2.30.4", "2.30.7", "2.31.2", "2.32.3",
    "2.32.6",
];

/// The releases of [`RELEASES`] that only [`PACKAGE_CU13`] has: their
/// headers come from that wheel.
pub const CU13_ONLY: &[&str] = &["2.32.6"];

/// The wheel the header of `release` comes from.
pub fn package_of(release: &str) -> &'static str {
    if CU13_ONLY.contains(&release) {
        PACKAGE_CU13
    } else {
        PACKAGE
    }
}

/// The oldest runtime CI tests against (cu12: the floor's newest on PyPI).
pub const OLDEST_RUNTIME: (&str, &str) = ("nvidia-nccl-cu12", "2.18.3");
/// The newest runtime CI tests against.
pub const NEWEST_RUNTIME: (&str, &str) = ("nvidia-nccl-cu13", "2.32.6");

/// The since table, relative to the repository root.
pub const SINCE_TABLE: &str = "nccl-sys/src/since_table.rs";

type Release = (u32, u32, u32);

fn parse_release(s: &str) -> Result<Release> {
    let mut it = s.split('.').map(str::parse::<u32>);
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(b)), Some(Ok(c)), None) => Ok((a, b, c)),
        _ => Err(format!("`{s}` is not a release (major.minor.patch)")),
    }
}

fn show(r: Release) -> String {
    format!("{}.{}.{}", r.0, r.1, r.2)
}

/// The fetch script, written under `target/` so that python can run it.
fn script(root: &Path) -> Result<PathBuf> {
    const TEXT: &str = include_str!("pypi_files.py");
    let dir = root.join("target").join("nccl-headers");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let path = dir.join("pypi_files.py");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(TEXT) {
        std::fs::write(&path, TEXT).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(path)
}

fn python(root: &Path, args: &[&str]) -> Result<()> {
    let script = script(root)?;
    let status = Command::new("python3")
        .arg(&script)
        .args(args)
        .status()
        .map_err(|e| format!("could not run python3: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "python3 {} {} failed ({status})",
            script.display(),
            args.join(" ")
        ))
    }
}

/// The folder holding `nccl.h` of `release`, fetched once into
/// `target/nccl-headers/<release>/`.
pub fn header(root: &Path, release: &str) -> Result<PathBuf> {
    let dir = root.join("target").join("nccl-headers").join(release);
    let file = dir.join("nccl.h");
    if !file.is_file() {
        let package = package_of(release);
        eprintln!("xtask: fetching nccl.h of {package} {release} from PyPI");
        python(root, &["header", package, release, &file.to_string_lossy()])?;
    }
    Ok(dir)
}

/// A whole runtime (`include/nccl.h`, `lib/libnccl.so.2`) of `package`
/// `release`, fetched once into `target/nccl-runtimes/<package>-<release>/`.
pub fn runtime(root: &Path, (package, release): (&str, &str)) -> Result<PathBuf> {
    let dir = root
        .join("target")
        .join("nccl-runtimes")
        .join(format!("{package}-{release}"));
    if !dir.join("lib").join("libnccl.so.2").is_file() {
        eprintln!("xtask: fetching libnccl.so.2 of {package} {release} from PyPI");
        python(root, &["runtime", package, release, &dir.to_string_lossy()])?;
    }
    Ok(dir)
}

/// `cargo xtask nccl-releases`: the releases from the floor on that either
/// wheel ([`PACKAGES`]) has on PyPI and [`RELEASES`] lacks.
pub fn list_new_releases(root: &Path) -> Result<()> {
    let script = script(root)?;
    let mut listed = Vec::new();
    for package in PACKAGES {
        let out = Command::new("python3")
            .arg(&script)
            .args(["releases", package])
            .output()
            .map_err(|e| format!("could not run python3: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "listing the releases of {package} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        listed.push((package, String::from_utf8_lossy(&out.stdout).into_owned()));
    }
    let floor = parse_release(RELEASES[0])?;
    let missing = missing_releases(&listed, floor);
    if missing.is_empty() {
        println!(
            "every release since {} of {} is listed",
            RELEASES[0],
            PACKAGES.join(" and ")
        );
    } else {
        for (r, packages) in missing {
            let only13 = packages == [PACKAGE_CU13];
            println!(
                "{} ({}): add it to RELEASES{} in xtask/src/versions.rs",
                show(r),
                packages.join(", "),
                if only13 { " and CU13_ONLY" } else { "" }
            );
        }
    }
    Ok(())
}

/// The releases from `floor` on in the lists `listed` (each a package and
/// its releases, one a line, as `pypi_files.py releases` prints them) that
/// [`RELEASES`] lacks, oldest first, each with the packages that have it.
/// `.postN` rebuilds and other versions that are not `major.minor.patch` are
/// left out.
fn missing_releases<'a>(
    listed: &[(&'a str, String)],
    floor: Release,
) -> Vec<(Release, Vec<&'a str>)> {
    let mut missing: BTreeMap<Release, Vec<&str>> = BTreeMap::new();
    for (package, text) in listed {
        for r in text.lines().filter_map(|l| parse_release(l.trim()).ok()) {
            if r >= floor && !RELEASES.contains(&show(r).as_str()) {
                let p = missing.entry(r).or_default();
                if !p.contains(package) {
                    p.push(package);
                }
            }
        }
    }
    missing.into_iter().collect()
}

/// One release's header, read.
struct Read {
    release: Release,
    include_dir: PathBuf,
    decls: Declarations,
}

fn read_all(root: &Path) -> Result<Vec<Read>> {
    let crate_dir = root.join("nccl-sys");
    let mut out = Vec::new();
    for r in RELEASES {
        let release = parse_release(r)?;
        let include_dir = header(root, r)?;
        let (v, text) = version::expand_header(crate::cc_build(), &crate_dir, &include_dir)?;
        if (v.major, v.minor, v.patch) != release {
            return Err(format!(
                "{}: the header of release {r} says it is NCCL {v}",
                include_dir.display()
            ));
        }
        let raw = std::fs::read_to_string(include_dir.join("nccl.h"))
            .map_err(|e| format!("reading {}: {e}", include_dir.display()))?;
        let decls = scan::scan(&text, &raw).map_err(|e| format!("NCCL {r}: {e}"))?;
        check_initializer(r, &decls)?;
        out.push(Read {
            release,
            include_dir,
            decls,
        });
    }
    Ok(out)
}

/// The build script fills `ncclConfig_t` as `NCCL_CONFIG_INITIALIZER` does,
/// assuming: size, magic, version first, then every `int` field
/// `NCCL_CONFIG_UNDEF_INT` and every pointer `NCCL_CONFIG_UNDEF_PTR`. Checked
/// here for every release, so a header that changes that fails loudly.
pub(crate) fn check_initializer(release: &str, d: &Declarations) -> Result<()> {
    let init = &d.config_initializer;
    let fields = &d.config_fields;
    let bad = |why: String| {
        Err(format!(
            "NCCL {release}: NCCL_CONFIG_INITIALIZER is not what nccl-sys assumes: {why}; \
             update default_config in nccl-sys/build/lazy.rs"
        ))
    };
    if init.len() != fields.len() {
        return bad(format!(
            "{} entries for {} fields",
            init.len(),
            fields.len()
        ));
    }
    let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
    if names[..3] != ["size", "magic", "version"] {
        return bad(format!("the first fields are {:?}", &names[..3]));
    }
    if init[0] != "sizeof(ncclConfig_t)"
        || !["0xcafebeef", "NCCL_API_MAGIC"].contains(&init[1].as_str())
        || ![
            "NCCL_VERSION(NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH)",
            "NCCL_VERSION_CODE",
        ]
        .contains(&init[2].as_str())
    {
        return bad(format!("size/magic/version are {:?}", &init[..3]));
    }
    for (f, e) in fields.iter().zip(init).skip(3) {
        let want = match f.c_type.as_str() {
            "int" => "NCCL_CONFIG_UNDEF_INT",
            "const char *" => "NCCL_CONFIG_UNDEF_PTR",
            other => return bad(format!("field {} has type `{other}`", f.name)),
        };
        if e != want {
            return bad(format!("field {} starts as `{e}`, not {want}", f.name));
        }
    }
    Ok(())
}

/// First release of every name, checking that nothing ever disappears and
/// that `ncclConfig_t` only grows at its end.
fn since_of<'a>(
    reads: &'a [Read],
    names: impl Fn(&'a Declarations) -> Vec<&'a str>,
    what: &str,
) -> Result<BTreeMap<&'a str, Release>> {
    let mut first = BTreeMap::new();
    let mut prev: BTreeSet<&str> = BTreeSet::new();
    for r in reads {
        let now: BTreeSet<&str> = names(&r.decls).into_iter().collect();
        if let Some(gone) = prev.difference(&now).next() {
            return Err(format!(
                "{what} {gone} disappears in NCCL {}: the since table cannot say that; \
                 nccl-sys needs an `until` for it",
                show(r.release)
            ));
        }
        for n in &now {
            first.entry(*n).or_insert(r.release);
        }
        prev = now;
    }
    Ok(first)
}

fn since_table(reads: &[Read], bindings_from: &[Release]) -> Result<String> {
    for w in reads.windows(2) {
        let (a, b) = (&w[0].decls.config_fields, &w[1].decls.config_fields);
        if b.len() < a.len() || b[..a.len()] != a[..] {
            return Err(format!(
                "ncclConfig_t of NCCL {} is not NCCL {}'s with fields appended",
                show(w[1].release),
                show(w[0].release)
            ));
        }
    }
    let functions = since_of(
        reads,
        |d| d.functions.iter().map(String::as_str).collect(),
        "function",
    )?;
    let fields = since_of(
        reads,
        |d| d.config_fields.iter().map(|f| f.name.as_str()).collect(),
        "config field",
    )?;
    let is_code = |n: &str| n != "ncclNumResults";
    let codes = since_of(
        reads,
        |d| {
            d.result_codes
                .iter()
                .map(|(n, _)| n.as_str())
                .filter(|n| is_code(n))
                .collect()
        },
        "result code",
    )?;
    let constants = since_of(
        reads,
        |d| {
            d.constants
                .iter()
                .map(String::as_str)
                .chain(
                    d.result_codes
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .filter(|n| !is_code(n)),
                )
                .collect()
        },
        "constant",
    )?;
    let newest = reads.last().ok_or("no releases")?;
    // one entry a line, as rustfmt writes it (the file is formatted with the
    // build script, which includes it)
    let list = |rs: &mut dyn Iterator<Item = Release>| {
        rs.map(|r| format!("\n    ({}, {}, {}),", r.0, r.1, r.2))
            .collect::<String>()
            + "\n"
    };
    let entry = |n: &str, r: &Release| format!("    (\"{n}\", ({}, {}, {})),\n", r.0, r.1, r.2);

    let mut s = String::new();
    let _ = writeln!(
        s,
        "// Generated by `cargo xtask bindgen` from the nccl.h of every release on PyPI from {} to {}\n\
         // ({PACKAGE}, or {PACKAGE_CU13} for {}; xtask/src/versions.rs). Do not edit: regenerate\n\
         // instead.\n\
         // A release is (major, minor, patch); \"since\" is the first release on PyPI whose header\n\
         // declares the name (NVIDIA published some patch releases on GitHub only).\n",
        RELEASES[0],
        RELEASES[RELEASES.len() - 1],
        if CU13_ONLY.is_empty() {
            "none".to_string()
        } else {
            CU13_ONLY.join(", ")
        }
    );
    let _ = writeln!(s, "/// An NCCL release: (major, minor, patch).");
    let _ = writeln!(s, "pub type Release = (u32, u32, u32);\n");
    let _ = writeln!(s, "/// The releases whose headers were read, oldest first.");
    let _ = writeln!(
        s,
        "pub const RELEASES: &[Release] = &[{}];\n",
        list(&mut reads.iter().map(|r| r.release))
    );
    let _ = writeln!(
        s,
        "/// The releases the committed bindings (`bindings/nccl_2_N.rs`) come from: the newest of\n\
         /// each minor."
    );
    let _ = writeln!(
        s,
        "pub const BINDINGS: &[Release] = &[{}];\n",
        list(&mut bindings_from.iter().copied())
    );
    let _ = writeln!(
        s,
        "/// Every function (sorted by name) and the first release that declares it."
    );
    s.push_str("pub const FUNCTIONS: &[(&str, Release)] = &[\n");
    for (n, r) in &functions {
        s.push_str(&entry(n, r));
    }
    s.push_str("];\n\n");
    let _ = writeln!(
        s,
        "/// The fields of `ncclConfig_t` in declaration order, and the first release with each."
    );
    s.push_str("pub const CONFIG_FIELDS: &[(&str, Release)] = &[\n");
    for f in &newest.decls.config_fields {
        s.push_str(&entry(&f.name, &fields[f.name.as_str()]));
    }
    s.push_str("];\n\n");
    let _ = writeln!(
        s,
        "/// The `ncclResult_t` codes in value order: name, value and first release."
    );
    s.push_str("pub const RESULT_CODES: &[(&str, u32, Release)] = &[\n");
    for (n, v) in newest.decls.result_codes.iter().filter(|(n, _)| is_code(n)) {
        let r = codes[n.as_str()];
        let _ = writeln!(s, "    (\"{n}\", {v}, ({}, {}, {})),", r.0, r.1, r.2);
    }
    s.push_str("];\n\n");
    let _ = writeln!(
        s,
        "/// Enumerators of the other enums and object-like `NCCL_*` macros (sorted), and the first\n\
         /// release with each."
    );
    s.push_str("pub const CONSTANTS: &[(&str, Release)] = &[\n");
    for (n, r) in &constants {
        s.push_str(&entry(n, r));
    }
    s.push_str("];\n");
    Ok(s)
}

/// The committed bindings of one minor.
fn bindings_text(root: &Path, release: Release, include_dir: &Path) -> Result<String> {
    let crate_dir = root.join("nccl-sys");
    let fallback = bindings::compiler_include_dir(&crate::cc_build());
    let body = bindings::generate(&crate_dir, include_dir, fallback.as_deref())?;
    Ok(format!(
        "{}\n{body}",
        bindings::preamble(release, package_of(&show(release)))
    ))
}

/// The newest release read of each minor.
fn newest_of_minors(reads: &[Read]) -> BTreeMap<(u32, u32), &Read> {
    let mut newest = BTreeMap::new();
    for r in reads {
        newest.insert((r.release.0, r.release.1), r);
    }
    newest
}

/// Every generated file, from the headers `reads`: (path relative to the
/// repository root, text).
fn generate(root: &Path, reads: &[Read]) -> Result<Vec<(PathBuf, String)>> {
    let newest = newest_of_minors(reads);
    let from: Vec<Release> = newest.values().map(|r| r.release).collect();
    let mut files = vec![(PathBuf::from(SINCE_TABLE), since_table(reads, &from)?)];
    for r in newest.values() {
        eprintln!("xtask: bindgen on NCCL {}", show(r.release));
        files.push((
            PathBuf::from("nccl-sys").join(version::committed_path(r.release.0, r.release.1)),
            bindings_text(root, r.release, &r.include_dir)?,
        ));
    }
    Ok(files)
}

/// Committed bindings files that no minor generates any more.
fn stale_bindings(root: &Path, files: &[(PathBuf, String)]) -> Vec<PathBuf> {
    let dir = root.join("nccl-sys").join("bindings");
    let keep: BTreeSet<PathBuf> = files.iter().map(|(p, _)| root.join(p)).collect();
    let mut stale: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "rs") && !keep.contains(p))
                .collect()
        })
        .unwrap_or_default();
    stale.sort();
    stale
}

/// Declarations a patch release may give otherwise than its minor's newest
/// (whose bindings serve the whole minor): the version macros, and the
/// config struct, which the crate lays out for the release in use
/// (`config_for_runtime`) and the compile matrix builds against.
fn may_differ_within_minor(key: &str) -> bool {
    matches!(
        key,
        "const NCCL_PATCH" | "const NCCL_VERSION_CODE" | "type ncclConfig_t"
    ) || key.starts_with("struct ncclConfig_v")
}

/// The declarations of a bindings text by kind and name (`fn ncclGetVersion`,
/// `type ncclComm_t`), each as its tokens' text.
fn declarations_of(text: &str) -> Result<BTreeMap<String, String>> {
    use quote::ToTokens;
    let file = syn::parse_file(text).map_err(|e| format!("parsing bindings: {e}"))?;
    let mut out = BTreeMap::new();
    for item in &file.items {
        let key = match item {
            syn::Item::ForeignMod(m) => {
                for f in &m.items {
                    if let syn::ForeignItem::Fn(f) = f {
                        out.insert(
                            format!("fn {}", f.sig.ident),
                            f.sig.to_token_stream().to_string(),
                        );
                    }
                }
                continue;
            }
            syn::Item::Struct(i) => format!("struct {}", i.ident),
            syn::Item::Union(i) => format!("union {}", i.ident),
            syn::Item::Enum(i) => format!("enum {}", i.ident),
            syn::Item::Type(i) => format!("type {}", i.ident),
            syn::Item::Const(i) => format!("const {}", i.ident),
            syn::Item::Static(i) => format!("static {}", i.ident),
            _ => continue,
        };
        out.insert(key, item.to_token_stream().to_string());
    }
    Ok(out)
}

/// What the bindings of a patch release declare otherwise than its minor's
/// committed ones: a declaration the newest lacks, or has in another shape.
fn differences_within_minor(patch: &str, newest: &str) -> Result<Vec<String>> {
    let newest = declarations_of(newest)?;
    Ok(declarations_of(patch)?
        .into_iter()
        .filter(|(key, _)| !may_differ_within_minor(key))
        .filter_map(|(key, text)| match newest.get(&key) {
            Some(t) if *t == text => None,
            Some(_) => Some(format!("{key} (another shape)")),
            None => Some(format!("{key} (not in the newest)")),
        })
        .collect())
}

/// Every release's bindings (bindgen on its header, as a build with the
/// feature `bindgen` makes them) agree with its minor's committed bindings
/// (`files`, just generated from `reads`) on what both declare: the
/// committed bindings fit every patch release, and code written against
/// them compiles on bindgen's.
fn patch_releases_agree(root: &Path, reads: &[Read], files: &[(PathBuf, String)]) -> Result<()> {
    let newest = newest_of_minors(reads);
    let mut problems = Vec::new();
    for r in reads {
        let n = newest[&(r.release.0, r.release.1)];
        if n.release == r.release {
            continue;
        }
        let path =
            PathBuf::from("nccl-sys").join(version::committed_path(n.release.0, n.release.1));
        let committed = files
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, text)| text)
            .ok_or_else(|| format!("no bindings generated for NCCL {}", show(n.release)))?;
        let patch = bindings_text(root, r.release, &r.include_dir)?;
        for d in differences_within_minor(&patch, committed)? {
            problems.push(format!(
                "NCCL {} against {}: {d}",
                show(r.release),
                show(n.release)
            ));
        }
    }
    if problems.is_empty() {
        println!(
            "bindgen: every patch release agrees with its minor's bindings ({} releases)",
            reads.len()
        );
        Ok(())
    } else {
        Err(format!(
            "a patch release declares otherwise than its minor's committed bindings (make \
             bindings.rs give both the same shape, or handle the release): {}",
            problems.join("; ")
        ))
    }
}

/// `cargo xtask bindgen [--check]`: writes (or checks) the per-minor bindings
/// and the since table, and checks that every patch release agrees with
/// its minor's bindings.
pub fn bindgen(root: &Path, check: bool) -> Result<()> {
    let reads = read_all(root)?;
    let files = generate(root, &reads)?;
    patch_releases_agree(root, &reads, &files)?;
    let stale = stale_bindings(root, &files);
    let mut differ = Vec::new();
    for (rel, text) in &files {
        let path = root.join(rel);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
            continue;
        }
        if check {
            differ.push(rel.display().to_string());
        } else {
            if let Some(d) = path.parent() {
                std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
            }
            std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
            println!("bindgen: wrote {}", rel.display());
        }
    }
    for p in &stale {
        if check {
            differ.push(format!("{} (no release generates it)", p.display()));
        } else {
            std::fs::remove_file(p).map_err(|e| format!("removing {}: {e}", p.display()))?;
            println!("bindgen: removed {}", p.display());
        }
    }
    if !differ.is_empty() {
        return Err(format!(
            "these generated files differ from what the headers give now: {}; \
             run `cargo xtask bindgen` and commit",
            differ.join(", ")
        ));
    }
    println!(
        "bindgen: {} files {}",
        files.len(),
        if check { "up to date" } else { "written" }
    );
    Ok(())
}

/// Headers the compile matrix builds against: the newest release of every
/// minor, and releases whose header has less than the committed bindings of
/// their minor (a function or config field of a later patch release).
fn matrix_releases() -> Vec<&'static str> {
    let mut newest: BTreeMap<(u32, u32), &str> = BTreeMap::new();
    for r in RELEASES {
        if let Ok((a, b, _)) = parse_release(r) {
            newest.insert((a, b), r);
        }
    }
    let mut v: Vec<&str> = newest.into_values().collect();
    v.extend(["2.28.3", "2.30.3"]);
    v
}

fn step(name: &str, cmd: &mut Command) -> Result<()> {
    let t = std::time::Instant::now();
    eprintln!("\n==> {name}");
    let status = cmd
        .status()
        .map_err(|e| format!("{name}: could not start: {e}"))?;
    eprintln!("    ({name}: {:.1} s)", t.elapsed().as_secs_f64());
    if status.success() {
        Ok(())
    } else {
        Err(format!("{name} failed ({status})"))
    }
}

/// A cargo command with none of the NCCL variables of the surrounding
/// environment (`deps::ensure` sets some for the main build).
fn clean_cargo(root: &Path) -> Command {
    let mut c = crate::cargo();
    c.current_dir(root);
    for v in [
        "NCCL_DIR",
        "NCCL_INCLUDE_DIR",
        "NCCL_LIB_DIR",
        "NCCL_STATIC",
        "NCCL_SYS_BINDGEN",
        "LD_LIBRARY_PATH",
        "NCCL_RS_LIBRARY",
        "VLLM_NCCL_SO_PATH",
        "NCCL_RS_EXPECT_RUNTIME",
    ] {
        c.env_remove(v);
    }
    c
}

/// Builds test targets and returns their executables (name → path), from
/// cargo's JSON messages.
fn build_tests(cmd: &mut Command, name: &str) -> Result<BTreeMap<String, PathBuf>> {
    let t = std::time::Instant::now();
    eprintln!("\n==> {name}");
    let out = cmd
        .args(["--no-run", "--message-format=json-render-diagnostics"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("{name}: could not start: {e}"))?;
    eprintln!("    ({name}: {:.1} s)", t.elapsed().as_secs_f64());
    if !out.status.success() {
        return Err(format!("{name} failed ({})", out.status));
    }
    let mut exes = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(at) = line.find("\"executable\":\"") else {
            continue;
        };
        let rest = &line[at + 14..];
        let Some(end) = rest.find('"') else { continue };
        let path = PathBuf::from(&rest[..end]);
        let stem = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some((test, _hash)) = stem.rsplit_once('-') {
            exes.insert(test.to_string(), path);
        }
    }
    Ok(exes)
}

fn run_test(
    exes: &BTreeMap<String, PathBuf>,
    test: &str,
    env: &[(&str, &Path)],
    expect: &str,
) -> Result<()> {
    let exe = exes
        .get(test)
        .ok_or_else(|| format!("cargo built no test binary `{test}`"))?;
    let mut c = Command::new(exe);
    for v in ["LD_LIBRARY_PATH", "NCCL_RS_LIBRARY", "VLLM_NCCL_SO_PATH"] {
        c.env_remove(v);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.env("NCCL_RS_EXPECT_RUNTIME", expect);
    step(&format!("{test} against libnccl {expect}"), &mut c)
}

/// The version matrix of `cargo xtask ci`:
///
/// 1. `cargo check` of nccl-sys, nccl and all tests against the header
///    of every supported minor (and two releases with less than their
///    minor's committed bindings), without bindgen (`NCCL_SYS_BINDGEN=0`:
///    the committed bindings), dynamic and static, warnings denied;
/// 2. the CPU tests built on the newest header with bindgen at build time
///    (feature `nccl-sys/bindgen`; every other build here, and the
///    workspace's clippy and tests, use the committed bindings), run against
///    the newest and the oldest runtime (the oldest lacks dozens of the
///    header's functions: the tests check they are `Unsupported`);
/// 3. feature `runtime-load`: clippy (with `nccl-sys/bindgen` too, which
///    lints the build script's bindgen path), built with no NCCL variables,
///    its tests (library from each variable, already loaded, from a Python
///    environment, missing = typed error listing every place) and the CPU
///    tests on the oldest runtime opened through `NCCL_RS_LIBRARY`.
pub fn ci(root: &Path) -> Result<()> {
    let t0 = std::time::Instant::now();
    let target = root.join("target").join("versions");
    let matrix = matrix_releases();
    for r in &matrix {
        let inc = header(root, r)?;
        for (mode, static_) in [("dynamic", "0"), ("static", "1")] {
            step(
                &format!("check against NCCL {r}'s header, committed bindings, {mode}"),
                clean_cargo(root)
                    .args([
                        "check",
                        "--quiet",
                        "-p",
                        "nccl-sys",
                        "-p",
                        "nccl-rs",
                        "-p",
                        "nccl-rs-tests",
                        "--all-targets",
                    ])
                    .arg("--target-dir")
                    .arg(target.join("check"))
                    .env("NCCL_INCLUDE_DIR", &inc)
                    // nothing is linked by a check; an explicit folder without
                    // the library is only a warning
                    .env("NCCL_LIB_DIR", &inc)
                    .env("NCCL_STATIC", static_)
                    .env("NCCL_SYS_BINDGEN", "0")
                    .env("RUSTFLAGS", "-D warnings"),
            )?;
        }
    }
    let t1 = t0.elapsed();

    let newest = runtime(root, NEWEST_RUNTIME)?;
    let oldest = runtime(root, OLDEST_RUNTIME)?;
    let run_dir = target.join("run");
    let exes = build_tests(
        clean_cargo(root)
            .args([
                "test",
                "-p",
                "nccl-rs-tests",
                "--test",
                "sys_cpu",
                "--test",
                "nccl_cpu",
                "--features",
                "nccl-sys/bindgen",
            ])
            .arg("--target-dir")
            .arg(&run_dir)
            .env("NCCL_DIR", &newest)
            .env("NCCL_STATIC", "0"),
        &format!(
            "build the CPU tests on NCCL {}'s header (bindgen at build time)",
            NEWEST_RUNTIME.1
        ),
    )?;
    for (lib, (_, version)) in [(&newest, NEWEST_RUNTIME), (&oldest, OLDEST_RUNTIME)] {
        for test in ["sys_cpu", "nccl_cpu"] {
            run_test(
                &exes,
                test,
                &[("LD_LIBRARY_PATH", &lib.join("lib"))],
                version,
            )?;
        }
    }
    let t2 = t0.elapsed();

    step(
        "clippy with features runtime-load and nccl-sys/bindgen",
        clean_cargo(root)
            .args([
                "clippy",
                "--quiet",
                "-p",
                "nccl-sys",
                "-p",
                "nccl-rs",
                "-p",
                "nccl-rs-tests",
                "--all-targets",
                "--features",
                "runtime-load,nccl-sys/bindgen",
            ])
            .arg("--target-dir")
            .arg(target.join("check"))
            .args(["--", "-D", "warnings"]),
    )?;
    let exes = build_tests(
        clean_cargo(root)
            .args([
                "test",
                "-p",
                "nccl-rs-tests",
                "--features",
                "runtime-load",
                "--test",
                "runtime_load",
                "--test",
                "sys_cpu",
                "--test",
                "nccl_cpu",
            ])
            .arg("--target-dir")
            .arg(&run_dir),
        "build with feature runtime-load (nothing linked)",
    )?;
    let newest_so = newest.join("lib").join("libnccl.so.2");
    let oldest_so = oldest.join("lib").join("libnccl.so.2");
    run_test(
        &exes,
        "runtime_load",
        &[("NCCL_RS_TEST_LIB", &newest_so)],
        NEWEST_RUNTIME.1,
    )?;
    for test in ["sys_cpu", "nccl_cpu"] {
        run_test(
            &exes,
            test,
            &[("NCCL_RS_LIBRARY", &oldest_so)],
            OLDEST_RUNTIME.1,
        )?;
    }
    eprintln!(
        "\nversion matrix: {} headers checked in {:.0} s; newest header on newest and oldest \
         runtime by {:.0} s; runtime-load by {:.0} s",
        matrix.len(),
        t1.as_secs_f64(),
        t2.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_patch_release_that_declares_otherwise_is_named() {
        let newest = "pub type ncclComm_t = *mut ncclComm;\n\
            pub const NCCL_PATCH: u32 = 7;\n\
            unsafe extern \"C\" { pub fn ncclParamGetI8(h: ncclParamHandle_t, out: *mut i8) -> ncclResult_t; }";
        let same = "pub type ncclComm_t = *mut ncclComm;\npub const NCCL_PATCH: u32 = 4;";
        assert!(
            super::differences_within_minor(same, newest)
                .unwrap()
                .is_empty()
        );
        let other = "pub type ncclComm_t = ncclComm;\n\
            unsafe extern \"C\" { pub fn ncclParamGetI8(h: *mut ncclParamHandle_t, out: *mut i8) -> ncclResult_t; \
            pub fn ncclGone() -> ncclResult_t; }";
        assert_eq!(
            super::differences_within_minor(other, newest).unwrap(),
            [
                "fn ncclGone (not in the newest)",
                "fn ncclParamGetI8 (another shape)",
                "type ncclComm_t (another shape)"
            ]
        );
    }

    use super::*;

    #[test]
    fn a_release_only_one_wheel_has_is_missing_with_that_wheel() {
        // the lists as `pypi_files.py releases` prints them (PyPI's order)
        let cu12 = "2.16.2\n2.32.3\n2.26.2.post1\n2.18.1\n2.99.1\n".to_string();
        let cu13 = "2.27.7\n2.32.3\n2.99.2\n2.99.1\n".to_string();
        let listed = [(PACKAGE, cu12), (PACKAGE_CU13, cu13)];
        let missing = missing_releases(&listed, (2, 18, 1));
        assert_eq!(
            missing,
            vec![
                ((2, 99, 1), vec![PACKAGE, PACKAGE_CU13]),
                ((2, 99, 2), vec![PACKAGE_CU13]),
            ]
        );
        // below the floor and `.postN` rebuilds never count
        assert!(
            missing_releases(&[(PACKAGE, "2.16.5\n2.25.1.post1\n".into())], (2, 18, 1)).is_empty()
        );
    }

    #[test]
    fn nothing_is_missing_when_every_listed_release_is_known() {
        let all = RELEASES.join("\n");
        let cu13: String = RELEASES
            .iter()
            .filter(|r| parse_release(r).is_ok_and(|v| v >= (2, 27, 7)))
            .map(|r| format!("{r}\n"))
            .collect();
        assert!(missing_releases(&[(PACKAGE, all), (PACKAGE_CU13, cu13)], (2, 18, 1)).is_empty());
    }

    #[test]
    fn headers_of_cu13_only_releases_come_from_the_cu13_wheel() {
        for r in CU13_ONLY {
            assert!(
                RELEASES.contains(r),
                "{r} is in CU13_ONLY but not in RELEASES"
            );
            assert_eq!(package_of(r), PACKAGE_CU13);
        }
        assert_eq!(package_of("2.32.6"), PACKAGE_CU13);
        assert_eq!(package_of("2.32.3"), PACKAGE);
        assert_eq!(package_of(RELEASES[0]), PACKAGE);
        // the newest release is the last, so the since table's range is right
        let parsed: Vec<Release> = RELEASES.iter().map(|r| parse_release(r).unwrap()).collect();
        assert!(parsed.windows(2).all(|w| w[0] < w[1]), "RELEASES is sorted");
    }
}
