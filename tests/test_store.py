"""daemon/store.py against hostile trees, races and the promises of PROTOCOL.md v2.

Real files under tmp_path and the real kernel, no mocks. Every test that takes
``tree`` runs twice: "native" (openat2, O_TMPFILE, xattr versions,
renameat2(RENAME_NOREPLACE), as detected) and "portable" (the no-follow walk,
named cache temporaries, stat-derived versions, link + unlink). Next to the library
sits an "outside" tree with the same names; after every test nothing in it may
have been read, listed, written, linked or removed (its atimes are set back so
that a read shows).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.protocol import Channel, ConnectionLost
from daemon.store import (CACHE_FOLDER, MAX_PATH, TEMP_PREFIX, Changed, Entry, Exists,
                          Features, Full, Invalid, IOFailure, NotEmpty, NotFound, Store,
                          StoreError, Unsupported, parse_path, validate_path, version_of)
from daemon.trash import TRASH_FOLDER
from daemon.uploads import UPLOADS_FOLDER

FAIL_CODES = {"invalid", "denied", "notfound", "changed", "notempty", "toolarge", "full",
              "io", "toolong"}  # PROTOCOL.md v2's table
VERSION = re.compile(r"[0-9a-zA-Z_-]{1,64}")
RACERS = 20


# -- the trees ----------------------------------------------------------------------

class Outside:
    """A tree next to the library that the store must never touch."""

    def __init__(self, path: Path):
        self.path = path
        (path / "b" / "c").mkdir(parents=True)
        (path / "secret.txt").write_bytes(b"SECRET")
        (path / "b" / "file.txt").write_bytes(b"OUTSIDE")
        for number in range(8):
            (path / "b" / ("victim-%d" % number)).write_bytes(b"VICTIM")
        (path / "cache").mkdir()
        self.contents = {p: p.read_bytes() for p in path.rglob("*") if p.is_file()}
        self.paths = sorted([path, *path.rglob("*")])
        self.arm()

    def arm(self) -> None:
        """Set atimes older than mtimes (relatime then records the next read); take stock."""
        for item in self.paths:
            st = item.lstat()
            os.utime(item, ns=(st.st_mtime_ns - 10**10, st.st_mtime_ns), follow_symlinks=False)
        self.before = self.stats()

    def stats(self) -> dict:
        """lstat and xattrs of every path, without reading or listing anything."""
        result = {}
        for item in self.paths:
            try:
                st = item.lstat()
            except FileNotFoundError:
                result[item] = None
                continue
            result[item] = (st.st_mode, st.st_size, st.st_nlink, st.st_mtime_ns,
                            st.st_ctime_ns, st.st_atime_ns,
                            sorted(os.listxattr(item, follow_symlinks=False)))
        return result

    def assert_untouched(self) -> None:
        assert self.stats() == self.before, "something outside the library changed"
        assert sorted([self.path, *self.path.rglob("*")]) == self.paths
        assert {p: p.read_bytes() for p in self.contents} == self.contents
        self.arm()  # the checks above read and listed it


@dataclass
class Tree:
    root: Path
    outside: Outside
    store: Store
    mode: str


def open_store(root: Path, mode: str, **kwargs) -> Store:
    return Store(root, features=None if mode == "native" else Features.portable(), **kwargs)


@pytest.fixture(params=["native", "portable"])
def tree(request, tmp_path):
    root = tmp_path / "library"
    root.mkdir()
    outside = Outside(tmp_path / "outside")
    store = open_store(root, request.param)
    yield Tree(root, outside, store, request.param)
    store.close()
    outside.assert_untouched()


def store_file(store: Store, path: str, data: bytes, replace: bool = False) -> Entry:
    with store.begin_upload(parse_path(path), len(data), replace=replace) as upload:
        upload.write(data)
        return upload.commit()


def read(store: Store, path: str, version: str | None = None) -> bytes:
    with store.open_file(parse_path(path), version) as opened:
        return opened.file.read()


def names(store: Store, path: str = "") -> list[str]:
    return [entry.name for entry in store.listing(parse_path(path))]


def leftovers(root: Path) -> list[str]:
    """Upload bytes anywhere: temporaries in folders, or anything in .shelf-uploads."""
    found = [str(p) for p in root.rglob(TEMP_PREFIX + "*")]
    if (root / UPLOADS_FOLDER).is_dir():
        found += [str(p) for p in (root / UPLOADS_FOLDER).iterdir()]
    return sorted(found)


def on_disk(folder: Path) -> list[str]:
    """The names in a folder but for the store's working folders, which must be empty."""
    found = sorted(os.listdir(folder))
    for working in (UPLOADS_FOLDER, TRASH_FOLDER):
        if working in found:
            assert os.listdir(folder / working) == [], working
            found.remove(working)
    return found


def age(path: Path, seconds: float) -> None:
    """Make a file look ``seconds`` old (mtime; clean-up never sleeps to find out)."""
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def outcome(call) -> str:
    """"ok", or the protocol's word for the refusal: "exists" or a FAIL code."""
    try:
        call()
    except StoreError as exc:
        return exc.code or "exists"
    return "ok"


def race_threads(count: int, work) -> list[str]:
    """Run ``work(i)`` in ``count`` threads released together; their outcomes."""
    barrier = threading.Barrier(count)
    results = [None] * count

    def run(number: int) -> None:
        barrier.wait()
        results[number] = outcome(lambda: work(number))

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def race_processes(count: int, work) -> list[str]:
    """Run ``work(i)`` in ``count`` forked processes (like sessions) released together."""
    gate_r, gate_w = os.pipe()
    children = []
    for number in range(count):
        result_r, result_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child leaves only through os._exit
            status = 1
            try:
                os.close(gate_w)
                os.read(gate_r, 1)  # returns at EOF: when the parent closes the gate
                os.write(result_w, outcome(lambda: work(number)).encode())
                status = 0
            finally:
                os._exit(status)
        os.close(result_w)
        children.append((pid, result_r))
    os.close(gate_r)
    os.close(gate_w)
    results = []
    for pid, result_r in children:
        with os.fdopen(result_r, "rb") as pipe:
            results.append(pipe.read().decode() or "crashed")
        assert os.waitpid(pid, 0)[1] == 0
    return results


