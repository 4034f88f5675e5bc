"""The master process: listen, accept, fork a session per client, reap, stop.

Single-threaded. Signal handlers only put the signal number on a queue; the
wakeup pipe (``signal.set_wakeup_fd``) makes the ``select`` in the main loop
return, and the loop drains the queue and acts: reap on SIGCHLD, reload on
SIGHUP, a graceful stop on SIGTERM/SIGINT.

Each accepted client gets ``os.fork()``: the child closes the listener, serves
the session and can only leave through ``os._exit`` in a ``finally``; the
parent closes its copy of the client socket at once. At ``max_clients`` live
sessions a new client is told ``BUSY`` and closed.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import queue
import selectors
import signal
import socket
import time

from common.protocol import BUSY
from daemon.library import Library
from daemon.session import FORK_BLOCKED, serve_in_child  # once here, not in every child

log = logging.getLogger("shelfd")

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)


class Server:
    """Owns the listening socket and the table of live session processes."""

    def __init__(self, library: Library, settings, listener: socket.socket):
        self.library = library
        self.settings = settings
        self.listener = listener
        self.children: dict[int, str] = {}   # pid -> peer
        self.signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.stopping = False
        self.on_reload = None   # set by the service: re-read config, reopen logs
        self.on_ready = None    # set by the service: PID file, systemd READY=1
        self.on_stopping = None
        self.served = 0
        self.refused = 0
        # --prefork: idle session processes waiting in accept(), and the pipe
        # on which they say when they become busy or idle again.
        self.prefork = settings.prefork
        self.idle: set[int] = set()
        self.stale: set[int] = set()  # started before a reload: replace when idle
        self._status = b""
        self._listening = True

    # -- signals -------------------------------------------------------------

    def _record_signal(self, signum, frame) -> None:
        self.signals.put_nowait(signum)

    def install_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, self._record_signal)
        # SIGXFSZ is ignored so a file-size limit fails a write, never kills.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def _drain_wakeup(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _handle_signals(self) -> None:
        while True:
            try:
                signum = self.signals.get_nowait()
            except queue.Empty:
                return
            if signum in (signal.SIGTERM, signal.SIGINT):
                if not self.stopping:
                    log.info("received %s: stopping", signal.Signals(signum).name)
                    self.stopping = True
            elif signum == signal.SIGHUP:
                log.info("received SIGHUP: reloading")
                if self.on_reload is not None:
                    self.on_reload()
            # SIGCHLD needs nothing here: every pass of the loop reaps.

    # -- the loop ------------------------------------------------------------

    def serve_forever(self) -> None:
        self.listener.setblocking(False)
        self.install_signals()
        selector = selectors.DefaultSelector()
        self.selector = selector
        selector.register(self.listener, selectors.EVENT_READ, "accept")
        selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        if self.prefork:
            self._status_r, self._status_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            selector.register(self._status_r, selectors.EVENT_READ, "status")
        if self.on_ready is not None:
            self.on_ready()
        # Objects made so far never change: keep them out of the collector's
        # reach so forked children do not copy pages just to scan them.
        gc.freeze()
        try:
            while not self.stopping:
                if self.prefork:
                    self._top_up()
                for key, _ in selector.select(timeout=1.0):
                    if key.data == "accept":
                        self._accept_all()
                    elif key.data == "status":
                        self._read_status()
                    else:
                        self._drain_wakeup()
                self._handle_signals()
                self.reap()
        finally:
            selector.close()
        self.stop()

    def _accept_all(self, batch: int = 32) -> None:
        """Accept what is waiting (a bounded batch, so signals are never starved).

        Reaping before each accept keeps the session count exact, so a client
        is never refused for a session that has already ended.
        """
        for _ in range(batch):
            if self.stopping:
                return
            self.reap()
            if self.prefork:
                self._read_status()  # a process may have just become idle: let it take this one
                if self.idle:
                    return
            try:
                conn, address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("cannot accept: %s", exc.strerror)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                raise
            peer = format_peer(address)
            # With --prefork the master accepts only when every process is busy.
            if len(self.children) >= self.settings.max_clients or self.prefork:
                self._refuse(conn, peer)
            else:
                self._fork_session(conn, peer)

    def _refuse(self, conn: socket.socket, peer: str) -> None:
        self.refused += 1
        log.warning("%s refused: %d sessions already (max_clients)", peer, len(self.children))
        try:
            conn.setblocking(False)
            conn.send((BUSY + "\n").encode("ascii"))
        except OSError:
            pass
        finally:
            conn.close()

    def _fork_child(self, what: str, body) -> int | None:
        """Fork a child that runs ``body()``; its pid, or None if fork failed.

        The child drops the master's wakeup pipe (and status pipe) and can
        only leave through ``os._exit`` in a ``finally``.
        """
        try:
            pid = fork_with_stops_blocked()
        except OSError as exc:
            log.error("cannot fork %s: %s", what, exc.strerror)
            return None
        if pid == 0:
            status = 1
            try:
                signal.set_wakeup_fd(-1)
                for fd in (self._wake_r, self._wake_w) + ((self._status_r,) if self.prefork
                                                          else ()):
                    os.close(fd)
                body()
                status = 0
            except BaseException:  # noqa: BLE001 - a child must never return into the loop
                log.exception("%s crashed", what)
            finally:
                os._exit(status)
        return pid

    def _fork_session(self, conn: socket.socket, peer: str) -> None:
        pid = self._fork_child("the session of %s" % peer,
                               lambda: self._become_session(conn, peer))
        if pid is None:
            self._refuse(conn, peer)
            return
        conn.close()
        self.children[pid] = peer
        self.served += 1
        log.info("%s session started (pid %d, %d live)", peer, pid, len(self.children))

    def _become_session(self, conn: socket.socket, peer: str) -> None:
        self.listener.close()
        conn.setblocking(True)
        serve_in_child(conn, peer, self.library, self.settings.idle_timeout)

    # -- pre-forked session processes ------------------------------------------

    def _top_up(self) -> None:
        """Keep ``prefork`` idle processes ready; accept (to refuse) only when all are busy."""
        while (len(self.idle) < self.prefork and len(self.children) < self.settings.max_clients
               and not self.stopping):
            if not self._fork_worker():
                break
        must_refuse = not self.idle and len(self.children) >= self.settings.max_clients
        if must_refuse != self._listening:
            if must_refuse:
                self.selector.register(self.listener, selectors.EVENT_READ, "accept")
            else:
                self.selector.unregister(self.listener)
            self._listening = must_refuse

    def _fork_worker(self) -> bool:
        from daemon.prefork import worker_main
        pid = self._fork_child("a session process", lambda: worker_main(
            self.listener, self._status_w, self.library, self.settings.idle_timeout,
            format_peer))
        if pid is None:
            return False
        self.children[pid] = "idle"
        self.idle.add(pid)
        return True

    def _read_status(self) -> None:
        from daemon.prefork import parse_status
        try:
            while True:
                data = os.read(self._status_r, 65536)
                if not data:
                    break
                self._status += data
        except BlockingIOError:
            pass
        complete, _, self._status = self._status.rpartition(b"\n")
        for kind, pid, peer in parse_status(complete):
            if pid not in self.children:
                continue
            if kind == "B":
                self.idle.discard(pid)
                self.children[pid] = peer
                self.served += 1
                log.info("%s session started (pid %d, %d live)", peer, pid,
                         len(self.children) - len(self.idle))
            else:
                self.children[pid] = "idle"
                self.idle.add(pid)
                # Started before a reload, or the pool grew in a burst to twice the
                # idle processes asked for (the slack keeps steady load from churning).
                if pid in self.stale or len(self.idle) > 2 * self.prefork:
                    self.idle.discard(pid)
                    self._signal(pid, signal.SIGUSR1)

    def retire_workers(self) -> None:
        """After a reload: idle processes go now, busy ones when their session ends."""
        self.stale = set(self.children)
        for pid in list(self.idle):
            self._signal(pid, signal.SIGUSR1)
            self.idle.discard(pid)

    @staticmethod
    def _signal(pid: int, signum: int) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    # -- reaping -------------------------------------------------------------

    def reap(self) -> int:
        """Collect every finished session; return how many. Never blocks."""
        reaped = 0
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            reaped += 1
            peer = self.children.pop(pid, "?")
            self.idle.discard(pid)
            self.stale.discard(pid)
            if self.library.discard_upload_of(pid):
                log.warning("%s removed the unfinished upload of session pid %d", peer, pid)
            if os.WIFSIGNALED(status):
                signame = signal.Signals(os.WTERMSIG(status)).name
                log.warning("%s session pid %d was killed by %s", peer, pid, signame)
            elif os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0:
                log.warning("%s session pid %d exited with status %d",
                            peer, pid, os.WEXITSTATUS(status))
        return reaped

    # -- stopping ------------------------------------------------------------

    def stop(self) -> None:
        """Close the listener, SIGTERM sessions, reap until the grace ends, SIGKILL the rest."""
        self.listener.close()
        self.idle.clear()
        if self.on_stopping is not None:
            self.on_stopping()
        self._signal_children(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.grace
        if self.children:
            log.info("waiting up to %.0f s for %d session processes to finish",
                     self.settings.grace, len(self.children))
        while self.children and time.monotonic() < deadline:
            self.reap()
            if self.children:
                self._wait_for_signal(min(0.2, max(0.0, deadline - time.monotonic())))
        if self.children:
            log.warning("grace period over: killing %d sessions", len(self.children))
            self._signal_children(signal.SIGKILL)
            while self.children:
                try:
                    pid, status = os.waitpid(-1, 0)
                except ChildProcessError:
                    self.children.clear()
                    break
                self.children.pop(pid, None)
                self.library.discard_upload_of(pid)
        self.reap()
        log.info("stopped after %d sessions (%d refused busy)", self.served, self.refused)

    def _signal_children(self, signum: int) -> None:
        for pid in list(self.children):
            self._signal(pid, signum)

    def _wait_for_signal(self, timeout: float) -> None:
        import select

        readable, _, _ = select.select([self._wake_r], [], [], timeout)
        if readable:
            self._drain_wakeup()


def fork_with_stops_blocked() -> int:
    """fork() with the stop signals blocked; the child unblocks them once it can handle them.

    Otherwise a SIGTERM that lands between fork() and the child's own handlers
    would run the master's handler in the child and be lost there.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, FORK_BLOCKED)
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        raise
    if pid:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return pid


def format_peer(address) -> str:
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)
    return str(address)


def open_listener(host: str, port: int, backlog: int = 128) -> socket.socket:
    """Bind and listen; IPv6 literals get an AF_INET6 socket."""
    infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0,
                               socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(False)
    return sock
