"""Reliability and hostile input: nothing is lost and nobody gets out.

Every test runs a real shelfd. ``make test`` runs short versions; ``make soak``
(SHELF_SOAK=1) runs the long ones and writes their figures to
docs/reliability.md through ``record()``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import resource
import signal
import socket
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from helpers import (Daemon, Raw, greeted, python_env, upload_temporaries, visible, wait_for,
                     zombies_of)

SOAK = bool(os.environ.get("SHELF_SOAK"))
CORPUS = Path(__file__).parent / "corpus"
VERBS = [b"LIST", b"GET", b"PUT", b"STAT", b"HASH", b"NOOP", b"QUIT", b"list", b"Get"]


def record(test: str, **figures) -> None:
    """Append this test's figures for docs/reliability.md (make soak sets the file)."""
    path = os.environ.get("SHELF_RELIABILITY_REPORT")
    if path:
        with open(path, "a") as handle:
            handle.write(json.dumps({"test": test, "soak": SOAK, **figures}) + "\n")


def tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file() and not path.is_symlink():
            digest.update(path.read_bytes())
    return digest.hexdigest()


class Guard:
    """The invariants checked after every hostile example."""

    def __init__(self, daemon: Daemon, library: Path, sentinel: Path):
        self.daemon, self.library, self.sentinel = daemon, library, sentinel
        self.sentinel_digest = tree_digest(sentinel)
        self.stored: dict[str, bytes] = {}   # what was fully uploaded with a final OK

    def check(self) -> None:
        assert self.daemon.alive(), "shelfd died"
        with Raw(self.daemon.port) as conn:
            reply = conn.request("LIST")
            assert reply == "EMPTY" or reply.startswith("OK ")
        assert tree_digest(self.sentinel) == self.sentinel_digest, "something outside changed"
        visible = {p.name for p in self.library.iterdir()
                   if not p.name.startswith(".") and p.is_file() and not p.is_symlink()}
        assert visible <= set(self.stored), "unexpected files: %s" % (visible - set(self.stored))
        for name in visible:
            assert (self.library / name).read_bytes() == self.stored[name]
        wait_for(lambda: not zombies_of(self.daemon.pid), timeout=5, what="no zombies")


@pytest.fixture
def guarded(daemon_factory, tmp_path):
    root = tmp_path / "library"
    sentinel = tmp_path / "sentinel"
    (sentinel / "deep").mkdir(parents=True)
    (sentinel / "secret.txt").write_text("do not touch")
    (sentinel / "deep" / "x.bin").write_bytes(os.urandom(1000))
    root.mkdir()
    (root / "escape").symlink_to(sentinel / "secret.txt")
    daemon = daemon_factory(root, "--idle-timeout", "5", "--max-upload", "1M")
    return Guard(daemon, root, sentinel)


