"""Whom a TLS client trusts: a CA the system trusts, else a fingerprint it has pinned.

Shared by every front end (the terminal client now, the desktop client later);
runs in whichever thread opens the connection, and holds no lock: a ``Trust``
belongs to one front end, and ``known_servers`` is rewritten atomically (two
programs that pin at once: the last one's file wins, and both pins were true).

The order, per connection (``Trust.connect``):

1. A server pinned in ``known_servers`` (or given with ``--trust``): one
   handshake that does not check a CA, then the certificate's SHA-256 must be
   the pinned one. If it is not, a certificate that a CA the system trusts
   vouches for is still accepted (the admin moved to a real certificate; the
   stale pin is dropped); otherwise ``TrustRefused``, and it says plainly
   that the certificate changed, as SSH says "host identification has
   changed". ``--trust`` names the one fingerprint to accept: it replaces a
   pin (how a user accepts a change they expected) and is never asked about.
2. Otherwise a handshake that checks the certificate against the system's
   CAs (plus ``cafile``) and the host name. If that fails (self-signed, an
   unknown CA, another host name), a second handshake fetches the
   certificate, and ``ask(fingerprint)`` decides (a terminal asks the user);
   a yes is remembered. No ``ask``: ``TrustRefused`` naming the fingerprint.

Dates: an expired (or not yet valid) certificate is refused, pinned or not,
with its date in the message. A CA check refuses it anyway; a pin could
accept it, but a server whose certificate ran out needs its admin, and
accepting it silently would teach users to ignore the word "expired".

Session resumption: the contexts are made once per ``Trust``, so an
``ssl.SSLSession`` from an earlier connection (``Client.tls_session``) can be
handed to the next one, which then skips the full handshake. The pinned
fingerprint is still checked on a resumed session (OpenSSL keeps the peer's
certificate in the session).

known_servers: ``platformdirs.user_config_dir("shelf")/known_servers``, one
line per server, ``HOST:PORT sha256:<64 hex>`` (``[v6]:PORT`` for IPv6);
lines starting with ``#`` and blank lines are kept as they are.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import socket
import ssl
from typing import Callable

from common.protocol import ShelfError

_FINGERPRINT = re.compile(r"sha256:([0-9a-f]{64})")


class TrustRefused(ShelfError):
    """The server's certificate is not trusted; str() says why, for a person.

    ``fingerprint`` is what the server showed; ``changed`` is True when a
    pinned server now shows another certificate.
    """

    def __init__(self, message: str, fingerprint: str | None = None, changed: bool = False):
        super().__init__(message)
        self.fingerprint = fingerprint
        self.changed = changed


def fingerprint_of(der: bytes) -> str:
    """``sha256:<hex>`` of a DER certificate: what shelfd logs and users compare."""
    return "sha256:" + hashlib.sha256(der).hexdigest()


def parse_fingerprint(text: str) -> str:
    """A typed fingerprint in canonical form (colons and case forgiven); ValueError if not one."""
    cleaned = text.strip().lower()
    if cleaned.startswith("sha256:"):
        cleaned = "sha256:" + cleaned[7:].replace(":", "")
    if not _FINGERPRINT.fullmatch(cleaned):
        raise ValueError("not a certificate fingerprint: %r (write sha256:<64 hex digits>)"
                         % text)
    return cleaned


def server_key(host: str, port: int) -> str:
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


class KnownServers:
    """The pinned fingerprints, one line per ``host:port``, in the user's config folder."""

    def __init__(self, path: str | None = None):
        if path is None:
            from platformdirs import user_config_dir
            path = os.path.join(user_config_dir("shelf", appauthor=False), "known_servers")
        self.path = path

    def _lines(self) -> list[str]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                return handle.read().splitlines()
        except FileNotFoundError:
            return []

    def lookup(self, host: str, port: int) -> str | None:
        key = server_key(host, port)
        for line in self._lines():
            words = line.split()
            if len(words) == 2 and words[0] == key and _FINGERPRINT.fullmatch(words[1]):
                return words[1]
        return None

    def remember(self, host: str, port: int, fingerprint: str | None) -> None:
        """Pin ``fingerprint`` for the server (None: forget it); the file is replaced atomically."""
        key = server_key(host, port)
        lines = [line for line in self._lines() if line.split()[:1] != [key]]
        if fingerprint is not None:
            lines.append("%s %s" % (key, fingerprint))
        folder = os.path.dirname(self.path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        temporary = "%s.%d.tmp" % (self.path, os.getpid())
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write("".join(line + "\n" for line in lines))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)

    def forget(self, host: str, port: int) -> None:
        self.remember(host, port, None)


