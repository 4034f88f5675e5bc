"""What PROTOCOL.md version 2 added, line by line, against the real shelfd over TCP.

Folders (LIST of a folder, MKDIR, RMDIR), versions (STAT, GET with a version,
PUT replace), DELETE and the trash (TRASH, RESTORE, PURGE), RENAME, RESUME and
ABORT, SPACE and LOGIN without accounts. Races between many sessions are in
``test_races.py``.
"""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

from helpers import Raw, wait_for

TOKEN = r"[0-9A-Za-z_-]{1,64}"
ALL = ("--anonymous", "rwdm")


def visible(folder) -> list[str]:
    return sorted(name for name in os.listdir(folder) if not name.startswith(".shelf-"))


def stored(reply: str, size: int) -> str:
    match = re.fullmatch(r"OK %d (%s)" % (size, TOKEN), reply or "")
    assert match, reply
    return match.group(1)


def wait_broken(daemon, count: int = 1) -> None:
    """Until the daemon has logged ``count`` broken uploads (their sessions have ended)."""
    wait_for(lambda: daemon.log().count(" broken: ") >= count, what="the session to end")


def version_of(conn: Raw, path: str) -> str:
    reply = conn.request("STAT " + path)
    assert reply.startswith("OK ") and " file " in reply, reply
    return reply.rsplit(" ", 1)[1]


def put(conn: Raw, path: str, data: bytes, replace: bool = False) -> str:
    first, final = conn.put(path, data, replace)
    assert re.fullmatch("OK " + TOKEN, first), first
    return stored(final, len(data))


@pytest.fixture
def full(daemon_factory, library):
    """A daemon whose anonymous grant has every permission."""
    return daemon_factory(library, *ALL)


# -- folders ------------------------------------------------------------------------

def test_mkdir_list_and_rmdir(full, library):
    with full.connect() as conn:
        assert conn.request("MKDIR photos") == "OK"
        assert conn.request("MKDIR photos") == "EXISTS"
        assert conn.request("MKDIR photos/2026") == "OK"
        assert conn.request("MKDIR missing/x").startswith("FAIL notfound ")
        assert conn.request("MKDIR /") == "EXISTS"
        put(conn, "photos/2026/a.jpg", b"jpeg")
        assert conn.request("MKDIR photos/2026/a.jpg") == "EXISTS"
        assert conn.request("MKDIR photos/2026/a.jpg/x").startswith("FAIL notfound ")
        assert conn.request("LIST photos") == "OK 1"
        assert re.fullmatch(r"2026/ 0 -?\d+ -", conn.line())
        assert conn.request("LIST photos/2026") == "OK 1"
        assert re.fullmatch(r"a\.jpg 4 \d+ " + TOKEN, conn.line())
        assert conn.request("LIST photos/2026/a.jpg").startswith("FAIL notfound ")
        assert conn.request("LIST nope").startswith("FAIL notfound ")
        assert conn.request("RMDIR photos").startswith("FAIL notempty ")
        assert conn.request("RMDIR photos/2026/a.jpg").startswith("FAIL notfound ")
        assert conn.request("RMDIR nope").startswith("FAIL notfound ")
        assert conn.request("RMDIR /").startswith("FAIL invalid ")
        assert conn.request("DELETE photos/2026/a.jpg") == "OK"
        assert conn.request("RMDIR photos/2026") == "OK"
        assert conn.request("LIST photos") == "EMPTY"
    assert (library / "photos").is_dir() and os.listdir(library / "photos") == []


def test_rmdir_counts_hidden_entries_but_not_the_servers_working_files(full, library):
    (library / "a" / "b").mkdir(parents=True)
    (library / "a" / ".dotfile").write_text("mine")
    with full.connect() as conn:
        assert conn.request("LIST a") == "OK 1"  # the hidden file is not listed...
        conn.line()
        assert conn.request("RMDIR a/b") == "OK"
        assert conn.request("RMDIR a").startswith("FAIL notempty ")  # ...but it is there
    assert (library / "a" / ".dotfile").read_text() == "mine"


def test_put_into_a_folder_and_get_it_back(full, library):
    data = os.urandom(400_000)
    with full.connect() as conn:
        assert conn.request("MKDIR d") == "OK"
        version = put(conn, "d/f.bin", data)
        assert conn.get("d/f.bin") == ("OK 400000 " + version, data)
        assert conn.request("PUT d/f.bin 1") == "EXISTS"
        assert conn.request("PUT d 1") == "EXISTS"  # a folder is never replaced
        assert conn.request("PUT d 1 replace") == "EXISTS"
    assert (library / "d" / "f.bin").read_bytes() == data


