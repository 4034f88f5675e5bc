"""shelf-cli where 1.0 broke in real use (issue 11): interrupted shell commands,
resumes that would splice two versions, slow checksums, unclear messages and
two downloads racing for one destination. All against a real shelfd."""

from __future__ import annotations

import fcntl
import os
import select
import shutil
import signal
import subprocess
import sys
import termios
import time

import pytest

from helpers import ROOT, python_env, wait_for
from test_cli import ShellDriver, cli, err, out, start_download

MiB = 1 << 20


def sparse_file(path, size: int) -> None:
    """``size`` zero bytes that take no disk space (and read slower than real ones)."""
    with open(path, "wb") as handle:
        handle.truncate(size)


def session_pids(daemon) -> list[int]:
    return daemon.sessions()


def read_chars(pid: int) -> int:
    """Bytes the process has read so far (/proc/PID/io rchar); 0 once it is gone."""
    try:
        with open("/proc/%d/io" % pid) as handle:
            for line in handle:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def cut_download(port: int, name: str, target) -> None:
    """Start ``get NAME TARGET`` and kill it once bytes landed: a download cut
    the hard way (no clean-up), leaving its part file and record behind."""
    part = target.parent / (".%s.shelf-part" % target.name)
    proc = start_download_of(port, name, target, part)
    proc.kill()
    proc.communicate(timeout=30)
    if target.exists():
        pytest.skip("the download finished before it could be cut")
    assert part.stat().st_size > 0


def start_download_of(port: int, name: str, target, part, *options: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "cli", "--port", str(port), "get", *options,
                             name, str(target)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=python_env(), cwd=str(ROOT))
    wait_for(lambda: part.exists() and part.stat().st_size > 0, interval=0.0005,
             what="the download to start")
    return proc


# -- 1. Ctrl+C in the shell closes the session ------------------------------------

class PtyShell:
    """``shelf-cli shell`` on a terminal of its own, as a person runs it: Ctrl+C
    typed into the terminal becomes SIGINT for the shell, through the tty driver."""

    def __init__(self, port: int, home):
        master, slave = os.openpty()
        env = python_env()
        env.update(HOME=str(home), XDG_STATE_HOME=str(home / "state"), TERM="dumb",
                   COLUMNS="100", LINES="30")

        def controlling_terminal():  # in the child, after setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cli", "--port", str(port), "shell"], stdin=slave,
                stdout=slave, stderr=slave, env=env, cwd=str(ROOT), start_new_session=True,
                preexec_fn=controlling_terminal)
        finally:
            os.close(slave)
        self.master = master
        self.output = b""

    def type(self, text: str) -> None:
        os.write(self.master, text.encode("utf-8"))

    def wait_output(self, needle: str, timeout: float = 15.0) -> None:
        """Wait until ``needle`` shows in what the terminal received since the last wait."""
        deadline = time.monotonic() + timeout
        while needle.encode("utf-8") not in self.output:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "no %r on the terminal within %.0f s; it shows: %r" % (
                needle, timeout, self.output[-2000:])
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # EIO: the shell closed the terminal
                    chunk = b""
                assert chunk, "the shell ended: %r" % self.output[-2000:]
                self.output += chunk
        self.seen, self.output = self.output, self.output[self.output.index(
            needle.encode("utf-8")) + len(needle):]

    def close(self) -> int:
        try:
            if self.proc.poll() is None:
                self.type("quit\r")
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
        finally:
            os.close(self.master)
        return self.proc.returncode


def interrupt(shell: PtyShell) -> None:
    """Ctrl+C typed while the shell is held still: it acts on it when let go."""
    shell.type("\x03")
    os.kill(shell.proc.pid, signal.SIGCONT)


