"""The PROXY protocol, version 2: a balancer's word for who the client really is.

Behind a TCP balancer (HAProxy ``send-proxy-v2``) every connection comes from
the balancer's address, which would make one client of every client: the
per-address limits and the failed-login bans would hit everyone at once. A
balancer that speaks the PROXY protocol sends, before anything else on the
connection, a binary header with the client's address. shelfd reads it only
from the addresses given in ``--proxy-protocol`` (anyone else could claim any
address) and there it is required: a trusted balancer that sends no valid
header gets the connection closed, since it could be anyone's.

The header (haproxy's doc/proxy-protocol.txt, section 2.2)::

    12 bytes  \\r\\n\\r\\n\\0\\r\\nQUIT\\n
     1 byte   version 2 (high nibble) and command: 0 LOCAL, 1 PROXY
     1 byte   address family and transport: 0x11 TCP/IPv4, 0x21 TCP/IPv6, 0x00 UNSPEC
     2 bytes  length of what follows (big-endian)
     ...      addresses (IPv4: 4+4+2+2 bytes, IPv6: 16+16+2+2), then TLVs (skipped)

LOCAL is what HAProxy's health checks send: the connection is the
balancer's own, and keeps the balancer's address.

Runs in the session process (fork or ready process), before the greeting and
before a TLS handshake, under a deadline, so a slow balancer holds up only its
own connection.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import time

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
HEADER = struct.Struct("!12sBBH")   # signature, version+command, family, length
MAX_LENGTH = 1024                    # addresses and TLVs: more is not a balancer
LOCAL, PROXY = 0x20, 0x21
TCP4, TCP6, UNSPEC = 0x11, 0x21, 0x00


class ProxyError(Exception):
    """A trusted balancer sent no valid header; str() says what was wrong."""


class Trusted:
    """The addresses (or networks) allowed to send a PROXY header."""

    def __init__(self, spec: str | None):
        self.networks = []
        for item in (spec or "").replace(" ", ",").split(","):
            if item:
                self.networks.append(ipaddress.ip_network(item.strip(), strict=False))

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


def parse_trusted(spec: str) -> str:
    """Check a ``--proxy-protocol`` value (addresses or networks, comma-separated)."""
    try:
        trusted = Trusted(spec)
    except ValueError as exc:
        raise ValueError("not an address or network: %s" % exc) from None
    if not trusted:
        raise ValueError("give at least one address")
    return spec


def read_header(sock: socket.socket, timeout: float) -> tuple[str, int] | None:
    """Read the PROXY v2 header; the client's (host, port), or None for LOCAL/UNSPEC.

    Reads exactly the header's bytes (recv of what is still missing, under the deadline),
    so what follows (the client's first line, or its TLS ClientHello) stays
    in the socket for whoever reads next. ProxyError if the header is not one.
    """
    deadline = time.monotonic() + timeout
    head = _read_exact(sock, HEADER.size, deadline)
    signature, version_command, family, length = HEADER.unpack(head)
    if signature != SIGNATURE:
        raise ProxyError("no PROXY protocol v2 header from a trusted balancer")
    if version_command not in (LOCAL, PROXY):
        raise ProxyError("unknown PROXY protocol version or command 0x%02x" % version_command)
    if length > MAX_LENGTH:
        raise ProxyError("PROXY header too long (%d bytes)" % length)
    body = _read_exact(sock, length, deadline)
    if version_command == LOCAL or family == UNSPEC:
        return None
    if family == TCP4 and length >= 12:
        source, _, port, _ = struct.unpack_from("!4s4sHH", body)
        return socket.inet_ntop(socket.AF_INET, source), port
    if family == TCP6 and length >= 36:
        source, _, port, _ = struct.unpack_from("!16s16sHH", body)
        host = socket.inet_ntop(socket.AF_INET6, source)
        mapped = ipaddress.IPv6Address(host).ipv4_mapped
        return (str(mapped) if mapped else host), port
    raise ProxyError("PROXY header with an unsupported address family 0x%02x" % family)


def build_header(source: tuple[str, int] | None, destination: tuple[str, int] | None = None
                 ) -> bytes:
    """A PROXY v2 header (tests and tools); ``source`` None makes a LOCAL one."""
    if source is None:
        return HEADER.pack(SIGNATURE, LOCAL, UNSPEC, 0)
    destination = destination or (source[0], 0)
    if ":" in source[0]:
        body = struct.pack("!16s16sHH", socket.inet_pton(socket.AF_INET6, source[0]),
                           socket.inet_pton(socket.AF_INET6, destination[0]),
                           source[1], destination[1])
        return HEADER.pack(SIGNATURE, PROXY, TCP6, len(body)) + body
    body = struct.pack("!4s4sHH", socket.inet_pton(socket.AF_INET, source[0]),
                       socket.inet_pton(socket.AF_INET, destination[0]),
                       source[1], destination[1])
    return HEADER.pack(SIGNATURE, PROXY, TCP4, len(body)) + body


def _read_exact(sock: socket.socket, count: int, deadline: float) -> bytes:
    data = b""
    while len(data) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ProxyError("no PROXY header in time from a trusted balancer")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(count - len(data))
        except socket.timeout:
            raise ProxyError("no PROXY header in time from a trusted balancer") from None
        except OSError as exc:
            raise ProxyError("connection lost in the PROXY header: %s" % exc.strerror) from None
        if not chunk:
            raise ProxyError("connection closed in the PROXY header")
        data += chunk
    return data


def unwrap(handler, conn: socket.socket, peer: str, host: str) -> tuple[str, str]:
    """The client's (peer, host): from the PROXY header when ``host`` is a trusted balancer.

    ``handler.proxies`` (a ``Trusted``, or missing) says who may send one; a
    LOCAL header keeps the balancer's own address. ProxyError as in
    ``read_header``; the socket's timeout is put back as it was.
    """
    trusted = getattr(handler, "proxies", None)
    if not trusted or host not in trusted:
        return peer, host
    saved = conn.gettimeout()
    try:
        client = read_header(conn, PROXY_TIMEOUT)
    finally:
        conn.settimeout(saved)
    if client is None:
        return peer, host
    real_host, port = client
    shown = "[%s]:%d" % (real_host, port) if ":" in real_host else "%s:%d" % (real_host, port)
    return "%s (via %s)" % (shown, peer), real_host


PROXY_TIMEOUT = 10.0  # seconds a trusted balancer has to send its header
