"""One client's session: greeting, then requests until QUIT, EOF, idle or stop.

Runs in its own forked process (see ``daemon.server``), single-threaded. The
master asks a session to stop with SIGTERM; the handler only records it and
wakes a pipe, and the session leaves once its current request is done (at
once when it is waiting for the next one).

Requests are validated against ``VERBS`` (arity, whether the library must be
writable) before they reach a ``cmd_<verb>`` method, which holds only the logic.
"""

from __future__ import annotations

import _signal
import os
import select
import signal
import socket
import time
from dataclasses import dataclass

from common import protocol
from common.protocol import (EMPTY, EXISTS, FAIL, GREETING, OK, Channel, ConnectionClosed,
                             ConnectionLost, LineTooLong, ProtocolError, ShelfError,
                             decode_name, encode_name, parse_decimal)
from daemon.library import Library, LibraryError, NameTaken
from daemon.sessionlog import session_log

log = session_log  # the same lines as logging's, at a fraction of the copied pages

SMALL_FILE = 256 * 1024  # GET sends files up to this size with the reply in one write
LOG_BURST = 200  # request log lines one session may write at once...
LOG_RATE = 20    # ...and then per second
MASTER_NAME, SESSION_NAME, READY_NAME = "shelfd", "shelfd session", "shelfd ready"


@dataclass(frozen=True)
class Verb:
    min_args: int
    max_args: int
    writes: bool
    usage: str


VERBS = {
    "LIST": Verb(0, 0, False, "LIST"),
    "GET": Verb(1, 2, False, "GET <name> [<offset>]"),
    "PUT": Verb(2, 2, True, "PUT <name> <size>"),
    "STAT": Verb(1, 1, False, "STAT <name>"),
    "HASH": Verb(1, 1, False, "HASH <name>"),
    "NOOP": Verb(0, 0, False, "NOOP"),
    "QUIT": Verb(0, 0, False, "QUIT"),
}


class EndSession(Exception):
    """Leave the session loop (QUIT, stop requested, broken upload)."""


