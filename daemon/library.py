"""The library folder and its rules: the jail, the listing, the atomic store.

Every access goes through a file descriptor of the root opened once at start;
names are validated by ``common.protocol.validate_name`` (no ``/``, no leading
dot) and then used only relative to that descriptor, with ``O_NOFOLLOW``, so
nothing outside the root can be reached whatever a client sends.

Uploads land in a hidden temporary named after the session's process id
(``.shelf-upload.<pid>``: a session stores one file at a time), are fsynced and
then hard-linked to their final name. ``link`` fails when the name exists, which
makes "exactly one of several racing uploads wins" a property of the kernel.
A temporary is ``flock``-ed for as long as its upload runs, so clean-up (the
master reaping a dead session, a daemon starting) removes only temporaries no
live process owns, even those of another shelfd on the same root.

The daemon's own hidden files (the hash cache, the temporaries) get the same
jail as the library's: opened relative to a descriptor, never following a
link, and checked with ``fstat``; a hostile entry planted there is a FAIL or a
cache miss, never a hang, a crash or a write outside the root.

Used by the master (open, cleanup) and by each forked session process.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from dataclasses import dataclass

from common.protocol import NO_SUCH_FILE, ShelfError, validate_name

UPLOAD_PREFIX = ".shelf-upload."
CACHE_DIR = ".shelf-cache"
FREE_SPACE_MARGIN = 1 << 20  # keep this much free after an upload
HASH_BLOCK = 1 << 20
_OPEN_ENTRY = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_OPEN_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


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

    def _fresh_root_fd(self) -> int:
        try:
            return os.open(".", _OPEN_FOLDER, dir_fd=self.fd)
        except OSError as exc:
            raise LibraryError("cannot read the library: %s" % exc.strerror) from None

    def listing(self) -> list[Entry]:
        """Regular, non-hidden files with valid UTF-8 names, sorted by UTF-8 bytes."""
        entries = []
        # A descriptor of our own: a dup of self.fd would share one read
        # position with every other session process, and concurrent LISTs
        # would skip or repeat entries.
        folder_fd = self._fresh_root_fd()
        try:
            with os.scandir(folder_fd) as scan:
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
        except OSError as exc:
            raise LibraryError("cannot read the library: %s" % exc.strerror) from None
        finally:
            os.close(folder_fd)
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

    def _cache_folder(self, create: bool) -> int | None:
        """A descriptor of CACHE_DIR if it is a real folder of ours, else None."""
        if create and not self.read_only:
            try:
                os.mkdir(CACHE_DIR, 0o700, dir_fd=self.fd)  # never follows a link
            except OSError:
                pass
        try:
            return os.open(CACHE_DIR, _OPEN_FOLDER, dir_fd=self.fd)
        except OSError:
            return None  # missing, a link, or not a folder: no cache

    def _cache_get(self, key: str) -> str | None:
        folder = self._cache_folder(create=False)
        if folder is None:
            return None
        try:
            fd = os.open(key, _OPEN_ENTRY, dir_fd=folder)
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
        if len(value) == 64 and all(c in b"0123456789abcdef" for c in value):
            return value.decode("ascii")
        return None

    def _cache_put(self, key: str, value: str) -> None:
        """Best effort: a cache that cannot be written is only slower, and leaves nothing."""
        if self.read_only:
            return
        folder = self._cache_folder(create=True)
        if folder is None:
            return
        temp = ".%s.%d.%s" % (key, os.getpid(), os.urandom(4).hex())
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=folder)
        except OSError:
            os.close(folder)
            return
        try:
            try:
                os.write(fd, (value + "\n").encode("ascii"))
            finally:
                os.close(fd)
            os.replace(temp, key, src_dir_fd=folder, dst_dir_fd=folder)
        except OSError:
            try:
                os.unlink(temp, dir_fd=folder)  # disk full: no empty temporary stays behind
            except OSError:
                pass
        finally:
            os.close(folder)

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
        return self._remove_unowned(self.upload_temp_name(pid))

    def _remove_unowned(self, name: str) -> bool:
        """Unlink a temporary if it is a regular file whose lock no live process holds."""
        try:
            fd = os.open(name, _OPEN_ENTRY, dir_fd=self.fd)
        except OSError:
            return False
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return False
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by a live upload: refused
            now = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                return False
            os.unlink(name, dir_fd=self.fd)
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    def remove_leftovers(self) -> list[str]:
        """Remove temporaries a crashed daemon left behind (called at start).

        Only those no live process owns: another shelfd serving the same
        root keeps its running uploads.
        """
        try:
            folder_fd = self._fresh_root_fd()
        except LibraryError:
            return []
        try:
            names = os.listdir(folder_fd)
        except OSError:
            return []
        finally:
            os.close(folder_fd)
        return [name for name in names
                if name.startswith(UPLOAD_PREFIX) and self._remove_unowned(name)]

    def fsync_root(self) -> None:
        if self.durable:
            os.fsync(self.fd)


class Upload:
    """One PUT in progress: a hidden O_EXCL temporary that becomes a file or nothing."""

    def __init__(self, library: Library):
        self.library = library
        self.temp, self.fd = self._create_temp()
        self.error: OSError | None = None  # a write error met while the bytes were drained

    def _create_temp(self) -> tuple[str, int]:
        """An O_EXCL temporary, locked while this upload lives.

        The usual name is ``.shelf-upload.<pid>`` (which the master can find
        when it reaps us); if something else sits there (a leftover of ours,
        or anything planted), a leftover is removed and anything else makes
        us take a unique name instead.
        """
        library = self.library
        base = library.upload_temp_name()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        for attempt in range(4):
            name = base if attempt < 2 else "%s.%s" % (base, os.urandom(6).hex())
            try:
                fd = os.open(name, flags, 0o600, dir_fd=library.fd)
            except FileExistsError:
                if attempt == 0:
                    library._remove_unowned(name)
                continue
            except OSError as exc:
                raise LibraryError("cannot store: %s" % exc.strerror.lower()) from None
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # new and ours: cannot be held
            return name, fd
        raise LibraryError("cannot store: no free temporary name in the library")

    def commit(self, name: str) -> None:
        """fsync, link to ``name`` (NameTaken if another session won), fsync the folder."""
        try:
            if self.error is not None:
                raise self.error
            os.fchmod(self.fd, 0o644)
            if self.library.durable:
                os.fsync(self.fd)
            try:  # the descriptor (and its lock) stays open until the temporary is gone
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
        """Drop the temporary (after a link it is only a second name of the file).

        Unlinked before its locked descriptor closes, so no clean-up can take
        it for a leftover while it still has a name.
        """
        if self.fd is None:
            return
        try:
            os.unlink(self.temp, dir_fd=self.library.fd)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None


def describe_os_error(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "not enough free space: disk full"
    if exc.errno == errno.EFBIG:
        return "file too large for the library's file system"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "storing failed: %s" % (exc.strerror or "permission denied").lower()
    return "storing failed: %s" % (exc.strerror or exc).lower()
