"""A burst of clients, then idle sessions: greeting times and memory per session.

One client process drives every socket without blocking (a selector), so the
client is not what is measured: N sockets connect at once, each waits for its
greeting, sends a NOOP and waits for the answer, then all stay idle while the
server's process tree is measured (unique memory, USS, summed over its
processes), then all send QUIT and the time until every one is closed is taken.
"""

from __future__ import annotations

import os
import selectors
import socket
import time

# How each kind of server says it is full, and how it is asked for a no-op.
BUSY = {"shelf": b"BUSY", "ftp": b"421"}
NOOP = {"shelf": b"NOOP\n", "ftp": b"NOOP\r\n"}
QUIT = {"shelf": b"QUIT\n", "ftp": b"QUIT\r\n"}


def tree(pid: int) -> list[int]:
    """The process and all its descendants."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in os.listdir("/proc/%d/task" % current):
                with open("/proc/%d/task/%s/children" % (current, task)) as handle:
                    todo.extend(int(child) for child in handle.read().split())
        except OSError:
            pass
    return found


def uss_kib(pid: int) -> int:
    """Unique set size: the pages only this process maps."""
    total = 0
    try:
        with open("/proc/%d/smaps_rollup" % pid) as handle:
            for line in handle:
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    total += int(line.split()[1])
    except OSError:
        pass
    return total


def tree_uss(pid: int) -> tuple[int, int]:
    pids = tree(pid)
    return sum(uss_kib(p) for p in pids), len(pids)


def settle(pid: int, timeout: float = 5.0) -> None:
    """Wait until the server's process count stops changing (bounded)."""
    deadline = time.monotonic() + timeout
    count = len(tree(pid))
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = len(tree(pid))
        if now == count:
            return
        count = now


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def burst(kind: str, port: int, pid: int, clients: int, timeout: float = 20.0) -> dict:
    """Connect ``clients`` sockets at once; greeting times, then USS per idle session."""
    settle(pid)  # a pool of ready processes is part of the idle server
    idle_uss, idle_processes = tree_uss(pid)
    selector = selectors.DefaultSelector()
    socks: dict[socket.socket, dict] = {}
    started = time.perf_counter()
    for _ in range(clients):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        socks[sock] = {"buffer": b"", "state": "greeting", "ready": None}
        selector.register(sock, selectors.EVENT_READ)
    ready_times, busy, closed = [], 0, 0
    deadline = started + timeout
    waiting = clients
    while waiting and time.perf_counter() < deadline:
        for key, _ in selector.select(timeout=0.2):
            sock, state = key.fileobj, socks[key.fileobj]
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            if not data:
                selector.unregister(sock)
                closed += 1
                waiting -= 1
                state["state"] = "closed"
                continue
            state["buffer"] += data
            if b"\n" not in state["buffer"]:
                continue
            line, _, state["buffer"] = state["buffer"].partition(b"\n")
            if state["state"] == "greeting":
                if line.startswith(BUSY[kind]):
                    busy += 1
                    waiting -= 1
                    state["state"] = "busy"
                    selector.unregister(sock)
                    continue
                ready_times.append(time.perf_counter() - started)
                state["state"] = "noop"
                sock.setblocking(True)
                sock.sendall(NOOP[kind])
                sock.setblocking(False)
            elif state["state"] == "noop":  # any answer: the session is live and idle now
                state["state"] = "idle"
                waiting -= 1
                selector.unregister(sock)
    never = sum(1 for state in socks.values() if state["state"] in ("greeting", "noop"))
    idle = [sock for sock, state in socks.items() if state["state"] == "idle"]
    # Let late children settle (a fork in progress), then measure.
    time.sleep(0.5)
    loaded_uss, processes = tree_uss(pid)
    per_session = (loaded_uss - idle_uss) / len(idle) if idle else None
    quit_started = time.perf_counter()
    for sock in idle:
        sock.setblocking(True)
        try:
            sock.sendall(QUIT[kind])
        except OSError:
            pass
    for sock in idle:
        sock.settimeout(timeout)
        try:
            while sock.recv(4096):
                pass
        except OSError:
            pass
    all_quit = time.perf_counter() - quit_started
    selector.close()
    for sock in socks:
        sock.close()
    return {"clients": clients, "ready": len(ready_times), "busy": busy, "never": never,
            "closed_early": closed, "p50_ms": _ms(percentile(ready_times, 0.5)),
            "p99_ms": _ms(percentile(ready_times, 0.99)),
            "last_ms": _ms(max(ready_times) if ready_times else None),
            "uss_per_session_kib": per_session, "idle_uss_kib": idle_uss,
            "processes": processes, "idle_processes": idle_processes,
            "all_quit_ms": _ms(all_quit)}


def _ms(seconds):
    return None if seconds is None else 1000 * seconds


def burst_figures(servers, sizes=(10, 100, 300)) -> dict:
    """The burst table (the largest size) and USS against session count, per server."""
    figures = {}
    for server in servers:
        rows = {}
        for size in sizes:
            try:
                rows[size] = burst(server.kind, server.port, server.proc.pid, size)
            except OSError as exc:
                rows[size] = {"error": str(exc)}
        figures[server.name] = rows
    return figures
