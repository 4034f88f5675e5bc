"""The Shelf wire protocol, version 2: the one place that frames bytes.

Both sides import this module, so client and server can never disagree about a
line, a name or a byte count. Nothing here knows about threads or processes: a
``Channel`` belongs to whoever owns its socket (a session process in shelfd, a
worker thread in the desktop client).

The frame::

    control line   UTF-8 text, tokens separated by one space, ends in LF
                   (an optional CR before it), at most MAX_LINE bytes
    file bytes     exactly the count announced in the line before them;
                   nothing else delimits them

Paths travel percent-encoded per segment (``encode_path``/``decode_path``); a
decoded path is a tuple of segments, each checked by ``validate_name`` before
anything touches a disk. A ``%2F`` decodes into a segment, never into a
separator, and so makes that segment invalid.

Zero-copy (``splice`` for uploads, ``sendfile`` for downloads) is a property of
each ``Channel``: on for a plain socket, off for anything else (a TLS socket,
where splicing would move ciphertext into the stored file).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import select
import socket
import struct
import termios

VERSION = 2
GREETING = "READY shelf/2"  # followed by the server's features, one space before each
BUSY = "BUSY"
DEFAULT_PORT = 8021
DEFAULT_HOST = "127.0.0.1"

MAX_LINE = 4096           # bytes in one control line, LF included
MAX_NAME = 255            # bytes in the UTF-8 form of a decoded segment
MAX_PATH = 1024           # bytes in a decoded path, separators included
MAX_TOKEN = 64            # bytes in a version, upload or trash token
CHUNK = 1 << 20           # bytes moved per recv_into / write step

# Reply words.
OK = "OK"
EMPTY = "EMPTY"
FAIL = "FAIL"
EXISTS = "EXISTS"

# FAIL codes (``FAIL <code> <reason>``).
INVALID, DENIED, NOTFOUND, CHANGED = "invalid", "denied", "notfound", "changed"
NOTEMPTY, TOOLARGE, FULL, IO, TOOLONG = "notempty", "toolarge", "full", "io", "toolong"
FAIL_CODES = frozenset({INVALID, DENIED, NOTFOUND, CHANGED, NOTEMPTY, TOOLARGE, FULL, IO,
                        TOOLONG})
LINE_TOO_LONG = "line too long"

_SPLICE = hasattr(os, "splice") and not os.environ.get("SHELF_NO_SPLICE")
_TOKEN = re.compile(rb"[0-9A-Za-z_-]{1,%d}" % MAX_TOKEN)
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_DECIMAL = re.compile(rb"[0-9]+")  # any number of digits: a line is at most 4096 bytes
_PERCENT = re.compile(rb"%([0-9A-Fa-f]{2})")
_MUST_ENCODE = frozenset(range(0x00, 0x21)) | {0x25, 0x7F}
USER_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")  # LOGIN's <user>


class ShelfError(Exception):
    """Base of every error Shelf raises on purpose; str() is fit for a user."""


class ProtocolError(ShelfError):
    """The peer sent something the protocol does not allow."""


class LineTooLong(ProtocolError):
    """A control line ran past MAX_LINE bytes without its LF."""


class InvalidName(ProtocolError):
    """A name or path that fails the protocol's rules (the reason says which)."""


class ConnectionClosed(ShelfError):
    """The peer closed the connection cleanly, between two messages."""


class ConnectionLost(ShelfError):
    """The connection broke in the middle of a message or timed out."""


# -- names -----------------------------------------------------------------

def encode_name(name: str) -> str:
    """Percent-encode ``name`` for a control line.

    Encodes exactly what a sender must (space, ``%``, bytes below 0x21, 0x7F)
    and leaves other UTF-8 as it is, so lines stay readable in ``nc``.
    """
    out = bytearray()
    for byte in name.encode("utf-8"):
        if byte in _MUST_ENCODE:
            out += b"%%%02X" % byte
        else:
            out.append(byte)
    return out.decode("utf-8")  # only ASCII bytes were replaced: still UTF-8


