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

from common.protocol import ShelfError

log = logging.getLogger("shelfd")


class PidFileError(ShelfError):
    pass


class AlreadyRunning(PidFileError):
    def __init__(self, pid: int | None):
        self.pid = pid
        super().__init__("shelfd is already running (pid %s)" % (pid if pid else "unknown"))


class PidFile:
    """Lock first, then write: exactly one of many shelfd started at once wins.

    ``acquire`` (before listening, before detaching) opens or creates the
    file and takes its lock, or raises AlreadyRunning; ``write`` puts our PID
    in it once we listen; ``remove`` unlinks it at exit while still holding
    the lock. The lock lives on the one descriptor, which children never
    keep (see ``Server.master_fds``), so it dies with the master.
    """

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.fd: int | None = None
        self.pid: int | None = None
        self.stale: int | None = None  # the PID a dead predecessor left in the file

    def check(self) -> int | None:
        """Refuse if a live shelfd holds the file; the stale PID if there is one."""
        self.acquire()
        stale = self.stale
        self.release()
        return stale

    def acquire(self) -> None:
        folder = os.path.dirname(self.path)
        if not os.path.isdir(folder):
            raise PidFileError("cannot write PID file %s: no such folder" % self.path)
        for _ in range(10):
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                pid = _parse_pid(os.pread(fd, 64, 0))
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                    raise AlreadyRunning(pid) from None
                raise PidFileError("cannot lock PID file %s: %s"
                                   % (self.path, exc.strerror)) from None
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

    create = write  # the name 1.0 used

    def release(self) -> None:
        """Give the lock back without removing anything (a start that did not happen)."""
        if self.fd is not None:
            if self.pid is None and self._still_named(self.fd) and not os.fstat(self.fd).st_size:
                try:
                    os.unlink(self.path)  # the empty file we created
                except OSError:
                    pass
            os.close(self.fd)
            self.fd = None

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
