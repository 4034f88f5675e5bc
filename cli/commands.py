"""What shelf-cli does, as functions of an open ``Client``.

Shared by the one-shot subcommands and the ``shell`` prompt. Single-threaded,
in the terminal's process. Each function prints its own result to stdout and
raises a ``common.protocol.ShelfError`` (or ``LocalError``) on failure; the
caller turns errors into one line on stderr and an exit code. A ``Session``
hands out the open client and opens a new one when a cut request closed it.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from contextlib import contextmanager

from common.client import Client, Exists
from common.files import (CannotResume, DestinationExists, DownloadInProgress, LocalError,
                          LocalNotFound, LocalWriteError, Partial, Unverified,
                          download_atomically)
from common.humanize import display_width, human_size, local_time, pad

__all__ = ["Session", "cmd_ls", "cmd_stat", "cmd_hash", "cmd_get", "cmd_put",
           "resolve_destinations", "LocalError", "LocalNotFound", "LocalWriteError",
           "DestinationExists", "DownloadInProgress", "CannotResume", "Partial", "Unverified"]


# -- the session ---------------------------------------------------------------

class Session:
    """The client of one shelf-cli run (or shell), reopened when it was closed.

    A request cut in the middle (Ctrl+C, a timeout, a local write error)
    closes its session, because the server's bytes are still in flight; the
    next command then starts a new session instead of reading them.
    """

    def __init__(self, host: str, port: int, timeout: float):
        self.host, self.port, self.timeout = host, port, timeout
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None or self._client.closed:
            self._client = Client(self.host, self.port, timeout=self.timeout)
        return self._client

    def connect(self) -> Client:
        """The open client; a new session when there is none (CannotConnect...)."""
        return self.client

    def drop(self) -> None:
        """Close at once, without QUIT: the session may be out of step."""
        if self._client is not None:
            self._client.abort()
            self._client = None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# -- progress ----------------------------------------------------------------

@contextmanager
def progress_bar(name: str, total: int, enabled: bool, initial: int | None = 0):
    """Yield a progress(done) callback: a tqdm bar on a terminal, nothing otherwise.

    ``initial=None``: the bar appears at the first call and starts at its
    value (a resumed download reports its kept bytes first).
    """
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    columns, rows = stderr_size()
    bars = []
    last = [0]

    def start(done: int) -> None:
        bars.append(tqdm(
            total=total, initial=done, unit="B", unit_scale=True, unit_divisor=1024,
            desc=name if len(name) <= 30 else name[:27] + "...", file=sys.stderr,
            ncols=columns, nrows=rows, leave=False, miniters=1,
            bar_format="{desc}  [{bar:20}] {percentage:3.0f}%  {rate_fmt}  ETA {remaining}"))
        last[0] = done

    def update(done: int) -> None:
        if not bars:
            start(done)
            return
        bars[0].update(done - last[0])
        last[0] = done

    if initial is not None:
        start(initial)
    try:
        yield update
    finally:
        for bar in bars:
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
            raise LocalNotFound("no such folder: %s" % dest)
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
    remote = client.stat(name)
    with progress_bar(name, remote.size, show_progress, initial=None) as progress:
        try:
            return download_atomically(client, name, target, overwrite=force, resume=resume,
                                       keep_partial=True, verify=verify, progress=progress,
                                       remote=remote)
        except Unverified:
            raise  # it says what to do
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
        raise LocalNotFound("no such file: %s" % path) from None
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
