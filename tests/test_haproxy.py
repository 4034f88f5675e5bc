"""shelfd behind a real HAProxy (mode tcp, send-proxy-v2, health checks), as a team runs it.

HAProxy (Debian's ``haproxy``; ``make test`` installs it as root) listens on a
port of its own and passes each connection to shelfd with a PROXY v2 header;
its health checks send the LOCAL command and expect shelfd's greeting. The
clients connect from 127.0.0.2 and 127.0.0.3, so shelfd must tell them apart
by the header, not by the balancer's address.
"""

from __future__ import annotations

import shutil
import socket
import subprocess

import pytest

from helpers import greeted, wait_for

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
pytestmark = pytest.mark.skipif(not shutil.os.path.exists(HAPROXY),
                                reason="haproxy is not installed (make test installs it as root)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def balanced(daemon_factory, library, tmp_path):
    """(shelfd, HAProxy's port, its stats socket path)."""
    shelfd = daemon_factory(library, "--proxy-protocol", "127.0.0.1", "--max-per-ip", "2",
                            "--host", "127.0.0.1")
    yield from run_haproxy(shelfd, tmp_path, "")


@pytest.fixture
def balanced_tls(daemon_factory, library, tmp_path):
    """The same with a --tls shelfd: HAProxy passes TLS through, its checks speak it."""
    shelfd = daemon_factory(library, "--proxy-protocol", "127.0.0.1", "--tls",
                            "--state-dir", str(tmp_path / "state"))
    yield from run_haproxy(shelfd, tmp_path, " check-ssl verify none")


def run_haproxy(shelfd, tmp_path, check_options: str):
    port = free_port()
    stats = tmp_path / "haproxy.sock"
    config = tmp_path / "haproxy.cfg"
    config.write_text("""
global
    stats socket %(stats)s level admin
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout check 2s
frontend shelf
    bind 127.0.0.1:%(port)d
    default_backend shelfd
backend shelfd
    option tcp-check
    tcp-check expect rstring ^READY\\ shelf/2
    server one 127.0.0.1:%(shelfd)d send-proxy-v2 check check-send-proxy inter 500ms%(check)s
""" % {"stats": stats, "port": port, "shelfd": shelfd.port, "check": check_options})
    with open(tmp_path / "haproxy.log", "wb") as output:  # read it when a test fails
        proc = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdin=subprocess.DEVNULL,
                                stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: server_status(stats) == "UP", timeout=20,
                 what="HAProxy to see shelfd UP through its health checks")
        yield shelfd, port, stats
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def server_status(stats) -> str | None:
    """The status column of the backend server in ``show stat`` (UP, DOWN, ...)."""
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(stats))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except OSError:
        return None
    lines = data.decode().splitlines()
    header = lines[0].lstrip("# ").split(",")
    for line in lines[1:]:
        row = dict(zip(header, line.split(",")))
        if row.get("pxname") == "shelfd" and row.get("svname") == "one":
            return row.get("status")
    return None


def through(port: int, source: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return sock


def line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data.rstrip(b"\n")


def test_clients_behind_haproxy_are_told_apart(balanced):
    shelfd, port, stats = balanced
    held = []
    try:
        for _ in range(2):
            sock = through(port, "127.0.0.2")
            assert greeted(line(sock))
            sock.sendall(b"NOOP\n")
            assert line(sock) == b"OK"
            held.append(sock)
        with through(port, "127.0.0.2") as third:  # its own limit, not the balancer's
            assert line(third) == b"BUSY"
        other = through(port, "127.0.0.3")
        held.append(other)
        assert greeted(line(other))
    finally:
        for sock in held:
            sock.close()
    log = shelfd.log()
    assert "127.0.0.2:" in log and "(via 127.0.0.1:" in log
    assert "max_per_ip" in log
    assert "PROXY" not in log  # every header HAProxy sent, health checks included, was good
    assert server_status(stats) == "UP"


def test_transfers_through_haproxy(balanced, library):
    shelfd, port, _ = balanced
    import os
    data = os.urandom(3 << 20)
    with through(port, "127.0.0.2") as sock:
        assert greeted(line(sock))
        sock.sendall(b"PUT big.bin %d\n" % len(data))
        assert line(sock).startswith(b"OK ")
        sock.sendall(data)
        assert line(sock).startswith(b"OK %d " % len(data))
    assert (library / "big.bin").read_bytes() == data


def test_tls_through_haproxy(balanced_tls):
    """The PROXY header comes before the TLS handshake; the health checks speak TLS."""
    import ssl
    shelfd, port, stats = balanced_tls
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # trust is tests/test_tls.py's subject
    with context.wrap_socket(through(port, "127.0.0.2"), server_hostname="localhost") as sock:
        greeting = line(sock)
        assert greeted(greeting) and b" tls" in greeting
        sock.sendall(b"NOOP\n")
        assert line(sock) == b"OK"
    wait_for(lambda: "(via 127.0.0.1:" in shelfd.log(), what="the client's own address")
    assert "127.0.0.2:" in shelfd.log() and "PROXY" not in shelfd.log()
    assert server_status(stats) == "UP"
