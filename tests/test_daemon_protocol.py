"""PROTOCOL.md, line by line, against the real shelfd over TCP."""

from __future__ import annotations

import hashlib
import os
import socket
import threading

import pytest

from helpers import Raw, wait_for

UNICODE_NAMES = ["my notes.txt", "100% done.txt", "日本語のファイル.txt", "emoji 🎉.bin",
                 "résumé.pdf", "quote's \"name\" (1).txt"]


def encoded(name: str) -> str:
    from common.protocol import encode_name
    return encode_name(name)


# -- session ---------------------------------------------------------------

def test_greeting(shelfd):
    with shelfd.connect() as conn:
        assert conn.greeting == "READY shelf/1"


def test_list_empty(shelfd):
    with shelfd.connect() as conn:
        assert conn.request("LIST") == "EMPTY"


def test_list_sorted_by_utf8_bytes_with_encoded_names(shelfd, library):
    names = ["b.txt", "a b.txt", "Z.txt", "é.txt", "日本.txt", "100%.txt"]
    for index, name in enumerate(names):
        (library / name).write_bytes(b"x" * index)
        os.utime(library / name, (1700000000 + index, 1700000000 + index))
    with shelfd.connect() as conn:
        assert conn.request("LIST") == "OK %d" % len(names)
        lines = [conn.line() for _ in names]
    expected = sorted(names, key=lambda n: n.encode("utf-8"))
    assert [line.split(" ")[0] for line in lines] == [encoded(n) for n in expected]
    for line in lines:
        name_token, size, mtime = line.split(" ")
        index = names.index(name_token.replace("%20", " ").replace("%25", "%"))
        assert (int(size), int(mtime)) == (index, 1700000000 + index)


def test_list_shows_only_regular_visible_files(shelfd, library, tmp_path):
    (library / "visible.txt").write_text("v")
    (library / ".hidden").write_text("h")
    (library / "folder").mkdir()
    (tmp_path / "outside.txt").write_text("secret")
    (library / "link").symlink_to(tmp_path / "outside.txt")
    os.mkfifo(library / "fifo")
    bad = os.path.join(os.fsencode(library), b"bad\xffname")
    with open(bad, "wb") as handle:
        handle.write(b"x")
    with shelfd.connect() as conn:
        assert conn.request("LIST") == "OK 1"
        assert conn.line().startswith("visible.txt 1 ")
        for name in ("link", "fifo", "folder", ".hidden", "bad%FFname"):
            assert conn.request("GET %s" % name).startswith("FAIL ")
        assert conn.request("NOOP") == "OK"


def test_lowercase_verbs_are_accepted(shelfd, library):
    (library / "a.txt").write_bytes(b"abc")
    with shelfd.connect() as conn:
        assert conn.request("list") == "OK 1"
        conn.line()
        assert conn.request("Stat a.txt").startswith("OK 3 ")
        assert conn.request("noop") == "OK"


def test_crlf_is_accepted(shelfd):
    with shelfd.connect() as conn:
        assert conn.request(b"NOOP\r") == "OK"


@pytest.mark.parametrize("line, reason_part", [
    ("FROB", "unknown verb"),
    ("", "empty request"),
    ("LIST extra", "wrong number of arguments"),
    ("GET", "wrong number of arguments"),
    ("GET a b c", "wrong number of arguments"),
    ("PUT a", "wrong number of arguments"),
    ("STAT", "wrong number of arguments"),
    ("HASH a b", "wrong number of arguments"),
    ("GET  a", "one space"),
    ("GET a%zz", "invalid name"),
    ("GET a%2", "invalid name"),
])
def test_bad_requests_fail_and_the_session_goes_on(shelfd, line, reason_part):
    with shelfd.connect() as conn:
        reply = conn.request(line)
        assert reply.startswith("FAIL ") and reason_part in reply
        assert conn.request("NOOP") == "OK"


def test_line_too_long_fails_and_closes(shelfd):
    with shelfd.connect() as conn:
        conn.send(b"GET " + b"a" * 5000 + b"\n")
        assert conn.line() == "FAIL line too long"
        assert conn.closed_by_peer()


def test_line_of_exactly_4096_bytes_is_accepted(shelfd):
    with shelfd.connect() as conn:
        line = b"GET " + b"a" * (4096 - 5)
        reply = conn.request(line)
        assert reply.startswith("FAIL invalid name")  # too long a name, but not a long line
        assert conn.request("NOOP") == "OK"


