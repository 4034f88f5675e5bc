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

from common.protocol import ShelfError
from daemon.grant import Grant, Library
from daemon.sessionlog import session_log
from daemon.store import Store
# Imported here once, not in every child:
from daemon.session import (FORK_BLOCKED_NUMBERS, JANITOR_NAME, MASTER_NAME, over_max_per_ip,
                            refuse, serve_in_child, set_process_name)

log = logging.getLogger("shelfd")

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)


class Server:
    """Owns the listening socket and the table of live session processes."""

    def __init__(self, library: Library, settings, listener: socket.socket):
        self.library = library
        self.settings = settings
        self.listener = listener
        self.children: dict[int, str] = {}   # pid -> peer
        self.hosts: dict[int, str] = {}      # pid -> the peer's address (fork mode)
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
        self.idle_since: dict[int, float] = {}
        self.leaving: set[int] = set()  # ready processes told to retire: they serve nobody
        self._status = b""
        self._listening = True
        self.master_fds: list[int] = []  # set by the service (the PID file): never a child's
        self.peers = PeerTable(settings.max_clients) if settings.prefork else None
        self.slots: dict[int, int] = {}  # prefork pid -> its row in the peer table
        self._accept_paused_until = 0.0
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
        self.listener.setblocking(False)
        self.install_signals()
        selector = selectors.DefaultSelector()
        self.selector = selector
        selector.register(self.listener, selectors.EVENT_READ, "accept")
        selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        if self.prefork:
            self._status_r, self._status_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            selector.register(self._status_r, selectors.EVENT_READ, "status")
        set_process_name(MASTER_NAME)
        warm_up()  # before "listening" is said: a supervisor sees a settled master
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
                if self.prefork:
                    self._trim_idle()
                    self._top_up()
                for key, _ in selector.select(timeout=self._select_timeout()):
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

    CLEANUP_EVERY = 600.0  # seconds between two runs of the library's housekeeping

    def _start_cleanup(self) -> None:
        """Fork the clean-up child when it is due and none is running."""
        if self.cleanup is None or self.janitor is not None:
            return
        now = time.monotonic()
        if now < self.next_cleanup:
            return
        self.next_cleanup = now + self.CLEANUP_EVERY
        self.janitor = self._fork_child("the clean-up", self._become_janitor)

    def _become_janitor(self) -> None:
        self.listener.close()
        set_process_name(JANITOR_NAME)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        _signal.pthread_sigmask(SIG_SETMASK, [])
        self.cleanup()

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
                    self._pause_accepting(exc)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                raise
            peer = format_peer(address)
            # With --prefork the master accepts only when every process is busy.
            if self.live() >= self.settings.max_clients or self.prefork:
                self._refuse(conn, peer, "%d sessions already (max_clients)" % self.live())
            elif self._sessions_from(address[0]) >= self.settings.max_per_ip:
                self._refuse(conn, peer, over_max_per_ip(self.settings.max_per_ip, address[0]))
            else:
                self._fork_session(conn, peer, address[0])

    def _sessions_from(self, host: str) -> int:
        return sum(1 for peer_host in self.hosts.values() if peer_host == host)

    # -- running out of descriptors -------------------------------------------

    ACCEPT_PAUSE = 0.5     # seconds without accepting after EMFILE and the like
    ERROR_LOG_EVERY = 10.0  # seconds between two log lines about it

    def _pause_accepting(self, exc: OSError) -> None:
        """Out of descriptors or memory: stop polling the listener for a moment.

        Otherwise the listener stays readable and the loop spins, logging a
        line per pass. Clients wait in the backlog meanwhile.
        """
        now = time.monotonic()
        self._accept_errors += 1
        if now - self._accept_error_logged >= self.ERROR_LOG_EVERY:
            log.error("cannot accept: %s (%d times since the last report); pausing accept "
                      "for %.1f s at a time", exc.strerror, self._accept_errors, self.ACCEPT_PAUSE)
            self._accept_error_logged = now
            self._accept_errors = 0
        self._accept_paused_until = now + self.ACCEPT_PAUSE
        if self._listening:
            self.selector.unregister(self.listener)
            self._listening = False

    def _resume_accepting(self) -> None:
        """After a pause: poll the listener again (with --prefork, _top_up decides)."""
        if self._accept_paused_until and time.monotonic() >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            if not self._listening and not self.prefork:
                self.selector.register(self.listener, selectors.EVENT_READ, "accept")
                self._listening = True

    def _select_timeout(self) -> float:
        if self._accept_paused_until:
            return max(0.01, min(1.0, self._accept_paused_until - time.monotonic()))
        return 1.0

    def _refuse(self, conn: socket.socket, peer: str, why: str) -> None:
        self.refused += 1
        refuse(conn, peer, why)

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
        if self.prefork:
            fds.append(self._status_r)
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def _fork_session(self, conn: socket.socket, peer: str, host: str) -> None:
        pid = self._fork_child("the session of %s" % peer,
                               lambda: self._become_session(conn, peer))
        if pid is None:
            self._refuse(conn, peer, "cannot start a session process")
            return
        conn.close()
        self.children[pid] = peer
        self.hosts[pid] = host
        self.served += 1
        # The direct writer: each page the master touches between two forks is
        # copied for the earlier child, and logging touches many.
        session_log.info("%s session started (pid %d, %d live)", peer, pid, len(self.children))

    def _become_session(self, conn: socket.socket, peer: str) -> None:
        self.listener.close()
        conn.setblocking(True)
        serve_in_child(conn, peer, self.library, self.settings.idle_timeout)

    # -- pre-forked session processes ------------------------------------------

    def _top_up(self) -> None:
        """Keep ``prefork`` idle processes ready; accept (to refuse) only when all are busy."""
        while (len(self.idle) < self.prefork and self.live() < self.settings.max_clients
               and not self.stopping):
            if not self._fork_worker():
                break
        must_refuse = (not self.idle and self.live() >= self.settings.max_clients
                       and not self._accept_paused_until)  # out of descriptors: wait
        if must_refuse != self._listening:
            if must_refuse:
                self.selector.register(self.listener, selectors.EVENT_READ, "accept")
            else:
                self.selector.unregister(self.listener)
            self._listening = must_refuse

    def _fork_worker(self) -> bool:
        from daemon.prefork import worker_main
        slot = self.peers.take()
        master = os.getpid()
        pid = self._fork_child("a session process", lambda: worker_main(
            self.listener, self._status_w, self.library, self.settings, format_peer,
            self.peers, slot, master))
        if pid is None:
            self.peers.give_back(slot)
            return False
        self.children[pid] = "idle"
        self.idle.add(pid)
        self.idle_since[pid] = time.monotonic()
        self.slots[pid] = slot
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
            if kind == "B":  # (also a retiring process that had just accepted)
                self.idle.discard(pid)
                self.leaving.discard(pid)
                self.children[pid] = peer
                self.served += 1
                session_log.info("%s session started (pid %d, %d live)", peer, pid,
                         len(self.children) - len(self.idle))
            else:
                self.children[pid] = "idle"
                self.idle.add(pid)
                self.idle_since[pid] = time.monotonic()
                if pid in self.stale:  # started before a reload: its settings are old
                    self._retire(pid)

    IDLE_RETIRE = 15.0  # seconds a surplus ready process waits before it is retired

    def _trim_idle(self) -> None:
        """Retire ready processes beyond ``prefork`` that have been idle a while.

        A burst grows the pool at once; it shrinks back slowly, oldest idle
        first, so steady load never pays for a fork per session (churn).
        """
        surplus = len(self.idle) - self.prefork
        if surplus <= 0:
            return
        cutoff = time.monotonic() - self.IDLE_RETIRE
        for pid in sorted(self.idle, key=lambda p: self.idle_since.get(p, 0.0))[:surplus]:
            if self.idle_since.get(pid, 0.0) > cutoff:
                break
            self._retire(pid)

    def retire_workers(self) -> None:
        """After a reload: idle processes go now, busy ones when their session ends."""
        self.stale = set(self.children)
        for pid in list(self.idle):
            self._retire(pid)

    def _retire(self, pid: int) -> None:
        """Tell a ready process to take no new session and leave (SIGUSR1).

        Until it is reaped it no longer counts against --max-clients: it
        serves nobody, and a client arriving meanwhile (just after a reload
        that lowered the limit, say) must not be told BUSY because of it.
        """
        self.idle.discard(pid)
        self.leaving.add(pid)
        self._signal(pid, signal.SIGUSR1)

    def live(self) -> int:
        """Processes that count against --max-clients (those leaving do not)."""
        return len(self.children) - len(self.leaving)

    @staticmethod
    def _signal(pid: int, signum: int) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    # -- reaping -------------------------------------------------------------

    def forget(self, pid: int) -> str:
        """Drop a reaped child from every table; its peer."""
        self.idle.discard(pid)
        self.stale.discard(pid)
        self.leaving.discard(pid)
        self.idle_since.pop(pid, None)
        self.hosts.pop(pid, None)
        slot = self.slots.pop(pid, None)
        if slot is not None:
            self.peers.give_back(slot)
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
        """Close the listener, SIGTERM sessions, reap until the grace ends, SIGKILL the rest."""
        self.listener.close()
        self.idle.clear()
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