# -- the modes are what they say -----------------------------------------------------

def test_native_mode_has_the_kernel_features_on_this_machine(tmp_path):
    with Store(tmp_path) as store:
        if not (store.features.openat2 and store.features.tmpfile):
            pytest.skip("this kernel lacks openat2 or O_TMPFILE: only the walk is tested")
        assert store.features == Features(True, True, True, True)


@pytest.mark.skipif(not shutil.which("strace"), reason="needs strace")
@pytest.mark.parametrize("mode", ["native", "portable"])
def test_each_mode_resolves_the_way_it_says(tmp_path, mode):
    """strace proves the walk never calls openat2 and native mode does."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f").write_bytes(b"x")
    script = ("import sys; from daemon.store import *; s = Store(sys.argv[1], features=%s);"
              " s.stat(('a', 'b', 'f')); s.listing(('a',))"
              % ("None" if mode == "native" else "Features.portable()"))
    traced = subprocess.run(["strace", "-f", "-e", "trace=openat2,openat", sys.executable, "-c",
                             script, str(tmp_path)], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent.parent, timeout=30)
    assert traced.returncode == 0, traced.stderr
    calls = re.findall(r'(openat2?)\((\d+|AT_FDCWD), "(a[^"]*|b|f)"', traced.stderr)
    if mode == "native":
        assert ("openat2", "a/b/f") in {(c, p) for c, _, p in calls}
    else:
        assert {c for c, _, _ in calls} == {"openat"}
        assert {p for _, _, p in calls} == {"a", "b", "f"}  # one segment per call


# -- paths ---------------------------------------------------------------------------

@pytest.mark.parametrize("segments", [
    [""], ["a", ""], [".hidden"], [".."], ["."], ["a", ".."], ["a/b"], ["x" * 256],
    ["tab\there"], ["del\x7f"], ["nul\x00"], ["\udcff"], [b"\xff\xfe"], [".shelf-cache"],
    [TEMP_PREFIX + "0" * 32],
])
def test_invalid_paths_are_refused_by_every_operation(tree, segments):
    store = tree.store
    calls = [lambda: store.listing(segments), lambda: store.stat(segments),
             lambda: store.open_file(segments), lambda: store.sha256(segments),
             lambda: store.begin_upload(segments, 0), lambda: store.delete(segments),
             lambda: store.mkdir(segments), lambda: store.rmdir(segments),
             lambda: store.rename(segments, ["x"]), lambda: store.rename(["x"], segments)]
    for call in calls:
        with pytest.raises(Invalid):
            call()
    assert os.listdir(tree.root) == []


def test_path_text_and_types():
    assert parse_path("/") == parse_path("") == ()
    assert parse_path("a/b c/é") == ("a", "b c", "é")
    assert validate_path([b"caf\xc3\xa9"]) == ("café",)
    for text in ("/a", "a/", "a//b"):
        with pytest.raises(Invalid):
            parse_path(text)
    with pytest.raises(TypeError):  # "abc" would otherwise be the path a/b/c
        validate_path("abc")


def test_paths_of_1024_bytes_work_and_1025_are_invalid(tree):
    store = tree.store
    wide = "é" * 127 + "x"  # 255 bytes in 128 characters
    folders = [wide, wide, wide, wide[:-1]]
    assert [len(s.encode()) for s in folders] == [255, 255, 255, 254]
    path = folders + ["z"]
    assert len("/".join(path).encode()) == MAX_PATH
    for depth in range(1, len(folders) + 1):
        store.mkdir(folders[:depth])
    with store.begin_upload(path, 4) as upload:
        upload.write(b"deep")
        entry = upload.commit()
    assert store.stat(path) == entry
    assert store.listing(folders) == [entry]
    with store.open_file(path, entry.version) as opened:
        assert opened.file.read() == b"deep"
    assert store.sha256(path)[0] == hashlib.sha256(b"deep").hexdigest()
    too_long = folders + ["zz"]
    for call in (lambda: store.stat(too_long), lambda: store.begin_upload(too_long, 1),
                 lambda: store.rename(path, too_long), lambda: store.mkdir(too_long)):
        with pytest.raises(Invalid):
            call()
    store.rename(path, folders + ["q"])
    store.delete(folders + ["q"])
    for depth in range(len(folders), 0, -1):
        store.rmdir(folders[:depth])
    assert on_disk(tree.root) == [CACHE_FOLDER]


# -- hostile trees ---------------------------------------------------------------------

def test_symlinked_intermediate_folders_are_never_followed(tree):
    store, root = tree.store, tree.root
    (root / "real" / "b").mkdir(parents=True)
    (root / "real" / "b" / "file.txt").write_bytes(b"INSIDE")
    (root / "inlink").symlink_to("real")                       # inside, relative
    (root / "outlink").symlink_to(tree.outside.path)           # outside, absolute
    (root / "real" / "up").symlink_to("../../outside")         # outside, relative
    for link in (["inlink"], ["outlink"], ["real", "up"]):
        for call in (lambda: store.listing(link), lambda: store.listing(link + ["b"]),
                     lambda: store.stat(link + ["b", "file.txt"]),
                     lambda: store.open_file(link + ["b", "file.txt"]),
                     lambda: store.open_file(link + ["secret.txt"]),
                     lambda: store.sha256(link + ["b", "file.txt"]),
                     lambda: store.begin_upload(link + ["b", "new"], 1),
                     lambda: store.delete(link + ["b", "victim-0"]),
                     lambda: store.mkdir(link + ["b", "new"]),
                     lambda: store.rmdir(link + ["b", "c"]),
                     lambda: store.rename(link + ["b", "file.txt"], ["stolen"]),
                     lambda: store.rename(["real", "b", "file.txt"], link + ["b", "x"])):
            with pytest.raises(NotFound):
                call()
    assert names(store) == ["real"]
    assert names(store, "real") == ["b"]
    assert read(store, "real/b/file.txt") == b"INSIDE"
    tree.outside.assert_untouched()


def test_final_symlinks_are_neither_served_nor_replaced_nor_removed(tree):
    store, root = tree.store, tree.root
    (root / "link.txt").symlink_to(tree.outside.path / "secret.txt")
    (root / "dirlink").symlink_to(tree.outside.path / "b")
    for path in (["link.txt"], ["dirlink"]):
        for call in (lambda: store.stat(path), lambda: store.open_file(path),
                     lambda: store.delete(path), lambda: store.rmdir(path),
                     lambda: store.listing(path), lambda: store.rename(path, ["moved"])):
            with pytest.raises(NotFound):
                call()
        for replace in (False, True):
            with pytest.raises(Exists):
                store.begin_upload(path, 1, replace=replace)
        with pytest.raises(Exists):
            store.mkdir(path)
    assert names(store) == []
    assert (root / "link.txt").is_symlink() and (root / "dirlink").is_symlink()
    tree.outside.assert_untouched()


@pytest.mark.timeout(20)  # a FIFO opened without O_NONBLOCK would hang here
def test_fifos_sockets_and_devices_are_neither_listed_nor_served(tree):
    store, root = tree.store, tree.root
    (root / "d").mkdir()
    os.mkfifo(root / "d" / "fifo")
    folder_fd = os.open(root / "d", os.O_RDONLY | os.O_DIRECTORY)
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind("/proc/self/fd/%d/sock" % folder_fd)  # a short path to bind
    finally:
        os.close(folder_fd)
    specials = ["fifo", "sock"]
    if os.geteuid() == 0:
        os.mknod(root / "d" / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        specials.append("null")
    store_file(store, "d/real.txt", b"real")
    assert names(store, "d") == ["real.txt"]
    for name in specials:
        path = ["d", name]
        for call in (lambda: store.stat(path), lambda: store.open_file(path),
                     lambda: store.sha256(path), lambda: store.delete(path),
                     lambda: store.rmdir(path), lambda: store.listing(path),
                     lambda: store.listing(path + ["x"]), lambda: store.rename(path, ["d", "x"]),
                     lambda: store.begin_upload(path + ["x"], 1)):
            with pytest.raises(NotFound):
                call()
        with pytest.raises(Exists):
            store.begin_upload(path, 1, replace=True)
        with pytest.raises(Exists):
            store.rename(["d", "real.txt"], path)
    assert sorted(os.listdir(root / "d")) == sorted(specials + ["real.txt"])
    with pytest.raises(NotEmpty):
        store.rmdir(["d"])


def test_hidden_names_are_never_listed_served_or_accepted(tree):
    store, root = tree.store, tree.root
    (root / "d").mkdir()
    (root / "d" / ".hidden").write_bytes(b"hidden")
    (root / ".secret").mkdir()
    (root / ".secret" / "inner.txt").write_bytes(b"inner")
    assert names(store) == ["d"]
    assert names(store, "d") == []
    for path in (["d", ".hidden"], [".secret", "inner.txt"], [".secret"]):
        with pytest.raises(Invalid):
            store.stat(path)
    with pytest.raises(NotEmpty):  # hidden entries count for RMDIR
        store.rmdir(["d"])


def test_names_that_are_not_utf8_are_neither_listed_nor_reachable(tree):
    store, root = tree.store, tree.root
    raw_root = os.fsencode(root)
    os.mkdir(raw_root + b"/bad-\xff")
    with open(raw_root + b"/bad-\xff/inner.txt", "wb") as handle:
        handle.write(b"inner")
    with open(raw_root + b"/file-\xfe.txt", "wb") as handle:
        handle.write(b"x")
    (root / "control\tname").write_bytes(b"x")
    (root / "d").mkdir()
    with open(raw_root + b"/d/\xc3\x28", "wb") as handle:  # an invalid UTF-8 sequence
        handle.write(b"x")
    store_file(store, "ok.txt", b"ok")
    assert names(store) == ["d", "ok.txt"]
    assert names(store, "d") == []
    for segment in ("bad-\udcff", b"bad-\xff", "file-\udcfe.txt"):
        with pytest.raises(Invalid):
            store.stat([segment])
    with pytest.raises(NotEmpty):
        store.rmdir(["d"])


def test_a_folder_swapped_for_a_symlink_during_walks_never_leads_outside(tree):
    """a/ is swapped with a link to the outside meanwhile; everything stays inside.

    The swapper is a process, not a thread: on another core it races the
    walk between two system calls, where a thread would mostly wait for the GIL.
    """
    store, root = tree.store, tree.root
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "a" / "b" / "file.txt").write_bytes(b"INSIDE")
    (root / "a" / "b" / "c" / "keep").write_bytes(b"")  # outside, b/c is empty
    (root / "a.swap").symlink_to(tree.outside.path)
    swapper = os.fork()
    if swapper == 0:  # a/ is always there: half the time a folder, half a link
        try:
            for _ in range(20000):
                exchange(root / "a", root / "a.swap")
        finally:
            os._exit(0)
    seen = {"ok": 0, "notfound": 0}  # outcomes of the calls that may reach the inside
    reaped, number = False, 0
    try:
        while not reaped:
            reaped = os.waitpid(swapper, os.WNOHANG) != (0, 0)
            number += 1
            victim = ["a", "b", "victim-%d" % (number % 8)]
            results = [
                outcome(lambda: store.delete(victim)),
                outcome(lambda: store.open_file(["a", "secret.txt"]).close()),
                outcome(lambda: store.mkdir(["a", "b", "c", "new-%d" % number])),
                outcome(lambda: store.rmdir(["a", "b", "c"])),
            ]
            assert results[0] == results[1] == "notfound"  # they exist only outside
            assert results[3] in ("notfound", "notempty")
            for call in (lambda: assert_inside(read(store, "a/b/file.txt")),
                         lambda: assert_inside(store.listing(["a", "b"])),
                         lambda: store_file(store, "a/b/new-%d" % number, b"new"),
                         lambda: store.rename(["a", "b", "new-%d" % number],
                                              ["a", "b", "moved-%d" % number])):
                result = outcome(call)
                assert result in seen, result
                seen[result] += 1
    finally:
        if not reaped:
            os.kill(swapper, signal.SIGKILL)
            os.waitpid(swapper, 0)
    assert seen["ok"] and seen["notfound"], "the race never happened: %s" % seen
    tree.outside.assert_untouched()


def exchange(first: Path, second: Path) -> None:
    """renameat2(RENAME_EXCHANGE): swap two names atomically."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(-100, os.fsencode(first), -100, os.fsencode(second), 2) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def assert_inside(found) -> None:
    if isinstance(found, bytes):
        assert found == b"INSIDE"
    else:
        for entry in found:
            assert entry.name in ("file.txt", "c") or re.fullmatch(r"(new|moved)-\d+", entry.name)