def test_deep_paths_up_to_1024_bytes(full, library):
    segment = "s" * 100
    with full.connect() as conn:
        path = []
        while len("/".join(path + [segment])) <= 1024 - 4:
            path.append(segment)
            assert conn.request("MKDIR " + "/".join(path)) == "OK"
        longest = "/".join(path) + "/" + "f" * (1024 - len("/".join(path)) - 1)
        assert len(longest.encode()) == 1024
        put(conn, longest, b"deep")
        assert conn.get(longest)[1] == b"deep"
        assert conn.request("STAT " + longest + "x").startswith("FAIL invalid ")


# -- versions ---------------------------------------------------------------------------

def test_a_new_file_at_a_path_has_a_new_version_even_on_a_reused_inode(full, library):
    with full.connect() as conn:
        first = put(conn, "v.txt", b"same")
        assert version_of(conn, "v.txt") == first
        assert conn.request("DELETE v.txt") == "OK"
        second = put(conn, "v.txt", b"same")  # same bytes, same size, maybe same inode
        assert second != first
        assert conn.request("GET v.txt 0 " + first) == \
            "FAIL changed the file is no longer that version"
        assert conn.get("v.txt", 0, second) == ("OK 4 " + second, b"same")


def test_put_replace_is_atomic_and_needs_the_delete_permission(full, daemon_factory, library):
    with full.connect() as conn, full.connect() as reader:
        old = put(conn, "r.txt", b"old bytes" * 100_000)
        assert reader.request("GET r.txt") == "OK 900000 " + old  # a reader of the old...
        new = put(conn, "r.txt", b"new", replace=True)
        assert new != old
        assert reader.exact(900_000) == b"old bytes" * 100_000  # ...reads it to its end
        assert conn.get("r.txt") == ("OK 3 " + new, b"new")
        assert reader.request("GET r.txt 0 " + old).startswith("FAIL changed ")
    adder = daemon_factory(library, "--anonymous", "rw")
    with adder.connect() as conn:
        assert conn.request("PUT r.txt 1 replace").startswith("FAIL denied ")
        assert conn.request("PUT fresh.txt 1 replace").startswith("FAIL denied ")  # checked first
    assert (library / "r.txt").read_bytes() == b"new"


def test_put_replace_of_a_new_path_stores_it(full, library):
    with full.connect() as conn:
        put(conn, "new.txt", b"x", replace=True)
    assert (library / "new.txt").read_bytes() == b"x"


def test_a_file_edited_behind_the_servers_back_changes_version(full, library):
    with full.connect() as conn:
        version = put(conn, "e.txt", b"before")
        with open(library / "e.txt", "r+b") as handle:  # in place, same size
            handle.write(b"AFTER!")
        assert version_of(conn, "e.txt") != version
        assert conn.request("GET e.txt 0 " + version).startswith("FAIL changed ")


# -- delete and the trash -------------------------------------------------------------

def test_delete_trash_restore_round_trip(full, library):
    with full.connect() as conn:
        assert conn.request("MKDIR docs") == "OK"
        version = put(conn, "docs/a.txt", b"alpha")
        put(conn, "b.txt", b"bravo")
        assert conn.request("TRASH") == "EMPTY"
        assert conn.request("DELETE docs/a.txt") == "OK"
        assert conn.request("STAT docs/a.txt").startswith("FAIL notfound ")
        assert conn.request("DELETE b.txt") == "OK"
        assert conn.request("TRASH") == "OK 2"
        lines = [conn.line().split(" ") for _ in range(2)]
        assert [line[1] for line in lines] == ["b.txt", "docs/a.txt"]  # newest first
        assert [line[2] for line in lines] == ["5", "5"]
        for trash_id, _, _, deleted in lines:
            assert re.fullmatch(TOKEN, trash_id)
            assert abs(int(deleted) - time.time()) < 60
        a_id, b_id = lines[1][0], lines[0][0]
        assert conn.request("RESTORE " + a_id) == "OK " + version  # the same file, back
        assert conn.get("docs/a.txt")[1] == b"alpha"
        assert conn.request("RESTORE " + a_id).startswith("FAIL notfound ")
        put(conn, "b.txt", b"a new b")
        assert conn.request("RESTORE " + b_id) == "EXISTS"  # never replaces
        assert conn.request("RESTORE %s docs" % b_id) == "EXISTS"  # a folder is there
        assert conn.request("RESTORE %s nope/b.txt" % b_id).startswith("FAIL notfound ")
        assert re.fullmatch("OK " + TOKEN, conn.request("RESTORE %s docs/old-b.txt" % b_id))
        assert conn.request("TRASH") == "EMPTY"
    assert (library / "docs" / "old-b.txt").read_bytes() == b"bravo"
    assert (library / "b.txt").read_bytes() == b"a new b"


