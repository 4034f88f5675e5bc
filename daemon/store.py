"""The library on disk: a path-based store with no policy.

Every change shelfd makes to the library, and every read, goes through a
``Store``: list, stat, open, upload (new or replace), delete, rename, mkdir,
rmdir, the SHA-256 cache. What a session may do (permissions, size limits) is
the grant's business, not the store's; the store only keeps the jail and the
promises PROTOCOL.md (version 2) makes about files. It is to the session what
pyftpdlib's AbstractedFS is to its handlers.

Concurrency: a Store is opened once (by the master) and inherited by every
forked session process; a Store may also be used by several threads at once.
It shares only the root's descriptor, which is never read from (a listing opens
a descriptor of its own), so nothing a call does depends on another call.
Several shelfd on several machines may serve the same library: nothing here
relies on a pid, a host name or a device number.

Paths
    A path is a sequence of decoded segments (``("photos", "hi.txt")``; ``()``
    is the root), not a string: the protocol decodes ``%XX`` per segment, and a
    ``%2F`` must stay an invalid segment rather than become a separator. Every
    public method validates its paths exactly as PROTOCOL.md says (``Invalid``),
    so the jail does not depend on the caller. ``parse_path`` splits plain text.

The jail
    A path is resolved from the root's descriptor, never following a link:
    ``openat2`` with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
    where the kernel has it, else a walk of ``openat(O_NOFOLLOW | O_DIRECTORY)``
    one segment at a time (each lookup is a single name, so a folder swapped for
    a link between two steps is refused, not followed; O_DIRECTORY makes the
    kernel check the kind, so no separate fstat is needed). The last segment is
    then used with ``*at`` calls that never follow it. Files are opened with
    O_NONBLOCK (a FIFO cannot hang the open) and judged by ``fstat``: only
    regular files and folders exist for a client. A folder moved out of the root
    by another process after it was looked up is out of reach of any jail short
    of a mount namespace; we do not chase it.

Versions
    A file's version is ``base64url(b"x" + id + size + mtime_ns)`` where ``id``
    is 16 random bytes stored in the xattr ``user.shelf.version`` when the file
    is committed (before it has a name, so it never appears without one). A new
    inode starts with no xattrs, so inode reuse cannot bring an old id back, and
    every machine that reads the file reads the same id, size and mtime: no
    device number, host name or clock of ours is in the token. Size and mtime
    are in it so that a file edited in place behind shelfd's back (or a copy
    made with its xattrs and then edited) changes version. A file with no valid
    id (put there by hand, or a file system without user xattrs) gets
    ``base64url(b"s" + ino + size + mtime_ns + ctime_ns)``: the ctime, which no
    user can set and which moves with every link, rename or chmod, guards
    against inode reuse; it errs towards a new version (a spurious ``changed``),
    and its one weakness is a delete and a new file of the same size on the same
    inode within one tick of a coarse file-system clock. All shelfd serving one
    library must see the same xattr support (NFS >= 4.2 has it, NFSv3 has not).
    With an id, the same file keeps its version when it moves (rename, trash
    and restore move the inode): PROTOCOL.md's "whatever arrives at the path
    later has a different version" is read as "any other file", since equal
    versions at one path still mean equal bytes. Without one, a move changes
    the ctime, and so the version.

Temporaries
    An upload writes into a temporary of its own in its target folder (so the
    final link never crosses a file system): an
    ``O_TMPFILE`` (no name; linked into place with ``linkat`` via
    /proc/self/fd) where the file system has it, else ``.shelf-upload.<128-bit
    random hex>``, created O_EXCL and ``flock``-ed while it lives (flock works
    across NFS clients), so no two uploads anywhere share a name and clean-up
    (``remove_leftovers``, RMDIR) removes only temporaries nobody holds. An
    O_TMPFILE leaves nothing behind when its process dies; a named one is left
    unlocked, for the next clean-up. AT_EMPTY_PATH is not used: before Linux
    6.10 it needs CAP_DAC_READ_SEARCH, which a service should not hold.
"""

from __future__ import annotations

import base64
import ctypes
import errno
import fcntl
import io
import os
import re
import stat
import struct
from dataclasses import dataclass
from typing import Literal, Protocol, Sequence

from common.protocol import ShelfError

