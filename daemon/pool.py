"""Ready session processes for one listener (``--prefork N``), as Apache's prefork does.

A fresh process per session costs a fork and an exit on the critical path
of every connection, and with a 15 MB master most of that is copying pages
on write. With ``--prefork N`` the master keeps N idle session processes
ready; each one accepts a connection itself, serves that one session, and
then waits for the next, up to ``SESSIONS_PER_PROCESS`` sessions before it
exits and the master replaces it. There is still exactly one process per
live session, and never more than ``--max-clients`` processes.

Two sides, two processes:

- ``Pool`` lives in the single-threaded master. The ``Server`` delegates to
  it (top up, trim idle, retire, read the status pipe, forget a reaped pid)
  and it calls back into the ``Server`` to fork and to count live processes,
  so ``--max-clients`` spans the pool and every other listener. The master
  polls the pooled listener only to refuse, when every allowed process is busy.
- ``worker_main`` runs in each forked ready process: a loop of poll, accept,
  tell the master ``B <pid> <peer>``, serve through the listener's handler,
  tell it ``I <pid>``. SIGTERM stops it (after the current request); SIGUSR1
  retires it (it takes no new session, but one it has just accepted is
  served whole), which is how the master shrinks the pool and replaces
  processes after a reload without racing an accept. The status lines go
  through one pipe (writes under PIPE_BUF are atomic).

One pool serves one listener. The server pools only its first listener and
forks a process per client on the others: the simplest design that keeps one
``--prefork`` setting meaning what it says; a later listener that wants ready
processes of its own gets a second ``Pool`` (and its ``PeerTable`` would then
be shared, as it is already with the forked sessions of other listeners).
"""

from __future__ import annotations

import logging
import os
import select
import selectors
import signal
import socket
import time

from common.protocol import ShelfError
from daemon.sessionlog import session_log
from daemon.session import (READY_NAME, SESSION_NAME, format_peer, install_child_signals,
                            over_max_per_ip, set_process_name, turn_away)

log = logging.getLogger("shelfd")

SESSIONS_PER_PROCESS = 1000
PR_SET_PDEATHSIG = 1


class Pool:
    """The ready processes of one listener; master side, driven by ``Server``."""

    IDLE_RETIRE = 15.0  # seconds a surplus ready process waits before it is retired

    def __init__(self, server, listener: socket.socket, handler, size: int):
        self.server = server
        self.listener = listener
        self.handler = handler
        self.size = size
        self.idle: set[int] = set()
        self.stale: set[int] = set()  # started before a reload: replace when idle
        self.idle_since: dict[int, float] = {}
        self.leaving: set[int] = set()  # ready processes told to retire: they serve nobody
        # Who each process serves, shared with them all (--max-per-ip). The
        # server also gives a row to a session it forks for another listener.
        self.peers = PeerTable(server.settings.max_clients)
        self.slots: dict[int, int] = {}  # pid -> its row in the peer table
        self.status_r = self.status_w = -1
        self._status = b""

    def open(self, selector) -> None:
        """Make the status pipe and let the master's loop watch it."""
        self.status_r, self.status_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        selector.register(self.status_r, selectors.EVENT_READ, "status")

    def top_up(self) -> None:
        """Keep ``size`` idle processes ready; poll the listener (to refuse) only when all are busy."""
        server = self.server
        while (len(self.idle) < self.size and server.live() < server.settings.max_clients
               and not server.stopping):
            if not self._fork_worker():
                break
        must_refuse = (not self.idle and server.live() >= server.settings.max_clients
                       and not server.accept_paused_until)  # out of descriptors: wait
        server.poll_listener(self.listener, must_refuse)

    def _fork_worker(self) -> bool:
        slot = self.peers.take()
        master = os.getpid()
        pid = self.server.fork_child("a session process", lambda: self._become_worker(slot, master))
        if pid is None:
            self.peers.give_back(slot)
            return False
        self.server.children[pid] = "idle"
        self.idle.add(pid)
        self.idle_since[pid] = time.monotonic()
        self.slots[pid] = slot
        return True

    def _become_worker(self, slot: int | None, master: int) -> None:
        self.server.close_listeners(keep=self.listener)
        worker_main(self.listener, self.status_w, self.handler, self.server.settings.max_per_ip,
                    self.peers, slot, master)

    def read_status(self) -> None:
        """Drain the status pipe: who became busy (and for whom), who is idle again."""
        try:
            while True:
                data = os.read(self.status_r, 65536)
                if not data:
                    break
                self._status += data
        except BlockingIOError:
            pass
        complete, _, self._status = self._status.rpartition(b"\n")
        children = self.server.children
        for kind, pid, peer in parse_status(complete):
            if pid not in children:
                continue
            if kind == "B":  # (also a retiring process that had just accepted)
                self.idle.discard(pid)
                self.leaving.discard(pid)
                children[pid] = peer
                self.server.served += 1
                session_log.info("%s session started (pid %d, %d live)", peer, pid,
                                 len(children) - len(self.idle))
            else:
                children[pid] = "idle"
                self.idle.add(pid)
                self.idle_since[pid] = time.monotonic()
                if pid in self.stale:  # started before a reload: its settings are old
                    self._retire(pid)

    def trim_idle(self) -> None:
        """Retire ready processes beyond ``size`` that have been idle a while.

        A burst grows the pool at once; it shrinks back slowly, oldest idle
        first, so steady load never pays for a fork per session (churn).
        """
        surplus = len(self.idle) - self.size
        if surplus <= 0:
            return
        cutoff = time.monotonic() - self.IDLE_RETIRE
        for pid in sorted(self.idle, key=lambda p: self.idle_since.get(p, 0.0))[:surplus]:
            if self.idle_since.get(pid, 0.0) > cutoff:
                break
            self._retire(pid)

    def retire_all(self) -> None:
        """After a reload: idle processes go now, busy ones when their session ends."""
        self.stale = set(self.server.children)  # only pool processes ever report idle
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
        try:
            os.kill(pid, signal.SIGUSR1)
        except ProcessLookupError:
            pass

    def forget(self, pid: int) -> None:
        """Drop a reaped process (or a forked session that had a row) from every table."""
        self.idle.discard(pid)
        self.stale.discard(pid)
        self.leaving.discard(pid)
        self.idle_since.pop(pid, None)
        slot = self.slots.pop(pid, None)
        if slot is not None:
            self.peers.give_back(slot)


