#!/usr/bin/env python3
"""Which GPU test calls each public function and method of the safe crate
(`nccl`): a Markdown table for docs/validation.md, made from the sources.

    python3 tests/gpu/coverage.py                 # print the table
    python3 tests/gpu/coverage.py --update FILE   # replace it in FILE, between
                                                  # <!-- coverage:begin --> and
                                                  # <!-- coverage:end -->
    python3 tests/gpu/coverage.py --check FILE    # fail if FILE's table is stale

Public items: `pub fn` (also `const`/`unsafe`) in nccl/src outside src/bin
and test modules, on a type or as a function that lib.rs (or a public
module) exports, the `Config` setters made by `setter!`, and the methods of
public traits; `#[doc(hidden)]` items are left out.

Who calls them is the compiler's answer, not a text search: the script
copies the repository (git's files) to a temporary folder, marks every
public item `#[deprecated]` there, runs `cargo check` of the test programs,
examples and nccl-bench (feature runtime-load, of the tests too, so nothing
of NCCL is needed, every API is compiled in and tests/runtime_load.rs is
seen; target folder target/coverage), and reads
each "use of deprecated" warning's place. GPU programs: tests/nccl_gpu.rs
(with tests/nccl_gpu/) and tests/faults.rs (tests/gpu/validate.sh, tests/gpu/nccl-from-source.sh),
the examples survive, weight_sync and device_all_reduce and nccl-bench (validate.sh's elastic,
launchers and bench steps). Items no GPU program calls are exceptions: the
reason comes from REASONS below, from the NCCL release the item's
documentation names, or says which CPU tests call it; "NOT TESTED" where
none applies. Runs cargo: on a shared machine, under its cargo lock.
Standard library only.
"""

import os
import re
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SRC = os.path.join(ROOT, "nccl", "src")

GPU_PROGRAMS = [
    "tests/nccl_gpu.rs",
    "tests/nccl_gpu",
    "tests/faults.rs",
    "nccl/examples/survive.rs",
    "nccl/examples/weight_sync.rs",
    "nccl/examples/device_all_reduce.rs",
    "nccl/src/bin/nccl-bench",
]
CPU_TESTS = [
    "tests/nccl_cpu.rs",
    "tests/bootstrap.rs",
    "tests/runtime_load.rs",
    "tests/bin",
    "nccl/tests",
]

# The newest NCCL on the GPU machine as installed (PyTorch's); newer
# releases run there only when built from source (nccl-from-source.sh):
# FROM_SOURCE, the newest of those prepared.
MACHINE_NEWEST = (2, 28, 9)
FROM_SOURCE = (2, 30, 7)

# Why a public item has no GPU test, where the sources cannot tell.
REASONS = {
    "Version::from_code": "CPU only by nature: arithmetic on a version code",
    "Version::code": "CPU only by nature: arithmetic on a version code",
    "Version::new": "CPU only by nature: a constructor",
    "RankMap::excluding": "CPU only by nature: rank arithmetic",
    "GrowPlan::new": "CPU only by nature: rank arithmetic",
    "GrowPlan::from_bootstrap": "CPU only by nature: rank arithmetic",
    "error_string": "CPU only by nature: NCCL's text of a result code",
    "slurm_port": "CPU only by nature: a port from Slurm's job and step ids",
    "store_id_key": "CPU only by nature: a key name",
}


def rel(p):
    return os.path.relpath(p, ROOT)


def rust_files(path):
    path = os.path.join(ROOT, path)
    if os.path.isfile(path):
        return [path]
    out = []
    for d, _, fs in os.walk(path):
        out += [os.path.join(d, f) for f in fs if f.endswith(".rs")]
    return sorted(out)


def strip_comment(line):
    # good enough for this code: no `//` inside string literals on item lines
    i = line.find("//")
    return line if i < 0 else line[:i]


def exported_names():
    """Names lib.rs and bootstrap/mod.rs re-export, and the public modules."""
    names = set()
    for f in ("lib.rs", "bootstrap/mod.rs"):
        text = open(os.path.join(SRC, f)).read()
        for m in re.finditer(r"pub use [\w:]+::\{([^}]*)\}", text):
            names.update(x.strip().split(" as ")[-1] for x in m.group(1).split(",") if x.strip())
        for m in re.finditer(r"pub use [\w:]*::(\w+);", text):
            names.add(m.group(1))
    return names


