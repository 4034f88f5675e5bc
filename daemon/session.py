"""One client's session: greeting, then requests until QUIT, EOF, idle or stop.

Runs in its own forked process (see ``daemon.server``), single-threaded. The
master asks a session to stop with SIGTERM; the handler only records it and
wakes a pipe, and the session leaves once its current request is done (at
once when it is waiting for the next one).

Speaks PROTOCOL.md version 2. Requests are checked against ``VERBS`` before
they reach a ``cmd_<verb>`` method, in the order the protocol asks: the
arguments (count, paths, numbers, tokens), then the permission the verb needs,
and only then does anything look a path up. The ``cmd_*`` methods hold only
the logic, and reach the library only through the session's ``Access`` (its
grant's view of the store). LOGIN swaps that ``Access`` for the user's; the
passwords, their argon2 check and the failures per address are in
``daemon.accounts`` (argon2 itself is imported at a session's first LOGIN).
"""

from __future__ import annotations

import _signal
import os
import re
import select
import signal
import socket
import time
from dataclasses import dataclass

from common import protocol
from common.protocol import (EMPTY, EXISTS, FAIL, GREETING, OK, Channel, ConnectionClosed,
                             ConnectionLost, LineTooLong, ProtocolError, ShelfError,
                             decode_password, decode_path, encode_name, encode_path,
                             parse_decimal, parse_token)
from daemon.accounts import root_text, verify as verify_password
from daemon.grant import Access, Grant, Library
from daemon.proxy import ProxyError, Trusted, unwrap  # here, once: not in every child
from daemon.sessionlog import session_log
from daemon.store import IOFailure, NotFound, StoreError

log = session_log  # the same lines as logging's, at a fraction of the copied pages

SMALL_FILE = 256 * 1024  # GET sends files up to this size with the reply in one write
LOG_BURST = 200  # request log lines one session may write at once...
LOG_RATE = 20    # ...and then per second
MASTER_NAME, SESSION_NAME, READY_NAME = "shelfd", "shelfd session", "shelfd ready"
JANITOR_NAME = "shelfd clean-up"
_USER = re.compile(rb"[A-Za-z0-9._-]{1,64}")
MAX_FAILED_LOGINS = 3  # the third failed LOGIN ends the session
LOGIN_DELAY = 1.0      # seconds: no failed LOGIN is answered sooner


@dataclass(frozen=True)
class Verb:
    args: tuple[str, ...]   # argument kinds; a trailing "?" marks an optional one
    needs: str              # permission letters (PUT with "replace" adds "d")
    usage: str

    @property
    def min_args(self) -> int:
        return sum(1 for kind in self.args if not kind.endswith("?"))


VERBS = {
    "LIST": Verb(("path?",), "r", "LIST [<folder>]"),
    "STAT": Verb(("path",), "r", "STAT <path>"),
    "GET": Verb(("path", "offset?", "version?"), "r", "GET <path> [<offset> [<version>]]"),
    "PUT": Verb(("path", "size", "replace?"), "w", "PUT <path> <size> [replace]"),
    "RESUME": Verb(("upload",), "w", "RESUME <upload>"),
    "ABORT": Verb(("upload",), "w", "ABORT <upload>"),
    "MKDIR": Verb(("path",), "w", "MKDIR <path>"),
    "RMDIR": Verb(("path",), "d", "RMDIR <path>"),
    "DELETE": Verb(("path",), "d", "DELETE <path>"),
    "RENAME": Verb(("path", "path"), "m", "RENAME <from> <to>"),
    "TRASH": Verb((), "r", "TRASH"),
    "RESTORE": Verb(("trash", "path?"), "w", "RESTORE <id> [<path>]"),
    "PURGE": Verb(("trash",), "d", "PURGE <id>"),
    "HASH": Verb(("path",), "r", "HASH <path>"),
    "SPACE": Verb((), "", "SPACE"),
    "LOGIN": Verb(("user", "password"), "", "LOGIN <user> <password>"),
    "NOOP": Verb((), "", "NOOP"),
    "QUIT": Verb((), "", "QUIT"),
}
UNLOGGED = frozenset({"LOGIN", "NOOP", "QUIT"})  # served before a LOGIN without anonymous


