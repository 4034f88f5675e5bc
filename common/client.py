"""The client library every Shelf front end uses (terminal, desktop, benchmarks).

Speaks protocol version 2. One ``Client`` is one session, owned by one thread
at a time (the desktop client gives each transfer its own). Every wait has a
timeout; every failure is a typed exception whose str() can be shown to a user
as it is. A request that stops before its whole reply was read (a timeout,
Ctrl+C, a cancel, a local write error) closes the session: bytes are still in
flight, so the next request could only read them as its reply. ``closed`` then
says so and the owner opens a new ``Client``.

Paths are plain text with ``/`` between folders (``"photos/hi.txt"``; ``""``
is the root) or tuples of segments; this module encodes them for the wire.

    with Client("127.0.0.1", 8021) as shelf:
        for entry in shelf.list("photos"):
            print(entry.name, entry.size, entry.version)
        with open("notes.txt", "rb") as f:
            shelf.put("notes.txt", f, os.fstat(f.fileno()).st_size)
"""

from __future__ import annotations

import os
import socket
import stat as stat_module
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Callable, NamedTuple, Sequence

from common import protocol
from common.protocol import (BUSY, EMPTY, EXISTS, FAIL, OK, Cancelled, Channel,
                             ConnectionClosed, ConnectionLost, ProtocolError, ShelfError,
                             ShortFile, decode_name, decode_path, encode_password, encode_path,
                             join_path, parse_decimal, parse_greeting, parse_token,
                             split_failure, split_path, split_reply)

__all__ = ["Client", "Login", "LoginRefused", "Entry", "TrashEntry", "Received", "Stored", "ShelfError", "Exists",
           "NotFound", "Denied", "Changed", "NotEmpty", "TooLarge", "Full", "ServerBusy",
           "RemoteError", "ProtocolError", "ConnectionLost", "CannotConnect", "Cancelled",
           "ShortFile"]

DEFAULT_TIMEOUT = 30.0
# The server reads the whole file before HASH answers: that wait is work, not a
# stall. A server hashing slower than this (a slow disk, a small board) on top
# of the usual timeout is taken for stalled.
HASH_RATE_FLOOR = 16 << 20  # bytes a second
# A Shelf server greets at once (or says BUSY); silence this long on a plain
# connection is most likely a TLS server waiting for a handshake.
GREETING_WAIT = 10.0

Progress = Callable[[int], None]
Cancel = Callable[[], bool]


class Exists(ShelfError):
    """The library already has a file or folder at that path (EXISTS)."""


class RemoteError(ShelfError):
    """The server answered ``FAIL <code> <reason>``; str() is the reason, ``code`` the code."""

    code = protocol.IO

    def __init__(self, reason: str, code: str | None = None):
        super().__init__(reason)
        if code is not None:
            self.code = code


class NotFound(RemoteError):
    """No such file or folder (or not the kind the request needs)."""

    code = protocol.NOTFOUND


class Denied(RemoteError):
    """The session lacks the permission (or is not logged in)."""

    code = protocol.DENIED


class Changed(RemoteError):
    """The file is no longer the version the client named."""

    code = protocol.CHANGED


class NotEmpty(RemoteError):
    """RMDIR of a folder that holds something."""

    code = protocol.NOTEMPTY


class TooLarge(RemoteError):
    """Over the server's size limit for an upload."""

    code = protocol.TOOLARGE


class Full(RemoteError):
    """Not enough free space in the library."""

    code = protocol.FULL


class LoginRefused(Denied):
    """LOGIN answered FAIL denied: wrong user or password, or refused for another reason."""


_BY_CODE = {cls.code: cls for cls in (NotFound, Denied, Changed, NotEmpty, TooLarge, Full)}


class ServerBusy(ShelfError):
    """The server serves its maximum number of sessions (it said BUSY)."""


class CannotConnect(ShelfError):
    """No Shelf server could be reached at that address."""


@dataclass(frozen=True)
class Entry:
    name: str
    size: int
    mtime: int
    kind: str = "file"            # "file" or "folder"
    version: str | None = None    # None for a folder

    @property
    def is_folder(self) -> bool:
        return self.kind == "folder"


