"""Accounts (issue #14) against the real shelfd: the users file, LOGIN, permissions,
confined roots, failed-login bans, the log lines and fail2ban's filter, SIGHUP.

Every account is made by the real ``shelfd user`` command, every session is a
real TCP connection. A failed LOGIN costs at least a second by design, so the
tests that need many of them send them in parallel.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from daemon.accounts import FailureTable, address_key
from daemon.service import render_line
from helpers import ROOT, TIMEOUT, Raw, greeted, python_env, wait_for

FILTER = ROOT / "packaging" / "fail2ban" / "filter.d" / "shelfd.conf"
DENIED_LOGIN = "FAIL denied login refused: wrong user or password"


def shelfd_user(*args: str, password: str | bytes | None = None) -> subprocess.CompletedProcess:
    """The real ``shelfd user ...``; the password as one line on (non-terminal) stdin."""
    data = password.encode() + b"\n" if isinstance(password, str) else password
    return subprocess.run([sys.executable, "-m", "daemon", "user", *args], input=data or b"",
                          capture_output=True, env=python_env(), cwd=str(ROOT), timeout=60)


def add_user(users: Path, name: str, password: str, permissions: str = "rwdm",
             root: str = "/") -> None:
    done = shelfd_user("add", name, "--permissions", permissions, "--root", root,
                       "--users", str(users), password=password)
    assert done.returncode == 0, done.stderr.decode()


class RawFrom(Raw):
    """A raw session from a chosen loopback source address (127.0.0.2 is another client)."""

    def __init__(self, port: int, source: str = "127.0.0.1", host: str = "127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT,
                                             source_address=(source, 0))
        self.buffer = b""
        self.greeting = self.line()


def timed(raw: Raw, line: str) -> tuple[str, float]:
    started = time.monotonic()
    reply = raw.request(line)
    return reply, time.monotonic() - started


@pytest.fixture
def users(tmp_path) -> Path:
    path = tmp_path / "users"
    add_user(path, "alice", "correct horse", "rwdm", "/alice")
    return path


@pytest.fixture
def accounts_daemon(daemon_factory, library, users):
    (library / "alice").mkdir()
    return daemon_factory(library, "--users", str(users))


# -- shelfd user ------------------------------------------------------------------

def test_user_add_list_passwd_del(tmp_path):
    users = tmp_path / "etc" / "users"
    users.parent.mkdir()
    old_umask = os.umask(0)  # the file is 0600 whatever the umask says
    try:
        add_user(users, "alice", "s3cret", "mrw", "photos/alice")
    finally:
        os.umask(old_umask)
    add_user(users, "bob", "pw with spaces", "-", "/")
    assert users.stat().st_mode & 0o777 == 0o600
    assert os.listdir(users.parent) == ["users"]  # no temporary file left beside it
    listed = shelfd_user("list", "--users", str(users))
    assert listed.returncode == 0
    assert listed.stdout.decode().splitlines() == ["alice rwm /photos/alice", "bob - /"]
    assert b"argon2" not in listed.stdout + listed.stderr
    text = users.read_text()
    assert "s3cret" not in text and re.search(r"^alice rwm photos/alice \$argon2id\$", text, re.M)

    before = text
    changed = shelfd_user("passwd", "bob", "--users", str(users), password="new one")
    assert changed.returncode == 0, changed.stderr
    after = users.read_text()
    assert after != before and after.splitlines()[1] == before.splitlines()[1]  # alice kept
    assert users.stat().st_mode & 0o777 == 0o600

    removed = shelfd_user("del", "alice", "--users", str(users))
    assert removed.returncode == 0
    assert shelfd_user("list", "--users", str(users)).stdout == b"bob - /\n"
    assert sorted(os.listdir(users.parent)) == ["users"]


def test_user_command_refusals(tmp_path):
    users = tmp_path / "users"
    add_user(users, "alice", "pw")
    before = users.read_bytes()
    cases = [
        (("add", "alice"), "already exists"),
        (("add", "bad name"), "a user name is 1 to 64"),
        (("add", "x" * 65), "a user name is 1 to 64"),
        (("add", "eve", "--root", "../etc"), "bad root folder"),
        (("add", "eve", "--root", "a//b"), "bad root folder"),
        (("add", "eve", "--permissions", "rwx"), "permissions are letters"),
        (("passwd", "carol"), "no user carol"),
        (("del", "carol"), "no user carol"),
    ]
    for args, message in cases:
        done = shelfd_user(*args, "--users", str(users), password="pw")
        assert done.returncode == 1, args
        assert message in done.stderr.decode(), (args, done.stderr)
        assert "Traceback" not in done.stderr.decode()
    empty = shelfd_user("add", "eve", "--users", str(users), password="")
    assert empty.returncode == 1 and b"password is empty" in empty.stderr
    assert users.read_bytes() == before
    nowhere = shelfd_user("list")
    assert nowhere.returncode == 1 and b"--users FILE" in nowhere.stderr
    missing = shelfd_user("del", "alice", "--users", str(tmp_path / "none"))
    assert missing.returncode == 1 and b"does not exist" in missing.stderr
    assert not (tmp_path / "none").exists()


def test_a_broken_users_file_is_a_clear_error(tmp_path, library):
    users = tmp_path / "users"
    add_user(users, "alice", "pw")
    with open(users, "a") as handle:
        handle.write("bob rw /\n")  # no hash
    listed = shelfd_user("list", "--users", str(users))
    assert listed.returncode == 1
    assert "%s line 3: expected 'name permissions root hash'" % users in listed.stderr.decode()
    # shelfd refuses to start with it: one line, no traceback.
    started = subprocess.run([sys.executable, "-m", "daemon", "--root", str(library), "--port",
                              "0", "--users", str(users)], capture_output=True,
                             env=python_env(), cwd=str(ROOT), timeout=30)
    assert started.returncode != 0
    assert started.stderr.decode().strip().splitlines() == [
        "shelfd: %s line 3: expected 'name permissions root hash', found 3 fields" % users]
    checked = subprocess.run([sys.executable, "-m", "daemon", "--check-config", "--root",
                              str(library), "--users", str(users)], capture_output=True,
                             env=python_env(), cwd=str(ROOT), timeout=30)
    assert checked.returncode != 0 and b"line 3: expected" in checked.stderr  # ExecReload
    missing = subprocess.run([sys.executable, "-m", "daemon", "--root", str(library), "--port",
                              "0", "--users", str(tmp_path / "nope")], capture_output=True,
                             env=python_env(), cwd=str(ROOT), timeout=30)
    assert missing.returncode != 0 and b"does not exist" in missing.stderr


def test_the_users_file_is_read_through_the_config(tmp_path):
    users = tmp_path / "users"
    config = tmp_path / "shelfd.ini"
    config.write_text("[shelfd]\nroot = /srv\nusers = %s\n" % users)
    done = shelfd_user("add", "alice", "--config", str(config), password="pw")
    assert done.returncode == 0, done.stderr
    assert shelfd_user("list", "--config", str(config)).stdout == b"alice rw /\n"


# -- LOGIN ------------------------------------------------------------------------

def test_login_ok_denied_and_the_third_failure(accounts_daemon):
    with accounts_daemon.connect() as raw:
        assert greeted(raw.greeting)
        features = raw.greeting.split()[2:]
        assert "login" in features and "anonymous" not in features
        assert raw.request("LIST").startswith("FAIL denied")
        assert raw.request("NOOP") == "OK"
        wrong_password, slow1 = timed(raw, "LOGIN alice wrong")
        wrong_user, slow2 = timed(raw, "LOGIN mallory correct%20horse")
        assert wrong_password == wrong_user == DENIED_LOGIN  # nothing tells them apart
        assert slow1 >= 1.0 and slow2 >= 1.0
        reply, fast = timed(raw, "LOGIN alice correct%20horse")
        assert reply == "OK alice rwdm /alice" and fast < 1.0
        assert raw.request("MKDIR mine") == "OK"
        assert (accounts_daemon.root / "alice" / "mine").is_dir()
        third, _ = timed(raw, "LOGIN alice again-wrong")
        assert third == DENIED_LOGIN
        assert raw.closed_by_peer()  # the third failure ends the session
    log = accounts_daemon.log()
    assert "auth failed user=alice addr=127.0.0.1" in log
    assert "auth failed user=mallory addr=127.0.0.1" in log
    assert "auth ok user=alice addr=127.0.0.1" in log
    assert "correct horse" not in log and "correct%20horse" not in log


def test_a_second_login_replaces_the_first(daemon_factory, library, users):
    add_user(users, "reader", "pw", "r", "/")
    (library / "alice").mkdir()
    daemon = daemon_factory(library, "--users", str(users))
    with daemon.connect() as raw:
        assert raw.request("LOGIN alice correct%20horse") == "OK alice rwdm /alice"
        assert raw.request("MKDIR a") == "OK"
        assert raw.request("LOGIN reader pw") == "OK reader r /"
        assert raw.request("LIST") == "OK 1"
        assert raw.line() == "alice/ 0 %d -" % int((library / "alice").stat().st_mtime)
        assert raw.request("MKDIR b").startswith("FAIL denied")
        assert raw.request("STAT alice/a").startswith("OK 0")


def test_a_failed_login_keeps_the_grant_the_session_has(accounts_daemon, library):
    with accounts_daemon.connect() as raw:
        assert raw.request("LOGIN alice correct%20horse") == "OK alice rwdm /alice"
        assert raw.request("LOGIN alice wrong").startswith("FAIL denied ")
        assert raw.request("MKDIR still-alice") == "OK"  # still alice, in alice's folder
    assert (library / "alice" / "still-alice").is_dir()


def test_a_missing_root_folder_is_said_at_login(daemon_factory, library, tmp_path):
    users = tmp_path / "users"
    add_user(users, "carol", "pw", "rw", "/carol")
    add_user(users, "link", "pw", "rw", "/elsewhere")
    (library / "elsewhere").symlink_to(tmp_path)  # a link is never followed, even as a root
    daemon = daemon_factory(library, "--users", str(users))
    with daemon.connect() as raw:
        reply = raw.request("LOGIN carol pw")
        assert reply == ("FAIL denied login refused: the root folder /carol of carol is "
                         "missing; ask the administrator")
        assert raw.request("LOGIN link pw").startswith("FAIL denied login refused: the root")
        (library / "carol").mkdir()
        assert raw.request("LOGIN carol pw") == "OK carol rw /carol"


def test_anonymous_with_accounts(daemon_factory, library, users):
    (library / "alice").mkdir()
    (library / "hello.txt").write_bytes(b"hi")
    daemon = daemon_factory(library, "--users", str(users), "--anonymous", "r")
    with daemon.connect() as raw:
        features = raw.greeting.split()[2:]
        assert "login" in features and "anonymous" in features
        assert raw.request("STAT hello.txt").startswith("OK 2 ")
        assert raw.request("MKDIR x") == ("FAIL denied permission denied: anonymous needs the "
                                          "write permission")
        assert raw.request("LOGIN alice correct%20horse") == "OK alice rwdm /alice"
        assert raw.request("STAT hello.txt").startswith("FAIL notfound")  # now inside /alice
        assert raw.request("MKDIR x") == "OK"


# -- permissions: every verb against every letter ------------------------------------

# (request, the letters it needs). Every path names nothing that exists, so a
# request that passes the permission check answers FAIL notfound (or a reply
# that is not FAIL denied): the protocol checks permissions before any lookup.
VERB_TABLE = [
    ("LIST nosuch", "r"), ("STAT nosuch", "r"), ("GET nosuch", "r"), ("HASH nosuch", "r"),
    ("TRASH", "r"),
    ("PUT nosuch/file 1", "w"), ("PUT nosuch/file 1 replace", "wd"), ("MKDIR nosuch/x", "w"),
    ("RESUME nosuchupload", "w"), ("ABORT nosuchupload", "w"), ("RESTORE nosuchid", "w"),
    ("RMDIR nosuch", "d"), ("DELETE nosuch", "d"), ("PURGE nosuchid", "d"),
    ("RENAME nosuch other", "m"),
    ("SPACE", ""), ("NOOP", ""),
]
PERMISSION_SETS = ["-", "r", "w", "d", "m", "wd", "rwdm"]


def test_every_verb_needs_its_letters(daemon_factory, library, tmp_path):
    users = tmp_path / "users"
    for permissions in PERMISSION_SETS:
        add_user(users, "u" + permissions.replace("-", "none"), "pw", permissions, "/")
    daemon = daemon_factory(library, "--users", str(users))
    with daemon.connect() as raw:  # before LOGIN: no anonymous grant at all
        for request, needs in VERB_TABLE:
            reply = raw.request(request)
            assert reply.startswith("FAIL denied") == (request.split()[0] != "NOOP"), request
    checked = 0
    for permissions in PERMISSION_SETS:
        name = "u" + permissions.replace("-", "none")
        with daemon.connect() as raw:
            word = permissions
            assert raw.request("LOGIN %s pw" % name) == "OK %s %s /" % (name, word)
            for request, needs in VERB_TABLE:
                reply = raw.request(request)
                allowed = all(letter in permissions for letter in needs)
                denied = reply.startswith("FAIL denied")
                assert denied == (not allowed), (permissions, request, reply)
                if not allowed:
                    missing = {"r": "read", "w": "write", "d": "delete", "m": "rename"}
                    assert any(missing[letter] in reply for letter in needs
                               if letter not in permissions), reply
                checked += 1
    assert checked == len(PERMISSION_SETS) * len(VERB_TABLE)


# -- a user confined to a folder -------------------------------------------------------

def tree_outside(root: Path, inside: str) -> dict:
    """Every path and content below ``root`` except ``inside`` and shelfd's own .shelf-*."""
    found = {}
    for folder, dirs, files in os.walk(root):
        relative = os.path.relpath(folder, root)
        top = relative.split(os.sep)[0]
        if top == inside or top.startswith(".shelf-"):
            dirs[:] = []
            continue
        for name in dirs + files:
            if relative == "." and (name == inside or name.startswith(".shelf-")):
                continue
            path = Path(folder) / name
            found[os.path.relpath(path, root)] = (
                path.read_bytes() if path.is_file() and not path.is_symlink() else
                os.readlink(path) if path.is_symlink() else "dir")
    return found


