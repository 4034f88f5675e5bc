"""TLS rows for ``make bench``: Shelf --tls against nginx ``ssl`` with the same certificate.

Runs in the bench's process (transfers) and a process pool (handshakes); every
server on 127.0.0.1. One ECDSA P-256 certificate is made here and given to
both servers, so the figures differ by server, not by key. Measured:

- GET and PUT of the big file (Shelf: ``common.client`` pinned to that
  certificate; nginx: GET over one HTTPS connection, PUT through its DAV
  module), in MB/s of file bytes;
- connections a second from 20 clients, each a TCP connect, a TLS handshake
  and the server's first reply (Shelf's greeting; nginx's answer to a HEAD),
  with a full handshake every time, and resuming the session of the client's
  previous connection (TLS 1.3 tickets: any process of either server can take
  them, since each shares its ticket keys across its workers).

    python -m bench.tls [--quick]     # the table alone
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.servers import Server, Shelf, free_port, wait_port  # noqa: E402

CHUNK = 1 << 20


def make_certificate(folder: str) -> tuple[str, str, str]:
    """(cert, key, fingerprint) of a self-signed certificate for 127.0.0.1 and localhost."""
    from daemon.tls import load_context, make_self_signed

    cert, key = os.path.join(folder, "bench-cert.pem"), os.path.join(folder, "bench-key.pem")
    make_self_signed(cert, key, ["localhost", "127.0.0.1"])
    return cert, key, load_context(cert, key)[1]


class NginxTls(Server):
    kind = "https"

    def __init__(self, folder: str, uploads: str, work: str, cert: str, key: str):
        super().__init__("nginx (ssl)")
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(binary):
            raise RuntimeError("nginx is not installed")
        self.port = free_port()
        prefix = os.path.join(work, "nginx-tls")
        os.makedirs(os.path.join(prefix, "logs"), exist_ok=True)
        for name in ("client_body",):
            os.makedirs(os.path.join(prefix, name), exist_ok=True)
            os.chmod(os.path.join(prefix, name), 0o777)
        conf = os.path.join(prefix, "nginx.conf")
        with open(conf, "w") as handle:
            handle.write("""worker_processes 2; pid %(p)s/nginx.pid; error_log %(p)s/logs/error.log;
events { worker_connections 1024; }
http { access_log off; sendfile on; keepalive_requests 100000;
  client_body_temp_path %(p)s/client_body; client_max_body_size 0;
  ssl_session_cache shared:TLS:10m; ssl_session_tickets on;
  server { listen 127.0.0.1:%(port)d ssl; ssl_certificate %(cert)s; ssl_certificate_key %(key)s;
    ssl_protocols TLSv1.2 TLSv1.3; root %(root)s;
    location /up/ { alias %(up)s/; dav_methods PUT; create_full_put_path off; } } }
