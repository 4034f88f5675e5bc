"""Kept uploads (daemon/uploads.py): RESUME and ABORT, clean-up, hostile working folders.

Real files, the real kernel, other processes as other sessions; the ``tree``
fixture of test_store.py runs each test in the native and portable variants
and checks that the tree next to the library was never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from common.protocol import Channel
from daemon.store import MAX_RECORD, Exists, Full, Invalid, IOFailure, NotFound
from daemon.uploads import UPLOADS_FOLDER
from test_store import age, leftovers, on_disk, open_store, race_processes, read, store_file
from test_store import tree  # noqa: F401 (the native/portable fixture, used by name)

PROJECT = Path(__file__).resolve().parent.parent


def kept(store, path, data: bytes, size: int, owner: str = "alice", replace: bool = False):
    """An upload of ``size`` bytes that received ``data`` and was kept; its token."""
    upload = store.begin_upload(path, size, replace=replace, owner=owner)
    upload.write(data)
    upload.keep()
    return upload.token


def make_old(root: Path, token: str, seconds: float) -> None:
    """Record the upload as created ``seconds`` ago, and its bytes as that old."""
    info = root / UPLOADS_FOLDER / (token + ".info")
    record = json.loads(info.read_bytes())
    record["created"] = time.time() - seconds
    info.write_text(json.dumps(record))
    age(root / UPLOADS_FOLDER / token, seconds)


@contextlib.contextmanager
def locked_elsewhere(path: Path):
    """Hold an flock on ``path`` from another process (as a live session elsewhere would)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDONLY);"
         " fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()",
         str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
        holder.stdout.close()


# -- RESUME and ABORT ------------------------------------------------------------------------

def test_a_kept_upload_outlives_its_store_and_resumes_at_its_offset(tree):
    store, root = tree.store, tree.root
    store.mkdir(["d"])
    data = os.urandom(3 << 20)
    token = kept(store, ["d", "f"], data[:1000], len(data))
    assert on_disk(root / "d") == [] and store.kept_bytes() == 1000
    with open_store(root, tree.mode) as another:  # as another process, or another node
        with another.resume_upload(token, "alice") as upload:
            assert (upload.token, upload.path, upload.size, upload.replace, upload.offset) == \
                (token, ("d", "f"), len(data), False, 1000)
            left, right = socket.socketpair()
            sender = threading.Thread(target=lambda: (left.sendall(data[1000:]), left.close()))
            channel = Channel(right)
            try:
                sender.start()
                upload.receive_from(channel)  # takes exactly size - offset bytes
            finally:
                sender.join()
                channel.close()
            entry = upload.commit()
    assert entry.size == len(data) and read(store, "d/f", entry.version) == data
    assert leftovers(root) == [] and store.kept_bytes() == 0


def test_a_kept_upload_keeps_replace_and_can_be_kept_again(tree):
    store = tree.store
    store_file(store, "f", b"old")
    token = kept(store, ["f"], b"ne", 3, owner="bob", replace=True)
    upload = store.resume_upload(token, "bob")
    assert (upload.replace, upload.offset) == (True, 2)
    upload.keep()  # cut again before a single byte
    upload.keep()
    upload.abort()  # after keep: changes nothing
    with store.resume_upload(token, "bob") as upload:
        assert upload.offset == 2
        upload.write(b"w")
        upload.commit()
        upload.keep()  # after commit: changes nothing
    assert read(tree.store, "f") == b"new"
    assert leftovers(tree.root) == []