def test_a_confined_user_cannot_reach_outside(daemon_factory, library, tmp_path):
    users = tmp_path / "users"
    add_user(users, "alice", "pw-a", "rwdm", "/home/alice")
    add_user(users, "bob", "pw-b", "rwdm", "home/bob")
    home = library / "home"
    (home / "alice" / "sub").mkdir(parents=True)
    (home / "bob").mkdir()
    (library / "secret.txt").write_bytes(b"top secret")
    (home / "bob" / "b.txt").write_bytes(b"bob's")
    (home / "alice" / "a.txt").write_bytes(b"alice's")
    (home / "alice" / "to-bob").symlink_to("../bob")
    (home / "alice" / "to-secret").symlink_to("../../secret.txt")
    (home / "alice" / "to-abs").symlink_to(str(library))
    (home / "alice" / "sub" / "up").symlink_to("..")
    outside = tree_outside(library, "home")
    outside_homes = tree_outside(home, "alice")
    daemon = daemon_factory(library, "--users", str(users))

    # bob leaves a trash entry and a broken upload behind
    with daemon.connect() as bob:
        assert bob.request("LOGIN bob pw-b") == "OK bob rwdm /home/bob"
        assert bob.request("DELETE b.txt") == "OK"
        trash = bob.request("TRASH")
        assert trash == "OK 1"
        bob_trash_id = bob.line().split()[0]
    with daemon.connect() as bob:
        assert bob.request("LOGIN bob pw-b").startswith("OK")
        first = bob.request("PUT part.bin 100")
        bob_upload = first.split()[1]
        bob.send(b"x" * 10)  # then the connection drops: kept for RESUME
    wait_for(lambda: "part.bin broken" in daemon.log(), what="the broken upload")

    with daemon.connect() as raw:
        assert raw.request("LOGIN alice pw-a") == "OK alice rwdm /home/alice"
        for attack in ["LIST ..", "LIST %2e%2e", "LIST %2E%2E/%2E%2E", "GET ../secret.txt",
                       "GET sub/../../secret.txt", "GET %2e%2e%2fsecret.txt", "GET /secret.txt",
                       "GET .%2e/secret.txt", "STAT ../bob/b.txt", "LIST sub/..",
                       "GET %2Fsecret.txt", "RENAME a.txt ../a.txt",
                       "RENAME a.txt %2e%2e/a.txt", "RENAME a.txt %2e%2e%2Fa.txt",
                       "RENAME ../bob/b.txt x.txt", "PUT ../x 1", "MKDIR ../x",
                       "RESTORE %s ../b.txt" % bob_trash_id]:
            assert raw.request(attack).startswith("FAIL invalid"), attack
        # Links inside her folder are neither listed nor followed, whatever their target.
        assert raw.request("LIST") == "OK 2"
        assert sorted(raw.line().split()[0] for _ in range(2)) == ["a.txt", "sub/"]
        for attack in ["GET to-secret", "LIST to-bob", "GET to-bob/b.txt", "STAT to-abs",
                       "GET to-abs/secret.txt", "LIST sub/up", "GET sub/up/a.txt",
                       "PUT to-bob/new.txt 1", "MKDIR to-bob/new", "RENAME a.txt to-bob/a.txt",
                       "RENAME to-bob moved", "DELETE to-secret", "RMDIR to-bob",
                       "HASH to-secret", "DELETE to-bob/b.txt"]:
            assert raw.request(attack).startswith("FAIL notfound"), attack
        # RENAME of her own files: any target is below her root by construction.
        assert raw.request("RENAME a.txt sub/moved.txt") == "OK"
        assert raw.request("RENAME sub deeper") == "OK"
        # Bob's trash and upload are not hers: not listed, not restorable, not resumable.
        assert raw.request("TRASH") == "EMPTY"
        assert raw.request("RESTORE %s" % bob_trash_id).startswith("FAIL notfound")
        assert raw.request("RESTORE %s b.txt" % bob_trash_id).startswith("FAIL notfound")
        assert raw.request("PURGE %s" % bob_trash_id).startswith("FAIL notfound")
        assert raw.request("RESUME %s" % bob_upload).startswith("FAIL notfound")
        assert raw.request("ABORT %s" % bob_upload).startswith("FAIL notfound")
    assert (home / "alice" / "deeper" / "moved.txt").read_bytes() == b"alice's"
    assert tree_outside(library, "home") == outside
    after = tree_outside(home, "alice")
    assert after == {k: v for k, v in outside_homes.items() if k != "bob/b.txt"}  # in bob's trash
    # ...and everything bob left is still bob's.
    with daemon.connect() as bob:
        assert bob.request("LOGIN bob pw-b").startswith("OK")
        assert bob.request("RESUME %s" % bob_upload) == "OK 10"
        bob.send(b"y" * 90)
        assert bob.line().startswith("OK 100 ")
        assert bob.request("RESTORE %s" % bob_trash_id).startswith("OK ")
    assert (home / "bob" / "b.txt").read_bytes() == b"bob's"


