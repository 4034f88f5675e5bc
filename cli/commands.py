"""What shelf-cli does, as functions of an open ``Client``.

Shared by the one-shot subcommands and the ``shell`` prompt. Single-threaded,
in the terminal's process. Each function prints its own result to stdout and
raises a ``common.protocol.ShelfError`` (or ``LocalError``) on failure; the
caller turns errors into one line on stderr and an exit code.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from contextlib import contextmanager

from common.client import Client, Exists
from common.files import (DestinationExists, LocalError, Partial, download_atomically,
                          resume_offset)
from common.humanize import display_width, human_size, local_time, pad


# -- progress ----------------------------------------------------------------

@contextmanager
def progress_bar(name: str, total: int, enabled: bool, initial: int = 0):
    """Yield a progress(done) callback: a tqdm bar on a terminal, nothing otherwise."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    columns, rows = stderr_size()
    bar = tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
               desc=name if len(name) <= 30 else name[:27] + "...", file=sys.stderr,
               ncols=columns, nrows=rows, leave=False, miniters=1,
               bar_format="{desc}  [{bar:20}] {percentage:3.0f}%  {rate_fmt}  ETA {remaining}")
    last = [initial]

    def update(done):
        bar.update(done - last[0])
        last[0] = done

    try:
        yield update
    finally:
        bar.close()


def stderr_size() -> tuple[int, int]:
    """The terminal's size as stderr sees it; 80x24 when it reports none (a bare pty)."""
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError):
        return 80, 24
    return min(100, size.columns or 80), size.lines or 24


# -- listing -----------------------------------------------------------------

def cmd_ls(client: Client, as_json: bool = False, out=None) -> None:
    out = out or sys.stdout
    entries = client.list()
    if as_json:
        json.dump([{"name": e.name, "size": e.size, "mtime": e.mtime} for e in entries], out,
                  ensure_ascii=False, indent=2)
        out.write("\n")
        return
    if not entries:
        out.write("(the library is empty)\n")
        return
    width = max(16, min(60, max(display_width(e.name) for e in entries))) + 2
    out.write(pad("NAME", width) + pad("SIZE", 10) + "MODIFIED\n")
    for entry in entries:
        out.write(pad(entry.name, width) + pad(human_size(entry.size), 10)
                  + local_time(entry.mtime) + "\n")


def cmd_stat(client: Client, name: str, out=None) -> None:
    out = out or sys.stdout
    entry = client.stat(name)
    out.write("name:     %s\nsize:     %s (%d bytes)\nmodified: %s\n"
              % (entry.name, human_size(entry.size), entry.size, local_time(entry.mtime)))


def cmd_hash(client: Client, name: str, out=None) -> None:
    out = out or sys.stdout
    out.write("%s  %s\n" % (client.hash(name), name))  # the format sha256sum -c reads


# -- get ---------------------------------------------------------------------

def resolve_destinations(names: list[str], dest: str | None) -> list[tuple[str, str]]:
    """Pair each library name with a local path. Several names need a folder."""
    if dest is None:
        return [(name, os.path.abspath(name)) for name in names]
    dest = os.path.expanduser(dest)
    if os.path.isdir(dest) or dest.endswith(os.sep):
        if not os.path.isdir(dest):
            raise LocalError("no such folder: %s" % dest)
        return [(name, os.path.abspath(os.path.join(dest, name))) for name in names]
    if len(names) > 1:
        raise LocalError("with several names the last argument must be a folder: %s" % dest)
    return [(names[0], os.path.abspath(dest))]


def cmd_get(client: Client, name: str, target: str, force: bool = False,
            resume: bool = False, verify: bool = False, show_progress: bool = False) -> int:
    """Download ``name`` to ``target`` (see ``common.files.download_atomically``).

    A cut connection keeps the part file and says how to resume it.
    """
    if os.path.lexists(target) and not force:
        raise DestinationExists("%s already exists (use --force to replace it)" % target)
    size = client.stat(name).size
    offset = resume_offset(target, size) if resume else 0
    with progress_bar(name, size, show_progress, initial=offset) as progress:
        try:
            return download_atomically(client, name, target, overwrite=force, resume=resume,
                                       keep_partial=True, verify=verify, progress=progress,
                                       size=size)
        except Partial as exc:
            raise Partial("%s; run again with --continue to resume" % exc) from None


# -- put ---------------------------------------------------------------------

def cmd_put(client: Client, path: str, name: str | None = None, size: int | None = None,
            show_progress: bool = False) -> int:
    """Upload one local file (or stdin for ``-``); return the bytes sent."""
    if path == "-":
        if not name or size is None:
            raise LocalError("put - needs --as NAME and --size N")
        source = sys.stdin.buffer
        with progress_bar(name, size, show_progress) as progress:
            return client.put(name, source, size, progress=progress)
    name = name or os.path.basename(path.rstrip(os.sep))
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise LocalError("no such file: %s" % path) from None
    except IsADirectoryError:
        raise LocalError("%s is a folder; upload files one by one" % path) from None
    except PermissionError:
        raise LocalError("cannot read %s: permission denied" % path) from None
    with handle:
        info = os.fstat(handle.fileno())
        if stat.S_ISDIR(info.st_mode):
            raise LocalError("%s is a folder; upload files one by one" % path)
        with progress_bar(name, info.st_size, show_progress) as progress:
            try:
                return client.put(name, handle, info.st_size, progress=progress)
            except Exists:
                raise Exists("%s is already in the library" % name) from None