def test_only_the_owner_resumes_or_drops_and_only_real_tokens_exist(tree):
    store = tree.store
    token = kept(store, ["f"], b"abc", 6)
    for call in (lambda: store.resume_upload(token, "bob"),
                 lambda: store.drop_upload(token, "bob"),
                 lambda: store.resume_upload(token, "Alice"),
                 lambda: store.resume_upload(token.upper(), "alice"),
                 lambda: store.resume_upload("../" + token, "alice"),
                 lambda: store.resume_upload(token + ".info", "alice"),
                 lambda: store.resume_upload("", "alice"),
                 lambda: store.drop_upload(os.urandom(16).hex(), "alice")):
        with pytest.raises(NotFound):
            call()
    with store.resume_upload(token, "alice") as upload:
        assert upload.offset == 3
        upload.keep()
    store.drop_upload(token, "alice")
    assert leftovers(tree.root) == []
    for call in (lambda: store.resume_upload(token, "alice"),
                 lambda: store.drop_upload(token, "alice")):
        with pytest.raises(NotFound):
            call()


def test_an_upload_held_by_a_live_session_is_neither_resumed_nor_dropped(tree):
    store, root = tree.store, tree.root
    with store.begin_upload(["f"], 4, owner="alice") as live:
        live.write(b"li")
        with pytest.raises(NotFound, match="in use by another session"):
            store.resume_upload(live.token, "alice")  # another open file: another session
        script = ("import sys; from daemon.store import Store, NotFound\ntry:\n"
                  "    Store(sys.argv[1]).drop_upload(sys.argv[2], 'alice')\n"
                  "except NotFound as exc:\n    print('notfound', exc)")
        other = subprocess.run([sys.executable, "-c", script, str(root), live.token],
                               capture_output=True, text=True, cwd=PROJECT, timeout=30)
        assert other.stdout.startswith("notfound") and "in use" in other.stdout, other.stderr
        live.write(b"ve")
        live.commit()
    token = kept(store, ["g"], b"x", 2)
    with locked_elsewhere(root / UPLOADS_FOLDER / token):  # a session on another node
        for call in (lambda: store.resume_upload(token, "alice"),
                     lambda: store.drop_upload(token, "alice")):
            with pytest.raises(NotFound, match="in use by another session"):
                call()
        assert store.expire_uploads(0) == 0 and store.cap_uploads("alice", 0) == 0
    with store.resume_upload(token, "alice") as upload:  # its holder is gone
        upload.write(b"y")
        upload.commit()
    assert read(store, "f") == b"live" and read(store, "g") == b"xy"


def test_racing_resumes_of_one_upload_have_one_winner(tree):
    store = tree.store
    token = kept(store, ["f"], b"a" * 1000, 2000)

    def resume(number: int) -> None:
        with store.resume_upload(token, "alice") as upload:
            time.sleep(0.2)  # hold it while the others try
            upload.write(bytes([65 + number]) * 1000)
            upload.commit()

    results = race_processes(20, resume)
    assert results.count("ok") == 1 and set(results) == {"ok", "notfound"}, results
    assert read(store, "f") == b"a" * 1000 + bytes([65 + results.index("ok")]) * 1000
    assert leftovers(tree.root) == []


def test_abort_and_a_with_block_drop_the_bytes_and_keep_does_not(tree):
    store = tree.store
    with store.begin_upload(["f"], 3) as upload:
        upload.write(b"ab")
    with pytest.raises(IOFailure):
        upload.commit()  # after the drop: refused, and nothing appears
    upload.abort()
    upload.keep()
    assert leftovers(tree.root) == [] and on_disk(tree.root) == []
    with store.begin_upload(["f"], 3) as upload:
        upload.keep()
    assert len(leftovers(tree.root)) == 2
    with store.resume_upload(upload.token, "anonymous") as again:
        again.abort()
    assert leftovers(tree.root) == []


def test_a_resume_that_cannot_fit_is_full_and_keeps_the_bytes(tree):
    store, root = tree.store, tree.root
    token = kept(store, ["f"], b"abc", 1 << 20)
    free = store.space()[0] + store.reserve
    with open_store(root, tree.mode, reserve=free - 1000) as tight:
        with pytest.raises(Full):
            tight.resume_upload(token, "alice")
        with pytest.raises(Full):
            tight.begin_upload(["g"], 1 << 20)
    with store.resume_upload(token, "alice") as upload:
        assert upload.offset == 3
        upload.abort()