WARM_UP_SCRIPT = (b"NOOP\nLIST\nLIST f\nSTAT a.txt\nGET a.txt\nGET a.txt 1\nHASH a.txt\n"
                  b"STAT f/b.txt\nSTAT .x\nBOGUS\nNOOP\nQUIT\n")


def warm_up(rounds: int = 8) -> None:
    """Run a few sessions in the master, over socket pairs, before the first fork.

    CPython 3.11 specialises bytecode as it runs it, writing into the code
    objects: if every child did that on its own, each would copy the pages
    of every code object on its path. Run once here, the pages stay shared.
    The sessions serve a one-file read-only library in a temporary folder of
    their own and log to /dev/null; where no such folder can be made, nothing
    is warmed (only slower).
    """
    from daemon.session import Session

    folder = os.path.join(os.environ.get("TMPDIR") or "/tmp", ".shelfd-warm-up-%d" % os.getpid())
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
        _remove_folder(folder)
        return
    saved = (session_log.fd, session_log.render, session_log.level)
    sink = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    session_log.direct(sink, saved[1] or (lambda *line: " ".join(map(str, line))),
                       logging.DEBUG)
    try:
        for _ in range(rounds):
            ours, theirs = socket.socketpair()
            with ours, theirs:
                theirs.sendall(WARM_UP_SCRIPT)
                Session(ours, "(warm-up)", library, 5.0).run()
    except (OSError, ShelfError):
        pass  # only slower
    finally:
        session_log.direct(*saved)
        os.close(sink)
        library.store.close()
        _remove_folder(folder)


