"""Moving a library file onto this machine without ever leaving a partial file.

Shared by the terminal and the desktop client; runs in whatever thread calls
it (a desktop worker, the terminal's main thread). The bytes go to a hidden
``.NAME.shelf-part`` beside the target, which becomes the target only when
every byte arrived (and, if asked, the SHA-256 matched).

The part file is held with an exclusive ``flock`` for as long as a download
uses it, so two downloads to one target cannot share it: the second is
refused with DownloadInProgress. A download that may be resumed writes,
before its first byte, a record beside the part file (``.NAME.shelf-part.json``:
the library path, size, mtime and version it came from). A resume asks the
server for the rest of exactly that version (``GET path offset version``), so
two versions are never spliced: the server answers ``changed`` otherwise, and
the download either refuses (the kept bytes stay) or starts over, as the
caller says. The lock also covers the record.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import stat
import time

from common.client import (Changed, Client, ConnectionLost, Entry, Exists, NotFound,
                           ProtocolError, RemoteError, ShelfError)

PART_SUFFIX = ".shelf-part"
CHANGED_ATTEMPTS = 3  # a file replaced between our STAT and our GET: look again
RECORD_SUFFIX = ".json"  # beside the part file: where its bytes came from


class LocalError(ShelfError):
    """A problem on this machine's side (a file that is there or is not)."""


class LocalNotFound(LocalError):
    """A local file or folder named on the command line is not there."""


class DestinationExists(LocalError):
    pass


class IsAFolder(LocalError):
    """A file was asked for and the library has a folder there (or the other way)."""


class LocalWriteError(LocalError):
    """The destination cannot be written (read-only, full, no permission)."""


class DownloadInProgress(LocalError):
    """Another download to the same target holds its part file."""


