"""Moving a library file onto this machine without ever leaving a partial file.

Shared by the terminal and the desktop client; runs in whatever thread calls
it (a desktop worker, the terminal's main thread). The bytes go to a hidden
``.NAME.shelf-part`` beside the target, which becomes the target only when
every byte arrived (and, if asked, the SHA-256 matched).

The part file is held with an exclusive ``flock`` for as long as a download
uses it, so two downloads to one target cannot share it: the second is
refused with DownloadInProgress. A download that may be resumed writes,
before its first byte, a record beside the part file (``.NAME.shelf-part.json``:
the library name, size and mtime it came from); ``--continue`` resumes only
when the library file still matches that record (protocol 2 will add a version
token to compare instead). The lock also covers the record.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import stat
import time

from common.client import Client, ConnectionLost, Entry, ShelfError

PART_SUFFIX = ".shelf-part"
RECORD_SUFFIX = ".json"  # beside the part file: where its bytes came from


class LocalError(ShelfError):
    """A problem on this machine's side (a file that is there or is not)."""


class LocalNotFound(LocalError):
    """A local file or folder named on the command line is not there."""


class DestinationExists(LocalError):
    pass


class LocalWriteError(LocalError):
    """The destination cannot be written (read-only, full, no permission)."""


class DownloadInProgress(LocalError):
    """Another download to the same target holds its part file."""


class CannotResume(LocalError):
    """The part file is not a prefix of the library file as it is now."""


class VerifyFailed(ShelfError):
    pass


class Partial(ConnectionLost):
    """A download was cut; the bytes so far are kept for a resume."""


class Unverified(Partial):
    """Every byte arrived, but the checksum could not be had: the bytes are kept."""


def part_path(target: str) -> str:
    folder, base = os.path.split(target)
    return os.path.join(folder, "." + base + PART_SUFFIX)


def record_path(target: str) -> str:
    return part_path(target) + RECORD_SUFFIX


def when(mtime: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mtime))


def why(exc: OSError) -> str:
    """``read-only file system``: an OSError's reason as a user reads it."""
    return (exc.strerror or str(exc)).lower() if exc.strerror else str(exc)


