"""Uploads: bytes wait in .shelf-uploads until they are committed, kept or dropped.

PUT, RESUME and ABORT (PROTOCOL.md v2, "PUT and RESUME"), behind the Store
methods of the same names. Every upload's bytes go to one hidden working
folder at the library root, ``.shelf-uploads`` (see "Working folders" in
daemon/store.py), as two files named by the upload's token, 32 lowercase hex
digits of os.urandom(16), unique on every machine that shares the library:

    <token>.info   {"path": [segments from the library root], "size": N,
                    "replace": bool, "owner": "user name", "created": epoch seconds}
    <token>        the bytes received so far

The record is written first, then the data file is created O_EXCL and
``flock``-ed for as long as an ``Upload`` holds it: the lock is what says "a
live session owns this", across processes and machines, and a session that
dies (even by SIGKILL) lets it go. So a half-made upload is a record without
data (a begin that crashed) or data without a record (a drop that crashed);
clean-up removes such orphans once they are ORPHAN_AGE old.

Commit fsyncs the bytes, stamps their version id, and links them into the
target folder (resolved afresh from the root, through the jail) or renames them
over the old file (replace), then removes both working names and fsyncs the
folder. A link cannot cross file systems: where a mount sits inside the
library, an upload into it fails (IOFailure) rather than copying.

A session that ends before its final reply ``keep()``s its upload: the lock
goes, both names stay, and RESUME (``resume_upload``) opens the same token for
the same owner at the offset the data file reached. ``expire``,
``cap_uploads`` and ``drop_upload`` give the space back; none of them touches
an upload whose lock is held.

Concurrency: an Upload belongs to one session thread. The functions here may
run in any number of processes and threads at once (a Store is shared by
forked sessions); the flocks are their only coordination.
"""

from __future__ import annotations

import errno
import fcntl
import math
import os
import re
import stat
import time
from dataclasses import dataclass
from typing import Protocol, Sequence

from daemon.jail import (_ENTRY, _NEW_FILE, FILE_MODE, ORPHAN_AGE, Exists, Full, Invalid,
                         IOFailure, NotFound, Segments, StoreError, _failure, _is_number,
                         _kind_at, _lock_if_unowned, _read_record, _recorded_path, _same_file,
                         _unlink_if_same, _unlink_quietly, _write_record, validate_path)
from daemon.store import (Entry, Store)

UPLOADS_FOLDER = ".shelf-uploads"
MAX_OWNER = 255  # characters in an owner's name as a record keeps it

_TOKEN = re.compile(r"[0-9a-f]{32}")
_INFO = re.compile(r"([0-9a-f]{32})\.info")
_DATA = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class FdSource(Protocol):
    """Where an upload's bytes come from: ``common.protocol.Channel`` is one."""

    def read_exact_to_fd(self, fd: int, count: int) -> OSError | None: ...


@dataclass(frozen=True)
class _Record:
    """What ``<token>.info`` says; ``parse`` trusts nothing in the file."""

    path: Segments
    size: int
    replace: bool
    owner: str
    created: float

    @classmethod
    def parse(cls, raw: dict | None) -> "_Record | None":
        if raw is None:
            return None
        path, size, replace, owner, created = (
            _recorded_path(raw.get("path")), raw.get("size"), raw.get("replace"),
            raw.get("owner"), raw.get("created"))
        if path is None or not isinstance(size, int) or isinstance(size, bool) or size < 0 \
                or not isinstance(replace, bool) or not isinstance(owner, str) \
                or not _is_number(created):
            return None
        return cls(path, size, replace, owner, float(created))

    def to_json(self) -> dict:
        return {"path": list(self.path), "size": self.size, "replace": self.replace,
                "owner": self.owner, "created": self.created}


def _read_info(folder_fd: int, token: str) -> _Record | None:
    try:
        fd = os.open(token + ".info", _ENTRY, dir_fd=folder_fd)
    except OSError:
        return None
    try:
        return _Record.parse(_read_record(fd))
    finally:
        os.close(fd)


# -- one upload -----------------------------------------------------------------------