IMPL_START = re.compile(r"^\s*(?:unsafe\s+)?impl\b")
TRAIT = re.compile(r"^\s*pub\s+(?:unsafe\s+)?trait\s+(\w+)")
PUB_FN = re.compile(r"^\s*pub\s+(?:const\s+)?(?:unsafe\s+)?(?:async\s+)?fn\s+(\w+)")
TRAIT_FN = re.compile(r"^\s*(?:unsafe\s+)?fn\s+(\w+)")
SETTER = re.compile(r"^\s*(\w+):\s*[\w<>]+\s*$")
# what an item's documentation says it needs: "(NCCL 2.29.2+)" (the Config
# setters) or "`Unsupported` before NCCL 2.29.7" (its errors)
NCCL_VER = re.compile(r"(?:\(NCCL |`Unsupported` before NCCL )(\d+)\.(\d+)(?:\.(\d+))?")


def impl_type(header):
    """The type of an `impl<...> [Trait for] Type<...> [where ...] {` header
    (joined onto one line): the one after `for`, else the first."""
    h = re.sub(r"^\s*(?:unsafe\s+)?impl\b", "", header).strip()
    if h.startswith("<"):  # the impl's generics, with nested <>
        d = 0
        for i, c in enumerate(h):
            d += {"<": 1, ">": -1}.get(c, 0)
            if d == 0:
                h = h[i + 1 :]
                break
    h = h.split("{", 1)[0]
    h = re.split(r"\bwhere\b", h)[0]
    if re.search(r"\sfor\s", h):
        h = re.split(r"\sfor\s", h, 1)[1]
    h = h.strip().lstrip("&").strip()
    m = re.match(r"(?:\w+::)*(\w+)", h)
    return m.group(1) if m else None


def public_items(dedup=True):
    """[(qualified name, file, line, doc text)]; with `dedup`, the first
    definition of each name only (some are defined once per cfg)."""
    exported = exported_names()
    items = []
    for path in rust_files("nccl/src"):
        if "/src/bin/" in path:
            continue
        module_public = path.endswith("library.rs")
        lines = open(path).read().split("\n")
        depth = 0
        stack = []  # (kind, name, depth at which it opened)
        doc = []
        hidden = False
        skip_until = None  # depth of a #[cfg(test)] module
        cfg_test = False
        in_setter = False
        header = None  # an impl header not yet closed by its `{`
        for i, raw in enumerate(lines):
            line = strip_comment(raw)
            s = raw.strip()
            if skip_until is not None:
                depth += line.count("{") - line.count("}")
                if depth <= skip_until:
                    skip_until = None
                continue
            if s.startswith("///"):
                doc.append(s[3:].strip())
            elif s.startswith("#[doc(hidden)]"):
                hidden = True
            elif s.startswith("#[cfg(test)]"):
                cfg_test = True
            opened = None
            if cfg_test and re.match(r"^\s*mod\s+\w+\s*\{", line):
                skip_until = depth
                depth += line.count("{") - line.count("}")
                cfg_test = False
                doc, hidden = [], False
                continue
            m_trait = TRAIT.match(line)
            if header is None and IMPL_START.match(line):
                header = ""
            if header is not None:
                header += " " + line.strip()
                if "{" in line:
                    opened = ("impl", impl_type(header))
                    header = None
            elif m_trait:
                opened = ("trait", m_trait.group(1))
            ctx = stack[-1] if stack else None
            if s.startswith("setter!("):
                in_setter = True
            if in_setter:
                m = SETTER.match(line)
                if m and ctx and ctx[1] == "Config":
                    items.append(("Config::" + m.group(1), rel(path), i + 1, " ".join(doc)))
                if s.startswith(");"):
                    in_setter = False
                    doc, hidden = [], False
            m = PUB_FN.match(line)
            if m and not hidden:
                name = m.group(1)
                if ctx and ctx[0] == "impl":
                    if ctx[1] in exported:
                        items.append((ctx[1] + "::" + name, rel(path), i + 1, " ".join(doc)))
                elif not ctx:
                    if name in exported or module_public:
                        q = ("library::" + name) if module_public else name
                        items.append((q, rel(path), i + 1, " ".join(doc)))
            elif ctx and ctx[0] == "trait" and ctx[1] in exported and not hidden:
                m = TRAIT_FN.match(line)
                if m and len(stack) == 1 + sum(1 for k in stack[:-1] if k[0] == "impl"):
                    items.append((ctx[1] + "::" + m.group(1), rel(path), i + 1, " ".join(doc)))
            if s and not s.startswith("///") and not s.startswith("#[") and not in_setter:
                doc, hidden = [], False
            before = depth
            depth += line.count("{") - line.count("}")
            if opened:
                stack.append((opened[0], opened[1], before))
            while stack and depth <= stack[-1][2]:
                stack.pop()
            if s and not s.startswith("#["):
                cfg_test = False  # #[cfg(test)] applies to the next item only
    if not dedup:
        return items
    # one entry per name (a method may be defined under several cfgs)
    seen, out = set(), []
    for it in items:
        if it[0] not in seen:
            seen.add(it[0])
            out.append(it)
    return out


