"""The trash: DELETE moves a file into .shelf-trash; RESTORE and PURGE take it out.

PROTOCOL.md v2, "TRASH, RESTORE, PURGE", behind the Store methods of the same
names. A trashed file keeps its inode (it is renamed, so its bytes, xattrs and
version id go with it) in one hidden working folder at the library root,
``.shelf-trash`` (see "Working folders" in daemon/store.py), under a random id
("t" and 24 lowercase hex digits; any [0-9A-Za-z_-]{1,64} is read), next to
its record:

    <id>.info   {"path": [segments from the library root], "size": N,
                 "version": "...", "deleted": epoch seconds, "owner": "user name"}
    <id>        the file

DELETE writes and fsyncs the record first, then moves the file in with
renameat2(RENAME_NOREPLACE) (or link + unlink: ``Store._move``), so a crash
leaves at worst a record without a file, which nobody lists and clean-up
removes once it is ORPHAN_AGE old. Whoever changes an entry (the DELETE that
makes it, a RESTORE, a PURGE, the expiry) holds an ``flock`` on its record
meanwhile and checks after locking that the record still has its name: of two
sessions restoring one id, or a restore and a purge, exactly one goes ahead and
the other finds nothing (NotFound). A RESTORE never replaces (``Store._move``).

Paths in records are from the library root; ``within`` (the session's root,
also from the library root) limits every call to the files deleted from inside
it. A record is untrusted input: one that is not a small JSON object naming a
valid path makes an entry that does not exist. The listed size is the trashed
file's own, not the record's.

Concurrency: any number of processes and threads at once; the flocks are their
only coordination.
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
from typing import Sequence

from daemon.jail import (_ENTRY, ORPHAN_AGE, Exists, Invalid, NotAFile, NotFound, Segments,
                         StoreError, Unsupported, _failure, _is_below, _is_number, _kind_at,
                         _lock_if_unowned, _read_record, _recorded_path, _same_file,
                         _unlink_if_same, _unlink_quietly, _write_record, validate_path)
from daemon.store import (Entry, Store)

TRASH_FOLDER = ".shelf-trash"

_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")
_INFO = re.compile(r"([0-9A-Za-z_-]{1,64})\.info")


@dataclass(frozen=True)
class TrashEntry:
    id: str
    path: Segments  # where the file was, from the library root
    size: int
    deleted: int    # whole seconds since the epoch
    owner: str      # who deleted it


@dataclass(frozen=True)
class _Record:
    """What ``<id>.info`` says; ``parse`` trusts nothing in the file."""

    path: Segments
    size: int
    version: str | None
    deleted: float
    owner: str

    @classmethod
    def parse(cls, raw: dict | None) -> "_Record | None":
        if raw is None:
            return None
        path, size, version, deleted, owner = (
            _recorded_path(raw.get("path")), raw.get("size"), raw.get("version"),
            raw.get("deleted"), raw.get("owner"))
        if path is None or not isinstance(size, int) or isinstance(size, bool) \
                or not (version is None or isinstance(version, str)) \
                or not _is_number(deleted) or not isinstance(owner, str):
            return None
        return cls(path, size, version, float(deleted), owner)

    def to_json(self) -> dict:
        return {"path": list(self.path), "size": self.size, "version": self.version,
                "deleted": self.deleted, "owner": self.owner}


def _read_info(folder_fd: int, trash_id: str) -> _Record | None:
    try:
        fd = os.open(trash_id + ".info", _ENTRY, dir_fd=folder_fd)
    except OSError:
        return None
    try:
        return _Record.parse(_read_record(fd))
    finally:
        os.close(fd)


# -- DELETE with a trash ----------------------------------------------------------------

def trash_file(store: Store, path: Sequence[str | bytes], owner: str = "anonymous") -> str:
    """Move a regular file into the trash (NotFound for anything else); its id."""
    path = validate_path(path)
    if not isinstance(owner, str):
        raise Invalid("invalid owner")
    if not path:
        raise NotAFile("the root is a folder")
    parent = store._open_folder(path[:-1])
    try:
        entry = _file_entry(store, parent, path[-1])
        record = _Record(path, entry.size, entry.version, time.time(), owner)
        folder = store._working_folder(TRASH_FOLDER, create=True)
        try:
            trash_id, record_fd = _new_record(store, folder, record)
            try:
                _move_in(store, parent, path[-1], folder, trash_id)
                store._sync(folder)
                store._sync(parent)
            except BaseException:
                _unlink_quietly(folder, trash_id + ".info")
                raise
            finally:
                os.close(record_fd)
        finally:
            os.close(folder)
    except OSError as exc:
        raise _failure(exc, "move the file to the trash") from None
    finally:
        os.close(parent)
    return trash_id


def _file_entry(store: Store, parent: int, name: str) -> Entry:
    """The Entry of the regular file ``name`` (its version goes into the record)."""
    try:
        fd = os.open(name, _ENTRY, dir_fd=parent)
    except OSError as exc:
        raise _failure(exc, "move the file to the trash") from None
    try:
        entry = store._describe(fd, name)
    finally:
        os.close(fd)
    if entry is None or entry.kind != "file":
        raise NotAFile("no such file")
    return entry


def _new_record(store: Store, folder_fd: int, record: _Record) -> tuple[str, int]:
    """A new id and its record, written, flushed and locked (the descriptor)."""
    for _ in range(16):
        trash_id = "t" + os.urandom(12).hex()
        try:
            fd = _write_record(folder_fd, trash_id + ".info", record.to_json(), store.durable)
        except FileExistsError:
            continue
        fcntl.flock(fd, fcntl.LOCK_EX)  # new: only a clean-up's probe holds it, briefly
        if _same_file(folder_fd, trash_id + ".info", os.fstat(fd)):
            return trash_id, fd
        os.close(fd)  # a clean-up told to remove everything took it before the lock
    raise OSError(errno.EEXIST, "no free trash id")


def _move_in(store: Store, parent: int, name: str, folder_fd: int, trash_id: str) -> None:
    """Move ``name`` to the trash as ``trash_id``; NotAFile if it is no longer a file.

    The kind was checked before the move; a folder that took the name in
    between is moved back (if its name is still free), never kept.
    """
    try:
        store._move(parent, name, folder_fd, trash_id)
    except Unsupported:  # a folder, where renameat2 is missing
        raise NotAFile("no such file") from None
    if _kind_at(folder_fd, trash_id) != "file":
        try:
            store._move(folder_fd, trash_id, parent, name)
        except (OSError, StoreError):
            pass  # left in the trash, unlisted; clean-up removes only files
        raise NotAFile("no such file")


# -- TRASH, RESTORE, PURGE ------------------------------------------------------------

def trash_listing(store: Store, within: Sequence[str | bytes] = ()) -> list[TrashEntry]:
    """The trashed files deleted from below ``within``, newest first.

    Half-made entries (a record without its file or the reverse), records
    that do not parse and anything planted are left out.
    """
    within = validate_path(within)
    folder = store._working_folder(TRASH_FOLDER, create=False)
    if folder is None:
        return []
    found = []
    try:
        for name in os.listdir(folder):
            match = _INFO.fullmatch(name)
            if not match:
                continue
            trash_id = match.group(1)
            record = _read_info(folder, trash_id)
            if record is None or not _is_below(record.path, within):
                continue
            try:
                st = os.stat(trash_id, dir_fd=folder, follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                found.append((record.deleted, trash_id, TrashEntry(
                    trash_id, record.path, st.st_size, math.floor(record.deleted),
                    record.owner)))
    except OSError as exc:
        raise _failure(exc, "read the trash") from None
    finally:
        os.close(folder)
    found.sort(key=lambda item: (item[0], item[1]), reverse=True)
    return [entry for _, _, entry in found]


def _claim(store: Store, trash_id: str, within: Segments) -> tuple[int, int, _Record]:
    """The trash folder, the entry's record (open and locked) and what it says.

    NotFound unless ``trash_id`` is a whole entry deleted from below
    ``within`` that no one else is changing.
    """
    if not isinstance(trash_id, str) or not _ID.fullmatch(trash_id):
        raise NotFound("no such file in the trash")
    folder = store._working_folder(TRASH_FOLDER, create=False)
    if folder is None:
        raise NotFound("no such file in the trash")
    try:
        held = _lock_if_unowned(folder, trash_id + ".info")
        if held is None:  # no such id, or another session is restoring or purging it
            raise NotFound("no such file in the trash")
        record = _Record.parse(_read_record(held[0]))
        if record is None or not _is_below(record.path, within) \
                or _kind_at(folder, trash_id) != "file":
            os.close(held[0])
            raise NotFound("no such file in the trash")
    except OSError as exc:
        os.close(folder)
        raise _failure(exc, "read the trash") from None
    except BaseException:
        os.close(folder)
        raise
    return folder, held[0], record


def restore(store: Store, trash_id: str, target: Sequence[str | bytes] | None = None,
            within: Sequence[str | bytes] = ()) -> Entry:
    """Put a trashed file back at ``target`` (default: where it was); its Entry.

    Exists if the target is taken (nothing changes), NotFound if there is no
    such entry below ``within`` or the target's folder is gone, Invalid if
    ``target`` is not below ``within``.
    """
    within = validate_path(within)
    target = None if target is None else validate_path(target)
    folder, record_fd, record = _claim(store, trash_id, within)
    try:
        target = record.path if target is None else target
        if not _is_below(target, within):
            if target == within:
                raise Exists("that is a folder")
            raise Invalid("the target is outside the session's root")
        parent = store._open_folder(target[:-1])
        try:
            fd = os.open(trash_id, _ENTRY, dir_fd=folder)
            try:
                store._move(folder, trash_id, parent, target[-1])  # never replaces
                os.unlink(trash_id + ".info", dir_fd=folder)
                store._sync(parent)
                store._sync(folder)
                entry = store._describe(fd, target[-1])
            finally:
                os.close(fd)
        finally:
            os.close(parent)
    except OSError as exc:
        raise _failure(exc, "restore") from None
    finally:
        os.close(record_fd)
        os.close(folder)
    return entry


def purge(store: Store, trash_id: str, within: Sequence[str | bytes] = ()) -> None:
    """Remove a trashed file for good: the file, then its record (NotFound)."""
    within = validate_path(within)
    folder, record_fd, _ = _claim(store, trash_id, within)
    try:
        os.unlink(trash_id, dir_fd=folder)
        os.unlink(trash_id + ".info", dir_fd=folder)
        store._sync(folder)
    except OSError as exc:
        raise _failure(exc, "purge") from None
    finally:
        os.close(record_fd)
        os.close(folder)


# -- clean-up -----------------------------------------------------------------------------

def _old(age: float, limit: float) -> bool:
    return limit <= 0 or age > limit


def expire(store: Store, max_age: float, orphan_age: float = ORPHAN_AGE) -> list[Segments]:
    """Remove entries deleted more than ``max_age`` seconds ago (0: all) and
    half-made ones older than ``orphan_age`` (or ``max_age`` if less), unless
    someone holds them. Returns the removed ids' paths from the root."""
    folder = store._working_folder(TRASH_FOLDER, create=False)
    if folder is None:
        return []
    removed = []
    try:
        now = time.time()
        names = os.listdir(folder)
        ids = {match.group(1) for match in map(_INFO.fullmatch, names) if match}
        ids.update(name for name in names if _ID.fullmatch(name))
        for trash_id in sorted(ids):
            if _expire_one(folder, trash_id, now, max_age, min(orphan_age, max_age)):
                removed.append((TRASH_FOLDER, trash_id))
    except OSError as exc:
        raise _failure(exc, "clean up the trash") from None
    finally:
        os.close(folder)
    return removed