def test_bad_arguments_are_refused_before_anything_is_written(tree):
    store = tree.store
    for call in (lambda: store.begin_upload(["f"], -1), lambda: store.begin_upload(["f"], True),
                 lambda: store.begin_upload(["f"], 1, owner=""),
                 lambda: store.begin_upload(["f"], 1, owner="x" * 256),
                 lambda: store.begin_upload(["f"], 1, owner=None)):
        with pytest.raises(Invalid):
            call()
    assert os.listdir(tree.root) == []


def test_commit_builds_the_file_where_its_path_is_at_commit_even_after_a_resume(tree):
    store, root = tree.store, tree.root
    store.mkdir(["d"])
    first = kept(store, ["d", "f"], b"1", 2)
    second = kept(store, ["d", "g"], b"2", 2)
    store_file(store, "d/f", b"xx")  # another session stored that path first
    with store.resume_upload(first, "alice") as upload:
        upload.write(b"1")
        with pytest.raises(Exists):
            upload.commit()
    store.delete(["d", "f"])
    store.rmdir(["d"])
    with store.resume_upload(second, "alice") as upload:
        upload.write(b"2")
        with pytest.raises(NotFound):
            upload.commit()
    assert leftovers(root) == [] and on_disk(root) == []


# -- clean-up --------------------------------------------------------------------------------

def test_expiry_removes_old_unheld_uploads_and_orphans_only(tree):
    store, root = tree.store, tree.root
    folder = root / UPLOADS_FOLDER
    old = kept(store, ["old"], b"o", 2)
    make_old(root, old, 7200)
    fresh = kept(store, ["fresh"], b"f", 2)
    recent_bytes = kept(store, ["recent"], b"r", 2)  # created long ago, written just now
    info = folder / (recent_bytes + ".info")
    info.write_text(info.read_text().replace('"created":', '"created":1,"x":'))
    live = store.begin_upload(["live"], 2)
    live.write(b"l")
    make_old(root, live.token, 7200)
    orphan_bytes, young_orphan = os.urandom(16).hex(), os.urandom(16).hex()
    (folder / orphan_bytes).write_bytes(b"no record")
    age(folder / orphan_bytes, 120)
    (folder / young_orphan).write_bytes(b"its record may be on its way")
    orphan_record = kept(store, ["orphan"], b"", 2)
    os.unlink(folder / orphan_record)
    age(folder / (orphan_record + ".info"), 120)
    planted = os.urandom(16).hex()
    os.mkfifo(folder / planted)
    (folder / (planted + ".info")).symlink_to(tree.outside.path / "secret.txt")
    try:
        assert store.expire_uploads(3600) == 3  # old, and both orphans
        assert sorted(os.listdir(folder)) == sorted(
            [fresh, fresh + ".info", recent_bytes, recent_bytes + ".info", live.token,
             live.token + ".info", young_orphan, planted, planted + ".info"])
        assert store.remove_leftovers() == []
        assert store.expire_uploads(0) == 3  # 0: everything no one holds
        assert sorted(os.listdir(folder)) == sorted(
            [live.token, live.token + ".info", planted, planted + ".info"])
        live.write(b"l")
        live.commit()
    finally:
        live.abort()
    assert read(store, "live") == b"ll"
    tree.outside.assert_untouched()