FN_LINE = re.compile(r"^\s*(?:pub(?:\([\w:]+\))?\s+)?(?:const\s+)?(?:unsafe\s+)?(?:async\s+)?fn\s+(\w+)")


def in_list(path, prefixes):
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)


def enclosing_fn(path, line, cache={}):
    """The function around line `line` (1-based) of `path` (repository-relative)."""
    if path not in cache:
        cache[path] = open(os.path.join(ROOT, path)).read().split("\n")
    lines = cache[path]
    at = min(line, len(lines)) - 1
    for i in range(at, -1, -1):
        m = FN_LINE.match(lines[i])
        if m:
            # a nested fn that closed before the line (rustfmt puts its
            # closing brace at the fn's indentation) does not enclose it
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            if any(l.rstrip() == indent + "}" for l in lines[i + 1 : at]):
                continue
            return m.group(1)
    return "(top level)"


def deprecated_uses(all_items):
    """{item: [(file, line)]}: where the test programs, examples and
    nccl-bench use each item, from `cargo check` of a copy in which every
    public item is `#[deprecated]`."""
    import json
    import shutil
    import subprocess
    import tempfile

    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode().split("\0")
    tmp = tempfile.mkdtemp(prefix="nccl-rs-coverage-")
    try:
        for f in files:
            src = os.path.join(ROOT, f)
            if f and os.path.isfile(src):
                os.makedirs(os.path.dirname(os.path.join(tmp, f)), exist_ok=True)
                shutil.copy2(src, os.path.join(tmp, f))
        by_file = {}
        for q, f, line, _ in all_items:
            by_file.setdefault(f, []).append(line)
        for f, lines in by_file.items():
            path = os.path.join(tmp, f)
            text = open(path).read().split("\n")
            for line in sorted(set(lines), reverse=True):
                indent = re.match(r"\s*", text[line - 1]).group(0)
                text.insert(line - 1, indent + '#[deprecated(note = "nccl-rs coverage")]')
            open(path, "w").write("\n".join(text))
        env = dict(os.environ)
        for v in ("NCCL_DIR", "NCCL_INCLUDE_DIR", "NCCL_LIB_DIR", "NCCL_STATIC", "RUSTFLAGS"):
            env.pop(v, None)
        env["NCCL_SYS_BINDGEN"] = "0"
        env["CARGO_TARGET_DIR"] = os.path.join(ROOT, "target", "coverage")
        cmd = [
            "cargo", "check", "--quiet", "--message-format=json",
            "-p", "nccl-rs-tests", "-p", "nccl-rs", "--tests", "--examples", "--bins",
            "--features", "nccl-rs-tests/runtime-load,nccl-rs/runtime-load,nccl-rs/bench",
        ]
        r = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True)
        if r.returncode != 0:
            sys.stderr.write(r.stderr.decode(errors="replace")[-4000:])
            raise SystemExit("coverage.py: cargo check of the marked copy failed")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    keys = {q for q, *_ in all_items}
    uses = {}
    for raw in r.stdout.decode(errors="replace").split("\n"):
        if '"deprecated"' not in raw:
            continue
        try:
            msg = json.loads(raw).get("message") or {}
        except ValueError:
            continue
        if (msg.get("code") or {}).get("code") != "deprecated":
            continue
        m = re.search(r"use of deprecated [\w ]+ `([^`]+)`", msg.get("message", ""))
        if not m:
            continue
        path = def_path(m.group(1))
        segs = [x for x in path.replace("::::", "::").split("::") if x]
        key = None
        for cand in ("::".join(segs[-2:]), segs[-1]):
            if cand in keys:
                key = cand
                break
        if key is None:
            continue
        for sp in msg.get("spans", []):
            if sp.get("is_primary"):
                where = (sp["file_name"], sp["line_start"])
                if where not in uses.setdefault(key, []):
                    uses[key].append(where)
    return uses