class Upload:
    """One upload: its bytes in .shelf-uploads; ``commit`` makes them a file.

    Use as a context manager: leaving it neither committed nor kept drops
    the bytes. Nothing appears at the path before ``commit`` returns; after
    any failure nothing appears and nothing is replaced. After commit,
    abort or keep, further calls change nothing.
    """

    def __init__(self, store: Store, folder_fd: int, token: str, record: _Record, fd: int):
        self.store = store
        self.token = token
        self.path = record.path
        self.size = record.size
        self.replace = record.replace
        self.owner = record.owner
        self._folder = folder_fd  # .shelf-uploads; both descriptors are this object's
        self._fd = fd             # the data file, open for writing and locked
        self.offset = os.lseek(fd, 0, os.SEEK_END)  # bytes received before this session
        self._failure: StoreError | None = None
        self._settled = False     # committed or kept: leaving the with-block keeps that

    def __enter__(self) -> "Upload":
        return self

    def __exit__(self, *exc) -> None:
        if not self._settled:
            self.abort()

    def open_ended(self) -> None:
        """Streaming (FTP, which announces no size): ``commit`` stores whatever was
        written. Such an upload is never kept for RESUME (its record says the size
        at begin, 0), so the caller aborts it on any failure."""
        self.size = None

    def _data_fd(self) -> int:
        if self._fd < 0:
            raise IOFailure("the upload is closed")
        return self._fd

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes (for local producers); Full or IOFailure at once on error."""
        fd = self._data_fd()
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:
            self._failure = _failure(exc, "store")
            raise self._failure from None

    def receive_from(self, source: FdSource) -> None:
        """Take the rest of the bytes (``size`` minus what the file holds) from ``source``.

        A disk error does not stop the source (it drains the bytes to keep the
        framing) and then raises Full or IOFailure here; the source's own
        errors (a broken connection) pass through untouched.
        """
        fd = self._data_fd()
        try:
            missing = max(0, self.size - os.fstat(fd).st_size)
        except OSError as exc:
            raise _failure(exc, "store") from None
        error = source.read_exact_to_fd(fd, missing)
        if error is not None:
            self._failure = _failure(error, "store")
            raise self._failure

    def commit(self) -> Entry:
        """fsync the file, put it at its path, fsync the folder; the stored Entry.

        Exists: another upload stored the path first (without ``replace``), or
        a folder took it. NotFound: the folder went away. Full, IOFailure.
        On any failure the upload is dropped.
        """
        try:
            if self._failure is not None:
                raise self._failure
            fd = self._data_fd()
            if self.size is not None and os.fstat(fd).st_size != self.size:
                raise IOFailure("upload incomplete")
            os.fchmod(fd, FILE_MODE)
            self.store._stamp(fd)
            self.store._sync(fd)
            self._place(fd)
            self._settled = True
            return self.store._describe(fd, self.path[-1])
        except OSError as exc:
            if exc.errno in (errno.EISDIR, errno.ENOTEMPTY):
                raise Exists("a folder is at that path") from None
            if exc.errno == errno.EXDEV:
                raise IOFailure("cannot store: the folder is on another file system than "
                                "%s (a mount inside the library)" % UPLOADS_FOLDER) from None
            raise _failure(exc, "store") from None
        finally:
            if self._settled:
                self._close()
            else:
                self.abort()

    def _place(self, fd: int) -> None:
        """Link (new) or rename (replace) into the folder the path names now."""
        name = self.path[-1]
        parent = self.store._open_folder(self.path[:-1])
        try:
            if self.replace:
                if _kind_at(parent, name) not in (None, "file"):
                    raise Exists("exists")
                os.rename(self.token, name, src_dir_fd=self._folder, dst_dir_fd=parent)
            else:
                os.link(self.token, name, src_dir_fd=self._folder, dst_dir_fd=parent,
                        follow_symlinks=False)  # EEXIST: the first commit won
            try:
                if not self.replace:
                    os.unlink(self.token, dir_fd=self._folder)  # before the Entry: ctime moves
                _unlink_quietly(self._folder, self.token + ".info")
                self.store._sync(parent)
            except OSError:
                if not self.replace:  # nothing may appear after a failure
                    _unlink_if_same(parent, name, os.fstat(fd))
                raise
        finally:
            os.close(parent)

    def abort(self) -> None:
        """Drop the bytes now: both names, then the lock (idempotent)."""
        if self._fd < 0:
            return
        try:
            _unlink_if_same(self._folder, self.token, os.fstat(self._fd))
        except OSError:
            pass
        _unlink_quietly(self._folder, self.token + ".info")
        self._close()

    def keep(self) -> None:
        """Leave the bytes for RESUME: flushed, unlocked, both names kept (idempotent)."""
        if self._fd < 0:
            return
        try:
            self.store._sync(self._fd)  # a resumed upload must not build on lost bytes
        except OSError:
            pass  # the offset will say what is there
        self._settled = True
        self._close()

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # lets go of the lock
            os.close(self._folder)
            self._fd = -1


# -- begin, resume, drop ------------------------------------------------------------------

def begin_upload(store: Store, path: Sequence[str | bytes], size: int, replace: bool = False,
                 owner: str = "anonymous") -> Upload:
    """Everything PUT checks before its first OK, then an Upload of ``size`` bytes.

    Exists if something is at ``path`` (with ``replace``: anything but a
    regular file), NotFound if its folder is not, Full if the bytes cannot fit.
    """
    path = validate_path(path)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise Invalid("invalid size")
    if not isinstance(owner, str) or not owner or len(owner) > MAX_OWNER:
        raise Invalid("invalid owner")
    if not path:
        raise Exists("the root is a folder")
    parent = store._open_folder(path[:-1])
    try:
        kind = _kind_at(parent, path[-1])
        if kind is not None and (not replace or kind != "file"):
            raise Exists("exists")
        vfs = os.statvfs(parent)
        if size + store.reserve > vfs.f_bavail * vfs.f_frsize:
            raise Full("not enough free space")
    except OSError as exc:
        raise _failure(exc, "store") from None
    finally:
        os.close(parent)
    record = _Record(path, size, replace, owner, time.time())
    folder = store._working_folder(UPLOADS_FOLDER, create=True)
    try:
        token, fd = _create(folder, record)
    except OSError as exc:
        os.close(folder)
        raise _failure(exc, "store") from None
    except BaseException:
        os.close(folder)
        raise
    return Upload(store, folder, token, record, fd)


def _create(folder_fd: int, record: _Record) -> tuple[str, int]:
    """A new token: its record, then its data file, created and locked."""
    for _ in range(16):
        token = os.urandom(16).hex()
        info = token + ".info"
        try:
            os.close(_write_record(folder_fd, info, record.to_json(), durable=False))
        except FileExistsError:
            continue
        try:
            fd = os.open(token, _NEW_FILE, 0o600, dir_fd=folder_fd)
        except BaseException as exc:
            _unlink_quietly(folder_fd, info)
            if isinstance(exc, FileExistsError):
                continue
            raise
        fcntl.flock(fd, fcntl.LOCK_EX)  # new: only a clean-up's probe holds it, briefly
        st = os.fstat(fd)
        if _same_file(folder_fd, token, st) and _kind_at(folder_fd, info) == "file":
            return token, fd
        # a clean-up told to remove everything took a name before the lock: again
        _unlink_if_same(folder_fd, token, st)
        _unlink_quietly(folder_fd, info)
        os.close(fd)
    raise OSError(errno.EEXIST, "no free upload token")


def _claim(store: Store, token: str, owner: str) -> tuple[int, int, _Record]:
    """The folder, the data file (open, locked) and the record of a kept upload.

    NotFound for anything but an upload of ``owner`` that no one holds: the
    token is unknown or malformed, the record is another user's or does not
    parse, the data file is not a regular file, or a live session has it.
    """
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise NotFound("no such upload")
    folder = store._working_folder(UPLOADS_FOLDER, create=False)
    if folder is None:
        raise NotFound("no such upload")
    try:
        record = _read_info(folder, token)
        if record is None or record.owner != owner:
            raise NotFound("no such upload")
        try:
            fd = os.open(token, _DATA, dir_fd=folder)  # a FIFO: ENXIO, never a hang
        except OSError:
            raise NotFound("no such upload") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise NotFound("no such upload")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise NotFound("no such upload: it is in use by another session") from None
            if not _same_file(folder, token, st):  # expired while we were locking
                raise NotFound("no such upload")
            os.set_blocking(fd, True)
        except OSError as exc:
            os.close(fd)
            raise _failure(exc, "resume") from None
        except BaseException:
            os.close(fd)
            raise
    except BaseException:
        os.close(folder)
        raise
    return folder, fd, record


def resume_upload(store: Store, token: str, owner: str) -> Upload:
    """RESUME: the kept upload ``token`` of ``owner``, at its offset (NotFound, Full)."""
    folder, fd, record = _claim(store, token, owner)
    upload = Upload(store, folder, token, record, fd)
    try:
        if upload.offset > upload.size:
            raise NotFound("no such upload (its bytes are longer than announced)")
        vfs = os.statvfs(folder)
        if upload.size - upload.offset + store.reserve > vfs.f_bavail * vfs.f_frsize:
            raise Full("not enough free space")
    except OSError as exc:
        upload.keep()
        raise _failure(exc, "resume") from None
    except BaseException:
        upload.keep()  # refused now; the bytes stay until they expire
        raise
    return upload


def drop_upload(store: Store, token: str, owner: str) -> None:
    """ABORT: remove ``owner``'s kept upload ``token`` now (NotFound as for RESUME)."""
    folder, fd, record = _claim(store, token, owner)
    Upload(store, folder, token, record, fd).abort()