def worker_main(listener: socket.socket, status_fd: int, handler, max_per_ip: int,
                peers, slot: int | None, master: int) -> None:
    """Serve sessions one after another until stopped or worn out (caller _exits)."""
    stop_r, stop_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    state = {"stopping": False, "retiring": False, "session": None}

    def on_stop(signum, frame):
        state["stopping"] = True
        if state["session"] is not None:
            state["session"].request_stop()

    def on_retire(signum, frame):
        # Not a stop: a session this process has just accepted is served whole.
        # The listener goes at once, so a new master can bind the port while
        # an orphaned process still finishes its session.
        state["retiring"] = True
        listener.close()

    install_child_signals(on_stop, stop_w, on_retire)
    leave_with_master(master)
    set_process_name(READY_NAME)
    poller = ready_poller(listener, stop_r)
    pid = os.getpid()
    served = 0
    while not state["stopping"] and served < SESSIONS_PER_PROCESS:
        if state["retiring"]:
            break
        poller.poll()
        if state["stopping"] or state["retiring"]:
            break
        try:
            conn, address = listener.accept()  # the listener is non-blocking: we may lose
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            continue
        except OSError as exc:
            if state["retiring"] or state["stopping"]:
                break
            log.error("cannot accept: %s", exc.strerror)
            poller.poll(0.5)  # out of descriptors: let the master see it, do not spin
            continue
        peer, host = format_peer(address), address[0]
        # A trusted balancer's connections are counted by the client's address,
        # which its PROXY header gives: read below, once this process says busy.
        proxied = host in (getattr(handler, "proxies", None) or ())
        if not proxied and not peers.claim(slot, host, max_per_ip):
            turn_away(handler, conn, peer, over_max_per_ip(max_per_ip, host))
            continue
        set_process_name(SESSION_NAME)
        os.write(status_fd, ("B %d %s\n" % (pid, peer)).encode("utf-8"))
        conn.setblocking(True)
        try:
            if proxied:
                peer = admit_proxied(handler, conn, peer, host, peers, slot, max_per_ip)
            if peer is not None:
                session = handler.session(conn, peer, stop_r)
                state["session"] = session
                session.run()
        except ShelfError as exc:
            log.warning("%s session failed: %s", peer, exc)
        finally:
            state["session"] = None
            conn.close()
            peers.clear(slot)
        served += 1
        set_process_name(READY_NAME)
        if not (state["stopping"] or state["retiring"]) and served < SESSIONS_PER_PROCESS:
            os.write(status_fd, b"I %d\n" % pid)


def admit_proxied(handler, conn: socket.socket, peer: str, host: str, peers, slot,
                  max_per_ip: int) -> str | None:
    """Read a trusted balancer's PROXY header and count the client by its own address.

    The client's peer string, or None when it was turned away (a bad header,
    or --max-per-ip reached for the real address).
    """
    from daemon.proxy import ProxyError, unwrap

    try:
        peer, host = unwrap(handler, conn, peer, host)
    except ProxyError as exc:
        log.warning("%s refused: %s", peer, exc)
        return None
    if not peers.claim(slot, host, max_per_ip):
        turn_away(handler, conn, peer, over_max_per_ip(max_per_ip, host))
        return None
    return peer


def ready_poller(listener: socket.socket, stop_fd: int):
    """Wait for a client or a stop; of all ready processes, the kernel wakes one.

    EPOLLEXCLUSIVE: without it, every idle process wakes for every new
    client and all but one find nothing to accept (a thundering herd that
    costs a context switch per idle process per session).
    """
    poller = select.epoll()
    poller.register(listener.fileno(), select.EPOLLIN | getattr(select, "EPOLLEXCLUSIVE", 0))
    poller.register(stop_fd, select.EPOLLIN)
    return poller


def _load_prctl():
    """prctl(2) through ctypes, loaded once in the master (not in every child)."""
    try:
        import ctypes
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_prctl = _load_prctl()


def leave_with_master(master: int) -> None:
    """Ask the kernel for SIGUSR1 (retire) when the master dies, as Apache's workers do.

    An orphaned process would otherwise keep accepting on the port and
    drop clients that no master counts.
    """
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGUSR1, 0, 0, 0)
    if os.getppid() != master:  # it died before we asked
        os.kill(os.getpid(), signal.SIGUSR1)


def parse_status(data: bytes):
    """Yield (kind, pid, peer) from the status pipe's lines."""
    for line in data.decode("utf-8", "replace").splitlines():
        parts = line.split(" ", 2)
        if len(parts) >= 2 and parts[0] in ("B", "I") and parts[1].isdigit():
            yield parts[0], int(parts[1]), parts[2] if len(parts) > 2 else ""


class PeerTable:
    """Who each session process serves, in memory shared by all of them.

    A row per process holds the 16-byte address of its client (IPv4 mapped
    into IPv6), or zeros when idle. A process that accepts a client writes
    its row first and counts the rows with the same address second, so two
    clients of one address accepted at once can both be refused, never both
    let past ``--max-per-ip``. The master hands out and takes back the rows
    (and claims one itself for a session it forks for another listener).
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