def test_planted_working_files_of_every_kind_are_left_alone(tree):
    """Things named like shelfd 1's upload temporaries: only a stale file at the root goes."""
    store, root = tree.store, tree.root
    (root / "d").mkdir()
    planted = {}
    for folder in (root, root / "d"):
        for number, kind in enumerate(("symlink", "fifo", "folder", "socket", "file-not-ours")):
            name = TEMP_PREFIX + ("%d" % number if kind != "file-not-ours" else "not-a-token")
            path = folder / name
            if kind == "symlink":
                path.symlink_to(tree.outside.path / "secret.txt")
            elif kind == "fifo":
                os.mkfifo(path)
            elif kind == "folder":
                path.mkdir()
                (path / "inside.txt").write_bytes(b"x")
            elif kind == "socket":
                folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    with socket.socket(socket.AF_UNIX) as sock:
                        sock.bind("/proc/self/fd/%d/%s" % (folder_fd, name))
                finally:
                    os.close(folder_fd)
            else:
                path.write_bytes(b"x")
            planted[path] = kind
    stale = TEMP_PREFIX + "4242"  # shelfd 1 named them by pid, at the root
    (root / stale).write_bytes(b"a crashed upload")
    (root / "d" / stale).write_bytes(b"not ours: nothing of ours lives in a folder")
    (root / CACHE_FOLDER).symlink_to(tree.outside.path / "cache")

    entry = store_file(store, "d/new.txt", b"new")
    assert store.sha256(["d", "new.txt"])[0] == hashlib.sha256(b"new").hexdigest()
    assert store.remove_leftovers() == [(stale,)]
    assert sorted(os.listdir(root / "d")) == sorted(
        [p.name for p in planted if p.parent.name == "d"] + [stale, "new.txt"])
    assert store.listing(["d"]) == [entry]
    store.delete(["d", "new.txt"])
    with pytest.raises(NotEmpty):  # what is not ours counts, hidden or not
        store.rmdir(["d"])
    assert all(os.path.lexists(path) for path in planted)
    tree.outside.assert_untouched()


