"""shelf-cli against shelfd --tls: shelfs:// URLs, --trust, the first-contact question, exit 7.

Real programs: shelfd on --port 0 with its self-signed certificate, shelf-cli
as a subprocess whose config folder (known_servers) is the test's
(``XDG_CONFIG_HOME``); a terminal is a real pty.
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys

import pytest

from helpers import ROOT, python_env


@pytest.fixture
def tls_shelfd(daemon_factory, library, tmp_path):
    return daemon_factory(library, "--tls", "--state-dir", str(tmp_path / "state"))


@pytest.fixture
def env(tmp_path):
    environment = python_env()
    environment["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    environment.pop("SHELF_SERVER", None)
    return environment


def fingerprint_of(daemon) -> str:
    return re.search(r"tls certificate (sha256:[0-9a-f]{64})", daemon.log()).group(1)


def known_servers(tmp_path) -> str:
    path = tmp_path / "config" / "shelf" / "known_servers"
    return path.read_text() if path.exists() else ""


def cli(daemon, env, *args, url=None, input=""):
    url = url or "shelfs://127.0.0.1:%d" % daemon.port
    return subprocess.run([sys.executable, "-m", "cli", "--server", url, *args],
                          input=input, capture_output=True, text=True, env=env,
                          cwd=str(ROOT), timeout=60)


def test_no_terminal_and_no_trust_is_exit_7_naming_the_fingerprint(tls_shelfd, env, tmp_path):
    result = cli(tls_shelfd, env, "ls")
    fingerprint = fingerprint_of(tls_shelfd)
    assert result.returncode == 7
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fingerprint in lines[0] and "--trust" in lines[0]
    assert known_servers(tmp_path) == ""


def test_trust_accepts_that_fingerprint_and_remembers_it(tls_shelfd, env, tmp_path, library):
    fingerprint = fingerprint_of(tls_shelfd)
    source = tmp_path / "notes.txt"
    source.write_bytes(b"over tls\n" * 1000)
    result = cli(tls_shelfd, env, "--trust", fingerprint, "put", str(source))
    assert result.returncode == 0, result.stderr
    assert (library / "notes.txt").read_bytes() == source.read_bytes()
    assert known_servers(tmp_path) == "127.0.0.1:%d %s\n" % (tls_shelfd.port, fingerprint)
    listed = cli(tls_shelfd, env, "ls")  # remembered: no --trust needed now
    assert listed.returncode == 0 and "notes.txt" in listed.stdout
    # The default port: shelfs://HOST alone means 8021 (nothing listens there here).
    elsewhere = cli(tls_shelfd, env, "ls", url="shelfs://127.0.0.1")
    assert elsewhere.returncode == 4 and "8021" in elsewhere.stderr


def test_a_wrong_trust_is_exit_7(tls_shelfd, env):
    result = cli(tls_shelfd, env, "--trust", "sha256:" + "ab" * 32, "ls")
    assert result.returncode == 7 and "not the one given with --trust" in result.stderr
    malformed = cli(tls_shelfd, env, "--trust", "md5:1234", "ls")
    assert malformed.returncode == 2 and "fingerprint" in malformed.stderr


def test_a_changed_certificate_is_exit_7_with_a_plain_warning(daemon_factory, tls_shelfd, env,
                                                              tmp_path, library):
    fingerprint = fingerprint_of(tls_shelfd)
    assert cli(tls_shelfd, env, "--trust", fingerprint, "ls").returncode == 0
    port = tls_shelfd.port
    tls_shelfd.stop()
    for name in ("tls-cert.pem", "tls-key.pem"):
        (tmp_path / "state" / name).unlink()  # the next start makes a new certificate
    again = daemon_factory(library, "--tls", "--state-dir", str(tmp_path / "state"),
                           port=port)
    result = cli(again, env, "ls")
    assert result.returncode == 7
    assert "HAS CHANGED" in result.stderr and fingerprint in result.stderr
    assert fingerprint_of(again) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def run_on_terminal(daemon, env, answer: bytes, *args) -> tuple[int, str]:
    """shelf-cli with a pty as stdin and stderr; ``answer`` typed once it asks."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "-q", "--server",
             "shelfs://127.0.0.1:%d" % daemon.port, *args],
            stdin=slave, stderr=slave, stdout=subprocess.PIPE, env=env, cwd=str(ROOT))
        os.close(slave)
        slave = None
        shown = b""
        answered = False
        while True:
            ready, _, _ = select.select([master], [], [], 30)
            if not ready:
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            shown += chunk
            if not answered and b"[y/N]" in shown:
                os.write(master, answer)
                answered = True
        proc.stdout.read()
        proc.stdout.close()
        return proc.wait(30), shown.decode("utf-8", "replace")
    finally:
        os.close(master)
        if slave is not None:
            os.close(slave)


def test_a_terminal_is_asked_on_first_contact(tls_shelfd, env, tmp_path):
    fingerprint = fingerprint_of(tls_shelfd)
    code, shown = run_on_terminal(tls_shelfd, env, b"n\n", "ls")
    assert code == 7 and fingerprint in shown and "[y/N]" in shown
    assert known_servers(tmp_path) == ""
    code, shown = run_on_terminal(tls_shelfd, env, b"y\n", "ls")
    assert code == 0 and fingerprint in shown
    assert fingerprint in known_servers(tmp_path)
    code, shown = run_on_terminal(tls_shelfd, env, b"n\n", "ls")
    assert code == 0 and "[y/N]" not in shown  # remembered: not asked again


def test_the_shell_speaks_tls(tls_shelfd, env):
    fingerprint = fingerprint_of(tls_shelfd)
    result = cli(tls_shelfd, env, "--trust", fingerprint, "shell", input="mkdir a\nls\n")
    assert result.returncode == 0, result.stderr
    assert "a/" in result.stdout
