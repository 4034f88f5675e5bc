"""The control session: one worker thread that connects and lists for the UI.

The Tk thread never waits on the network. It puts jobs on this worker's own
queue (connect, list, disconnect, stop) and the worker answers with messages
on the app's queue. Jobs run in order, over one shelfd session that is
reopened once when it was dropped (idle timeout, server restart).
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass

from common.client import Client, ConnectionLost, RemoteError, ShelfError

log = logging.getLogger("shelf.gui")
CONTROL_TIMEOUT = 10.0


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
        self.client: Client | None = None
        self.address: tuple[str, int] | None = None
        self.thread = threading.Thread(target=self._run, name="shelf-control", daemon=True)
        self.thread.start()

    # -- any thread ------------------------------------------------------------

    def request_connect(self, host: str, port: int) -> None:
        self.jobs.put(("connect", host, port))

    def request_list(self) -> None:
        self.jobs.put(("list",))

    def request_disconnect(self) -> None:
        self.jobs.put(("disconnect",))

    def stop(self) -> None:
        self.jobs.put(("stop",))

    # -- the worker thread -------------------------------------------------------

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
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
        if self.client is not None:
            self.client.close()
            self.client = None

    def _do_connect(self, host: str, port: int) -> None:
        self._close()
        self.address = (host, port)
        try:
            self.client = Client(host, port, timeout=CONTROL_TIMEOUT)
        except ShelfError as exc:
            self.address = None
            self.post(RemoteFailed(str(exc), False))
            return
        self.post(Connected(host, port))
        self._do_list()

    def _do_list(self) -> None:
        if self.address is None:
            self.post(RemoteFailed("not connected", False))
            return
        try:
            if self.client is None:
                self.client = Client(*self.address, timeout=CONTROL_TIMEOUT)
            entries = self.client.list()
        except ConnectionLost:
            self._close()  # dropped (idle timeout, restart): one more try on a new session
            try:
                self.client = Client(*self.address, timeout=CONTROL_TIMEOUT)
                entries = self.client.list()
            except ShelfError as exc:
                self._close()
                self.post(RemoteFailed("connection lost: %s" % exc, False))
                return
        except RemoteError as exc:  # the server answered: the session is fine
            self.post(RemoteFailed(str(exc), True))
            return
        except ShelfError as exc:
            self._close()
            self.post(RemoteFailed(str(exc), False))
            return
        self.post(Listed(entries))

    def _do_disconnect(self) -> None:
        self._close()
        self.address = None
        self.post(Disconnected())