def test_ctrl_c_in_a_shell_get_leaves_the_next_command_working(daemon_factory, library,
                                                               tmp_path):
    size = 512 * MiB
    sparse_file(library / "big.bin", size)
    daemon = daemon_factory(library)
    target, part = tmp_path / "big.bin", tmp_path / ".big.bin.shelf-part"
    shell = PtyShell(daemon.port, tmp_path)
    try:
        shell.wait_output("> ")
        shell.type("get big.bin %s\r" % target)
        wait_for(lambda: part.exists() and part.stat().st_size > 0, interval=0.0005,
                 what="the download to start")
        os.kill(shell.proc.pid, signal.SIGSTOP)
        if target.exists() or part.stat().st_size >= size:
            os.kill(shell.proc.pid, signal.SIGCONT)
            pytest.skip("the download finished before Ctrl+C")
        interrupt(shell)
        shell.wait_output("interrupted")
        # The server still has most of the file to send on the old session: a
        # shell that kept it would now read file bytes as the STAT reply.
        shell.type("stat big.bin\r")
        shell.wait_output("size:", timeout=10)
        assert "%d bytes" % size in shell.seen.decode("utf-8", "replace")
        shell.type("ls\r")
        shell.wait_output("big.bin", timeout=10)
        assert b"UTF-8" not in shell.seen and b"Traceback" not in shell.seen
    finally:
        code = shell.close()
    assert code == 0
    assert not target.exists() and not part.exists()
    assert daemon.log().count("session started") == 2  # the first, and one after Ctrl+C


def test_ctrl_c_in_a_shell_put_does_not_hang_the_next_command(daemon_factory, library,
                                                              tmp_path):
    source = tmp_path / "upload.bin"
    sparse_file(source, 512 * MiB)
    daemon = daemon_factory(library)

    def upload_under_way() -> bool:
        # The server's upload temporary, wherever it keeps it, holds file bytes
        # (not only its record of the upload: the client has the token by then).
        return any(os.path.getsize(os.path.join(folder, name)) > 0
                   for folder, _, names in os.walk(library) for name in names
                   if not name.endswith(".info"))

    shell = PtyShell(daemon.port, tmp_path)
    try:
        shell.wait_output("> ")
        shell.type("put %s\r" % source)
        wait_for(upload_under_way, interval=0.0005, what="the upload to start")
        os.kill(shell.proc.pid, signal.SIGSTOP)
        if (library / "upload.bin").exists():
            os.kill(shell.proc.pid, signal.SIGCONT)
            pytest.skip("the upload finished before Ctrl+C")
        interrupt(shell)
        shell.wait_output("interrupted")
        # Protocol 2 keeps the cut upload's bytes: the shell says how to go on.
        assert b"continue with: put --continue" in shell.seen
        # 1.0 sent this LIST into the upload's bytes and waited 30 s for a reply.
        started = time.monotonic()
        shell.type("ls\r")
        shell.wait_output("(the library is empty)", timeout=10)
        assert time.monotonic() - started < 10
        assert b"Traceback" not in shell.seen
    finally:
        code = shell.close()
    assert code == 0
    # Nothing of the cut upload shows in the library (the server keeps its bytes
    # hidden, for a RESUME).
    assert [name for name in os.listdir(library) if not name.startswith(".")] == []


# -- 2. --continue resumes only the same version ------------------------------------

def test_continue_refuses_when_the_library_file_was_replaced(shelfd, library, tmp_path):
    size = 256 * MiB
    original = library / "big.bin"
    sparse_file(original, size)
    os.utime(original, (1763880000, 1763880000))
    target, part = tmp_path / "big.bin", tmp_path / ".big.bin.shelf-part"
    record = tmp_path / ".big.bin.shelf-part.json"
    cut_download(shelfd.port, "big.bin", target)
    kept = part.stat().st_size
    assert record.exists()

    # Replaced by a file of the same size (another version: different bytes
    # from the first one on), written later.
    replacement = library / "big.bin.new"
    sparse_file(replacement, size)
    with open(replacement, "r+b") as handle:
        handle.write(b"\xff" * 4096)
    os.utime(replacement, (1763880100, 1763880100))
    os.replace(replacement, original)

    refused = cli(shelfd, "get", "--continue", "big.bin", str(target))
    assert refused.returncode == 6, err(refused)
    assert err(refused).count("\n") == 1
    assert "cannot resume %s" % target in err(refused)
    assert "run without --continue to start over" in err(refused)
    assert not target.exists()
    assert part.stat().st_size == kept  # nothing thrown away without being asked

    again = cli(shelfd, "get", "big.bin", str(target))  # the user asks to start over
    assert again.returncode == 0, err(again)
    with open(target, "rb") as handle:
        assert handle.read(4097) == b"\xff" * 4096 + b"\0"
    assert target.stat().st_size == size
    assert not part.exists() and not record.exists()


