"""The master process: listeners, each with its handler; accept, fork, reap, stop.

Single-threaded. Signal handlers only put the signal number on a queue; the
wakeup pipe (``signal.set_wakeup_fd``) makes the ``select`` in the main loop
return, and the loop drains the queue and acts: reap on SIGCHLD, reload on
SIGHUP, a graceful stop on SIGTERM/SIGINT.

The server owns a list of listening sockets, each paired with a ``Handler``
that says what a client of that socket is served and how it is refused. A
client accepted by the master gets ``os.fork()``: the child closes every
listener, serves the session and can only leave through ``os._exit`` in a
``finally``; the parent closes its copy of the client socket at once. With
``--prefork`` the first listener's clients are accepted by ready processes
instead (``daemon.pool``, to which the server delegates), and the master
accepts there only to refuse. ``--max-clients`` and ``--max-per-ip`` count
the sessions of every listener together; a client over a limit is refused
in its own listener's way.
"""

from __future__ import annotations

import _signal
import errno
import gc
import logging
import os
import queue
import selectors
import signal
import socket
import time
from typing import Protocol

from daemon.pool import Pool
from daemon.sessionlog import session_log
# Imported here once, not in every child:
from daemon.session import (FORK_BLOCKED_NUMBERS, JANITOR_NAME, MASTER_NAME, format_peer,
                            over_max_per_ip, serve_in_child, set_process_name, turn_away)

log = logging.getLogger("shelfd")

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)


class Handler(Protocol):
    """What a listener serves: ``daemon.session.ShelfHandler`` for the Shelf protocol.

    Built in the master before the first fork. ``session`` runs in a session
    process (forked per client, or a ready one of the pool) and returns an
    object whose ``run()`` serves until the session is over and whose
    ``request_stop()``, called from a signal handler, makes ``run`` return
    after the current request; ``stop_fd`` becomes readable on every signal,
    so a session that waits should watch it. ``refuse`` tells a client there
    is no room (the caller logs why and closes the socket), in the master or
    in a ready process. An optional ``warm_up()`` runs in the master before
    the first fork, so the children share the code it warms.
    """

    name: str

    def session(self, conn: socket.socket, peer: str, stop_fd: int): ...

    def refuse(self, conn: socket.socket, peer: str, why: str) -> None: ...


