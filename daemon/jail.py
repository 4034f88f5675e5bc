"""The jail's parts: errors, paths, the kernel calls, and small file helpers.

Everything ``daemon.store`` (and ``daemon.uploads``, ``daemon.trash``) builds
on and no caller needs to know: the typed errors (one per FAIL code), path
validation exactly as PROTOCOL.md says, ``openat2`` and
``renameat2(RENAME_NOREPLACE)`` through ctypes, what the kernel and file system
offer (``Features``), and the helpers that look at, lock and remove one name in
a folder without ever following it, plus the small JSON records of the working
folders. See ``daemon.store``'s docstring for the design; nothing here holds
state, so any process or thread may call it.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import math
import os
import re
import stat
from dataclasses import dataclass
from typing import Literal, Sequence

from common.protocol import InvalidName, ShelfError, validate_name

MAX_PATH = 1024                  # bytes in a decoded path, separators included
WORKING_PREFIX = ".shelf-"       # the server's own hidden files start with this
TEMP_PREFIX = ".shelf-upload."   # the hash cache's temporaries (and shelfd 1's uploads)
CACHE_FOLDER = ".shelf-cache"
MAX_RECORD = 16 << 10            # bytes in a working folder's JSON record
ORPHAN_AGE = 60                  # seconds before half of a crashed two-step change goes
VERSION_XATTR = "user.shelf.version"
FREE_SPACE_RESERVE = 1 << 20     # an upload must leave this much free
HASH_BLOCK = 1 << 20
FILE_MODE = 0o644
FOLDER_MODE = 0o755

Segments = tuple[str, ...]
Kind = Literal["file", "folder"]

_TEMP_NAME = re.compile(r"\.shelf-upload\.[0-9a-f]{32}")
_OLD_TEMP_NAME = re.compile(r"\.shelf-upload\.[0-9]+(\.[0-9a-f]{12})?")  # shelfd 1, at the root
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_ENTRY = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_GONE = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENXIO, errno.ENODEV})
_NO_XATTRS = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES})


# -- errors: one class per reply the protocol has for them ---------------------

class StoreError(ShelfError):
    """A refusal or failure; ``code`` is the FAIL code (None: the EXISTS reply)."""

    code: str | None = "io"


class Invalid(StoreError):
    code = "invalid"


class NotFound(StoreError):
    code = "notfound"


class NotAFolder(NotFound):
    """The path names something, but not a folder (the protocol says notfound)."""


class NotAFile(NotFound):
    """The path names something, but not a regular file."""


class Exists(StoreError):
    code = None


class NotEmpty(StoreError):
    code = "notempty"


class Changed(StoreError):
    code = "changed"


class Full(StoreError):
    code = "full"


class IOFailure(StoreError):
    code = "io"


class Unsupported(IOFailure):
    """The file system cannot do this safely (a folder rename that never replaces)."""


def _failure(exc: OSError, action: str) -> StoreError:
    """The StoreError for an OSError met while doing ``action``."""
    if exc.errno in _GONE:
        return NotFound("no such file or folder")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return Full("not enough free space")
    if exc.errno == errno.EEXIST:
        return Exists("exists")
    if exc.errno == errno.ENOTEMPTY:
        return NotEmpty("folder is not empty")
    if exc.errno == errno.EXDEV:
        return IOFailure("cannot %s: it would cross into another file system (a mount "
                         "inside the library)" % action)
    return IOFailure("cannot %s: %s" % (action, (exc.strerror or str(exc)).lower()))


# -- paths ------------------------------------------------------------------------

def validate_segment(segment: str | bytes) -> str:
    """One segment as PROTOCOL.md v2 says (``common.protocol.validate_name``), or Invalid."""
    try:
        return validate_name(segment)
    except InvalidName as exc:
        raise Invalid(str(exc)) from None


def validate_path(segments: Sequence[str | bytes]) -> Segments:
    """A validated path (a tuple of segments); ``()`` is the root."""
    if isinstance(segments, (str, bytes)):
        raise TypeError("a path is a sequence of segments; use parse_path() for text")
    path = tuple(validate_segment(segment) for segment in segments)
    if path and sum(len(s.encode("utf-8")) for s in path) + len(path) - 1 > MAX_PATH:
        raise Invalid("invalid path: longer than %d bytes" % MAX_PATH)
    return path


def parse_path(text: str) -> Segments:
    """Split plain (not percent-encoded) text on ``/``; ``""`` and ``"/"`` are the root."""
    return () if text in ("", "/") else validate_path(text.split("/"))


_PLAIN_NAME = re.compile(r"[ -\-0-~][ -.0-~]{0,254}")  # printable ASCII, no "/", no leading "."


def _listable(name: str) -> bool:
    """Whether an on-disk name is a valid segment (a listing asks this of every entry)."""
    if _PLAIN_NAME.fullmatch(name):  # the usual case, without encoding anything
        return True
    try:
        validate_segment(name)
    except Invalid:
        return False
    return True


# -- the kernel calls Python 3.11 lacks -------------------------------------------

class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_RESOLVE = 0x08 | 0x04 | 0x02  # RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
_RENAME_NOREPLACE = 1
_SYSCALL_NUMBERS = {"x86_64": (437, 316), "aarch64": (437, 276)}  # openat2, renameat2
_NR_OPENAT2, _NR_RENAMEAT2 = _SYSCALL_NUMBERS.get(os.uname().machine, (None, None))
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _syscall(number: int | None, *args) -> int:
    """A raw system call; OSError on failure (EINTR is retried)."""
    if number is None:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))
    while True:
        result = _libc.syscall(ctypes.c_long(number), *args)
        if result >= 0:
            return result
        code = ctypes.get_errno()
        if code != errno.EINTR:
            raise OSError(code, os.strerror(code))


def openat2(dir_fd: int, path: str, flags: int) -> int:
    """openat2(2) beneath ``dir_fd`` with no link of any kind followed."""
    how = _OpenHow(flags, 0, _RESOLVE)
    return _syscall(_NR_OPENAT2, ctypes.c_int(dir_fd), ctypes.c_char_p(os.fsencode(path)),
                    ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))


def rename_noreplace(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """renameat2(RENAME_NOREPLACE): EEXIST if ``dst`` exists; EINVAL where the FS refuses."""
    _syscall(_NR_RENAMEAT2, ctypes.c_int(src_fd), ctypes.c_char_p(os.fsencode(src)),
             ctypes.c_int(dst_fd), ctypes.c_char_p(os.fsencode(dst)),
             ctypes.c_uint(_RENAME_NOREPLACE))


@dataclass(frozen=True)
class Features:
    """What the kernel and file system offer; tests turn them off to test the fallbacks."""

    openat2: bool = True    # resolve a path in one openat2 call (else a walk)
    tmpfile: bool = True    # try O_TMPFILE for the hash cache's temporaries (else named ones)
    xattrs: bool = True     # read and stamp version ids (else stat-derived versions)
    noreplace: bool = True  # try renameat2(RENAME_NOREPLACE) (else files: link + unlink)

    @classmethod
    def detect(cls, root_fd: int) -> "Features":
        try:
            os.close(openat2(root_fd, ".", _FOLDER))
            has_openat2 = True
        except OSError:  # ENOSYS, or a seccomp filter's EPERM
            has_openat2 = False
        return cls(openat2=has_openat2,
                   tmpfile=hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd"),
                   noreplace=_NR_RENAMEAT2 is not None)

    @classmethod
    def portable(cls) -> "Features":
        return cls(openat2=False, tmpfile=False, xattrs=False, noreplace=False)


# -- one name in a folder, never followed ------------------------------------------

def _kind_at(folder_fd: int, name: str) -> Kind | Literal["other"] | None:
    """What ``name`` is in the folder, without following it; None if nothing."""
    try:
        mode = os.stat(name, dir_fd=folder_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return None
    return "file" if stat.S_ISREG(mode) else "folder" if stat.S_ISDIR(mode) else "other"


def _same_file(folder_fd: int, name: str, st: os.stat_result) -> bool:
    """Whether ``name`` (not followed) still is the file ``st`` describes."""
    try:
        now = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)


def _unlink_if_same(folder_fd: int, name: str, st: os.stat_result) -> None:
    """Unlink ``name`` if it still is the file ``st`` describes."""
    try:
        if _same_file(folder_fd, name, st):
            os.unlink(name, dir_fd=folder_fd)
    except OSError:
        pass


def _unlink_quietly(folder_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=folder_fd)
    except OSError:
        pass


def _lock_if_unowned(folder_fd: int, name: str) -> tuple[int, os.stat_result] | None:
    """(fd, stat) of ``name``, locked, if it is a regular file nobody holds; else None.

    The name is checked again after the lock: whoever held it may have
    removed it (and another file may have taken the name) in between.
    """
    try:
        fd = os.open(name, _ENTRY, dir_fd=folder_fd)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # refused while someone holds it
            if _same_file(folder_fd, name, st):
                return fd, st
    except OSError:
        pass
    os.close(fd)
    return None


def _remove_unowned(folder_fd: int, name: str) -> bool:
    """Unlink a working file if it is a regular file nobody holds; True if gone."""
    held = _lock_if_unowned(folder_fd, name)
    if held is None:
        return False
    try:
        os.unlink(name, dir_fd=folder_fd)
        return True
    except OSError:
        return False
    finally:
        os.close(held[0])


# -- records: the small JSON files of the working folders ------------------------------

def _write_record(folder_fd: int, name: str, record: dict, durable: bool) -> int:
    """Create the record ``name`` (FileExistsError if taken); its open descriptor."""
    data = json.dumps(record, separators=(",", ":")).encode("ascii")
    fd = os.open(name, _NEW_FILE, 0o600, dir_fd=folder_fd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(folder_fd, name)
        raise
    return fd


def _open_record(folder_fd: int, name: str) -> int | None:
    """A descriptor of ``name`` (never a link; a FIFO does not block), or None."""
    try:
        return os.open(name, _ENTRY, dir_fd=folder_fd)
    except OSError:
        return None


def _read_record(fd: int) -> dict | None:
    """The JSON object in an open record; None unless it is a small regular file of one."""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_RECORD:
            return None
        data = os.pread(fd, MAX_RECORD + 1, 0)
    except OSError:
        return None
    if len(data) > MAX_RECORD:
        return None
    try:
        record = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested to death
        return None
    return record if isinstance(record, dict) else None


def _recorded_path(value: object) -> Segments | None:
    """A path read from a record, if it names a file (a valid path, not the root)."""
    if not isinstance(value, list) or not value or \
            not all(isinstance(segment, str) for segment in value):
        return None
    try:
        return validate_path(value)
    except Invalid:
        return None


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)


def _is_below(path: Segments, folder: Segments) -> bool:
    """Whether ``path`` is strictly inside ``folder``."""
    return len(path) > len(folder) and path[:len(folder)] == folder
