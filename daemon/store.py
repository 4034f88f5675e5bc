"""The library on disk: a path-based store with no policy.

Every change shelfd makes to the library, and every read, goes through a
``Store``: list, stat, open, delete, rename, mkdir, rmdir, the SHA-256 cache,
and (in their own modules, behind the same Store methods) uploads that can be
kept and resumed (daemon/uploads.py) and the trash (daemon/trash.py); the
errors, path rules, kernel calls and one-name helpers they all share are in
daemon/jail.py. What a
session may do (permissions, size limits, its root) is the grant's business,
not the store's; the store only keeps the jail and the promises PROTOCOL.md
(version 2) makes about files. It is to the session what pyftpdlib's
AbstractedFS is to its handlers.

Concurrency: a Store is opened once (by the master) and inherited by every
forked session process; a Store may also be used by several threads at once.
It shares only the root's descriptor, which is never read from (a listing opens
a descriptor of its own), so nothing a call does depends on another call.
Several shelfd on several machines may serve the same library (over JuiceFS or
NFS): nothing here relies on a pid, a host name or a device number.

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

Working folders
    shelfd keeps its own files in hidden folders at the library root (a client
    never names them: hidden names are invalid): ``.shelf-cache`` (SHA-256 by
    version), ``.shelf-uploads`` and ``.shelf-trash``. Each is made 0700 by a
    mkdir through the root's descriptor and opened O_NOFOLLOW | O_DIRECTORY, so
    anything else planted under its name (a link, a file, a FIFO) is never
    followed: no cache, and an IOFailure for uploads and the trash. Their small
    JSON records are read through descriptors opened O_NONBLOCK, must be
    regular files of at most MAX_RECORD bytes, and count as absent when they do
    not parse or validate. A working file in use is ``flock``-ed (flock holds
    across processes and, on JuiceFS and NFS, across machines); clean-up
    removes only what it can lock, after checking that the name still names the
    inode it locked.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import io
import os
import re
import stat
import struct
from dataclasses import dataclass
from typing import Sequence

from daemon.jail import (CACHE_FOLDER, Changed, Exists, Features, FOLDER_MODE,
                         FREE_SPACE_RESERVE, Full, HASH_BLOCK, Invalid, IOFailure, Kind,
                         MAX_PATH, MAX_RECORD, NotAFile, NotAFolder, NotEmpty, NotFound,
                         openat2, ORPHAN_AGE, parse_path, rename_noreplace, Segments,
                         StoreError, TEMP_PREFIX, Unsupported, validate_path, VERSION_XATTR,
                         _ENTRY, _failure, _FOLDER, _kind_at, _listable, _NEW_FILE,
                         _NO_XATTRS, _OLD_TEMP_NAME, _remove_unowned, _TEMP_NAME,
                         _unlink_if_same, _unlink_quietly)  # noqa: F401 - also re-exported


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
        except FileNotFoundError:
            raise NotFound("library root %s does not exist" % self.root) from None
        except NotADirectoryError:
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

    def _working_folder(self, name: str, create: bool) -> int | None:
        """A descriptor of the working folder ``name`` at the root (module docstring).

        None if there is none and ``create`` is false; IOFailure if anything
        but a real folder has that name (it is never followed nor replaced).
        """
        if create:
            try:
                os.mkdir(name, 0o700, dir_fd=self._root_fd)  # never follows a link
            except FileExistsError:
                pass
            except OSError as exc:
                raise _failure(exc, "create %s" % name) from None
        try:
            return os.open(name, _FOLDER, dir_fd=self._root_fd)
        except FileNotFoundError:
            if create:
                raise IOFailure("%s vanished from the library root" % name) from None
            return None
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                raise IOFailure("%s at the library root is not a folder (something else was "
                                "put there; shelfd will not follow or replace it)" % name) from None
            raise _failure(exc, "open %s" % name) from None

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
        try:
            return self._working_folder(CACHE_FOLDER, create)
        except StoreError:
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
        """Best effort: a cache that cannot be written is only slower, and leaves nothing.

        The entry is written under no name (O_TMPFILE) or a locked temporary
        one, then linked to its key, so a reader never sees half of one.
        """
        folder = self._cache_folder(create=True)
        if folder is None:
            return
        fd, name = -1, None
        try:
            if self.features.tmpfile:
                try:
                    fd = os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600,
                                 dir_fd=folder)
                except OSError:
                    fd = -1  # this file system has no O_TMPFILE
            if fd < 0:
                name = TEMP_PREFIX + os.urandom(16).hex()
                fd = os.open(name, _NEW_FILE, 0o600, dir_fd=folder)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # clean-up leaves it alone
            os.write(fd, (value + "\n").encode("ascii"))
            if name is None:  # AT_EMPTY_PATH would need CAP_DAC_READ_SEARCH before 6.10
                os.link("/proc/self/fd/%d" % fd, key, dst_dir_fd=folder, follow_symlinks=True)
            else:
                os.link(name, key, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)
        except OSError:
            pass  # EEXIST: another process cached it first
        finally:
            if name is not None:
                _unlink_quietly(folder, name)
            if fd >= 0:
                os.close(fd)
            os.close(folder)

    def space(self) -> tuple[int, int]:
        """(bytes free for uploads, size of the library's file system)."""
        try:
            vfs = os.statvfs(self._root_fd)
        except OSError as exc:
            raise _failure(exc, "read the file system") from None
        return max(0, vfs.f_bavail * vfs.f_frsize - self.reserve), vfs.f_blocks * vfs.f_frsize

    # -- changing --------------------------------------------------------------------

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
        """Remove an empty folder: one with no entry at all, hidden ones included.

        No working file of ours lives in a user's folder (uploads wait in
        .shelf-uploads), so the kernel's own ENOTEMPTY is the whole test.
        """
        path = validate_path(path)
        if not path:
            raise Invalid("the root cannot be removed")
        parent = self._open_folder(path[:-1])
        try:
            os.rmdir(path[-1], dir_fd=parent)  # a link or file: ENOTDIR, never followed
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
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            # Moved or deleted meanwhile (and perhaps a folder made at its name):
            # that request won, and our second name of the file goes.
            _unlink_if_same(dst_fd, dst, before)
            raise FileNotFoundError(errno.ENOENT, "moved or deleted meanwhile") from None

    def remove_leftovers(self) -> list[Segments]:
        """At start: what crashes left behind and nobody holds (another shelfd may run).

        Half-made kept uploads and trash entries (ORPHAN_AGE old), and what
        ``remove_temporaries`` removes. Kept uploads and trashed files wait for
        their expiry. No tree walk: nothing of ours lives in a user's folder.
        Paths are from the root.
        """
        removed = self.remove_temporaries()
        for module in (_uploads, _trash):
            try:
                removed += module.remove_orphans(self)
            except StoreError:
                pass  # a working folder that is not one: every request says so
        return removed

    def remove_temporaries(self) -> list[Segments]:
        """The hash cache's temporaries and shelfd 1's upload temporaries at the root
        that nobody holds (``expire_uploads`` and ``expire_trash`` see to the rest)."""
        removed: list[Segments] = []
        for folder_path, pattern in (((), _OLD_TEMP_NAME), ((CACHE_FOLDER,), _TEMP_NAME)):
            try:
                fd = (self._open_folder(()) if not folder_path else
                      self._working_folder(CACHE_FOLDER, create=False))
            except StoreError:
                continue
            if fd is None:
                continue
            try:
                removed += [folder_path + (name,) for name in os.listdir(fd)
                            if pattern.fullmatch(name) and _remove_unowned(fd, name)]
            except OSError:
                pass
            finally:
                os.close(fd)
        return removed

    # -- kept uploads (daemon/uploads.py) and the trash (daemon/trash.py) -----------------

    def begin_upload(self, path: Sequence[str | bytes], size: int, replace: bool = False,
                     owner: str = "anonymous") -> "_uploads.Upload":
        """PUT's checks (Exists, NotFound, Full), then an Upload of ``size`` bytes."""
        return _uploads.begin_upload(self, path, size, replace, owner)

    def resume_upload(self, token: str, owner: str) -> "_uploads.Upload":
        """RESUME: the kept upload ``token`` of ``owner`` (NotFound, Full)."""
        return _uploads.resume_upload(self, token, owner)

    def drop_upload(self, token: str, owner: str) -> None:
        """ABORT: remove the kept upload ``token`` of ``owner`` (NotFound)."""
        _uploads.drop_upload(self, token, owner)

    def expire_uploads(self, max_age_seconds: float) -> int:
        """Remove kept uploads nobody holds, older than that (0: all); how many."""
        return len(_uploads.expire(self, max_age_seconds))

    def cap_uploads(self, owner: str, keep: int) -> int:
        """Remove all but the ``keep`` newest of ``owner``'s kept uploads; how many went."""
        return _uploads.cap_uploads(self, owner, keep)

    def kept_bytes(self) -> int:
        """Bytes held by kept uploads and uploads in progress."""
        return _uploads.kept_bytes(self)

    def trash_file(self, path: Sequence[str | bytes], owner: str = "anonymous") -> str:
        """DELETE with a trash: move a regular file to the trash; its id (NotFound)."""
        return _trash.trash_file(self, path, owner)

    def trash_listing(self, within: Sequence[str | bytes] = ()) -> "list[_trash.TrashEntry]":
        """Trashed files whose path is below ``within``, newest first."""
        return _trash.trash_listing(self, within)

    def restore(self, trash_id: str, target: Sequence[str | bytes] | None = None,
                within: Sequence[str | bytes] = ()) -> Entry:
        """RESTORE: put a trashed file back (Exists, NotFound, Invalid); its Entry."""
        return _trash.restore(self, trash_id, target, within)

    def purge(self, trash_id: str, within: Sequence[str | bytes] = ()) -> None:
        """PURGE: remove a trashed file for good (NotFound)."""
        _trash.purge(self, trash_id, within)

    def expire_trash(self, max_age_seconds: float) -> int:
        """Remove files trashed longer ago than that (0: all); how many."""
        return len(_trash.expire(self, max_age_seconds))


# Uploads and the trash build on everything above; they import this module,
# so they are imported last (either module may be the one imported first).
from daemon import trash as _trash, uploads as _uploads  # noqa: E402


def __getattr__(name: str):
    """``Upload`` and ``TrashEntry``, for callers that name them through this module."""
    if name == "Upload":
        return _uploads.Upload
    if name == "TrashEntry":
        return _trash.TrashEntry
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