# -- failed logins per address ------------------------------------------------------

def failed_login(port: int, source: str) -> str:
    with RawFrom(port, source) as raw:
        return raw.request("LOGIN alice wrong")


def test_an_address_that_fails_too_often_is_refused(accounts_daemon):
    port = accounts_daemon.port
    with ThreadPoolExecutor(FailureTable.LIMIT) as pool:  # a second each, all at once
        replies = list(pool.map(lambda _: failed_login(port, "127.0.0.1"),
                                range(FailureTable.LIMIT)))
    assert replies == [DENIED_LOGIN] * FailureTable.LIMIT
    with RawFrom(port, "127.0.0.1") as raw:
        reply, slow = timed(raw, "LOGIN alice correct%20horse")
        assert reply == ("FAIL denied too many failed logins from 127.0.0.1; try again later")
        assert slow >= 1.0
    with RawFrom(port, "127.0.0.2") as raw:  # another address is not punished
        assert raw.request("LOGIN alice correct%20horse") == "OK alice rwdm /alice"
    log = accounts_daemon.log()
    assert log.count("auth failed user=alice addr=127.0.0.1") == FailureTable.LIMIT
    assert "auth ban addr=127.0.0.1" in log
    assert "auth refused user=alice addr=127.0.0.1: address banned" in log
    assert "auth ok user=alice addr=127.0.0.2" in log