@dataclass(frozen=True)
class TrashEntry:
    id: str
    path: str          # where the file was, relative to the session's root
    size: int
    deleted: int       # seconds since the epoch


class Login(NamedTuple):
    """The grant a LOGIN gave: ``OK <user> <permissions> <root>``."""
    user: str
    permissions: str   # letters from "rwdm"; "" for none (the wire's "-")
    root: str          # "/" then the user's folder in the library


class Received(NamedTuple):
    length: int        # bytes received (from the offset to the end)
    version: str


class Stored(NamedTuple):
    size: int
    version: str


class Client:
    """A session with shelfd. Not thread-safe: one owner at a time."""

    def __init__(self, host: str = protocol.DEFAULT_HOST, port: int = protocol.DEFAULT_PORT,
                 timeout: float = DEFAULT_TIMEOUT, tls: bool = False, trust=None,
                 tls_session=None, user: str | None = None,
                 password: bytes | str | None = None):
        """Connect, read the greeting and, given a ``user``, LOGIN.

        ``tls``: the server is a ``shelfs://`` one. ``trust`` (a
        ``common.trust.Trust``; by default the system's CAs and the user's
        known_servers, asking nobody) decides whether its certificate is
        accepted, else ``TrustRefused``. ``tls_session`` (the ``tls_session``
        of an earlier client with the same ``trust``) resumes that TLS session.
        ``user`` and ``password``: LOGIN at once (``login`` says how it may
        fail); the grant is then ``self.grant``.
        """
        self.host = host
        self.port = port
        self.timeout = timeout
        if tls:
            sock = self._connect_tls(trust, tls_session)
        else:
            sock = self._connect_tcp()
        self.channel = Channel(sock)
        if not tls:  # a TLS server says nothing until a handshake: do not wait it out
            sock.settimeout(min(timeout, GREETING_WAIT))
        try:
            greeting = self._read_line()
        except ConnectionLost as exc:
            self.channel.close()
            if not tls and "timed out" in str(exc):
                raise CannotConnect(
                    "%s:%d sent no greeting within %g s; if it is a TLS server, use "
                    "shelfs://%s:%d" % (host, port, min(timeout, GREETING_WAIT), host, port)
                ) from None
            raise
        except BaseException:
            self.channel.close()
            raise
        sock.settimeout(timeout)
        if greeting == BUSY:
            self.close()
            raise ServerBusy("server %s:%d is busy: too many sessions, try again later"
                             % (host, port))
        features = parse_greeting(greeting)
        if features is None:
            self.abort()
            if greeting.startswith("READY shelf/"):
                raise ProtocolError("%s:%d speaks another version of the Shelf protocol "
                                    "(it said %r; this client speaks shelf/%d)"
                                    % (host, port, greeting[:40], protocol.VERSION))
            raise ProtocolError("%s:%d is not a Shelf server (it said %r)"
                                % (host, port, greeting[:60]))
        self.features = features
        self.grant: Login | None = None
        if user is not None:
            try:
                self.login(user, password if password is not None else b"")
            except BaseException:
                self.abort()
                raise

    # -- connecting ----------------------------------------------------------

    def _connect_tcp(self) -> socket.socket:
        host, port = self.host, self.port
        try:
            sock = socket.create_connection((host, port), timeout=self.timeout)
        except socket.timeout:
            raise CannotConnect("cannot connect to %s:%d: timed out" % (host, port)) from None
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise CannotConnect("cannot connect to %s:%d: %s" % (host, port, reason.lower())) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _connect_tls(self, trust, session):
        """The TLS socket (see common.trust); handshake failures are CannotConnect."""
        import ssl

        from common.trust import Trust

        if trust is None:
            trust = Trust()
        self.trust = trust
        host, port = self.host, self.port
        try:
            return trust.connect(self._connect_tcp, host, port, session)
        except ssl.SSLError as exc:
            reason = (exc.reason or str(exc)).lower().replace("_", " ")
            hint = " (is it a plain shelf:// server?)" if "wrong version" in reason else ""
            raise CannotConnect("TLS handshake with %s:%d failed: %s%s"
                                % (host, port, reason, hint)) from None
        except socket.timeout:
            raise CannotConnect("TLS handshake with %s:%d timed out" % (host, port)) from None
        except OSError as exc:
            raise CannotConnect("TLS handshake with %s:%d failed: %s" % (
                host, port, (exc.strerror or str(exc) or "connection closed").lower())) from None

    @property
    def tls_session(self):
        """The TLS session to resume on the next connection (None without TLS)."""
        return getattr(self.channel.sock, "session", None)

    @property
    def session_reused(self) -> bool:
        """True when this connection resumed an earlier TLS session."""
        return bool(getattr(self.channel.sock, "session_reused", False))

    @property
    def fingerprint(self) -> str | None:
        """``sha256:<hex>`` of the server's certificate (None without TLS)."""
        getpeercert = getattr(self.channel.sock, "getpeercert", None)
        if getpeercert is None:
            return None
        from common.trust import fingerprint_of
        return fingerprint_of(getpeercert(binary_form=True))

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
        except (RemoteError, Exists):
            raise
        except BaseException:
            self._broken()
            raise

    def _request(self, line: str, path: str | None = None) -> tuple[str, str]:
        self.channel.send_line(line)
        return self._reply(path)

    def _reply(self, path: str | None = None) -> tuple[str, str]:
        word, rest = split_reply(self._read_line())
        if word == FAIL:
            code, reason = split_failure(rest)
            if code == protocol.TOOLONG:
                self._broken()  # the server closes after it
            cls = _BY_CODE.get(code, RemoteError)
            if code == protocol.NOTFOUND and path:
                reason = "%s: %s" % (reason, path)
            raise cls(reason, code)
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

    def _simple(self, line: str, path: str | None = None) -> str:
        """One request whose reply is one line; the text after its word."""
        with self._exchange():
            word, rest = self._request(line, path)
        if word == EXISTS:
            raise Exists("%s already exists" % (path or "it"))
        return rest

    # -- requests ------------------------------------------------------------

    def noop(self) -> None:
        self._simple("NOOP")

    def login(self, user: str, password: bytes | str) -> Login:
        """LOGIN; the grant it gave (also kept as ``self.grant``).

        LoginRefused for a wrong user or password (the server answers no
        sooner than a second later, and closes the session at the third),
        on a server without accounts, or for a plain connection to a server
        off this machine (``login needs TLS``).
        """
        if not protocol.USER_NAME.fullmatch(user):
            raise protocol.InvalidName("invalid user name %r: 1 to 64 letters, digits, '.', "
                                       "'_' or '-'" % user[:80])
        try:
            rest = self._simple("LOGIN %s %s" % (user, encode_password(password)))
        except Denied as exc:
            reason = str(exc).removeprefix("login refused: ")
            raise LoginRefused("login as %s refused by %s:%d: %s"
                               % (user, self.host, self.port, reason)) from None
        parts = rest.split(" ")
        if len(parts) != 3 or not parts[2].startswith("/"):
            raise ProtocolError("malformed LOGIN reply from server")
        self.grant = Login(parts[0], "" if parts[1] == "-" else parts[1], parts[2])
        return self.grant

    def list(self, folder: str | Sequence[str] = "") -> list[Entry]:
        """The files and folders in ``folder`` (the root by default), sorted by name."""
        encoded = encode_path(folder)
        request = "LIST" if encoded == "/" else "LIST " + encoded
        with self._exchange():
            word, rest = self._request(request, _text(folder))
            if word == EMPTY:
                return []
            count = parse_decimal(rest, "count")
            return [self._entry_line(self._read_line()) for _ in range(count)]

    @staticmethod
    def _entry_line(line: str) -> Entry:
        parts = line.split(" ")
        if len(parts) != 4:
            raise ProtocolError("malformed LIST line from server: %r" % line[:80])
        name, size, mtime, version = parts
        if name.endswith("/"):
            return Entry(decode_name(name[:-1]), 0, _integer(mtime), "folder", None)
        return Entry(decode_name(name), parse_decimal(size, "size"), _integer(mtime), "file",
                     parse_token(version, "version"))

    def stat(self, path: str | Sequence[str]) -> Entry:
        rest = self._simple("STAT " + encode_path(path), _text(path))
        parts = rest.split(" ")
        if len(parts) != 4 or parts[2] not in ("file", "folder"):
            raise ProtocolError("malformed STAT reply from server")
        segments = split_path(path) if isinstance(path, str) else tuple(path)
        name = segments[-1] if segments else ""
        if parts[2] == "folder":
            return Entry(name, 0, _integer(parts[1]), "folder", None)
        return Entry(name, parse_decimal(parts[0], "size"), _integer(parts[1]), "file",
                     parse_token(parts[3], "version"))

    def hash(self, path: str | Sequence[str], size: int | None = None) -> str:
        """The file's SHA-256 as the server computes it.

        Give ``size`` (the file's byte count) for a large file: the reply may
        then take ``hash_wait(size)`` seconds, the time the server needs to
        read it, instead of the usual timeout.
        """
        request = "HASH " + encode_path(path)
        with self._exchange():
            self.channel.send_line(request)
            if size is not None:
                self.channel.sock.settimeout(self.hash_wait(size))
            try:
                word, rest = self._reply(_text(path))
            finally:
                if size is not None and not self.closed:
                    self.channel.sock.settimeout(self.timeout)
        parts = rest.split(" ")
        if word != OK or len(parts) != 3 or parts[0] != "sha256" or len(parts[1]) != 64:
            raise ProtocolError("malformed HASH reply from server")
        return parts[1]

    def hash_wait(self, size: int) -> float:
        """Seconds a HASH of a ``size``-byte file may take before it counts as stalled."""
        return self.timeout + size / HASH_RATE_FLOOR

    def get(self, path: str | Sequence[str], file: BinaryIO, offset: int = 0,
            progress: Progress | None = None, cancel: Cancel | None = None,
            version: str | None = None) -> Received:
        """Write the file from ``offset`` to its end into ``file``.

        With ``version``, the server refuses (Changed) unless the file is still
        that version: the safe way to resume a download. ``progress(done)``
        gets the bytes received so far (not counting ``offset``); ``cancel()``
        returning True stops the transfer, closes the session and raises
        Cancelled.
        """
        request = "GET " + encode_path(path)
        if offset or version:
            request += " %d" % offset
        if version:
            request += " " + parse_token(version, "version")
        write = getattr(file, "write")
        with self._exchange():
            word, rest = self._request(request, _text(path))
            length_text, _, got_version = rest.partition(" ")
            length = parse_decimal(length_text, "length")
            got_version = parse_token(got_version, "version")
            self.channel.read_exact_into(write, length, progress, cancel)
        return Received(length, got_version)

    def put(self, path: str | Sequence[str], file: BinaryIO, size: int,
            progress: Progress | None = None, cancel: Cancel | None = None,
            replace: bool = False, on_token: Callable[[str], None] | None = None) -> Stored:
        """Upload ``size`` bytes read from ``file`` (from its current position) to ``path``.

        Raises Exists when the path is taken (before any byte is sent, or when
        another session stored it first); with ``replace`` an existing file is
        replaced atomically (the server needs the ``w`` and ``d`` permissions).
        ``on_token(token)`` hears the upload's token before the bytes go, so a
        broken upload can be continued with ``resume``.
        """
        request = "PUT %s %d" % (encode_path(path), size)
        if replace:
            request += " replace"
        with self._exchange():
            word, rest = self._request(request, _text(path))
            if word == EXISTS:
                raise Exists("%s is already in the library" % _text(path))
            token = parse_token(rest, "upload token")
            if on_token is not None:
                on_token(token)
            return self._send_upload(path, file, size, progress, cancel)

    def resume(self, token: str, file: BinaryIO, size: int,
               progress: Progress | None = None, cancel: Cancel | None = None,
               path: str | Sequence[str] = "") -> Stored:
        """Continue a broken upload: the server says how much it kept, the rest is sent.

        ``file`` is the whole local file (positioned anywhere: it is seeked to
        the server's offset); ``size`` its full size, as in the PUT. NotFound
        when the server no longer keeps that upload.
        """
        with self._exchange():
            word, rest = self._request("RESUME " + parse_token(token, "upload token"))
            offset = parse_decimal(rest, "offset")
            if offset > size:
                raise ProtocolError("the server kept more bytes than the file has")
            file.seek(offset)
            if progress is not None:
                progress(offset)
            absolute = (lambda done: progress(offset + done)) if progress else None
            return self._send_upload(path, file, size - offset, absolute, cancel)

    def _send_upload(self, path, file, count: int, progress, cancel) -> Stored:
        if _is_regular(file):
            self.channel.send_file(file, file.tell(), count, progress, cancel)
        else:
            self.channel.send_stream(file.read, count, progress, cancel)
        word, rest = self._reply(_text(path))
        if word == EXISTS:
            raise Exists("%s was stored by someone else first" % (_text(path) or "the file"))
        size_text, _, version = rest.partition(" ")
        return Stored(parse_decimal(size_text, "size"), parse_token(version, "version"))

    def abort_upload(self, token: str) -> None:
        """Drop the bytes the server kept of a broken upload (ABORT)."""
        self._simple("ABORT " + parse_token(token, "upload token"))

    def mkdir(self, path: str | Sequence[str]) -> None:
        self._simple("MKDIR " + encode_path(path), _text(path))

    def rmdir(self, path: str | Sequence[str]) -> None:
        self._simple("RMDIR " + encode_path(path), _text(path))

    def delete(self, path: str | Sequence[str]) -> None:
        """Delete a file: to the trash where the server keeps one (feature ``trash``)."""
        self._simple("DELETE " + encode_path(path), _text(path))

    def rename(self, source: str | Sequence[str], target: str | Sequence[str]) -> None:
        """Move a file or folder; never replaces (Exists)."""
        self._simple("RENAME %s %s" % (encode_path(source), encode_path(target)),
                     _text(source))

    def trash(self) -> list[TrashEntry]:
        """What can be restored, newest first."""
        with self._exchange():
            word, rest = self._request("TRASH")
            if word == EMPTY:
                return []
            count = parse_decimal(rest, "count")
            entries = []
            for _ in range(count):
                parts = self._read_line().split(" ")
                if len(parts) != 4:
                    raise ProtocolError("malformed TRASH line from server")
                entries.append(TrashEntry(parse_token(parts[0], "trash id"),
                                          join_path(decode_path(parts[1])),
                                          parse_decimal(parts[2], "size"), _integer(parts[3])))
            return entries

    def restore(self, trash_id: str, path: str | Sequence[str] | None = None) -> str:
        """Put a trashed file back (where it was, or at ``path``); its version."""
        request = "RESTORE " + parse_token(trash_id, "trash id")
        if path is not None:
            request += " " + encode_path(path)
        return parse_token(self._simple(request, _text(path) if path else None), "version")

    def purge(self, trash_id: str) -> None:
        self._simple("PURGE " + parse_token(trash_id, "trash id"))

    def space(self) -> tuple[int, int]:
        """(bytes free for uploads, size of the library's file system)."""
        parts = self._simple("SPACE").split(" ")
        if len(parts) != 2:
            raise ProtocolError("malformed SPACE reply from server")
        return parse_decimal(parts[0], "free"), parse_decimal(parts[1], "total")


def _text(path) -> str:
    return path if isinstance(path, str) else join_path(path)


def _integer(text: str) -> int:
    """A signed decimal from the server (mtimes before 1970 are negative)."""
    negative = text.startswith("-")
    value = parse_decimal(text[1:] if negative else text, "number")
    return -value if negative else value


def _is_regular(file) -> bool:
    try:
        return stat_module.S_ISREG(os.fstat(file.fileno()).st_mode)
    except (AttributeError, OSError, ValueError):
        return False