class CannotResume(LocalError):
    """The part file is not a prefix of the library file as it is now."""

    def __init__(self, message: str, version_changed: bool = False):
        super().__init__(message)
        self.version_changed = version_changed


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

    def resume_offset(self, path: str, remote: Entry) -> int:
        """The kept byte count, if they came from the version ``remote`` is now;
        else CannotResume (whose ``version_changed`` says if only the version differs).

        Nothing kept: 0. Kept bytes with no record (or one written before
        versions), or a record of another path or version, are refused:
        resuming would splice two versions.
        """
        kept = self.size()
        if kept == 0:
            return 0
        recorded = self.read_record()
        how = "run without --continue to start over"
        if recorded is None or recorded.version is None:
            raise CannotResume("cannot resume %s: no record of which version of %s its %d "
                               "bytes came from; %s" % (self.target, path, kept, how))
        if recorded.name != path:
            raise CannotResume("cannot resume %s: its %d bytes came from %s, not %s; %s"
                               % (self.target, kept, recorded.name, path, how))
        if recorded.version != remote.version:
            raise CannotResume(
                "cannot resume %s: %s changed in the library since the download started "
                "(then %d bytes, modified %s; now %d bytes, modified %s); %s, or add --force"
                % (self.target, path, recorded.size, when(recorded.mtime), remote.size,
                   when(remote.mtime), how), version_changed=True)
        if kept > remote.size:
            raise CannotResume("cannot resume %s: the part file holds %d bytes, more than the "
                               "%d of %s; %s" % (self.target, kept, remote.size, path, how))
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
            # "path" since protocol 2 (1.x wrote "name" and no version)
            entry = Entry(data.get("path", data.get("name")), data["size"], data["mtime"],
                          "file", data.get("version"))
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return None
        if not (isinstance(entry.name, str) and isinstance(entry.size, int)
                and isinstance(entry.mtime, int)
                and (entry.version is None or isinstance(entry.version, str))):
            return None
        return entry

    # -- writing ---------------------------------------------------------------------

    def start_over(self, path: str, remote: Entry | None) -> None:
        """Empty the part file; with ``remote``, record where its bytes will come from."""
        try:
            os.ftruncate(self.fd, 0)
            if remote is None:
                remove_quietly(self.record)
                return
            text = json.dumps({"path": path, "size": remote.size, "mtime": remote.mtime,
                               "version": remote.version}, ensure_ascii=False)
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
                        resume: bool = False, restart_changed: bool = False,
                        keep_partial: bool = False, verify: bool = False, progress=None,
                        cancel=None, size: int | None = None, remote: Entry | None = None,
                        note=None) -> int:
    """Download the library file ``name`` (a path) to ``target``; return its size.

    ``remote`` is the file's STAT or LIST entry (asked for when not given:
    its version is what every GET names). ``progress(done)`` counts from the
    start of the file: it is called once with the starting offset (the kept
    bytes of a resumed download) before any byte moves.

    With ``keep_partial``, a cut connection keeps the part file for
    ``resume`` and raises Partial; so does a complete download whose checksum
    the server did not send in time (Unverified). Every other failure,
    cancellation or interruption removes it. ``resume`` refuses
    (CannotResume, the kept bytes stay) when the library file is no longer the
    version the kept bytes came from, unless ``restart_changed``: then it
    starts over and says so through ``note(text)``. A download to the same
    target already running: DownloadInProgress. ``size`` is accepted for
    callers of 1.x and ignored: the entry says it.
    """
    if os.path.lexists(target) and not overwrite:
        raise DestinationExists("%s already exists" % target)
    folder = os.path.dirname(target) or "."
    if not os.path.isdir(folder):
        raise LocalNotFound("no such folder: %s" % folder)
    if remote is None:
        remote = client.stat(name)
    if remote.is_folder:
        raise IsAFolder("%s is a folder in the library" % name)
    note = note or (lambda text: None)
    part = PartFile(target)
    try:
        offset = 0
        if resume:
            try:
                offset = part.resume_offset(name, remote)
            except CannotResume as exc:
                if not (restart_changed and exc.version_changed):
                    raise
                note("%s changed in the library since the download started; starting over"
                     % name)
    except BaseException:
        part.close()  # refused: the kept bytes stay for the user to decide
        raise
    keep = False
    try:
        for _ in range(CHANGED_ATTEMPTS):
            if not offset:
                part.start_over(name, remote if keep_partial else None)
            if progress:
                progress(offset)
            absolute = (lambda done, start=offset: progress(start + done)) if progress else None
            part.seek(offset)
            try:
                client.get(name, part, offset=offset, progress=absolute, cancel=cancel,
                           version=remote.version)
                break
            except Changed:
                # Replaced since our STAT (a race), or since the kept bytes arrived.
                if offset and not restart_changed:
                    keep = True
                    raise CannotResume(
                        "cannot resume %s: %s changed in the library since the download "
                        "started; run without --continue to start over, or add --force"
                        % (target, name), version_changed=True) from None
                if offset:
                    note("%s changed in the library since the download started; "
                         "starting over" % name)
                remote, offset = client.stat(name), 0
                if remote.is_folder:
                    raise IsAFolder("%s is a folder in the library" % name) from None
            except ConnectionLost:
                keep = keep_partial and part.size() > 0
                raise
        else:
            raise Changed("%s changed %d times while the download started; try again later"
                          % (name, CHANGED_ATTEMPTS))
        part.sync()
        if verify:
            expected = checksum_or_keep(client, name, remote.size, part, keep_partial)
            actual = sha256_of(part.path)
            if actual != expected:
                raise VerifyFailed("%s: checksum mismatch (got %s…, the library says %s…); "
                                   "nothing was saved" % (name, actual[:12], expected[:12]))
        part.finish(overwrite)
    except Unverified:
        raise
    except CannotResume:
        if not keep:
            part.discard()
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
    return remote.size


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


# -- uploads that can be continued ---------------------------------------------------