class Session:
    """Serve one connected client; ``run()`` returns when the session is over."""

    def __init__(self, sock: socket.socket, peer: str, library: Library,
                 idle_timeout: float, stop_fd: int | None = None):
        self.sock = sock
        self.peer = peer
        self.library = library
        self.idle_timeout = idle_timeout
        self.stop_fd = stop_fd
        self.stopping = False
        self.channel = Channel(sock)
        self.log_tokens = float(LOG_BURST)
        self.log_refilled = time.monotonic()
        self.log_dropped = 0
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
            self.channel.send_line(GREETING)
            while not self.stopping:
                if not self._wait_for_request():
                    reason = "stopping" if self.stopping else "idle timeout"
                    break
                try:
                    line = self.channel.read_line()
                except LineTooLong:
                    self._reply_fail_and_close(protocol.LINE_TOO_LONG)
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
        if self.channel.has_buffered_data():
            return True
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

    def _reply_fail_and_close(self, reason: str) -> None:
        """FAIL, then half-close and drain briefly so the reply is not lost to a reset."""
        try:
            self.channel.send_line("%s %s" % (FAIL, reason))
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
        verb = VERBS.get(verb_name)
        started = time.monotonic()
        refusal = self.refuse(line, verb_name, verb, tokens[1:])
        if refusal:
            self.fail(refusal)
            self.log_request("%s %s FAIL %s", self.peer, verb_name[:32] or "(empty)", refusal)
            return
        args = tokens[1:]
        handler = getattr(self, "cmd_" + verb_name.lower())
        try:
            detail = handler(*args)
        except LibraryError as exc:
            self.fail(str(exc))
            detail = "FAIL %s" % exc
        except ProtocolError as exc:  # bad name or number in the arguments
            self.fail(str(exc))
            detail = "FAIL %s" % exc
        if verb_name != "QUIT":
            self.log_request("%s %s %s (%.3f s)", self.peer, verb_name, detail or "",
                             time.monotonic() - started)

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

    def refuse(self, line: bytes, verb_name: str, verb: Verb | None, args: list) -> str | None:
        """The FAIL reason for a request the verb table rejects, or None."""
        if not line:
            return "empty request; verbs: %s" % " ".join(VERBS)
        if verb is None:
            return "unknown verb %r; verbs: %s" % (verb_name[:32], " ".join(VERBS))
        if any(not arg for arg in args):
            return "malformed request: separate tokens with exactly one space"
        if not verb.min_args <= len(args) <= verb.max_args:
            return "wrong number of arguments; usage: %s" % verb.usage
        if verb.writes and self.library.read_only:
            return "library is read-only"
        return None

    def reply(self, text: str) -> None:
        self.channel.send_line(text)

    def fail(self, reason: str) -> None:
        self.channel.send_line("%s %s" % (FAIL, reason))

    # -- verbs ---------------------------------------------------------------

    def cmd_list(self) -> str:
        entries = self.library.listing()
        if not entries:
            self.reply(EMPTY)
            return "empty"
        lines = ["%s %d" % (OK, len(entries))]
        lines.extend("%s %d %d" % (encode_name(e.name), e.size, e.mtime) for e in entries)
        self.channel.send_raw(("\n".join(lines) + "\n").encode("utf-8"))
        return "%d files" % len(entries)

    def cmd_get(self, name_token: bytes, offset_token: bytes = b"0") -> str:
        name = decode_name(name_token)
        offset = parse_decimal(offset_token, "offset")
        handle, st = self.library.open_for_read(name)
        with handle:
            if offset > st.st_size:
                raise LibraryError("offset past the end (the file has %d bytes)" % st.st_size)
            length = st.st_size - offset
            header = ("%s %d\n" % (OK, length)).encode("ascii")
            if length <= SMALL_FILE:
                handle.seek(offset)
                data = handle.read(length)
                if len(data) != length:
                    raise EndSession("file changed while being read")
                self.channel.send_raw(header + data)
            else:
                self.channel.send_raw(header)
                try:
                    self.channel.send_file(handle, offset, length)
                except protocol.ShortFile:
                    raise EndSession("file changed while being sent") from None
        return "%s %d bytes from %d" % (name, length, offset)

    def cmd_put(self, name_token: bytes, size_token: bytes) -> str:
        name = decode_name(name_token)
        size = parse_decimal(size_token, "size")
        try:
            self.library.check_upload(name, size)
        except NameTaken:
            self.reply(EXISTS)
            return "%s exists" % name
        upload = self.library.begin_upload()
        try:
            self.reply(OK)
            upload.error = self.channel.read_exact_to_fd(upload.fd, size)
        except (ConnectionLost, ConnectionClosed) as exc:
            upload.abort()
            raise EndSession("upload of %s broken: %s" % (name, exc)) from None
        except BaseException:
            upload.abort()
            raise
        try:
            upload.commit(name)
        except NameTaken:
            self.reply(EXISTS)
            return "%s lost the race" % name
        self.reply("%s %d" % (OK, size))
        return "%s stored %d bytes" % (name, size)

    def cmd_stat(self, name_token: bytes) -> str:
        entry = self.library.stat(decode_name(name_token))
        self.reply("%s %d %d" % (OK, entry.size, entry.mtime))
        return entry.name

    def cmd_hash(self, name_token: bytes) -> str:
        name = decode_name(name_token)
        self.reply("%s sha256 %s" % (OK, self.library.sha256(name)))
        return name

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


def refuse(conn: socket.socket, peer: str, why: str) -> None:
    """Tell a client there is no room (BUSY, instead of the greeting), log why, and close."""
    log.warning("%s refused: %s", peer, why)
    try:
        conn.setblocking(False)
        conn.send((protocol.BUSY + "\n").encode("ascii"))
    except OSError:
        pass
    finally:
        conn.close()


def over_max_per_ip(limit: int, host: str) -> str:
    """The reason a client is refused by --max-per-ip (master and ready processes alike)."""
    return "%d sessions from %s already (max_per_ip)" % (limit, host)


def serve_in_child(sock: socket.socket, peer: str, library: Library, idle_timeout: float) -> None:
    """The body of a forked session process (the caller leaves via os._exit).

    Installs the session's own signal handling: SIGTERM/SIGINT ask it to
    finish the current request and leave (the master forwards a stop; a
    terminal's Ctrl+C reaches the whole process group), SIGHUP is the
    master's business, SIGXFSZ must not kill us mid-upload (EFBIG instead).
    """
    set_process_name(SESSION_NAME)
    stop_r, stop_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    session = Session(sock, peer, library, idle_timeout, stop_fd=stop_r)
    install_child_signals(lambda signum, frame: session.request_stop(), stop_w)
    try:
        session.run()
    except ShelfError as exc:
        log.warning("%s session failed: %s", peer, exc)
    finally:
        sock.close()