""" % {"p": prefix, "port": self.port, "cert": cert, "key": key, "root": folder,
               "up": uploads})
        self.spawn([binary, "-p", prefix, "-c", conf, "-g", "daemon off;"])


def client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


def https_get(port: int, name: str) -> int:
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with client_context().wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(("GET /%s HTTP/1.0\r\nHost: x\r\n\r\n" % name).encode())
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(4096)
            header, rest = head.split(b"\r\n\r\n", 1)
            length = int([line.split(b":")[1] for line in header.split(b"\r\n")
                          if line.lower().startswith(b"content-length")][0])
            total, buffer = len(rest), bytearray(CHUNK)
            while total < length:
                received = sock.recv_into(buffer)
                if not received:
                    break
                total += received
            return total


def https_put(port: int, path: str, name: str) -> int:
    size = os.path.getsize(path)
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with client_context().wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(("PUT /up/%s HTTP/1.0\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                          % (name, size)).encode())
            with open(path, "rb") as handle:
                while True:
                    block = handle.read(CHUNK)
                    if not block:
                        break
                    sock.sendall(block)
            status = sock.recv(4096).split(b" ", 2)[1]
            if status not in (b"201", b"204"):
                raise RuntimeError("nginx PUT answered %s" % status.decode())
    return size


def shelf_get(port: int, fingerprint: str, known: str, name: str) -> int:
    from common.client import Client
    from common.trust import KnownServers, Trust

    class Discard:
        def write(self, data):
            return len(data)

    trust = Trust(known=KnownServers(known), fingerprint=fingerprint)
    with Client("127.0.0.1", port, timeout=60, tls=True, trust=trust) as client:
        return client.get(name, Discard()).length


def shelf_put(port: int, fingerprint: str, known: str, path: str, name: str) -> int:
    from common.client import Client
    from common.trust import KnownServers, Trust

    trust = Trust(known=KnownServers(known), fingerprint=fingerprint)
    with Client("127.0.0.1", port, timeout=60, tls=True, trust=trust) as client:
        with open(path, "rb") as handle:
            return client.put(name, handle, os.path.getsize(path)).size


# -- handshakes ----------------------------------------------------------------------

def first_reply(kind: str, port: int, context: ssl.SSLContext, session):
    """Connect, handshake (resuming ``session`` if given), read the first reply; the session."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        with context.wrap_socket(raw, server_hostname="localhost", session=session) as sock:
            if kind == "shelf":
                data = b""
                while b"\n" not in data:
                    chunk = sock.recv(4096)
                    if not chunk:
                        raise RuntimeError("closed before the greeting")
                    data += chunk
                if not data.startswith(b"READY shelf/2"):
                    raise RuntimeError("busy or broken: %r" % data[:20])
                sock.sendall(b"QUIT\n")
            else:
                sock.sendall(b"HEAD / HTTP/1.0\r\nHost: x\r\n\r\n")
                while sock.recv(4096):
                    pass
            if session is not None and not sock.session_reused:
                raise RuntimeError("not resumed")
            return sock.session


def handshake_worker(args) -> tuple[int, int]:
    kind, port, count, resume = args
    context = client_context()
    session = first_reply(kind, port, context, None) if resume else None
    done = errors = 0
    for _ in range(count):
        try:
            new = first_reply(kind, port, context, session)
            session = new if resume else None
            done += 1
        except Exception:  # noqa: BLE001 - counted, reported
            errors += 1
    return done, errors


def handshake_rate(kind: str, port: int, clients: int, each: int, resume: bool) -> dict:
    with ProcessPoolExecutor(clients) as pool:
        list(pool.map(handshake_worker, [(kind, port, 1, resume)] * clients))  # warm
        started = time.perf_counter()
        results = list(pool.map(handshake_worker, [(kind, port, each, resume)] * clients))
        elapsed = time.perf_counter() - started
    return {"rate": sum(r[0] for r in results) / elapsed, "errors": sum(r[1] for r in results)}


# -- the run ---------------------------------------------------------------------------

