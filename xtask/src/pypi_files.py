"""Fetches single files out of NVIDIA's NCCL wheels on PyPI, with HTTP Range
requests: a wheel is a zip, and zipfile only reads the central directory and
the members asked for, so one nccl.h costs about 60 KB instead of 200+ MB.

Driven by `cargo xtask` (xtask/src/versions.rs); standard library only.

usage:
  python3 pypi_files.py header  PACKAGE VERSION DEST_FILE
  python3 pypi_files.py runtime PACKAGE VERSION DEST_DIR   (DEST_DIR/include/nccl.h, DEST_DIR/lib/libnccl.so.2)
  python3 pypi_files.py releases PACKAGE                    (one version a line)

Every file is written to a temporary name first and renamed, so an
interrupted run never leaves a truncated file behind.
"""

import io
import json
import os
import platform
import shutil
import sys
import urllib.parse
import urllib.request
import zipfile

TIMEOUT = 60
HEADER = "nvidia/nccl/include/nccl.h"
LIBRARY = "nvidia/nccl/lib/libnccl.so.2"


def index(package):
    url = "https://pypi.org/pypi/%s/json" % package
    with urllib.request.urlopen(url, timeout=TIMEOUT) as r:
        return url, json.load(r)


def wheel_url(package, version):
    """The URL of the wheel of `version` for this machine's architecture."""
    base, data = index(package)
    files = data.get("releases", {}).get(version)
    if not files:
        raise SystemExit("%s has no release %s on PyPI" % (package, version))
    arch = platform.machine()
    wheels = [f for f in files if f["filename"].endswith(".whl")]
    mine = [f for f in wheels if arch in f["filename"]]
    pick = (mine or wheels or [None])[0]
    if pick is None:
        raise SystemExit("%s %s has no wheel" % (package, version))
    # PyPI's JSON gives file URLs relative to the JSON document
    return urllib.parse.urljoin(base, pick["url"]), pick["size"]


class RangeReader(io.RawIOBase):
    """A read-only, seekable file over HTTP Range requests."""

    def __init__(self, url, size):
        self.url, self.size, self.pos = url, size, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self.pos

    def seek(self, offset, whence=io.SEEK_SET):
        if whence == io.SEEK_SET:
            self.pos = offset
        elif whence == io.SEEK_CUR:
            self.pos += offset
        else:
            self.pos = self.size + offset
        return self.pos

    def readinto(self, buf):
        n = min(len(buf), self.size - self.pos)
        if n <= 0:
            return 0
        req = urllib.request.Request(
            self.url, headers={"Range": "bytes=%d-%d" % (self.pos, self.pos + n - 1)}
        )
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            if r.status != 206:
                raise OSError("server ignored the Range request (HTTP %d)" % r.status)
            data = r.read()
        buf[: len(data)] = data
        self.pos += len(data)
        return len(data)


def extract(zf, member, dest):
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    tmp = dest + ".part"
    with zf.open(member) as src, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, 16 << 20)
    os.replace(tmp, dest)


def open_wheel(package, version):
    url, size = wheel_url(package, version)
    # zipfile asks for small pieces; the buffer makes them fewer
    raw = io.BufferedReader(RangeReader(url, size), buffer_size=64 << 10)
    return zipfile.ZipFile(raw)


def main(argv):
    if len(argv) == 2 and argv[0] == "releases":
        _, data = index(argv[1])
        for v in data.get("releases", {}):
            print(v)
        return
    if len(argv) != 4 or argv[0] not in ("header", "runtime"):
        raise SystemExit(__doc__)
    what, package, version, dest = argv
    zf = open_wheel(package, version)
    if what == "header":
        extract(zf, HEADER, dest)
    else:
        extract(zf, HEADER, os.path.join(dest, "include", "nccl.h"))
        extract(zf, LIBRARY, os.path.join(dest, "lib", "libnccl.so.2"))


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (OSError, zipfile.BadZipFile, KeyError) as e:
        raise SystemExit("pypi_files.py: %s" % e)