MAX_SEGMENT = 255                # bytes in one decoded segment
MAX_PATH = 1024                  # bytes in a decoded path, separators included
WORKING_PREFIX = ".shelf-"       # the server's own hidden files start with this
TEMP_PREFIX = ".shelf-upload."
CACHE_FOLDER = ".shelf-cache"
VERSION_XATTR = "user.shelf.version"
FREE_SPACE_RESERVE = 1 << 20     # an upload must leave this much free
HASH_BLOCK = 1 << 20
FILE_MODE = 0o644
FOLDER_MODE = 0o755

Segments = tuple[str, ...]
Kind = Literal["file", "folder"]

_TEMP_NAME = re.compile(r"\.shelf-upload\.[0-9a-f]{32}")
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
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
    return IOFailure("cannot %s: %s" % (action, (exc.strerror or str(exc)).lower()))


# -- paths ------------------------------------------------------------------------

def validate_segment(segment: str | bytes) -> str:
    """One segment as PROTOCOL.md v2 says: 1-255 bytes of UTF-8, no control, no leading dot."""
    if isinstance(segment, str):
        try:
            raw = segment.encode("utf-8")
        except UnicodeEncodeError:  # surrogate-escaped bytes of a non-UTF-8 name
            raise Invalid("invalid path: not valid UTF-8") from None
    else:
        raw = bytes(segment)
    if not raw:
        raise Invalid("invalid path: empty segment")
    if len(raw) > MAX_SEGMENT:
        raise Invalid("invalid path: a segment is longer than %d bytes" % MAX_SEGMENT)
    if raw[0] == 0x2E:
        raise Invalid("invalid path: names starting with '.' are hidden")
    if b"/" in raw:
        raise Invalid("invalid path: '/' inside a segment")
    if _CONTROL.search(raw):
        raise Invalid("invalid path: control character")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid("invalid path: not valid UTF-8") from None


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


def _listable(name: str) -> bool:
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
    tmpfile: bool = True    # try O_TMPFILE for temporaries (else named ones)
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


# -- what the store hands out ------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    name: str              # the last segment ("" for the root)
    kind: Kind
    size: int              # 0 for a folder
    mtime: int             # whole seconds since the epoch (floor: negative before 1970)
    version: str | None    # None for a folder


def version_of(st: os.stat_result, file_id: bytes | None) -> str:
    """The version token of a file (see the module docstring): 44 chars of [A-Za-z0-9_-]."""
    if file_id is not None:
        payload = b"x" + file_id + struct.pack("<Qq", st.st_size, st.st_mtime_ns)
    else:
        payload = b"s" + struct.pack("<QQqq", st.st_ino, st.st_size, st.st_mtime_ns,
                                     st.st_ctime_ns)
    return base64.urlsafe_b64encode(payload).decode("ascii")  # 33 bytes: no padding


class OpenFile:
    """A regular file open for reading: ``file`` (sendfile, reads) and its ``entry``."""

    def __init__(self, file: io.FileIO, entry: Entry):
        self.file = file
        self.entry = entry

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> "OpenFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FdSource(Protocol):
    """Where an upload's bytes come from: ``common.protocol.Channel`` is one."""

    def read_exact_to_fd(self, fd: int, count: int) -> OSError | None: ...


# -- the store ---------------------------------------------------------------------

