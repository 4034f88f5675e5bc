"""What shelf-cli does, as functions of an open ``Client``: everything but the
transfers (those are in cli/transfer.py).

Shared by the one-shot subcommands and the ``shell`` prompt. Single-threaded,
in the terminal's process. Remote paths arrive resolved (tuples of segments,
see cli/remote.py). Each function prints its own result and raises a
``common.protocol.ShelfError`` (or ``LocalError``) whose text is fit for the
user on failure; the caller turns errors into one line on stderr and an exit
code. A ``Session`` hands out the open client and opens a new one when a cut
request closed it.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager

from cli.remote import Path, text
from common.client import Client, Entry, Exists, NotEmpty, NotFound
from common.files import (CannotResume, DestinationExists, DownloadInProgress, IsAFolder,
                          LocalError, LocalNotFound, LocalWriteError, Partial, Unverified)
from common.humanize import display_width, human_size, local_time, pad

__all__ = ["Session", "cmd_ls", "cmd_stat", "cmd_hash", "cmd_mkdir", "cmd_rm", "cmd_rmdir",
           "cmd_mv", "cmd_trash", "cmd_restore", "cmd_df", "LocalError", "LocalNotFound",
           "LocalWriteError", "DestinationExists", "DownloadInProgress", "CannotResume",
           "Partial", "Unverified", "IsAFolder"]


# -- the session ---------------------------------------------------------------

class Session:
    """The client of one shelf-cli run (or shell), reopened when it was closed.

    A request cut in the middle (Ctrl+C, a timeout, a local write error)
    closes its session, because the server's bytes are still in flight; the
    next command then starts a new session instead of reading them.
    """

    def __init__(self, host: str, port: int, timeout: float, tls: bool = False, trust=None,
                 user: str | None = None, password: bytes | None = None):
        self.host, self.port, self.timeout = host, port, timeout
        # USER@: every session, the first and each reopened one, logs in at once.
        self.user, self.password = user, password
        self.tls, self.trust = tls, trust  # shelfs://, and whom to trust (common.trust)
        self._client: Client | None = None
        self._tls_session = None  # a reopened TLS session resumes the last one

    @property
    def server(self) -> str:
        """The server as a URL, for messages and upload records."""
        host = "[%s]" % self.host if ":" in self.host else self.host
        user = self.user + "@" if self.user else ""
        return "%s://%s%s:%d" % ("shelfs" if self.tls else "shelf", user, host, self.port)

    @property
    def client(self) -> Client:
        if self._client is None or self._client.closed:
            self._client = Client(self.host, self.port, timeout=self.timeout, tls=self.tls,
                                  trust=self.trust, tls_session=self._tls_session,
                                  user=self.user, password=self.password)
            if self.tls:  # the same contexts next time, so the session can resume
                self.trust, self._tls_session = self._client.trust, self._client.tls_session
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


# -- looking ----------------------------------------------------------------------

def stat_or_none(client: Client, path: Path) -> Entry | None:
    try:
        return client.stat(path)
    except NotFound:
        return None


def entry_json(entry: Entry, folder: Path) -> dict:
    return {"name": entry.name, "path": "/".join(folder + (entry.name,)), "kind": entry.kind,
            "size": entry.size, "mtime": entry.mtime, "version": entry.version}


def cmd_ls(client: Client, folder: Path = (), as_json: bool = False, out=None) -> None:
    """List a folder (a file named instead is listed alone, as ls does)."""
    out = out or sys.stdout
    try:
        entries = client.list(folder)
    except NotFound:
        entry = stat_or_none(client, folder) if folder else None
        if entry is None or entry.is_folder:
            raise NotFound("no such folder in the library: %s" % text(folder)) from None
        entries, folder = [entry], folder[:-1]
    if as_json:
        json.dump([entry_json(e, folder) for e in entries], out, ensure_ascii=False, indent=2)
        out.write("\n")
        return
    if not entries:
        out.write("(the library is empty)\n" if not folder
                  else "(%s is empty)\n" % text(folder))
        return
    shown = [(e.name + "/" if e.is_folder else e.name, e) for e in entries]
    width = max(16, min(60, max(display_width(name) for name, _ in shown))) + 2
    out.write(pad("NAME", width) + pad("SIZE", 10) + "MODIFIED\n")
    for name, entry in shown:
        size = "-" if entry.is_folder else human_size(entry.size)
        out.write(pad(name, width) + pad(size, 10) + local_time(entry.mtime) + "\n")


def cmd_stat(client: Client, path: Path, as_json: bool = False, out=None) -> Entry:
    out = out or sys.stdout
    entry = client.stat(path)
    if as_json:
        json.dump(entry_json(entry, path[:-1]) if path else dict(
            entry_json(entry, ()), path=""), out, ensure_ascii=False, indent=2)
        out.write("\n")
    elif entry.is_folder:
        out.write("name:     %s\nkind:     folder\nmodified: %s\n"
                  % (text(path), local_time(entry.mtime)))
    else:
        out.write("name:     %s\nkind:     file\nsize:     %s (%d bytes)\nmodified: %s\n"
                  "version:  %s\n" % (text(path), human_size(entry.size), entry.size,
                                       local_time(entry.mtime), entry.version))
    return entry


def cmd_hash(client: Client, path: Path, out=None) -> None:
    out = out or sys.stdout
    entry = client.stat(path)
    if entry.is_folder:
        raise IsAFolder("%s is a folder; hash takes a file" % text(path))
    digest = client.hash(path, size=entry.size)
    out.write("%s  %s\n" % (digest, text(path)))  # the format sha256sum -c reads


# -- changing ---------------------------------------------------------------------

def cmd_mkdir(client: Client, path: Path, parents: bool = False) -> None:
    """Make a folder; with ``parents`` also the missing folders above it, and an
    existing folder is fine (as mkdir -p)."""
    if not path:
        raise LocalError("the root folder always exists")
    for depth in range(1 if parents else len(path), len(path) + 1):
        here = path[:depth]
        try:
            client.mkdir(here)
        except Exists:
            entry = stat_or_none(client, here)
            if entry is not None and entry.is_folder and (parents or depth < len(path)):
                continue
            what = "a folder" if entry is not None and entry.is_folder else "a file"
            raise Exists("%s already exists (%s)" % (text(here), what)) from None
        except NotFound:
            raise NotFound("no such folder in the library: %s (mkdir -p makes it)"
                           % text(here[:-1])) from None


def cmd_rm(client: Client, path: Path) -> None:
    """Delete a file (to the trash where the server keeps one)."""
    try:
        client.delete(path)
    except NotFound:
        entry = stat_or_none(client, path)
        if entry is not None and entry.is_folder:
            raise IsAFolder("%s is a folder; remove it with rmdir once it is empty"
                            % text(path)) from None
        raise NotFound("no such file in the library: %s" % text(path)) from None


def cmd_rmdir(client: Client, path: Path) -> None:
    """Remove an empty folder."""
    if not path:
        raise LocalError("the root folder cannot be removed")
    try:
        client.rmdir(path)
    except NotEmpty:
        raise NotEmpty("%s is not empty; remove what it holds first" % text(path)) from None
    except NotFound:
        entry = stat_or_none(client, path)
        if entry is not None and not entry.is_folder:
            raise IsAFolder("%s is a file; remove it with rm" % text(path)) from None
        raise NotFound("no such folder in the library: %s" % text(path)) from None


def cmd_mv(client: Client, source: Path, target: Path) -> None:
    """Rename or move a file or folder; never replaces anything."""
    if not source or not target:
        raise LocalError("the root folder cannot be moved, nor anything moved onto it")
    try:
        client.rename(source, target)
    except Exists:
        raise Exists("%s already exists; mv never replaces (to move into a folder, end "
                     "its name with /)" % text(target)) from None
    except NotFound:
        if stat_or_none(client, source) is None:
            raise NotFound("no such file or folder in the library: %s" % text(source)) \
                from None
        raise NotFound("no such folder in the library: %s" % text(target[:-1])) from None


# -- the trash ----------------------------------------------------------------------

def cmd_trash(client: Client, as_json: bool = False, out=None) -> None:
    """What can be restored, newest first."""
    out = out or sys.stdout
    entries = client.trash()
    if as_json:
        json.dump([{"id": e.id, "path": e.path, "size": e.size, "deleted": e.deleted}
                   for e in entries], out, ensure_ascii=False, indent=2)
        out.write("\n")
        return
    if not entries:
        out.write("(the trash is empty)\n")
        return
    width = max(4, max(len(e.id) for e in entries)) + 2
    out.write(pad("ID", width) + pad("DELETED", 18) + pad("SIZE", 10) + "PATH\n")
    for entry in entries:
        out.write(pad(entry.id, width) + pad(local_time(entry.deleted), 18)
                  + pad(human_size(entry.size), 10) + entry.path + "\n")


def cmd_restore(client: Client, trash_id: str, path: Path | None = None, out=None) -> None:
    """Put a trashed file back, where it was or at ``path``."""
    out = out or sys.stdout
    where = text(path) if path is not None else None
    if where is None:
        where = next((e.path for e in client.trash() if e.id == trash_id), None)
    try:
        version = client.restore(trash_id, path)
    except Exists:
        raise Exists("%s already exists; restore it elsewhere: restore %s NEW_PATH"
                     % (where or "its path", trash_id)) from None
    except NotFound:
        raise NotFound("nothing in the trash has the id %s (or the folder it goes to is gone)"
                       % trash_id) from None
    out.write("restored %s (version %s)\n" % (where or trash_id, version))


def cmd_df(client: Client, as_json: bool = False, out=None) -> None:
    out = out or sys.stdout
    free, total = client.space()
    if as_json:
        json.dump({"free": free, "total": total}, out)
        out.write("\n")
        return
    used = 100.0 * (total - free) / total if total else 0.0
    out.write("free:  %s (%d bytes)\ntotal: %s (%d bytes)\nused:  %.0f%%\n"
              % (human_size(free), free, human_size(total), total, used))
