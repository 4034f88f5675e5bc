"""shelfd --tls end to end: a real shelfd on --port 0, real TCP and TLS, no mocks.

Certificates are made here with ``cryptography``: a test CA and the server
certificates it signs (right names, wrong names, expired), besides the
self-signed one shelfd makes for itself. The client side is the real
``common.client.Client`` with a ``common.trust.Trust`` whose known_servers
file lives in the test's folder.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import os
import re
import signal
import socket
import ssl
import stat
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from common.client import CannotConnect, Client, ServerBusy
from common.trust import KnownServers, Trust, TrustRefused
from helpers import wait_for

NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


# -- certificates ------------------------------------------------------------------

class CA:
    """A test certificate authority that writes PEM files into a folder."""

    def __init__(self, folder):
        self.folder = folder
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Shelf test CA")])
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(NOW - DAY).not_valid_after(NOW + 30 * DAY)
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                     .sign(self.key, hashes.SHA256()))
        self.path = folder / "ca.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, stem: str, names=("localhost", "127.0.0.1"), not_before=None,
              not_after=None):
        """(cert path, key path, fingerprint) of a server certificate for ``names``."""
        import ipaddress

        key = ec.generate_private_key(ec.SECP256R1())
        alternative = []
        for name in names:
            try:
                alternative.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alternative.append(x509.DNSName(name))
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(not_before or NOW - DAY)
                .not_valid_after(not_after or NOW + 10 * DAY)
                .add_extension(x509.SubjectAlternativeName(alternative), False)
                .sign(self.key, hashes.SHA256()))
        cert_path, key_path = self.folder / (stem + ".pem"), self.folder / (stem + ".key")
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        der = cert.public_bytes(serialization.Encoding.DER)
        return cert_path, key_path, "sha256:" + hashlib.sha256(der).hexdigest()


@pytest.fixture
def ca(tmp_path):
    folder = tmp_path / "pki"
    folder.mkdir()
    return CA(folder)


@pytest.fixture
def known(tmp_path):
    return KnownServers(str(tmp_path / "known_servers"))


def logged_fingerprints(daemon) -> list[str]:
    return re.findall(r"tls certificate (sha256:[0-9a-f]{64})", daemon.log())


def served_fingerprint(port: int) -> str:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            return "sha256:" + hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()


def tls_daemon(daemon_factory, tmp_path, *args):
    return daemon_factory(None, "--tls", "--state-dir", str(tmp_path / "state"), *args)


def pinned_client(daemon, known, fingerprint, **kwargs) -> Client:
    return Client("127.0.0.1", daemon.port, timeout=10, tls=True,
                  trust=Trust(known=known, fingerprint=fingerprint), **kwargs)


def never_asked(fingerprint):
    raise AssertionError("asked about %s" % fingerprint)


# -- the self-signed certificate --------------------------------------------------------

def test_first_start_makes_a_self_signed_certificate_and_later_starts_reuse_it(
        daemon_factory, tmp_path, known):
    first = tls_daemon(daemon_factory, tmp_path)
    state = tmp_path / "state"
    cert, key = state / "tls-cert.pem", state / "tls-key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert not list(state.glob("*.tmp"))
    assert re.search(r"listening on 127\.0\.0\.1:%d \(tls\)" % first.port, first.log())
    [fingerprint] = logged_fingerprints(first)
    assert served_fingerprint(first.port) == fingerprint
    loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    assert isinstance(loaded.public_key(), ec.EllipticCurvePublicKey)
    assert loaded.public_key().curve.name == "secp256r1"
    names = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert socket.gethostname() in names.get_values_for_type(x509.DNSName)
    assert {str(a) for a in names.get_values_for_type(x509.IPAddress)} >= {"127.0.0.1", "::1"}
    with pinned_client(first, known, fingerprint) as client:
        assert "tls" in client.features
        assert client.fingerprint == fingerprint
    first.stop()
    again = tls_daemon(daemon_factory, tmp_path)
    assert logged_fingerprints(again) == [fingerprint]
    assert "created a self-signed" not in again.log()
    assert served_fingerprint(again.port) == fingerprint


def test_a_plain_listener_greets_without_tls(shelfd):
    raw = shelfd.connect()
    try:
        assert "tls" not in raw.greeting.split()
    finally:
        raw.sock.close()


# -- what the client trusts ---------------------------------------------------------------

def test_a_ca_signed_certificate_is_accepted_without_pinning(daemon_factory, library, ca, known):
    cert, key, fingerprint = ca.issue("server")
    daemon = daemon_factory(library, "--tls", "--tls-cert", str(cert), "--tls-key", str(key))
    assert logged_fingerprints(daemon) == [fingerprint]
    trust = Trust(known=known, ask=never_asked, cafile=str(ca.path))
    with Client("localhost", daemon.port, timeout=10, tls=True, trust=trust) as client:
        client.noop()
        assert client.fingerprint == fingerprint
    assert known.lookup("localhost", daemon.port) is None  # nothing pinned


def test_a_wrong_host_name_falls_back_to_asking_then_to_the_pin(daemon_factory, library, ca,
                                                                known):
    cert, key, fingerprint = ca.issue("other", names=("files.example.org",))
    daemon = daemon_factory(library, "--tls", "--tls-cert", str(cert), "--tls-key", str(key))
    asked = []
    trust = Trust(known=known, ask=lambda seen: asked.append(seen) or False,
                  cafile=str(ca.path))
    with pytest.raises(TrustRefused) as refused:
        Client("127.0.0.1", daemon.port, timeout=10, tls=True, trust=trust)
    assert asked == [fingerprint] and refused.value.fingerprint == fingerprint
    assert "127.0.0.1" in trust.unverified_reason or "mismatch" in trust.unverified_reason
    assert known.lookup("127.0.0.1", daemon.port) is None
    trust.ask = lambda seen: asked.append(seen) or True
    with Client("127.0.0.1", daemon.port, timeout=10, tls=True, trust=trust) as client:
        client.noop()
    assert known.lookup("127.0.0.1", daemon.port) == fingerprint
    trust.ask = never_asked  # remembered: not asked again
    with Client("127.0.0.1", daemon.port, timeout=10, tls=True, trust=trust) as client:
        client.noop()


def test_an_expired_certificate_is_refused_even_when_pinned(daemon_factory, library, ca, known):
    cert, key, fingerprint = ca.issue("old", not_before=NOW - 30 * DAY, not_after=NOW - DAY)
    daemon = daemon_factory(library, "--tls", "--tls-cert", str(cert), "--tls-key", str(key))
    for trust in (Trust(known=known, ask=never_asked, cafile=str(ca.path)),
                  Trust(known=known, fingerprint=fingerprint)):
        with pytest.raises(TrustRefused, match="expired on"):
            Client("localhost", daemon.port, timeout=10, tls=True, trust=trust)
    assert known.lookup("localhost", daemon.port) is None


def test_a_changed_certificate_is_refused_plainly(daemon_factory, library, ca, known):
    cert, key, fingerprint = ca.issue("server", names=("elsewhere.example",))
    daemon = daemon_factory(library, "--tls", "--tls-cert", str(cert), "--tls-key", str(key))
    earlier = "sha256:" + "ab" * 32
    known.remember("127.0.0.1", daemon.port, earlier)
    with pytest.raises(TrustRefused) as refused:
        Client("127.0.0.1", daemon.port, timeout=10, tls=True,
               trust=Trust(known=known, ask=never_asked, cafile=str(ca.path)))
    assert refused.value.changed and refused.value.fingerprint == fingerprint
    assert "HAS CHANGED" in str(refused.value) and earlier in str(refused.value)
    assert known.lookup("127.0.0.1", daemon.port) == earlier  # the pin stays until the user acts
    # --trust with the new fingerprint is how the user accepts the change.
    with pinned_client(daemon, known, fingerprint) as client:
        client.noop()
    assert known.lookup("127.0.0.1", daemon.port) == fingerprint


def test_a_pinned_server_that_moved_to_a_ca_signed_certificate_is_accepted(
        daemon_factory, library, ca, known):
    cert, key, fingerprint = ca.issue("server")
    daemon = daemon_factory(library, "--tls", "--tls-cert", str(cert), "--tls-key", str(key))
    known.remember("localhost", daemon.port, "sha256:" + "cd" * 32)
    with Client("localhost", daemon.port, timeout=10, tls=True,
                trust=Trust(known=known, ask=never_asked, cafile=str(ca.path))) as client:
        client.noop()
    assert known.lookup("localhost", daemon.port) is None  # the stale pin is dropped


def test_wrong_kind_of_server_is_cannot_connect(shelfd, known):
    with pytest.raises(CannotConnect, match="plain shelf://"):
        Client("127.0.0.1", shelfd.port, timeout=5, tls=True,
               trust=Trust(known=known, fingerprint="sha256:" + "00" * 32))


# -- SIGHUP ----------------------------------------------------------------------------------

def test_sighup_rotates_the_certificate_and_keeps_the_old_one_when_the_new_is_broken(
        daemon_factory, library, ca, known):
    cert, key, first = ca.issue("server")
    daemon = daemon_factory(library, "--tls", "--tls-cert", str(cert), "--tls-key", str(key))
    open_client = pinned_client(daemon, known, first)
    new_cert, new_key, second = ca.issue("next")
    os.replace(new_cert, cert)
    os.replace(new_key, key)
    os.kill(daemon.pid, signal.SIGHUP)
    wait_for(lambda: logged_fingerprints(daemon) == [first, second], what="the new certificate")
    wait_for(lambda: served_fingerprint(daemon.port) == second, what="new connections to see it")
    open_client.noop()  # a session that started before goes on with the old certificate
    open_client.close()
    # A broken pair: logged, and the loaded certificate stays.
    key.write_text("not a key\n")
    os.kill(daemon.pid, signal.SIGHUP)
    wait_for(lambda: "still serving the certificate loaded before" in daemon.log(),
             what="the broken pair to be reported")
    assert served_fingerprint(daemon.port) == second
    assert daemon.alive()


# -- resumption --------------------------------------------------------------------------------

@pytest.mark.parametrize("prefork", ["0", "4"])
def test_a_reconnect_to_another_session_process_resumes_the_tls_session(
        daemon_factory, tmp_path, known, prefork):
    daemon = tls_daemon(daemon_factory, tmp_path, "--prefork", prefork)
    [fingerprint] = logged_fingerprints(daemon)
    trust = Trust(known=known, fingerprint=fingerprint)
    first = Client("127.0.0.1", daemon.port, timeout=10, tls=True, trust=trust)
    try:
        assert not first.session_reused
        session = first.tls_session
        assert session is not None
        # The first stays open, so another process must serve the second.
        with Client("127.0.0.1", daemon.port, timeout=10, tls=True, trust=trust,
                    tls_session=session) as second:
            assert second.session_reused
            assert second.fingerprint == fingerprint  # still checked on a resumed session
            second.noop()
            pids = set(re.findall(r"session started \(pid (\d+)", daemon.log()))
            assert len(pids) == 2 or prefork != "0"
            assert len(daemon.sessions()) == 2
    finally:
        first.close()


# -- BUSY inside TLS ------------------------------------------------------------------------------

@pytest.mark.parametrize("prefork", ["0", "4"])
def test_busy_is_said_inside_tls_at_the_session_limit(daemon_factory, tmp_path, known, prefork):
    daemon = tls_daemon(daemon_factory, tmp_path, "--prefork", prefork, "--max-clients", "1")
    [fingerprint] = logged_fingerprints(daemon)
    with pinned_client(daemon, known, fingerprint) as first:
        with pytest.raises(ServerBusy):
            pinned_client(daemon, known, fingerprint)
        # By hand: the handshake completes, then BUSY and a clean close_notify.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="localhost",
                                     suppress_ragged_eofs=False) as tls:
                data = b""
                while True:
                    chunk = tls.recv(100)
                    if not chunk:
                        break
                    data += chunk
                assert data == b"BUSY\n"
        first.noop()
    assert re.search(r"refused: 1 sessions already \(max_clients\)", daemon.log())


def test_busy_inside_tls_for_max_per_ip_in_a_ready_process(daemon_factory, tmp_path, known):
    daemon = tls_daemon(daemon_factory, tmp_path, "--max-per-ip", "1")
    [fingerprint] = logged_fingerprints(daemon)
    with pinned_client(daemon, known, fingerprint):
        with pytest.raises(ServerBusy):
            pinned_client(daemon, known, fingerprint)
    assert "(max_per_ip)" in daemon.log()


# -- transfers -------------------------------------------------------------------------------------

@pytest.mark.parametrize("prefork", ["0", "4"])
def test_every_transfer_path_moves_the_right_bytes_over_tls(daemon_factory, tmp_path, known,
                                                             prefork):
    daemon = tls_daemon(daemon_factory, tmp_path, "--prefork", prefork)
    [fingerprint] = logged_fingerprints(daemon)
    small = os.urandom(200 * 1024)            # GET: the reply and the bytes in one write
    large = os.urandom(5 * 1024 * 1024 + 7)   # GET: the sendfile path; PUT: the splice path
    with pinned_client(daemon, known, fingerprint) as client:
        for name, data in (("small.bin", small), ("large.bin", large)):
            stored = client.put(name, io.BytesIO(data), len(data))
            assert stored.size == len(data)
            assert (daemon.root / name).read_bytes() == data
            received = io.BytesIO()
            client.get(name, received)
            assert received.getvalue() == data
            tail = io.BytesIO()
            client.get(name, tail, offset=len(data) - 1000)
            assert tail.getvalue() == data[-1000:]
        client.noop()
        assert client.hash("large.bin") == hashlib.sha256(large).hexdigest()


def test_pipelined_requests_are_answered_over_tls(daemon_factory, tmp_path):
    """Requests that arrive in one TLS record wait in the SSL object, not the socket."""
    daemon = tls_daemon(daemon_factory, tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            reader = tls.makefile("rb")
            assert reader.readline().startswith(b"READY shelf/2")
            tls.sendall(b"NOOP\n" * 50)
            assert [reader.readline() for _ in range(50)] == [b"OK\n"] * 50
            reader.close()


# -- slow and silent clients ---------------------------------------------------------------------

@pytest.mark.parametrize("prefork", ["0", "1"])
def test_a_silent_client_does_not_hold_up_others(daemon_factory, tmp_path, known, prefork):
    daemon = tls_daemon(daemon_factory, tmp_path, "--prefork", prefork, "--idle-timeout", "3")
    [fingerprint] = logged_fingerprints(daemon)
    silent = [socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
              for _ in range(3)]  # never a ClientHello
    try:
        time.sleep(0.2)
        started = time.monotonic()
        with pinned_client(daemon, known, fingerprint) as client:
            client.noop()
        assert time.monotonic() - started < 2.0
        # The silent ones are closed by their idle timeout.
        for sock in silent:
            assert sock.recv(1) == b""
        wait_for(lambda: daemon.log().count("no TLS handshake within the idle timeout") == 3,
                 what="the silent clients to be logged")
    finally:
        for sock in silent:
            sock.close()


def test_a_stop_does_not_wait_for_a_handshake(daemon_factory, tmp_path):
    daemon = tls_daemon(daemon_factory, tmp_path, "--prefork", "0")
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=10):
        wait_for(lambda: daemon.sessions(), what="the session process")
        started = time.monotonic()
        assert daemon.stop() == 0
        assert time.monotonic() - started < 5.0


# -- settings ----------------------------------------------------------------------------------------

def test_a_certificate_without_its_key_is_a_config_error(tmp_path, library, ca):
    import subprocess
    import sys

    from helpers import ROOT, python_env

    cert, key, _ = ca.issue("server")
    result = subprocess.run([sys.executable, "-m", "daemon", "--root", str(library), "--tls",
                             "--tls-cert", str(cert), "--check-config"],
                            capture_output=True, text=True, env=python_env(), cwd=str(ROOT))
    assert result.returncode != 0 and "go together" in result.stderr
    key.write_text("junk\n")
    result = subprocess.run([sys.executable, "-m", "daemon", "--root", str(library), "--tls",
                             "--tls-cert", str(cert), "--tls-key", str(key), "--check-config"],
                            capture_output=True, text=True, env=python_env(), cwd=str(ROOT))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "do not make a pair" in result.stderr or "cannot read" in result.stderr