def tls_figures(served: str, uploads: str, work: str, big: str, rounds: int, clients: int,
                each: int, missing: list, peers: bool = True) -> dict:
    """The TLS rows: {server: {get_mbps, put_mbps, full_rate, resumed_rate}}."""
    folder = os.path.join(work, "tls")
    os.makedirs(folder, exist_ok=True)
    cert, key, fingerprint = make_certificate(folder)
    known = os.path.join(folder, "known_servers")
    size = os.path.getsize(big)
    name = os.path.basename(big)
    servers = []
    figures = {}
    try:
        shelf = Shelf(served, "Shelf --tls", ["--tls", "--tls-cert", cert, "--tls-key", key])
        servers.append(shelf)
        shelf_up = Shelf(uploads, "Shelf --tls (upload target)",
                         ["--tls", "--tls-cert", cert, "--tls-key", key])
        servers.append(shelf_up)
        nginx = None
        try:
            if peers:
                nginx = NginxTls(served, uploads, work, cert, key)
                servers.append(nginx)
        except Exception as exc:  # noqa: BLE001 - reported as missing, never dropped
            missing.append("nginx ssl: %s" % str(exc).split("\n")[0])
            nginx = None
        gets = {"Shelf --tls": [], "nginx (ssl)": []}
        puts = {"Shelf --tls": [], "nginx (ssl)": []}
        for index in range(rounds):
            started = time.perf_counter()
            assert shelf_get(shelf.port, fingerprint, known, name) == size
            gets["Shelf --tls"].append(time.perf_counter() - started)
            os.sync()
            started = time.perf_counter()
            shelf_put(shelf_up.port, fingerprint, known, big, "tls-up-%d.bin" % index)
            puts["Shelf --tls"].append(time.perf_counter() - started)
            os.unlink(os.path.join(uploads, "tls-up-%d.bin" % index))
            if nginx is not None:
                started = time.perf_counter()
                assert https_get(nginx.port, name) == size
                gets["nginx (ssl)"].append(time.perf_counter() - started)
                os.sync()
                try:
                    started = time.perf_counter()
                    https_put(nginx.port, big, "nginx-up-%d.bin" % index)
                    puts["nginx (ssl)"].append(time.perf_counter() - started)
                    os.unlink(os.path.join(uploads, "nginx-up-%d.bin" % index))
                except Exception as exc:  # noqa: BLE001 - reported
                    missing.append("nginx ssl PUT: %s" % exc)
        for server in gets:
            if not gets[server]:
                continue
            row = figures.setdefault(server, {})
            if gets[server]:
                row["get_mbps"] = size / statistics.median(gets[server]) / 1e6
            if puts[server]:
                row["put_mbps"] = size / statistics.median(puts[server]) / 1e6
        for server, kind, port in (("Shelf --tls", "shelf", shelf.port),
                                   ("nginx (ssl)", "http", nginx.port if nginx else None)):
            if port is None:
                continue
            figures[server]["full"] = handshake_rate(kind, port, clients, each, False)
            figures[server]["resumed"] = handshake_rate(kind, port, clients, each, True)
    finally:
        for server in servers:
            server.stop()
    return {"size": size, "clients": clients, "servers": figures}


def render_tls(report: dict) -> list[str]:
    tls = report.get("tls")
    if not tls or not tls.get("servers"):
        return []
    out = ["", "## TLS: the big file and handshakes (same ECDSA P-256 certificate)", "",
           "GET and PUT of %d MiB in MB/s of file bytes; connections a second from %d clients "
           "(connect, handshake, first reply), full handshakes and resumed ones." % (
               tls["size"] >> 20, tls["clients"]), "",
           "| server | GET MB/s | PUT MB/s | full handshakes/s | resumed handshakes/s |",
           "|---|---|---|---|---|"]

    def cell(row, key, field="rate"):
        value = row.get(key)
        if isinstance(value, dict):
            errors = value.get("errors")
            return "%.0f%s" % (value[field], " (%d errors)" % errors if errors else "")
        return "%.0f" % value if value is not None else "-"

    for name, row in tls["servers"].items():
        out.append("| %s | %s | %s | %s | %s |" % (name, cell(row, "get_mbps"),
                                                   cell(row, "put_mbps"), cell(row, "full"),
                                                   cell(row, "resumed")))
    return out


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.tls")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--size-mib", type=int, help="the big file's size (default 1024)")
    args = parser.parse_args(argv)
    size = (16 << 20) if args.quick else (1 << 30)
    if args.size_mib:
        size = args.size_mib << 20
    clients, each = (4, 10) if args.quick else (20, 25)
    work = tempfile.mkdtemp(prefix="shelf-bench-tls-")
    os.chmod(work, 0o755)  # nginx's workers run as another user
    served, uploads = os.path.join(work, "served"), os.path.join(work, "uploads")
    os.makedirs(served)
    os.makedirs(uploads)
    os.chmod(uploads, 0o777)
    big = os.path.join(served, "big.bin")
    with open(big, "wb") as handle:
        block = os.urandom(CHUNK)
        for _ in range(size // CHUNK):
            handle.write(block)
    missing: list = []
    try:
        figures = tls_figures(served, uploads, work, big, 1 if args.quick else 3, clients,
                              each, missing)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n".join(render_tls({"tls": figures})))
    for line in missing:
        print("missing: %s" % line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