def remove_orphans(store: Store) -> list[Segments]:
    """At start: half-made entries only; whole ones wait for their expiry."""
    return expire(store, math.inf)


def _expire_one(folder_fd: int, trash_id: str, now: float, max_age: float,
                orphan_age: float) -> bool:
    info = trash_id + ".info"
    held = _lock_if_unowned(folder_fd, info)
    if held is None:
        if _kind_at(folder_fd, info) is not None:
            return False  # someone is changing this entry (or a planted non-file)
        return _expire_unrecorded(folder_fd, trash_id, now, orphan_age)
    fd, st = held
    try:
        record = _Record.parse(_read_record(fd))
        has_file = _kind_at(folder_fd, trash_id) == "file"
        if record is None or not has_file:  # half an entry, or a record that does not parse
            expired = _old(now - st.st_mtime, orphan_age)
        else:
            expired = _old(now - record.deleted, max_age)
        if not expired:
            return False
        if has_file:
            os.unlink(trash_id, dir_fd=folder_fd)
        os.unlink(info, dir_fd=folder_fd)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _expire_unrecorded(folder_fd: int, trash_id: str, now: float, orphan_age: float) -> bool:
    """A file with no record (which no DELETE leaves): gone once ORPHAN_AGE old.

    Its age is its ctime's (the move into the trash set it), not its mtime's.
    """
    try:
        st = os.stat(trash_id, dir_fd=folder_fd, follow_symlinks=False)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode) or \
            not _old(now - max(st.st_mtime, st.st_ctime), orphan_age):
        return False
    if _kind_at(folder_fd, trash_id + ".info") is not None:
        return False  # a record appeared: a listing raced a DELETE
    _unlink_if_same(folder_fd, trash_id, st)
    return True
