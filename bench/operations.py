"""One operation against any server (Shelf, the limit, HTTP, FTP), with one receiver."""

from __future__ import annotations

import ftplib
import http.client
import io
import os
import socket
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

from bench.servers import Server
from common.client import Client

CHUNK = 1 << 20


# -- one operation against any server ---------------------------------------------

def recv_all(sock, count=None, sink=None) -> int:
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    total = 0
    while count is None or total < count:
        received = sock.recv_into(buffer, CHUNK if count is None else min(CHUNK, count - total))
        if not received:
            break
        if sink is not None:
            sink.write(view[:received])
        total += received
    return total


def download(server, name: str, sink=None) -> int:
    """Fetch one file with a recv_into receiver; return bytes."""
    if server.kind == "limit":
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            return recv_all(sock, sink=sink)
    if server.kind == "shelf":
        with Client("127.0.0.1", server.port, timeout=60) as client:
            return client.get(name, sink or Discard()).length
    if server.kind == "http":
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(("GET /%s HTTP/1.0\r\nHost: x\r\n\r\n" % name).encode())
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(4096)
            header, rest = head.split(b"\r\n\r\n", 1)
            length = int([line.split(b":")[1] for line in header.split(b"\r\n")
                          if line.lower().startswith(b"content-length")][0])
            if sink is not None:
                sink.write(rest)
            return len(rest) + recv_all(sock, length - len(rest), sink)
    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", server.port, timeout=60)
    ftp.login()
    ftp.voidcmd("TYPE I")
    with ftp.transfercmd("RETR " + name) as data:
        total = recv_all(data, sink=sink)
    ftp.voidresp()
    ftp.quit()
    return total


def upload(server, path: str, name: str) -> int:
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        if server.kind == "limit":
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                sock.sendfile(handle)
                sock.shutdown(socket.SHUT_WR)
                sock.recv(16)  # "done": the receiver wrote everything
            return size
        if server.kind == "shelf":
            with Client("127.0.0.1", server.port, timeout=120) as client:
                return client.put(name, handle, size).size
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", server.port, timeout=120)
        ftp.login()
        ftp.voidcmd("TYPE I")
        with ftp.transfercmd("STOR " + name) as data:
            data.sendfile(handle)
        ftp.voidresp()
        ftp.quit()
        return size


class Discard:
    def write(self, data):
        return len(data)


def small_files(server, names) -> float:
    """Seconds to fetch every name over one session (HTTP keep-alive where the server has it)."""
    started = time.perf_counter()
    if server.kind == "shelf":
        with Client("127.0.0.1", server.port, timeout=60) as client:
            for name in names:
                client.get(name, io.BytesIO())
    elif server.kind == "http":
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        for name in names:
            conn.request("GET", "/" + name)
            response = conn.getresponse()
            response.read()
            if response.getheader("Connection", "").lower() == "close" or \
                    response.version == 10:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        conn.close()
    else:
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", server.port, timeout=60)
        ftp.login()
        for name in names:
            ftp.retrbinary("RETR " + name, lambda data: None)
        ftp.quit()
    return time.perf_counter() - started


def list_folder(server, folder: str) -> int:
    """List one folder of the library once; the number of entries the server sent."""
    if server.kind == "shelf":
        with Client("127.0.0.1", server.port, timeout=120) as client:
            return len(client.list(folder))
    if server.kind == "http":
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        conn.request("GET", "/%s/" % folder)
        body = conn.getresponse().read()
        conn.close()
        return body.count(b'<a href="') - body.count(b'<a href="../"')  # nginx links ".."
    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", server.port, timeout=120)
    ftp.login()
    lines = []
    ftp.retrlines("LIST " + folder, lines.append)
    ftp.quit()
    return len(lines)


def one_session(kind: str, port: int) -> None:
    if kind == "shelf":
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            reader = sock.makefile("rb")
            if not reader.readline().startswith(b"READY shelf/2"):
                raise RuntimeError("busy or broken")
            sock.sendall(b"LIST\n")
            reply = reader.readline()
            for _ in range(int(reply.split()[1]) if reply.startswith(b"OK") else 0):
                reader.readline()
            sock.sendall(b"QUIT\n")
            reader.close()
    elif kind == "http":
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("HEAD", "/big.bin")
        conn.getresponse().read()
        conn.close()
    else:
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", port, timeout=30)
        ftp.login()
        ftp.pwd()
        ftp.quit()


def session_worker(args) -> tuple[list, int]:
    kind, port, count = args
    latencies, errors = [], 0
    for _ in range(count):
        started = time.perf_counter()
        try:
            one_session(kind, port)
            latencies.append(time.perf_counter() - started)
        except Exception:  # noqa: BLE001 - counted, reported
            errors += 1
    return latencies, errors


def session_rate(server, clients: int, each: int) -> dict:
    with ProcessPoolExecutor(clients) as pool:
        list(pool.map(session_worker, [(server.kind, server.port, 1)] * clients))  # warm
        started = time.perf_counter()
        results = list(pool.map(session_worker, [(server.kind, server.port, each)] * clients))
        elapsed = time.perf_counter() - started
    latencies = sorted(lat for result in results for lat in result[0])
    errors = sum(result[1] for result in results)
    return {"rate": len(latencies) / elapsed, "errors": errors,
            "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
            "p99_ms": 1000 * latencies[int(len(latencies) * 0.99) - 1] if latencies else None}


def concurrent_downloads(server, name: str, clients: int, size: int) -> dict:
    with ProcessPoolExecutor(min(clients, 64)) as pool:
        started = time.perf_counter()
        sizes = list(pool.map(download_worker, [(server.kind, server.port, name)] * clients))
        elapsed = time.perf_counter() - started
    errors = sum(1 for got in sizes if got != size)
    return {"gbps": sum(sizes) / elapsed / 1e9, "errors": errors}


def download_worker(args) -> int:
    kind, port, name = args
    server = Server("worker")
    server.kind, server.port = kind, port
    try:
        return download(server, name)
    except Exception:  # noqa: BLE001 - counted as an error by the caller
        return -1


def timed(function, *args) -> float:
    if function is upload:
        os.sync()  # every upload starts with no dirty pages left by the one before
    started = time.perf_counter()
    result = function(*args)
    elapsed = time.perf_counter() - started
    expected = getattr(function, "expected", None)
    if expected is not None and result != expected:
        raise RuntimeError("%s moved %s bytes, not %s" % (function.__name__, result, expected))
    return elapsed


def median_of(rounds: int, function) -> float:
    return statistics.median(function() for _ in range(rounds))