def test_purge_removes_for_good(full, library):
    with full.connect() as conn:
        put(conn, "p.txt", b"purge me")
        assert conn.request("DELETE p.txt") == "OK"
        assert conn.request("TRASH") == "OK 1"
        trash_id = conn.line().split(" ")[0]
        assert conn.request("PURGE " + trash_id) == "OK"
        assert conn.request("PURGE " + trash_id).startswith("FAIL notfound ")
        assert conn.request("RESTORE " + trash_id).startswith("FAIL notfound ")
        assert conn.request("TRASH") == "EMPTY"
    leftovers = [p for p in library.rglob("*") if p.is_file() and b"purge me" in p.read_bytes()]
    assert leftovers == []


def test_delete_refuses_folders_and_missing_files(full, library):
    (library / "d").mkdir()
    with full.connect() as conn:
        assert conn.request("DELETE d").startswith("FAIL notfound ")
        assert conn.request("DELETE nope").startswith("FAIL notfound ")
        assert conn.request("DELETE /").startswith("FAIL notfound ")
    assert (library / "d").is_dir()


def test_a_deleted_file_being_read_is_read_to_its_end(full, library):
    data = os.urandom(8 << 20)
    (library / "big.bin").write_bytes(data)
    with full.connect() as reader, full.connect() as deleter:
        assert reader.request("GET big.bin").startswith("OK %d " % len(data))
        assert deleter.request("DELETE big.bin") == "OK"
        assert reader.exact(len(data)) == data


def test_without_a_trash_delete_removes(daemon_factory, library):
    daemon = daemon_factory(library, *ALL, "--trash-days", "0")
    (library / "gone.txt").write_text("x")
    with daemon.connect() as conn:
        assert "trash" not in conn.greeting.split(" ")
        assert conn.request("DELETE gone.txt") == "OK"
        assert conn.request("TRASH") == "EMPTY"
    assert visible(library) == []
    assert not (library / ".shelf-trash").exists()


def test_the_master_purges_the_trash_after_its_retention(daemon_factory, library, tmp_path):
    config = tmp_path / "shelfd.ini"
    config.write_text("[shelfd]\ntrash_days = 30\n")
    daemon = daemon_factory(library, *ALL, "--config", str(config))
    with daemon.connect() as conn:
        put(conn, "old.txt", b"old")
        put(conn, "new.txt", b"new")
        assert conn.request("DELETE old.txt") == "OK"
        assert conn.request("DELETE new.txt") == "OK"
        assert conn.request("TRASH") == "OK 2"
        newest, oldest = conn.line().split(" ")[0], conn.line().split(" ")[0]
    # Age one entry by 2 days (its record and its file), then make the retention 1 day.
    trash = library / ".shelf-trash"
    for path in trash.iterdir():
        if path.name.startswith(oldest):
            if path.name.endswith(".info"):
                import json
                info = json.loads(path.read_text())
                info["deleted"] -= 2 * 86400
                path.write_text(json.dumps(info))
            old = time.time() - 2 * 86400
            os.utime(path, (old, old))
    config.write_text("[shelfd]\ntrash_days = 1\n")
    os.kill(daemon.pid, signal.SIGHUP)

    def only_newest():
        with daemon.connect() as conn:
            if conn.request("TRASH") != "OK 1":
                return False
            return conn.line().split(" ")[0] == newest
    wait_for(only_newest, what="the clean-up to purge the old entry")
    wait_for(lambda: "removed 1 files from the trash" in daemon.log(), what="its log line")


# -- rename ---------------------------------------------------------------------------------

