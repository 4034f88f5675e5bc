"""TLS for shelfd (``--tls``): the certificate, the server context, and the TLS handler.

Which process does what:

- The master builds one ``ssl.SSLContext`` before the first fork (``load_context``)
  and never does a handshake. Every session process, forked per client or
  ready in the pool, inherits that context, and with it OpenSSL's session
  ticket keys (random per context): a client that reconnects with the
  ``SSLSession`` of an earlier connection resumes it (an abbreviated
  handshake) whichever process serves it. SIGHUP builds a new context
  (``TlsHandler.reload_certificate``); a pair that does not load is logged
  and the old context stays. Sessions forked afterwards, and the pool's
  processes (which a reload replaces), use the new one; tickets issued under
  the old context then fall back to a full handshake.
- A session process does the handshake (``TlsSession.run``), non-blocking
  against a deadline of the idle timeout and watching its stop pipe: a silent
  client holds only its own process, and a stop is never held up by one.
  Then the ordinary ``daemon.session.Session`` serves the SSL socket; its
  ``Channel`` turns zero-copy off by itself (an ``ssl.SSLSocket`` is not a
  plain socket), so GET's sendfile and PUT's splice become read/send.
- A refusal (at ``--max-clients`` or ``--max-per-ip``) must say BUSY *inside*
  TLS, so after a handshake, which the master must not wait for. ``refuse``
  forks a short-lived refuser (forked twice, so nobody has to reap it: the
  first child exits at once and is waited for on the spot), which closes
  every other descriptor, does the handshake and sends BUSY within
  ``REFUSE_SECONDS`` (an alarm ends it past that). Each refuser lives at most
  that long, so counting those started in that window bounds how many run:
  past ``MAX_REFUSERS`` a client is closed without a word, and a flood of
  clients at the limit cannot become a flood of processes. (The other way,
  admitting the client to a session process that finds itself over the limit,
  would need the limits inside the session processes for the forked path
  too; a refuser keeps the limits where they are.)

The certificate: ``--tls-cert``/``--tls-key``, or else a self-signed ECDSA
P-256 certificate made on first start in ``--state-dir`` (``certificate_files``)
for the host's names and addresses, reused afterwards. The state folder
defaults to ``$STATE_DIRECTORY`` (systemd's ``StateDirectory=``), then
``/var/lib/shelf`` for root, then the user's state folder. The key is written
0600, and both files atomically (a temporary file renamed into place), the
key first: a crash in between leaves no certificate, and the next start
makes a new pair. ``cryptography`` is imported only to make a certificate;
``ssl`` is needed in the master for the context, and this module is imported
only with ``--tls``, so a plain master stays as small as before.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import select
import signal
import socket
import ssl
import time
from collections import deque

from common import protocol
from common.protocol import ShelfError
from daemon.sessionlog import session_log

log = logging.getLogger("shelfd")

CERT_NAME, KEY_NAME = "tls-cert.pem", "tls-key.pem"
SELF_SIGNED_DAYS = 3650       # a self-signed certificate is pinned, not renewed
REFUSE_SECONDS = 10           # a refuser's handshake and BUSY, at most
MAX_REFUSERS = 16             # refusers running at once (by their start times)


class TlsSetupError(ShelfError):
    """The certificate or key cannot be used (one line for the user)."""


# -- where the certificate lives ---------------------------------------------------

def default_state_dir() -> str:
    """systemd's ``$STATE_DIRECTORY``, else /var/lib/shelf for root, else the user's."""
    given = os.environ.get("STATE_DIRECTORY")
    if given:
        return given.split(":")[0]
    if os.geteuid() == 0:
        return "/var/lib/shelf"
    # platformdirs' answer on Linux, without it (the packaged shelfd leaves it out)
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "shelf")


def certificate_files(settings) -> tuple[str, str]:
    """(certificate, key) paths: the given pair, or the self-signed one (made if missing)."""
    if settings.tls_cert:
        return settings.tls_cert, settings.tls_key
    folder = settings.state_dir or default_state_dir()
    cert, key = os.path.join(folder, CERT_NAME), os.path.join(folder, KEY_NAME)
    if not (os.path.exists(cert) and os.path.exists(key)):
        try:
            os.makedirs(folder, 0o700, exist_ok=True)
            make_self_signed(cert, key, host_names(settings.host))
        except OSError as exc:
            raise TlsSetupError("cannot create a self-signed certificate in %s: %s"
                                % (folder, (exc.strerror or str(exc)).lower())) from None
        log.info("created a self-signed TLS certificate %s", cert)
    return cert, key


def host_names(listen_host: str) -> list[str]:
    """The names and addresses a self-signed certificate is made for."""
    names = [socket.gethostname(), socket.getfqdn(), "localhost", "127.0.0.1", "::1"]
    if listen_host and listen_host not in ("0.0.0.0", "::"):
        names.append(listen_host)
    seen = []
    for name in names:
        if name and name not in seen:
            seen.append(name)
    return seen


def make_self_signed(cert_path: str, key_path: str, names: list[str]) -> None:
    """Write a new ECDSA P-256 key (0600) and a self-signed certificate for ``names``."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    alternative = []
    for name in names:
        try:
            alternative.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternative.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64]),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "shelfd self-signed")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256()))
    write_atomically(key_path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()), 0o600)
    write_atomically(cert_path, certificate.public_bytes(serialization.Encoding.PEM), 0o644)


