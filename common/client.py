"""The client library every Shelf front end uses (terminal, desktop, benchmarks).

One ``Client`` is one session, owned by one thread at a time (the desktop
client gives each transfer its own). Every wait has a timeout; every failure
is a typed exception whose str() can be shown to a user as it is. A request
that stops before its whole reply was read (a timeout, Ctrl+C, a cancel, a
local write error) closes the session: bytes are still in flight, so the
next request could only read them as its reply. ``closed`` then says so and
the owner opens a new ``Client``.

    with Client("127.0.0.1", 8021) as shelf:
        for entry in shelf.list():
            print(entry.name, entry.size)
        with open("notes.txt", "rb") as f:
            shelf.put("notes.txt", f, os.fstat(f.fileno()).st_size)
"""

from __future__ import annotations

import os
import socket
import stat as stat_module
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Callable

from common import protocol
from common.protocol import (BUSY, EMPTY, EXISTS, FAIL, GREETING, OK, Cancelled, Channel,
                             ConnectionClosed, ConnectionLost, ProtocolError, ShelfError,
                             ShortFile, decode_name, encode_name, parse_decimal, split_reply,
                             validate_name)

__all__ = ["Client", "Entry", "ShelfError", "Exists", "NotFound", "ServerBusy", "RemoteError",
           "ProtocolError", "ConnectionLost", "CannotConnect", "Cancelled", "ShortFile"]

DEFAULT_TIMEOUT = 30.0
# The server reads the whole file before HASH answers: that wait is work, not a
# stall. A server hashing slower than this (a slow disk, a small board) on top
# of the usual timeout is taken for stalled.
HASH_RATE_FLOOR = 16 << 20  # bytes a second

Progress = Callable[[int], None]
Cancel = Callable[[], bool]


class Exists(ShelfError):
    """The library already has a file of that name."""


class NotFound(ShelfError):
    """No such file in the library."""


class ServerBusy(ShelfError):
    """The server serves its maximum number of sessions (it said BUSY)."""


class RemoteError(ShelfError):
    """The server answered FAIL; str() is its reason."""


class CannotConnect(ShelfError):
    """No Shelf server could be reached at that address."""


@dataclass(frozen=True)
class Entry:
    name: str
    size: int
    mtime: int