def test_quit_closes_without_reply(shelfd):
    with shelfd.connect() as conn:
        conn.send("QUIT\n")
        assert conn.closed_by_peer()
        assert conn.buffer == b""


def test_noop(shelfd):
    with shelfd.connect() as conn:
        assert conn.request("NOOP") == "OK"


# -- GET -------------------------------------------------------------------

def test_get_whole_and_from_offset(shelfd, library):
    data = os.urandom(300_000)  # above the small-file path, so sendfile() is used
    (library / "blob.bin").write_bytes(data)
    (library / "small.txt").write_bytes(b"hello")
    with shelfd.connect() as conn:
        assert conn.get("blob.bin") == ("OK 300000", data)
        assert conn.get("blob.bin", 123_456) == ("OK %d" % (300000 - 123456), data[123456:])
        assert conn.get("small.txt", 2) == ("OK 3", b"llo")
        assert conn.get("small.txt", 5) == ("OK 0", b"")
        assert conn.request("NOOP") == "OK"


def test_get_failures(shelfd, library):
    (library / "small.txt").write_bytes(b"hello")
    with shelfd.connect() as conn:
        assert conn.request("GET missing.txt") == "FAIL no such file"
        assert conn.request("GET small.txt 6").startswith("FAIL offset past the end")
        assert conn.request("GET small.txt -1").startswith("FAIL offset is not a decimal")
        assert conn.request("GET small.txt x").startswith("FAIL offset is not a decimal")
        assert conn.request("GET .hidden").startswith("FAIL invalid name")
        assert conn.request("NOOP") == "OK"


def test_get_unreadable_file_fails(shelfd, library):
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    path = library / "locked.txt"
    path.write_text("x")
    path.chmod(0)
    with shelfd.connect() as conn:
        assert conn.request("GET locked.txt").startswith("FAIL ")


# -- PUT -------------------------------------------------------------------

def test_put_stores_exact_bytes_then_exists(shelfd, library):
    data = os.urandom(2_000_000)
    with shelfd.connect() as conn:
        assert conn.put("upload.bin", data) == ("OK", "OK 2000000")
        assert conn.request("PUT upload.bin 10") == "EXISTS"
        assert conn.request("NOOP") == "OK"
    assert (library / "upload.bin").read_bytes() == data
    assert sorted(os.listdir(library)) == ["upload.bin"]


def test_put_zero_byte_file(shelfd, library):
    with shelfd.connect() as conn:
        assert conn.put("empty", b"") == ("OK", "OK 0")
        assert conn.get("empty") == ("OK 0", b"")
    assert (library / "empty").read_bytes() == b""


def test_put_then_pipelined_request_in_the_same_segment(shelfd):
    with shelfd.connect() as conn:
        conn.send(b"PUT p.txt 5\n")
        assert conn.line() == "OK"
        conn.send(b"helloSTAT p.txt\n")
        assert conn.line() == "OK 5"
        assert conn.line().startswith("OK 5 ")


@pytest.mark.parametrize("line, reason_part", [
    ("PUT a.txt x", "size is not a decimal"),
    ("PUT a.txt -5", "size is not a decimal"),
    ("PUT .hidden 5", "invalid name"),
    ("PUT a%2Fb 5", "invalid name"),
    ("PUT big.bin 99999999999999999", "not enough free space"),
])
def test_put_refusals(shelfd, library, line, reason_part):
    with shelfd.connect() as conn:
        reply = conn.request(line)
        assert reply.startswith("FAIL ") and reason_part in reply
        assert conn.request("NOOP") == "OK"
    assert os.listdir(library) == []


def test_put_over_the_upload_limit(daemon_factory, library):
    daemon = daemon_factory(library, "--max-upload", "1000")
    with daemon.connect() as conn:
        assert conn.request("PUT a.bin 1001").startswith("FAIL file too large")
        assert conn.put("b.bin", b"x" * 1000) == ("OK", "OK 1000")
    assert os.listdir(library) == ["b.bin"]


def test_read_only_library(daemon_factory, library):
    (library / "a.txt").write_text("a")
    daemon = daemon_factory(library, "--read-only")
    with daemon.connect() as conn:
        assert conn.request("PUT b.txt 1") == "FAIL library is read-only"
        assert conn.get("a.txt") == ("OK 1", b"a")
    assert os.listdir(library) == ["a.txt"]