def test_failure_table_window_ban_and_expiry():
    now = [1000.0]
    table = FailureTable(rows=4, limit=3, window=60, ban=120, clock=lambda: now[0])
    try:
        assert not table.record_failure("192.0.2.1")
        assert not table.record_failure("192.0.2.1")
        now[0] += 61  # the window passed: counting starts again
        assert not table.record_failure("192.0.2.1")
        assert not table.record_failure("192.0.2.1")
        assert table.banned_for("192.0.2.1") == 0.0
        assert table.record_failure("192.0.2.1")
        assert table.banned_for("192.0.2.1") == 120.0
        assert table.banned_for("192.0.2.2") == 0.0
        assert table.banned_for("::ffff:192.0.2.1") == 120.0  # the same client, dual stack
        now[0] += 119
        assert table.banned_for("192.0.2.1") == pytest.approx(1.0)
        now[0] += 2
        assert table.banned_for("192.0.2.1") == 0.0
        # IPv6 counts by /64; a full table makes room without forgetting a ban.
        table.record_failure("2001:db8::1")
        assert address_key("2001:db8::1") == address_key("2001:db8::ffff")
        for third in range(3):
            table.record_failure("2001:db8::%d" % third)
        assert table.banned_for("2001:db8::99")
        for host in ("198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"):
            table.record_failure(host)
        assert table.banned_for("2001:db8::5")
    finally:
        table.close()


