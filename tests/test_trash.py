"""The trash (daemon/trash.py): DELETE, TRASH, RESTORE, PURGE, expiry, races, hostile records.

Real files, the real kernel, forked processes as racing sessions; the ``tree``
fixture of test_store.py runs each test in the native and portable variants
and checks that the tree next to the library was never touched.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from daemon.store import MAX_RECORD, Exists, Invalid, IOFailure, NotFound
from daemon.trash import TRASH_FOLDER, TrashEntry
from test_store import RACERS, age, names, on_disk, race_processes, read, store_file
from test_store import tree  # noqa: F401 (the native/portable fixture, used by name)
from test_uploads import locked_elsewhere


def rewrite(root: Path, trash_id: str, **changes) -> None:
    info = root / TRASH_FOLDER / (trash_id + ".info")
    info.write_text(json.dumps({**json.loads(info.read_bytes()), **changes}))


def trash_names(root: Path) -> list[str]:
    return sorted(os.listdir(root / TRASH_FOLDER))


# -- DELETE, TRASH, RESTORE, PURGE ---------------------------------------------------------

def test_a_trashed_file_is_listed_restored_and_purged(tree):
    store, root = tree.store, tree.root
    store.mkdir(["d"])
    entry = store_file(store, "d/f", b"bytes")
    trash_id = store.trash_file(["d", "f"], owner="alice")
    assert names(store, "d") == []
    assert stat.S_IMODE(os.lstat(root / TRASH_FOLDER).st_mode) == 0o700
    record = json.loads((root / TRASH_FOLDER / (trash_id + ".info")).read_bytes())
    assert record["path"] == ["d", "f"] and record["size"] == 5 and record["owner"] == "alice"
    assert record["version"] == entry.version and abs(record["deleted"] - time.time()) < 60
    listed = store.trash_listing()
    assert listed == [TrashEntry(trash_id, ("d", "f"), 5, listed[0].deleted, "alice")]
    assert isinstance(listed[0].deleted, int)
    assert store.trash_listing(["d"]) == listed
    for other in (["e"], ["d", "f"], ["d", "f", "g"]):
        assert store.trash_listing(other) == []
    restored = store.restore(trash_id)
    assert (restored.name, restored.size) == ("f", 5)
    if store.features.xattrs:  # the same file keeps its version through the trash
        assert restored.version == entry.version
    assert store.stat(["d", "f"]) == restored
    assert read(store, "d/f", restored.version) == b"bytes"
    assert store.trash_listing() == [] and trash_names(root) == []
    trash_id = store.trash_file(["d", "f"])
    store.purge(trash_id, within=["d"])
    assert trash_names(root) == [] and names(store, "d") == []
    for call in (lambda: store.purge(trash_id), lambda: store.restore(trash_id)):
        with pytest.raises(NotFound):
            call()


def test_only_regular_files_go_to_the_trash(tree):
    store, root = tree.store, tree.root
    store.mkdir(["d"])
    os.mkfifo(root / "fifo")
    (root / "link").symlink_to(tree.outside.path / "secret.txt")
    for path in ([], ["d"], ["missing"], ["d", "missing"], ["fifo"], ["link"],
                 ["link", "x"], ["missing", "x"]):
        with pytest.raises(NotFound):
            store.trash_file(path)
    with pytest.raises(Invalid):
        store.trash_file([".shelf-trash"])
    assert store.trash_listing() == []
    assert not (root / TRASH_FOLDER).exists() or trash_names(root) == []
    assert (root / "link").is_symlink() and stat.S_ISFIFO(os.lstat(root / "fifo").st_mode)
    tree.outside.assert_untouched()


def test_restore_elsewhere_never_replaces_and_stays_within_the_root(tree):
    store, root = tree.store, tree.root
    for folder in (["alice"], ["alice", "sub"], ["bob"]):
        store.mkdir(folder)
    store_file(store, "alice/f", b"trashed")
    trash_id = store.trash_file(["alice", "f"], owner="alice")
    store_file(store, "alice/f", b"came later")
    with pytest.raises(Exists):  # the default target is taken
        store.restore(trash_id, within=["alice"])
    store.mkdir(["alice", "folder"])
    for target in (["alice", "folder"], ["alice"]):
        with pytest.raises(Exists):
            store.restore(trash_id, target, within=["alice"])
    with pytest.raises(NotFound):  # the target's folder is gone
        store.restore(trash_id, ["alice", "gone", "f"], within=["alice"])
    with pytest.raises(Invalid):
        store.restore(trash_id, ["bob", "f"], within=["alice"])
    for call in (lambda: store.restore(trash_id, within=["bob"]),  # someone else's trash
                 lambda: store.restore(trash_id, ["bob", "f"], within=["bob"]),
                 lambda: store.purge(trash_id, within=["bob"]),
                 lambda: store.restore(trash_id, within=["alice", "sub"])):
        with pytest.raises(NotFound):
            call()
    assert read(store, "alice/f") == b"came later"
    assert [e.id for e in store.trash_listing(["alice"])] == [trash_id]
    restored = store.restore(trash_id, ["alice", "sub", "back"], within=["alice"])
    assert restored.name == "back" and read(store, "alice/sub/back") == b"trashed"
    assert trash_names(root) == []


def test_the_listing_is_newest_first_whatever_the_ids(tree):
    store, root = tree.store, tree.root
    ids = []
    for number, deleted in enumerate((300.5, 100, 200)):
        store_file(store, "f%d" % number, b"x" * number)
        ids.append(store.trash_file(["f%d" % number]))
        rewrite(root, ids[-1], deleted=deleted)
    listed = store.trash_listing()
    assert [(e.id, e.path, e.size, e.deleted) for e in listed] == [
        (ids[0], ("f0",), 0, 300), (ids[2], ("f2",), 2, 200), (ids[1], ("f1",), 1, 100)]


def test_a_trashed_file_that_a_reader_holds_is_read_to_its_end(tree):
    store = tree.store
    store_file(store, "f", b"read me whole")
    with store.open_file(["f"]) as opened:
        trash_id = store.trash_file(["f"])
        store.purge(trash_id)
        assert opened.file.read() == b"read me whole"


# -- races: exactly one winner --------------------------------------------------------------

def test_racing_deletes_of_one_file_trash_it_once(tree):
    store = tree.store
    store_file(store, "f", b"once")
    results = race_processes(RACERS, lambda n: store.trash_file(["f"], owner="p%d" % n))
    assert results.count("ok") == 1 and set(results) == {"ok", "notfound"}, results
    listed = store.trash_listing()
    assert len(listed) == 1 and listed[0].owner == "p%d" % results.index("ok")
    assert trash_names(tree.root) == sorted([listed[0].id, listed[0].id + ".info"])


@pytest.mark.parametrize("targets", ["same", "different"])
def test_racing_restores_of_one_id_have_one_winner(tree, targets):
    store, root = tree.store, tree.root
    store_file(store, "f", b"one")
    trash_id = store.trash_file(["f"])
    results = race_processes(RACERS, lambda n: store.restore(
        trash_id, None if targets == "same" else ["f%d" % n]))
    assert results.count("ok") == 1 and set(results) == {"ok", "notfound"}, results
    assert names(store) == ["f" if targets == "same" else "f%d" % results.index("ok")]
    assert trash_names(root) == []


def test_restores_racing_purges_of_one_id_have_one_winner(tree):
    store, root = tree.store, tree.root
    for attempt in range(3):
        store_file(store, "f", b"x")
        trash_id = store.trash_file(["f"])
        results = race_processes(RACERS, lambda n: store.restore(trash_id) if n % 2
                                 else store.purge(trash_id))
        assert results.count("ok") == 1 and set(results) == {"ok", "notfound"}, results
        assert names(store) == (["f"] if results.index("ok") % 2 else [])
        assert trash_names(root) == []
        if names(store):
            store.delete(["f"])


def test_racing_restores_onto_one_taken_path_change_nothing(tree):
    store = tree.store
    ids = []
    for number in range(RACERS):
        store_file(store, "f", b"%d" % number)
        ids.append(store.trash_file(["f"]))
    store_file(store, "f", b"taken")
    results = race_processes(RACERS, lambda n: store.restore(ids[n]))
    assert results == ["exists"] * RACERS
    assert read(store, "f") == b"taken" and len(store.trash_listing()) == RACERS
    results = race_processes(RACERS, lambda n: store.restore(ids[n], ["g"]))
    assert results.count("ok") == 1 and set(results) == {"ok", "exists"}, results
    assert read(store, "g") == b"%d" % results.index("ok")
    assert len(store.trash_listing()) == RACERS - 1


# -- expiry -----------------------------------------------------------------------------------

def test_expiry_removes_old_entries_and_orphans_but_not_held_ones(tree):
    store, root = tree.store, tree.root
    folder = root / TRASH_FOLDER
    ids = {}
    for name in ("old", "fresh", "held"):
        store_file(store, name, name.encode())
        ids[name] = store.trash_file([name])
    rewrite(root, ids["old"], deleted=time.time() - 7200)
    rewrite(root, ids["held"], deleted=time.time() - 7200)
    store_file(store, "r", b"r")
    record_only = store.trash_file(["r"])
    os.unlink(folder / record_only)  # a crash between the two steps of a RESTORE
    age(folder / (record_only + ".info"), 120)
    (folder / "tfileonly").write_bytes(b"no record")
    os.mkfifo(folder / "tplanted")
    (folder / "tplanted.info").symlink_to(tree.outside.path / "secret.txt")
    with locked_elsewhere(folder / (ids["held"] + ".info")):  # a RESTORE in another process
        assert store.expire_trash(3600) == 2  # old, and the record without its file
        assert [e.path for e in store.trash_listing()] == [("fresh",), ("held",)]
        with pytest.raises(NotFound):
            store.restore(ids["held"])
        assert store.remove_leftovers() == []  # the record-less file is not a minute old
        assert store.expire_trash(0) == 2  # 0: all that no one holds
        assert trash_names(root) == sorted([ids["held"], ids["held"] + ".info", "tplanted",
                                            "tplanted.info"])
    assert store.restore(ids["held"]).name == "held"
    assert store.expire_trash(0) == 0
    tree.outside.assert_untouched()


# -- hostile working folders and records --------------------------------------------------------

@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["symlink", "file", "fifo"])
def test_a_planted_trash_folder_is_never_followed(tree, kind):
    store, root = tree.store, tree.root
    folder = root / TRASH_FOLDER
    {"symlink": lambda: folder.symlink_to(tree.outside.path / "b"),
     "file": lambda: folder.write_bytes(b"x"), "fifo": lambda: os.mkfifo(folder)}[kind]()
    store_file(store, "victim-0", b"mine")
    for call in (lambda: store.trash_file(["victim-0"]), lambda: store.trash_listing(),
                 lambda: store.restore("tvictim-0"), lambda: store.purge("victim-0"),
                 lambda: store.expire_trash(0)):
        with pytest.raises(IOFailure, match="not a folder"):
            call()
    assert read(store, "victim-0") == b"mine"
    assert store.remove_leftovers() == []
    tree.outside.assert_untouched()


HOSTILE_RECORDS = {
    "dotdot": {"path": ["..", "outside", "secret.txt"]},
    "absolute": {"path": ["/etc/passwd"]},
    "string": {"path": "../outside/secret.txt"},
    "too-long": {"path": ["x" * 200] * 6},
    "root": {"path": []},
    "hidden": {"path": [".shelf-uploads", "x"]},
    "control": {"path": ["a\nb"]},
    "bad-deleted": {"deleted": "yesterday"},
    "infinite": {"deleted": 1e999},
    "no-owner": {"owner": None},
}


def write_entry(root: Path, trash_id: str, record: dict | bytes | str) -> None:
    folder = root / TRASH_FOLDER
    folder.mkdir(mode=0o700, exist_ok=True)
    if isinstance(record, dict):
        record = json.dumps({"path": ["f"], "size": 3, "version": None, "deleted": 1,
                             "owner": "alice", **record}).replace("Infinity", "1e999")
    (folder / (trash_id + ".info")).write_bytes(
        record if isinstance(record, bytes) else record.encode())
    (folder / trash_id).write_bytes(b"BAD")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", [*HOSTILE_RECORDS, "not-json", "not-utf8", "a-list", "nested",
                                  "huge", "fifo", "symlink", "folder", "data-symlink",
                                  "data-fifo"])
def test_hostile_records_are_left_out_and_refused(tree, kind):
    store, root = tree.store, tree.root
    folder = root / TRASH_FOLDER
    trash_id = "t" + os.urandom(12).hex()
    raw = {"not-json": "{path: f", "not-utf8": b"\xff{}", "a-list": "[]",
           "nested": "[" * 5000 + "]" * 5000,
           "huge": json.dumps({"path": ["f"], "pad": "x" * MAX_RECORD})}
    write_entry(root, trash_id, HOSTILE_RECORDS.get(kind) or raw.get(kind) or {})
    info, data = folder / (trash_id + ".info"), folder / trash_id
    if kind in ("fifo", "symlink", "folder"):
        info.unlink()
        {"fifo": lambda: os.mkfifo(info), "folder": lambda: info.mkdir(),
         "symlink": lambda: info.symlink_to(tree.outside.path / "secret.txt")}[kind]()
    elif kind.startswith("data-"):
        data.unlink()
        if kind == "data-fifo":
            os.mkfifo(data)
        else:
            data.symlink_to(tree.outside.path / "b" / "victim-0")
    assert store.trash_listing() == []
    for call in (lambda: store.restore(trash_id), lambda: store.restore(trash_id, ["g"]),
                 lambda: store.purge(trash_id)):
        with pytest.raises(NotFound):
            call()
    assert names(store) == []
    store.expire_trash(0)
    tree.outside.assert_untouched()


def test_ids_that_are_not_ids_name_nothing(tree):
    store = tree.store
    store_file(store, "f", b"x")
    trash_id = store.trash_file(["f"])
    for bad in ("", "../" + trash_id, trash_id + ".info", "/" + trash_id, "x" * 65, "a b",
                trash_id + "\n", None):
        for call in (lambda: store.restore(bad), lambda: store.purge(bad)):
            with pytest.raises(NotFound):
                call()
    assert [e.id for e in store.trash_listing()] == [trash_id]


def test_a_well_formed_hand_written_record_is_an_entry(tree):
    """The control for the hostile records above: the same files, well formed, are listed."""
    store, root = tree.store, tree.root
    write_entry(root, "hand-made_ID-1", {"path": ["d", "f"], "deleted": 12.9})
    assert store.trash_listing() == [TrashEntry("hand-made_ID-1", ("d", "f"), 3, 12, "alice")]
    with pytest.raises(NotFound):  # its folder is gone
        store.restore("hand-made_ID-1")
    assert store.restore("hand-made_ID-1", ["g"]).size == 3
    assert read(store, "g") == b"BAD" and on_disk(root) == ["g"]