class Store:
    """A library folder, reached only through its root's descriptor."""

    def __init__(self, root: str | os.PathLike, *, durable: bool = True,
                 features: Features | None = None, hash_cache: bool = True,
                 reserve: int = FREE_SPACE_RESERVE):
        self.root = os.path.abspath(root)
        self.durable = durable
        self.hash_cache = hash_cache
        self.reserve = reserve
        try:
            self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound("library root %s is not a folder" % self.root) from None
        except OSError as exc:
            raise IOFailure("cannot open library root %s: %s" % (self.root, exc.strerror)) from None
        self.features = features or Features.detect(self._root_fd)

    def close(self) -> None:
        if self._root_fd >= 0:
            os.close(self._root_fd)
            self._root_fd = -1

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- resolution (the jail) ---------------------------------------------------

    def _open_folder(self, path: Segments) -> int:
        """A new descriptor of the folder ``path``; NotFound if it is not one."""
        try:
            if self.features.openat2:
                return openat2(self._root_fd, "/".join(path) or ".", _FOLDER)
            fd = os.open(".", _FOLDER, dir_fd=self._root_fd)
            try:
                for segment in path:
                    parent, fd = fd, -1
                    try:
                        fd = os.open(segment, _FOLDER, dir_fd=parent)
                    finally:
                        os.close(parent)
            except BaseException:
                if fd >= 0:
                    os.close(fd)
                raise
            return fd
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:
                raise NotAFolder("no such folder") from None
            raise _failure(exc, "read the library") from None

    def _open_entry(self, path: Segments) -> int:
        """A descriptor of whatever ``path`` names (a FIFO too: never blocks)."""
        if not path:
            return self._open_folder(path)
        try:
            if self.features.openat2:
                return openat2(self._root_fd, "/".join(path), _ENTRY)
        except OSError as exc:
            raise _failure(exc, "read the library") from None
        parent = self._open_folder(path[:-1])
        try:
            return os.open(path[-1], _ENTRY, dir_fd=parent)
        except OSError as exc:
            raise _failure(exc, "read the library") from None
        finally:
            os.close(parent)

    def _describe(self, fd: int, name: str) -> Entry | None:
        """The Entry of an open descriptor, or None if it is not a file or folder."""
        try:
            st = os.fstat(fd)
        except OSError as exc:
            raise _failure(exc, "read the library") from None
        if stat.S_ISDIR(st.st_mode):
            return Entry(name, "folder", 0, st.st_mtime_ns // 10**9, None)
        if stat.S_ISREG(st.st_mode):
            return Entry(name, "file", st.st_size, st.st_mtime_ns // 10**9,
                         version_of(st, self._file_id(fd)))
        return None

    def _file_id(self, fd: int) -> bytes | None:
        if not self.features.xattrs:
            return None
        try:
            value = os.getxattr(fd, VERSION_XATTR)
        except OSError:
            return None
        return value if len(value) == 16 else None

    def _stamp(self, fd: int) -> None:
        """Give a new file its random id (where the file system keeps xattrs)."""
        if not self.features.xattrs:
            return
        try:
            os.setxattr(fd, VERSION_XATTR, os.urandom(16), os.XATTR_CREATE)
        except OSError as exc:
            if exc.errno not in _NO_XATTRS:
                raise

    def _sync(self, fd: int) -> None:
        if self.durable:
            os.fsync(fd)

    # -- reading -------------------------------------------------------------------

    def listing(self, folder: Sequence[str | bytes] = ()) -> list[Entry]:
        """The files and folders a client may see, sorted by the UTF-8 bytes of their names.

        Links, FIFOs, sockets, devices, hidden names, names that are not valid
        segments, and files this process cannot open are left out.
        """
        fd = self._open_folder(validate_path(folder))  # its own read position
        entries = []
        try:
            with os.scandir(fd) as scan:
                for item in scan:
                    if _listable(item.name):
                        entry = self._describe_at(fd, item)
                        if entry is not None:
                            entries.append(entry)
        except OSError as exc:
            raise _failure(exc, "read the folder") from None
        finally:
            os.close(fd)
        entries.sort(key=lambda entry: entry.name.encode("utf-8"))
        return entries

    def _describe_at(self, folder_fd: int, item: os.DirEntry) -> Entry | None:
        """An entry of a listing; only regular files are opened (for their version)."""
        try:
            if item.is_dir(follow_symlinks=False):
                st = item.stat(follow_symlinks=False)
                return Entry(item.name, "folder", 0, st.st_mtime_ns // 10**9, None)
            if not item.is_file(follow_symlinks=False):
                return None  # links, FIFOs, sockets, devices: never opened
            fd = os.open(item.name, _ENTRY, dir_fd=folder_fd)
        except OSError:
            return None  # gone meanwhile, or unreadable: not something we can serve
        try:
            return self._describe(fd, item.name)
        finally:
            os.close(fd)

    def stat(self, path: Sequence[str | bytes]) -> Entry:
        path = validate_path(path)
        fd = self._open_entry(path)
        try:
            entry = self._describe(fd, path[-1] if path else "")
        finally:
            os.close(fd)
        if entry is None:
            raise NotFound("no such file or folder")
        return entry

    def open_file(self, path: Sequence[str | bytes], version: str | None = None) -> OpenFile:
        """Open a regular file for reading; Changed if it is no longer ``version``."""
        path = validate_path(path)
        fd = self._open_entry(path)
        try:
            entry = self._describe(fd, path[-1] if path else "")
            if entry is None or entry.kind != "file":
                raise NotAFile("no such file")
            if version is not None and entry.version != version:
                raise Changed("the file is no longer that version")
            os.set_blocking(fd, True)
            return OpenFile(io.FileIO(fd, "rb", closefd=True), entry)
        except BaseException:
            os.close(fd)
            raise

    def sha256(self, path: Sequence[str | bytes]) -> tuple[str, Entry]:
        """(hex SHA-256, Entry) of a file, cached by version under CACHE_FOLDER."""
        import hashlib  # here, not at the top: OpenSSL would add megabytes to every fork

        with self.open_file(path) as opened:
            cached = self._cache_get(opened.entry.version)
            if cached:
                return cached, opened.entry
            digest = hashlib.sha256()
            buffer = bytearray(HASH_BLOCK)
            view = memoryview(buffer)
            try:
                while count := opened.file.readinto(buffer):
                    digest.update(view[:count])
            except OSError as exc:
                raise _failure(exc, "read the file") from None
            result = digest.hexdigest()
        self._cache_put(opened.entry.version, result)
        return result, opened.entry

    def _cache_folder(self, create: bool) -> int | None:
        """A descriptor of CACHE_FOLDER if it is a real folder, else None (no cache)."""
        if not self.hash_cache:
            return None
        if create:
            try:
                os.mkdir(CACHE_FOLDER, 0o700, dir_fd=self._root_fd)  # never follows a link
            except OSError:
                pass
        try:
            return os.open(CACHE_FOLDER, _FOLDER, dir_fd=self._root_fd)
        except OSError:
            return None

    def _cache_get(self, key: str) -> str | None:
        folder = self._cache_folder(create=False)
        if folder is None:
            return None
        try:
            fd = os.open(key, _ENTRY, dir_fd=folder)
        except OSError:
            return None
        finally:
            os.close(folder)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None  # a FIFO, folder or device planted as an entry
            value = os.read(fd, 128).strip()
        except OSError:
            return None
        finally:
            os.close(fd)
        if re.fullmatch(rb"[0-9a-f]{64}", value):
            return value.decode("ascii")
        return None

    def _cache_put(self, key: str, value: str) -> None:
        """Best effort: a cache that cannot be written is only slower, and leaves nothing."""
        folder = self._cache_folder(create=True)
        if folder is None:
            return
        temporary = None
        try:
            temporary = _Temporary(folder, self.features.tmpfile)
            os.write(temporary.fd, (value + "\n").encode("ascii"))
            os.fchmod(temporary.fd, 0o600)
            temporary.link_into(folder, key)
        except OSError:
            pass  # EEXIST: another process cached it first
        finally:
            if temporary is not None:
                temporary.discard()
            os.close(folder)

    def space(self) -> tuple[int, int]:
        """(bytes free for uploads, size of the library's file system)."""
        try:
            vfs = os.statvfs(self._root_fd)
        except OSError as exc:
            raise _failure(exc, "read the file system") from None
        return max(0, vfs.f_bavail * vfs.f_frsize - self.reserve), vfs.f_blocks * vfs.f_frsize

    # -- changing --------------------------------------------------------------------

    def begin_upload(self, path: Sequence[str | bytes], size: int,
                     replace: bool = False) -> "Upload":
        """Everything PUT checks before its first OK, then an Upload of ``size`` bytes.

        Exists if something is at ``path`` (with ``replace``: anything but a
        regular file), NotFound if its folder is not, Full if the bytes cannot fit.
        """
        path = validate_path(path)
        if not path:
            raise Exists("the root is a folder")
        parent = self._open_folder(path[:-1])
        try:
            kind = _kind_at(parent, path[-1])
            if kind is not None and (not replace or kind != "file"):
                raise Exists("exists")
            vfs = os.statvfs(parent)
            if size + self.reserve > vfs.f_bavail * vfs.f_frsize:
                raise Full("not enough free space")
            temporary = _Temporary(parent, self.features.tmpfile)
        except OSError as exc:
            raise _failure(exc, "store") from None
        finally:
            os.close(parent)
        return Upload(self, path, size, replace, temporary)

    def delete(self, path: Sequence[str | bytes]) -> None:
        """Remove a regular file (NotFound for anything else)."""
        path = validate_path(path)
        if not path:
            raise NotAFile("the root is a folder")
        parent = self._open_folder(path[:-1])
        try:
            if _kind_at(parent, path[-1]) != "file":
                raise NotAFile("no such file")
            os.unlink(path[-1], dir_fd=parent)
            self._sync(parent)
        except IsADirectoryError:  # a folder took its place meanwhile
            raise NotAFile("no such file") from None
        except OSError as exc:
            raise _failure(exc, "delete") from None
        finally:
            os.close(parent)

    def mkdir(self, path: Sequence[str | bytes]) -> None:
        path = validate_path(path)
        if not path:
            raise Exists("the root exists")
        parent = self._open_folder(path[:-1])
        try:
            os.mkdir(path[-1], FOLDER_MODE, dir_fd=parent)
            self._sync(parent)
        except OSError as exc:
            raise _failure(exc, "create the folder") from None
        finally:
            os.close(parent)

    def rmdir(self, path: Sequence[str | bytes]) -> None:
        """Remove an empty folder: empty but for temporaries nobody holds (removed first)."""
        path = validate_path(path)
        if not path:
            raise Invalid("the root cannot be removed")
        parent = self._open_folder(path[:-1])
        try:
            folder = self._open_folder(path)
            try:
                names = os.listdir(folder)
                if any(not _TEMP_NAME.fullmatch(name) for name in names):
                    raise NotEmpty("folder is not empty")
                if not all(_remove_unowned(folder, name) for name in names):
                    raise NotEmpty("folder holds an upload in progress")
            finally:
                os.close(folder)
            os.rmdir(path[-1], dir_fd=parent)
            self._sync(parent)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise NotEmpty("folder is not empty") from None
            raise _failure(exc, "remove the folder") from None
        finally:
            os.close(parent)

    def rename(self, source: Sequence[str | bytes], target: Sequence[str | bytes]) -> None:
        """Move a file or folder; never replaces (Exists), atomic where the FS allows.

        Files: renameat2(RENAME_NOREPLACE), or link + unlink where the file
        system refuses it (both names exist for a moment). Folders:
        renameat2(RENAME_NOREPLACE) only; where it is refused, Unsupported.
        """
        source, target = validate_path(source), validate_path(target)
        if not source:
            raise Invalid("the root cannot be moved")
        if not target:
            raise Exists("the root exists")
        source_parent = self._open_folder(source[:-1])
        try:
            kind = _kind_at(source_parent, source[-1])
            if kind not in ("file", "folder"):
                raise NotFound("no such file or folder")
            if kind == "folder" and target[:len(source)] == source and target != source:
                raise Invalid("cannot move a folder into itself")
            target_parent = self._open_folder(target[:-1])
            try:
                self._move(source_parent, source[-1], target_parent, target[-1])
                self._sync(target_parent)
                self._sync(source_parent)
            finally:
                os.close(target_parent)
        except OSError as exc:
            raise _failure(exc, "rename") from None
        finally:
            os.close(source_parent)

    def _move(self, src_fd: int, src: str, dst_fd: int, dst: str) -> None:
        if self.features.noreplace:
            try:
                rename_noreplace(src_fd, src, dst_fd, dst)
                return
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOSYS):
                    raise
        before = os.stat(src, dir_fd=src_fd, follow_symlinks=False)
        if stat.S_ISDIR(before.st_mode):  # no emulation: it would race
            if _kind_at(dst_fd, dst) is not None:
                raise FileExistsError(errno.EEXIST, "exists")
            raise Unsupported("this file system cannot rename a folder without "
                              "a risk of replacing another")
        try:
            os.link(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
        except PermissionError:  # EPERM: the source became a folder since the stat
            if _kind_at(src_fd, src) == "folder":
                raise Unsupported("this file system cannot rename a folder without "
                                  "a risk of replacing another") from None
            raise
        try:
            os.unlink(src, dir_fd=src_fd)
        except FileNotFoundError:  # moved or deleted meanwhile: that request won
            _unlink_if_same(dst_fd, dst, before)
            raise

    def remove_leftovers(self) -> list[Segments]:
        """Remove the temporaries no live upload holds, in every folder (at start)."""
        removed = []
        pending: list[Segments] = [(), ]
        while pending:
            path = pending.pop()
            try:
                fd = self._open_folder(path)
            except StoreError:
                continue
            try:
                with os.scandir(fd) as scan:
                    for item in scan:
                        if _TEMP_NAME.fullmatch(item.name):
                            if _remove_unowned(fd, item.name):
                                removed.append(path + (item.name,))
                        elif item.is_dir(follow_symlinks=False) and (
                                _listable(item.name) or (not path and item.name == CACHE_FOLDER)):
                            pending.append(path + (item.name,))
            except OSError:
                pass
            finally:
                os.close(fd)
        return removed


def _kind_at(folder_fd: int, name: str) -> Kind | Literal["other"] | None:
    """What ``name`` is in the folder, without following it; None if nothing."""
    try:
        mode = os.stat(name, dir_fd=folder_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return None
    return "file" if stat.S_ISREG(mode) else "folder" if stat.S_ISDIR(mode) else "other"


def _unlink_if_same(folder_fd: int, name: str, st: os.stat_result) -> None:
    """Unlink ``name`` if it still is the file ``st`` describes."""
    try:
        now = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
        if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
            os.unlink(name, dir_fd=folder_fd)
    except OSError:
        pass


def _remove_unowned(folder_fd: int, name: str) -> bool:
    """Unlink a temporary if it is a regular file no live upload holds; True if gone."""
    try:
        fd = os.open(name, _ENTRY, dir_fd=folder_fd)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return False
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # refused while an upload holds it
        now = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            return False
        os.unlink(name, dir_fd=folder_fd)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


# -- temporaries and uploads ---------------------------------------------------------

class _Temporary:
    """A file of our own in one folder: nameless (O_TMPFILE) or a locked random name.

    The flock is taken at creation and held until ``discard``: a named
    temporary is unlinked before its descriptor (and lock) is closed, so
    clean-up never takes a live one for a leftover.
    """

    def __init__(self, folder_fd: int, anonymous: bool):
        self.folder_fd = os.dup(folder_fd)
        self.name: str | None = None
        try:
            fd = self._create_anonymous() if anonymous else None
            self.fd = self._create_named() if fd is None else fd
        except BaseException:
            os.close(self.folder_fd)
            raise

    def _create_anonymous(self) -> int | None:
        try:
            fd = os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600,
                         dir_fd=self.folder_fd)
        except OSError as exc:
            if exc.errno == errno.EPERM and os.fstat(self.folder_fd).st_nlink == 0:
                raise FileNotFoundError(errno.ENOENT, "folder removed") from None
            if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                return None  # this file system has no O_TMPFILE
            raise
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # for the name it may get later
        return fd

    def _create_named(self) -> int:
        for _ in range(16):
            name = TEMP_PREFIX + os.urandom(16).hex()
            try:
                fd = os.open(name, _NEW_FILE, 0o600, dir_fd=self.folder_fd)
            except FileExistsError:
                continue
            if self._lock_as(fd, name):
                self.name = name
                return fd
            os.close(fd)
        raise OSError(errno.EEXIST, "no free temporary name")

    def _lock_as(self, fd: int, name: str) -> bool:
        """Lock a new temporary; False if a clean-up took it in between."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            now = os.stat(name, dir_fd=self.folder_fd, follow_symlinks=False)
        except OSError:
            return False
        st = os.fstat(fd)
        return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)

    def link_into(self, folder_fd: int, name: str) -> None:
        """Give the file the name ``name`` (EEXIST if taken); the temporary stays."""
        if self.name is None:
            os.link("/proc/self/fd/%d" % self.fd, name, dst_dir_fd=folder_fd,
                    follow_symlinks=True)
        else:
            os.link(self.name, name, src_dir_fd=self.folder_fd, dst_dir_fd=folder_fd,
                    follow_symlinks=False)

    def forget_name(self) -> None:
        """Unlink the temporary's name (once the file has its own), keeping the lock."""
        if self.name is not None:
            os.unlink(self.name, dir_fd=self.folder_fd)
            self.name = None

    def rename_over(self, folder_fd: int, name: str) -> None:
        """Put the file at ``name``, atomically replacing a file there."""
        if self.name is None:
            for _ in range(16):
                candidate = TEMP_PREFIX + os.urandom(16).hex()
                try:
                    self.link_into(self.folder_fd, candidate)
                except FileExistsError:
                    continue
                self.name = candidate
                break
            else:
                raise OSError(errno.EEXIST, "no free temporary name")
        os.rename(self.name, name, src_dir_fd=self.folder_fd, dst_dir_fd=folder_fd)
        self.name = None

    def discard(self) -> None:
        """Unlink the name (if any), then close; idempotent."""
        if self.fd < 0:
            return
        if self.name is not None:
            try:
                os.unlink(self.name, dir_fd=self.folder_fd)
            except OSError:
                pass
            self.name = None
        os.close(self.fd)
        os.close(self.folder_fd)
        self.fd = -1


class Upload:
    """One upload: bytes go to a temporary of its own; ``commit`` makes them a file.

    Use as a context manager: leaving it without a commit drops the bytes.
    Nothing appears at the path before ``commit`` returns; after any failure
    nothing appears and nothing is replaced.
    """

    def __init__(self, store: Store, path: Segments, size: int, replace: bool,
                 temporary: _Temporary):
        self.store = store
        self.path = path
        self.size = size
        self.replace = replace
        self.token = os.urandom(16).hex()  # names this upload (unique anywhere)
        self._temporary = temporary
        self._failure: StoreError | None = None

    def __enter__(self) -> "Upload":
        return self

    def __exit__(self, *exc) -> None:
        self.abort()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes (for local producers); Full or IOFailure at once on error."""
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._temporary.fd, view):]
        except OSError as exc:
            self._failure = _failure(exc, "store")
            raise self._failure from None

    def receive_from(self, source: FdSource) -> None:
        """Take the rest of the bytes from ``source`` (zero-copy where it can).

        A disk error does not stop the source (it drains the bytes to keep the
        framing) and then raises Full or IOFailure here; the source's own
        errors (a broken connection) pass through untouched.
        """
        if self._temporary.fd < 0:
            raise IOFailure("the upload is closed")
        error = source.read_exact_to_fd(self._temporary.fd,
                                        self.size - os.fstat(self._temporary.fd).st_size)
        if error is not None:
            self._failure = _failure(error, "store")
            raise self._failure

    def commit(self) -> Entry:
        """fsync the file, put it at its path, fsync the folder; the stored Entry.

        Exists: another upload stored the path first (without ``replace``), or
        a folder took it. NotFound: the folder went away. Full, IOFailure.
        """
        temporary = self._temporary
        try:
            if self._failure is not None:
                raise self._failure
            if temporary.fd < 0:
                raise IOFailure("the upload is closed")
            if os.fstat(temporary.fd).st_size != self.size:
                raise IOFailure("upload incomplete")
            os.fchmod(temporary.fd, FILE_MODE)
            self.store._stamp(temporary.fd)
            self.store._sync(temporary.fd)
            self._place()
            return self.store._describe(temporary.fd, self.path[-1])
        except OSError as exc:
            if exc.errno in (errno.EISDIR, errno.ENOTEMPTY):
                raise Exists("a folder is at that path") from None
            raise _failure(exc, "store") from None
        finally:
            self.abort()

    def _place(self) -> None:
        """Link (new) or rename (replace) into the folder the path names now."""
        name = self.path[-1]
        parent = self.store._open_folder(self.path[:-1])
        try:
            if not self.replace:
                self._temporary.link_into(parent, name)
                try:
                    self._temporary.forget_name()  # before the Entry: ctime moves
                    self.store._sync(parent)
                except OSError:  # nothing may appear after a failure
                    _unlink_if_same(parent, name, os.fstat(self._temporary.fd))
                    raise
            else:
                if _kind_at(parent, name) not in (None, "file"):
                    raise Exists("exists")
                self._temporary.rename_over(parent, name)
                self.store._sync(parent)
        finally:
            os.close(parent)

    def abort(self) -> None:
        """Drop the bytes (idempotent; also after a commit, where it only closes)."""
        self._temporary.discard()