def test_failure_table_counts_every_process():
    table = FailureTable(limit=10 ** 6)
    try:
        pids = []
        for _ in range(4):
            pid = os.fork()
            if pid == 0:
                try:
                    for _ in range(250):
                        table.record_failure("192.0.2.9")
                finally:
                    os._exit(0)
            pids.append(pid)
        for pid in pids:
            assert os.waitpid(pid, 0)[1] == 0
        row = table._find(address_key("192.0.2.9"))
        assert table._read(row)[2] == 1000
    finally:
        table.close()


# -- the log lines and fail2ban -------------------------------------------------------

def fail2ban_regex(target: str) -> list[str]:
    """The addresses fail2ban-regex finds in ``target`` (a log file or one line)."""
    if shutil.which("fail2ban-regex") is None:
        pytest.skip("fail2ban-regex is not installed (make system-deps installs fail2ban "
                    "as root where apt-get exists)")
    done = subprocess.run(["fail2ban-regex", "--out", "ip", target, str(FILTER)],
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode().split()


def test_fail2ban_finds_each_failed_login(accounts_daemon, tmp_path):
    port = accounts_daemon.port
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda source: failed_login(port, source),
                      ["127.0.0.1", "127.0.0.2", "127.0.0.2"]))
    with RawFrom(port, "127.0.0.3") as raw:
        assert raw.request("LOGIN alice correct%20horse").startswith("OK")
        assert raw.request("STAT auth%20failed%20user=x%20addr=192.0.2.1").startswith("FAIL")
    log = accounts_daemon.log()
    assert re.search(r"^\S+ \S+ shelfd\[\d+\] WARNING auth failed user=alice addr=127\.0\.0\.2$",
                     log, re.M)
    assert re.search(r"^\S+ \S+ shelfd\[\d+\] INFO auth ok user=alice addr=127\.0\.0\.3$", log,
                     re.M)
    assert sorted(fail2ban_regex(str(accounts_daemon.log_path))) == [
        "127.0.0.1", "127.0.0.2", "127.0.0.2"]
    message = "auth failed user=bob addr=192.0.2.7"
    for style in ("journal", "syslog", "file"):
        line = render_line(style, "WARNING", message, time.time(), 4242)
        assert fail2ban_regex(line) == ["192.0.2.7"], (style, line)
    # as fail2ban's systemd backend shows a journal entry, and what must not match
    assert fail2ban_regex("Nov 24 10:26:16 host shelfd[4242]: WARNING " + message) == [
        "192.0.2.7"]
    for innocent in [render_line("file", "INFO", "auth ok user=bob addr=192.0.2.7",
                                 time.time(), 1),
                     render_line("file", "INFO", "127.0.0.1:5 STAT " + message, time.time(), 1),
                     render_line("journal", "WARNING", "auth refused user=bob addr=192.0.2.7: "
                                 "login needs TLS", time.time(), 1)]:
        assert fail2ban_regex(innocent) == [], innocent