def test_rename_files_and_folders_never_replaces(full, library):
    with full.connect() as conn:
        assert conn.request("MKDIR a") == "OK"
        assert conn.request("MKDIR b") == "OK"
        version = put(conn, "a/f.txt", b"file")
        put(conn, "g.txt", b"other")
        assert conn.request("RENAME a/f.txt b/f2.txt") == "OK"
        assert conn.get("b/f2.txt") == ("OK 4 " + version, b"file")
        assert conn.request("RENAME g.txt b/f2.txt") == "EXISTS"
        assert conn.request("RENAME g.txt g.txt") == "EXISTS"
        assert conn.request("RENAME g.txt a") == "EXISTS"  # an empty folder included
        assert conn.request("RENAME b c") == "OK"  # a folder with its contents
        assert conn.request("RENAME c a") == "EXISTS"
        assert conn.request("RENAME c c/inside").startswith("FAIL invalid ")
        assert conn.request("RENAME c c/x/y").startswith("FAIL invalid ")
        assert conn.request("RENAME c nope/c").startswith("FAIL notfound ")
        assert conn.request("RENAME nope x").startswith("FAIL notfound ")
        assert conn.request("RENAME / x").startswith("FAIL invalid ")
        assert conn.request("RENAME g.txt /") == "EXISTS"
    assert (library / "c" / "f2.txt").read_bytes() == b"file"
    assert (library / "g.txt").read_bytes() == b"other"
    assert visible(library) == ["a", "c", "g.txt"]


def test_rename_needs_the_m_permission(daemon_factory, library):
    (library / "x.txt").write_text("x")
    daemon = daemon_factory(library, "--anonymous", "rwd")
    with daemon.connect() as conn:
        assert conn.request("RENAME x.txt y.txt").startswith("FAIL denied ")
        assert conn.request("RENAME nope y.txt").startswith("FAIL denied ")  # tells nothing
    assert visible(library) == ["x.txt"]


# -- resume and abort ------------------------------------------------------------------------

def test_a_broken_upload_resumes_where_it_stopped(full, library):
    data = os.urandom(3_000_000)
    conn = full.connect()
    first = conn.request("PUT big.bin %d" % len(data))
    token = first.split(" ")[1]
    conn.send(data[:1_000_000])
    kept = library / ".shelf-uploads" / token
    wait_for(lambda: kept.exists() and kept.stat().st_size == 1_000_000, what="the first bytes")
    conn.close()
    wait_broken(full)
    with full.connect() as again:
        assert again.request("STAT big.bin").startswith("FAIL notfound ")
        assert again.request("RESUME " + token) == "OK 1000000"
        again.send(data[1_000_000:])
        version = stored(again.line(), len(data))
        assert again.request("RESUME " + token).startswith("FAIL notfound ")
        assert again.get("big.bin") == ("OK %d %s" % (len(data), version), data)
    assert (library / "big.bin").read_bytes() == data
    assert os.listdir(library / ".shelf-uploads") == []


def test_resume_can_break_again_and_resume_again(full, library):
    data = os.urandom(2_000_000)
    conn = full.connect()
    token = conn.request("PUT r.bin %d" % len(data)).split(" ")[1]
    kept = library / ".shelf-uploads" / token
    offset = 0
    for step in (500_000, 700_000):
        conn.send(data[offset:offset + step])
        offset += step
        wait_for(lambda: kept.stat().st_size == offset, what="the bytes to arrive")
        conn.close()
        wait_broken(full, 1 if offset == 500_000 else 2)
        conn = full.connect()
        assert conn.request("RESUME " + token) == "OK %d" % offset
    conn.send(data[offset:])
    stored(conn.line(), len(data))
    conn.close()
    assert (library / "r.bin").read_bytes() == data


def test_resume_to_a_path_taken_meanwhile_answers_exists(full, library):
    conn = full.connect()
    token = conn.request("PUT t.txt 10").split(" ")[1]
    conn.send(b"12345")
    wait_for(lambda: (library / ".shelf-uploads" / token).stat().st_size == 5,
             what="the first bytes")
    conn.close()
    wait_broken(full)
    with full.connect() as other:
        put(other, "t.txt", b"first!")
        assert other.request("RESUME " + token) == "OK 5"
        other.send(b"67890")
        assert other.line() == "EXISTS"
        assert other.request("RESUME " + token).startswith("FAIL notfound ")
    assert (library / "t.txt").read_bytes() == b"first!"


