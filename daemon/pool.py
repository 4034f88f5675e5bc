"""Pre-forked session processes (``--prefork N``), as Apache's prefork does.

A fresh process per session costs a fork and an exit on the critical path
of every connection, and with a 15 MB master most of that is copying pages
on write. With ``--prefork N`` the master keeps N idle session processes
ready; each one accepts a connection itself, serves that one session, and
then waits for the next, up to ``SESSIONS_PER_PROCESS`` sessions before it
exits and the master replaces it. There is still exactly one process per
live session, and never more than ``--max-clients`` processes.

Worker side (this module's ``worker_main``, in the forked child): a loop of
poll, accept, tell the master ``B <pid> <peer>``, serve, tell it ``I <pid>``.
SIGTERM stops it (after the current request); SIGUSR1 retires it (it takes no
new session, but one it has just accepted is served whole), which is how the
master shrinks the pool and replaces processes after a reload without racing
an accept.
The status lines go through one pipe (writes under PIPE_BUF are atomic).
Master side: ``daemon.server.Server`` reads them, keeps its idle set topped
up, and accepts only to say ``BUSY`` when every allowed process is busy.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket

from common.protocol import ShelfError
from daemon.grant import Library
from daemon.session import (READY_NAME, SESSION_NAME, Session, install_child_signals,
                            over_max_per_ip, refuse, set_process_name)

log = logging.getLogger("shelfd")

SESSIONS_PER_PROCESS = 1000
PR_SET_PDEATHSIG = 1


def worker_main(listener: socket.socket, status_fd: int, library: Library, settings,
                format_peer, peers, slot: int | None, master: int) -> None:
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
        peer = format_peer(address)
        if not peers.claim(slot, address[0], settings.max_per_ip):
            refuse(conn, peer, over_max_per_ip(settings.max_per_ip, address[0]))
            continue
        set_process_name(SESSION_NAME)
        os.write(status_fd, ("B %d %s\n" % (pid, peer)).encode("utf-8"))
        conn.setblocking(True)
        session = Session(conn, peer, library, settings.idle_timeout, stop_fd=stop_r)
        state["session"] = session
        try:
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