# -- SIGHUP ----------------------------------------------------------------------------

@pytest.mark.parametrize("prefork", ["0", "2"], ids=["fork", "prefork"])
def test_sighup_rereads_the_users_file(daemon_factory, library, users, prefork):
    (library / "alice").mkdir()
    daemon = daemon_factory(library, "--users", str(users), "--prefork", prefork)
    add_user(users, "carol", "pw-c", "r", "/")
    with daemon.connect() as raw:  # not yet: the daemon has not been told
        assert raw.request("LOGIN carol pw-c") == DENIED_LOGIN
    os.kill(daemon.pid, signal.SIGHUP)
    wait_for(lambda: "reload: 2 accounts from" in daemon.log(), what="the reload")
    with daemon.connect() as raw:
        assert raw.request("LOGIN carol pw-c") == "OK carol r /"
    with open(users, "a") as handle:
        handle.write("broken line\n")
    os.kill(daemon.pid, signal.SIGHUP)
    wait_for(lambda: "the 2 accounts read before stay" in daemon.log(), what="the refusal")
    assert "users line 4: expected" in daemon.log()
    with daemon.connect() as raw:
        assert raw.request("LOGIN carol pw-c") == "OK carol r /"
    assert daemon.alive()


# -- LOGIN over a network needs TLS ------------------------------------------------------

