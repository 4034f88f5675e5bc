"""shelf-cli on protocol 2 (issue #13), end to end: the real ``shelf-cli`` entry as a
subprocess against the real shelfd. Folders, the trash, moves, space, trees up and
down, downloads and uploads continued after a cut, the shell's current folder."""

from __future__ import annotations

import json
import os
import shlex
import signal
import stat
import socket
import subprocess
import sys

import pytest

from helpers import ROOT, Raw, python_env, wait_for
from test_cli import ShellDriver, cli, err, out
from test_cli_hardening import cut_download, sparse_file

MiB = 1 << 20


@pytest.fixture
def env(tmp_path) -> dict:
    """The CLI's environment, with a state folder (upload records) of the test's own."""
    environment = python_env()
    environment["XDG_STATE_HOME"] = str(tmp_path / "state")
    return environment


@pytest.fixture
def shelfd_rwdm(daemon_factory, library):
    """A shelfd whose anonymous users may also delete and move (no accounts here)."""
    return daemon_factory(library, "--anonymous", "rwdm")


def ls_json(daemon, folder: str = "", env=None) -> list[dict]:
    result = cli(daemon, "ls", *([folder] if folder else []), "--json", env=env)
    assert result.returncode == 0, err(result)
    return json.loads(out(result))


def patterned_file(path, size: int) -> bytes:
    """A sparse file with a random 4 KiB block every 8 MiB (a splice in the wrong place
    shows); returns the pattern's SHA-less copy for small sizes only."""
    sparse_file(path, size)
    with open(path, "r+b") as handle:
        for offset in range(0, size, 8 * MiB):
            handle.seek(offset)
            handle.write(os.urandom(4096))


def same_file(a, b) -> bool:
    with open(a, "rb") as one, open(b, "rb") as two:
        while True:
            left, right = one.read(4 * MiB), two.read(4 * MiB)
            if left != right:
                return False
            if not left:
                return True


# -- looking at folders ------------------------------------------------------------------

def test_ls_shows_folders_and_json_marks_them(shelfd, library):
    (library / "photos").mkdir()
    (library / "photos" / "hi.txt").write_text("hello")
    (library / "notes.txt").write_text("twelve bytes")
    result = cli(shelfd, "ls")
    assert result.returncode == 0, err(result)
    lines = out(result).splitlines()
    assert lines[0].split() == ["NAME", "SIZE", "MODIFIED"]
    assert lines[1].startswith("notes.txt ") and "12 B" in lines[1]
    assert lines[2].startswith("photos/ ")
    listing = {item["name"]: item for item in ls_json(shelfd)}
    assert listing["photos"]["kind"] == "folder" and listing["photos"]["version"] is None
    assert listing["notes.txt"]["kind"] == "file" and listing["notes.txt"]["size"] == 12
    assert listing["notes.txt"]["version"]
    (inside,) = ls_json(shelfd, "photos")
    assert (inside["name"], inside["path"], inside["size"]) == ("hi.txt", "photos/hi.txt", 5)
    assert inside["version"] == json.loads(out(cli(shelfd, "stat", "photos/hi.txt",
                                                   "--json")))["version"]
    folder = cli(shelfd, "stat", "photos")
    assert folder.returncode == 0 and "kind:     folder" in out(folder)
    missing = cli(shelfd, "ls", "nope")
    assert missing.returncode == 3 and "no such folder in the library: nope" in err(missing)
    empty = cli(shelfd, "mkdir", "empty")
    assert empty.returncode == 0, err(empty)
    assert "(empty is empty)" in out(cli(shelfd, "ls", "empty"))


def test_mkdir_and_rmdir(shelfd_rwdm, library):
    shelfd = shelfd_rwdm
    assert cli(shelfd, "mkdir", "a").returncode == 0
    assert (library / "a").is_dir()
    again = cli(shelfd, "mkdir", "a")
    assert again.returncode == 1 and "a already exists" in err(again)
    deep = cli(shelfd, "mkdir", "x/y/z")
    assert deep.returncode == 3 and "no such folder in the library: x/y" in err(deep)
    assert cli(shelfd, "mkdir", "-p", "x/y/z").returncode == 0
    assert cli(shelfd, "mkdir", "-p", "x/y/z").returncode == 0  # as mkdir -p: fine
    assert (library / "x" / "y" / "z").is_dir()
    (library / "a" / "f.txt").write_text("f")
    full = cli(shelfd, "rmdir", "a")
    assert full.returncode == 1
    assert err(full) == "shelf-cli: a is not empty; remove what it holds first\n"
    not_folder = cli(shelfd, "rmdir", "a/f.txt")
    assert not_folder.returncode == 2 and "is a file" in err(not_folder)
    assert cli(shelfd, "rmdir", "x/y/z").returncode == 0
    assert not (library / "x" / "y" / "z").exists()
    assert cli(shelfd, "rmdir", "x/y/z").returncode == 3