class Client:
    """A session with shelfd. Not thread-safe: one owner at a time."""

    def __init__(self, host: str = protocol.DEFAULT_HOST, port: int = protocol.DEFAULT_PORT,
                 timeout: float = DEFAULT_TIMEOUT):
        self.host = host
        self.port = port
        self.timeout = timeout
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except socket.timeout:
            raise CannotConnect("cannot connect to %s:%d: timed out" % (host, port)) from None
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise CannotConnect("cannot connect to %s:%d: %s" % (host, port, reason.lower())) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.channel = Channel(sock)
        try:
            greeting = self._read_line()
        except BaseException:
            self.channel.close()
            raise
        if greeting == BUSY:
            self.close()
            raise ServerBusy("server %s:%d is busy: too many sessions, try again later"
                             % (host, port))
        if greeting != GREETING:
            self.close()
            raise ProtocolError("%s:%d is not a Shelf server (it said %r)"
                                % (host, port, greeting[:60]))

    # -- plumbing ------------------------------------------------------------

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self.channel.sock.fileno() < 0

    def _read_line(self) -> str:
        try:
            return self.channel.read_text_line()
        except ConnectionClosed:
            raise ConnectionLost("the server closed the connection") from None

    @contextmanager
    def _exchange(self):
        """Around one request and its whole reply: a reply the server gave
        (FAIL, EXISTS) leaves the session in step; anything else that ends it
        early (timeout, KeyboardInterrupt, cancel, a local error) breaks it."""
        try:
            yield
        except (NotFound, RemoteError, Exists):
            raise
        except BaseException:
            self._broken()
            raise

    def _request(self, line: str, name: str | None = None) -> tuple[str, str]:
        self.channel.send_line(line)
        return self._reply(name)

    def _reply(self, name: str | None = None) -> tuple[str, str]:
        word, rest = split_reply(self._read_line())
        if word == FAIL:
            if rest.startswith(protocol.NO_SUCH_FILE):
                raise NotFound("no such file in the library" + (": %s" % name if name else ""))
            raise RemoteError(rest or "the server refused")
        return word, rest

    def _broken(self) -> None:
        """The framing is lost: the session cannot go on."""
        self.abort()

    def abort(self) -> None:
        """Close at once, without the polite QUIT: for a session that may be
        out of step (the server would read QUIT as file bytes, or never)."""
        self.channel.close()

    def close(self) -> None:
        """Leave politely (QUIT) if we can, then close the socket."""
        if self.closed:
            return
        try:
            self.channel.sock.settimeout(1.0)
            self.channel.send_line("QUIT")
        except ShelfError:
            pass
        self.channel.close()

    # -- requests ------------------------------------------------------------

    def noop(self) -> None:
        with self._exchange():
            self._request("NOOP")

    def list(self) -> list[Entry]:
        with self._exchange():
            word, rest = self._request("LIST")
            if word == EMPTY:
                return []
            count = parse_decimal(rest, "count")
            entries = []
            for _ in range(count):
                parts = self._read_line().split(" ")
                if len(parts) != 3:
                    raise ProtocolError("malformed LIST line from server")
                entries.append(Entry(decode_name(parts[0]), int(parts[1]), int(parts[2])))
            return entries

    def stat(self, name: str) -> Entry:
        request = "STAT %s" % self._encode(name)
        with self._exchange():
            word, rest = self._request(request, name)
        parts = rest.split(" ")
        if word != OK or len(parts) != 2:
            raise ProtocolError("malformed STAT reply from server")
        return Entry(name, int(parts[0]), int(parts[1]))

    def hash(self, name: str, size: int | None = None) -> str:
        """The file's SHA-256 as the server computes it.

        Give ``size`` (the file's byte count) for a large file: the reply may
        then take ``hash_wait(size)`` seconds, the time the server needs to
        read it, instead of the usual timeout.
        """
        request = "HASH %s" % self._encode(name)
        with self._exchange():
            self.channel.send_line(request)
            if size is not None:
                self.channel.sock.settimeout(self.hash_wait(size))
            try:
                word, rest = self._reply(name)
            finally:
                if size is not None and not self.closed:
                    self.channel.sock.settimeout(self.timeout)
        algorithm, _, digest = rest.partition(" ")
        if word != OK or algorithm != "sha256" or len(digest) != 64:
            raise ProtocolError("malformed HASH reply from server")
        return digest

    def hash_wait(self, size: int) -> float:
        """Seconds a HASH of a ``size``-byte file may take before it counts as stalled."""
        return self.timeout + size / HASH_RATE_FLOOR

    def get(self, name: str, file: BinaryIO, offset: int = 0,
            progress: Progress | None = None, cancel: Cancel | None = None) -> int:
        """Write the file from ``offset`` to its end into ``file``; return the byte count.

        ``progress(done)`` gets the bytes received so far (not counting
        ``offset``); ``cancel()`` returning True stops the transfer, closes
        the session and raises Cancelled.
        """
        request = "GET %s" % self._encode(name)
        if offset:
            request += " %d" % offset
        write = getattr(file, "write")
        with self._exchange():
            word, rest = self._request(request, name)
            length = parse_decimal(rest, "length")
            self.channel.read_exact_into(write, length, progress, cancel)
        return length

    def put(self, name: str, file: BinaryIO, size: int,
            progress: Progress | None = None, cancel: Cancel | None = None) -> int:
        """Upload ``size`` bytes read from ``file`` as ``name``.

        Raises Exists when the library has the name (before any byte is sent,
        or when another session stored it first). Regular files go out with
        sendfile(); pipes and other streams with plain reads.
        """
        request = "PUT %s %d" % (self._encode(name), size)
        with self._exchange():
            word, rest = self._request(request)
            if word == EXISTS:
                raise Exists("%s is already in the library" % name)
            if _is_regular(file):
                self.channel.send_file(file, file.tell(), size, progress, cancel)
            else:
                self.channel.send_stream(file.read, size, progress, cancel)
            word, rest = self._reply()
            if word == EXISTS:
                raise Exists("%s was stored by someone else first" % name)
        return size

    @staticmethod
    def _encode(name: str) -> str:
        validate_name(name)
        return encode_name(name)


def _is_regular(file) -> bool:
    try:
        return stat_module.S_ISREG(os.fstat(file.fileno()).st_mode)
    except (AttributeError, OSError, ValueError):
        return False