def test_cap_keeps_the_newest_of_an_owners_kept_uploads(tree):
    store, root = tree.store, tree.root
    tokens = []
    for number in range(5):
        tokens.append(kept(store, ["f%d" % number], b"x" * 10, 20))
        make_old(root, tokens[-1], 1000 - number)  # f4 is the newest
    theirs = kept(store, ["g"], b"y", 2, owner="bob")
    with store.begin_upload(["h"], 2, owner="alice") as live:
        make_old(root, live.token, 5000)
        assert store.kept_bytes() == 51
        assert store.cap_uploads("alice", 2) == 3
        assert store.cap_uploads("alice", 2) == 0
        remaining = sorted(os.listdir(root / UPLOADS_FOLDER))
        assert remaining == sorted(t + suffix for t in (tokens[3], tokens[4], theirs, live.token)
                                   for suffix in ("", ".info"))
        assert store.cap_uploads("bob", 0) == 1
        live.abort()
    assert store.kept_bytes() == 20


def test_start_up_clean_up_keeps_kept_uploads(tree):
    store = tree.store
    token = kept(store, ["f"], b"a", 2)
    make_old(tree.root, token, 10 ** 6)  # long expired: the expiry's business, not the start's
    assert store.remove_leftovers() == []
    with store.resume_upload(token, "alice") as upload:
        assert upload.offset == 1
        upload.keep()
    assert store.expire_uploads(3600) == 1


# -- hostile working folders and records -------------------------------------------------------

@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["symlink", "file", "fifo", "dangling"])
def test_a_planted_uploads_folder_is_never_followed(tree, kind):
    store, root = tree.store, tree.root
    folder = root / UPLOADS_FOLDER
    {"symlink": lambda: folder.symlink_to(tree.outside.path / "b"),
     "dangling": lambda: folder.symlink_to(tree.outside.path / "missing"),
     "file": lambda: folder.write_bytes(b"x"), "fifo": lambda: os.mkfifo(folder)}[kind]()
    token = os.urandom(16).hex()
    for call in (lambda: store.begin_upload(["f"], 1), lambda: store.resume_upload(token, "a"),
                 lambda: store.drop_upload(token, "a"), lambda: store.expire_uploads(0),
                 lambda: store.cap_uploads("a", 0), lambda: store.kept_bytes()):
        with pytest.raises(IOFailure, match="not a folder"):
            call()
    assert store.remove_leftovers() == []
    assert sorted(os.listdir(root)) == [UPLOADS_FOLDER]
    assert folder.is_symlink() or (folder.exists() and not folder.is_dir())
    tree.outside.assert_untouched()


HOSTILE_RECORDS = {
    "dotdot": json.dumps({"path": ["..", "outside", "secret.txt"], "size": 3, "replace": True,
                          "owner": "alice", "created": 1}),
    "absolute": json.dumps({"path": ["/etc/passwd"], "size": 3, "replace": True,
                            "owner": "alice", "created": 1}),
    "string": json.dumps({"path": "../outside/secret.txt", "size": 3, "replace": True,
                          "owner": "alice", "created": 1}),
    "too-long": json.dumps({"path": ["x" * 200] * 6, "size": 3, "replace": False,
                            "owner": "alice", "created": 1}),
    "root": json.dumps({"path": [], "size": 3, "replace": False, "owner": "alice",
                        "created": 1}),
    "hidden": json.dumps({"path": [".shelf-trash", "x"], "size": 3, "replace": True,
                          "owner": "alice", "created": 1}),
    "bad-size": json.dumps({"path": ["f"], "size": "3", "replace": False, "owner": "alice",
                            "created": 1}),
    "no-owner": json.dumps({"path": ["f"], "size": 3, "replace": False, "created": 1}),
    "not-json": "{path: f",
    "not-utf8": b"\xff\xfe{}",
    "a-list": "[]",
    "nested": "[" * 5000 + "]" * 5000,
    "huge": json.dumps({"path": ["f"], "size": 3, "replace": False, "owner": "alice",
                        "created": 1, "pad": "x" * MAX_RECORD}),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", [*HOSTILE_RECORDS, "fifo", "symlink", "folder"])
def test_hostile_records_are_no_upload(tree, kind):
    store, root = tree.store, tree.root
    (root / "f").write_bytes(b"INSIDE")
    store.kept_bytes()
    folder = root / UPLOADS_FOLDER
    folder.mkdir(mode=0o700)
    token = os.urandom(16).hex()
    info = folder / (token + ".info")
    if kind == "fifo":
        os.mkfifo(info)
    elif kind == "symlink":
        info.symlink_to(tree.outside.path / "secret.txt")
    elif kind == "folder":
        info.mkdir()
    else:
        content = HOSTILE_RECORDS[kind]
        info.write_bytes(content if isinstance(content, bytes) else content.encode())
    (folder / token).write_bytes(b"BAD")
    for call in (lambda: store.resume_upload(token, "alice"),
                 lambda: store.drop_upload(token, "alice")):
        with pytest.raises(NotFound):
            call()
    assert read(store, "f") == b"INSIDE"
    age(folder / token, 120)
    assert store.expire_uploads(3600) == 1  # its bytes are an orphan, removed
    assert not (folder / token).exists()
    tree.outside.assert_untouched()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["symlink", "fifo", "folder"])