class UploadRecords:
    """Where a cut upload can be continued from: one small JSON file per upload.

    A record names the server, the library path, the local file (real path,
    size, mtime in ns: a file edited since is another file) and the upload
    token the server gave in PUT's first reply. It is written before the
    first byte goes and removed once the server gave its final reply, so one
    that remains means the server may still keep the bytes (RESUME).
    Any thread; one upload per record at a time (the last writer wins).
    """

    def __init__(self, folder: str | None = None):
        if folder is None:
            from platformdirs import user_state_dir
            folder = os.path.join(user_state_dir("shelf", appauthor=False), "uploads")
        self.folder = folder

    @staticmethod
    def key(server: str, path: str, local: str, info: os.stat_result) -> str:
        identity = json.dumps([server, path, os.path.realpath(local), info.st_size,
                               info.st_mtime_ns], ensure_ascii=False)
        return hashlib.sha256(identity.encode("utf-8", "surrogateescape")).hexdigest()

    def _file(self, key: str) -> str:
        return os.path.join(self.folder, key + ".json")

    def load(self, key: str) -> dict | None:
        try:
            with open(self._file(key), "rb") as handle:
                data = json.loads(handle.read(65536).decode("utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("token"), str):
            return None
        return data

    def save(self, key: str, data: dict) -> None:
        """Write atomically (a temporary renamed over), readable by the user only."""
        os.makedirs(self.folder, mode=0o700, exist_ok=True)
        final = self._file(key)
        temporary = "%s.%d.tmp" % (final, os.getpid())
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(json.dumps(data, ensure_ascii=False).encode("utf-8") + b"\n")
            os.replace(temporary, final)
        except BaseException:
            remove_quietly(temporary)
            raise

    def remove(self, key: str) -> None:
        remove_quietly(self._file(key))


class ReplaceMismatch(LocalError):
    """A cut ``put --replace`` continued without --replace (or the other way)."""


def upload_resumably(client: Client, path: str, handle, info: os.stat_result, *,
                     server: str, records: UploadRecords | None, local: str,
                     replace: bool = False, resume: bool = False, progress=None,
                     cancel=None, note=None):
    """Upload the regular file open as ``handle`` (``info`` its fstat) to ``path``.

    With ``records`` (and a server with the ``resume`` feature) the upload's
    token is recorded before the bytes go. ``resume``: a record of this very
    file and path continues its upload (RESUME) from what the server kept; a
    server that no longer keeps it (NotFound) means starting over, said
    through ``note``. Without ``resume`` a record left by a cut upload is
    dropped, and the server told to give its bytes back (ABORT). Returns the
    client's Stored; the record is gone once the server gave a final answer,
    and stays after a cut, a Ctrl+C or a cancel. Runs in the caller's thread.
    """
    note = note or (lambda text: None)
    if records is None or "resume" not in client.features:
        if resume:
            note("the server cannot continue uploads; uploading %s whole" % local)
        return client.put(path, handle, info.st_size, progress=progress, cancel=cancel,
                          replace=replace)
    key = records.key(server, path, local, info)
    record = records.load(key)
    if record is not None and resume:
        if bool(record.get("replace")) != replace:
            raise ReplaceMismatch("the cut upload of %s %s --replace; run it again %s "
                                  "--replace" % (local, "had" if record.get("replace")
                                                 else "had no", "with" if record.get(
                                                     "replace") else "without"))
        first = []

        def resumed(done: int) -> None:
            if not first:  # the resume's first report: the bytes the server kept
                first.append(done)
                note("continuing the upload of %s at byte %d of %d" % (local, done,
                                                                      info.st_size))
            if progress is not None:
                progress(done)
        try:
            stored = _finally_forget(records, key, lambda: client.resume(
                record["token"], handle, info.st_size, progress=resumed, cancel=cancel,
                path=path))
        except NotFound:
            note("the server no longer keeps the cut upload of %s; starting over" % local)
        else:
            return stored
    elif record is not None:
        try:
            client.abort_upload(record["token"])
        except (RemoteError, ProtocolError):
            pass  # expired already, or a token of some other server's making
        records.remove(key)
    elif resume:
        note("no cut upload of %s to %s to continue; uploading it whole" % (local, path))

    def remember(token: str) -> None:
        try:
            records.save(key, {"server": server, "path": path,
                               "local": os.path.realpath(local), "size": info.st_size,
                               "mtime_ns": info.st_mtime_ns, "replace": replace,
                               "token": token, "started": int(time.time())})
        except OSError as exc:  # the upload itself can still work
            note("cannot keep a record to continue this upload later (%s: %s)"
                 % (records.folder, why(exc)))

    handle.seek(0)
    return _finally_forget(records, key, lambda: client.put(
        path, handle, info.st_size, progress=progress, cancel=cancel, replace=replace,
        on_token=remember))


def _finally_forget(records: UploadRecords, key: str, upload):
    """Run ``upload()``; forget the record once the server answered for good
    (stored, EXISTS, FAIL), keep it when the upload was cut."""
    try:
        stored = upload()
    except (Exists, RemoteError):
        records.remove(key)
        raise
    records.remove(key)
    return stored