def _parse_argument(kind: str, token: bytes):
    kind = kind.rstrip("?")
    if kind == "path":
        return decode_path(token)
    if kind in ("offset", "size"):
        return parse_decimal(token, kind)
    if kind == "version":
        return parse_token(token, "version")
    if kind == "upload":
        return parse_token(token, "upload token")
    if kind == "trash":
        return parse_token(token, "trash id")
    if kind == "replace":
        if token.lower() != b"replace":
            raise ProtocolError("the third argument of PUT can only be 'replace'")
        return True
    if kind == "user":
        if not _USER.fullmatch(token):
            raise ProtocolError("a user name is 1 to 64 letters, digits, '.', '_' or '-'")
        return token.decode("ascii")
    if kind == "password":
        return decode_password(token)
    raise AssertionError(kind)


class Refused(Exception):
    """A request refused before it reached its verb: ``code`` and ``reason`` for FAIL."""

    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code = code


class EndSession(Exception):
    """Leave the session loop (QUIT, stop requested, broken upload)."""


def _described(path) -> str:
    return encode_path(path) if path else "/"


class Session:
    """Serve one connected client; ``run()`` returns when the session is over."""

    def __init__(self, sock: socket.socket, peer: str, library: Library,
                 idle_timeout: float, stop_fd: int | None = None, tls: bool = False):
        self.sock = sock
        self.peer = peer
        self.tls = tls  # the session runs inside TLS (the greeting says "tls")
        self.library = library
        self.grant = library.anonymous
        self.access = Access(library, library.anonymous or Grant(permissions=""))
        self.idle_timeout = idle_timeout
        self.stop_fd = stop_fd
        self.stopping = False
        self.channel = Channel(sock)
        self.log_tokens = float(LOG_BURST)
        self.log_refilled = time.monotonic()
        self.log_dropped = 0
        self.failed_logins = 0
        sock.settimeout(idle_timeout)  # a stalled transfer counts as idle

    def request_stop(self) -> None:
        """Record a stop request. Signal-handler safe: sets a flag, nothing else."""
        self.stopping = True

    # -- the loop ------------------------------------------------------------

    def run(self) -> None:
        started = time.monotonic()
        requests = 0
        reason = "closed by client"
        try:
            features = self.library.features() + (["tls"] if self.tls else [])
            self.channel.send_line(" ".join([GREETING] + features))
            while not self.stopping:
                if not self._wait_for_request():
                    reason = "stopping" if self.stopping else "idle timeout"
                    break
                try:
                    line = self.channel.read_line()
                except LineTooLong:
                    self._reply_fail_and_close(protocol.TOOLONG, protocol.LINE_TOO_LONG)
                    reason = "line too long"
                    break
                requests += 1
                try:
                    self.handle(line)
                except EndSession as end:
                    reason = str(end)
                    break
            else:
                reason = "stopping"
        except ConnectionClosed:
            pass
        except ConnectionLost as exc:
            reason = str(exc)
        if self.log_dropped:
            reason += " (%d request log lines left out)" % self.log_dropped
        log.info("%s session ended after %d requests, %.1f s: %s",
                 self.peer, requests, time.monotonic() - started, reason)

    def _wait_for_request(self) -> bool:
        """Block until a request may be read; False on idle timeout or stop."""
        if self.channel.has_buffered_data() or (self.tls and self.sock.pending()):
            return True  # (TLS: a decrypted record may wait in the SSL object)
        watched = [self.sock] if self.stop_fd is None else [self.sock, self.stop_fd]
        deadline = time.monotonic() + self.idle_timeout
        while True:
            remaining = deadline - time.monotonic()
            readable, _, _ = select.select(watched, [], [], max(0.0, remaining))
            if self.stopping or not readable:
                return False
            if self.sock in readable:
                return True
            try:  # woken by a signal that was not a stop (SIGUSR1 retires a process)
                os.read(self.stop_fd, 4096)
            except BlockingIOError:
                pass

    def _reply_fail_and_close(self, code: str, reason: str) -> None:
        """FAIL, then half-close and drain briefly so the reply is not lost to a reset."""
        try:
            self.fail(code, reason)
            self.sock.shutdown(socket.SHUT_WR)
            self.sock.settimeout(1.0)
            for _ in range(64):
                if not self.sock.recv(65536):
                    break
        except OSError:
            pass

    # -- dispatch ------------------------------------------------------------

    def handle(self, line: bytes) -> None:
        tokens = line.split(b" ")
        verb_name = tokens[0].decode("ascii", "replace").upper()
        started = time.monotonic()
        try:
            verb, args = self.check(line, verb_name, tokens[1:])
        except Refused as refusal:
            self.fail(refusal.code, str(refusal))
            self.log_request("%s %s FAIL %s %s", self.peer, verb_name[:32] or "(empty)",
                             refusal.code, refusal)
            return
        handler = getattr(self, "cmd_" + verb_name.lower())
        try:
            detail = handler(*args)
        except StoreError as exc:
            if exc.code is None:
                self.reply(EXISTS)
                detail = "EXISTS"
            else:
                self.fail(exc.code, str(exc))
                detail = "FAIL %s %s" % (exc.code, exc)
        if verb_name != "QUIT":
            self.log_request("%s %s %s (%.3f s)", self.peer, verb_name, detail or "",
                             time.monotonic() - started)

    def check(self, line: bytes, verb_name: str, tokens: list) -> tuple[Verb, list]:
        """The verb and its parsed arguments, or Refused: arguments first, then permission."""
        if not line:
            raise Refused(protocol.INVALID, "empty request; verbs: %s" % " ".join(VERBS))
        verb = VERBS.get(verb_name)
        if verb is None:
            raise Refused(protocol.INVALID, "unknown verb %r; verbs: %s"
                          % (verb_name[:32], " ".join(VERBS)))
        if any(not token for token in tokens):
            raise Refused(protocol.INVALID,
                          "malformed request: separate tokens with exactly one space")
        if not verb.min_args <= len(tokens) <= len(verb.args):
            raise Refused(protocol.INVALID, "wrong number of arguments; usage: %s" % verb.usage)
        try:
            args = [_parse_argument(kind, token) for kind, token in zip(verb.args, tokens)]
        except ProtocolError as exc:  # InvalidName included
            raise Refused(protocol.INVALID, str(exc)) from None
        if self.grant is None and verb_name not in UNLOGGED:
            raise Refused(protocol.DENIED, "log in first")
        needs = verb.needs + ("d" if verb_name == "PUT" and len(args) == 3 else "")
        try:
            self.access.need(needs)
        except StoreError as exc:
            raise Refused(protocol.DENIED, str(exc)) from None
        return verb, args

    def log_request(self, message: str, *args) -> None:
        """Log one request line, within the session's budget (a token bucket).

        One client must not be able to grow the log without bound: past a
        burst of LOG_BURST lines, LOG_RATE lines a second get through, and the
        next line that does says how many were left out.
        """
        now = time.monotonic()
        self.log_tokens = min(LOG_BURST, self.log_tokens + (now - self.log_refilled) * LOG_RATE)
        self.log_refilled = now
        if self.log_tokens < 1:
            self.log_dropped += 1
            return
        self.log_tokens -= 1
        if self.log_dropped:
            log.warning("%s %d request log lines left out (over %d a second)",
                        self.peer, self.log_dropped, LOG_RATE)
            self.log_dropped = 0
        log.info(message, *args)

    def reply(self, text: str) -> None:
        self.channel.send_line(text)

    def fail(self, code: str, reason: str) -> None:
        self.channel.send_line("%s %s %s" % (FAIL, code, reason))

    # -- reading -------------------------------------------------------------

    def cmd_list(self, folder=()) -> str:
        entries = self.access.listing(folder)
        if not entries:
            self.reply(EMPTY)
            return "%s empty" % _described(folder)
        lines = ["%s %d" % (OK, len(entries))]
        for e in entries:
            if e.kind == "folder":
                lines.append("%s/ 0 %d -" % (encode_name(e.name), e.mtime))
            else:
                lines.append("%s %d %d %s" % (encode_name(e.name), e.size, e.mtime, e.version))
        self.channel.send_lines(lines)
        return "%s %d entries" % (_described(folder), len(entries))

    def cmd_stat(self, path) -> str:
        e = self.access.stat(path)
        if e.kind == "folder":
            self.reply("%s 0 %d folder -" % (OK, e.mtime))
        else:
            self.reply("%s %d %d file %s" % (OK, e.size, e.mtime, e.version))
        return _described(path)

    def cmd_get(self, path, offset: int = 0, version: str | None = None) -> str:
        with self.access.open_file(path, version) as opened:
            size, version = opened.entry.size, opened.entry.version
            if offset > size:
                self.fail(protocol.INVALID, "offset past the end (the file has %d bytes)" % size)
                return "%s offset past the end" % _described(path)
            length = size - offset
            header = "%s %d %s" % (OK, length, version)
            if length <= SMALL_FILE:
                opened.file.seek(offset)
                data = opened.file.read(length)
                if len(data) != length:
                    raise EndSession("file changed while being read")
                self.channel.send_line_with(header, data)
            else:
                self.channel.send_line(header)
                try:
                    self.channel.send_file(opened.file, offset, length)
                except protocol.ShortFile:
                    raise EndSession("file changed while being sent") from None
        return "%s %d bytes from %d" % (_described(path), length, offset)

    def cmd_hash(self, path) -> str:
        digest, entry = self.access.sha256(path)
        self.reply("%s sha256 %s %s" % (OK, digest, entry.version))
        return _described(path)

    def cmd_space(self) -> str:
        free, total = self.access.space()
        self.reply("%s %d %d" % (OK, free, total))
        return "%d of %d bytes free" % (free, total)

    # -- uploads ---------------------------------------------------------------

    def cmd_put(self, path, size: int, replace: bool = False) -> str:
        upload = self.access.begin_upload(path, size, replace)
        self.reply("%s %s" % (OK, upload.token))
        return self._receive(upload, "stored")

    def cmd_resume(self, token: str) -> str:
        upload = self.access.resume_upload(token)
        self.reply("%s %d" % (OK, upload.offset))
        return self._receive(upload, "resumed at %d and stored" % upload.offset)

    def _receive(self, upload, done: str) -> str:
        """The bytes of a PUT or RESUME, then its final reply."""
        try:
            upload.receive_from(self.channel)
        except (ConnectionLost, ConnectionClosed) as exc:
            self.access.keep_broken(upload)
            raise EndSession("upload of %s broken: %s" % (_described(upload.path), exc)) from None
        except BaseException:
            upload.abort()
            raise
        try:
            entry = upload.commit()  # StoreError: dropped, and handle() replies
        except NotFound:  # the final reply is OK, EXISTS or FAIL full | io
            raise IOFailure("storing failed: its folder was removed meanwhile") from None
        self.reply("%s %d %s" % (OK, entry.size, entry.version))
        return "%s %s %d bytes" % (_described(upload.path), done, entry.size)

    def cmd_abort(self, token: str) -> str:
        self.access.drop_upload(token)
        self.reply(OK)
        return token

    # -- changes -------------------------------------------------------------------

    def cmd_mkdir(self, path) -> str:
        self.access.mkdir(path)
        self.reply(OK)
        return _described(path)

    def cmd_rmdir(self, path) -> str:
        self.access.rmdir(path)
        self.reply(OK)
        return _described(path)

    def cmd_delete(self, path) -> str:
        self.access.delete(path)
        self.reply(OK)
        return _described(path)

    def cmd_rename(self, source, target) -> str:
        self.access.rename(source, target)
        self.reply(OK)
        return "%s to %s" % (_described(source), _described(target))

    def cmd_trash(self) -> str:
        items = self.access.trash_listing()
        if not items:
            self.reply(EMPTY)
            return "empty"
        lines = ["%s %d" % (OK, len(items))]
        lines.extend("%s %s %d %d" % (trash_id, encode_path(path), size, deleted)
                     for trash_id, path, size, deleted in items)
        self.channel.send_lines(lines)
        return "%d entries" % len(items)

    def cmd_restore(self, trash_id: str, path=None) -> str:
        entry = self.access.restore(trash_id, path)
        self.reply("%s %s" % (OK, entry.version))
        return trash_id

    def cmd_purge(self, trash_id: str) -> str:
        self.access.purge(trash_id)
        self.reply(OK)
        return trash_id

    # -- the session -------------------------------------------------------------

    def cmd_login(self, user: str, password: bytes) -> str:
        """LOGIN: the user's grant for the rest of the session, or the same FAIL for any miss.

        Refused at once, costing nothing, on a plain listener off loopback
        (the password crossed a network in clear). A wrong user or password,
        and an address with too many failures (``FailureTable``; no argon2
        cost spent then), all answer ``FAIL denied`` no sooner than
        LOGIN_DELAY after the request arrived, and each counts towards the
        session's third failure. A failed LOGIN leaves the session's grant
        as it was.
        """
        arrived = time.monotonic()
        library = self.library
        host = peer_host(self.peer)
        if library.accounts is None:
            return self._login_failed(user, host, arrived, "login refused: this server has "
                                      "no accounts", "no accounts", delay=False,
                                      logged=True)
        if not self.tls and not self._on_loopback():
            self.fail(protocol.DENIED, "login needs TLS")
            log.warning("auth refused user=%s addr=%s: login needs TLS (plain listener off "
                        "loopback)", user, host)
            return "FAIL denied login needs TLS"
        failures = library.login_failures
        if failures is not None and failures.banned_for(host):
            return self._login_failed(user, host, arrived, "too many failed logins from %s; "
                                      "try again later" % host, "address banned")
        account = verify_password(library.accounts, user, password)
        if account is None:
            if failures is not None and failures.record_failure(host):
                log.warning("auth ban addr=%s: %d failed logins within %d s; LOGIN refused "
                            "for %d s", host, failures.limit, failures.window, failures.ban)
            log.warning("auth failed user=%s addr=%s", user, host)
            return self._login_failed(user, host, arrived, "login refused: wrong user or "
                                      "password", "wrong user or password", logged=True)
        try:
            root = self.library.store.stat(account.root)
        except StoreError:
            root = None
        if root is None or root.kind != "folder":
            where = root_text(account.root)
            log.warning("auth refused user=%s addr=%s: root folder %s is not a folder of the "
                        "library", user, host, where)
            self.fail(protocol.DENIED, "login refused: the root folder %s of %s is missing; "
                      "ask the administrator" % (where, user))
            return "FAIL denied root folder %s missing" % where
        self.grant = account.grant(library.max_upload)
        self.access = Access(library, self.grant)
        log.info("auth ok user=%s addr=%s", user, host)
        self.reply("%s %s %s %s" % (OK, user, self.grant.word(), root_text(account.root)))
        return "OK %s %s %s" % (user, self.grant.word(), root_text(account.root))

    def _login_failed(self, user: str, host: str, arrived: float, reason: str, detail: str,
                      delay: bool = True, logged: bool = False) -> str:
        """FAIL denied no sooner than LOGIN_DELAY after ``arrived``; the third one ends the session."""
        if delay:
            remaining = arrived + LOGIN_DELAY - time.monotonic()
            if remaining > 0:
                time.sleep(remaining)
        if not logged:
            log.warning("auth refused user=%s addr=%s: %s", user, host, detail)
        self.failed_logins += 1
        self.fail(protocol.DENIED, reason)
        if self.failed_logins >= MAX_FAILED_LOGINS:
            raise EndSession("%d failed logins" % self.failed_logins)
        return "FAIL denied %s (%s)" % (user, detail)

    def _on_loopback(self) -> bool:
        """True when the client's traffic never left this machine.

        It reached us on a loopback address, and, behind a balancer (a PROXY
        header named the client), the client's own address is loopback too:
        otherwise its leg to the balancer crossed a network in clear.
        """
        import ipaddress

        def loopback(text: str) -> bool:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            return (getattr(address, "ipv4_mapped", None) or address).is_loopback

        try:
            if not loopback(self.sock.getsockname()[0]):
                return False
            return " (via " not in self.peer or loopback(peer_host(self.peer))
        except (OSError, ValueError, IndexError, TypeError):
            return False

    def cmd_noop(self) -> None:
        self.reply(OK)

    def cmd_quit(self) -> None:
        raise EndSession("quit")


