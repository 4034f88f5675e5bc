"""The FTP front, step 1 (daemon/ftp.py): a real shelfd with --ftp-port, real clients."""

from __future__ import annotations

import ftplib
import io
import os
import re
import shutil
import socket
import subprocess

import pytest

from tests.helpers import TIMEOUT, Daemon, wait_for

ALL = ("--anonymous", "rwdm")


def ftp_port(daemon: Daemon) -> int:
    match = wait_for(lambda: re.search(r"ftp listening on [^ ]+:(\d+)", daemon.log()),
                     what="the ftp listener")
    return int(match.group(1))


@pytest.fixture
def front(tmp_path):
    daemon = Daemon(tmp_path / "lib", *ALL, "--ftp-port", "0")
    daemon.ftp_port = ftp_port(daemon)
    yield daemon
    daemon.stop()


def login(daemon: Daemon) -> ftplib.FTP:
    client = ftplib.FTP(timeout=TIMEOUT)
    client.connect("127.0.0.1", daemon.ftp_port)
    client.login("anonymous", "guest@example.com")
    return client


def retr(client: ftplib.FTP, name: str) -> bytes:
    out = io.BytesIO()
    client.retrbinary("RETR " + name, out.write)
    return out.getvalue()


def visible(folder) -> list[str]:
    return sorted(name for name in os.listdir(folder) if not name.startswith(".shelf-"))


def test_the_log_names_the_ftp_port_after_the_shelf_one(front):
    log = front.log()
    assert log.index("listening on") < log.index("ftp listening on")


def test_anonymous_stor_then_retr_is_byte_equal(front):
    data = os.urandom(300_000)
    with login(front) as client:
        assert "UTF8" in client.sendcmd("FEAT")
        assert client.storbinary("STOR a.bin", io.BytesIO(data)).startswith("226")
        assert (front.root / "a.bin").read_bytes() == data
        assert retr(client, "a.bin") == data
        assert client.size("a.bin") == len(data)
        assert client.sendcmd("MDTM a.bin").startswith("213 ")
        out = io.BytesIO()
        client.retrbinary("RETR a.bin", out.write, rest=1000)
        assert out.getvalue() == data[1000:]
    assert not os.listdir(front.root / ".shelf-uploads")


def test_stor_onto_an_existing_name_is_550_and_changes_nothing(front):
    (front.root / "a.txt").write_bytes(b"old")
    with login(front) as client:
        with pytest.raises(ftplib.error_perm, match="^550"):
            client.storbinary("STOR a.txt", io.BytesIO(b"new bytes"))
        assert retr(client, "a.txt") == b"old"
    assert (front.root / "a.txt").read_bytes() == b"old"


def test_a_client_gone_mid_stor_leaves_nothing(front):
    client = login(front)
    client.voidcmd("TYPE I")
    data_conn = client.transfercmd("STOR half.bin")
    data_conn.sendall(os.urandom(100_000))
    data_conn.close()        # the data connection ends after half the file...
    client.close()           # ...and the control connection with it: a killed client
    uploads = front.root / ".shelf-uploads"
    wait_for(lambda: not os.path.exists(uploads) or not os.listdir(uploads),
             what="the upload to be dropped")
    assert visible(front.root) == []
    with login(front) as again:
        assert again.nlst() == []


def test_listings_hide_shelf_names_and_refuse_them(front):
    (front.root / "seen.txt").write_bytes(b"x")
    (front.root / ".shelf-secret").write_bytes(b"hidden")
    with login(front) as client:
        lines = []
        client.retrlines("LIST", lines.append)
        assert len(lines) == 1 and lines[0].endswith("seen.txt")
        assert client.nlst() == ["seen.txt"]
        assert [name for name, _ in client.mlsd()] == ["seen.txt"]
        with pytest.raises(ftplib.error_perm, match="^550"):
            retr(client, ".shelf-secret")
        with pytest.raises(ftplib.error_perm, match="^550"):
            client.size(".shelf-secret")