# -- clean-up -------------------------------------------------------------------------------

def _tokens(folder_fd: int) -> list[str]:
    """The tokens that have a data file or a record (or something planted under one)."""
    tokens = set()
    for name in os.listdir(folder_fd):
        match = _INFO.fullmatch(name) or _TOKEN.fullmatch(name)
        if match:
            tokens.add(name[:32])
    return sorted(tokens)


def _old(age: float, limit: float) -> bool:
    return limit <= 0 or age > limit


def expire(store: Store, max_age: float, orphan_age: float = ORPHAN_AGE) -> list[Segments]:
    """Remove what no one holds: kept uploads older than ``max_age`` seconds (0: all)
    and half-made ones older than ``orphan_age`` (or ``max_age`` if less).

    A kept upload's age runs from its record's ``created`` or its data's
    mtime, whichever is later. Returns the removed tokens' paths from the root.
    """
    folder = store._working_folder(UPLOADS_FOLDER, create=False)
    if folder is None:
        return []
    removed = []
    try:
        now = time.time()
        for token in _tokens(folder):
            if _expire_one(folder, token, now, max_age, min(orphan_age, max_age)):
                removed.append((UPLOADS_FOLDER, token))
    except OSError as exc:
        raise _failure(exc, "clean up the uploads") from None
    finally:
        os.close(folder)
    return removed