# Blocked by the master around fork() and unblocked by the child once its own
# handlers are in place: a stop that arrives in between is delivered late, not lost.
FORK_BLOCKED = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1}
FORK_BLOCKED_NUMBERS = [int(signum) for signum in FORK_BLOCKED]
SIGTERM, SIGINT, SIGUSR1, SIGHUP, SIGCHLD, SIGXFSZ, SIG_UNBLOCK = (
    int(signal.SIGTERM), int(signal.SIGINT), int(signal.SIGUSR1), int(signal.SIGHUP),
    int(signal.SIGCHLD), int(signal.SIGXFSZ), int(signal.SIG_UNBLOCK))
SIG_IGN, SIG_DFL = int(signal.SIG_IGN), int(signal.SIG_DFL)


def install_child_signals(on_stop, wake_fd: int, on_retire=None) -> None:
    """A session process's signals: TERM/INT stop, USR1 retires, HUP is the master's.

    SIGXFSZ is ignored so a file-size limit fails a write (EFBIG) instead of
    killing the session mid-upload.

    Through ``_signal``, the C functions under the ``signal`` module: its
    wrappers turn every number into an enum member and back, and that
    Python machinery copied some 300 KiB of pages into each session process.
    """
    for signum, handler in ((SIGTERM, on_stop), (SIGINT, on_stop),
                            (SIGUSR1, on_retire or SIG_IGN), (SIGHUP, SIG_IGN),
                            (SIGCHLD, SIG_DFL), (SIGXFSZ, SIG_IGN)):
        _signal.signal(signum, handler)
    _signal.set_wakeup_fd(wake_fd, warn_on_full_buffer=False)
    _signal.pthread_sigmask(SIG_UNBLOCK, FORK_BLOCKED_NUMBERS)