def test_cwd_cannot_leave_the_root(front):
    (front.root / "docs").mkdir()
    with login(front) as client:
        client.cwd("..")
        assert client.pwd() == "/"
        client.cwd("docs")
        assert client.pwd() == "/docs"
        client.cwd("../../..")
        assert client.pwd() == "/"
        client.cwd("/docs")
        client.sendcmd("CDUP")
        assert client.pwd() == "/"
        with pytest.raises(ftplib.error_perm, match="^550"):
            client.cwd("/etc")


def test_dele_moves_the_file_to_the_trash(front):
    (front.root / "gone.txt").write_bytes(b"bye")
    with login(front) as client:
        client.delete("gone.txt")
        assert client.nlst() == []
    assert not (front.root / "gone.txt").exists()
    with front.connect() as conn:
        assert conn.request("TRASH") == "OK 1"
        assert conn.line().split(" ")[1:3] == ["gone.txt", "3"]


def test_mkd_and_rmd_of_empty_folders_only(front):
    with login(front) as client:
        client.mkd("box")
        assert (front.root / "box").is_dir()
        client.storbinary("STOR box/f", io.BytesIO(b"f"))
        with pytest.raises(ftplib.error_perm, match="^550"):
            client.rmd("box")
        client.delete("box/f")
        client.rmd("box")
    assert not (front.root / "box").exists()


def test_rename_never_replaces(front):
    (front.root / "a").write_bytes(b"a")
    (front.root / "b").write_bytes(b"b")
    with login(front) as client:
        with pytest.raises(ftplib.error_perm, match="^550"):
            client.rename("a", "b")
        client.rename("a", "c")
    assert (front.root / "b").read_bytes() == b"b"
    assert (front.root / "c").read_bytes() == b"a"
    assert not (front.root / "a").exists()


def test_mlsd_of_a_missing_folder_is_550(front):
    with login(front) as client:
        with pytest.raises(ftplib.error_perm, match="^550"):
            list(client.mlsd("nowhere"))


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_uploads_and_downloads(front, tmp_path):
    source = tmp_path / "up.bin"
    source.write_bytes(os.urandom(50_000))
    url = "ftp://127.0.0.1:%d/" % front.ftp_port
    subprocess.run(["curl", "-sS", "--max-time", "10", "-T", str(source), url + "up.bin"],
                   check=True, timeout=TIMEOUT + 5)
    down = subprocess.run(["curl", "-sS", "--max-time", "10", url + "up.bin"],
                          check=True, capture_output=True, timeout=TIMEOUT + 5)
    assert down.stdout == source.read_bytes()


def test_the_ftp_master_stops_with_shelfd(tmp_path):
    daemon = Daemon(tmp_path / "lib", *ALL, "--ftp-port", "0")
    port = ftp_port(daemon)
    assert daemon.stop() == 0
    with pytest.raises(OSError):
        ftplib.FTP(timeout=2).connect("127.0.0.1", port)


def test_the_ftp_master_leaves_with_a_killed_shelfd(tmp_path):
    """A master killed with SIGKILL takes the FTP master with it: the port is free again."""
    import signal
    from helpers import wait_for
    daemon = Daemon(tmp_path / "lib", *ALL, "--ftp-port", "0")
    port = daemon.ftp_port = ftp_port(daemon)
    with login(daemon) as client:  # serving, and the session over
        assert client.pwd() == "/"
    daemon.stop(signal.SIGKILL)

    def port_free() -> bool:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
            return True
    wait_for(port_free, what="the FTP port to be free")


def test_passive_ports_stay_in_the_range(tmp_path):
    daemon = Daemon(tmp_path / "lib", *ALL, "--ftp-port", "0",
                    "--ftp-passive-ports", "41200-41209")
    daemon.ftp_port = ftp_port(daemon)
    try:
        with login(daemon) as client:
            for command in ("PASV", "EPSV"):
                reply = client.sendcmd(command)
                if command == "PASV":
                    port = ftplib.parse227(reply)[1]
                else:
                    port = ftplib.parse229(reply, ("127.0.0.1", 0))[1]
                assert 41200 <= port <= 41209, reply
                with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT):
                    pass
    finally:
        daemon.stop()
