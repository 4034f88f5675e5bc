"""A shared library's races: many sessions at once on the same paths, each with one winner.

Every test starts RACERS real sessions against the real shelfd, lines their
requests up behind a barrier, and checks what PROTOCOL.md promises: exactly
one OK where one can win, EXISTS or notfound for the others, no lost or mixed
bytes, nothing left behind.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading

import pytest

from helpers import Raw

RACERS = 24
TOKEN = r"[0-9A-Za-z_-]{1,64}"


@pytest.fixture
def daemon(daemon_factory, library):
    return daemon_factory(library, "--anonymous", "rwdm", "--max-clients", "64",
                          "--max-per-ip", "64")


def race(daemon, count: int, prepare, act) -> list:
    """``prepare(index, conn)`` for each session, then ``act(index, conn)`` at once; results."""
    conns = [daemon.connect() for _ in range(count)]
    try:
        for index, conn in enumerate(conns):
            prepare(index, conn)
        barrier = threading.Barrier(count)
        results: list = [None] * count

        def run(index):
            try:
                barrier.wait(30)
                results[index] = act(index, conns[index])
            except Exception as exc:  # noqa: BLE001 - reported in the assertion
                results[index] = exc

        threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads)
        return results
    finally:
        for conn in conns:
            conn.close()


def nothing(index, conn):
    pass


def put(conn: Raw, path: str, data: bytes, replace: bool = False) -> str:
    first, final = conn.put(path, data, replace)
    assert first.startswith("OK "), first
    assert re.fullmatch(r"OK %d %s" % (len(data), TOKEN), final), final
    return final.split(" ")[2]


def no_uploads_left(library) -> bool:
    folder = library / ".shelf-uploads"
    return not folder.exists() or os.listdir(folder) == []


def test_racing_puts_of_one_new_path(daemon, library):
    payloads = [os.urandom(200_000) + bytes([index]) for index in range(RACERS)]
    with daemon.connect() as conn:
        assert conn.request("MKDIR in") == "OK"
    firsts = [None] * RACERS

    def prepare(index, conn):
        firsts[index] = conn.request("PUT in/race.bin %d" % len(payloads[index]))

    def act(index, conn):
        if not firsts[index].startswith("OK "):
            return firsts[index]
        conn.send(payloads[index])
        return conn.line()

    results = race(daemon, RACERS, prepare, act)
    winners = [index for index, result in enumerate(results)
               if isinstance(result, str) and result.startswith("OK ")]
    assert len(winners) == 1, results
    assert all(results[index] == "EXISTS" for index in range(RACERS) if index not in winners)
    assert (library / "in" / "race.bin").read_bytes() == payloads[winners[0]]
    assert no_uploads_left(library)


def test_racing_mkdirs_of_one_path(daemon, library):
    results = race(daemon, RACERS, nothing, lambda index, conn: conn.request("MKDIR new"))
    assert sorted(results) == ["EXISTS"] * (RACERS - 1) + ["OK"]
    assert (library / "new").is_dir()


def test_racing_renames_onto_one_target(daemon, library):
    for index in range(RACERS):
        (library / ("src-%02d" % index)).write_bytes(b"%d" % index)
    results = race(daemon, RACERS, nothing,
                   lambda index, conn: conn.request("RENAME src-%02d target" % index))
    assert results.count("OK") == 1 and results.count("EXISTS") == RACERS - 1, results
    winner = results.index("OK")
    assert (library / "target").read_bytes() == b"%d" % winner
    remaining = sorted(p.name for p in library.iterdir() if p.name.startswith("src-"))
    assert remaining == ["src-%02d" % index for index in range(RACERS) if index != winner]


def test_racing_renames_of_one_source(daemon, library):
    (library / "only.txt").write_bytes(b"one file")
    results = race(daemon, RACERS, nothing,
                   lambda index, conn: conn.request("RENAME only.txt moved-%02d" % index))
    assert results.count("OK") == 1, results
    assert all(r.startswith("FAIL notfound ") for r in results if r != "OK"), results
    moved = [p.name for p in library.iterdir() if p.name.startswith("moved-")]
    assert moved == ["moved-%02d" % results.index("OK")]
    assert (library / moved[0]).read_bytes() == b"one file"


def test_racing_folder_renames_onto_one_target(daemon, library):
    for index in range(RACERS):
        (library / ("dir-%02d" % index)).mkdir()
        (library / ("dir-%02d" % index) / "marker").write_bytes(b"%d" % index)
    results = race(daemon, RACERS, nothing,
                   lambda index, conn: conn.request("RENAME dir-%02d together" % index))
    assert results.count("OK") == 1 and results.count("EXISTS") == RACERS - 1, results
    assert (library / "together" / "marker").read_bytes() == b"%d" % results.index("OK")


def test_racing_deletes_of_one_file_trash_it_once(daemon, library):
    (library / "doomed.txt").write_bytes(b"doomed")
    results = race(daemon, RACERS, nothing,
                   lambda index, conn: conn.request("DELETE doomed.txt"))
    assert results.count("OK") == 1, results
    assert all(r.startswith("FAIL notfound ") for r in results if r != "OK")
    with daemon.connect() as conn:
        assert conn.request("TRASH") == "OK 1"
        assert conn.line().split(" ")[1:3] == ["doomed.txt", "6"]


def test_racing_restores_of_one_id(daemon, library):
    with daemon.connect() as conn:
        put(conn, "back.txt", b"come back")
        assert conn.request("DELETE back.txt") == "OK"
        assert conn.request("TRASH") == "OK 1"
        trash_id = conn.line().split(" ")[0]
    results = race(daemon, RACERS, nothing,
                   lambda index, conn: conn.request("RESTORE " + trash_id))
    winners = [r for r in results if r.startswith("OK ")]
    assert len(winners) == 1, results
    assert all(r == "EXISTS" or r.startswith("FAIL notfound ") for r in results
               if not r.startswith("OK ")), results
    assert (library / "back.txt").read_bytes() == b"come back"
    with daemon.connect() as conn:
        assert conn.request("TRASH") == "EMPTY"


def test_restore_and_purge_of_one_id(daemon, library):
    with daemon.connect() as conn:
        put(conn, "x.txt", b"x")
        assert conn.request("DELETE x.txt") == "OK"
        assert conn.request("TRASH") == "OK 1"
        trash_id = conn.line().split(" ")[0]
    results = race(daemon, 2 * (RACERS // 2), nothing,
                   lambda index, conn: conn.request(("RESTORE " if index % 2 else "PURGE ")
                                                    + trash_id))
    successes = [r for r in results if r == "OK" or r.startswith("OK ")]
    assert len(successes) == 1, results
    restored = successes[0] != "OK"
    assert (library / "x.txt").exists() == restored


def test_put_rename_and_restore_racing_for_one_path(daemon, library):
    """Three ways to make a path appear, eight sessions each: one winner in all."""
    third = RACERS // 3
    with daemon.connect() as conn:
        for index in range(third):
            put(conn, "renamed-%02d" % index, b"rename %d" % index)
            put(conn, "trashed-%02d" % index, b"restore %d" % index)
            assert conn.request("DELETE trashed-%02d" % index) == "OK"
        assert conn.request("TRASH") == "OK %d" % third
        ids = {}
        for _ in range(third):
            trash_id, path, _, _ = conn.line().split(" ")
            ids[int(path.rsplit("-", 1)[1])] = trash_id
    payloads = {index: b"put %d" % index for index in range(third)}
    firsts = {}

    def prepare(index, conn):
        if index < third:
            firsts[index] = conn.request("PUT prize %d" % len(payloads[index]))

    def act(index, conn):
        if index < third:
            if not firsts[index].startswith("OK "):
                return firsts[index]
            conn.send(payloads[index])
            return conn.line()
        if index < 2 * third:
            return conn.request("RENAME renamed-%02d prize" % (index - third))
        return conn.request("RESTORE %s prize" % ids[index - 2 * third])

    results = race(daemon, 3 * third, prepare, act)
    winners = [index for index, result in enumerate(results) if result.startswith("OK")]
    assert len(winners) == 1, results
    assert all(results[index] == "EXISTS" for index in range(3 * third) if index not in winners)
    winner = winners[0]
    expected = (payloads[winner] if winner < third else
                b"rename %d" % (winner - third) if winner < 2 * third else
                b"restore %d" % (winner - 2 * third))
    assert (library / "prize").read_bytes() == expected
    assert no_uploads_left(library)


def test_racing_replaces_never_mix_bytes(daemon, library):
    """Writers replace one path while readers read it: every read is one whole upload."""
    payloads = [bytes([index]) * 300_000 for index in range(RACERS)]
    digests = {hashlib.sha256(p).hexdigest() for p in payloads} | {
        hashlib.sha256(b"seed").hexdigest()}
    with daemon.connect() as conn:
        put(conn, "shared.bin", b"seed")

    def act(index, conn):
        if index % 2:
            return put(conn, "shared.bin", payloads[index], replace=True)
        seen = []
        for _ in range(5):
            reply, data = conn.get("shared.bin")
            seen.append((reply.split(" ")[2], hashlib.sha256(data).hexdigest()))
        return seen

    results = race(daemon, RACERS, nothing, act)
    assert not [r for r in results if isinstance(r, Exception)], results
    versions = {}
    for index, result in enumerate(results):
        if index % 2 == 0:
            for version, digest in result:
                assert digest in digests
                assert versions.setdefault(version, digest) == digest  # one version, one content
    final = (library / "shared.bin").read_bytes()
    assert final in payloads
    assert no_uploads_left(library)
