"""The library folder and its rules: the jail, the listing, the atomic store.

Every access goes through a file descriptor of the root opened once at start;
names are validated by ``common.protocol.validate_name`` (no ``/``, no leading
dot) and then used only relative to that descriptor, with ``O_NOFOLLOW``, so
nothing outside the root can be reached whatever a client sends.

Uploads land in a hidden temporary named after the session's process id
(``.shelf-upload.<pid>``: a session stores one file at a time), are fsynced and
then hard-linked to their final name. ``link`` fails when the name exists, which
makes "exactly one of several racing uploads wins" a property of the kernel.
The master process removes a dead session's temporary when it reaps it.

Used by the master (open, cleanup) and by each forked session process.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from common.protocol import NO_SUCH_FILE, ShelfError, validate_name

UPLOAD_PREFIX = ".shelf-upload."
CACHE_DIR = ".shelf-cache"
FREE_SPACE_MARGIN = 1 << 20  # keep this much free after an upload
HASH_BLOCK = 1 << 20


class LibraryError(ShelfError):
    """A request the library refuses; str() is the FAIL reason."""


class NameTaken(LibraryError):
    """The final name already exists (PUT's EXISTS)."""


@dataclass(frozen=True)
class Entry:
    name: str
    size: int
    mtime: int


class Library:
    """The folder served by shelfd, seen only through a directory descriptor."""

    def __init__(self, root: str, read_only: bool = False, max_upload: int | None = None,
                 durable: bool = True):
        self.root = os.path.abspath(root)
        self.durable = durable
        self.read_only = read_only
        self.max_upload = max_upload
        try:
            self.fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise LibraryError("library root %s does not exist" % self.root) from None
        except NotADirectoryError:
            raise LibraryError("library root %s is not a folder" % self.root) from None
        except OSError as exc:
            raise LibraryError("cannot open library root %s: %s" % (self.root, exc.strerror)) from None

    def close(self) -> None:
        os.close(self.fd)

    # -- reading -------------------------------------------------------------

    def listing(self) -> list[Entry]:
        """Regular, non-hidden files with valid UTF-8 names, sorted by UTF-8 bytes."""
        entries = []
        try:
            scan = os.scandir(self.fd)
        except OSError as exc:
            raise LibraryError("cannot read the library: %s" % exc.strerror) from None
        with scan:
            for item in scan:
                if item.name.startswith("."):
                    continue
                try:
                    validate_name(item.name)  # surrogate-escaped bytes fail here
                    st = item.stat(follow_symlinks=False)
                except (ShelfError, OSError):
                    continue
                if stat.S_ISREG(st.st_mode):
                    entries.append(Entry(item.name, st.st_size, st.st_mtime_ns // 10**9))
        entries.sort(key=lambda e: e.name.encode("utf-8"))
        return entries

    def open_for_read(self, name: str):
        """Open a listed file for reading; return (file object, os.stat_result).

        O_NOFOLLOW refuses links, O_NONBLOCK keeps a FIFO from hanging the
        open, and fstat on the open descriptor decides: regular files only.
        """
        validate_name(name)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=self.fd)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.ENXIO):
                raise LibraryError(NO_SUCH_FILE) from None
            raise LibraryError("cannot read %s: %s" % (name, exc.strerror)) from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise LibraryError(NO_SUCH_FILE)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0), st

    def stat(self, name: str) -> Entry:
        handle, st = self.open_for_read(name)
        handle.close()
        return Entry(name, st.st_size, st.st_mtime_ns // 10**9)

    def sha256(self, name: str) -> str:
        """SHA-256 of a file, cached by (inode, size, mtime_ns) under CACHE_DIR.

        Files never change in place, so a cache entry is valid as long as the
        file it was computed from is the one under the name.
        """
        import hashlib  # here, not at the top: OpenSSL would add 3.7 MB to every fork

        handle, st = self.open_for_read(name)
        with handle:
            key = "%d-%d-%d" % (st.st_ino, st.st_size, st.st_mtime_ns)
            cached = self._cache_get(key)
            if cached:
                return cached
            digest = hashlib.sha256()
            buffer = bytearray(HASH_BLOCK)
            view = memoryview(buffer)
            while True:
                count = handle.readinto(buffer)
                if not count:
                    break
                digest.update(view[:count])
            result = digest.hexdigest()
        self._cache_put(key, result)
        return result

    def _cache_get(self, key: str) -> str | None:
        try:
            fd = os.open(CACHE_DIR + "/" + key, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=self.fd)
        except OSError:
            return None
        with os.fdopen(fd, "r") as handle:
            value = handle.read(65).strip()
        return value if len(value) == 64 else None

    def _cache_put(self, key: str, value: str) -> None:
        if self.read_only:
            return
        try:
            os.mkdir(CACHE_DIR, 0o700, dir_fd=self.fd)
        except FileExistsError:
            pass
        except OSError:
            return
        temp = "%s/.%s.%d" % (CACHE_DIR, key, os.getpid())
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600,
                         dir_fd=self.fd)
            with os.fdopen(fd, "w") as handle:
                handle.write(value + "\n")
            os.replace(temp, CACHE_DIR + "/" + key, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except OSError:
            pass  # a cache that cannot be written is only slower

    # -- writing -------------------------------------------------------------

    def check_upload(self, name: str, size: int) -> None:
        """Everything PUT checks before saying OK; raises LibraryError or NameTaken."""
        validate_name(name)
        if self.read_only:
            raise LibraryError("library is read-only")
        if self.max_upload is not None and size > self.max_upload:
            raise LibraryError("file too large: the limit is %d bytes" % self.max_upload)
        if self.exists(name):
            raise NameTaken(name)
        try:
            vfs = os.statvfs(self.fd)
        except OSError:
            return
        if size + FREE_SPACE_MARGIN > vfs.f_bavail * vfs.f_frsize:
            raise LibraryError("not enough free space")

    def exists(self, name: str) -> bool:
        try:
            os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def upload_temp_name(self, pid: int | None = None) -> str:
        return "%s%d" % (UPLOAD_PREFIX, os.getpid() if pid is None else pid)

    def begin_upload(self) -> "Upload":
        return Upload(self)

    def discard_upload_of(self, pid: int) -> bool:
        """Remove a dead session's temporary; True if there was one."""
        try:
            os.unlink(self.upload_temp_name(pid), dir_fd=self.fd)
        except FileNotFoundError:
            return False
        except OSError:
            return False
        return True

    def remove_leftovers(self) -> list[str]:
        """Remove temporaries a crashed daemon left behind (called at start)."""
        removed = []
        try:
            names = os.listdir(self.fd)
        except OSError:
            return removed
        for name in names:
            if name.startswith(UPLOAD_PREFIX):
                try:
                    os.unlink(name, dir_fd=self.fd)
                    removed.append(name)
                except OSError:
                    pass
        return removed

    def fsync_root(self) -> None:
        if self.durable:
            os.fsync(self.fd)


class Upload:
    """One PUT in progress: a hidden O_EXCL temporary that becomes a file or nothing."""

    def __init__(self, library: Library):
        self.library = library
        self.temp = library.upload_temp_name()
        dir_fd = library.fd
        try:
            os.unlink(self.temp, dir_fd=dir_fd)  # only ever a leftover of ours
        except FileNotFoundError:
            pass
        try:
            self.fd = os.open(self.temp,
                              os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                              0o600, dir_fd=dir_fd)
        except OSError as exc:
            raise LibraryError("cannot store: %s" % exc.strerror.lower()) from None
        self.error: OSError | None = None  # a write error met while the bytes were drained

    def commit(self, name: str) -> None:
        """fsync, link to ``name`` (NameTaken if another session won), fsync the folder."""
        try:
            if self.error is not None:
                raise self.error
            os.fchmod(self.fd, 0o644)
            if self.library.durable:
                os.fsync(self.fd)
            os.close(self.fd)
            self.fd = None
            try:
                os.link(self.temp, name, src_dir_fd=self.library.fd, dst_dir_fd=self.library.fd,
                        follow_symlinks=False)
            except FileExistsError:
                raise NameTaken(name) from None
            self.abort()  # the temporary is now only a second name of the file
            self.library.fsync_root()
        except OSError as exc:
            raise LibraryError(describe_os_error(exc)) from None
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop the temporary (after a link it is only a second name of the file)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        try:
            os.unlink(self.temp, dir_fd=self.library.fd)
        except OSError:
            pass


def describe_os_error(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "not enough free space: disk full"
    if exc.errno == errno.EFBIG:
        return "file too large for the library's file system"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "storing failed: %s" % (exc.strerror or "permission denied").lower()
    return "storing failed: %s" % (exc.strerror or exc).lower()
