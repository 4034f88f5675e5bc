"""The PID file: who is alive is told by a lock, not by the number in the file.

The file is held with ``flock`` for the daemon's whole life, so "is another
shelfd running?" has an exact answer even when PIDs are reused, and taking
the lock is the very first step, so of several daemons started at once
exactly one goes on. A crashed master's file is unlocked: it is taken over.
Master process only.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import time

from common.protocol import ShelfError

log = logging.getLogger("shelfd")


class PidFileError(ShelfError):
    pass


class AlreadyRunning(PidFileError):
    def __init__(self, pid: int | None):
        self.pid = pid
        super().__init__("shelfd is already running (pid %s)" % (pid if pid else "unknown"))


class PidFile:
    """The lock is the truth: exactly one of many shelfd started at once runs.

    ``check`` (before listening and detaching, for a clear early message)
    only looks: a file locked by a live shelfd raises AlreadyRunning.
    ``write`` (once the socket listens) opens or creates the file, takes its
    lock (or raises AlreadyRunning: another daemon got there first), checks
    the name still leads to the locked file, and writes our PID. ``remove``
    unlinks it at exit while still holding the lock, so the name never leads
    to a file nobody can lock. The lock lives on one descriptor that children
    never keep (see ``Server.master_fds``), so it dies with the master.
    """

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.fd: int | None = None
        self.pid: int | None = None
        self.stale: int | None = None  # the PID a dead predecessor left in the file

    def check(self) -> int | None:
        """Refuse if a live shelfd holds the file; the stale PID if there is one.

        Creates nothing. Also refuses a folder or FIFO where the file should be,
        and a missing folder, before the daemon detaches from the terminal.
        """
        folder = os.path.dirname(self.path)
        if not os.path.isdir(folder):
            raise PidFileError("cannot write PID file %s: no such folder" % self.path)
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PidFileError("cannot read PID file %s: %s"
                               % (self.path, (exc.strerror or str(exc)).lower())) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise PidFileError("cannot write PID file %s: not a regular file" % self.path)
            pid = _parse_pid(os.pread(fd, 64, 0))
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                    raise AlreadyRunning(pid) from None
                raise
            return pid
        finally:
            os.close(fd)

    def acquire(self) -> None:
        folder = os.path.dirname(self.path)
        if not os.path.isdir(folder):
            raise PidFileError("cannot write PID file %s: no such folder" % self.path)
        for attempt in range(20):
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                pid = _parse_pid(os.pread(fd, 64, 0))
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                    raise PidFileError("cannot lock PID file %s: %s"
                                       % (self.path, exc.strerror)) from None
                if attempt >= 4:
                    raise AlreadyRunning(pid) from None
                # Another start may hold it for a moment only (its check): look again.
                time.sleep(0.05)
                continue
            if self._still_named(fd):
                self.fd = fd
                self.stale = _parse_pid(os.pread(fd, 64, 0))
                return
            os.close(fd)  # the holder removed it as we opened it: take the new one
        raise PidFileError("cannot lock PID file %s: it keeps changing" % self.path)

    def _open(self) -> int:
        try:
            # O_NONBLOCK: a FIFO planted there must not hang the start.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                         | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise PidFileError("cannot write PID file %s: %s"
                               % (self.path, (exc.strerror or str(exc)).lower())) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise PidFileError("cannot write PID file %s: not a regular file" % self.path)
        return fd

    def _still_named(self, fd: int) -> bool:
        try:
            now = os.stat(self.path, follow_symlinks=False)
        except OSError:
            return False
        st = os.fstat(fd)
        return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)

    def write(self, pid: int | None = None) -> None:
        """Put our PID in the locked file (once the socket listens)."""
        pid = os.getpid() if pid is None else pid
        if self.fd is None:
            self.acquire()
        if self.stale and self.stale != pid:
            log.warning("took over stale PID file %s (pid %d is not running shelfd)",
                        self.path, self.stale)
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, b"%d\n" % pid, 0)
            os.fsync(self.fd)
        except OSError as exc:
            raise PidFileError("cannot write PID file %s: %s" % (self.path, exc.strerror)) from None
        self.pid = pid

    def remove(self) -> None:
        """Unlink the file while still holding its lock, then let go."""
        if self.fd is None:
            return
        try:
            if self._still_named(self.fd):
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