@pytest.mark.parametrize("kind", ["fifo", "file", "symlink"])
def test_a_planted_cache_folder_is_no_cache(tree, kind):
    store, root = tree.store, tree.root
    store_file(store, "f", b"data")
    cache = root / CACHE_FOLDER
    {"fifo": lambda: os.mkfifo(cache), "file": lambda: cache.write_bytes(b"x"),
     "symlink": lambda: cache.symlink_to(tree.outside.path / "cache")}[kind]()
    for _ in range(2):
        assert store.sha256(["f"])[0] == hashlib.sha256(b"data").hexdigest()
    assert on_disk(root) == sorted([CACHE_FOLDER, "f"])


@pytest.mark.timeout(20)
@pytest.mark.parametrize("kind", ["fifo", "symlink", "folder", "garbage"])
def test_planted_cache_entries_are_misses(tree, kind):
    store, root = tree.store, tree.root
    entry = store_file(store, "f", b"data")
    (root / CACHE_FOLDER).mkdir()
    key = root / CACHE_FOLDER / entry.version
    fake = tree.outside.path / "secret.txt"
    {"fifo": lambda: os.mkfifo(key), "symlink": lambda: key.symlink_to(fake),
     "folder": lambda: key.mkdir(), "garbage": lambda: key.write_bytes(b"zz" * 32)}[kind]()
    assert store.sha256(["f"])[0] == hashlib.sha256(b"data").hexdigest()


# -- where uploads wait ------------------------------------------------------------------