class Server:
    """Owns the listening sockets and the table of live session processes."""

    def __init__(self, listeners: list[tuple[socket.socket, Handler]], settings):
        if not listeners:
            raise ValueError("a server needs at least one listener")
        self.listeners = list(listeners)
        self.settings = settings
        self.children: dict[int, str] = {}   # pid -> peer (every process but the janitor)
        self.hosts: dict[int, str] = {}      # pid -> the peer's address (forked, no pool)
        self.signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.stopping = False
        self.on_reload = None   # set by the service: re-read config, reopen logs
        self.on_ready = None    # set by the service: PID file, systemd READY=1
        self.on_stopping = None
        self.served = 0
        self.refused = 0
        self.master_fds: list[int] = []  # set by the service (the PID file): never a child's
        # --prefork: the first listener's ready processes (see daemon.pool).
        self.prefork = settings.prefork
        self.pool = Pool(self, *self.listeners[0], settings.prefork) if settings.prefork else None
        self.polled: set[socket.socket] = set()  # listeners the loop watches now
        self.accept_paused_until = 0.0
        self._accept_errors = 0
        self._accept_error_logged = 0.0
        # The library's housekeeping (expired trash and kept uploads) runs in a
        # short-lived child of its own, so the master never waits on a disk.
        self.cleanup = None      # set by the service: the body of that child
        self.janitor: int | None = None
        self.next_cleanup = 0.0  # monotonic time of the next run (0: once ready)

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
                self.next_cleanup = 0.0  # retention times may have changed
                if self.on_reload is not None:
                    try:
                        self.on_reload()
                    except Exception:  # noqa: BLE001 - a reload must never end the master
                        log.exception("reload failed; the running settings stay")
            # SIGCHLD needs nothing here: every pass of the loop reaps.

    # -- the loop ------------------------------------------------------------

    def serve_forever(self) -> None:
        self.install_signals()
        selector = selectors.DefaultSelector()
        self.selector = selector
        for listener, handler in self.listeners:
            listener.setblocking(False)
            if self.pool is None or listener is not self.pool.listener:
                self.poll_listener(listener, True)
        selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        if self.pool is not None:
            self.pool.open(selector)
        set_process_name(MASTER_NAME)
        # Before "listening" is said: a supervisor sees a settled master.
        for handler in {id(handler): handler for _, handler in self.listeners}.values():
            if hasattr(handler, "warm_up"):
                handler.warm_up()
        trim_fork_hooks()
        if self.on_ready is not None:
            self.on_ready()
        # Objects made so far never change: keep them out of the collector's
        # reach so forked children do not copy pages just to scan them.
        gc.collect()
        gc.freeze()
        try:
            while not self.stopping:
                self._start_cleanup()
                self._resume_accepting()
                if self.pool is not None:
                    self.pool.trim_idle()
                    self.pool.top_up()
                for key, _ in selector.select(timeout=self._select_timeout()):
                    if key.data == "wake":
                        self._drain_wakeup()
                    elif key.data == "status":
                        self.pool.read_status()
                    else:
                        self._accept_all(key.fileobj, key.data)
                self._handle_signals()
                self.reap()
        finally:
            selector.close()
        self.stop()

    def poll_listener(self, listener: socket.socket, wanted: bool) -> None:
        """Watch a listener in the loop, or stop watching it."""
        if wanted == (listener in self.polled):
            return
        if wanted:
            handler = next(handler for sock, handler in self.listeners if sock is listener)
            self.selector.register(listener, selectors.EVENT_READ, handler)
            self.polled.add(listener)
        else:
            self.selector.unregister(listener)
            self.polled.discard(listener)

    def close_listeners(self, keep: socket.socket | None = None) -> None:
        """Close every listener (in a child: all of them but the one it accepts on)."""
        for listener, _ in self.listeners:
            if listener is not keep:
                listener.close()

    CLEANUP_EVERY = 600.0  # seconds between two runs of the library's housekeeping

    def _start_cleanup(self) -> None:
        """Fork the clean-up child when it is due and none is running."""
        if self.cleanup is None or self.janitor is not None:
            return
        now = time.monotonic()
        if now < self.next_cleanup:
            return
        self.next_cleanup = now + self.CLEANUP_EVERY
        self.janitor = self.fork_child("the clean-up", self._become_janitor)

    def _become_janitor(self) -> None:
        self.close_listeners()
        set_process_name(JANITOR_NAME)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        _signal.pthread_sigmask(SIG_SETMASK, [])
        self.cleanup()

    def _accept_all(self, listener: socket.socket, handler: Handler, batch: int = 32) -> None:
        """Accept what is waiting (a bounded batch, so signals are never starved).

        Reaping before each accept keeps the session count exact, so a client
        is never refused for a session that has already ended.
        """
        pooled = self.pool is not None and listener is self.pool.listener
        for _ in range(batch):
            if self.stopping:
                return
            self.reap()
            if pooled:
                self.pool.read_status()  # a process may have just become idle: let it take this one
                if self.pool.idle:
                    return
            try:
                conn, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._pause_accepting(exc)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                raise
            peer = format_peer(address)
            # On the pooled listener the master accepts only when every process is busy.
            if self.live() >= self.settings.max_clients or pooled:
                self._refuse(handler, conn, peer,
                             "%d sessions already (max_clients)" % self.live())
            else:
                self._admit(handler, conn, peer, address[0])

    def _admit(self, handler: Handler, conn: socket.socket, peer: str, host: str) -> None:
        """Fork a session unless ``host`` already has ``--max-per-ip`` of them.

        With a pool, its shared table counts the sessions of every listener,
        so a forked session takes a row there too; without one, ``hosts`` does.
        A session forked for a trusted balancer's connection is not counted
        by address: with a pool, the ready processes count those clients by
        their real address; with a fresh fork per session (--prefork 0), the
        balancer's own per-source limits are the only ones.
        """
        limit = self.settings.max_per_ip
        if host in (getattr(handler, "proxies", None) or ()):
            # A trusted balancer: its clients are told apart by their PROXY headers,
            # read in the session process (the master never waits on a client).
            self._fork_session(handler, conn, peer)
            return
        if self.pool is None:
            if sum(1 for peer_host in self.hosts.values() if peer_host == host) >= limit:
                self._refuse(handler, conn, peer, over_max_per_ip(limit, host))
                return
            pid = self._fork_session(handler, conn, peer)
            if pid is not None:
                self.hosts[pid] = host
            return
        peers = self.pool.peers
        slot = peers.take()
        if not peers.claim(slot, host, limit):
            peers.give_back(slot)
            self._refuse(handler, conn, peer, over_max_per_ip(limit, host))
            return
        pid = self._fork_session(handler, conn, peer)
        if pid is None:
            peers.give_back(slot)
        elif slot is not None:
            self.pool.slots[pid] = slot

    # -- running out of descriptors -------------------------------------------

    ACCEPT_PAUSE = 0.5     # seconds without accepting after EMFILE and the like
    ERROR_LOG_EVERY = 10.0  # seconds between two log lines about it

    def _pause_accepting(self, exc: OSError) -> None:
        """Out of descriptors or memory: stop polling the listeners for a moment.

        Otherwise a listener stays readable and the loop spins, logging a
        line per pass. Clients wait in the backlog meanwhile.
        """
        now = time.monotonic()
        self._accept_errors += 1
        if now - self._accept_error_logged >= self.ERROR_LOG_EVERY:
            log.error("cannot accept: %s (%d times since the last report); pausing accept "
                      "for %.1f s at a time", exc.strerror, self._accept_errors, self.ACCEPT_PAUSE)
            self._accept_error_logged = now
            self._accept_errors = 0
        self.accept_paused_until = now + self.ACCEPT_PAUSE
        for listener in list(self.polled):
            self.poll_listener(listener, False)

    def _resume_accepting(self) -> None:
        """After a pause: poll the listeners again (the pooled one: its pool decides)."""
        if self.accept_paused_until and time.monotonic() >= self.accept_paused_until:
            self.accept_paused_until = 0.0
            for listener, _ in self.listeners:
                if self.pool is None or listener is not self.pool.listener:
                    self.poll_listener(listener, True)

    def _select_timeout(self) -> float:
        if self.accept_paused_until:
            return max(0.01, min(1.0, self.accept_paused_until - time.monotonic()))
        return 1.0

    def _refuse(self, handler: Handler, conn: socket.socket, peer: str, why: str) -> None:
        self.refused += 1
        turn_away(handler, conn, peer, why)

    # -- forking -------------------------------------------------------------

    def fork_child(self, what: str, body) -> int | None:
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
                self._drop_master_fds()
                body()
                status = 0
            except BaseException:  # noqa: BLE001 - a child must never return into the loop
                log.exception("%s crashed", what)
            finally:
                os._exit(status)
        return pid

    def _drop_master_fds(self) -> None:
        """In a child: close what only the master may hold.

        The PID file's lock must die with the master (or a crashed master
        could not be replaced while a session lives), and the epoll and
        signal pipes are the master's loop.
        """
        fds = [self._wake_r, self._wake_w, self.selector.fileno(), *self.master_fds]
        if self.pool is not None:
            fds.append(self.pool.status_r)
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def _fork_session(self, handler: Handler, conn: socket.socket, peer: str) -> int | None:
        pid = self.fork_child("the session of %s" % peer,
                              lambda: self._become_session(handler, conn, peer))
        if pid is None:
            self._refuse(handler, conn, peer, "cannot start a session process")
            return None
        conn.close()
        self.children[pid] = peer
        self.served += 1
        # The direct writer: each page the master touches between two forks is
        # copied for the earlier child, and logging touches many.
        session_log.info("%s session started (pid %d, %d live)", peer, pid, len(self.children))
        return pid

    def _become_session(self, handler: Handler, conn: socket.socket, peer: str) -> None:
        self.close_listeners()
        conn.setblocking(True)
        serve_in_child(handler, conn, peer)

    # -- the pool's part -----------------------------------------------------

    def retire_workers(self) -> None:
        """After a reload: replace the ready processes, which hold the old settings."""
        if self.pool is not None:
            self.pool.retire_all()

    def live(self) -> int:
        """Processes that count against --max-clients (ready ones told to leave do not)."""
        return len(self.children) - (len(self.pool.leaving) if self.pool is not None else 0)

    @staticmethod
    def _signal(pid: int, signum: int) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    # -- reaping -------------------------------------------------------------

    def forget(self, pid: int) -> str:
        """Drop a reaped child from every table; its peer."""
        self.hosts.pop(pid, None)
        if self.pool is not None:
            self.pool.forget(pid)
        return self.children.pop(pid, "?")

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
            if pid == self.janitor:
                self.janitor = None
                if os.WIFSIGNALED(status) or os.WEXITSTATUS(status):
                    log.warning("the clean-up process pid %d failed", pid)
                continue
            peer = self.forget(pid)
            if os.WIFSIGNALED(status):
                log.warning("%s session pid %d was killed by %s", peer, pid,
                            signal_name(os.WTERMSIG(status)))
            elif os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0:
                log.warning("%s session pid %d exited with status %d",
                            peer, pid, os.WEXITSTATUS(status))
        return reaped

    # -- stopping ------------------------------------------------------------

    def stop(self) -> None:
        """Close the listeners, SIGTERM sessions, reap until the grace ends, SIGKILL the rest."""
        self.close_listeners()
        if self.pool is not None:
            self.pool.idle.clear()
        if self.on_stopping is not None:
            self.on_stopping()
        if self.janitor is not None:
            self._signal(self.janitor, signal.SIGTERM)
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
                self.forget(pid)
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
    would run the master's handler in the child and be lost there. (Through
    ``_signal``: see ``install_child_signals``; every page the master touches
    between two forks ends up as a private page of the earlier child.)
    """
    previous = _signal.pthread_sigmask(SIG_BLOCK, FORK_BLOCKED_NUMBERS)
    try:
        pid = os.fork()
    except BaseException:
        _signal.pthread_sigmask(SIG_SETMASK, previous)
        raise
    if pid:
        _signal.pthread_sigmask(SIG_SETMASK, previous)
    return pid


SIG_BLOCK, SIG_SETMASK = int(signal.SIG_BLOCK), int(signal.SIG_SETMASK)


def trim_fork_hooks() -> None:
    """Make the standard library's after-fork work in each child as small as it can be.

    ``threading`` and ``logging`` register Python callbacks that run in every
    forked child to repair the bookkeeping of *other* threads (their locks,
    their Thread objects). The master never starts a thread, so there is
    nothing to repair, yet running them copied about 300-480 KiB of pages
    into each session process (measured with 40 children, USS summed; see
    docs/performance.md). So, while the master is single-threaded:

    - threading's callback does nothing;
    - logging's only re-creates its module lock, which its before-fork
      callback took in the master (handler locks are never held at a fork:
      the one thread is not inside a handler then).

    Applied only where those callbacks exist under these names (CPython
    3.8-3.12); elsewhere nothing changes.
    """
    import threading

    after_threading = getattr(threading, "_after_fork", None)
    after_logging = getattr(logging, "_after_at_fork_child_reinit_locks", None)
    if threading.active_count() != 1 or after_threading is None or after_logging is None \
            or not hasattr(logging, "_lock"):
        return
    nothing: dict = {}
    exec("def after_fork():\n    pass\n"
         "def reinit_module_lock():\n    _lock._at_fork_reinit()\n", nothing)
    after_threading.__code__ = nothing["after_fork"].__code__
    after_logging.__code__ = nothing["reinit_module_lock"].__code__  # _lock: logging's


def signal_name(signum: int) -> str:
    """SIGTERM, or SIGRTMIN+6 for a real-time signal the enum does not name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        if signal.SIGRTMIN <= signum <= signal.SIGRTMAX:
            return "SIGRTMIN+%d" % (signum - signal.SIGRTMIN)
        return "signal %d" % signum


def open_listener(host: str, port: int, backlog: int = 1024) -> socket.socket:
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
