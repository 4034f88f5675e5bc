"""The server's seam: listeners, each with its handler, under one set of limits.

A real ``daemon.server.Server`` runs in a subprocess (this file run as a
script) with two listeners: the Shelf protocol's ``ShelfHandler``, and a
trivial handler that says ``HELLO <peer>``, holds the connection until the
client leaves or the server stops, and refuses with ``NO``. Both serve;
``--max-clients`` and ``--max-per-ip`` count the sessions of both listeners
together, and each listener refuses in its own way; SIGTERM stops both.

Clients come from 127.0.0.1, 127.0.0.2 and 127.0.0.3 (all loopback on Linux)
so that the per-address limit and the global one can be told apart.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import TIMEOUT, Raw, greeted, process_children, python_env, wait_for


class HelloHandler:
    """The trivial second protocol: a line of greeting, then wait to be left."""

    name = "hello"

    def session(self, conn: socket.socket, peer: str, stop_fd: int) -> "Hello":
        return Hello(conn, peer, stop_fd)

    def refuse(self, conn: socket.socket, peer: str, why: str) -> None:
        conn.send(b"NO\n")


class Hello:
    def __init__(self, conn: socket.socket, peer: str, stop_fd: int):
        self.conn, self.peer, self.stop_fd = conn, peer, stop_fd
        self.stopping = False

    def request_stop(self) -> None:
        self.stopping = True

    def run(self) -> None:
        self.conn.sendall(b"HELLO %s\n" % self.peer.encode("ascii"))
        while not self.stopping:
            readable, _, _ = select.select([self.conn, self.stop_fd], [], [])
            if self.stopping or (self.conn in readable and not self.conn.recv(4096)):
                return
            if self.stop_fd in readable:
                os.read(self.stop_fd, 4096)  # a signal that was not a stop


def serve(root: str, ports_file: str, *options: str) -> None:
    """The subprocess: one Server, a Shelf listener and a hello listener, on ports 0."""
    from daemon import service
    from daemon.grant import Library
    from daemon.server import Server, open_listener
    from daemon.session import ShelfHandler
    from daemon.store import Store

    settings = service.merge_settings(service.build_parser().parse_args(
        ["--root", root, "--host", "127.0.0.1", "--port", "0", *options]))
    service.configure_logging(settings)
    library = Library(Store(settings.root))
    library.configure(settings)
    shelf, hello = open_listener("127.0.0.1", 0), open_listener("127.0.0.1", 0)
    server = Server([(shelf, ShelfHandler(library, lambda: server.settings)),
                     (hello, HelloHandler())], settings)

    def on_ready():
        with open(ports_file + ".tmp", "w") as handle:
            handle.write("%d %d\n" % (shelf.getsockname()[1], hello.getsockname()[1]))
        os.rename(ports_file + ".tmp", ports_file)

    server.on_ready = on_ready
    server.serve_forever()


class From(Raw):
    """A connection from a chosen loopback address."""

    def __init__(self, port: int, source: str, greet: bool = False):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT,
                                             source_address=(source, 0))
        self.buffer = b""
        self.greeting = self.line() if greet else None

    def hello_line(self) -> str:
        return "HELLO %s:%d" % self.sock.getsockname()[:2]


class TwoListeners:
    def __init__(self, tmp_path: Path, *options: str):
        root = tmp_path / "library"
        root.mkdir()
        self.log_path = tmp_path / "shelfd.log"
        ports = tmp_path / "ports"
        self.proc = subprocess.Popen(
            [sys.executable, __file__, str(root), str(ports), "--log-file", str(self.log_path),
             *options], env=python_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        wait_for(lambda: ports.exists() or self.proc.poll() is not None, what="the server")
        assert self.proc.poll() is None, "the server exited with %s" % self.proc.returncode
        self.shelf_port, self.hello_port = map(int, ports.read_text().split())
        self.clients: list[Raw] = []

    def log(self) -> str:
        return self.log_path.read_text()

    def shelf(self, source: str) -> From:
        self.clients.append(From(self.shelf_port, source))
        return self.clients[-1]

    def hello(self, source: str) -> From:
        self.clients.append(From(self.hello_port, source))
        return self.clients[-1]

    def children(self) -> list[int]:
        return process_children(self.proc.pid)

    def children_holding(self, port: int) -> list[int]:
        """Child processes with the listening socket of ``port`` among their descriptors."""
        listening = set()
        with open("/proc/net/tcp") as table:
            for row in table.read().splitlines()[1:]:
                fields = row.split()
                if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
                    listening.add("socket:[%s]" % fields[9])
        holding = []
        for pid in self.children():
            try:
                names = {os.readlink("/proc/%d/fd/%s" % (pid, fd))
                         for fd in os.listdir("/proc/%d/fd" % pid)}
            except OSError:  # gone meanwhile
                continue
            if names & listening:
                holding.append(pid)
        return holding

    def close(self) -> None:
        for client in self.clients:
            client.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def two_listeners(tmp_path):
    started = []

    def start(*options: str) -> TwoListeners:
        started.append(TwoListeners(tmp_path, *options))
        return started[-1]

    yield start
    for server in started:
        server.close()


def stop_and_check_both_end(server: TwoListeners, held: list[From]) -> None:
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=15) == 0
    for client in held:
        assert client.closed_by_peer()
    assert "grace period over" not in server.log()  # the hello session honoured the stop too


def test_two_listeners_share_the_limits_and_refuse_their_own_way(two_listeners):
    server = two_listeners("--prefork", "0", "--max-clients", "3", "--max-per-ip", "2")
    shelf = server.shelf("127.0.0.1")
    assert greeted(shelf.line())
    hello = server.hello("127.0.0.1")
    assert hello.line() == hello.hello_line()

    # Two sessions from 127.0.0.1, one per listener: a third is refused on either.
    assert server.hello("127.0.0.1").line() == "NO"
    assert server.shelf("127.0.0.1").line() == "BUSY"
    assert server.log().count("(max_per_ip)") == 2

    other = server.shelf("127.0.0.2")
    assert greeted(other.line())
    # Three sessions in all: max_clients, whichever listener is asked.
    assert server.hello("127.0.0.2").line() == "NO"
    assert server.shelf("127.0.0.3").line() == "BUSY"
    assert server.log().count("(max_clients)") == 2
    assert server.log().count("session started") == 3
    # A session process holds no listener: neither its own listener's nor the other's.
    assert server.children_holding(server.shelf_port) == []
    assert server.children_holding(server.hello_port) == []

    assert other.request("NOOP") == "OK"
    stop_and_check_both_end(server, [shelf, hello, other])


def test_two_listeners_with_a_pool_on_the_first(two_listeners):
    server = two_listeners("--prefork", "1", "--max-clients", "3", "--max-per-ip", "2")
    wait_for(lambda: len(server.children()) == 1, what="the ready process")
    shelf = server.shelf("127.0.0.1")  # served by the ready process
    assert greeted(shelf.line())
    wait_for(lambda: len(server.children()) == 2, what="the pool to be topped up")
    hello = server.hello("127.0.0.1")  # forked by the master: the second listener has no pool
    assert hello.line() == hello.hello_line()
    wait_for(lambda: len(server.children()) == 3, what="the hello session process")

    # Three processes (a ready one counts): the hello listener refuses its own way.
    assert server.hello("127.0.0.2").line() == "NO"
    assert "(max_clients)" in server.log()
    # The ready process sees the hello session in the shared table: 127.0.0.1 has two.
    assert server.shelf("127.0.0.1").line() == "BUSY"
    assert "(max_per_ip)" in server.log()

    other = server.shelf("127.0.0.2")
    assert greeted(other.line())
    assert server.shelf("127.0.0.3").line() == "BUSY"  # every allowed process is busy
    # The pool's processes keep the first listener only; the hello session, none.
    assert len(server.children_holding(server.shelf_port)) == 2
    assert server.children_holding(server.hello_port) == []

    assert other.request("NOOP") == "OK"
    stop_and_check_both_end(server, [shelf, hello, other])


if __name__ == "__main__":
    serve(*sys.argv[1:])