def test_abort_drops_the_kept_bytes(full, library):
    conn = full.connect()
    token = conn.request("PUT a.bin 100").split(" ")[1]
    conn.send(b"x" * 50)
    wait_for(lambda: (library / ".shelf-uploads" / token).stat().st_size == 50,
             what="the first bytes")
    conn.close()
    wait_broken(full)
    with full.connect() as again:
        assert again.request("ABORT " + token) == "OK"
        assert again.request("ABORT " + token).startswith("FAIL notfound ")
        assert again.request("RESUME " + token).startswith("FAIL notfound ")
    assert os.listdir(library / ".shelf-uploads") == []


def test_resume_of_an_upload_in_progress_is_refused(full, library):
    with full.connect() as uploader, full.connect() as thief:
        token = uploader.request("PUT live.bin 100").split(" ")[1]
        uploader.send(b"x" * 10)
        wait_for(lambda: (library / ".shelf-uploads" / token).stat().st_size == 10,
                 what="the first bytes")
        assert thief.request("RESUME " + token).startswith("FAIL notfound ")
        assert thief.request("ABORT " + token).startswith("FAIL notfound ")
        uploader.send(b"y" * 90)
        stored(uploader.line(), 100)
    assert (library / "live.bin").read_bytes() == b"x" * 10 + b"y" * 90


def test_unknown_upload_tokens(full):
    with full.connect() as conn:
        assert conn.request("RESUME " + "0" * 32).startswith("FAIL notfound ")
        assert conn.request("ABORT nosuchupload").startswith("FAIL notfound ")


# -- space, login, noop --------------------------------------------------------------------------

def test_space_reports_free_and_total_bytes(full, library):
    stats = os.statvfs(library)
    with full.connect() as conn:
        free, total = (int(x) for x in conn.request("SPACE").split(" ")[1:])
    assert total == stats.f_blocks * stats.f_frsize
    assert 0 <= free <= stats.f_bavail * stats.f_frsize


def test_login_without_accounts_is_denied_and_the_third_failure_closes(shelfd):
    with shelfd.connect() as conn:
        assert "login" not in conn.greeting.split(" ")
        assert conn.request("LOGIN alice correct%20horse").startswith("FAIL denied ")
        assert conn.request("NOOP") == "OK"
        assert conn.request("LOGIN alice pw%zz").startswith("FAIL invalid ")  # not a failure
        assert conn.request("LOGIN alice a/b").startswith("FAIL invalid ")
        assert conn.request("LOGIN bob x").startswith("FAIL denied ")
        assert conn.request("LOGIN carol y").startswith("FAIL denied ")
        assert conn.closed_by_peer()


def test_huge_numbers_are_decimals_that_do_not_fit(daemon_factory, library):
    (library / "a.txt").write_text("abc")
    daemon = daemon_factory(library, "--max-upload", "1G")
    with daemon.connect() as conn:
        assert conn.request("PUT big 99999999999999999999").startswith("FAIL toolarge ")
        assert conn.request("GET a.txt 99999999999999999999").startswith(
            "FAIL invalid offset past the end")
    unlimited = daemon_factory(library)
    with unlimited.connect() as conn:
        assert conn.request("PUT big 99999999999999999999").startswith("FAIL full ")


def test_an_upload_whose_folder_vanished_fails_io(full, library):
    with full.connect() as conn:
        assert conn.request("MKDIR doomed") == "OK"
        assert conn.request("PUT doomed/f.bin 6").startswith("OK ")
        conn.send(b"abc")
        wait_for(lambda: any((library / ".shelf-uploads").iterdir()), what="the upload")
        (library / "doomed").rmdir()
        conn.send(b"def")
        assert conn.line().startswith("FAIL io ")
        assert conn.request("NOOP") == "OK"
    assert visible(library) == []


def test_arguments_are_checked_before_permissions_before_lookups(daemon_factory, library):
    daemon = daemon_factory(library, "--anonymous", "r")
    with daemon.connect() as conn:
        assert conn.request("DELETE ../x").startswith("FAIL invalid ")
        assert conn.request("DELETE nope").startswith("FAIL denied ")
        assert conn.request("MKDIR a%zz").startswith("FAIL invalid ")
        assert conn.request("PUT x.txt abc").startswith("FAIL invalid ")
        assert conn.request("PUT x.txt 1").startswith("FAIL denied ")
        assert conn.request("SPACE").startswith("OK ")
