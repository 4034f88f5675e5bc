"""The control session: one worker thread that connects and lists for the UI.

The Tk thread never waits on the network. It puts jobs on this worker's own
queue (connect, list, check, disconnect, stop) and the worker answers with
messages on the app's queue. Jobs run in order, over one shelfd session that is
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

from common.client import ConnectionLost, RemoteError, ShelfError
from gui.engine import Session
from gui.wording import plain_error

log = logging.getLogger("shelf.gui")
CONTROL_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0   # a port that does not greet like shelfd within this is not one
HEARTBEAT = 10.0


@dataclass(frozen=True)
class Connected:
    host: str
    port: int


@dataclass(frozen=True)
class Listed:
    entries: list


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
        self._sock = None
        self._sock_lock = threading.Lock()
        self._aborted = False
        self.thread = threading.Thread(target=self._run, name="shelf-control", daemon=True)
        self.thread.start()

    # -- any thread ------------------------------------------------------------

    def request_connect(self, host: str, port: int) -> None:
        with self._sock_lock:
            self._aborted = False  # a Cancel from now on is meant for this connect
        self.jobs.put(("connect", host, port))

    def request_list(self) -> None:
        self.jobs.put(("list",))

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

    def _open(self, timeout: float = CONTROL_TIMEOUT) -> Session:
        session = Session(self.address[0], self.address[1], self._adopt, timeout=timeout)
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

    def _do_connect(self, host: str, port: int) -> None:
        self._close()
        self.address = (host, port)
        try:
            self.client = self._open(CONNECT_TIMEOUT)
        except ShelfError as exc:
            self.address = None
            with self._sock_lock:
                aborted = self._aborted
            self.post(RemoteFailed("cancelled" if aborted else plain_error(str(exc)), False))
            return
        self.post(Connected(host, port))
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

    def _do_list(self) -> None:
        if self.address is None:
            self.post(RemoteFailed("not connected", False))
            return
        try:
            if self.client is None:
                self.client = self._open()
            entries = self.client.list()
        except ConnectionLost:
            self._close()  # dropped (idle timeout, restart): one more try on a new session
            try:
                self.client = self._open()
                entries = self.client.list()
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
        self.post(Listed(entries))

    def _do_disconnect(self) -> None:
        self._close()
        self.address = None
        self.post(Disconnected())