def send_and_close(port: int, data: bytes, read_reply: bool = True) -> bytes:
    """Send raw bytes in one session, read what comes back (bounded), close."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.settimeout(2)
        try:
            sock.sendall(data)
            if read_reply:
                sock.shutdown(socket.SHUT_WR)
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    received += chunk
        except (socket.timeout, ConnectionResetError, BrokenPipeError):
            pass
    return received


def expect_uploads(guard: Guard, data: bytes, limit: int = 1 << 20) -> None:
    """Read ``data`` as shelfd will, and note every PUT it must store whole."""
    from common.protocol import InvalidName, decode_name
    position = 0
    while True:
        end = data.find(b"\n", position)
        if end < 0 or end + 1 - position > 4096:
            return
        line = data[position:end].removesuffix(b"\r")
        position = end + 1
        tokens = line.split(b" ")
        verb = tokens[0].upper()
        if verb == b"QUIT":
            return
        # A size is ASCII digits, any number of leading zeros (PROTOCOL.md), below 2**63.
        if verb != b"PUT" or len(tokens) != 3 or not tokens[2].isdigit() \
                or len(tokens[2].lstrip(b"0")) > 19 or int(tokens[2]) >= 1 << 63:
            continue
        try:
            name = decode_name(tokens[1])
        except InvalidName:
            continue
        size = int(tokens[2])
        if size > limit or name in guard.stored or os.path.lexists(guard.library / name):
            continue
        content = data[position:position + size]
        position += size
        if len(content) == size:
            guard.stored[name] = content


token = st.one_of(
    st.sampled_from([b"..", b"../x", b"%2e%2e", b"%2F", b"/etc/passwd", b"escape", b".hidden",
                     b"a%00b", b"%", b"%zz", b"9999999999999999999999", b"-1", b"0", b"a b",
                     "日本".encode(), b"\xff\xfe", b"x" * 300, b"sentinel%2Fsecret.txt"]),
    st.binary(min_size=0, max_size=40))
request_line = st.builds(lambda verb, args: b" ".join([verb] + args),
                         st.sampled_from(VERBS), st.lists(token, max_size=3))


@settings(max_examples=2000 if SOAK else 120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(lines=st.lists(st.one_of(request_line, st.binary(max_size=200)), min_size=1, max_size=6),
       ending=st.sampled_from([b"\n", b"\r\n", b"", b"\n" + b"y" * 5000]))
def test_fuzzed_request_lines_change_nothing(guarded, lines, ending):
    data = b"\n".join(lines) + ending
    expect_uploads(guarded, data)
    reply = send_and_close(guarded.daemon.port, data)
    assert greeted(reply.split(b"\n")[0])
    first = reply.split(b"\n")[1] if reply.count(b"\n") > 1 else b""
    assert first.split(b" ")[0] in (b"", b"OK", b"EMPTY", b"FAIL", b"EXISTS")
    guarded.check()


@settings(max_examples=600 if SOAK else 40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(size=st.integers(0, 5000), sent=st.integers(0, 6000),
       name=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20))
def test_wrong_byte_counts_never_store_a_partial_file(guarded, size, sent, name):
    from common.protocol import encode_name, is_valid_name
    payload = os.urandom(sent)
    encoded = encode_name(name)
    reply = send_and_close(guarded.daemon.port, ("PUT %s %d\n" % (encoded, size)).encode()
                           + payload)
    lines = reply.split(b"\n")
    if len(lines) > 2 and lines[1].startswith(b"OK ") and lines[2].startswith(b"OK %d " % size):
        assert sent >= size and is_valid_name(name)
        guarded.stored[name] = payload[:size]
    guarded.check()


def test_seed_corpus_of_nasty_inputs(guarded):
    files = sorted(CORPUS.glob("*"))
    assert len(files) >= 10
    guarded.stored["more.bin"] = b"abc"  # 24-wrong-count-more: a whole 3-byte upload
    for path in files:
        reply = send_and_close(guarded.daemon.port, path.read_bytes())
        assert greeted(reply.split(b"\n")[0]), path.name
        guarded.check()
    record("seed corpus", inputs=len(files), lost=0)


@settings(max_examples=300 if SOAK else 30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(st.tuples(st.sampled_from(["LIST", "GET", "PUT", "STAT", "HASH", "NOOP"]),
                                st.sampled_from(["a.txt", "b c.txt", "日本.bin", "missing"]),
                                st.binary(max_size=3000)), min_size=1, max_size=12))
def test_random_sequences_of_valid_requests(guarded, steps):
    from common.protocol import encode_name
    with Raw(guarded.daemon.port) as conn:
        for verb, name, data in steps:
            token = encode_name(name)
            if verb == "PUT":
                first, final = conn.put(token, data)
                if final and final.startswith("OK %d " % len(data)):
                    guarded.stored[name] = data
                else:
                    assert first == "EXISTS" or final == "EXISTS"
            elif verb == "GET":
                reply, body = conn.get(token)
                if name in guarded.stored:
                    assert body == guarded.stored[name]
                else:
                    assert reply.startswith("FAIL notfound ")
            elif verb == "HASH":
                reply = conn.request("HASH " + token)
                if name in guarded.stored:
                    assert reply.startswith(
                        "OK sha256 %s " % hashlib.sha256(guarded.stored[name]).hexdigest())
            elif verb == "LIST":
                reply = conn.request("LIST")
                count = 0 if reply == "EMPTY" else int(reply.split()[1])
                assert count == len(guarded.stored)
                for _ in range(count):
                    conn.line()
            else:
                assert conn.request("%s %s" % (verb, token) if verb == "STAT" else verb) \
                    .split(" ")[0] in ("OK", "FAIL")
    guarded.check()


# -- faults -------------------------------------------------------------------

@pytest.mark.parametrize("direction", ["put", "get"])
def test_client_vanishes_at_random_points(guarded, direction):
    rng = random.Random(7)
    size = 600_000
    content = os.urandom(size)
    if direction == "get":
        (guarded.library / "whole.bin").write_bytes(content)
        guarded.stored["whole.bin"] = content
    cuts = 60 if SOAK else 12
    for index in range(cuts):
        cut = rng.randrange(0, size)
        with socket.create_connection(("127.0.0.1", guarded.daemon.port), timeout=5) as sock:
            sock.recv(100)
            if direction == "put":
                sock.sendall(b"PUT cut-%d.bin %d\n" % (index, size))
                sock.recv(10)
                sock.sendall(content[:cut])
            else:
                sock.sendall(b"GET whole.bin\n")
                got = 0
                while got < cut:
                    chunk = sock.recv(min(65536, cut - got))
                    if not chunk:
                        break
                    got += len(chunk)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    guarded.check()  # nothing visible: each cut upload's bytes wait hidden, for RESUME
    record("client vanishes mid-%s" % direction.upper(), faults=cuts, lost=0)


def test_daemon_killed_mid_put_then_restarted(daemon_factory, tmp_path):
    root = tmp_path / "library"
    root.mkdir()
    pidfile = tmp_path / "shelfd.pid"
    daemon = daemon_factory(root, "--pidfile", str(pidfile))
    (root / "whole.txt").write_text("whole")
    conn = daemon.connect()
    assert conn.request("PUT half.bin 1000000").startswith("OK ")
    conn.send(os.urandom(300_000))
    wait_for(lambda: upload_temporaries(root), what="the temporary")
    children = daemon.sessions()
    daemon.stop(signal.SIGKILL)
    assert pidfile.exists()  # stale: its holder died without cleaning up
    # Restart while the orphaned session still lives and holds its upload: 1.0
    # said "already running" here, as the orphan had inherited the PID file's lock.
    again = daemon_factory(root, "--pidfile", str(pidfile))
    assert int(pidfile.read_text()) == again.pid
    assert "stale PID file" in again.log()
    assert all(os.path.exists("/proc/%d" % pid) for pid in children)
    conn.close()  # the client goes: the orphan keeps its unfinished upload, hidden
    wait_for(lambda: all(not os.path.exists("/proc/%d" % pid) for pid in children),
             what="the orphaned session to go")
    assert visible(root) == ["whole.txt"] and len(upload_temporaries(root)) == 1
    record("shelfd killed with SIGKILL mid-PUT, restarted", faults=1, lost=0)


def test_disk_full_during_put_fails_cleanly_and_recovers(daemon_factory, tmp_path):
    root = tmp_path / "library"
    root.mkdir()
    limit = 1 << 20

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    import subprocess
    import sys
    log = tmp_path / "full.log"
    proc = subprocess.Popen([sys.executable, "-m", "daemon", "--root", str(root), "--port", "0",
                             "--log-file", str(log)], env=python_env(), preexec_fn=small_disk,
                            cwd=str(Path(__file__).parent.parent), stdin=subprocess.DEVNULL)
    try:
        port = int(wait_for(lambda: log.exists() and __import__("re").search(
            r"listening on \S+:(\d+)", log.read_text()), what="listening").group(1))
        with Raw(port) as conn:
            first, final = conn.put("too-big.bin", os.urandom(limit + 4096))
            assert first.startswith("OK ")
            assert final.startswith("FAIL io ") and "too large" in final
            assert conn.request("NOOP") == "OK"  # the session goes on
            assert visible(root) == [] and upload_temporaries(root) == []
            data = os.urandom(limit // 2)
            assert conn.put("fits.bin", data)[1].startswith("OK %d " % len(data))
        assert (root / "fits.bin").read_bytes() == data
        assert visible(root) == ["fits.bin"] and upload_temporaries(root) == []
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    record("disk fills during a PUT (RLIMIT_FSIZE)", faults=1, lost=0)


def test_unreadable_library_fails_then_recovers(shelfd, library):
    if os.geteuid() == 0:
        # Modes do not stop root, and dropping to nobody cannot reach an interpreter
        # installed under /root: this one runs for normal users (make test as a user).
        pytest.skip("root reads any folder whatever its mode")
    (library / "a.txt").write_text("a")
    library.chmod(0)
    try:
        with shelfd.connect() as conn:
            assert conn.request("LIST").startswith("FAIL ")
    finally:
        library.chmod(0o755)
    with shelfd.connect() as conn:
        assert conn.request("LIST") == "OK 1"
    record("library folder made unreadable, then readable again", faults=1, lost=0)


# -- load ---------------------------------------------------------------------

def test_concurrent_clients_mixed_load(daemon_factory, tmp_path):
    root = tmp_path / "library"
    root.mkdir()
    daemon = daemon_factory(root, "--max-clients", "256", "--max-per-ip", "256")  # all from 127.0.0.1
    clients = 200
    operations = 40 if SOAK else 4
    shared = ["race-%d.bin" % index for index in range(10)]
    sent: dict[str, bytes] = {}
    race_wins: dict[str, list] = {name: [] for name in shared}
    errors: list[str] = []
    counts = {"requests": 0, "bytes": 0}
    lock = threading.Lock()
    fds_before = len(os.listdir("/proc/%d/fd" % daemon.pid))
    rss_before = rss_kib(daemon.pid)
    (root / "seed.bin").write_bytes(os.urandom(200_000))
    seed = (root / "seed.bin").read_bytes()
    start = threading.Barrier(clients)

    def client(number: int) -> None:
        rng = random.Random(number)
        try:
            start.wait(30)
            with Raw(daemon.port) as conn:
                assert greeted(conn.greeting)
                for step in range(operations):
                    choice = rng.random()
                    if choice < 0.25:
                        reply = conn.request("LIST")
                        for _ in range(int(reply.split()[1]) if reply.startswith("OK") else 0):
                            conn.line()
                    elif choice < 0.5:
                        reply, body = conn.get("seed.bin")
                        assert body == seed
                    elif choice < 0.8:
                        name = "unique-%d-%d.bin" % (number, step)
                        data = os.urandom(rng.randrange(0, 100_000))
                        assert conn.put(name, data)[1].startswith("OK %d " % len(data))
                        with lock:
                            sent[name] = data
                            counts["bytes"] += len(data)
                    else:
                        name = rng.choice(shared)
                        data = os.urandom(50_000)
                        first, final = conn.put(name, data)
                        if final and final.startswith("OK 50000 "):
                            with lock:
                                race_wins[name].append(data)
                        else:
                            assert "EXISTS" in (first, final)
                    with lock:
                        counts["requests"] += 1
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            with lock:
                errors.append("client %d: %r" % (number, exc))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert errors == []
    for name, data in sent.items():
        assert hashlib.sha256((root / name).read_bytes()).digest() == \
            hashlib.sha256(data).digest()
    for name, wins in race_wins.items():
        if (root / name).exists():
            assert len(wins) == 1 and (root / name).read_bytes() == wins[0]
        else:
            assert wins == []
    wait_for(lambda: daemon.sessions() == [], timeout=30, what="every session to end")
    assert zombies_of(daemon.pid) == []
    assert len(os.listdir("/proc/%d/fd" % daemon.pid)) == fds_before
    rss_after = rss_kib(daemon.pid)
    assert rss_after < rss_before + 4096, (rss_before, rss_after)  # flat, within 4 MiB
    verified = sum(len(d) for d in sent.values()) + sum(len(w[0]) for w in race_wins.values()
                                                        if w)
    record("200 concurrent clients, mixed LIST/GET/PUT/races", clients=clients,
           requests=counts["requests"], bytes_verified=verified,
           races=len([w for w in race_wins.values() if w]), lost=0,
           master_rss_kib=[rss_before, rss_after])


def rss_kib(pid: int) -> int:
    with open("/proc/%d/status" % pid) as handle:
        return int(handle.read().split("VmRSS:")[1].split()[0])


# -- slow and abusive clients -------------------------------------------------------

def test_slow_and_abusive_clients_do_not_starve_others(daemon_factory, tmp_path):
    root = tmp_path / "library"
    root.mkdir()
    (root / "big.bin").write_bytes(os.urandom(32 << 20))
    daemon = daemon_factory(root, "--max-clients", "4", "--idle-timeout", "2")
    rss_before = rss_kib(daemon.pid)
    trickler = Raw(daemon.port)
    trickler.send(b"L")  # one byte now, the next later: a slowloris
    hoarder = Raw(daemon.port)
    hoarder.send(b"GET big.bin\n")  # and never reads the 32 MiB
    with Raw(daemon.port) as polite:
        assert polite.request("LIST") == "OK 1"
        polite.line()
        with Raw(daemon.port) as fourth, Raw(daemon.port, greet=False) as fifth:
            assert fourth.request("NOOP") == "OK"
            assert fifth.line() == "BUSY"
    trickler.send(b"I")
    # The idle timeout frees the abusive sessions' slots.
    wait_for(lambda: daemon.sessions() == [], timeout=20, what="idle sessions to be closed")
    with Raw(daemon.port) as later:
        assert later.request("NOOP") == "OK"
    trickler.close()
    hoarder.close()
    assert rss_kib(daemon.pid) < rss_before + 2048
    record("slowloris, non-reading client, hoarded slots", clients=5, lost=0)


# -- security defaults --------------------------------------------------------------

def test_defaults_listen_on_loopback_and_warn_about_exposure(daemon_factory, tmp_path):
    root = tmp_path / "library"
    root.mkdir()
    daemon = daemon_factory(root)
    assert "listening on 127.0.0.1:" in daemon.log()
    exposed = daemon_factory(root, "--host", "0.0.0.0")
    wait_for(lambda: "anyone who can reach this port can change" in exposed.log(),
             what="the exposure warning")
    if os.geteuid() == 0:
        assert "running as root" in exposed.log()
    reading = daemon_factory(root, "--host", "0.0.0.0", "--anonymous", "r", "--prefork", "0")
    with reading.connect() as conn:  # the master logs this after all it says at start
        assert conn.request("NOOP") == "OK"
    wait_for(lambda: "session started" in reading.log(), what="the first session's line")
    assert "can change" not in reading.log()  # anonymous clients may only read


def test_temporaries_and_pidfile_have_safe_modes(daemon_factory, tmp_path):
    root = tmp_path / "library"
    root.mkdir()
    pidfile = tmp_path / "shelfd.pid"
    daemon = daemon_factory(root, "--pidfile", str(pidfile))
    assert pidfile.stat().st_mode & 0o777 == 0o644
    with daemon.connect() as conn:
        assert conn.request("PUT slow.bin 100").startswith("OK ")
        conn.send(b"x" * 10)
        temp = root / ".shelf-uploads" / wait_for(lambda: upload_temporaries(root),
                                                  what="the temporary")[0]
        assert temp.stat().st_mode & 0o777 == 0o600
        assert (root / ".shelf-uploads").stat().st_mode & 0o777 == 0o700
        conn.send(b"x" * 90)
        assert conn.line().startswith("OK 100 ")
    assert (root / "slow.bin").stat().st_mode & 0o777 == 0o644