def test_without_the_d_permission_rm_is_denied(shelfd, library):
    (library / "keep.txt").write_text("k")
    result = cli(shelfd, "rm", "keep.txt")  # the default anonymous grant is rw
    assert result.returncode == 8, err(result)
    assert err(result).count("\n") == 1
    assert (library / "keep.txt").exists()


# -- rm, the trash, restore ------------------------------------------------------------

def test_rm_trash_restore_round_trip(shelfd_rwdm, library, tmp_path):
    daemon = shelfd_rwdm
    (library / "docs").mkdir()
    data = os.urandom(50_000)
    (library / "docs" / "report.pdf").write_bytes(data)
    (library / "other.txt").write_text("other")
    result = cli(daemon, "rm", "docs/report.pdf", "other.txt")
    assert result.returncode == 0, err(result)
    assert ls_json(daemon, "docs") == []
    assert cli(daemon, "trash").returncode == 0
    trash = json.loads(out(cli(daemon, "trash", "--json")))
    assert {item["path"]: item["size"] for item in trash} == {"docs/report.pdf": 50_000,
                                                             "other.txt": 5}
    first = next(item["id"] for item in trash if item["path"] == "docs/report.pdf")
    restored = cli(daemon, "restore", first)
    assert restored.returncode == 0, err(restored)
    assert "restored docs/report.pdf" in out(restored)
    assert (library / "docs" / "report.pdf").read_bytes() == data

    assert cli(daemon, "rm", "docs/report.pdf").returncode == 0
    (second,) = [item["id"] for item in json.loads(out(cli(daemon, "trash", "--json")))
                 if item["path"] == "docs/report.pdf"]
    elsewhere = cli(daemon, "restore", second, "docs/report (restored).pdf")
    assert elsewhere.returncode == 0, err(elsewhere)
    assert (library / "docs" / "report (restored).pdf").read_bytes() == data
    gone = cli(daemon, "restore", second)
    assert gone.returncode == 3 and "nothing in the trash has the id" in err(gone)

    other = next(item["id"] for item in trash if item["path"] == "other.txt")
    (library / "other.txt").write_text("a new one")
    taken = cli(daemon, "restore", other)
    assert taken.returncode == 1 and "already exists" in err(taken)
    assert (library / "other.txt").read_text() == "a new one"

    missing = cli(daemon, "rm", "ghost.txt", "docs")
    assert missing.returncode == 3  # the first failure's code
    assert "no such file in the library: ghost.txt" in err(missing)
    assert "docs is a folder; remove it with rmdir" in err(missing)
    assert "(the trash is empty)" not in out(cli(daemon, "trash"))


# -- mv ------------------------------------------------------------------------------------

def test_mv_files_and_folders(shelfd_rwdm, library):
    daemon = shelfd_rwdm
    (library / "a.txt").write_text("a")
    (library / "b.txt").write_text("b")
    (library / "photos").mkdir()
    (library / "photos" / "p.jpg").write_text("p")
    (library / "archive").mkdir()
    assert cli(daemon, "mv", "a.txt", "renamed.txt").returncode == 0
    assert (library / "renamed.txt").read_text() == "a" and not (library / "a.txt").exists()
    taken = cli(daemon, "mv", "renamed.txt", "b.txt")
    assert taken.returncode == 1 and "b.txt already exists; mv never replaces" in err(taken)
    assert (library / "b.txt").read_text() == "b" and (library / "renamed.txt").exists()
    onto_folder = cli(daemon, "mv", "photos", "archive")
    assert onto_folder.returncode == 1  # an existing (empty) folder is not replaced either
    into = cli(daemon, "mv", "photos", "archive/")
    assert into.returncode == 0, err(into)
    assert (library / "archive" / "photos" / "p.jpg").read_text() == "p"
    assert cli(daemon, "mv", "b.txt", "archive/photos/").returncode == 0
    assert (library / "archive" / "photos" / "b.txt").read_text() == "b"
    itself = cli(daemon, "mv", "archive", "archive/photos/archive")
    assert itself.returncode == 2, err(itself)
    missing = cli(daemon, "mv", "ghost", "x")
    assert missing.returncode == 3 and "no such file or folder in the library: ghost" in \
        err(missing)
    no_folder = cli(daemon, "mv", "renamed.txt", "nowhere/r.txt")
    assert no_folder.returncode == 3 and "no such folder in the library: nowhere" in \
        err(no_folder)


