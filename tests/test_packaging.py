"""The packaged executables: built once into a temporary folder, then used for real."""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from helpers import ROOT, Raw, wait_for

pytestmark = pytest.mark.packaging

pytest.importorskip("PyInstaller", reason="PyInstaller is not installed (pip install .[dist])")


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist")
    work = tmp_path_factory.mktemp("build")
    result = subprocess.run([sys.executable, str(ROOT / "packaging" / "build.py"),
                             "--dist", str(folder), "--work", str(work)],
                            capture_output=True, text=True, cwd=str(ROOT), timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    return folder


def mei_folders() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "_MEI*")))


def test_all_three_and_their_checksums(dist):
    names = sorted(os.listdir(dist))
    assert names == ["SHA256SUMS", "shelf", "shelf-cli", "shelfd"]
    sums = (dist / "SHA256SUMS").read_text().splitlines()
    assert [line.split()[1] for line in sums] == ["shelfd", "shelf-cli", "shelf"]
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=str(dist),
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout
    from common import __version__
    for name in ("shelfd", "shelf-cli", "shelf"):
        version = subprocess.run([str(dist / name), "--version"], capture_output=True,
                                 text=True, timeout=60)
        assert version.stdout.strip() == "%s %s" % (name, __version__)


def test_packaged_shelfd_serves_put_and_get(dist, tmp_path):
    library = tmp_path / "library"
    library.mkdir()
    log = tmp_path / "shelfd.log"
    proc = subprocess.Popen([str(dist / "shelfd"), "--root", str(library), "--port", "0",
                             "--log-file", str(log)], stdin=subprocess.DEVNULL)
    try:
        port = wait_for(lambda: log.exists() and re.search(r"listening on \S+:(\d+)",
                                                           log.read_text()), what="listening")
        port = int(port.group(1))
        data = os.urandom(5 << 20)
        with Raw(port) as conn:
            assert conn.put("packed.bin", data)[1].startswith("OK %d " % len(data))
            reply, body = conn.get("packed.bin")
            assert reply.startswith("OK %d " % len(data)) and body == data
        result = subprocess.run([str(dist / "shelf-cli"), "--port", str(port), "ls", "--json"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and '"packed.bin"' in result.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_packaged_shelfd_with_accounts_and_tls(dist, tmp_path):
    """argon2 and cryptography made it into the one-file executables (imported late)."""
    library = tmp_path / "library"
    library.mkdir()
    users = tmp_path / "users"
    added = subprocess.run([str(dist / "shelfd"), "user", "add", "alice", "--permissions", "rw",
                            "--users", str(users)], input=b"correct horse\n",
                           capture_output=True, timeout=60)
    assert added.returncode == 0, added.stderr
    log = tmp_path / "shelfd.log"
    proc = subprocess.Popen([str(dist / "shelfd"), "--root", str(library), "--port", "0",
                             "--users", str(users), "--tls", "--state-dir", str(tmp_path / "state"),
                             "--log-file", str(log)], stdin=subprocess.DEVNULL)
    try:
        found = wait_for(lambda: log.exists() and re.search(
            r"tls certificate (sha256:[0-9a-f]{64})[\s\S]*listening on \S+:(\d+) \(tls\)",
            log.read_text()), what="listening with TLS")
        fingerprint, port = found.group(1), int(found.group(2))
        env = dict(os.environ, SHELF_PASSWORD="correct horse", HOME=str(tmp_path))
        put = subprocess.run([str(dist / "shelf-cli"), "--server",
                              "shelfs://alice@127.0.0.1:%d" % port, "--trust", fingerprint,
                              "put", str(users), "users-copy"],
                             capture_output=True, text=True, timeout=60, env=env)
        assert put.returncode == 0, put.stderr
        assert (library / "users-copy").read_bytes() == users.read_bytes()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_packaged_shelfd_daemon_mode(dist, tmp_path):
    library = tmp_path / "library"
    library.mkdir()
    (library / "mine.txt").write_text("mine")
    pidfile = tmp_path / "shelfd.pid"
    log = tmp_path / "shelfd.log"
    before = mei_folders()
    # Relative paths, as an admin types them: they must mean what they meant here,
    # though the packaged daemon re-executes itself and ends up in /.
    start = [str(dist / "shelfd"), "--root", "library", "--port", "0", "--daemon",
             "--pidfile", "shelfd.pid", "--log-file", "shelfd.log"]
    result = subprocess.run(start, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    pid = int(pidfile.read_text())
    try:
        port = int(re.search(r"listening on \S+:(\d+)", log.read_text()).group(1))
        with Raw(port) as conn:
            assert conn.request("LIST") == "OK 1"  # our library, not the system's /lib
            assert conn.line().startswith("mine.txt ")
        os.kill(pid, signal.SIGHUP)
        wait_for(lambda: "no setting changed" in log.read_text(), what="the reload")
        assert "after a restart" not in log.read_text()
        again = subprocess.run(start, capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert again.returncode == 1 and "already running (pid %d)" % pid in again.stderr
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not os.path.exists("/proc/%d" % pid) or
             open("/proc/%d/stat" % pid).read().split(")")[-1].split()[0] == "Z",
             timeout=15, what="the packaged daemon to exit")
    wait_for(lambda: not pidfile.exists(), what="the PID file to go")
    wait_for(lambda: mei_folders() <= before, what="the unpacked _MEI folder to be removed")


def test_packaged_gui_opens_a_window_and_exits_when_closed(dist, tmp_path):
    if not os.environ.get("DISPLAY") or not shutil.which("xdotool"):
        pytest.skip("needs an X display and xdotool")
    # An explicit environment for every child: a Tk opened on another display in
    # this process (tests/test_gui_x11.py) leaves the C-level DISPLAY changed.
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "config"),
               XDG_STATE_HOME=str(tmp_path / "state"))
    proc = subprocess.Popen([str(dist / "shelf")], env=env, stdin=subprocess.DEVNULL)
    try:
        def window():
            found = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", "^Shelf$"],
                                   capture_output=True, text=True, timeout=10, env=env)
            return found.stdout.split()
        windows = wait_for(window, timeout=30, interval=0.1, what="the Shelf window")
        started = time.monotonic()
        # Ctrl+Q, as a person would quit (there is no window manager to ask).
        subprocess.run(["xdotool", "windowfocus", "--sync", windows[0], "key", "--window",
                        windows[0], "ctrl+q"], timeout=10, env=env)
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0
    assert time.monotonic() - started < 30


def test_desktop_file_is_valid():
    if not shutil.which("desktop-file-validate"):
        pytest.skip("desktop-file-validate is not installed (desktop-file-utils)")
    result = subprocess.run(["desktop-file-validate",
                             str(ROOT / "packaging" / "linux" / "shelf.desktop")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    for size in (48, 128, 256):
        assert (ROOT / "packaging" / "linux" / "icons" / ("shelf-%d.png" % size)).exists()
    assert (ROOT / "packaging" / "linux" / "icons" / "shelf.svg").exists()