def write_atomically(path: str, data: bytes, mode: int) -> None:
    """Write ``data`` to a temporary file with ``mode``, flush it to disk, rename it over ``path``."""
    temporary = "%s.%d.tmp" % (path, os.getpid())
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # whatever the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(temporary)
        raise
    os.close(fd)
    os.rename(temporary, path)
    folder = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


# -- the context -------------------------------------------------------------------

def load_context(cert_path: str, key_path: str) -> tuple[ssl.SSLContext, str]:
    """A server context (TLS 1.2 or newer) for this pair, and the certificate's fingerprint."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION
    try:
        context.load_cert_chain(cert_path, key_path)
        with open(cert_path, encoding="ascii", errors="replace") as handle:
            pem = handle.read()
        der = ssl.PEM_cert_to_DER_cert(pem[:pem.index(ssl.PEM_FOOTER) + len(ssl.PEM_FOOTER)])
    except OSError as exc:
        if isinstance(exc, ssl.SSLError):
            raise TlsSetupError("TLS certificate %s and key %s do not make a pair: %s"
                                % (cert_path, key_path, exc.reason or exc)) from None
        raise TlsSetupError("cannot read TLS certificate or key: %s: %s"
                            % (exc.filename or cert_path,
                               (exc.strerror or str(exc)).lower())) from None
    except ValueError:
        raise TlsSetupError("TLS certificate %s holds no PEM certificate" % cert_path) from None
    return context, "sha256:" + hashlib.sha256(der).hexdigest()


# -- the handler -------------------------------------------------------------------

class TlsHandler:
    """Shelf inside TLS: the ``Handler`` of a ``--tls`` listener (see ``daemon.server``).

    Wraps a ``ShelfHandler`` (``inner``): the handshake first, then the same
    session with ``tls=True``. Built in the master; ``settings()`` gives the
    settings in effect (the idle timeout bounds the handshake).
    """

    name = "shelf-tls"

    def __init__(self, inner, settings):
        self.inner = inner
        self.settings = settings
        self.context: ssl.SSLContext | None = None
        self.fingerprint = ""
        self.refusers: deque[float] = deque()  # start times of the running refusers

    def load_certificate(self, settings) -> str:
        """Load (or first make) the certificate; its fingerprint. TlsSetupError if it cannot."""
        context, fingerprint = load_context(*certificate_files(settings))
        self.context, self.fingerprint = context, fingerprint
        return fingerprint

    def reload_certificate(self, settings) -> None:
        """SIGHUP: re-read certificate and key; if they do not load, the old context stays."""
        try:
            self.load_certificate(settings)
        except ShelfError as exc:
            log.error("reload: %s; still serving the certificate loaded before", exc)
            return
        log.info("tls certificate %s", self.fingerprint)

    def session(self, sock: socket.socket, peer: str, stop_fd: int | None) -> "TlsSession":
        return TlsSession(self, sock, peer, stop_fd)

    def refuse(self, sock: socket.socket, peer: str, why: str) -> None:
        """BUSY inside TLS, from a short-lived refuser process (see the module docstring)."""
        now = time.monotonic()
        while self.refusers and self.refusers[0] < now - REFUSE_SECONDS - 1:
            self.refusers.popleft()
        if len(self.refusers) >= MAX_REFUSERS:
            log.warning("%s closed without BUSY: %d TLS refusals already under way",
                        peer, len(self.refusers))
            return
        from daemon.server import fork_with_stops_blocked

        pid = fork_with_stops_blocked()
        if pid:
            self.refusers.append(now)
            while True:
                try:
                    os.waitpid(pid, 0)  # the first child leaves at once
                    break
                except InterruptedError:
                    continue
                except ChildProcessError:
                    break
            return
        try:  # the first child: fork the refuser and leave, so the caller reaps at once
            if os.fork() == 0:
                self._refuser_main(sock)
        except BaseException:  # noqa: BLE001 - a child never returns into the caller
            pass
        finally:
            os._exit(0)

    def _refuser_main(self, sock: socket.socket) -> None:
        """In the refuser: only the client's socket stays; handshake, BUSY, close."""
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD,
                       signal.SIGUSR1, signal.SIGALRM):
            signal.signal(signum, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        signal.alarm(REFUSE_SECONDS + 1)
        keep = sock.fileno()
        os.closerange(3, keep)
        os.closerange(keep + 1, 65536)
        deadline = time.monotonic() + min(REFUSE_SECONDS, self.settings().idle_timeout)
        try:
            tls = handshake(self.context, sock, deadline)
        except HandshakeFailed:
            return
        try:
            tls.settimeout(max(0.1, deadline - time.monotonic()))
            tls.sendall((protocol.BUSY + "\n").encode("ascii"))
            tls.unwrap()  # close_notify: the client reads BUSY, then a clean end
        except (OSError, ValueError):
            pass
        finally:
            tls.close()

    @property
    def proxies(self):
        """The balancers allowed to send a PROXY header: the header precedes the handshake."""
        return self.inner.proxies

    def warm_up(self) -> None:
        self.inner.warm_up()


class HandshakeFailed(Exception):
    """A client that did not complete its handshake (str(): why, for the log)."""


def handshake(context: ssl.SSLContext, sock: socket.socket, deadline: float,
              stop_fd: int | None = None, stopping=lambda: False) -> ssl.SSLSocket:
    """The server side of a handshake, by ``deadline``: the SSL socket, or HandshakeFailed.

    Non-blocking: waits in ``select`` on the socket and on ``stop_fd`` (a
    signal wakes it; ``stopping()`` says whether that was a stop). The socket
    is closed when the handshake fails.
    """
    sock.setblocking(False)
    # TLS 1.3 sends its session tickets in a write of their own just before the
    # greeting: with Nagle the greeting would wait for the client's delayed ACK
    # (40 ms on Linux) on every connection.
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass
    tls = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    stop = [] if stop_fd is None else [stop_fd]
    try:
        while True:
            try:
                tls.do_handshake()
                return tls
            except ssl.SSLWantReadError:
                readers, writers = [tls, *stop], []
            except ssl.SSLWantWriteError:
                readers, writers = stop, [tls]
            if stopping():
                raise HandshakeFailed("stopping during the TLS handshake")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HandshakeFailed("no TLS handshake within the idle timeout")
            readable, _, _ = select.select(readers, writers, [], remaining)
            if stop_fd is not None and stop_fd in readable:
                try:
                    os.read(stop_fd, 4096)
                except BlockingIOError:
                    pass
    except ssl.SSLError as exc:
        tls.close()
        reason = exc.reason or exc.strerror or str(exc)
        raise HandshakeFailed("TLS handshake failed: %s" % reason.lower().replace("_", " ")) \
            from None
    except OSError as exc:
        tls.close()
        raise HandshakeFailed("TLS handshake failed: %s"
                              % (exc.strerror or str(exc) or type(exc).__name__).lower()) from None
    except HandshakeFailed:
        tls.close()
        raise


class TlsSession:
    """One client of a TLS listener, in its session process: handshake, then Shelf."""

    def __init__(self, handler: TlsHandler, sock: socket.socket, peer: str,
                 stop_fd: int | None):
        self.handler = handler
        self.sock = sock
        self.peer = peer
        self.stop_fd = stop_fd
        self.stopping = False
        self.inner = None

    def request_stop(self) -> None:
        """Signal-handler safe: a flag, passed on to the Shelf session once there is one."""
        self.stopping = True
        if self.inner is not None:
            self.inner.request_stop()

    def run(self) -> None:
        from daemon.session import Session

        handler = self.handler
        idle_timeout = handler.settings().idle_timeout
        started = time.monotonic()
        try:
            tls = handshake(handler.context, self.sock, started + idle_timeout, self.stop_fd,
                            lambda: self.stopping)
        except HandshakeFailed as failure:
            session_log.info("%s session ended after 0 requests, %.1f s: %s", self.peer,
                             time.monotonic() - started, failure)
            return
        try:
            inner = handler.inner
            self.inner = Session(tls, self.peer, inner.library, idle_timeout,
                                 stop_fd=self.stop_fd, tls=True)
            if self.stopping:
                self.inner.request_stop()
            self.inner.run()
        finally:
            tls.close()
