"""Naming things on the server: the server URL, and remote paths as people type them.

No I/O, no state. ``parse_server`` reads ``shelf://[USER@]HOST[:PORT]`` (and
``shelfs://...``, a TLS server; the same default port). A URL never holds a
password (``USER:PASSWORD@`` is refused): it would show in the process
list and the shell's history. ``resolve``
turns a typed path into the segments the wire carries, relative to a current
folder (the shell's ``cd``; the root for one-shot commands). ``.`` and ``..``
are client-side arithmetic only: the wire never carries them.
"""

from __future__ import annotations

from typing import NamedTuple

from common.files import LocalError
from common.protocol import (DEFAULT_PORT, USER_NAME, InvalidName, check_path_length,
                             validate_name)

Path = tuple  # a remote path: a tuple of valid segments; () is the root


class Server(NamedTuple):
    host: str
    port: int
    tls: bool = False  # shelfs://
    user: str | None = None  # USER@: LOGIN as this user

    def url(self) -> str:
        host = "[%s]" % self.host if ":" in self.host else self.host
        user = self.user + "@" if self.user else ""
        return "%s://%s%s:%d" % ("shelfs" if self.tls else "shelf", user, host, self.port)


class BadServer(LocalError):
    """A server URL shelf-cli cannot use (a usage error)."""


def parse_server(url: str) -> Server:
    """``shelf://HOST[:PORT]`` or ``shelfs://...`` (IPv6 in brackets) into (host, port, tls)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise BadServer("not a server URL: %r (write shelf://HOST[:PORT])" % url)
    scheme = scheme.lower()
    if scheme not in ("shelf", "shelfs"):
        raise BadServer("unknown kind of server URL %r (write shelf://HOST[:PORT], or "
                        "shelfs://HOST[:PORT] for TLS)" % url)
    rest = rest.rstrip("/")
    if "/" in rest or "?" in rest or "#" in rest:
        raise BadServer("a server URL names a server, not a path: %r" % url)
    user = None
    if "@" in rest:
        user, _, rest = rest.rpartition("@")
        if ":" in user:
            raise BadServer("never put a password in a server URL (it shows in the process "
                            "list); use SHELF_PASSWORD, --password-stdin or the prompt")
        if not USER_NAME.fullmatch(user):
            raise BadServer("bad user name %r in %s: 1 to 64 letters, digits, '.', '_' or '-'"
                            % (user, url))
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise BadServer("bad IPv6 address in %r" % url)
        port_text = tail[1:] if tail else ""
    else:
        host, colon, port_text = rest.rpartition(":") if ":" in rest else (rest, "", "")
        if colon and not port_text:
            raise BadServer("no port after ':' in %r" % url)
    if not host:
        raise BadServer("no host in %r" % url)
    port = DEFAULT_PORT
    if port_text:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise BadServer("bad port %r in %s (1-65535)" % (port_text, url))
        port = int(port_text)
    return Server(host, port, scheme == "shelfs", user)


def resolve(typed: str, current: Path = ()) -> Path:
    """The path ``typed`` names, seen from the folder ``current``.

    A leading ``/`` starts at the root; empty segments and ``.`` are skipped;
    ``..`` goes up one folder and stops at the root (as in a POSIX shell).
    Every other segment must be a valid name (InvalidName otherwise).
    """
    segments = [] if typed.startswith("/") else list(current)
    for segment in typed.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        try:
            validate_name(segment)
        except InvalidName as exc:
            raise InvalidName("%s: %s" % (exc, typed)) from None
        segments.append(segment)
    path = tuple(segments)
    check_path_length(path)
    return path


def text(path: Path) -> str:
    """How a path is shown: ``photos/hi.txt``; the root is ``/``."""
    return "/".join(path) if path else "/"


def wants_folder(typed: str) -> bool:
    """``photos/`` (or ``/``, ``.``, ``..``): the user names a folder to put things in."""
    return typed.endswith("/") or typed in ("", ".", "..") or typed.endswith("/.") \
        or typed.endswith("/..")
