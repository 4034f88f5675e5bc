"""The control session: one worker thread that connects, logs in and lists for the UI.

The Tk thread never waits on the network. It puts jobs on this worker's own
queue (connect, login, list, check, disconnect, stop) and the worker answers with
messages on the app's queue. Two answers need a person: a TLS certificate no CA
vouches for (``TrustQuestion``: the worker waits, inside the handshake, for the
UI to put the answer on the question's own queue; Cancel and quitting wake it)
and a server that wants a LOGIN (``LoginNeeded``: the worker keeps the greeted
session and goes on with the next job, the ``login`` the dialog sends; the
server's one-second delay on a wrong password is spent here, never in Tk). Jobs run in order, over one shelfd session that is
reopened once when it was dropped (idle timeout, server restart). When idle it
says NOOP every ``HEARTBEAT`` seconds, so a server that died or froze shows as
lost instead of "Connected". ``abort()`` (any thread) shuts the socket down, so
Cancel on a connect to a port that never greets, or quitting, never waits.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass

from common.client import ConnectionLost, LoginRefused, RemoteError, ShelfError
from common.trust import KnownServers, Trust, TrustRefused
from gui.engine import Access, Session
from gui.wording import plain_error

log = logging.getLogger("shelf.gui")
CONTROL_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0   # a port that does not greet like shelfd within this is not one
HEARTBEAT = 10.0


ANSWER_POLL = 0.2       # how often a worker waiting for a person checks for Cancel


@dataclass(frozen=True)
class Connected:
    host: str
    port: int
    access: Access = Access()    # TLS, trust and user, for the transfer workers
    permissions: str | None = None  # the grant's letters after a LOGIN (None: anonymous)


@dataclass(frozen=True)
class Listed:
    entries: list
    folder: str = ""             # the library folder listed ("" is the root)


@dataclass(frozen=True)
class LoginNeeded:
    """The server wants a user and password (again, with the server's ``error``)."""
    host: str
    port: int
    user: str = ""
    error: str = ""


@dataclass(frozen=True)
class TrustQuestion:
    """First contact with a certificate no CA vouches for: the UI answers True or False
    on ``answers`` (a queue the worker waits on)."""
    host: str
    port: int
    fingerprint: str
    reason: str
    answers: queue.Queue


@dataclass(frozen=True)
class TrustChanged:
    """A pinned server shows another certificate: refused; the UI warns."""
    host: str
    port: int
    pinned: str
    seen: str
    known_servers: str


@dataclass(frozen=True)
class RemoteFailed:
    """A connect or list failed; ``connected`` says whether the session is still usable."""
    error: str
    connected: bool


@dataclass(frozen=True)
class Disconnected:
    pass


class RemoteWorker:
    """Owns the control Client. ``request_*`` may be called from any thread (they only enqueue)."""

    def __init__(self, post):
        self.post = post
        self.jobs: queue.Queue = queue.Queue()
        self.client: Session | None = None
        self.address: tuple[str, int] | None = None
        self.access = Access()
        self.known_servers = None   # a KnownServers path for tests; None: the user's
        self._sock = None
        self._sock_lock = threading.Lock()
        self._aborted = False
        self.thread = threading.Thread(target=self._run, name="shelf-control", daemon=True)
        self.thread.start()

    # -- any thread ------------------------------------------------------------

    def request_connect(self, host: str, port: int, tls: bool = False,
                        user: str | None = None) -> None:
        with self._sock_lock:
            self._aborted = False  # a Cancel from now on is meant for this connect
        self.jobs.put(("connect", host, port, tls, user))

    def request_login(self, user: str, password: bytes) -> None:
        with self._sock_lock:
            self._aborted = False
        self.jobs.put(("login", user, password))

    def request_list(self, folder: str = "") -> None:
        self.jobs.put(("list", folder))

    def request_disconnect(self) -> None:
        self.jobs.put(("disconnect",))

    def request_check(self) -> None:
        self.jobs.put(("check",))

    def stop(self) -> None:
        self.jobs.put(("stop",))

    def abort(self) -> None:
        """Wake the worker from any socket wait (a connect that never greets, a frozen
        server). May be called from any thread."""
        import socket
        with self._sock_lock:
            self._aborted = True
            if self._sock is not None:
                try:
                    self._sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _adopt(self, sock) -> None:
        with self._sock_lock:
            self._sock = sock
            if self._aborted:
                import socket
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _aborted_now(self) -> bool:
        with self._sock_lock:
            return self._aborted

    def _ask_trust(self, trust: Trust, fingerprint: str) -> bool:
        """Trust's question, asked from this worker: the UI answers. Worker thread."""
        answers: queue.Queue = queue.Queue()
        host, port = self.address
        self.post(TrustQuestion(host, port, fingerprint, trust.unverified_reason, answers))
        while True:
            try:
                return bool(answers.get(timeout=ANSWER_POLL))
            except queue.Empty:
                if self._aborted_now():
                    return False

    def _open(self, timeout: float = CONTROL_TIMEOUT) -> Session:
        session = Session(self.address[0], self.address[1], self._adopt, timeout=timeout,
                          access=self.access)
        session.channel.sock.settimeout(CONTROL_TIMEOUT)
        session.timeout = CONTROL_TIMEOUT
        return session

    # -- the worker thread -------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                job = self.jobs.get(timeout=HEARTBEAT)
            except queue.Empty:
                job = ("check",) if self.client is not None else ("idle",)
            if job[0] == "idle":
                continue
            if job[0] == "list" and self._newer_list_waiting():
                continue  # a burst of refreshes needs only the last one
            try:
                if job[0] == "stop":
                    self._close()
                    return
                getattr(self, "_do_" + job[0])(*job[1:])
            except Exception as exc:  # noqa: BLE001 - the worker must survive anything
                log.exception("control job %s failed", job[0])
                self.post(RemoteFailed("unexpected error: %s" % exc, self.client is not None))

    def _newer_list_waiting(self) -> bool:
        with self.jobs.mutex:
            return any(job[0] == "list" for job in self.jobs.queue)

    def _close(self) -> None:
        client, self.client = self.client, None
        with self._sock_lock:
            self._sock = None
        if client is not None:
            client.close()

    def _do_connect(self, host: str, port: int, tls: bool = False,
                    user: str | None = None) -> None:
        self._close()
        self.address = (host, port)
        trust = None
        if tls:
            trust = Trust(KnownServers(self.known_servers))
            trust.ask = lambda seen: self._ask_trust(trust, seen)
        self.access = Access(tls, None, None, trust)
        try:
            self.client = self._open(CONNECT_TIMEOUT)
        except TrustRefused as exc:
            self.address = None
            if exc.changed:
                known = trust.known
                self.post(TrustChanged(host, port, known.lookup(host, port) or "",
                                       exc.fingerprint or "", known.path))
            self.post(RemoteFailed("cancelled" if self._aborted_now() else
                                   plain_error(str(exc)), False))
            return
        except ShelfError as exc:
            self.address = None
            self.post(RemoteFailed("cancelled" if self._aborted_now() else
                                   plain_error(str(exc)), False))
            return
        if tls:  # decided: the workers never ask, they find the pin in known_servers
            self.access = Access(True, None, None, Trust(trust.known))
        if user is not None or self.client.needs_login:
            self.post(LoginNeeded(host, port, user or ""))
            return
        self.post(Connected(host, port, self.access))
        self._do_list()

    def _do_login(self, user: str, password: bytes) -> None:
        """LOGIN on the greeted session (a new one if the server closed it: it does
        at the third wrong password). A refusal asks again; success is Connected."""
        if self.address is None:
            return
        host, port = self.address
        try:
            if self.client is None or self.client.closed:
                self._close()
                self.client = self._open()
            grant = self.client.login(user, password)
        except (LoginRefused, ConnectionLost) as exc:
            self._close()  # a new session for the next try
            if self._aborted_now():
                self.address = None
                self.post(RemoteFailed("cancelled", False))
                return
            reason = str(exc).removeprefix("login as %s refused by %s:%d: " % (user, host, port))
            if isinstance(exc, ConnectionLost):
                reason = "the server closed the connection; try again"
            self.post(LoginNeeded(host, port, user, plain_error(reason)))
            return
        except ShelfError as exc:
            self._close()
            self.address = None
            self.post(RemoteFailed("cancelled" if self._aborted_now() else
                                   plain_error(str(exc)), False))
            return
        self.access = Access(self.access.tls, user, password, self.access.trust)
        self.post(Connected(host, port, self.access, grant.permissions))
        self._do_list()

    def _do_check(self) -> None:
        """Is the server still there? NOOP, one reconnect, else say it is lost."""
        if self.address is None:
            return
        try:
            if self.client is None:
                self.client = self._open()
            self.client.noop()
            return
        except RemoteError:
            return
        except ShelfError:
            self._close()
        try:
            self.client = self._open()
            self.client.noop()
        except ShelfError as exc:
            self._close()
            self.address = None
            self.post(RemoteFailed("lost the connection to the server (%s)"
                                   % plain_error(str(exc)), False))

    def _do_list(self, folder: str = "") -> None:
        if self.address is None:
            self.post(RemoteFailed("not connected", False))
            return
        try:
            if self.client is None:
                self.client = self._open()
            entries = self.client.list(folder)
        except ConnectionLost:
            self._close()  # dropped (idle timeout, restart): one more try on a new session
            try:
                self.client = self._open()
                entries = self.client.list(folder)
            except ShelfError as exc:
                self._close()
                self.address = None
                self.post(RemoteFailed("lost the connection to the server (%s)"
                                       % plain_error(str(exc)), False))
                return
        except RemoteError as exc:  # the server answered: the session is fine
            self.post(RemoteFailed(str(exc), True))
            return
        except ShelfError as exc:
            self._close()
            self.address = None
            self.post(RemoteFailed(plain_error(str(exc)), False))
            return
        self.post(Listed(entries, folder))

    def _do_disconnect(self) -> None:
        self._close()
        self.address = None
        self.post(Disconnected())