def test_continue_refuses_a_part_file_of_unknown_origin(shelfd, library, tmp_path):
    (library / "f.bin").write_bytes(b"library bytes" * 1000)
    part = tmp_path / ".f.bin.shelf-part"
    part.write_bytes(b"who knows")  # left by 1.0, which kept no record
    result = cli(shelfd, "get", "--continue", "f.bin", str(tmp_path / "f.bin"))
    assert result.returncode == 6
    assert "no record of which version of f.bin" in err(result)
    assert part.read_bytes() == b"who knows"


# -- 3. --verify: a slow checksum is not a stall ----------------------------------------

def complete_part_file(port: int, library, tmp_path, size: int):
    """A download of a ``size``-byte file whose bytes are all in, not yet checked:
    a cut download's part file and record, completed (the file is all zeros)."""
    sparse_file(library / "huge.bin", size)
    target, part = tmp_path / "huge.bin", tmp_path / ".huge.bin.shelf-part"
    cut_download(port, "huge.bin", target)
    with open(part, "r+b") as handle:
        handle.truncate(size)
    return target, part


def test_verify_waits_for_a_hash_slower_than_the_reply_timeout(shelfd, library, tmp_path):
    size = 1024 * MiB  # the server takes well over a second to hash it
    target, part = complete_part_file(shelfd.port, library, tmp_path, size)
    result = cli(shelfd, "--timeout", "0.5", "get", "--continue", "--verify", "huge.bin",
                 str(target), timeout=180)
    assert result.returncode == 0, err(result)
    assert target.stat().st_size == size
    assert not part.exists()


def test_verify_timeout_keeps_the_complete_download(shelfd, library, tmp_path):
    size = 128 * MiB
    target, part = complete_part_file(shelfd.port, library, tmp_path, size)
    wait_for(lambda: session_pids(shelfd) == [], what="the cut session to end")
    proc = subprocess.Popen([sys.executable, "-m", "cli", "--port", str(shelfd.port),
                             "--timeout", "0.5", "get", "--continue", "--verify", "huge.bin",
                             str(target)], stderr=subprocess.PIPE, env=python_env(),
                            cwd=str(ROOT))
    stopped = []
    try:
        (session,) = wait_for(lambda: session_pids(shelfd), what="the session")
        # Hold the server still in the middle of its HASH: no answer will come.
        wait_for(lambda: read_chars(session) > 16 * MiB or proc.poll() is not None,
                 interval=0.0005, what="the server to start hashing")
        if proc.poll() is not None:
            pytest.skip("the server answered before it could be stopped")
        os.kill(session, signal.SIGSTOP)
        stopped.append(session)
        _, stderr = proc.communicate(timeout=60)
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    message = stderr.decode("utf-8")
    assert proc.returncode == 6, message
    assert message.count("\n") == 1
    assert "all %d bytes arrived" % size in message and "kept in %s" % part in message
    assert "--continue --verify" in message
    assert part.stat().st_size == size and not target.exists()

    finish = cli(shelfd, "get", "--continue", "--verify", "huge.bin", str(target))
    assert finish.returncode == 0, err(finish)
    assert target.stat().st_size == size and not part.exists()


# -- 4. messages -----------------------------------------------------------------------------

