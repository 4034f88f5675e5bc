"""The FTP front (issue #17, step 1): pyftpdlib over the library, off by default.

``shelfd --ftp-port PORT`` forks an FTP master of its own from shelfd's master
before the Shelf server starts (``start_master``); only that child imports
pyftpdlib, so shelfd's forking master stays small. The FTP master serves with
pyftpdlib's ``MultiprocessFTPServer`` (a forked process per session) and stops
on SIGTERM, which shelfd's master sends when it stops. SIGHUP is ignored by the
FTP master: settings and accounts changed by a reload reach FTP only after a
restart.

Every session reaches the store only through a ``daemon.grant.Access``:

- the virtual file system (``ShelfFS``) maps FTP paths (``/a/b``, relative to
  the cwd, ``..`` clamped at the user's root) onto validated segments; hidden
  names (a leading ``.``) are neither listed, served nor accepted;
- STOR streams into an ``Upload`` (daemon/uploads.py, open-ended size) and
  commits it (fsync, link, folder fsync) before the ``226``; it never replaces
  (``550`` if the name exists). APPE, STOR after REST, STOU, MFMT and SITE
  CHMOD are not offered in step 1;
- a data connection's end is taken as the end of an upload only if the
  control connection is still there (checked for CONTROL_GRACE seconds, and
  an ABOR waiting on it counts as gone). A client that closes only the data
  connection early cannot be told from one that finished: FTP has no size.
- DELE moves to the trash (when the service keeps one); RNFR/RNTO never
  replaces; RMD only removes empty folders.

Logins: ``anonymous`` (any password) gets the anonymous grant; with
``--users`` an account logs in with its password, from loopback only in step 1
(no FTPS yet, and the Shelf protocol refuses a plain LOGIN off loopback too).
Failed logins count in the same table as the Shelf protocol's.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import select
import signal
import socket
import stat as stat_module

from daemon.grant import ANONYMOUS, Access, Grant, Library
from daemon.store import StoreError

log = logging.getLogger("shelfd")

CONTROL_GRACE = 0.02  # seconds a finished upload waits to see the control connection end


# -- shelfd's master side (no pyftpdlib here) ---------------------------------------------

def parse_passive_ports(text: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    try:
        low_port, high_port = int(low), int(high if sep else low)
    except ValueError:
        raise ValueError("passive ports are LOW-HIGH, e.g. 30000-30099: %r" % text) from None
    if not 1024 <= low_port <= high_port <= 65535:
        raise ValueError("passive ports are LOW-HIGH within 1024-65535, LOW <= HIGH: %r" % text)
    return low_port, high_port


def start_master(settings, library: Library, listener: socket.socket,
                 close_in_child: list) -> int:
    """Fork the FTP master on ``listener``; its pid. The child never returns.

    The FTP master dies with shelfd's master (PR_SET_PDEATHSIG), as the ready
    processes do: an orphan would keep the FTP port, and a new shelfd could
    not start on it.
    """
    master = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    status = 1
    try:
        from daemon.pool import PR_SET_PDEATHSIG, _prctl
        if _prctl is not None:
            _prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        for sock in close_in_child:
            try:
                sock.close()
            except OSError:
                pass
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, _exit_on_signal)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        if os.getppid() != master:  # it died before we asked
            raise SystemExit(0)
        serve(settings, library, listener)
        status = 0
    except SystemExit:
        status = 0
    except BaseException:
        log.exception("ftp master failed")
    finally:
        os._exit(status)


def _exit_on_signal(signum, frame):
    raise SystemExit(0)


# -- the FTP master (pyftpdlib from here on) ------------------------------------------------

def serve(settings, library: Library, listener: socket.socket) -> None:
    from pyftpdlib.servers import MultiprocessFTPServer
    handler = make_handler(settings, library)
    listener.setblocking(False)
    server = MultiprocessFTPServer(listener, handler, backlog=settings.backlog)
    server.max_cons = settings.max_clients
    server.max_cons_per_ip = 0  # step 2 brings the Shelf protocol's limits and 421
    logging.getLogger("pyftpdlib").setLevel(logging.WARNING)
    server.serve_forever(handle_exit=True)


def make_handler(settings, library: Library):
    from pyftpdlib.authorizers import AuthenticationFailed
    from pyftpdlib.filesystems import AbstractedFS, FilesystemError
    from pyftpdlib.handlers import DTPHandler, FTPHandler
    from pyftpdlib.log import logger

    def fail(exc: StoreError | str):
        return FilesystemError(str(exc))

    class ShelfFS(AbstractedFS):
        """FTP paths over an Access; the fs paths are the FTP paths (root ``/``)."""

        def __init__(self, root, cmd_channel):
            super().__init__("/", cmd_channel)
            self.access: Access = cmd_channel.shelf_access

        # paths: pure text, never the local file system
        def validpath(self, path):
            return True

        def realpath(self, path):
            return path

        @staticmethod
        def segments(path: str) -> tuple:
            parts = tuple(part for part in path.split("/") if part)
            if any(part.startswith(".") for part in parts):
                raise FilesystemError("No such file or directory")
            from daemon.jail import validate_path
            try:
                return validate_path(parts)
            except StoreError as exc:
                raise fail(exc) from None

        def _stat(self, path):
            try:
                return self.access.stat(self.segments(path))
            except StoreError as exc:
                raise fail(exc) from None

        # reading
        def stat(self, path):
            entry = self._stat(path)
            if entry.kind == "folder":
                mode = stat_module.S_IFDIR | 0o755
            else:
                mode = stat_module.S_IFREG | 0o644
            return os.stat_result((mode, 0, 0, 1, 0, 0, entry.size, entry.mtime,
                                   entry.mtime, entry.mtime))

        lstat = stat

        def listdir(self, path):
            try:
                return [entry.name for entry in self.access.listing(self.segments(path))]
            except StoreError as exc:
                raise fail(exc) from None

        listdirinfo = listdir

        def isdir(self, path):
            try:
                return self._stat(path).kind == "folder"
            except FilesystemError:
                return False

        def isfile(self, path):
            try:
                return self._stat(path).kind == "file"
            except FilesystemError:
                return False

        def islink(self, path):
            return False

        def lexists(self, path):
            try:
                self._stat(path)
                return True
            except FilesystemError:
                return False

        def getsize(self, path):
            return self._stat(path).size

        def getmtime(self, path):
            return self._stat(path).mtime

        def chdir(self, path):
            if not self.isdir(path):
                raise FilesystemError("Not a directory")
            self.cwd = self.fs2ftp(path)

        def get_user_by_uid(self, uid):
            return "shelf"

        def get_group_by_gid(self, gid):
            return "shelf"

        def open(self, filename, mode):
            segments = self.segments(filename)
            try:
                if mode == "rb":
                    opened = self.access.open_file(segments)
                    return _Reader(opened, filename)
                if mode == "wb":
                    upload = self.access.begin_upload(segments, 0, replace=False)
                    upload.open_ended()
                    return _Writer(upload, filename, self.access.grant.max_upload)
            except StoreError as exc:
                raise fail(exc) from None
            raise FilesystemError("Not supported (appending and resuming uploads come later)")

        # changes
        def mkdir(self, path):
            self._change(self.access.mkdir, path)

        def rmdir(self, path):
            self._change(self.access.rmdir, path)

        def remove(self, path):
            self._change(self.access.delete, path)

        def rename(self, src, dst):
            try:
                self.access.rename(self.segments(src), self.segments(dst))
            except StoreError as exc:
                raise fail(exc) from None

        def _change(self, action, path):
            try:
                action(self.segments(path))
            except StoreError as exc:
                raise fail(exc) from None

        def chmod(self, path, mode):
            raise FilesystemError("Not supported")

        def utime(self, path, timeval):
            raise FilesystemError("Not supported")

        def mkstemp(self, suffix="", prefix="", dir=None, mode="wb"):
            raise FilesystemError("Not supported")

    class Authorizer:
        """The accounts and the anonymous grant; one session per process."""

        def __init__(self):
            self.grant: Grant | None = None

        def validate_authentication(self, username, password, handler):
            host = handler.remote_ip
            if username == ANONYMOUS:
                if library.anonymous is None:
                    raise AuthenticationFailed("Anonymous access is off.")
                self._granted(handler, library.anonymous)
                return
            if library.accounts is None:
                raise AuthenticationFailed("Login incorrect.")
            if not _loopback(host):
                raise AuthenticationFailed("Login needs FTPS, which comes later; "
                                           "anonymous only.")
            failures = library.login_failures
            if failures is not None and failures.banned_for(host):
                raise AuthenticationFailed("Too many failed logins; try again later.")
            from daemon.accounts import verify
            account = verify(library.accounts, username, password.encode("utf-8"))
            if account is None:
                if failures is not None:
                    failures.record_failure(host)
                log.warning("ftp auth failed user=%s addr=%s", username, host)
                raise AuthenticationFailed("Login incorrect.")
            try:
                root = library.store.stat(account.root)
            except StoreError:
                root = None
            if root is None or root.kind != "folder":
                raise AuthenticationFailed("Your root folder is missing; ask the "
                                           "administrator.")
            self._granted(handler, account.grant(library.max_upload))

        def _granted(self, handler, grant: Grant):
            self.grant = grant
            handler.shelf_access = Access(library, grant)
            log.info("ftp auth ok user=%s addr=%s", grant.user, handler.remote_ip)

        def has_user(self, username):
            return True

        def get_home_dir(self, username):
            return "/"

        def get_msg_login(self, username):
            return "Welcome to Shelf."

        def get_msg_quit(self, username):
            return "Goodbye."

        def get_perms(self, username):
            if self.grant is None:
                return ""
            letters = {"r": "elr", "w": "wm", "d": "d", "m": "f"}
            return "".join(letters[letter] for letter in self.grant.permissions)

        def has_perm(self, username, perm, path=None):
            return perm in self.get_perms(username)

        def impersonate_user(self, username, password):
            pass

        def terminate_impersonation(self, username):
            pass

    class ShelfDTP(DTPHandler):
        def close(self):
            writer = self.file_obj
            if not self._closed and self.receive and self.transfer_finished \
                    and isinstance(writer, _Writer) and not writer.closed:
                if not _control_alive(self.cmd_channel):
                    self.transfer_finished = False
                    self._resp = ("426 Control connection gone; nothing stored.",
                                  logger.warning)
                else:
                    try:
                        writer.commit()
                    except StoreError as exc:
                        self.transfer_finished = False
                        self._resp = ("550 %s." % exc, logger.info)
            super().close()

    class ShelfHandler(FTPHandler):
        abstracted_fs = ShelfFS
        authorizer = Authorizer()
        dtp_handler = ShelfDTP
        use_sendfile = False
        permit_foreign_addresses = False
        banner = "Shelf FTP ready."
        timeout = settings.idle_timeout
        proto_cmds = {name: value for name, value in FTPHandler.proto_cmds.items()
                      if name not in ("APPE", "STOU", "MFMT", "SITE CHMOD")}
        shelf_access = None

        def ftp_MLSD(self, path):
            if not self.fs.isdir(path):
                self.respond("550 No such directory.")
                return None
            return super().ftp_MLSD(path)

        def ftp_STOR(self, file, mode="w"):
            if self._restart_position:
                self._restart_position = 0
                self.respond("550 Resuming an upload (REST then STOR) is not supported.")
                return None
            return super().ftp_STOR(file, mode)

    if getattr(settings, "ftp_passive_ports", None):
        low, high = settings.ftp_passive_ports
        ShelfHandler.passive_ports = list(range(low, high + 1))
    return ShelfHandler


def _loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def _control_alive(cmd_channel) -> bool:
    """Whether the control connection is still there and holds no ABOR."""
    if getattr(cmd_channel, "_closed", False):
        return False
    sock = cmd_channel.socket
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], CONTROL_GRACE)
        if not readable:
            return True
        waiting = sock.recv(256, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    except (OSError, ValueError):
        return False
    return bool(waiting) and b"ABOR" not in waiting.upper()


class _Reader:
    """A file being sent (RETR): the stored file, seekable for REST."""

    def __init__(self, opened, name: str):
        self._opened = opened
        self.name = name

    @property
    def closed(self) -> bool:
        return self._opened.file.closed

    def read(self, size=-1):
        return self._opened.file.read(size)

    def seek(self, offset, whence=0):
        return self._opened.file.seek(offset, whence)

    def close(self):
        self._opened.close()


class _Writer:
    """A file being received (STOR): an Upload; ``close`` without ``commit`` drops it."""

    def __init__(self, upload, name: str, limit: int | None):
        self._upload = upload
        self.name = name
        self._limit = limit
        self._written = 0
        self.closed = False

    def write(self, data):
        self._written += len(data)
        if self._limit is not None and self._written > self._limit:
            raise OSError(errno.EFBIG, "file too large: the limit is %d bytes" % self._limit)
        try:
            self._upload.write(data)
        except StoreError as exc:
            raise OSError(errno.EIO, str(exc)) from None
        return len(data)

    def commit(self):
        try:
            self._upload.commit()
        finally:
            self.closed = True

    def close(self):
        if not self.closed:
            self.closed = True
            self._upload.abort()
