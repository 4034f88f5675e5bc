"""Build the one-file executables with PyInstaller and write SHA256SUMS.

    python packaging/build.py --dist dist [--work build] [--only shelfd]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROGRAMS = ("shelfd", "shelf-cli", "shelf")


def build(name: str, dist: str, work: str) -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
                    "--distpath", dist, "--workpath", os.path.join(work, name),
                    os.path.join(HERE, name + ".spec")], check=True)
    return time.monotonic() - started


def write_sums(dist: str, names) -> str:
    path = os.path.join(dist, "SHA256SUMS")
    with open(path, "w") as out:
        for name in names:
            digest = hashlib.sha256()
            with open(os.path.join(dist, name), "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            out.write("%s  %s\n" % (digest.hexdigest(), name))
    return path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dist", default="dist")
    parser.add_argument("--work", default="build")
    parser.add_argument("--only", action="append", choices=PROGRAMS)
    args = parser.parse_args()
    names = args.only or list(PROGRAMS)
    for name in names:
        seconds = build(name, os.path.abspath(args.dist), os.path.abspath(args.work))
        size = os.path.getsize(os.path.join(args.dist, name))
        print("built %s/%s (%.1f MiB) in %.0f s" % (args.dist, name, size / 1048576, seconds))
    print("wrote", write_sums(args.dist, names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
