"""The PROXY protocol v2 from a trusted balancer, against the real shelfd.

The "balancer" is this test, connecting from 127.0.0.1 (trusted) and from
127.0.0.2 (not trusted); the client addresses it claims are made up.
"""

from __future__ import annotations

import socket
import struct

import pytest

from daemon.proxy import SIGNATURE, build_header, read_header, ProxyError
from helpers import greeted, wait_for

MODES = [("--prefork", "0"), ("--prefork", "2")]
IDS = ["fork", "prefork"]


def connect(port: int, header: bytes | None, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10,
                                    source_address=(source, 0))
    if header is not None:
        sock.sendall(header)
    return sock


def first_line(sock: socket.socket) -> bytes:
    """The first line the server sent; b"" if it closed (or reset) without one."""
    data = b""
    while b"\n" not in data:
        try:
            chunk = sock.recv(256)
        except ConnectionResetError:  # closed with our bytes unread
            return b""
        if not chunk:
            break
        data += chunk
    return data.split(b"\n")[0]


@pytest.mark.parametrize("mode", MODES, ids=IDS)
def test_the_client_address_comes_from_the_header(daemon_factory, library, mode):
    daemon = daemon_factory(library, "--proxy-protocol", "127.0.0.1", *mode)
    with connect(daemon.port, build_header(("203.0.113.7", 40001))) as sock:
        assert greeted(first_line(sock))
        sock.sendall(b"NOOP\n")
        assert first_line(sock) == b"OK"
    wait_for(lambda: "203.0.113.7:40001 (via 127.0.0.1:" in daemon.log(),
             what="the real address in the log")


@pytest.mark.parametrize("mode", MODES, ids=IDS)
def test_ipv6_clients_and_local_health_checks(daemon_factory, library, mode):
    daemon = daemon_factory(library, "--proxy-protocol", "127.0.0.0/8", *mode)
    with connect(daemon.port, build_header(("2001:db8::5", 5000), ("2001:db8::1", 8021))) as sock:
        assert greeted(first_line(sock))
    with connect(daemon.port, build_header(None)) as sock:  # HAProxy's health check
        assert greeted(first_line(sock))
    wait_for(lambda: "[2001:db8::5]:5000 (via 127.0.0.1:" in daemon.log(),
             what="the IPv6 client in the log")


@pytest.mark.parametrize("mode", MODES, ids=IDS)
def test_a_trusted_balancer_must_send_a_header(daemon_factory, library, mode):
    daemon = daemon_factory(library, "--proxy-protocol", "127.0.0.1", *mode)
    with connect(daemon.port, b"NOOP\nNOOP\nNOOP\nNOOP\n") as sock:  # 20 bytes, no header
        assert first_line(sock) == b""  # closed without a greeting
    bad = bytearray(build_header(("198.51.100.1", 1)))
    bad[12] = 0x31  # version 3
    with connect(daemon.port, bytes(bad)) as sock:
        assert first_line(sock) == b""
    wait_for(lambda: daemon.log().count("PROXY") >= 2, what="both refusals logged")
    with connect(daemon.port, build_header(("198.51.100.1", 1))) as sock:
        assert greeted(first_line(sock))  # and the next good one is served


def test_nobody_else_may_send_a_header(daemon_factory, library):
    daemon = daemon_factory(library, "--proxy-protocol", "127.0.0.1", "--host", "0.0.0.0")
    with connect(daemon.port, None, source="127.0.0.2") as sock:
        assert greeted(first_line(sock))
        sock.sendall(build_header(("203.0.113.9", 9)))  # read as a request, and refused
        assert first_line(sock).startswith(b"FAIL invalid ")
    assert "203.0.113.9" not in daemon.log()


def test_per_address_limits_count_the_real_clients(daemon_factory, library):
    daemon = daemon_factory(library, "--proxy-protocol", "127.0.0.1", "--max-per-ip", "2",
                            "--prefork", "4")
    held = []
    try:
        for port in (1, 2):  # the same client twice: its limit is reached
            sock = connect(daemon.port, build_header(("203.0.113.1", port)))
            assert greeted(first_line(sock))
            held.append(sock)
        with connect(daemon.port, build_header(("203.0.113.1", 3))) as third:
            assert first_line(third) == b"BUSY"
        for port in (4, 5):  # another client behind the same balancer still gets in
            sock = connect(daemon.port, build_header(("203.0.113.2", port)))
            assert greeted(first_line(sock))
            held.append(sock)
    finally:
        for sock in held:
            sock.close()


def test_read_header_takes_exactly_the_header(tmp_path):
    left, right = socket.socketpair()
    with left, right:
        right.sendall(build_header(("192.0.2.1", 1234)) + b"NOOP\n")
        assert read_header(left, 5) == ("192.0.2.1", 1234)
        assert left.recv(16) == b"NOOP\n"
        right.sendall(SIGNATURE + struct.pack("!BBH", 0x21, 0x11, 5000))
        with pytest.raises(ProxyError, match="too long"):
            read_header(left, 5)


def test_logins_behind_a_balancer_count_the_real_client(daemon_factory, library, tmp_path):
    """The ban table and the auth log name the client; a client off loopback needs TLS."""
    from test_accounts import add_user
    users = tmp_path / "users"
    add_user(users, "alice", "correct horse", "rw", "/")
    daemon = daemon_factory(library, "--users", str(users), "--proxy-protocol", "127.0.0.1")
    with connect(daemon.port, build_header(("127.0.0.1", 7001))) as sock:  # a local client
        assert greeted(first_line(sock))
        sock.sendall(b"LOGIN alice wrong\n")
        assert first_line(sock).startswith(b"FAIL denied login refused")
        sock.sendall(b"LOGIN alice correct%20horse\n")
        assert first_line(sock) == b"OK alice rw /"
    with connect(daemon.port, build_header(("203.0.113.7", 7002))) as sock:  # over a network
        assert greeted(first_line(sock))
        sock.sendall(b"LOGIN alice correct%20horse\n")
        assert first_line(sock) == b"FAIL denied login needs TLS"
    wait_for(lambda: "user=alice addr=203.0.113.7" in daemon.log(), what="the refusal's line")
    log = daemon.log()
    assert "auth failed user=alice addr=127.0.0.1" in log
    assert "auth ok user=alice addr=127.0.0.1" in log
