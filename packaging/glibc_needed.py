"""The newest glibc a one-file executable needs: its bootloader and every library it bundles.

    python packaging/glibc_needed.py dist/shelfd dist/shelf-cli dist/shelf

``objdump -T`` on the executable alone shows only the bootloader; the bundled
libpython and friends are unpacked at run time, so each is read from the archive.
Needs PyInstaller (pip install .[dist]) and objdump (binutils).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

from PyInstaller.archive.readers import CArchiveReader


def glibc_versions(path: str) -> set[tuple[int, ...]]:
    symbols = subprocess.run(["objdump", "-T", path], capture_output=True, text=True,
                             check=True).stdout
    return {tuple(int(part) for part in version.split("."))
            for version in re.findall(r"\bGLIBC_(\d+(?:\.\d+)+)", symbols)}


def needed(executable: str) -> tuple[tuple[int, ...], list[str]]:
    """(the newest version, the files that need it)."""
    found = {os.path.basename(executable): max(glibc_versions(executable), default=(0,))}
    archive = CArchiveReader(executable)
    with tempfile.TemporaryDirectory() as scratch:
        copy = os.path.join(scratch, "library.so")
        for name in archive.toc:
            if ".so" not in os.path.basename(name):
                continue
            with open(copy, "wb") as out:
                out.write(archive.extract(name))
            versions = glibc_versions(copy)
            if versions:
                found[name] = max(versions)
    newest = max(found.values())
    return newest, sorted(name for name, version in found.items() if version == newest)


def main() -> int:
    for executable in sys.argv[1:]:
        version, names = needed(executable)
        print("%s: glibc %s (%s)" % (executable, ".".join(map(str, version)), ", ".join(names)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