def set_process_name(name: str) -> None:
    """Show what this process is in ps/top (``shelfd session``, ``shelfd ready``).

    Written to /proc/self/comm (15 bytes at most), as Postgres and Apache
    show a process's role; best effort elsewhere.
    """
    try:
        fd = os.open("/proc/self/comm", os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.write(fd, name.encode("ascii")[:15])
    except OSError:
        pass
    finally:
        os.close(fd)


class ShelfHandler:
    """The Shelf protocol behind a listener (the ``Handler`` of ``daemon.server``).

    Built by ``__main__`` in the master; ``session`` runs in a session
    process, ``refuse`` in a session process or the master. ``settings`` is a
    function that returns the settings in effect, so a session started after
    a SIGHUP gets the new idle timeout.
    """

    name = "shelf"

    def __init__(self, library: Library, settings):
        self.library = library
        self.settings = settings
        self._proxies = (None, None)  # (the settings they came from, Trusted)

    @property
    def proxies(self):
        """The balancers allowed to send a PROXY header (``--proxy-protocol``)."""
        current = self.settings()
        if self._proxies[0] is not current:
            self._proxies = (current, Trusted(getattr(current, "proxy_protocol", None)))
        return self._proxies[1]

    def session(self, sock: socket.socket, peer: str, stop_fd: int | None) -> Session:
        return Session(sock, peer, self.library, self.settings().idle_timeout, stop_fd=stop_fd)

    def refuse(self, sock: socket.socket, peer: str, why: str) -> None:
        """BUSY instead of the greeting (the caller logs and closes)."""
        sock.send((protocol.BUSY + "\n").encode("ascii"))

    def warm_up(self, rounds: int = 8) -> None:
        """Run a few sessions in the master, over socket pairs, before the first fork.

        CPython 3.11 specialises bytecode as it runs it, writing into the code
        objects: if every child did that on its own, each would copy the pages
        of every code object on its path. Run once here, the pages stay shared.
        The sessions serve a one-file read-only library in a temporary folder of
        their own and log to /dev/null; where no such folder can be made, nothing
        is warmed (only slower).
        """
        import logging
        import shutil
        from types import SimpleNamespace

        self.proxies  # worked out here, once, rather than in every child

        from daemon.store import Store

        folder = os.path.join(os.environ.get("TMPDIR") or "/tmp",
                              ".shelfd-warm-up-%d" % os.getpid())
        try:
            os.mkdir(folder, 0o700)
        except OSError:
            return
        try:
            with open(os.path.join(folder, "a.txt"), "wb") as handle:
                handle.write(b"warm-up\n")
            os.mkdir(os.path.join(folder, "f"))
            library = Library(Store(folder, hash_cache=False), Grant(permissions="r"),
                              trash=False, keep_uploads=False)
        except (OSError, ShelfError):
            shutil.rmtree(folder, ignore_errors=True)
            return
        saved = (session_log.fd, session_log.render, session_log.level)
        sink = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        session_log.direct(sink, saved[1] or (lambda *line: " ".join(map(str, line))),
                           logging.DEBUG)
        try:
            # Through a handler, so the children's path through it is warm too.
            warming = ShelfHandler(library, lambda: SimpleNamespace(idle_timeout=5.0))
            for _ in range(rounds):
                ours, theirs = socket.socketpair()
                with ours, theirs:
                    theirs.sendall(WARM_UP_SCRIPT)
                    warming.session(ours, "(warm-up)", None).run()
        except (OSError, ShelfError):
            pass  # only slower
        finally:
            session_log.direct(*saved)
            os.close(sink)
            library.store.close()
            shutil.rmtree(folder, ignore_errors=True)


WARM_UP_SCRIPT = (b"NOOP\nLIST\nLIST f\nSTAT a.txt\nGET a.txt\nGET a.txt 1\nHASH a.txt\n"
                  b"STAT f/b.txt\nSTAT .x\nBOGUS\nNOOP\nQUIT\n")


def turn_away(handler, conn: socket.socket, peer: str, why: str) -> None:
    """Refuse a client the handler's way (Shelf's BUSY, FTP's 421), log why, and close."""
    log.warning("%s refused: %s", peer, why)
    try:
        conn.setblocking(False)
        handler.refuse(conn, peer, why)
    except OSError:
        pass
    finally:
        conn.close()


def over_max_per_ip(limit: int, host: str) -> str:
    """The reason a client is refused by --max-per-ip (master and ready processes alike)."""
    return "%d sessions from %s already (max_per_ip)" % (limit, host)


def peer_host(peer: str) -> str:
    """The host part of a ``format_peer`` string (``[v6]:port`` or ``v4:port``)."""
    host = peer.split(" ", 1)[0].rsplit(":", 1)[0]
    return host[1:-1] if host.startswith("[") else host


def format_peer(address) -> str:
    """``host:port`` (``[v6]:port``) of an accepted client, as every log line names it."""
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)
    return str(address)


def serve_in_child(handler, sock: socket.socket, peer: str) -> None:
    """The body of a session process forked for one client (the caller leaves via os._exit).

    Installs the session's own signal handling: SIGTERM/SIGINT ask it to
    finish the current request and leave (the master forwards a stop; a
    terminal's Ctrl+C reaches the whole process group), SIGHUP is the
    master's business, SIGXFSZ must not kill us mid-upload (EFBIG instead).
    """
    set_process_name(SESSION_NAME)
    try:  # behind a trusted balancer, the client's own address first
        peer, _ = unwrap(handler, sock, peer, peer_host(peer))
    except ProxyError as exc:
        log.warning("%s refused: %s", peer, exc)
        sock.close()
        return
    stop_r, stop_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    session = handler.session(sock, peer, stop_r)
    install_child_signals(lambda signum, frame: session.request_stop(), stop_w)
    try:
        session.run()
    except ShelfError as exc:
        log.warning("%s session failed: %s", peer, exc)
    finally:
        sock.close()