def _remove_folder(folder: str) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


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


class PeerTable:
    """Who each pre-forked session process serves, in memory shared by all of them.

    A row per process holds the 16-byte address of its client (IPv4 mapped
    into IPv6), or zeros when idle. A process that accepts a client writes
    its row first and counts the rows with the same address second, so two
    clients of one address accepted at once can both be refused, never both
    let past ``--max-per-ip``. The master hands out and takes back the rows.
    """

    ROW = 16

    def __init__(self, rows: int):
        import mmap
        self.rows = max(rows, 1024)
        self.memory = mmap.mmap(-1, self.rows * self.ROW)  # MAP_SHARED | MAP_ANONYMOUS
        self.free = list(range(self.rows - 1, -1, -1))

    def take(self) -> int | None:
        return self.free.pop() if self.free else None

    def give_back(self, row: int | None) -> None:
        if row is not None:
            self.clear(row)
            self.free.append(row)

    def clear(self, row: int | None) -> None:
        if row is not None:
            self.memory[row * self.ROW:(row + 1) * self.ROW] = bytes(self.ROW)

    def claim(self, row: int | None, host: str, limit: int) -> bool:
        """Record that ``row`` serves ``host``; False (and cleared) past ``limit``."""
        if row is None:
            return True
        key = address_key(host)
        memory = self.memory
        memory[row * self.ROW:(row + 1) * self.ROW] = key
        count = 0
        found = memory.find(key)
        while found >= 0:  # a search in C; only matches on a row boundary count
            count += found % self.ROW == 0
            found = memory.find(key, found + 1)
        if count > limit:
            self.clear(row)
            return False
        return True


def address_key(host: str) -> bytes:
    try:
        return socket.inet_pton(socket.AF_INET6, host)
    except OSError:
        try:
            return b"\0" * 10 + b"\xff\xff" + socket.inet_pton(socket.AF_INET, host)
        except OSError:
            return (host.encode("utf-8", "replace") + b"\0" * 16)[:16]


def format_peer(address) -> str:
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)
    return str(address)


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