def test_planted_upload_bytes_are_never_followed(tree, kind):
    store, root = tree.store, tree.root
    token = kept(store, ["f"], b"a", 2)
    data = root / UPLOADS_FOLDER / token
    data.unlink()
    {"symlink": lambda: data.symlink_to(tree.outside.path / "b" / "victim-0"),
     "fifo": lambda: os.mkfifo(data), "folder": lambda: data.mkdir()}[kind]()
    for call in (lambda: store.resume_upload(token, "alice"),
                 lambda: store.drop_upload(token, "alice")):
        with pytest.raises(NotFound):
            call()
    store.expire_uploads(0)
    assert os.path.lexists(data)  # not ours to remove: left alone
    tree.outside.assert_untouched()


def test_a_record_pointing_through_a_link_commits_nowhere(tree):
    """A record is replayed through the jail: its path cannot lead outside."""
    store, root = tree.store, tree.root
    (root / "outlink").symlink_to(tree.outside.path)
    token = kept(store, ["f"], b"EVIL", 4, replace=True)
    info = root / UPLOADS_FOLDER / (token + ".info")
    record = json.loads(info.read_bytes())
    record["path"] = ["outlink", "b", "victim-0"]
    info.write_text(json.dumps(record))
    with store.resume_upload(token, "alice") as upload:
        assert upload.path == ("outlink", "b", "victim-0") and upload.offset == 4
        with pytest.raises(NotFound):
            upload.commit()
    assert leftovers(root) == []
    tree.outside.assert_untouched()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="mounts a tmpfs inside the library in a mount namespace of its own")
def test_a_mount_inside_the_library_is_refused_not_copied(tmp_path):
    root = tmp_path / "library"
    (root / "mnt").mkdir(parents=True)
    script = r"""
import os, sys
from daemon.store import Store, IOFailure
root = sys.argv[1]
store = Store(root)
with open(os.path.join(root, "mnt", "there"), "wb") as handle:
    handle.write(b"on the mount")

def upload():
    with store.begin_upload(["mnt", "f"], 1) as pending:
        pending.write(b"x")
        pending.commit()

for step in (upload, lambda: store.trash_file(["mnt", "there"])):
    try:
        step()
        print("done")
    except IOFailure as exc:
        print("io", "another file system" in str(exc))
print(sorted(os.listdir(os.path.join(root, "mnt"))),
      os.listdir(os.path.join(root, ".shelf-uploads")), os.listdir(os.path.join(root, ".shelf-trash")))
"""
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", 'mount -t tmpfs tmpfs "$1/mnt" && exec "$2" -c "$3" "$1"',
         "sh", str(root), sys.executable, script],
        capture_output=True, text=True, cwd=PROJECT, timeout=30)
    if "mount" in result.stderr and result.returncode:
        pytest.skip("cannot mount a tmpfs here: %s" % result.stderr.strip())
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["io True", "io True", "['there'] [] []"]