class PartFile:
    """The part file of one download, locked (``flock``) while this object is open.

    Every write error becomes a LocalWriteError that names the target. Not
    thread-safe; one download owns it.
    """

    ATTEMPTS = 5  # to lock a part file that a finishing download renames away

    def __init__(self, target: str):
        self.target = target
        self.path = part_path(target)
        self.record = record_path(target)
        self.fd = self._open_locked()

    def _open_locked(self) -> int:
        for _ in range(self.ATTEMPTS):
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise DownloadInProgress("another download to %s is in progress" % self.target) \
                    from None
            except OSError:
                pass  # a file system without locks (rare): go on unprotected
            try:
                current = os.stat(self.path, follow_symlinks=False)
            except FileNotFoundError:
                current = None
            if current is not None and os.path.samestat(os.fstat(fd), current):
                return fd
            os.close(fd)  # the download that held it finished and took it away: again
        raise DownloadInProgress("another download to %s is in progress" % self.target)

    def _open(self) -> int:
        try:
            # O_NOFOLLOW: a planted link must not make us write elsewhere;
            # O_NONBLOCK: a planted FIFO must not hang us.
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                         | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise LocalWriteError("cannot write %s: %s is a symbolic link; remove it"
                                      % (self.target, self.path)) from None
            raise self.write_error(exc) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise LocalWriteError("cannot write %s: %s is not a regular file; remove it"
                                  % (self.target, self.path))
        os.set_blocking(fd, True)
        return fd

    def write_error(self, exc: OSError) -> LocalWriteError:
        folder = os.path.dirname(self.target) or "."
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return LocalWriteError("cannot write %s: %s (in %s)"
                                   % (self.target, why(exc), folder))
        return LocalWriteError("cannot write %s: %s" % (self.target, why(exc)))

    # -- what it holds -----------------------------------------------------------

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def resume_offset(self, remote: Entry) -> int:
        """The kept byte count, if they are a prefix of ``remote``; else CannotResume.

        Nothing kept: 0. Kept bytes with no record, or a record of another
        name, size or mtime, are refused: resuming would splice two versions.
        """
        kept = self.size()
        if kept == 0:
            return 0
        recorded = self.read_record()
        how = "run without --continue to start over"
        if recorded is None:
            raise CannotResume("cannot resume %s: no record of which version of %s its %d "
                               "bytes came from; %s" % (self.target, remote.name, kept, how))
        if (recorded.name, recorded.size, recorded.mtime) != (remote.name, remote.size,
                                                              remote.mtime):
            raise CannotResume(
                "cannot resume %s: %s in the library is not the file the download started "
                "from (then %s, %d bytes, modified %s; now %s, %d bytes, modified %s); %s"
                % (self.target, remote.name, recorded.name, recorded.size,
                   when(recorded.mtime), remote.name, remote.size,
                   when(remote.mtime), how))
        if kept > remote.size:
            raise CannotResume("cannot resume %s: the part file holds %d bytes, more than the "
                               "%d of %s; %s" % (self.target, kept, remote.size, remote.name,
                                                 how))
        return kept

    def read_record(self) -> Entry | None:
        try:
            fd = os.open(self.record, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            with os.fdopen(fd, "rb") as handle:
                if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    return None
                data = json.loads(handle.read(65536).decode("utf-8"))
            entry = Entry(data["name"], data["size"], data["mtime"])
        except (OSError, ValueError, TypeError, KeyError):
            return None
        if not (isinstance(entry.name, str) and isinstance(entry.size, int)
                and isinstance(entry.mtime, int)):
            return None
        return entry

    # -- writing ---------------------------------------------------------------------

    def start_over(self, remote: Entry | None) -> None:
        """Empty the part file; with ``remote``, record where its bytes will come from."""
        try:
            os.ftruncate(self.fd, 0)
            if remote is None:
                remove_quietly(self.record)
                return
            text = json.dumps({"name": remote.name, "size": remote.size,
                               "mtime": remote.mtime}, ensure_ascii=False)
            fd = os.open(self.record, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                         | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
            try:
                os.write(fd, text.encode("utf-8") + b"\n")
            finally:
                os.close(fd)
        except OSError as exc:
            raise self.write_error(exc) from None

    def seek(self, offset: int) -> None:
        os.lseek(self.fd, offset, os.SEEK_SET)

    def write(self, view) -> None:
        """Write all of ``view`` (Client.get's file interface)."""
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as exc:
            raise self.write_error(exc) from None

    def sync(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError as exc:
            raise self.write_error(exc) from None

    def finish(self, overwrite: bool) -> None:
        """Make the part file the target (replacing it only with ``overwrite``)."""
        try:
            if overwrite:
                os.replace(self.path, self.target)
            else:
                try:
                    os.link(self.path, self.target)
                except FileExistsError:
                    raise DestinationExists("%s appeared meanwhile; not replaced"
                                            % self.target) from None
                os.unlink(self.path)
        except OSError as exc:
            raise self.write_error(exc) from None
        remove_quietly(self.record)

    def discard(self) -> None:
        remove_quietly(self.path)
        remove_quietly(self.record)

    def close(self) -> None:
        """Release the lock (last: the part file is settled by now)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def download_atomically(client: Client, name: str, target: str, *, overwrite: bool = False,
                        resume: bool = False, keep_partial: bool = False, verify: bool = False,
                        progress=None, cancel=None, size: int | None = None,
                        remote: Entry | None = None) -> int:
    """Download ``name`` to ``target``; return the file's size.

    ``remote`` is the file's STAT (or give ``size`` alone when nothing will be
    kept for a resume); without either it is asked for. ``progress(done)``
    counts from the start of the file: it is called once with the starting
    offset (the kept bytes of a resumed download) before any byte moves.

    With ``keep_partial``, a cut connection keeps the part file for
    ``resume`` and raises Partial; so does a complete download whose checksum
    the server did not send in time (Unverified). Every other failure,
    cancellation or interruption removes it. ``resume`` refuses
    (CannotResume) when the library file is not the one the kept bytes came
    from. A download to the same target already running: DownloadInProgress.
    """
    if os.path.lexists(target) and not overwrite:
        raise DestinationExists("%s already exists" % target)
    folder = os.path.dirname(target) or "."
    if not os.path.isdir(folder):
        raise LocalNotFound("no such folder: %s" % folder)
    if remote is None and (size is None or resume or keep_partial):
        remote = client.stat(name)
    if remote is not None:
        size = remote.size
    part = PartFile(target)
    try:
        offset = part.resume_offset(remote) if resume else 0
    except BaseException:
        part.close()  # refused: the kept bytes stay for the user to decide
        raise
    keep = False
    try:
        if not offset:
            part.start_over(remote if keep_partial else None)
        if progress:
            progress(offset)
        absolute = (lambda done: progress(offset + done)) if progress else None
        part.seek(offset)
        try:
            client.get(name, part, offset=offset, progress=absolute, cancel=cancel)
        except ConnectionLost:
            keep = keep_partial and part.size() > 0
            raise
        part.sync()
        if verify:
            expected = checksum_or_keep(client, name, size, part, keep_partial)
            actual = sha256_of(part.path)
            if actual != expected:
                raise VerifyFailed("%s: checksum mismatch (got %s…, the library says %s…); "
                                   "nothing was saved" % (name, actual[:12], expected[:12]))
        part.finish(overwrite)
    except Unverified:
        raise
    except ConnectionLost as exc:
        if keep:
            raise Partial("%s: download cut (%s)" % (name, exc)) from None
        part.discard()
        raise
    except BaseException:
        part.discard()
        raise
    finally:
        part.close()
    return size


def checksum_or_keep(client: Client, name: str, size: int, part: PartFile,
                     keep_partial: bool) -> str:
    """The library's SHA-256 of ``name``. All bytes are in: if the server does not
    answer in time, the complete part file is worth keeping (Unverified)."""
    try:
        return client.hash(name, size=size)
    except ConnectionLost as exc:
        if not keep_partial:
            raise
        reason = str(exc)
        if "timed out" in reason:
            reason = "no answer within %.0f s" % client.hash_wait(size)
        raise Unverified("%s: all %d bytes arrived, but the library did not send the checksum "
                         "(%s); the download is kept in %s: run again with --continue "
                         "--verify to check and save it" % (name, size, reason, part.path)) \
            from None


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def remove_quietly(path: str) -> None:
    """Clean-up that never hides the error that made it necessary."""
    try:
        os.unlink(path)
    except OSError:
        pass


def unused_name(name: str, taken) -> str:
    """``report (2).pdf``, ``report (3).pdf``...: the first name not in ``taken``."""
    stem, dot, extension = name.rpartition(".")
    if not stem:  # no extension, or a name like ".bashrc"
        stem, dot, extension = name, "", ""
    number = 2
    while True:
        candidate = "%s (%d)%s%s" % (stem, number, dot, extension)
        if candidate not in taken:
            return candidate
        number += 1