def test_a_live_upload_survives_clean_up_and_a_stale_orphan_does_not(tmp_path):
    root = tmp_path / "library"
    (root / "d").mkdir(parents=True)
    with Store(root) as store:
        with store.begin_upload(["d", "f"], 4) as upload:
            upload.write(b"live")
            live = leftovers(root)
            assert [Path(p).name for p in live] == [upload.token, upload.token + ".info"]
            orphan = root / UPLOADS_FOLDER / os.urandom(16).hex()  # bytes whose record is gone
            orphan.write_bytes(b"left by a crash")
            age(orphan, 120)
            cleaner = subprocess.run(  # another process (another shelfd) cleans up
                [sys.executable, "-c", "import sys; from daemon.store import Store;"
                 " s = Store(sys.argv[1]); print(len(s.remove_leftovers()),"
                 " s.expire_uploads(0))", str(root)],
                capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent,
                timeout=30)
            assert cleaner.stdout.split() == ["1", "0"], cleaner.stderr
            assert leftovers(root) == live
            upload.commit()
        assert leftovers(root) == []
        assert read(store, "d/f") == b"live"


def test_an_upload_in_progress_lives_only_in_the_uploads_folder(tree):
    store, root = tree.store, tree.root
    store.mkdir(["d"])
    with store.begin_upload(["d", "f"], 3, owner="alice") as upload:
        upload.write(b"abc")
        assert re.fullmatch(r"[0-9a-f]{32}", upload.token)
        assert (upload.path, upload.size, upload.replace, upload.offset) == (("d", "f"), 3,
                                                                             False, 0)
        assert os.listdir(root / "d") == []
        assert sorted(os.listdir(root)) == [UPLOADS_FOLDER, "d"]
        assert stat.S_IMODE(os.lstat(root / UPLOADS_FOLDER).st_mode) == 0o700
        info = json.loads((root / UPLOADS_FOLDER / (upload.token + ".info")).read_bytes())
        assert info["path"] == ["d", "f"] and info["size"] == 3 and info["owner"] == "alice"
        assert info["replace"] is False and abs(info["created"] - time.time()) < 60
        assert (root / UPLOADS_FOLDER / upload.token).read_bytes() == b"abc"
        store.rmdir(["d"])  # nothing of the upload is in d: it is empty
        with pytest.raises(NotFound):
            upload.commit()
    assert on_disk(root) == []


def test_many_uploads_in_one_process_each_have_their_own_files(tree):
    store = tree.store
    uploads = [store.begin_upload(["f%d" % n], 1000) for n in range(50)]
    try:
        for number, upload in enumerate(uploads):
            upload.write(bytes([number]) * 500)
        for number, upload in enumerate(uploads):
            upload.write(bytes([number]) * 500)
            upload.commit()
    finally:
        for upload in uploads:
            upload.abort()
    for number in range(50):
        assert read(store, "f%d" % number) == bytes([number]) * 1000
    assert leftovers(tree.root) == []


# -- uploads ----------------------------------------------------------------------------

def test_an_upload_appears_whole_at_commit_and_not_before(tree):
    store = tree.store
    with store.begin_upload(["f"], 6) as upload:
        upload.write(b"abc")
        with pytest.raises(NotFound):
            store.stat(["f"])
        upload.write(b"def")
        assert store.listing([]) == []
        entry = upload.commit()
    assert (entry.name, entry.kind, entry.size) == ("f", "file", 6)
    assert read(store, "f", entry.version) == b"abcdef"


def test_aborted_and_incomplete_uploads_leave_nothing(tree):
    store, root = tree.store, tree.root
    with store.begin_upload(["f"], 6) as upload:
        upload.write(b"abc")
    with store.begin_upload(["g"], 6) as upload:
        upload.write(b"abc")
        with pytest.raises(IOFailure):
            upload.commit()
    with store.begin_upload(["h"], 2) as upload:
        upload.write(b"abc")
        with pytest.raises(IOFailure):
            upload.commit()
    assert on_disk(root) == []


def test_upload_checks_before_the_bytes(tree):
    store, root = tree.store, tree.root
    store_file(store, "f", b"x")
    store.mkdir(["d"])
    for path in (["f"], ["d"]):
        with pytest.raises(Exists):
            store.begin_upload(path, 1)
    with pytest.raises(Exists):
        store.begin_upload(["d"], 1, replace=True)
    with pytest.raises(Exists):
        store.begin_upload([], 1)
    for path in (["missing", "f"], ["f", "g"]):
        with pytest.raises(NotFound):
            store.begin_upload(path, 1)
    with pytest.raises(Full):
        store.begin_upload(["big"], store.space()[1] + 1)
    assert on_disk(root) == ["d", "f"]


def test_the_first_commit_wins_and_replace_keeps_readers_on_their_version(tree):
    store = tree.store
    first = store.begin_upload(["f"], 5)
    second = store.begin_upload(["f"], 6)
    first.write(b"first")
    second.write(b"second")
    assert first.commit().size == 5
    with pytest.raises(Exists):
        second.commit()
    with store.open_file(["f"]) as old:
        replaced = store_file(store, "f", b"replaced", replace=True)
        assert old.file.read() == b"first"
        assert old.entry.version != replaced.version
    assert read(store, "f") == b"replaced"
    with pytest.raises(Changed):
        store.open_file(["f"], old.entry.version)
    assert leftovers(tree.root) == []


def test_a_replace_whose_file_was_deleted_meanwhile_creates_it(tree):
    store = tree.store
    store_file(store, "f", b"old")
    with store.begin_upload(["f"], 3, replace=True) as upload:
        upload.write(b"new")
        store.delete(["f"])
        upload.commit()
    assert read(store, "f") == b"new"