def test_disconnect_mid_put_leaves_nothing(shelfd, library):
    conn = shelfd.connect()
    assert conn.request("PUT partial.bin 1000000") == "OK"
    conn.send(b"x" * 400_000)
    wait_for(lambda: any(n.startswith(".shelf-upload.") for n in os.listdir(library)),
             what="the upload's temporary")
    conn.close()
    wait_for(lambda: os.listdir(library) == [], what="the temporary to be removed")
    wait_for(lambda: "broken: connection closed after" in shelfd.log(), what="the log line")
    with shelfd.connect() as again:
        assert again.request("LIST") == "EMPTY"


def test_racing_puts_of_one_name_have_exactly_one_winner(shelfd, library):
    count = 8
    payloads = [bytes([index]) * 500_000 for index in range(count)]
    conns = [shelfd.connect() for _ in range(count)]
    results = [None] * count
    firsts = [conn.request("PUT race.bin 500000") for conn in conns]
    assert firsts.count("OK") >= 1  # those who asked after a win may get EXISTS at once
    barrier = threading.Barrier(count)

    def upload(index):
        barrier.wait(10)
        if firsts[index] != "OK":
            results[index] = firsts[index]
            return
        conns[index].send(payloads[index])
        results[index] = conns[index].line()

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for conn in conns:
        conn.close()
    assert results.count("OK 500000") == 1
    assert all(result in ("OK 500000", "EXISTS") for result in results)
    winner = results.index("OK 500000")
    assert (library / "race.bin").read_bytes() == payloads[winner]
    wait_for(lambda: os.listdir(library) == ["race.bin"], what="temporaries to go")


# -- STAT and HASH ---------------------------------------------------------

def test_stat(shelfd, library):
    (library / "s.txt").write_bytes(b"12345")
    os.utime(library / "s.txt", (1763880000, 1763880000))
    with shelfd.connect() as conn:
        assert conn.request("STAT s.txt") == "OK 5 1763880000"
        assert conn.request("STAT nope") == "FAIL no such file"


def test_hash_matches_hashlib_and_is_cached_safely(shelfd, library):
    data = os.urandom(3_000_000)
    with shelfd.connect() as conn:
        conn.put("h.bin", data)
        expected = "OK sha256 " + hashlib.sha256(data).hexdigest()
        assert conn.request("HASH h.bin") == expected
        assert conn.request("HASH h.bin") == expected
        assert conn.request("HASH nope") == "FAIL no such file"
    # A different file under another name gets its own digest, never a stale one.
    (library / "other.bin").write_bytes(b"other")
    with shelfd.connect() as conn:
        assert conn.request("HASH other.bin") == "OK sha256 " + hashlib.sha256(b"other").hexdigest()
    assert ".shelf-cache" in os.listdir(library)
    with shelfd.connect() as conn:
        assert conn.request("LIST") == "OK 2"  # the cache is hidden


# -- names -----------------------------------------------------------------

@pytest.mark.parametrize("name", UNICODE_NAMES)
def test_unicode_and_space_names_round_trip(shelfd, library, name):
    data = name.encode("utf-8") * 3
    with shelfd.connect() as conn:
        assert conn.put(encoded(name), data) == ("OK", "OK %d" % len(data))
        assert conn.get(encoded(name)) == ("OK %d" % len(data), data)
        assert conn.request("LIST") == "OK 1"
        assert conn.line().split(" ")[0] == encoded(name)
    assert (library / name).read_bytes() == data


def test_raw_utf8_and_optional_encoding_are_the_same_name(shelfd, library):
    (library / "résumé.pdf").write_bytes(b"cv")
    with shelfd.connect() as conn:
        assert conn.request("STAT résumé.pdf").startswith("OK 2 ")
        assert conn.request("STAT r%C3%A9sum%C3%A9.pdf").startswith("OK 2 ")
        assert conn.request("STAT %72%c3%a9sum%c3%a9.pdf").startswith("OK 2 ")


