"""Logging in from the client library and shelf-cli, against the real shelfd with --users.

The password comes from SHELF_PASSWORD, --password-stdin, or a prompt on a real
pty; never from the command line. A refused LOGIN is exit 8 with one line.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

import pytest

from common.client import Client, Login, LoginRefused
from helpers import ROOT, python_env, wait_for
from test_accounts import add_user

ODD_PASSWORD = "p w/%2F 100% ü\tend"  # every byte a sender must encode, and more


@pytest.fixture
def daemon(daemon_factory, library, tmp_path):
    users = tmp_path / "users"
    add_user(users, "alice", "correct horse", "rwdm", "/alice")
    add_user(users, "odd", ODD_PASSWORD, "r", "/")
    (library / "alice").mkdir()
    return daemon_factory(library, "--users", str(users))


def cli(daemon, *args, password: str | None = None, url_user: str | None = "alice",
        stdin: bytes | None = None, env_extra: dict | None = None):
    env = python_env()
    env.pop("SHELF_SERVER", None)
    env.pop("SHELF_PASSWORD", None)
    if password is not None:
        env["SHELF_PASSWORD"] = password
    env.update(env_extra or {})
    user = url_user + "@" if url_user else ""
    command = [sys.executable, "-m", "cli", "-q"]
    if "SHELF_SERVER" not in env:
        command += ["--server", "shelf://%s127.0.0.1:%d" % (user, daemon.port)]
    return subprocess.run(command + list(args), input=stdin if stdin is not None else b"",
                          capture_output=True, env=env, cwd=str(ROOT), timeout=60)


def lines(data: bytes) -> list[str]:
    return data.decode("utf-8", "replace").strip().splitlines()


def test_the_client_library_logs_in(daemon):
    with Client("127.0.0.1", daemon.port, timeout=10, user="alice",
                password="correct horse") as client:
        assert client.grant == Login("alice", "rwdm", "/alice")
        client.mkdir("mine")
        assert client.login("odd", ODD_PASSWORD.encode()) == Login("odd", "r", "/")
        assert [entry.name for entry in client.list()] == ["alice"]
        with pytest.raises(LoginRefused, match="wrong user or password"):
            client.login("odd", "nope")
        assert client.grant == Login("odd", "r", "/")  # a failed LOGIN changes nothing
    with pytest.raises(LoginRefused) as refused:
        Client("127.0.0.1", daemon.port, timeout=10, user="alice", password="nope")
    assert str(refused.value) == ("login as alice refused by 127.0.0.1:%d: wrong user or "
                                  "password" % daemon.port)
    assert (daemon.root / "alice" / "mine").is_dir()


def test_shelf_password_and_the_url_user(daemon, tmp_path):
    source = tmp_path / "hello.txt"
    source.write_bytes(b"hello")
    put = cli(daemon, "put", str(source), password="correct horse")
    assert put.returncode == 0, put.stderr
    assert (daemon.root / "alice" / "hello.txt").read_bytes() == b"hello"
    listed = cli(daemon, "ls", password="correct horse")
    assert listed.returncode == 0 and "hello.txt" in listed.stdout.decode()
    by_env = cli(daemon, "stat", "hello.txt", password="correct horse", env_extra={
        "SHELF_SERVER": "shelf://alice@127.0.0.1:%d" % daemon.port})
    assert by_env.returncode == 0, by_env.stderr
    odd = cli(daemon, "ls", url_user="odd", password=ODD_PASSWORD)
    assert odd.returncode == 0, odd.stderr


def test_password_stdin(daemon):
    made = cli(daemon, "--password-stdin", "mkdir", "from-stdin",
               stdin=b"correct horse\n", password="not this one")
    assert made.returncode == 0, made.stderr
    assert (daemon.root / "alice" / "from-stdin").is_dir()
    odd = cli(daemon, "--password-stdin", "ls", url_user="odd",
              stdin=ODD_PASSWORD.encode() + b"\r\n")
    assert odd.returncode == 0, odd.stderr


def test_a_refused_login_is_exit_8(daemon):
    started = time.monotonic()
    wrong = cli(daemon, "ls", password="wrong")
    assert wrong.returncode == 8
    assert lines(wrong.stderr) == ["shelf-cli: login as alice refused by 127.0.0.1:%d: wrong "
                                   "user or password" % daemon.port]
    assert time.monotonic() - started >= 1.0
    nobody = cli(daemon, "ls", url_user="nobody", password="wrong")
    assert nobody.returncode == 8 and "wrong user or password" in nobody.stderr.decode()


def test_no_password_source_and_bad_urls_are_usage_errors(daemon):
    nothing = cli(daemon, "ls")  # stdin is not a terminal, no SHELF_PASSWORD
    assert nothing.returncode == 2
    assert lines(nothing.stderr) == [
        "shelf-cli: no password to log in to shelf://alice@127.0.0.1:%d: set SHELF_PASSWORD, "
        "give --password-stdin, or run on a terminal" % daemon.port]
    in_url = cli(daemon, "ls", url_user="alice:secret")
    assert in_url.returncode == 2 and "never put a password in a server URL" in \
        in_url.stderr.decode()
    assert "secret" not in in_url.stderr.decode()
    bad_name = cli(daemon, "ls", url_user="al ice", password="x")
    assert bad_name.returncode == 2 and "bad user name" in bad_name.stderr.decode()
    no_user = cli(daemon, "--password-stdin", "ls", url_user=None, stdin=b"pw\n")
    assert no_user.returncode == 2 and "needs a user" in no_user.stderr.decode()
    empty = cli(daemon, "--password-stdin", "ls", stdin=b"")
    assert empty.returncode == 2 and "no password line" in empty.stderr.decode()


def test_the_password_is_asked_on_a_terminal(daemon):
    master, slave = pty.openpty()
    try:
        env = python_env()
        env.pop("SHELF_PASSWORD", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "-q", "--server",
             "shelf://alice@127.0.0.1:%d" % daemon.port, "mkdir", "typed"],
            stdin=slave, stderr=slave, stdout=subprocess.PIPE, env=env, cwd=str(ROOT))
        os.close(slave)
        slave = None
        shown = b""
        answered = False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            shown += chunk
            if not answered and b"Password for shelf://alice@127.0.0.1" in shown:
                os.write(master, b"correct horse\n")
                answered = True
        proc.stdout.read()
        proc.stdout.close()
        assert proc.wait(30) == 0, shown
    finally:
        os.close(master)
        if slave is not None:
            os.close(slave)
    assert answered and b"correct horse" not in shown  # not echoed
    assert (daemon.root / "alice" / "typed").is_dir()


def test_the_shell_logs_in_again_after_a_reconnect(daemon):
    env = python_env()
    env.pop("SHELF_PASSWORD", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "-q", "--server",
         "shelf://alice@127.0.0.1:%d" % daemon.port, "--password-stdin", "shell"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        cwd=str(ROOT))
    try:
        proc.stdin.write(b"correct horse\nmkdir before\n")
        proc.stdin.flush()
        wait_for(lambda: (daemon.root / "alice" / "before").is_dir(), what="the first mkdir")
        sessions = wait_for(daemon.sessions, what="the shell's session")
        for pid in sessions:
            os.kill(pid, 9)
        wait_for(lambda: not daemon.sessions(), what="the session to end")
        out, err = proc.communicate(b"mkdir after\nls\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert (daemon.root / "alice" / "after").is_dir()
    assert "after/" in out.decode() and "before/" in out.decode()
    assert daemon.log().count("auth ok user=alice") == 2