def def_path(p):
    """rustc's path of an item without generics, an inherent impl's
    `<impl nccl::Comm>` (or `<impl Trait for Type<..>>`) as its type's name:
    `nccl::ops::collective::<impl nccl::Comm>::all_reduce` →
    `nccl::ops::collective::Comm::all_reduce`."""
    out, i = "", 0
    while i < len(p):
        if p[i] == "<":
            d, j = 0, i
            while j < len(p):
                d += {"<": 1, ">": -1}.get(p[j], 0)
                if d == 0:
                    break
                j += 1
            inner = p[i + 1 : j]
            if inner.startswith("impl "):
                t = re.split(r"\sfor\s", inner[5:])[-1]
                t = def_path(t).split("::")[-1]
                out += t
            i = j + 1
        else:
            out += p[i]
            i += 1
    return out


def version_in(doc):
    vs = [tuple(int(x or 0) for x in m.groups()) for m in NCCL_VER.finditer(doc)]
    return max(vs) if vs else None


def table():
    all_items = public_items(dedup=False)
    items = public_items()
    uses = deprecated_uses(all_items)
    rows, tested = [], 0
    for q, f, line, doc in sorted(items, key=lambda x: (x[1], x[2])):
        found = uses.get(q, [])
        gpu, cpu = [], []
        for fl, ln in sorted(found):
            key = (fl, enclosing_fn(fl, ln))
            if in_list(fl, GPU_PROGRAMS):
                if key not in gpu:
                    gpu.append(key)
            elif in_list(fl, CPU_TESTS) and key not in cpu:
                cpu.append(key)
        v = version_in(doc)
        if gpu:
            tested += 1
            where = ", ".join("`%s` (%s)" % (fn, fl.replace("nccl/", "")) for fl, fn in gpu[:3])
            if len(gpu) > 3:
                where += " and %d more" % (len(gpu) - 3)
            if v and v > FROM_SOURCE:
                where += "; needs NCCL %s: says NOT RUN with every library prepared for the GPU machine (newest %s)" % (
                    ".".join(map(str, v)), ".".join(map(str, FROM_SOURCE)))
            elif v and v > MACHINE_NEWEST:
                where += "; needs NCCL %s: runs only with NCCL built from source (tests/gpu/nccl-from-source.sh)" % ".".join(map(str, v))
            rows.append((q, f, where, ""))
            continue
        cpu_list = ", ".join("`%s` (%s)" % (fn, fl) for fl, fn in cpu[:2])
        if q in REASONS:
            why = REASONS[q] + ("; CPU tests: " + cpu_list if cpu else "; doc tests or none")
        elif v and v > MACHINE_NEWEST:
            why = "needs NCCL %s: newer than the GPU machine's libraries (2.28.3, 2.28.9); no GPU test yet" % ".".join(map(str, v))
        elif cpu:
            why = "CPU tests only: " + cpu_list
        else:
            why = "NOT TESTED"
        rows.append((q, f, "—", why))
    out = [
        "| item | defined in | GPU test that calls it | exception (no GPU test) |",
        "| --- | --- | --- | --- |",
    ]
    for q, f, where, why in rows:
        out.append("| `%s` | %s | %s | %s |" % (q, f.replace("nccl/src/", ""), where, why))
    out.append("")
    out.append(
        "%d public items: %d called by a GPU program, %d exceptions (%d of them NOT TESTED)."
        % (len(rows), tested, len(rows) - tested, sum(1 for r in rows if r[3] == "NOT TESTED"))
    )
    return "\n".join(out) + "\n"


BEGIN, END = "<!-- coverage:begin -->", "<!-- coverage:end -->"


def main(argv):
    t = table()
    if not argv:
        sys.stdout.write(t)
        return 0
    if len(argv) != 2 or argv[0] not in ("--update", "--check"):
        sys.stderr.write(__doc__)
        return 2
    path = argv[1]
    text = open(path).read()
    if BEGIN not in text or END not in text:
        sys.stderr.write("%s has no %s ... %s section\n" % (path, BEGIN, END))
        return 1
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = head + BEGIN + "\n" + t + END + tail
    if argv[0] == "--check":
        if new != text:
            sys.stderr.write("%s: the coverage table is stale: run python3 tests/gpu/coverage.py --update %s\n" % (path, path))
            return 1
        return 0
    if new != text:
        open(path, "w").write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