def decode_name(token: bytes | str) -> str:
    """Decode one name token from a line and validate it; raise InvalidName."""
    if isinstance(token, str):
        token = token.encode("utf-8")
    if b"%" in token:
        stripped = _PERCENT.sub(b"", token)
        if b"%" in stripped:
            raise InvalidName("invalid name: '%' must be followed by two hex digits")
        token = _PERCENT.sub(lambda m: bytes([int(m.group(1), 16)]), token)
    return validate_name(token)


def validate_name(raw: bytes | str) -> str:
    """Return the name as text if it is a valid library name, else raise InvalidName.

    Valid: 1 to 255 bytes of UTF-8, no ``/``, no byte below 0x20, no 0x7F,
    not starting with ``.`` (hidden names are the server's own).
    """
    if isinstance(raw, str):
        try:
            raw = raw.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidName("invalid name: not valid UTF-8") from None
    if not raw:
        raise InvalidName("invalid name: empty")
    if len(raw) > MAX_NAME:
        raise InvalidName("invalid name: longer than %d bytes" % MAX_NAME)
    if raw.startswith(b"."):
        raise InvalidName("invalid name: names starting with '.' are hidden")
    if b"/" in raw:
        raise InvalidName("invalid name: contains '/'")
    if _CONTROL.search(raw):
        raise InvalidName("invalid name: contains a control character")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidName("invalid name: not valid UTF-8") from None


def is_valid_name(name: str) -> bool:
    try:
        validate_name(name)
    except InvalidName:
        return False
    return True


def decode_password(token: bytes | str) -> bytes:
    """A LOGIN password: percent-encoded like a segment, any byte, ``/`` only as ``%2F``."""
    if isinstance(token, str):
        token = token.encode("utf-8")
    if b"/" in token:
        raise InvalidName("invalid password: write '/' as %2F")
    if b"%" in _PERCENT.sub(b"", token):
        raise InvalidName("invalid password: '%' must be followed by two hex digits")
    return _PERCENT.sub(lambda m: bytes([int(m.group(1), 16)]), token)


def encode_password(password: bytes | str) -> str:
    """A password for LOGIN: every byte but ASCII letters and digits as ``%XX``.

    More than a sender must encode (``/``, space, ``%``, control bytes), so
    any password, whatever it holds, is one token of one line.
    """
    if isinstance(password, str):
        password = password.encode("utf-8")
    return "".join(chr(byte) if chr(byte).isalnum() and byte < 0x80 else "%%%02X" % byte
                   for byte in password)


def encode_path(path: str | tuple[str, ...] | list[str]) -> str:
    """A path for a control line: each segment encoded, ``/`` between; the root is ``/``.

    ``path`` is text with ``/`` separators (``"photos/hi.txt"``, ``""`` or
    ``"/"`` for the root) or a sequence of segments. Raises InvalidName.
    """
    segments = split_path(path) if isinstance(path, str) else tuple(path)
    for segment in segments:
        validate_name(segment)
    check_path_length(segments)
    return "/".join(encode_name(segment) for segment in segments) or "/"


def decode_path(token: bytes | str) -> tuple[str, ...]:
    """A path token from a line, as validated segments; ``/`` alone is the root ``()``."""
    if isinstance(token, str):
        token = token.encode("utf-8")
    if token == b"/":
        return ()
    segments = tuple(decode_name(segment) for segment in token.split(b"/"))
    check_path_length(segments)
    return segments


def split_path(text: str) -> tuple[str, ...]:
    """Plain (not encoded) text with ``/`` separators into segments; ``""``/``"/"`` is the root.

    One leading and one trailing ``/`` are forgiven (people type them);
    anything else must be a valid path.
    """
    text = text.strip("/") if text not in ("", "/") else ""
    if not text:
        return ()
    segments = tuple(text.split("/"))
    for segment in segments:
        validate_name(segment)
    check_path_length(segments)
    return segments


def join_path(segments) -> str:
    """Segments as plain text (``a/b``; ``""`` for the root)."""
    return "/".join(segments)


def check_path_length(segments) -> None:
    if segments and sum(len(s.encode("utf-8")) for s in segments) + len(segments) - 1 > MAX_PATH:
        raise InvalidName("invalid path: longer than %d bytes" % MAX_PATH)


def parse_token(token: bytes | str, what: str) -> str:
    """A version, upload or trash token: 1 to 64 of ``[0-9A-Za-z_-]``."""
    if isinstance(token, str):
        token = token.encode("utf-8", "replace")
    if not _TOKEN.fullmatch(token):
        raise ProtocolError("%s is not a valid token" % what)
    return token.decode("ascii")