def test_an_upload_goes_where_its_path_is_at_commit(tree):
    store, root = tree.store, tree.root
    store.mkdir(["d"])
    with store.begin_upload(["d", "f"], 1) as upload:
        upload.write(b"x")
        os.rename(root / "d", root / "elsewhere")  # moved behind the store's back
        with pytest.raises(NotFound):
            upload.commit()
    (root / "d").mkdir()
    (root / "d" / "f").mkdir()
    with store.begin_upload(["d", "g"], 1, replace=True) as upload:
        upload.write(b"x")
        os.rename(root / "d" / "f", root / "d" / "g")  # a folder took the path
        with pytest.raises(Exists):
            upload.commit()
    assert leftovers(root) == []
    assert os.listdir(root / "elsewhere") == []


def test_an_upload_receives_from_a_channel(tree):
    store = tree.store
    data = os.urandom(3 << 20)
    left, right = socket.socketpair()
    sender = threading.Thread(target=lambda: (left.sendall(data), left.close()))
    try:
        channel = Channel(right)
        sender.start()
        with store.begin_upload(["big"], len(data)) as upload:
            upload.receive_from(channel)
            entry = upload.commit()
    finally:
        sender.join()
        channel.close()
    assert entry.size == len(data)
    assert read(store, "big") == data


def test_a_broken_channel_leaves_nothing(tree):
    store = tree.store
    left, right = socket.socketpair()
    left.sendall(b"only part")
    left.close()
    channel = Channel(right)
    try:
        with store.begin_upload(["f"], 1000) as upload:
            with pytest.raises(ConnectionLost):
                upload.receive_from(channel)
            with pytest.raises(IOFailure):
                upload.commit()
    finally:
        channel.close()
    assert on_disk(tree.root) == []


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="mounts a small tmpfs in a mount namespace of its own")
@pytest.mark.parametrize("mode", ["native", "portable"])
def test_a_full_disk_is_full_and_leaves_nothing(tmp_path, mode):
    """On a 1 MiB tmpfs: refused up front when it cannot fit, Full when the disk fills."""
    mount = tmp_path / "small"
    mount.mkdir()
    script = r"""
import os, socket, sys, threading
from common.protocol import Channel
from daemon.store import Store, Features, Full
root = sys.argv[1]
store = Store(root, reserve=0, features=None if sys.argv[2] == "native" else Features.portable())
try:
    store.begin_upload(["huge"], 2 << 20)
except Full:
    print("refused")
upload = store.begin_upload(["f"], 900 << 10)
with open(os.path.join(root, "filler"), "wb") as filler:
    filler.write(b"x" * (600 << 10))
left, right = socket.socketpair()
threading.Thread(target=lambda: (left.sendall(b"y" * (900 << 10)), left.close())).start()
for step in (lambda: upload.receive_from(Channel(right)), upload.commit):
    try:
        step()
    except Full:
        print("full")
upload.abort()
print(sorted(os.listdir(root)), os.listdir(os.path.join(root, ".shelf-uploads")))
"""
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", 'mount -t tmpfs -o size=1m tmpfs "$1" && exec "$2" -c "$3"'
         ' "$1" "$4"', "sh", str(mount), sys.executable, script, mode],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent, timeout=30)
    if "mount" in result.stderr and result.returncode:
        pytest.skip("cannot mount a tmpfs here: %s" % result.stderr.strip())
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:4] == ["refused", "full", "full",
                                             "['.shelf-uploads', 'filler'] []"]


# -- versions ----------------------------------------------------------------------------

def test_versions_are_tokens_that_every_reader_agrees_on(tree):
    store = tree.store
    store.mkdir(["d"])
    entry = store_file(store, "d/f", b"data")
    assert VERSION.fullmatch(entry.version)
    assert store.stat(["d"]).version is None
    assert store.stat(["d", "f"]) == entry
    assert store.listing(["d"]) == [entry]
    assert store.sha256(["d", "f"])[1] == entry
    with open_store(tree.root, tree.mode) as another:
        assert another.stat(["d", "f"]).version == entry.version
    assert race_processes(1, lambda n: check(store.stat(["d", "f"]) == entry)) == ["ok"]


def check(condition: bool) -> None:
    if not condition:
        raise IOFailure("check failed")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="renames the host in a UTS namespace of its own")
def test_versions_do_not_depend_on_the_host_or_the_device(tree):
    entry = store_file(tree.store, "f", b"data")
    script = ("import socket, sys; from daemon.store import *; assert socket.gethostname() =="
              " 'another-host'; s = Store(sys.argv[1], features=None if sys.argv[2] =="
              " 'native' else Features.portable()); print(s.stat(('f',)).version)")
    other = subprocess.run(["unshare", "-u", "sh", "-c", 'hostname another-host && exec "$@"',
                            "sh", sys.executable, "-c", script, str(tree.root), tree.mode],
                           capture_output=True, text=True, timeout=30,
                           cwd=Path(__file__).resolve().parent.parent)
    assert other.returncode == 0, other.stderr
    assert other.stdout.strip() == entry.version
    st = os.stat(tree.root / "f")
    fields = {name: getattr(st, name) for name in dir(st) if name.startswith("st_")}
    moved = types.SimpleNamespace(**{**fields, "st_dev": st.st_dev + 1})
    assert version_of(moved, b"i" * 16) == version_of(st, b"i" * 16)
    assert version_of(moved, None) == version_of(st, None)


