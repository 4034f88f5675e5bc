"""The PID file: who is alive is told by a lock, not by the number in the file.

Modelled on gunicorn's pidfile: a stale check before starting, the file
written to a temporary beside it and renamed into place, removed at exit only
if it still holds our PID. On top of that the file is held with ``flock``
for the daemon's whole life, so "is another shelfd running?" has an exact
answer even when PIDs are reused. Master process only.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os

from common.protocol import ShelfError

log = logging.getLogger("shelfd")


class PidFileError(ShelfError):
    pass


class AlreadyRunning(PidFileError):
    def __init__(self, pid: int | None):
        self.pid = pid
        super().__init__("shelfd is already running (pid %s)" % (pid if pid else "unknown"))


class PidFile:
    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.fd: int | None = None
        self.pid: int | None = None

    def check(self) -> int | None:
        """Refuse if a live shelfd holds the file; return a stale PID if there is one.

        Also makes sure the folder is writable, so the error comes before
        the daemon detaches from the terminal.
        """
        folder = os.path.dirname(self.path)
        if not os.path.isdir(folder):
            raise PidFileError("cannot write PID file %s: no such folder" % self.path)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PidFileError("cannot write PID file %s: permission denied" % self.path)
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PidFileError("cannot read PID file %s: %s" % (self.path, exc.strerror)) from None
        try:
            pid = _parse_pid(os.read(fd, 64))
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                    raise AlreadyRunning(pid) from None
                raise
            return pid or -1
        finally:
            os.close(fd)

    def create(self, pid: int | None = None) -> None:
        """Write our PID atomically and keep the file locked until ``remove``."""
        pid = os.getpid() if pid is None else pid
        stale = self.check()
        if stale:
            log.warning("taking over stale PID file %s (pid %s is not running shelfd)",
                        self.path, stale if stale > 0 else "unknown")
        temp = "%s.%d.tmp" % (self.path, pid)
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o644)
        except OSError as exc:
            raise PidFileError("cannot write PID file %s: %s" % (self.path, exc.strerror)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, b"%d\n" % pid)
            os.fsync(fd)
            os.rename(temp, self.path)
        except OSError as exc:
            os.close(fd)
            try:
                os.unlink(temp)
            except OSError:
                pass
            raise PidFileError("cannot write PID file %s: %s" % (self.path, exc.strerror)) from None
        self.fd = fd
        self.pid = pid

    def remove(self) -> None:
        """Remove the file only if it is still ours (same PID, same file)."""
        if self.fd is None:
            return
        try:
            with open(self.path, "rb") as handle:
                same_file = os.fstat(handle.fileno()).st_ino == os.fstat(self.fd).st_ino
                if same_file and _parse_pid(handle.read(64)) == self.pid:
                    os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(self.fd)
            self.fd = None


def _parse_pid(data: bytes) -> int | None:
    try:
        return int(data.strip() or b"0") or None
    except ValueError:
        return None