class Trust:
    """How one front end decides whom to trust (see the module docstring).

    ``ask(fingerprint) -> bool`` is called on first contact with a server no
    CA vouches for (``unverified_reason`` then says why the CA check failed);
    ``fingerprint`` (``--trust``) is accepted without asking; ``cafile`` adds
    CAs to the system's (a private CA, tests).
    """

    def __init__(self, known: KnownServers | None = None,
                 ask: Callable[[str], bool] | None = None, fingerprint: str | None = None,
                 cafile: str | None = None):
        self.known = known if known is not None else KnownServers()
        self.ask = ask
        self.fingerprint = parse_fingerprint(fingerprint) if fingerprint else None
        self.cafile = cafile
        self.unverified_reason = ""
        self._verifying: ssl.SSLContext | None = None
        self._pinning: ssl.SSLContext | None = None

    def verifying_context(self) -> ssl.SSLContext:
        if self._verifying is None:
            context = ssl.create_default_context(cafile=self.cafile)
            if self.cafile:
                context.load_default_certs()
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            self._verifying = context
        return self._verifying

    def pinning_context(self) -> ssl.SSLContext:
        """No CA check: the caller compares the fingerprint (and the dates)."""
        if self._pinning is None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            self._pinning = context
        return self._pinning

    def connect(self, open_socket: Callable[[], socket.socket], host: str, port: int,
                session: ssl.SSLSession | None = None) -> ssl.SSLSocket:
        """A TLS socket to a server we trust, or TrustRefused.

        ``open_socket()`` returns a new connected TCP socket (called again
        when a second handshake is needed). Handshake failures other than
        trust raise ssl.SSLError or OSError, for the caller to name.
        """
        pinned = self.fingerprint or self.known.lookup(host, port)
        if pinned:
            tls = _handshake(self.pinning_context(), open_socket(), host, session)
            seen = fingerprint_of(tls.getpeercert(binary_form=True))
            if seen == pinned:
                _check_dates(tls, host, port, seen)
                if self.fingerprint and self.known.lookup(host, port) != seen:
                    self.known.remember(host, port, seen)
                return tls
            tls.close()
            if self.fingerprint:
                raise TrustRefused(
                    "the certificate of %s is %s, not the one given with --trust (%s)"
                    % (server_key(host, port), seen, self.fingerprint), seen)
            try:
                tls = _handshake(self.verifying_context(), open_socket(), host, session)
            except ssl.SSLCertVerificationError:
                raise TrustRefused(changed_message(host, port, pinned, seen, self.known.path),
                                   seen, changed=True) from None
            self.known.forget(host, port)  # a CA vouches for the new one: the pin is stale
            return tls
        try:
            return _handshake(self.verifying_context(), open_socket(), host, session)
        except ssl.SSLCertVerificationError as exc:
            self.unverified_reason = exc.verify_message or str(exc)
        tls = _handshake(self.pinning_context(), open_socket(), host, None)
        try:
            seen = fingerprint_of(tls.getpeercert(binary_form=True))
            _check_dates(tls, host, port, seen)
            if self.ask is None:
                raise TrustRefused(
                    "the certificate of %s is not trusted (%s) and this is the first contact; "
                    "its fingerprint is %s: check it with the server's admin (shelfd logs it) "
                    "and accept it with --trust %s"
                    % (server_key(host, port), self.unverified_reason, seen, seen), seen)
            if not self.ask(seen):
                raise TrustRefused("the certificate of %s (%s) was not accepted"
                                   % (server_key(host, port), seen), seen)
        except BaseException:
            tls.close()
            raise
        self.known.remember(host, port, seen)
        return tls


def changed_message(host: str, port: int, pinned: str, seen: str, path: str) -> str:
    return ("THE CERTIFICATE OF %s HAS CHANGED since it was trusted: it was %s and is now %s. "
            "Someone may be intercepting the connection, or the server got a new certificate. "
            "Ask its admin for the fingerprint (shelfd logs it); if it is the new one, accept "
            "it with --trust %s (or remove the line from %s)"
            % (server_key(host, port), pinned, seen, seen, path))


def _handshake(context: ssl.SSLContext, sock: socket.socket, host: str,
               session: ssl.SSLSession | None) -> ssl.SSLSocket:
    """Client handshake on ``sock`` (closed on failure), resuming ``session`` when it is ours."""
    try:
        tls = context.wrap_socket(sock, server_hostname=host.strip("[]"),
                                  do_handshake_on_connect=False)
    except BaseException:
        sock.close()
        raise
    try:
        if session is not None:
            try:
                tls.session = session
            except ValueError:
                pass  # another context's session: a full handshake
        tls.do_handshake()
    except BaseException:
        tls.close()
        raise
    return tls


def _check_dates(tls: ssl.SSLSocket, host: str, port: int, seen: str) -> None:
    """TrustRefused for an expired or not yet valid certificate."""
    from cryptography import x509

    certificate = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
    now = datetime.datetime.now(datetime.timezone.utc)
    ends, starts = certificate.not_valid_after_utc, certificate.not_valid_before_utc
    if now > ends:
        tls.close()
        raise TrustRefused("the certificate of %s (%s) expired on %s: the server's admin must "
                           "renew it" % (server_key(host, port), seen,
                                         ends.strftime("%Y-%m-%d %H:%M UTC")), seen)
    if now < starts:
        tls.close()
        raise TrustRefused("the certificate of %s (%s) is not valid before %s (is a clock "
                           "wrong?)" % (server_key(host, port), seen,
                                        starts.strftime("%Y-%m-%d %H:%M UTC")), seen)