def private_mount_available() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--mount", "--map-root-user", "sh", "-c",
                            "mount -t tmpfs none /mnt"], capture_output=True, timeout=30)
    return probe.returncode == 0


needs_private_mount = pytest.mark.skipif(not private_mount_available(),
                                         reason="needs unshare --mount --map-root-user")


def cli_over_mount(port: int, mount: str, folder, *args: str):
    """shelf-cli in a mount namespace of its own where ``folder`` is a fresh
    tmpfs mounted with ``mount`` options; prints the folder's files after."""
    script = ('mount -t tmpfs -o %s none "$0" || exit 99; "$@"; code=$?; ls -A "$0"; '
              'exit $code' % mount)
    return subprocess.run(["unshare", "--mount", "--map-root-user", "sh", "-c", script,
                           str(folder), sys.executable, "-m", "cli", "--port", str(port),
                           *args], capture_output=True, env=python_env(), cwd=str(ROOT),
                          timeout=60)


@needs_private_mount
def test_read_only_destination_names_the_path(shelfd, library, tmp_path):
    (library / "f.txt").write_text("some text")
    folder = tmp_path / "ro"
    folder.mkdir()
    result = cli_over_mount(shelfd.port, "ro", folder, "get", "f.txt", str(folder / "f.txt"))
    assert result.returncode == 6, err(result)
    assert err(result) == "shelf-cli: cannot write %s: read-only file system (in %s)\n" % (
        folder / "f.txt", folder)


@needs_private_mount
def test_full_disk_names_the_path_and_leaves_nothing(shelfd, library, tmp_path):
    (library / "big.bin").write_bytes(os.urandom(4 * MiB))
    folder = tmp_path / "small"
    folder.mkdir()
    result = cli_over_mount(shelfd.port, "size=1m", folder, "get", "big.bin",
                            str(folder / "big.bin"))
    assert result.returncode == 6, err(result)
    assert err(result) == "shelf-cli: cannot write %s: no space left on device\n" % (
        folder / "big.bin")
    assert out(result) == ""  # the folder is empty: no part file, no record


def test_a_batch_names_the_missing_file(shelfd, library, tmp_path):
    (library / "a").write_text("a")
    (library / "c").write_text("c")
    result = cli(shelfd, "get", "a", "b", "c", str(tmp_path))
    assert result.returncode == 3
    assert "shelf-cli: no such file in the library: b\n" in err(result)
    assert (tmp_path / "a").read_text() == "a" and (tmp_path / "c").read_text() == "c"


