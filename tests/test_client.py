"""The client library against the real shelfd."""

from __future__ import annotations

import hashlib
import io
import os
import socket

import pytest

from common.client import (Cancelled, CannotConnect, Changed, Client, ConnectionLost, Exists,
                           NotEmpty, NotFound, RemoteError, ServerBusy)
from common.protocol import InvalidName
from helpers import wait_for


def connect(daemon, **kwargs) -> Client:
    return Client("127.0.0.1", daemon.port, timeout=10, **kwargs)


def test_list_stat_hash_get_put(shelfd, library, tmp_path):
    data = os.urandom(1_500_000)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    with connect(shelfd) as client:
        assert client.list() == []
        with open(source, "rb") as handle:
            seen = []
            stored = client.put("my file ✓.bin", handle, len(data), progress=seen.append)
        assert stored.size == len(data) and stored.version
        assert seen[-1] == len(data)
        (entry,) = client.list()
        assert (entry.name, entry.size, entry.version) == ("my file ✓.bin", len(data),
                                                           stored.version)
        assert client.stat("my file ✓.bin").size == len(data)
        assert client.hash("my file ✓.bin") == hashlib.sha256(data).hexdigest()
        sink = io.BytesIO()
        assert client.get("my file ✓.bin", sink) == (len(data), stored.version)
        assert sink.getvalue() == data
        tail = io.BytesIO()
        client.get("my file ✓.bin", tail, offset=1_000_000, version=stored.version)
        assert tail.getvalue() == data[1_000_000:]
        client.noop()
    assert (library / "my file ✓.bin").read_bytes() == data


def test_put_from_a_stream(shelfd, library):
    with connect(shelfd) as client:
        client.put("stream.txt", io.BytesIO(b"streamed bytes"), 14)
    assert (library / "stream.txt").read_bytes() == b"streamed bytes"


def test_typed_errors(shelfd, library):
    (library / "here.txt").write_text("x")
    with connect(shelfd) as client:
        with pytest.raises(Exists):
            client.put("here.txt", io.BytesIO(b"y"), 1)
        with pytest.raises(NotFound):
            client.get("missing.txt", io.BytesIO())
        with pytest.raises(NotFound):
            client.stat("missing.txt")
        with pytest.raises(RemoteError, match="offset past the end"):
            client.get("here.txt", io.BytesIO(), offset=5)
        with pytest.raises(InvalidName):
            client.stat("../etc/passwd")
        client.noop()  # the session survived all of that


def test_server_busy(daemon_factory, library):
    daemon = daemon_factory(library, "--max-clients", "1")
    with connect(daemon):
        with pytest.raises(ServerBusy, match="busy"):
            connect(daemon)


def test_cannot_connect():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(CannotConnect, match="cannot connect"):
        Client("127.0.0.1", port, timeout=5)


def test_a_silent_server_times_out():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with pytest.raises(CannotConnect, match="sent no greeting within 0.5 s"):
            Client("127.0.0.1", server.getsockname()[1], timeout=0.5)


def test_a_plain_client_at_a_tls_server_is_told_to_use_shelfs(daemon_factory, library,
                                                              tmp_path):
    daemon = daemon_factory(library, "--tls", "--state-dir", str(tmp_path / "state"))
    with pytest.raises(CannotConnect, match="if it is a TLS server, use shelfs://127.0.0.1:%d"
                       % daemon.port):
        Client("127.0.0.1", daemon.port, timeout=1.0)


def test_cancelled_download_raises_and_closes(shelfd, library):
    (library / "big.bin").write_bytes(os.urandom(8 << 20))
    client = connect(shelfd)
    calls = []
    with pytest.raises(Cancelled):
        client.get("big.bin", io.BytesIO(), progress=calls.append, cancel=lambda: len(calls) >= 1)
    assert client.closed
    client.close()


def test_cancelled_upload_leaves_nothing(shelfd, library, tmp_path):
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(200 << 20))
    client = connect(shelfd)
    calls = []
    with open(source, "rb") as handle, pytest.raises(Cancelled):
        client.put("big.bin", handle, 200 << 20, progress=calls.append,
                   cancel=lambda: len(calls) >= 1)
    client.close()
    wait_for(lambda: [n for n in os.listdir(library) if not n.startswith(".")] == [],
             what="the cut upload not to appear")


def test_connection_lost_when_the_server_dies(daemon_factory, library):
    import signal
    (library / "big.bin").write_bytes(os.urandom(64 << 20))
    daemon = daemon_factory(library)
    client = connect(daemon)

    killed = []

    def kill_everything(done):
        if done >= (1 << 20) and not killed:  # once: later calls would race the reaper
            for pid in daemon.sessions():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            killed.append(done)

    with open(os.devnull, "wb") as sink, pytest.raises(ConnectionLost):
        client.get("big.bin", sink, progress=kill_everything)
    client.close()
    assert killed


def test_folders_versions_trash_and_space(daemon_factory, library):
    daemon = daemon_factory(library, "--anonymous", "rwdm")
    with connect(daemon) as client:
        assert {"folders", "trash", "resume"} <= client.features
        client.mkdir("photos")
        with pytest.raises(Exists):
            client.mkdir("photos")
        first = client.put("photos/a.txt", io.BytesIO(b"one"), 3)
        (folder,) = client.list()
        assert folder.is_folder and folder.name == "photos" and folder.version is None
        assert client.stat("photos").is_folder
        second = client.put("photos/a.txt", io.BytesIO(b"two"), 3, replace=True)
        assert second.version != first.version
        with pytest.raises(Changed):
            client.get("photos/a.txt", io.BytesIO(), offset=1, version=first.version)
        with pytest.raises(NotEmpty):
            client.rmdir("photos")
        client.rename("photos/a.txt", "b.txt")
        client.delete("b.txt")
        (trashed,) = client.trash()
        assert trashed.path == "b.txt" and trashed.size == 3
        assert client.restore(trashed.id, "photos/back.txt")
        assert (library / "photos" / "back.txt").read_bytes() == b"two"
        free, total = client.space()
        assert 0 < free <= total


def test_a_cut_upload_resumes_from_its_token(shelfd, library):
    data = os.urandom(3 << 20)
    tokens = []

    class Cut(Exception):
        pass

    def cut(done):
        if done >= 1 << 20:
            raise Cut()

    client = connect(shelfd)
    with pytest.raises(Cut):
        client.put("r.bin", io.BytesIO(data), len(data), progress=cut, on_token=tokens.append)
    client.close()
    (token,) = tokens
    with connect(shelfd) as again:
        stored = wait_for(lambda: resume_or_none(again, token, data), what="the kept upload")
        assert stored.size == len(data)
    assert (library / "r.bin").read_bytes() == data


def resume_or_none(client, token, data):
    """RESUME once the server has kept the cut upload (its session ends first)."""
    try:
        return client.resume(token, io.BytesIO(data), len(data), path="r.bin")
    except NotFound:
        return None