def non_loopback_address() -> str | None:
    """The address of the interface of the default route (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))
            address = probe.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_plain_login_off_loopback_needs_tls(daemon_factory, library, users):
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to listen on")
    (library / "alice").mkdir()
    daemon = daemon_factory(library, "--users", str(users), "--host", address)
    with RawFrom(daemon.port, address, host=address) as raw:
        reply, took = timed(raw, "LOGIN alice correct%20horse")
        assert reply == "FAIL denied login needs TLS" and took < 1.0
        assert raw.request("LOGIN alice correct%20horse") == "FAIL denied login needs TLS"
        assert raw.request("LOGIN alice correct%20horse") == "FAIL denied login needs TLS"
        assert raw.request("NOOP") == "OK"  # not a failed login: the session goes on
    assert "auth failed" not in daemon.log()
    # Listening on every address: what counts is the address the client reached.
    everywhere = daemon_factory(library, "--users", str(users), "--host", "0.0.0.0")
    with RawFrom(everywhere.port, "127.0.0.1") as raw:
        assert raw.request("LOGIN alice correct%20horse") == "OK alice rwdm /alice"
    with RawFrom(everywhere.port, address, host=address) as raw:
        assert raw.request("LOGIN alice correct%20horse") == "FAIL denied login needs TLS"