HOSTILE = ["../x", "/etc/passwd", "..%2Fx", "%2e%2e", "%2E%2E%2Fescape", "a/b", "a%2Fb",
           "a%00b", "a%0Ab", "a%0Db", ".", "..", "x" * 256, ".hidden"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_never_escape_the_root(shelfd, library, tmp_path, name):
    outside = tmp_path / "x"
    outside.write_text("outside")
    before = sorted(os.listdir(tmp_path))
    with shelfd.connect() as conn:
        for verb in ("GET %s", "STAT %s", "HASH %s"):
            assert conn.request(verb % name).startswith("FAIL ")
        assert conn.request("PUT %s 3" % name).startswith("FAIL ")
        assert conn.request("NOOP") == "OK"
    assert sorted(os.listdir(tmp_path)) == before
    assert outside.read_text() == "outside"
    assert os.listdir(library) == []


def test_raw_nul_and_newline_bytes(shelfd, library):
    with shelfd.connect() as conn:
        assert conn.request(b"GET a\x00b").startswith("FAIL invalid name")
        conn.send(b"GET a\nb\n")
        assert conn.line() == "FAIL no such file"
        assert conn.line().startswith("FAIL unknown verb")


def test_symlink_inside_the_root_pointing_outside(shelfd, library, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    (library / "escape").symlink_to(secret)
    (library / "dirlink").symlink_to(tmp_path)
    with shelfd.connect() as conn:
        assert conn.request("GET escape") == "FAIL no such file"
        assert conn.request("HASH escape") == "FAIL no such file"
        assert conn.request("PUT escape 3") == "EXISTS"  # the name is taken; never followed
        assert conn.request("GET dirlink%2Fsecret.txt").startswith("FAIL invalid name")
    assert secret.read_text() == "secret"


def test_hidden_file_not_listed_served_or_writable(shelfd, library):
    (library / ".secret").write_text("s")
    with shelfd.connect() as conn:
        assert conn.request("LIST") == "EMPTY"
        assert conn.request("GET .secret").startswith("FAIL ")
        assert conn.request("PUT .secret 1").startswith("FAIL ")
    assert (library / ".secret").read_text() == "s"


# -- sessions and processes ------------------------------------------------

def test_each_session_is_its_own_process(daemon_factory, library):
    shelfd = daemon_factory(library, "--prefork", "0")  # a fresh fork per session
    with shelfd.connect() as first, shelfd.connect() as second:
        first.request("NOOP")
        second.request("NOOP")
        children = wait_for(lambda: len(shelfd.children()) == 2 and shelfd.children(),
                            what="two session processes")
        assert len(set(children)) == 2 and shelfd.pid not in children


def test_two_hundred_sessions_leave_no_zombie(daemon_factory, library):
    shelfd = daemon_factory(library, "--prefork", "0")  # every session a process to reap
    for _ in range(200):
        with shelfd.connect() as conn:
            conn.send("QUIT\n")
            assert conn.closed_by_peer()
    wait_for(lambda: shelfd.children() == [], what="every session to be reaped")
    from helpers import zombies_of
    assert zombies_of(shelfd.pid) == []
    assert shelfd.alive()


def test_max_clients_answers_busy(daemon_factory, library):
    daemon = daemon_factory(library, "--max-clients", "2", "--prefork", "0")
    with daemon.connect() as one, daemon.connect() as two:
        assert one.request("NOOP") == "OK" and two.request("NOOP") == "OK"
        with Raw(daemon.port, greet=False) as third:
            assert third.line() == "BUSY"
            assert third.closed_by_peer()
    wait_for(lambda: daemon.children() == [], what="sessions to end")
    with daemon.connect() as again:
        assert again.greeting == "READY shelf/1"
    assert "refused" in daemon.log()


def test_idle_timeout_closes_the_session(daemon_factory, library):
    daemon = daemon_factory(library, "--idle-timeout", "1")
    with daemon.connect() as conn:
        conn.sock.settimeout(10)
        assert conn.closed_by_peer()
    wait_for(lambda: "idle timeout" in daemon.log(), what="the idle log line")


def test_stalled_upload_counts_as_idle(daemon_factory, library):
    daemon = daemon_factory(library, "--idle-timeout", "1")
    with daemon.connect() as conn:
        assert conn.request("PUT stall.bin 100") == "OK"
        conn.send(b"x" * 10)
        conn.sock.settimeout(10)
        assert conn.closed_by_peer()
    wait_for(lambda: os.listdir(library) == [], what="the temporary to be removed")


def test_sigterm_stops_and_exits_zero(shelfd):
    with shelfd.connect() as conn:
        conn.request("NOOP")
        assert shelfd.stop() == 0
        assert conn.closed_by_peer()
    assert "exit" in shelfd.log()


def test_a_request_log_line_names_peer_verb_name_and_bytes(shelfd, library):
    (library / "f.txt").write_bytes(b"12345")
    with shelfd.connect() as conn:
        conn.get("f.txt")
    wait_for(lambda: "GET f.txt 5 bytes" in shelfd.log(), what="the GET log line")
    assert "127.0.0.1:" in shelfd.log()


def test_connection_refused_when_not_listening():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(OSError):
        Raw(port)