def test_ls_into_a_closed_pipe_exits_quietly(shelfd, library):
    for number in range(3000):
        (library / ("a rather long file name, number %05d.txt" % number)).write_text("x")
    proc = subprocess.Popen([sys.executable, "-m", "cli", "--port", str(shelfd.port), "ls"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=python_env(),
                            cwd=str(ROOT))
    assert proc.stdout.readline().split() == [b"NAME", b"SIZE", b"MODIFIED"]
    proc.stdout.close()  # `| head -1`: the reader is gone, most of the listing unwritten
    stderr = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(30) == 0
    assert stderr == b""


def test_a_port_out_of_range_is_a_usage_error(shelfd):
    result = cli(99999, "ls")
    assert result.returncode == 2
    assert err(result).startswith("usage: shelf-cli")
    assert "port 99999 is out of range" in err(result)
    env = python_env()
    env["SHELF_PORT"] = "70000"
    result = subprocess.run([sys.executable, "-m", "cli", "ls"], capture_output=True, env=env,
                            cwd=str(ROOT), timeout=30)
    assert result.returncode == 2 and "SHELF_PORT" in err(result)


def test_a_shell_fed_from_a_pipe_exits_with_its_failure(shelfd, library):
    (library / "here.txt").write_text("x")
    assert cli(shelfd, "shell", input=b"stat nope\n").returncode == 3
    assert cli(shelfd, "shell", input=b"stat nope\nls\n").returncode == 3  # any failure
    assert cli(shelfd, "shell", input=b"stat nope\nfrobnicate\n").returncode == 2  # the last
    clean = cli(shelfd, "shell", input=b"stat here.txt\nls\n")
    assert clean.returncode == 0, err(clean)


def test_shell_get_takes_the_get_options(shelfd, library, tmp_path):
    (library / "f.txt").write_text("from the library")
    (library / "g.txt").write_text("g")
    target = tmp_path / "f.txt"
    target.write_text("mine")
    shell = ShellDriver(shelfd.port)
    try:
        shell.send('get f.txt "%s"' % target)
        shell.wait_output("--force", "stderr")
        shell.send('get --force --verify f.txt "%s"' % target)
        shell.wait_output("saved %s" % target)
        shell.send('get f.txt g.txt "%s"' % tmp_path)  # several names into a folder
        shell.wait_output("saved %s" % (tmp_path / "g.txt"))
        shell.send("get --frobnicate f.txt")
        shell.wait_output("unrecognized arguments", "stderr")
        shell.send("quit")
        assert shell.close() == 2  # the last failure: the bad option
    finally:
        if shell.proc.poll() is None:
            shell.proc.kill()
            shell.close()
    assert target.read_text() == "from the library"
    assert (tmp_path / "g.txt").read_text() == "g"


def test_shell_completion_escapes_spaces(shelfd, library, tmp_path):
    from cli.shell import ShelfShell

    (tmp_path / "my file.txt").write_text("x")
    (tmp_path / "my folder").mkdir()
    (tmp_path / "it's.txt").write_text("x")
    (library / "my photo.jpg").write_text("x")
    shell = ShelfShell("127.0.0.1", shelfd.port, 10)

    def complete(method, line):
        begidx = max(line.rfind(" "), line.rfind("\t")) + 1  # readline's delimiters
        return sorted(method(line[begidx:], line, begidx, len(line)))

    try:
        assert complete(shell.complete_put, "put %s/my" % tmp_path) == [
            "%s/my\\ file.txt" % tmp_path, "%s/my\\ folder/" % tmp_path]
        assert complete(shell.complete_put, "put %s/my\\ f" % tmp_path) == [
            "file.txt", "folder/"]
        assert complete(shell.complete_put, 'put "%s/my fi' % tmp_path) == ['file.txt"']
        assert complete(shell.complete_put, "put %s/it" % tmp_path) == [
            "%s/it\\'s.txt" % tmp_path]
        assert complete(shell.complete_get, "get my") == ["my\\ photo.jpg"]
        assert complete(shell.complete_get, "get my\\ p") == ["photo.jpg"]
        assert complete(shell.complete_stat, "stat 'my ph") == ["photo.jpg'"]
    finally:
        shell.session.close()


# -- 5. one destination, one download ---------------------------------------------------

def test_a_second_download_to_the_same_destination_is_refused(shelfd, library, tmp_path):
    data = os.urandom(128 * MiB)
    (library / "big.bin").write_bytes(data)
    target, part = tmp_path / "big.bin", tmp_path / ".big.bin.shelf-part"
    first = start_download(shelfd.port, target, part)
    try:
        first.send_signal(signal.SIGSTOP)  # holds its part file while we try
        if target.exists() or part.stat().st_size >= len(data):
            pytest.skip("the first download finished too soon")
        second = cli(shelfd, "get", "big.bin", str(target), timeout=30)
        assert second.returncode == 5, err(second)
        assert err(second) == ("shelf-cli: another download to %s is in progress\n"
                               % target)
        forced = cli(shelfd, "get", "--force", "big.bin", str(target), timeout=30)
        assert forced.returncode == 5, err(forced)
    finally:
        first.send_signal(signal.SIGCONT)
        _, stderr = first.communicate(timeout=60)
    assert first.returncode == 0, stderr
    assert target.read_bytes() == data
    assert not part.exists() and not (tmp_path / ".big.bin.shelf-part.json").exists()
