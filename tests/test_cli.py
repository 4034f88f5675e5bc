"""shelf-cli against a real shelfd: outputs, exit codes, atomic downloads, the shell."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest

from helpers import ROOT, python_env, wait_for


def cli(daemon_or_port, *args, input=None, cwd=None, env=None, timeout=60):
    port = daemon_or_port if isinstance(daemon_or_port, int) else daemon_or_port.port
    return subprocess.run([sys.executable, "-m", "cli", "--port", str(port), *args],
                          input=input, capture_output=True, cwd=cwd or str(ROOT),
                          env=env or python_env(), timeout=timeout)


def out(result) -> str:
    return result.stdout.decode("utf-8")


def err(result) -> str:
    return result.stderr.decode("utf-8")


def test_ls_table_and_json(shelfd, library):
    (library / "notes.txt").write_bytes(b"x" * 12)
    (library / "my photo.jpg").write_bytes(b"y" * 48213)
    (library / "日本語.txt").write_bytes(b"z")
    result = cli(shelfd, "ls")
    assert result.returncode == 0, err(result)
    lines = out(result).splitlines()
    assert lines[0].split() == ["NAME", "SIZE", "MODIFIED"]
    assert lines[1].startswith("my photo.jpg") and "47.1 KiB" in lines[1]
    assert lines[2].startswith("notes.txt") and "12 B" in lines[2]
    assert lines[3].startswith("日本語.txt")
    # columns line up in the terminal even with wide characters
    from common.humanize import display_width

    def column(line, text):
        return display_width(line[:line.index(text)])
    assert column(lines[1], "47.1") == column(lines[2], "12 B") == column(lines[3], "1 B")
    parsed = json.loads(out(cli(shelfd, "ls", "--json")))
    assert {item["name"]: item["size"] for item in parsed} == {
        "notes.txt": 12, "my photo.jpg": 48213, "日本語.txt": 1}
    assert all(isinstance(item["mtime"], int) for item in parsed)


def test_ls_empty(shelfd):
    result = cli(shelfd, "ls")
    assert result.returncode == 0 and "empty" in out(result)
    assert json.loads(out(cli(shelfd, "ls", "--json"))) == []


def test_put_get_round_trip_with_unicode_and_spaces(shelfd, library, tmp_path):
    source = tmp_path / "my résumé 2026.pdf"
    data = os.urandom(3_000_000)
    source.write_bytes(data)
    result = cli(shelfd, "put", str(source))
    assert result.returncode == 0, err(result)
    assert (library / "my résumé 2026.pdf").read_bytes() == data
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    result = cli(shelfd, "get", "my résumé 2026.pdf", str(downloads))
    assert result.returncode == 0, err(result)
    assert (downloads / "my résumé 2026.pdf").read_bytes() == data
    assert os.listdir(downloads) == ["my résumé 2026.pdf"]


def test_put_existing_name_exits_1(shelfd, library, tmp_path):
    (library / "video.mp4").write_bytes(b"old")
    source = tmp_path / "video.mp4"
    source.write_bytes(b"new")
    result = cli(shelfd, "put", str(source))
    assert result.returncode == 1
    assert err(result) == ("shelf-cli: video.mp4 is already in the library "
                           "(put --replace replaces it)\n")
    assert (library / "video.mp4").read_bytes() == b"old"


def test_put_several_files_in_one_session_and_as(shelfd, library, tmp_path):
    for name in ("a.txt", "b.txt", "c.txt"):
        (tmp_path / name).write_text(name)
    (library / "b.txt").write_text("taken")
    result = cli(shelfd, "put", str(tmp_path / "a.txt"), str(tmp_path / "b.txt"),
                 str(tmp_path / "c.txt"))
    assert result.returncode == 1  # b.txt exists; the others still went up
    assert (library / "a.txt").read_text() == "a.txt"
    assert (library / "c.txt").read_text() == "c.txt"
    assert "b.txt is already in the library" in err(result)
    assert cli(shelfd, "put", str(tmp_path / "a.txt"), "--as", "renamed.txt").returncode == 0
    assert (library / "renamed.txt").read_text() == "a.txt"
    assert shelfd.log().count("session started") == 2


def test_put_file_name_as_in_the_interface(shelfd, library, tmp_path):
    source = tmp_path / "local.txt"
    source.write_text("interface form")
    result = cli(shelfd, "put", str(source), "in library.txt")
    assert result.returncode == 0, err(result)
    assert (library / "in library.txt").read_text() == "interface form"
    piped = cli(shelfd, "put", "-", "piped name.txt", "--size", "3", input=b"abc")
    assert piped.returncode == 0, err(piped)
    assert (library / "piped name.txt").read_bytes() == b"abc"


def test_put_from_stdin(shelfd, library):
    result = cli(shelfd, "put", "-", "--as", "piped.txt", "--size", "11", input=b"from a pipe")
    assert result.returncode == 0, err(result)
    assert (library / "piped.txt").read_bytes() == b"from a pipe"
    short = cli(shelfd, "put", "-", "--as", "short.txt", "--size", "100", input=b"tiny")
    assert short.returncode == 6 and "input ended" in err(short)
    assert not (library / "short.txt").exists()
    missing = cli(shelfd, "put", "-", "--size", "3", input=b"abc")
    assert missing.returncode == 2 and "--as NAME" in err(missing)


def test_put_local_problems(shelfd, tmp_path):
    result = cli(shelfd, "put", str(tmp_path / "nope.txt"))
    assert result.returncode == 3 and "no such file" in err(result)
    result = cli(shelfd, "put", str(tmp_path))
    assert result.returncode == 2 and "is a folder" in err(result)


def test_get_missing_name_leaves_nothing(shelfd, tmp_path):
    result = cli(shelfd, "get", "ghost.txt", str(tmp_path / "ghost.txt"))
    assert result.returncode == 3
    assert err(result) == "shelf-cli: no such file in the library: ghost.txt\n"
    assert not [name for name in os.listdir(tmp_path) if "ghost" in name]


def test_get_refuses_to_overwrite_without_force(shelfd, library, tmp_path):
    (library / "f.txt").write_text("library")
    target = tmp_path / "f.txt"
    target.write_text("mine")
    result = cli(shelfd, "get", "f.txt", str(target))
    assert result.returncode == 1 and "--force" in err(result)
    assert target.read_text() == "mine"
    assert cli(shelfd, "get", "-f", "f.txt", str(target)).returncode == 0
    assert target.read_text() == "library"


def test_get_several_names_into_a_folder(shelfd, library, tmp_path):
    for name in ("one", "two", "three"):
        (library / name).write_text(name)
    dest = tmp_path / "dest"
    dest.mkdir()
    result = cli(shelfd, "get", "one", "two", "three", str(dest))
    assert result.returncode == 0, err(result)
    assert sorted(os.listdir(dest)) == ["one", "three", "two"]
    bad = cli(shelfd, "get", "one", "two", str(tmp_path / "notafolder"))
    assert bad.returncode == 2 and "must be a folder" in err(bad)


def test_get_default_destination_is_the_current_folder(shelfd, library, tmp_path):
    (library / "here.txt").write_text("here")
    work = tmp_path / "work"
    work.mkdir()
    assert cli(shelfd, "get", "here.txt", cwd=str(work)).returncode == 0
    assert (work / "here.txt").read_text() == "here"


def test_stat_and_hash(shelfd, library):
    (library / "s.bin").write_bytes(b"12345")
    os.utime(library / "s.bin", (1763880000, 1763880000))
    result = cli(shelfd, "stat", "s.bin")
    assert result.returncode == 0
    assert "size:     5 B (5 bytes)" in out(result)
    assert time.strftime("%Y-%m-%d %H:%M", time.localtime(1763880000)) in out(result)
    result = cli(shelfd, "hash", "s.bin")
    assert out(result) == "%s  s.bin\n" % hashlib.sha256(b"12345").hexdigest()
    assert cli(shelfd, "stat", "nope").returncode == 3


def test_cannot_connect_and_busy(daemon_factory, library):
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    result = cli(free_port, "ls")
    assert result.returncode == 4 and "cannot connect to 127.0.0.1:%d" % free_port in err(result)
    assert err(result).count("\n") == 1
    daemon = daemon_factory(library, "--max-clients", "1")
    with daemon.connect():
        busy = cli(daemon, "ls")
    assert busy.returncode == 5 and "busy" in err(busy)


def test_environment_gives_the_defaults(shelfd, library):
    (library / "env.txt").write_text("e")
    env = python_env()
    env["SHELF_PORT"] = str(shelfd.port)
    env["SHELF_HOST"] = "127.0.0.1"
    result = subprocess.run([sys.executable, "-m", "cli", "ls", "--json"], capture_output=True,
                            env=env, cwd=str(ROOT), timeout=30)
    assert json.loads(result.stdout)[0]["name"] == "env.txt"


def test_help_documents_exit_codes():
    result = subprocess.run([sys.executable, "-m", "cli", "--help"], capture_output=True,
                            text=True, env=python_env(), cwd=str(ROOT), timeout=30)
    for line in ("3    no such file", "4    cannot connect", "5    server busy",
                 "6    transfer failed", "1    already exists"):
        assert line in result.stdout


def test_verify_catches_a_corrupted_download(shelfd, library, tmp_path):
    data = os.urandom(100_000)
    (library / "v.bin").write_bytes(data)
    assert cli(shelfd, "get", "--verify", "v.bin", str(tmp_path / "ok.bin")).returncode == 0
    assert (tmp_path / "ok.bin").read_bytes() == data
    # Corrupt what the library says about the file: the bytes no longer match.
    (cache,) = os.listdir(library / ".shelf-cache")
    (library / ".shelf-cache" / cache).write_text("0" * 64 + "\n")
    result = cli(shelfd, "get", "--verify", "v.bin", str(tmp_path / "bad.bin"))
    assert result.returncode == 6 and "checksum mismatch" in err(result)
    assert not (tmp_path / "bad.bin").exists()
    assert not (tmp_path / ".bad.bin.shelf-part").exists()


def start_download(port: int, target, part) -> subprocess.Popen:
    """``shelf-cli get big.bin TARGET`` in the background, once its first bytes landed."""
    proc = subprocess.Popen([sys.executable, "-m", "cli", "--port", str(port), "get",
                             "big.bin", str(target)], stderr=subprocess.PIPE,
                            env=python_env(), cwd=str(ROOT))
    wait_for(lambda: part.exists() and part.stat().st_size > 0, interval=0.0005,
             what="the download to start")
    return proc


def test_interrupted_get_leaves_nothing_at_dest_and_continue_finishes(daemon_factory, library,
                                                                    tmp_path):
    data = os.urandom(256 << 20)
    (library / "big.bin").write_bytes(data)
    daemon = daemon_factory(library)
    target, part = tmp_path / "big.bin", tmp_path / ".big.bin.shelf-part"
    proc = start_download(daemon.port, target, part)
    proc.send_signal(signal.SIGSTOP)
    for pid in daemon.children():
        os.kill(pid, signal.SIGKILL)
    daemon.stop(signal.SIGKILL)
    proc.send_signal(signal.SIGCONT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 6, stderr
    assert b"--continue" in stderr
    assert not target.exists()
    kept = part.stat().st_size
    assert 0 < kept < len(data)

    again = daemon_factory(library)
    result = cli(again, "get", "--continue", "--verify", "big.bin", str(target))
    assert result.returncode == 0, err(result)
    assert target.read_bytes() == data
    assert not part.exists()
    assert "GET big.bin %d bytes from %d" % (len(data) - kept, kept) in again.log()


def test_ctrl_c_leaves_no_partial_file_and_exits_130(shelfd, library, tmp_path):
    (library / "big.bin").write_bytes(os.urandom(256 << 20))
    target, part = tmp_path / "big.bin", tmp_path / ".big.bin.shelf-part"
    proc = start_download(shelfd.port, target, part)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the download finished before Ctrl+C arrived")
    assert proc.returncode == 130, stderr
    assert not target.exists() and not part.exists()


def test_progress_bar_on_a_terminal_only(shelfd, tmp_path):
    source = tmp_path / "p.bin"
    source.write_bytes(os.urandom(20 << 20))
    piped = cli(shelfd, "put", str(source), "--as", "piped.bin")
    assert piped.returncode == 0 and err(piped) == ""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "cli", "--port", str(shelfd.port), "put",
                                 str(source), "--as", "tty.bin"], stderr=slave,
                                stdout=subprocess.DEVNULL, env=python_env(), cwd=str(ROOT))
        os.close(slave)
        slave = None
        shown = b""
        while True:
            ready, _, _ = select.select([master], [], [], 30)
            if not ready:
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            shown += chunk
        assert proc.wait(30) == 0
    finally:
        os.close(master)
        if slave is not None:
            os.close(slave)
    assert b"tty.bin" in shown and b"%" in shown and b"ETA" in shown


class ShellDriver:
    """Drive ``shelf-cli shell`` through pipes, one command at a time."""

    def __init__(self, port):
        self.proc = subprocess.Popen([sys.executable, "-m", "cli", "--port", str(port), "shell"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=python_env(), cwd=str(ROOT))
        self.buffers = {self.proc.stdout.fileno(): b"", self.proc.stderr.fileno(): b""}

    def send(self, line: str) -> None:
        self.proc.stdin.write(line.encode("utf-8") + b"\n")
        self.proc.stdin.flush()

    def wait_output(self, needle: str, stream: str = "stdout", timeout: float = 15) -> str:
        fd = getattr(self.proc, stream).fileno()
        deadline = time.monotonic() + timeout
        while needle.encode("utf-8") not in self.buffers[fd]:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "no %r in %s: %r" % (needle, stream, self.buffers)
            ready, _, _ = select.select(list(self.buffers), [], [], remaining)
            for ready_fd in ready:
                self.buffers[ready_fd] += os.read(ready_fd, 65536)
        return self.buffers[fd].decode("utf-8")

    def close(self) -> int:
        self.proc.stdin.close()
        code = self.proc.wait(15)
        self.proc.stdout.close()
        self.proc.stderr.close()
        return code


def test_shell_session(shelfd, library, tmp_path):
    source = tmp_path / "up load.txt"
    source.write_text("uploaded from the shell")
    shell = ShellDriver(shelfd.port)
    try:
        shell.send("ls")
        shell.wait_output("empty")
        shell.send('put "%s"' % source)
        shell.wait_output("stored up load.txt")
        shell.send('stat "up load.txt"')
        shell.wait_output("size:     23 B")
        shell.send('get "up load.txt" "%s"' % (tmp_path / "back.txt"))
        shell.wait_output("saved")
        shell.send("get ghost")
        shell.wait_output("error: no such file in the library", "stderr")
        shell.send("frobnicate")
        shell.wait_output("unknown command", "stderr")
        shell.send("help")
        shell.wait_output("Documented commands")
        # Drop the connection under the shell: it says so and reconnects.
        for pid in shelfd.sessions():
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: shelfd.sessions() == [], what="the session to die")
        shell.send("ls")
        shell.wait_output("reconnecting", "stderr")
        shell.wait_output("up load.txt ")
        shell.send("quit")
        assert shell.close() == 2  # fed from a pipe: the last failure (frobnicate) counts
    finally:
        if shell.proc.poll() is None:
            shell.proc.kill()
            shell.close()
    assert (tmp_path / "back.txt").read_text() == "uploaded from the shell"
    assert shelfd.log().count("session started") == 2  # one session, plus the reconnect


def test_shell_without_a_server_exits_4():
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = cli(port, "shell", input=b"ls\n")
    assert result.returncode == 4 and "cannot connect" in err(result)