def remove_orphans(store: Store) -> list[Segments]:
    """At start: half-made uploads only; kept ones wait for their expiry."""
    return expire(store, math.inf)


def _expire_one(folder_fd: int, token: str, now: float, max_age: float,
                orphan_age: float) -> bool:
    info = token + ".info"
    held = _lock_if_unowned(folder_fd, token)
    if held is None:
        if _kind_at(folder_fd, token) is not None:
            return False  # a live upload's (or not a regular file: left alone)
        try:
            st = os.stat(info, dir_fd=folder_fd, follow_symlinks=False)
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode) or not _old(now - st.st_mtime, orphan_age):
            return False
        if _kind_at(folder_fd, token) is not None:
            return False  # its begin went on meanwhile (and checks its record after locking)
        _unlink_if_same(folder_fd, info, st)
        return True
    fd, st = held
    try:
        record = _read_info(folder_fd, token)
        if record is None:  # no record, or one that does not parse: an orphan
            expired = _old(now - st.st_mtime, orphan_age)
        else:
            expired = _old(now - max(record.created, st.st_mtime), max_age)
        if not expired:
            return False
        os.unlink(token, dir_fd=folder_fd)
        _unlink_quietly(folder_fd, info)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def cap_uploads(store: Store, owner: str, keep: int) -> int:
    """Of ``owner``'s kept uploads (live ones do not count), remove all but the
    ``keep`` newest (by ``created``); how many were removed."""
    folder = store._working_folder(UPLOADS_FOLDER, create=False)
    if folder is None:
        return 0
    try:
        kept = []
        for token in _tokens(folder):
            record = _read_info(folder, token)
            if record is not None and record.owner == owner:
                held = _lock_if_unowned(folder, token)
                if held is not None:
                    os.close(held[0])
                    kept.append((record.created, token))
        kept.sort(reverse=True)
        removed = 0
        for _, token in kept[max(0, keep):]:
            held = _lock_if_unowned(folder, token)  # again: a RESUME may have come
            if held is None:
                continue
            try:
                os.unlink(token, dir_fd=folder)
                _unlink_quietly(folder, token + ".info")
                removed += 1
            except OSError:
                pass
            finally:
                os.close(held[0])
        return removed
    except OSError as exc:
        raise _failure(exc, "clean up the uploads") from None
    finally:
        os.close(folder)


def kept_bytes(store: Store) -> int:
    """Bytes in .shelf-uploads: kept uploads and uploads in progress."""
    folder = store._working_folder(UPLOADS_FOLDER, create=False)
    if folder is None:
        return 0
    total = 0
    try:
        for token in _tokens(folder):
            try:
                st = os.stat(token, dir_fd=folder, follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    except OSError as exc:
        raise _failure(exc, "read the uploads") from None
    finally:
        os.close(folder)
    return total