def parse_decimal(token: bytes | str, what: str) -> int:
    """Parse a non-negative decimal of ASCII digits only (no sign, no spaces).

    Leading zeros are accepted, any number of them, and so is any size: a
    20-digit size is a decimal, only too large for an upload (``toolarge`` or
    ``full``), and a 20-digit offset is past the end of any file (``invalid``).
    """
    if isinstance(token, str):
        token = token.encode("utf-8", "replace")
    if not _DECIMAL.fullmatch(token):
        raise ProtocolError("%s is not a decimal" % what)
    return int(token)


# -- framing ---------------------------------------------------------------

class Channel:
    """One end of a Shelf connection: capped lines and exactly-N-byte payloads.

    Owns a read buffer, so lines and file bytes may arrive in any split;
    ``recv(n)`` is never assumed to return n bytes. Every blocking call obeys
    the socket's timeout; a timeout or reset becomes ConnectionLost.
    """

    def __init__(self, sock: socket.socket, zero_copy: bool | None = None):
        self.sock = sock
        # splice()/sendfile() only on a plain socket: on a TLS socket they
        # would move ciphertext, not file bytes.
        self.zero_copy = type(sock) is socket.socket if zero_copy is None else zero_copy
        self._buffer = bytearray()
        self._chunk = None  # the large receive buffer, made on first payload
        self._pipe = None   # the splice() pipe, made on first upload

    # reading ---------------------------------------------------------------

    def has_buffered_data(self) -> bool:
        return bool(self._buffer)

    def _fill(self, size: int = 65536) -> int:
        try:
            data = self.sock.recv(size)
        except socket.timeout:
            raise ConnectionLost("timed out waiting for the peer") from None
        except OSError as exc:
            raise ConnectionLost("connection lost: %s" % (exc.strerror or exc)) from None
        self._buffer += data
        return len(data)

    def read_line(self) -> bytes:
        """Return the next line without its LF (and optional CR).

        Raises ConnectionClosed on EOF before any byte of a line,
        ConnectionLost on EOF inside one, LineTooLong past MAX_LINE.
        """
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end >= 0:
                if end + 1 > MAX_LINE:
                    raise LineTooLong(LINE_TOO_LONG)
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                return line[:-1] if line.endswith(b"\r") else line
            if len(self._buffer) >= MAX_LINE:
                raise LineTooLong(LINE_TOO_LONG)
            start = len(self._buffer)
            if not self._fill(MAX_LINE):
                if self._buffer:
                    raise ConnectionLost("connection closed in the middle of a line")
                raise ConnectionClosed("connection closed")

    def read_text_line(self) -> str:
        line = self.read_line()
        try:
            return line.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("line is not valid UTF-8") from None

    def read_exact_into(self, write, count: int, progress=None, cancel=None) -> None:
        """Read exactly ``count`` payload bytes, handing each piece to ``write``.

        ``write(memoryview)`` must consume the whole piece. ``progress(done)``
        and ``cancel()`` are called between chunks. EOF before the end raises
        ConnectionLost; the caller decides what a partial payload means.
        """
        done = 0
        if self._buffer:
            take = min(len(self._buffer), count)
            write(memoryview(self._buffer)[:take])
            del self._buffer[:take]
            done = take
        if done < count:
            if self._chunk is None:
                self._chunk = bytearray(CHUNK)
            view = memoryview(self._chunk)
            sock = self.sock
            while done < count:
                if cancel is not None and cancel():
                    raise Cancelled("cancelled")
                try:
                    received = sock.recv_into(view, min(CHUNK, count - done))
                except socket.timeout:
                    raise ConnectionLost("timed out in the middle of a transfer") from None
                except OSError as exc:
                    raise ConnectionLost("connection lost: %s" % (exc.strerror or exc)) from None
                if not received:
                    raise ConnectionLost(
                        "connection closed after %d of %d bytes" % (done, count))
                write(view[:received])
                done += received
                if progress is not None:
                    progress(done)
        elif progress is not None:
            progress(done)

    def read_exact_to_fd(self, fd: int, count: int) -> OSError | None:
        """Move ``count`` payload bytes into the file descriptor ``fd``.

        Linux ``splice()`` moves them socket -> pipe -> file without copying
        them through Python; elsewhere (or where the file system refuses
        splice) this falls back to ``recv_into`` + ``os.write``. A write error
        (disk full) does not stop the reading: the rest is read and dropped so
        the framing holds, and the first such error is returned.
        ConnectionLost as in ``read_exact_into``.
        """
        done = 0
        error = None

        def write_all(view) -> None:
            nonlocal error
            while view and error is None:
                try:
                    view = view[os.write(fd, view):]
                except OSError as exc:
                    error = exc

        if self._buffer:
            take = min(len(self._buffer), count)
            write_all(memoryview(self._buffer)[:take])
            del self._buffer[:take]
            done = take
        if done < count and error is None and _SPLICE and self.zero_copy:
            done, splice_error = self._splice(fd, done, count, write_all)
            error = error or splice_error
        if done < count:
            self.read_exact_into(write_all if error is None else (lambda view: None),
                                 count - done)
        return error

    def _splice(self, fd: int, done: int, count: int, write) -> tuple[int, OSError | None]:
        """splice() socket -> pipe -> ``fd``; (bytes done, a write error or None).

        Returns early with done < count when splice cannot be used here; the
        bytes already in the pipe then go through ``write``.
        """
        if self._pipe is None:
            self._pipe = os.pipe2(os.O_CLOEXEC)
            try:
                fcntl.fcntl(self._pipe[1], _F_SETPIPE_SZ, CHUNK)
            except OSError:
                pass  # the default pipe size works, only slower
        pipe_r, pipe_w = self._pipe
        sock_fd = self.sock.fileno()
        timeout = self.sock.gettimeout()
        started = done
        while done < count:
            try:
                moved = os.splice(sock_fd, pipe_w, min(CHUNK, count - done),
                                  flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK)
            except BlockingIOError:
                if not select.select([sock_fd], [], [], timeout)[0]:
                    raise ConnectionLost("timed out in the middle of a transfer") from None
                continue
            except OSError as exc:
                if exc.errno == errno.EINVAL and done == started:
                    return done, None  # cannot splice here: read_exact_into does it
                raise ConnectionLost("connection lost: %s" % (exc.strerror or exc)) from None
            if not moved:
                raise ConnectionLost("connection closed after %d of %d bytes" % (done, count))
            left = moved
            while left:
                try:
                    left -= os.splice(pipe_r, fd, left, flags=os.SPLICE_F_MOVE)
                except OSError as exc:
                    pending = bytearray()
                    while len(pending) < left:  # empty the pipe
                        pending += os.read(pipe_r, left - len(pending))
                    if exc.errno != errno.EINVAL:
                        return done + moved, exc  # disk full: the caller drops the rest
                    write(memoryview(pending))  # this file system takes no splice
                    return done + moved, None
            done += moved
        return done, None

    def discard(self, count: int) -> None:
        """Read and drop ``count`` payload bytes (keeps the framing in step)."""
        self.read_exact_into(lambda view: None, count)

    # writing ---------------------------------------------------------------

    def send_line(self, text: str) -> None:
        self.send_raw(text.encode("utf-8") + b"\n")

    def send_lines(self, lines: list[str]) -> None:
        """Several lines (a multi-line reply) in one write."""
        self.send_raw(("\n".join(lines) + "\n").encode("utf-8"))

    def send_line_with(self, text: str, payload: bytes) -> None:
        """A reply line and the bytes it announces, in one write (small files)."""
        self.send_raw(text.encode("utf-8") + b"\n" + payload)

    def _unsent(self) -> int | None:
        """Bytes queued in the socket that the peer has not acknowledged yet."""
        try:
            return struct.unpack("i", fcntl.ioctl(self.sock.fileno(), termios.TIOCOUTQ,
                                                  b"\0\0\0\0"))[0]
        except OSError:
            return None

    def _drained_since(self, before: int | None) -> bool:
        """After a send timed out: did the peer take anything meanwhile?

        A socket becomes writable again only once a good part of its (up to
        4 MB) buffer is free, so a slow but steady reader can keep a send
        waiting past the timeout; that is progress, not idleness.
        """
        after = self._unsent()
        return before is not None and after is not None and after < before

    def send_raw(self, data: bytes) -> None:
        """Send all of ``data``; the socket's timeout bounds a wait with no progress.

        (``sendall`` would bound the whole call: a peer reading a long reply
        slowly but steadily is not idle.)
        """
        try:
            if len(data) <= 65536:
                self.sock.sendall(data)
                return
            view = memoryview(data)
            while view:
                before = self._unsent()
                try:
                    view = view[self.sock.send(view):]
                except socket.timeout:
                    if not self._drained_since(before):
                        raise
        except socket.timeout:
            raise ConnectionLost("timed out sending to the peer") from None
        except OSError as exc:
            raise ConnectionLost("connection lost: %s" % (exc.strerror or exc)) from None

    def send_file(self, fileobj, offset: int, count: int, progress=None, cancel=None,
                  step: int | None = None) -> None:
        """Send ``count`` bytes of ``fileobj`` from ``offset`` with sendfile().

        Zero-copy where the file is a regular file; progress and cancel are
        checked every ``step`` bytes: 1 MiB when someone watches (a window
        that says "stalled" after a few seconds must hear of slow progress
        too), 64 MiB when nobody does (the server's GET). A file that ends
        early raises ConnectionLost-worthy ProtocolError: the frame can no
        longer be kept.
        """
        if not self.zero_copy:
            fileobj.seek(offset)
            self.send_stream(fileobj.read, count, progress, cancel)
            return
        if step is None:
            step = CHUNK if progress is not None or cancel is not None else 64 * CHUNK
        done = 0
        while done < count:
            if cancel is not None and cancel():
                raise Cancelled("cancelled")
            want = min(step, count - done)
            before = self._unsent()
            try:
                sent = self.sock.sendfile(fileobj, offset + done, want)
            except socket.timeout:
                # sendfile() leaves the file at the end of what it sent.
                moved = max(0, fileobj.tell() - (offset + done))
                if moved or self._drained_since(before):
                    done += moved
                    continue
                raise ConnectionLost("timed out in the middle of a transfer") from None
            except OSError as exc:
                raise ConnectionLost("connection lost: %s" % (exc.strerror or exc)) from None
            if sent == 0:
                raise ShortFile("file ended after %d of %d bytes" % (done, count))
            done += sent
            if progress is not None:
                progress(done)
        if count == 0 and progress is not None:
            progress(0)

    def send_stream(self, read, count: int, progress=None, cancel=None) -> None:
        """Send ``count`` bytes produced by ``read(n)`` (pipes, stdin)."""
        done = 0
        while done < count:
            if cancel is not None and cancel():
                raise Cancelled("cancelled")
            data = read(min(CHUNK, count - done))
            if not data:
                raise ShortFile("input ended after %d of %d bytes" % (done, count))
            self.send_raw(data)
            done += len(data)
            if progress is not None:
                progress(done)

    def close(self) -> None:
        if self._pipe is not None:
            for pipe_fd in self._pipe:
                os.close(pipe_fd)
            self._pipe = None
        try:
            self.sock.close()
        except OSError:
            pass


class Cancelled(ShelfError):
    """A transfer was cancelled by its owner between two chunks."""


class ShortFile(ShelfError):
    """A local file or stream held fewer bytes than were announced."""


def split_reply(line: str) -> tuple[str, str]:
    """Split a reply line into (word, rest); raise ProtocolError if unknown."""
    word, _, rest = line.partition(" ")
    if word not in (OK, EMPTY, FAIL, EXISTS):
        raise ProtocolError("unexpected reply from server: %r" % line[:80])
    return word, rest


def split_failure(rest: str) -> tuple[str, str]:
    """``<code> <reason>`` of a FAIL reply into (code, reason); unknown codes are ``io``."""
    code, _, reason = rest.partition(" ")
    if code not in FAIL_CODES:
        return IO, rest or "the server refused"
    return code, reason or code


def parse_greeting(line: str) -> frozenset[str] | None:
    """The features of a ``READY shelf/2 ...`` greeting, or None if it is not one."""
    words = line.split(" ")
    if words[:2] != GREETING.split(" "):
        return None
    return frozenset(word for word in words[2:] if word)