def test_df(shelfd):
    result = cli(shelfd, "df", "--json")
    assert result.returncode == 0, err(result)
    space = json.loads(out(result))
    assert 0 < space["free"] <= space["total"]
    text = out(cli(shelfd, "df"))
    assert "free:" in text and "total:" in text and "%d bytes" % space["total"] in text


# -- trees ------------------------------------------------------------------------------

def tree_of(folder) -> dict:
    """{relative path: bytes, 'folder' or 'other'} of a local tree, links not followed."""
    found = {}
    for here, folders, files in os.walk(folder):
        for name in folders:
            path = os.path.join(here, name)
            found[os.path.relpath(path, folder)] = "other" if os.path.islink(path) \
                else "folder"
        for name in files:
            path = os.path.join(here, name)
            if not stat.S_ISREG(os.lstat(path).st_mode):
                found[os.path.relpath(path, folder)] = "other"
                continue
            with open(path, "rb") as handle:
                found[os.path.relpath(path, folder)] = handle.read()
    return found


def test_put_r_and_get_r_keep_the_tree_and_skip_links_and_fifos(shelfd, library, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not to be uploaded")
    tree = tmp_path / "project"
    (tree / "src" / "deep" / "deeper").mkdir(parents=True)
    (tree / "empty folder").mkdir()
    (tree / "README").write_bytes(b"read me\n")
    (tree / "src" / "main.py").write_bytes(b"print('hi')\n")
    (tree / "src" / "deep" / "data ✓.bin").write_bytes(os.urandom(2 * MiB + 17))
    (tree / "src" / "deep" / "deeper" / "zero").write_bytes(b"")
    os.symlink(outside / "secret.txt", tree / "link-to-file")
    os.symlink(outside, tree / "src" / "link-to-folder")
    os.mkfifo(tree / "src" / "a fifo")
    (tree / ".hidden").write_text("h")
    expected = tree_of(tree)
    for skipped in ("link-to-file", "src/link-to-folder", "src/a fifo", ".hidden"):
        assert expected.pop(skipped)

    up = cli(shelfd, "put", "-r", str(tree), "backups/2026", timeout=60)
    assert up.returncode == 0, err(up)
    notes = err(up)
    assert "skipped %s: a symbolic link" % (tree / "link-to-file") in notes
    assert "skipped %s: a symbolic link" % (tree / "src" / "link-to-folder") in notes
    assert "skipped %s: a FIFO, not a regular file" % (tree / "src" / "a fifo") in notes
    assert "skipped %s: names starting with '.' are hidden" % (tree / ".hidden") in notes
    assert tree_of(library / "backups" / "2026" / "project") == expected
    assert not (library / "backups" / "2026" / "project" / "link-to-file").exists()
    assert ls_json(shelfd, "backups/2026/project/empty folder") == []

    again = cli(shelfd, "put", "-r", str(tree), "backups/2026")
    assert again.returncode == 1  # every file is there already: nothing replaced
    assert "is already in the library" in err(again)

    fresh = tmp_path / "fresh"
    down = cli(shelfd, "get", "-r", "backups/2026/project", str(fresh))
    assert down.returncode == 0, err(down)
    assert tree_of(fresh / "project") == expected
    assert sorted(os.listdir(fresh)) == ["project"]  # no part file, no record left

    whole = tmp_path / "whole"
    assert cli(shelfd, "get", "-r", "/", str(whole)).returncode == 0
    assert tree_of(whole / "backups" / "2026" / "project") == expected

    folder_without_r = cli(shelfd, "get", "backups", str(tmp_path / "x"))
    assert folder_without_r.returncode == 2 and "get -r" in err(folder_without_r)
    put_without_r = cli(shelfd, "put", str(tree))
    assert put_without_r.returncode == 2 and "put -r" in err(put_without_r)


def test_get_r_never_writes_through_a_link_in_dest(shelfd, library, tmp_path):
    (library / "tree" / "sub").mkdir(parents=True)
    (library / "tree" / "sub" / "f.txt").write_text("library")
    (library / "tree" / "top.txt").write_text("top")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    dest = tmp_path / "dest"
    (dest / "tree").mkdir(parents=True)
    os.symlink(elsewhere, dest / "tree" / "sub")  # planted where a folder will go
    result = cli(shelfd, "get", "-r", "tree", str(dest))
    assert result.returncode == 6, err(result)
    assert "%s: it is a symbolic link; not followed" % (dest / "tree" / "sub") in err(result)
    assert os.listdir(elsewhere) == []
    assert (dest / "tree" / "top.txt").read_text() == "top"  # the rest still came


# -- get --continue ---------------------------------------------------------------------

def test_get_continue_resumes_the_same_version(shelfd, library, tmp_path):
    patterned_file(library / "big.bin", 256 * MiB)
    target = tmp_path / "big.bin"
    part = tmp_path / ".big.bin.shelf-part"
    cut_download(shelfd.port, "big.bin", target)
    kept = part.stat().st_size
    record = json.loads((tmp_path / ".big.bin.shelf-part.json").read_text())
    listing = {item["name"]: item for item in ls_json(shelfd)}
    assert record["path"] == "big.bin" and record["version"] == listing["big.bin"]["version"]
    result = cli(shelfd, "get", "--continue", "big.bin", str(target))
    assert result.returncode == 0, err(result)
    assert same_file(target, library / "big.bin")
    assert not part.exists()
    assert "GET big.bin %d bytes from %d" % (256 * MiB - kept, kept) in shelfd.log()


def test_get_continue_after_the_file_was_replaced(shelfd_rwdm, library, tmp_path):
    daemon = shelfd_rwdm
    patterned_file(library / "big.bin", 256 * MiB)
    target = tmp_path / "big.bin"
    part = tmp_path / ".big.bin.shelf-part"
    cut_download(daemon.port, "big.bin", target)
    kept = part.stat().st_size
    replacement = tmp_path / "replacement.bin"
    replacement.write_bytes(os.urandom(3 * MiB))
    replaced = cli(daemon, "put", "--replace", str(replacement), "big.bin")
    assert replaced.returncode == 0, err(replaced)

    refused = cli(daemon, "get", "--continue", "big.bin", str(target))
    assert refused.returncode == 6
    assert err(refused).count("\n") == 1
    assert "big.bin changed in the library since the download started" in err(refused)
    assert "--force" in err(refused)
    assert part.stat().st_size == kept and not target.exists()

    restarted = cli(daemon, "get", "--continue", "--force", "big.bin", str(target))
    assert restarted.returncode == 0, err(restarted)
    assert "starting over" in err(restarted)
    assert target.read_bytes() == replacement.read_bytes()
    assert not part.exists()


# -- put --continue -----------------------------------------------------------------------

def kept_upload_bytes(library, before: set) -> int:
    """Bytes the server holds of uploads that started since ``before`` (its working folder)."""
    folder = library / ".shelf-uploads"
    if not folder.is_dir():
        return 0
    return sum(os.path.getsize(folder / name) for name in set(os.listdir(folder)) - before
               if not name.endswith(".info") and (folder / name).exists())


def uploads_now(library) -> set:
    folder = library / ".shelf-uploads"
    return set(os.listdir(folder)) if folder.is_dir() else set()


def start_upload(daemon, library, source, name, env, *options):
    before = uploads_now(library)
    proc = subprocess.Popen([sys.executable, "-m", "cli", "--port", str(daemon.port), "put",
                             *options, str(source), name], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env, cwd=str(ROOT))
    wait_for(lambda: kept_upload_bytes(library, before) >= 8 * MiB or proc.poll() is not None,
             interval=0.0005, what="the upload to start")
    return proc, before


def records(tmp_path) -> list[str]:
    folder = tmp_path / "state" / "shelf" / "uploads"
    return sorted(os.listdir(folder)) if folder.is_dir() else []


def test_put_continue_after_the_client_was_killed(shelfd, library, tmp_path, env):
    source = tmp_path / "big upload.bin"
    size = 512 * MiB
    patterned_file(source, size)
    proc, before = start_upload(shelfd, library, source, "big.bin", env)
    proc.kill()
    proc.communicate(timeout=30)
    if (library / "big.bin").exists():
        pytest.skip("the upload finished before it could be cut")
    assert len(records(tmp_path)) == 1
    wait_for(lambda: not shelfd.sessions(), what="the cut session to keep the upload")
    kept = kept_upload_bytes(library, before)
    assert 0 < kept < size

    result = cli(shelfd, "put", "--continue", str(source), "big.bin", env=env)
    assert result.returncode == 0, err(result)
    assert "continuing the upload of %s at byte %d of %d" % (source, kept, size) in err(result)
    assert same_file(source, library / "big.bin")
    assert records(tmp_path) == []
    assert "resumed at %d" % kept in shelfd.log()


def test_put_continue_starts_over_when_the_server_forgot(shelfd, library, tmp_path, env):
    source = tmp_path / "big.bin"
    patterned_file(source, 512 * MiB)
    proc, _ = start_upload(shelfd, library, source, "big.bin", env)
    proc.kill()
    proc.communicate(timeout=30)
    if (library / "big.bin").exists():
        pytest.skip("the upload finished before it could be cut")
    (name,) = records(tmp_path)
    token = json.loads((tmp_path / "state" / "shelf" / "uploads" / name).read_text())["token"]
    wait_for(lambda: not shelfd.sessions(), what="the cut session to keep the upload")
    with Raw(shelfd.port) as raw:
        assert raw.request("ABORT %s" % token) == "OK"  # as if it had expired
    result = cli(shelfd, "put", "--continue", str(source), env=env)
    assert result.returncode == 0, err(result)
    assert "no longer keeps the cut upload" in err(result) and "starting over" in err(result)
    assert same_file(source, library / "big.bin")
    assert records(tmp_path) == []


def test_ctrl_c_in_put_says_how_to_continue(shelfd, library, tmp_path, env):
    source = tmp_path / "big.bin"
    patterned_file(source, 512 * MiB)
    proc, before = start_upload(shelfd, library, source, "photos big.bin", env)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    if proc.returncode == 0:
        pytest.skip("the upload finished before Ctrl+C")
    message = stderr.decode("utf-8")
    assert proc.returncode == 130, message
    assert not (library / "photos big.bin").exists()
    line = next(line for line in message.splitlines() if "continue with: " in line)
    command = shlex.split(line.split("continue with: ", 1)[1])
    assert command[:3] == ["shelf-cli", "--server", "shelf://127.0.0.1:%d" % shelfd.port]
    assert command[3:5] == ["put", "--continue"]
    result = subprocess.run([sys.executable, "-m", "cli", *command[1:]], capture_output=True,
                            env=env, cwd=str(ROOT), timeout=120)
    assert result.returncode == 0, err(result)
    assert "continuing the upload" in err(result)
    assert same_file(source, library / "photos big.bin")
    assert records(tmp_path) == []


def test_put_continue_of_a_changed_file_uploads_it_whole(shelfd, library, tmp_path, env):
    source = tmp_path / "small.txt"
    source.write_text("nothing was cut")
    result = cli(shelfd, "put", "--continue", str(source), env=env)
    assert result.returncode == 0, err(result)
    assert "no cut upload of %s" % source in err(result)
    assert (library / "small.txt").read_text() == "nothing was cut"


# -- naming the server --------------------------------------------------------------------

def test_server_url(shelfd, library):
    (library / "here.txt").write_text("x")
    url = "shelf://127.0.0.1:%d" % shelfd.port
    command = [sys.executable, "-m", "cli"]
    result = subprocess.run(command + ["--server", url, "ls", "--json"], capture_output=True,
                            env=python_env(), cwd=str(ROOT), timeout=30)
    assert result.returncode == 0, err(result)
    assert json.loads(result.stdout)[0]["name"] == "here.txt"
    environment = python_env()
    environment["SHELF_SERVER"] = url
    result = subprocess.run(command + ["stat", "here.txt"], capture_output=True,
                            env=environment, cwd=str(ROOT), timeout=30)
    assert result.returncode == 0, err(result)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    tls = subprocess.run(command + ["--server", "shelfs://127.0.0.1:%d" % closed, "ls"],
                         capture_output=True, env=python_env(), cwd=str(ROOT), timeout=30)
    assert tls.returncode == 4 and err(tls).count("\n") == 1  # a TLS URL, tried
    both = subprocess.run(command + ["--server", url, "--port", "1", "ls"],
                          capture_output=True, env=python_env(), cwd=str(ROOT), timeout=30)
    assert both.returncode == 2
    bad = subprocess.run(command + ["--server", "http://x", "ls"], capture_output=True,
                         env=python_env(), cwd=str(ROOT), timeout=30)
    assert bad.returncode == 2 and "shelf://HOST[:PORT]" in err(bad)


def test_every_command_has_help_with_the_exit_codes():
    for command in ("ls", "get", "put", "stat", "hash", "mkdir", "rm", "rmdir", "mv",
                    "trash", "restore", "df", "shell"):
        result = subprocess.run([sys.executable, "-m", "cli", command, "--help"],
                                capture_output=True, text=True, env=python_env(),
                                cwd=str(ROOT), timeout=30)
        assert result.returncode == 0, result.stderr
        assert "8    login refused or permission denied" in result.stdout, command
        assert "130  interrupted" in result.stdout, command
    get_help = subprocess.run([sys.executable, "-m", "cli", "get", "--help"],
                              capture_output=True, text=True, env=python_env(),
                              cwd=str(ROOT), timeout=30).stdout
    assert "--continue --force starts over" in " ".join(get_help.split())


# -- the shell ---------------------------------------------------------------------------

def test_shell_cd_pwd_ls_get_put(shelfd, library, tmp_path):
    (library / "photos" / "2026").mkdir(parents=True)
    (library / "photos" / "2026" / "beach.jpg").write_bytes(b"sand")
    source = tmp_path / "up.txt"
    source.write_text("from the shell")
    shell = ShellDriver(shelfd.port)
    try:
        shell.send("pwd")
        shell.wait_output("/\n")
        shell.send("cd photos")
        shell.send("pwd")
        shell.wait_output("/photos\n")
        shell.send("ls")
        shell.wait_output("2026/")
        shell.send("cd 2026")
        shell.send('get beach.jpg "%s"' % (tmp_path / "beach.jpg"))
        shell.wait_output("saved %s" % (tmp_path / "beach.jpg"))
        shell.send('put "%s"' % source)
        shell.wait_output("stored photos/2026/up.txt")
        shell.send("cd ../..")
        shell.send("pwd")
        shell.wait_output("stored photos/2026/up.txt (14 B)\n/\n")
        shell.send("cd ..")  # at the root: stays there, as in a POSIX shell
        shell.send("mkdir photos/new")
        shell.send("cd /photos/new")
        shell.send("pwd")
        shell.wait_output("/photos/new\n")
        shell.send("get ../2026/up.txt \"%s\"" % (tmp_path / "back.txt"))
        shell.wait_output("saved %s" % (tmp_path / "back.txt"))
        shell.send("ls /photos/2026 --json")
        shell.wait_output('"path": "photos/2026/up.txt"')
        shell.send("cd nowhere")
        shell.wait_output("error: no such folder in the library: photos/new/nowhere",
                          "stderr")
        shell.send("cd /photos/2026/beach.jpg")
        shell.wait_output("is a file, not a folder", "stderr")
        shell.send("df")
        shell.wait_output("used:")
        shell.send("pwd")
        shell.wait_output("%\n/photos/new\n")  # the failed cds changed nothing
        shell.send("quit")
        assert shell.close() == 2  # the last failure: cd to a file
    finally:
        if shell.proc.poll() is None:
            shell.proc.kill()
            shell.close()
    assert (tmp_path / "beach.jpg").read_bytes() == b"sand"
    assert (library / "photos" / "2026" / "up.txt").read_text() == "from the shell"
    assert (tmp_path / "back.txt").read_text() == "from the shell"
    assert (library / "photos" / "new").is_dir()


def test_shell_completion_knows_folders(shelfd, library):
    from cli.shell import ShelfShell

    (library / "photos" / "my trip").mkdir(parents=True)
    (library / "photos" / "my trip" / "day one.jpg").write_text("x")
    (library / "photos" / "pic.jpg").write_text("x")
    (library / "plain.txt").write_text("x")
    shell = ShelfShell("127.0.0.1", shelfd.port, 10)

    def complete(method, line):
        begidx = max(line.rfind(" "), line.rfind("\t")) + 1  # readline's delimiters
        return sorted(method(line[begidx:], line, begidx, len(line)))

    try:
        assert complete(shell.complete_get, "get p") == ["photos/", "plain.txt"]
        assert complete(shell.complete_get, "get photos/") == [
            "photos/my\\ trip/", "photos/pic.jpg"]
        # readline replaces only what follows the last space
        assert complete(shell.complete_get, "get photos/my\\ trip/d") == [
            "trip/day\\ one.jpg"]
        assert complete(shell.complete_cd, "cd p") == ["photos/"]  # folders only
        shell.onecmd("cd photos")
        assert complete(shell.complete_stat, "stat my") == ["my\\ trip/"]
        assert complete(shell.complete_ls, "ls ../pl") == ["../plain.txt"]
    finally:
        shell.session.close()
