"""PROTOCOL.md version 2, line by line, against the real shelfd over TCP.

The verbs that version 1 had (LIST, GET, PUT, STAT, HASH, NOOP, QUIT), the
framing, names and processes. The verbs version 2 added (folders, versions,
trash, rename, resume) are in ``test_protocol_v2.py``; races between many
sessions in ``test_races.py``.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import threading

import pytest

from helpers import Raw, wait_for

UNICODE_NAMES = ["my notes.txt", "100% done.txt", "日本語のファイル.txt", "emoji 🎉.bin",
                 "résumé.pdf", "quote's \"name\" (1).txt"]
TOKEN = r"[0-9A-Za-z_-]{1,64}"
FEATURES = ["anonymous", "folders", "trash", "resume"]


def encoded(name: str) -> str:
    from common.protocol import encode_name
    return encode_name(name)


def visible(library) -> list[str]:
    """What a user sees in the library folder (the server's working folders aside)."""
    return sorted(name for name in os.listdir(library) if not name.startswith(".shelf-"))


def kept_uploads(library) -> list[str]:
    folder = library / ".shelf-uploads"
    return sorted(os.listdir(folder)) if folder.is_dir() else []


def stored(reply: str, size: int) -> str:
    """The version in a final PUT reply ``OK <size> <version>``."""
    match = re.fullmatch(r"OK %d (%s)" % (size, TOKEN), reply or "")
    assert match, reply
    return match.group(1)


# -- session ---------------------------------------------------------------

def test_greeting(shelfd):
    with shelfd.connect() as conn:
        assert conn.greeting == "READY shelf/2 " + " ".join(FEATURES)


def test_greeting_without_trash_or_resume(daemon_factory, library):
    daemon = daemon_factory(library, "--trash-days", "0", "--keep-uploads-hours", "0")
    with daemon.connect() as conn:
        assert conn.greeting == "READY shelf/2 anonymous folders"


def test_greeting_with_no_anonymous_grant_serves_only_login_noop_quit(daemon_factory, library):
    (library / "a.txt").write_text("a")
    daemon = daemon_factory(library, "--anonymous", "none")
    with daemon.connect() as conn:
        assert conn.greeting == "READY shelf/2 folders trash resume"
        assert conn.request("LIST") == "FAIL denied log in first"
        assert conn.request("GET a.txt").startswith("FAIL denied ")
        assert conn.request("GET ../a").startswith("FAIL invalid ")  # arguments first
        assert conn.request("NOOP") == "OK"
        assert conn.request("LOGIN bob secret").startswith("FAIL denied ")


def test_list_empty(shelfd):
    with shelfd.connect() as conn:
        assert conn.request("LIST") == "EMPTY"


def test_list_sorted_by_utf8_bytes_with_encoded_names(shelfd, library):
    names = ["b.txt", "a b.txt", "Z.txt", "é.txt", "日本.txt", "100%.txt"]
    for index, name in enumerate(names):
        (library / name).write_bytes(b"x" * index)
        os.utime(library / name, (1700000000 + index, 1700000000 + index))
    (library / "b").mkdir()  # sorted without its "/": between "a b.txt" and "b.txt"
    os.utime(library / "b", (1600000000, 1600000000))
    with shelfd.connect() as conn:
        assert conn.request("LIST") == "OK %d" % (len(names) + 1)
        lines = [conn.line() for _ in range(len(names) + 1)]
    expected = sorted(names + ["b"], key=lambda n: n.encode("utf-8"))
    assert [line.split(" ")[0].rstrip("/") for line in lines] == [encoded(n) for n in expected]
    for line in lines:
        name_token, size, mtime, version = line.split(" ")
        if name_token == "b/":
            assert (size, mtime, version) == ("0", "1600000000", "-")
            continue
        index = names.index(name_token.replace("%20", " ").replace("%25", "%"))
        assert (int(size), int(mtime)) == (index, 1700000000 + index)
        assert re.fullmatch(TOKEN, version)


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
        assert conn.request("LIST") == "OK 2"
        assert conn.line() == "folder/ 0 %d -" % (library / "folder").stat().st_mtime
        assert conn.line().startswith("visible.txt 1 ")
        for name in ("link", "fifo", "folder"):
            assert conn.request("GET %s" % name).startswith("FAIL notfound ")
        for name in (".hidden", "bad%FFname"):  # not a valid path at all
            assert conn.request("GET %s" % name).startswith("FAIL invalid ")
        assert conn.request("NOOP") == "OK"


def test_lowercase_verbs_are_accepted(shelfd, library):
    (library / "a.txt").write_bytes(b"abc")
    with shelfd.connect() as conn:
        assert conn.request("list") == "OK 1"
        conn.line()
        assert conn.request("Stat a.txt").startswith("OK 3 ")
        assert conn.request("sPaCe").startswith("OK ")
        assert conn.request("noop") == "OK"


def test_crlf_is_accepted(shelfd):
    with shelfd.connect() as conn:
        assert conn.request(b"NOOP\r") == "OK"


@pytest.mark.parametrize("line, reason_part", [
    ("FROB", "unknown verb"),
    ("", "empty request"),
    ("LIST a b", "wrong number of arguments"),
    ("GET", "wrong number of arguments"),
    ("GET a 0 v x", "wrong number of arguments"),
    ("PUT a", "wrong number of arguments"),
    ("PUT a 1 replace x", "wrong number of arguments"),
    ("PUT a 1 overwrite", "only be 'replace'"),
    ("STAT", "wrong number of arguments"),
    ("HASH a b", "wrong number of arguments"),
    ("RENAME a", "wrong number of arguments"),
    ("TRASH x", "wrong number of arguments"),
    ("SPACE x", "wrong number of arguments"),
    ("GET  a", "one space"),
    ("GET a ", "one space"),
    ("GET a%zz", "invalid name"),
    ("GET a%2", "invalid name"),
    ("GET a 0 bad!version", "version is not a valid token"),
    ("GET a 0 " + "v" * 65, "version is not a valid token"),
    ("RESUME bad/token", "upload token is not a valid token"),
    ("RESTORE ../x", "trash id is not a valid token"),
    ("LOGIN bad!user pw", "user name"),
    ("GET /a", "invalid name"),
    ("GET a/", "invalid name"),
    ("GET a//b", "invalid name"),
    ("LIST photos/", "invalid name"),
])
def test_bad_requests_fail_invalid_and_the_session_goes_on(shelfd, line, reason_part):
    with shelfd.connect() as conn:
        reply = conn.request(line)
        assert reply.startswith("FAIL invalid ") and reason_part in reply, reply
        assert conn.request("NOOP") == "OK"


def test_every_fail_has_a_code_and_a_reason(shelfd, library):
    from common.protocol import FAIL_CODES
    with shelfd.connect() as conn:
        for line in ("FROB", "GET nope", "STAT nope", "RMDIR nope", "PUT a 1 replace",
                     "GET a x", "LIST nope", "RESUME abc", "PURGE abc"):
            word, code, reason = conn.request(line).split(" ", 2)
            assert word == "FAIL" and code in FAIL_CODES and reason, line


def test_line_too_long_fails_and_closes(shelfd):
    with shelfd.connect() as conn:
        conn.send(b"GET " + b"a" * 5000 + b"\n")
        assert conn.line() == "FAIL toolong line too long"
        assert conn.closed_by_peer()


def test_line_of_exactly_4096_bytes_is_accepted(shelfd):
    with shelfd.connect() as conn:
        line = b"GET " + b"a" * (4096 - 5)
        reply = conn.request(line)
        assert reply.startswith("FAIL invalid invalid name")  # a long name, not a long line
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
        big = conn.request("STAT blob.bin").split(" ")[4]
        small = conn.request("STAT small.txt").split(" ")[4]
        assert conn.get("blob.bin") == ("OK 300000 " + big, data)
        assert conn.get("blob.bin", 123_456) == ("OK %d %s" % (300000 - 123456, big),
                                                 data[123456:])
        assert conn.get("small.txt", 2) == ("OK 3 " + small, b"llo")
        assert conn.get("small.txt", 5) == ("OK 0 " + small, b"")
        assert conn.get("small.txt", 1, small) == ("OK 4 " + small, b"ello")
        assert conn.get("small.txt", 0000, small) == ("OK 5 " + small, b"hello")
        assert conn.request("GET small.txt 0002") == "OK 3 " + small
        assert conn.exact(3) == b"llo"
        assert conn.request("NOOP") == "OK"


def test_get_failures(shelfd, library):
    (library / "small.txt").write_bytes(b"hello")
    (library / "folder").mkdir()
    with shelfd.connect() as conn:
        assert conn.request("GET missing.txt").startswith("FAIL notfound ")
        assert conn.request("GET folder").startswith("FAIL notfound ")
        assert conn.request("GET /").startswith("FAIL notfound ")
        assert conn.request("GET small.txt 6").startswith("FAIL invalid offset past the end")
        assert conn.request("GET small.txt -1").startswith("FAIL invalid offset is not a decimal")
        assert conn.request("GET small.txt x").startswith("FAIL invalid offset is not a decimal")
        assert conn.request("GET small.txt +1").startswith("FAIL invalid offset is not a decimal")
        assert conn.request("GET .hidden").startswith("FAIL invalid invalid name")
        assert conn.request("GET small.txt 0 AAAA") == \
            "FAIL changed the file is no longer that version"
        assert conn.request("NOOP") == "OK"


def test_get_unreadable_file_fails(shelfd, library):
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    path = library / "locked.txt"
    path.write_text("x")
    path.chmod(0)
    with shelfd.connect() as conn:
        assert conn.request("GET locked.txt").startswith("FAIL io ")


# -- PUT -------------------------------------------------------------------

def test_put_stores_exact_bytes_then_exists(shelfd, library):
    data = os.urandom(2_000_000)
    with shelfd.connect() as conn:
        first, final = conn.put("upload.bin", data)
        assert re.fullmatch("OK " + TOKEN, first)
        version = stored(final, 2_000_000)
        assert conn.request("PUT upload.bin 10") == "EXISTS"
        assert conn.request("STAT upload.bin").endswith(" file " + version)
        assert conn.request("NOOP") == "OK"
    assert (library / "upload.bin").read_bytes() == data
    assert visible(library) == ["upload.bin"]
    assert kept_uploads(library) == []


def test_put_zero_byte_file(shelfd, library):
    with shelfd.connect() as conn:
        version = stored(conn.put("empty", b"")[1], 0)
        assert conn.get("empty") == ("OK 0 " + version, b"")
    assert (library / "empty").read_bytes() == b""


def test_put_then_pipelined_request_in_the_same_segment(shelfd):
    with shelfd.connect() as conn:
        conn.send(b"PUT p.txt 5\n")
        assert conn.line().startswith("OK ")
        conn.send(b"helloSTAT p.txt\n")
        version = stored(conn.line(), 5)
        assert conn.line().endswith(" file " + version)


@pytest.mark.parametrize("line, expected", [
    ("PUT a.txt x", "FAIL invalid size is not a decimal"),
    ("PUT a.txt -5", "FAIL invalid size is not a decimal"),
    ("PUT .hidden 5", "FAIL invalid invalid name"),
    ("PUT a%2Fb 5", "FAIL invalid invalid name"),
    ("PUT / 5", "EXISTS"),
    ("PUT nofolder/a.txt 5", "FAIL notfound "),
    ("PUT big.bin 99999999999999999", "FAIL full not enough free space"),
    ("PUT a.txt 5 replace", "FAIL denied "),  # replace needs d, which anonymous lacks
])
def test_put_refusals(shelfd, library, line, expected):
    with shelfd.connect() as conn:
        reply = conn.request(line)
        assert reply.startswith(expected), reply
        assert conn.request("NOOP") == "OK"
    assert visible(library) == [] and kept_uploads(library) == []


def test_put_over_the_upload_limit(daemon_factory, library):
    daemon = daemon_factory(library, "--max-upload", "1000")
    with daemon.connect() as conn:
        assert conn.request("PUT a.bin 1001").startswith("FAIL toolarge file too large")
        stored(conn.put("b.bin", b"x" * 1000)[1], 1000)
    assert visible(library) == ["b.bin"]


def test_read_only_library(daemon_factory, library):
    (library / "a.txt").write_text("a")
    daemon = daemon_factory(library, "--read-only")
    with daemon.connect() as conn:
        for line in ("PUT b.txt 1", "MKDIR b", "DELETE a.txt", "RENAME a.txt b.txt",
                     "RESUME abc", "RESTORE abc", "PURGE abc", "RMDIR b"):
            assert conn.request(line).startswith("FAIL denied permission denied"), line
        assert conn.get("a.txt")[1] == b"a"
    assert visible(library) == ["a.txt"]


def test_disconnect_mid_put_shows_nothing_and_keeps_the_bytes_hidden(shelfd, library):
    conn = shelfd.connect()
    assert conn.request("PUT partial.bin 1000000").startswith("OK ")
    conn.send(b"x" * 400_000)
    wait_for(lambda: kept_uploads(library), what="the upload's temporary")
    conn.close()
    wait_for(lambda: "broken: connection closed after" in shelfd.log(), what="the log line")
    assert visible(library) == []
    with shelfd.connect() as again:
        assert again.request("LIST") == "EMPTY"


def test_disconnect_mid_put_without_resume_leaves_nothing(daemon_factory, library):
    daemon = daemon_factory(library, "--keep-uploads-hours", "0")
    conn = daemon.connect()
    assert conn.request("PUT partial.bin 1000000").startswith("OK ")
    conn.send(b"x" * 400_000)
    wait_for(lambda: kept_uploads(library), what="the upload's temporary")
    conn.close()
    wait_for(lambda: kept_uploads(library) == [], what="the bytes to be dropped")
    assert visible(library) == []


def test_racing_puts_of_one_name_have_exactly_one_winner(shelfd, library):
    count = 8
    payloads = [bytes([index]) * 500_000 for index in range(count)]
    conns = [shelfd.connect() for _ in range(count)]
    results = [None] * count
    firsts = [conn.request("PUT race.bin 500000") for conn in conns]
    firsts = ["OK" if first.startswith("OK ") else first for first in firsts]
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
    winners = [i for i, result in enumerate(results) if result.startswith("OK 500000 ")]
    assert len(winners) == 1, results
    assert all(result == "EXISTS" for i, result in enumerate(results) if i not in winners)
    assert (library / "race.bin").read_bytes() == payloads[winners[0]]
    assert visible(library) == ["race.bin"]
    wait_for(lambda: kept_uploads(library) == [], what="temporaries to go")


# -- STAT and HASH ---------------------------------------------------------

def test_stat(shelfd, library):
    (library / "s.txt").write_bytes(b"12345")
    os.utime(library / "s.txt", (1763880000, 1763880000))
    (library / "d").mkdir()
    os.utime(library / "d", (1763880100, 1763880100))
    os.utime(library / "s.txt", (-86401, -86401))  # before 1970: negative, floored
    with shelfd.connect() as conn:
        reply = conn.request("STAT s.txt")
        assert re.fullmatch(r"OK 5 -86401 file " + TOKEN, reply), reply
        assert conn.request("STAT d") == "OK 0 1763880100 folder -"
        assert conn.request("STAT /").startswith("OK 0 ")
        assert conn.request("STAT /").endswith(" folder -")
        assert conn.request("STAT nope").startswith("FAIL notfound ")
        assert conn.request("STAT d/nope").startswith("FAIL notfound ")
        assert conn.request("STAT s.txt/x").startswith("FAIL notfound ")


def test_hash_matches_hashlib_and_is_cached_safely(shelfd, library):
    data = os.urandom(3_000_000)
    with shelfd.connect() as conn:
        version = stored(conn.put("h.bin", data)[1], len(data))
        expected = "OK sha256 %s %s" % (hashlib.sha256(data).hexdigest(), version)
        assert conn.request("HASH h.bin") == expected
        assert conn.request("HASH h.bin") == expected
        assert conn.request("HASH nope").startswith("FAIL notfound ")
        assert conn.request("HASH /").startswith("FAIL notfound ")
    # A different file under another name gets its own digest, never a stale one.
    (library / "other.bin").write_bytes(b"other")
    with shelfd.connect() as conn:
        assert conn.request("HASH other.bin").startswith(
            "OK sha256 %s " % hashlib.sha256(b"other").hexdigest())
    assert ".shelf-cache" in os.listdir(library)
    with shelfd.connect() as conn:
        assert conn.request("LIST") == "OK 2"  # the cache is hidden


# -- names -----------------------------------------------------------------

@pytest.mark.parametrize("name", UNICODE_NAMES)
def test_unicode_and_space_names_round_trip(shelfd, library, name):
    data = name.encode("utf-8") * 3
    with shelfd.connect() as conn:
        assert conn.request("MKDIR " + encoded(name)) == "OK"
        path = encoded(name) + "/" + encoded(name)
        version = stored(conn.put(path, data)[1], len(data))
        assert conn.get(path) == ("OK %d %s" % (len(data), version), data)
        assert conn.request("LIST " + encoded(name)) == "OK 1"
        assert conn.line().split(" ")[0] == encoded(name)
    assert (library / name / name).read_bytes() == data


def test_raw_utf8_and_optional_encoding_are_the_same_name(shelfd, library):
    (library / "résumé.pdf").write_bytes(b"cv")
    with shelfd.connect() as conn:
        assert conn.request("STAT résumé.pdf").startswith("OK 2 ")
        assert conn.request("STAT r%C3%A9sum%C3%A9.pdf").startswith("OK 2 ")
        assert conn.request("STAT %72%c3%a9sum%c3%a9.pdf").startswith("OK 2 ")


HOSTILE = ["../x", "/etc/passwd", "..%2Fx", "%2e%2e", "%2E%2E%2Fescape", "a%2Fb", "a/../x",
           "a%00b", "a%0Ab", "a%0Db", ".", "..", "x" * 256, ".hidden", "a/.hidden",
           "/".join(["d"] * 513), "%ff%fe"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_never_escape_the_root(shelfd, library, tmp_path, name):
    outside = tmp_path / "x"
    outside.write_text("outside")
    before = sorted(os.listdir(tmp_path))
    (library / "a").mkdir()
    with shelfd.connect() as conn:
        for verb in ("GET %s", "STAT %s", "HASH %s", "LIST %s", "MKDIR %s", "PUT %s 3",
                     "RENAME a %s", "RENAME %s b", "DELETE %s", "RMDIR %s"):
            assert conn.request(verb % name).startswith("FAIL invalid "), verb % name
        assert conn.request("NOOP") == "OK"
    assert sorted(os.listdir(tmp_path)) == before
    assert outside.read_text() == "outside"
    assert visible(library) == ["a"] and os.listdir(library / "a") == []


def test_raw_nul_and_newline_bytes(shelfd, library):
    with shelfd.connect() as conn:
        assert conn.request(b"GET a\x00b").startswith("FAIL invalid invalid name")
        conn.send(b"GET a\nb\n")
        assert conn.line().startswith("FAIL notfound ")
        assert conn.line().startswith("FAIL invalid unknown verb")


def test_symlink_inside_the_root_pointing_outside(shelfd, library, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    (library / "escape").symlink_to(secret)
    (library / "dirlink").symlink_to(tmp_path)
    with shelfd.connect() as conn:
        assert conn.request("GET escape").startswith("FAIL notfound ")
        assert conn.request("HASH escape").startswith("FAIL notfound ")
        assert conn.request("PUT escape 3") == "EXISTS"  # the name is taken; never followed
        assert conn.request("GET dirlink%2Fsecret.txt").startswith("FAIL invalid invalid name")
        assert conn.request("GET dirlink/secret.txt").startswith("FAIL notfound ")
        assert conn.request("LIST dirlink").startswith("FAIL notfound ")
        assert conn.request("PUT dirlink/new.txt 3").startswith("FAIL notfound ")
        assert conn.request("MKDIR dirlink/new").startswith("FAIL notfound ")
    assert secret.read_text() == "secret"
    assert not [name for name in os.listdir(tmp_path) if name.startswith("new")]


def test_hidden_file_not_listed_served_or_writable(shelfd, library):
    (library / ".secret").write_text("s")
    with shelfd.connect() as conn:
        assert conn.request("LIST") == "EMPTY"
        assert conn.request("GET .secret").startswith("FAIL invalid ")
        assert conn.request("PUT .secret 1").startswith("FAIL invalid ")
        assert conn.request("LIST .shelf-uploads").startswith("FAIL invalid ")
        assert conn.request("GET .shelf-trash/x").startswith("FAIL invalid ")
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
        assert again.greeting.startswith("READY shelf/2 ")
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
        assert conn.request("PUT stall.bin 100").startswith("OK ")
        conn.send(b"x" * 10)
        conn.sock.settimeout(10)
        assert conn.closed_by_peer()
    wait_for(lambda: " broken: " in daemon.log(), what="the broken upload's log line")
    assert visible(library) == []


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