def test_a_new_file_on_a_reused_inode_has_a_new_version(tree):
    """Same path, same size, same mtime, same inode number: still another version."""
    store, root = tree.store, tree.root
    store_file(store, "f", b"a000")
    for attempt in range(20):  # ext4 hands out the lowest free inode: reuse comes soon
        old, old_version = os.stat(root / "f"), store.stat(["f"]).version
        store.delete(["f"])
        store_file(store, "f", b"b%03d" % attempt)
        os.utime(root / "f", ns=(old.st_atime_ns, old.st_mtime_ns))
        new = os.stat(root / "f")
        if new.st_ino == old.st_ino:
            break
    else:
        pytest.skip("the file system did not reuse an inode")
    assert (new.st_size, new.st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    if not store.features.xattrs and new.st_ctime_ns == old.st_ctime_ns:
        return  # the stat-derived version's one documented weakness (module docstring)
    assert store.stat(["f"]).version != old_version
    with pytest.raises(Changed):
        store.open_file(["f"], old_version)


def test_a_version_changes_with_any_file_that_arrives_and_stays_with_its_file(tree):
    store, root = tree.store, tree.root
    store.mkdir(["d"])
    a = store_file(store, "a", b"same")
    b = store_file(store, "b", b"same")
    assert a.version != b.version
    store.delete(["a"])
    store.rename(["b"], ["a"])
    moved = store.stat(["a"])
    assert moved.version != a.version
    if store.features.xattrs:  # the same file keeps its version when it moves
        assert moved.version == b.version
    with open(root / "a", "ab") as handle:  # edited in place behind the store's back
        handle.write(b"!")
    assert store.stat(["a"]).version not in (a.version, b.version, moved.version)


# -- delete, mkdir, rmdir, rename ------------------------------------------------------------

def test_delete_mkdir_rmdir(tree):
    store, root = tree.store, tree.root
    store.mkdir(["d"])
    with pytest.raises(Exists):
        store.mkdir(["d"])
    for path in (["missing", "x"], ["d", "x", "y"]):
        with pytest.raises(NotFound):
            store.mkdir(path)
    store_file(store, "d/f", b"x")
    with pytest.raises(NotFound):
        store.mkdir(["d", "f", "x"])
    with pytest.raises(NotEmpty):
        store.rmdir(["d"])
    for path in (["d"], ["d", "missing"], []):
        with pytest.raises(NotFound):
            store.delete(path)
    with pytest.raises(NotFound):
        store.rmdir(["d", "f"])
    with pytest.raises(Invalid):
        store.rmdir([])
    store.delete(["d", "f"])
    store.rmdir(["d"])
    assert on_disk(root) == []
    with pytest.raises(Exists):
        store.mkdir([])


def test_rename_never_replaces(tree):
    store = tree.store
    store.mkdir(["d"])
    store.mkdir(["empty"])
    store_file(store, "f", b"f")
    store_file(store, "g", b"g")
    for source, target in ((["f"], ["g"]), (["f"], ["f"]), (["f"], ["empty"]), (["f"], []),
                           (["d"], ["empty"]), (["d"], ["d"])):
        with pytest.raises(Exists):
            store.rename(source, target)
    for source, target in ((["missing"], ["x"]), (["f"], ["missing", "x"]),
                           (["f"], ["g", "x"])):
        with pytest.raises(NotFound):
            store.rename(source, target)
    for source, target in ((["d"], ["d", "x"]), (["d"], ["d", "x", "y"]), ([], ["x"])):
        with pytest.raises(Invalid):
            store.rename(source, target)
    assert (read(store, "f"), read(store, "g")) == (b"f", b"g")
    version = store.stat(["f"]).version
    store.rename(["f"], ["d", "f2"])
    assert names(store) == ["d", "empty", "g"]
    assert read(store, "d/f2") == b"f"
    if store.features.xattrs:
        assert store.stat(["d", "f2"]).version == version


def test_folder_rename_is_atomic_or_refused(tree):
    store = tree.store
    store.mkdir(["d"])
    store_file(store, "d/f", b"x")
    if store.features.noreplace:
        store.rename(["d"], ["e"])
        assert names(store) == ["e"] and read(store, "e/f") == b"x"
    else:
        with pytest.raises(Unsupported) as refused:
            store.rename(["d"], ["e"])
        assert refused.value.code == "io"
        assert names(store) == ["d"]


def test_every_error_maps_onto_a_protocol_reply():
    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    for cls in subclasses(StoreError):
        assert cls.code in FAIL_CODES or (cls is Exists and cls.code is None), cls


# -- listings -------------------------------------------------------------------------------

def test_listings_are_sorted_by_bytes_and_typed(tree):
    store = tree.store
    for name in ("b", "a", "é", "Z", "a b"):
        store_file(store, name, name.encode())
    store.mkdir(["c"])
    entries = store.listing([])
    assert [e.name for e in entries] == sorted([e.name for e in entries], key=str.encode)
    assert {e.name: e.kind for e in entries}["c"] == "folder"
    assert all(e.version is None for e in entries if e.kind == "folder")
    with pytest.raises(NotFound):
        store.listing(["a"])


def test_concurrent_listings_never_share_a_read_position(tree):
    """Forked processes share the root's descriptor: each listing must open its own."""
    store, root = tree.store, tree.root
    for number in range(1500):
        (root / ("f%04d" % number)).write_bytes(b"")
    expected = ["f%04d" % n for n in range(1500)]

    def list_twice(number: int) -> None:
        for _ in range(2):
            check(names(store) == expected)

    assert race_processes(6, list_twice) == ["ok"] * 6
    assert race_threads(6, list_twice) == ["ok"] * 6


# -- races: exactly one winner, never mixed bytes ----------------------------------------------

@pytest.mark.parametrize("racers", [race_threads, race_processes], ids=["threads", "processes"])
def test_racing_uploads_of_one_new_path_have_one_winner(tree, racers):
    store = tree.store
    size = 64 << 10

    def upload(number: int) -> None:
        with store.begin_upload(["f"], size) as pending:
            for _ in range(4):
                pending.write(bytes([number]) * (size // 4))
            pending.commit()

    results = racers(RACERS, upload)
    assert results.count("ok") == 1, results
    assert set(results) == {"ok", "exists"}
    assert read(store, "f") == bytes([results.index("ok")]) * size
    assert leftovers(tree.root) == []


def test_racing_replaces_never_mix_bytes(tree):
    store = tree.store
    size = 256 << 10
    store_file(store, "f", b"\xff" * size)
    stop = threading.Event()
    reads = []

    def reader() -> None:
        while not stop.is_set():
            data = read(store, "f")
            reads.append(len(data) == size and data.count(data[:1]) == size)

    watcher = threading.Thread(target=reader)
    watcher.start()
    try:
        results = race_threads(RACERS, lambda n: store_file(store, "f", bytes([n]) * size,
                                                            replace=True))
    finally:
        stop.set()
        watcher.join()
    assert results == ["ok"] * RACERS
    final = read(store, "f")
    assert final[0] < RACERS and final == final[:1] * size
    assert reads and all(reads)
    assert leftovers(tree.root) == []


def test_racing_renames_onto_one_target_have_one_winner(tree):
    store = tree.store
    for number in range(RACERS):
        store_file(store, "src-%d" % number, b"%d" % number)
    results = race_processes(RACERS, lambda n: store.rename(["src-%d" % n], ["target"]))
    assert results.count("ok") == 1 and set(results) == {"ok", "exists"}, results
    winner = results.index("ok")
    assert read(store, "target") == b"%d" % winner
    assert names(store) == sorted(["target"] + ["src-%d" % n for n in range(RACERS)
                                                if n != winner])


def test_racing_renames_of_one_source_have_one_winner(tree):
    store = tree.store
    store_file(store, "src", b"the one")
    results = race_processes(RACERS, lambda n: store.rename(["src"], ["dst-%d" % n]))
    assert results.count("ok") == 1 and set(results) == {"ok", "notfound"}, results
    assert names(store) == ["dst-%d" % results.index("ok")]
    assert read(store, "dst-%d" % results.index("ok")) == b"the one"


def test_racing_deletes_and_mkdirs_have_one_winner(tree):
    store = tree.store
    store_file(store, "f", b"x")
    results = race_threads(RACERS, lambda n: store.delete(["f"]))
    assert sorted(results) == ["notfound"] * (RACERS - 1) + ["ok"]
    results = race_processes(RACERS, lambda n: store.mkdir(["d"]))
    assert sorted(results) == ["exists"] * (RACERS - 1) + ["ok"]
    results = race_processes(RACERS, lambda n: store.rmdir(["d"]))
    assert sorted(results) == ["notfound"] * (RACERS - 1) + ["ok"]
    assert on_disk(tree.root) == []


def test_a_mixed_race_leaves_only_whole_files(tree):
    """20 processes store, replace, rename, delete, mkdir and rmdir the same few paths."""
    store, root = tree.store, tree.root
    paths = [["p0"], ["p1"], ["d", "p2"], ["d"]]

    def payload(number: int, step: int) -> bytes:
        head = b"%02d:%03d:" % (number, step)
        return head + head[:2] * (2000 + 37 * step)

    def work(number: int) -> None:
        seed = number * 7919
        for step in range(25):
            seed = (seed * 1103515245 + 12345) % (1 << 31)
            path, other = paths[seed % 4], paths[(seed >> 4) % 4]
            operation = (seed >> 8) % 6
            call = [lambda: store_file(store, "/".join(path), payload(number, step)),
                    lambda: store_file(store, "/".join(path), payload(number, step), True),
                    lambda: store.rename(path, other), lambda: store.delete(path),
                    lambda: store.mkdir(["d"]), lambda: store.rmdir(["d"])][operation]
            try:
                call()
            except (Exists, NotFound, NotEmpty):
                pass
            except Invalid:  # d moved into d/p2
                check(operation == 2 and path == ["d"])
            except Unsupported:
                check(not store.features.noreplace and operation == 2)

    results = race_processes(RACERS, work)
    assert results == ["ok"] * RACERS, results
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert data == payload(int(data[:2]), int(data[3:6])), path
    assert leftovers(root) == []
    tree.outside.assert_untouched()


def test_uploads_racing_the_removal_of_their_folder_fail_cleanly(tree):
    """Half the processes create and remove d/, the others upload into it."""
    store = tree.store

    def work(number: int) -> None:
        for step in range(40):
            try:
                if number % 2:
                    store.mkdir(["d"]) if step % 2 else store.rmdir(["d"])
                else:
                    store_file(store, "d/f%d" % number, b"x")
                    store.delete(["d", "f%d" % number])
            except (Exists, NotFound, NotEmpty):
                pass

    assert race_processes(RACERS, work) == ["ok"] * RACERS
    assert leftovers(tree.root) == []


def test_requests_racing_a_change_of_kind_fail_cleanly(tree):
    """x is a file, a folder or nothing by turns; every request still gets a protocol answer."""
    store = tree.store

    def work(number: int) -> None:
        for step in range(150):
            try:
                if number % 3 == 0:
                    store.mkdir(["x"]) if step % 2 == 0 else store.rmdir(["x"])
                elif number % 3 == 1:
                    store_file(store, "x", b"x") if step % 2 == 0 else store.delete(["x"])
                else:
                    store.rename(["x"], ["y%d" % number]) if step % 2 == 0 else \
                        store.rename(["y%d" % number], ["x"])
            except (Exists, NotFound, NotEmpty):
                pass
            except Unsupported:
                check(not store.features.noreplace and number % 3 == 2)

    assert race_processes(RACERS, work) == ["ok"] * RACERS
    assert leftovers(tree.root) == []
