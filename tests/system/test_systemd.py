"""The packaged shelfd under a real systemd: a minimal Debian booted with systemd-nspawn.

``make test-systemd`` (run by ``.ci/run`` after ``make test``) builds ``dist/`` and runs
this module; a plain ``make test`` skips it. As root, it:

- builds once and caches a minimal Debian root with systemd and no Python (debootstrap,
  the host's suite and mirror) under ``/var/cache/shelf-test/`` (``$SHELF_TEST_CACHE``);
- boots it with ``systemd-nspawn --boot --volatile=overlay`` (writes go to a tmpfs, the
  cache stays clean) sharing the host's network, so the host's clients reach shelfd on
  127.0.0.1; commands run inside through ``nsenter`` (the host needs no systemd);
- installs ``dist/shelfd-service.tar.gz`` the documented way (untar, install-service.sh);
- checks start, transfers, reload, a refused bad config, a graceful stop during a
  download, warnings in the journal, and the sandbox's ``systemd-analyze security`` score.

Skipped, saying why, only where systemd-nspawn cannot run at all (not root, no
container support). Every wait polls with a bounded timeout.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import ROOT, Raw, wait_for

if not os.environ.get("SHELF_SYSTEMD_TEST"):
    pytest.skip("boots a container with systemd: run `make test-systemd`", allow_module_level=True)

pytestmark = pytest.mark.timeout(1200)  # the first run builds the Debian root

ROOTFS_VERSION = "1"  # bump when the root's recipe below changes
PACKAGES = ("systemd", "systemd-sysv")
CACHE = Path(os.environ.get("SHELF_TEST_CACHE", "/var/cache/shelf-test"))
DIST = Path(os.environ.get("SHELF_DIST", ROOT / "dist"))
RELEASE = DIST / "shelfd-service.tar.gz"
SHELF_CLI = Path(sys.executable).parent / "shelf-cli"
INI = "/etc/shelf/shelfd.ini"
# Units a throw-away test machine has no use for (and that would reach the network).
MASKED = ("apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer",
          "e2scrub_all.timer", "fstrim.timer")
FIGURES: dict[str, str] = {}


# -- the Debian root -----------------------------------------------------------

def host_suite() -> str:
    try:
        with open("/etc/os-release") as handle:
            found = re.search(r"^VERSION_CODENAME=\"?(\w+)", handle.read(), re.M)
    except OSError:
        found = None
    return found.group(1) if found else "bookworm"


def host_mirror(suite: str) -> str:
    """The Debian mirror the host's apt already uses for ``suite``."""
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        text = Path(path).read_text(errors="replace")
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and suite in suites.group(1).split() and "debian" in uris.group(1):
                return uris.group(1)
    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
        try:
            lines = Path(path).read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            words = re.sub(r"\[[^]]*\]", "", line).split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                return words[1]
    return "http://deb.debian.org/debian"


def ensure_tools() -> None:
    missing = [package for tool, package in (("systemd-nspawn", "systemd-container"),
                                             ("debootstrap", "debootstrap"),
                                             ("nsenter", "util-linux"))
               if not shutil.which(tool)]
    if not missing:
        return
    if not shutil.which("apt-get"):
        pytest.skip("systemd-nspawn cannot run here: no %s and no apt-get" % " ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", *missing]
    if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=900)
        result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, "apt-get install %s: %s" % (missing, result.stderr[-2000:])


def debian_root() -> Path:
    """The cached root, built on first use (atomically: a rename once it is whole)."""
    suite = host_suite()
    key = "debian-%s-%s-v%s" % (suite, "+".join(PACKAGES), ROOTFS_VERSION)
    target = CACHE / key
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / (key + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run building it: wait for it
        if target.is_dir():
            return target
        partial = CACHE / (key + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        mirror = host_mirror(suite)
        started = time.monotonic()
        result = subprocess.run(["debootstrap", "--variant=minbase",
                                 "--include=" + ",".join(PACKAGES), suite, str(partial), mirror],
                                capture_output=True, text=True, timeout=1500)
        assert result.returncode == 0, "debootstrap %s from %s failed:\n%s" % (
            suite, mirror, (result.stdout + result.stderr)[-3000:])
        for unit in MASKED:
            link = partial / "etc/systemd/system" / unit
            if not link.exists():
                link.symlink_to("/dev/null")
        (partial / "etc/hostname").write_text("shelf-test\n")
        os.rename(partial, target)
        FIGURES["Debian root built"] = "%.0f s (%s from %s)" % (
            time.monotonic() - started, suite, mirror)
    return target


def nspawn(root: Path, name: str, *args: str) -> list[str]:
    return ["systemd-nspawn", "--quiet", "--directory", str(root), "--volatile=overlay",
            "--register=no", "--keep-unit", "--link-journal=no", "--resolv-conf=off",
            "--timezone=off", "--machine", name, *args]


# -- the booted machine --------------------------------------------------------

class Machine:
    """A booted container; ``sh`` runs a shell script inside it, as root."""

    def __init__(self, root: Path, log: Path):
        self.root = root
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(nspawn(root, "shelf-test-%d" % os.getpid(),
                                                "--boot", "--console=read-only"),
                                         stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = wait_for(self._init_pid, timeout=30, interval=0.05,
                            what="the container's systemd to start: %s" % self.boot_log)

    def _init_pid(self) -> int | None:
        assert self.proc.poll() is None, "systemd-nspawn exited: %s" % self.boot_log()
        for task in glob.glob("/proc/%d/task/*/children" % self.proc.pid):
            for child in Path(task).read_text().split():
                try:
                    if Path("/proc/%s/comm" % child).read_text().strip() == "systemd":
                        return int(child)
                except OSError:
                    pass
        return None

    def boot_log(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def path(self, inside: str) -> Path:
        """A path inside the machine, as the host can write it."""
        return Path("/proc/%d/root" % self.pid) / inside.lstrip("/")

    def sh(self, script: str, timeout: float = 60, check: bool = True,
           popen: bool = False):
        command = ["nsenter", "--target", str(self.pid), "--all", "--root", "--wd",
                   "/bin/sh", "-c", script]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
               "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0", "TERM": "dumb"}
        if popen:
            return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        result = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                text=True, timeout=timeout)
        if check:
            assert result.returncode == 0, "in the machine: %s\nexit %d: %s%s" % (
                script, result.returncode, result.stdout, result.stderr)
        return result

    def out(self, script: str, timeout: float = 60) -> str:
        return self.sh(script, timeout).stdout.strip()

    def state(self) -> str:
        return self.sh("systemctl is-active shelfd", check=False).stdout.strip()

    def journal(self, *options: str) -> str:
        return self.out("journalctl -u shelfd --no-pager -o cat %s" % " ".join(options))

    def shutdown(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # nspawn asks the container's systemd to halt
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture(scope="module")
def debian(tmp_path_factory) -> Path:
    if sys.platform != "linux":
        pytest.skip("systemd-nspawn is Linux only")
    if os.geteuid() != 0:
        pytest.skip("systemd-nspawn needs root")
    ensure_tools()
    assert RELEASE.is_file(), "%s is missing: `make dist` writes it" % RELEASE
    root = debian_root()
    assert not glob.glob(str(root / "usr/bin/python*")), "the server root must have no Python"
    # Can containers run here at all? Only this may skip; a failed boot is a failure.
    probe = subprocess.run(nspawn(root, "shelf-probe-%d" % os.getpid(), "/bin/true"),
                           capture_output=True, text=True, timeout=120)
    if probe.returncode:
        pytest.skip("systemd-nspawn cannot run a container here: %s" % probe.stderr.strip())
    return root


@pytest.fixture(scope="module")
def machine(debian, tmp_path_factory):
    logs = tmp_path_factory.mktemp("machine")
    started = time.monotonic()
    box = Machine(debian, logs / "console.log")
    try:
        wait_for(lambda: box.path("/run/systemd/private").exists(), timeout=60,
                 interval=0.05, what="systemd's socket in the machine: %s" % box.boot_log())
        # Polled: `is-system-running --wait` needs D-Bus, which this minimal system lacks.
        wait_for(lambda: box.sh("systemctl is-system-running", check=False).stdout.strip()
                 in ("running", "degraded"), timeout=120, interval=0.2,
                 what="the boot to finish: %s" % box.boot_log())
        FIGURES["boot to running"] = "%.1f s" % (time.monotonic() - started)
        yield box
    finally:
        box.shutdown()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def installed(machine):
    """The release installed as the README says: untar, run install-service.sh."""
    shutil.copy(RELEASE, machine.path("/root/shelfd-service.tar.gz"))
    result = machine.sh("cd /root && tar xzf shelfd-service.tar.gz && "
                        "sh shelfd-service/install-service.sh")
    assert "enable --now shelfd" in result.stdout, result.stdout
    # ExecReload's kill is dash's builtin: a minimal Debian has no procps.
    assert machine.sh("command -v python3 || ls /bin/kill /usr/bin/kill", check=False).returncode
    # The port is the machine's only setting that must change: it shares the host's network.
    port = free_port()
    ini = machine.path(INI)
    text = ini.read_text()
    assert re.search(r"^port = 8021$", text, re.M), text
    ini.write_text(text.replace("port = 8021", "port = %d" % port))
    return {"port": port, "ini": text.replace("port = 8021", "port = %d" % port)}


@pytest.fixture
def running(machine, installed):
    """shelfd active, with the installed settings."""
    machine.path(INI).write_text(installed["ini"])
    if machine.state() != "active":
        machine.sh("systemctl start shelfd", timeout=30)
    wait_for(lambda: connects(installed["port"]), timeout=15, what="shelfd to accept")
    return installed["port"]


@pytest.fixture(scope="module", autouse=True)
def report(request):
    yield
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print()
        for name, value in FIGURES.items():
            print("systemd test: %s: %s" % (name, value))


def connects(port: int) -> bool:
    try:
        with Raw(port) as conn:
            return conn.greeting is not None and conn.greeting.startswith("READY")
    except OSError:
        return False


def edit_ini(machine, installed, extra: str) -> None:
    machine.path(INI).write_text(installed["ini"] + extra)


def put_refused(port: int, name: str) -> str | None:
    """None if the upload is stored, else the server's refusal."""
    with Raw(port) as conn:
        first, last = conn.put(name, b"x" * 100)
    return None if (last or "").startswith("OK 100 ") else first


# -- the checks ----------------------------------------------------------------

def test_install_script_works_where_systemd_is_not_running(debian):
    """An image being prepared (a chroot, a container build) has no running systemd."""
    result = subprocess.run(
        nspawn(debian, "shelf-install-%d" % os.getpid(), "--bind-ro=%s:/mnt/release" % DIST,
               "/bin/sh", "-c", "cd /root && tar xzf /mnt/release/shelfd-service.tar.gz && "
               "sh shelfd-service/install-service.sh && /usr/local/bin/shelfd --version && "
               "id shelf && ls -ld /srv/shelf && cat /etc/shelf/shelfd.ini"),
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "systemd is not running here" in result.stdout
    assert re.search(r"^drwx.* shelf shelf .* /srv/shelf$", result.stdout, re.M), result.stdout


def test_start_reaches_active_within_15_s(machine, installed):
    machine.path(INI).write_text(installed["ini"])
    machine.sh("systemctl stop shelfd", timeout=40)
    started = time.monotonic()
    machine.sh("systemctl start shelfd", timeout=15)  # Type=notify: returns on READY=1
    elapsed = time.monotonic() - started
    assert machine.state() == "active"
    FIGURES["systemctl start to active"] = "%.2f s" % elapsed
    assert elapsed < 15
    # The bootloader stays the main process: systemd does not adopt the child that
    # notifies, and nothing restarted.
    show = machine.out("systemctl show shelfd -p MainPID -p NRestarts -p ExecMainPID")
    values = dict(line.split("=", 1) for line in show.splitlines())
    assert values["MainPID"] == values["ExecMainPID"], show
    assert values["NRestarts"] == "0", show
    assert "not our child" not in machine.journal()
    # ExecStart names only the config: the ini's port is where it listens.
    assert connects(installed["port"])


def test_clients_transfer_files(machine, running, tmp_path):
    data = os.urandom(3 << 20)
    source = tmp_path / "report.bin"
    source.write_bytes(data)
    name = "report-%d.bin" % os.getpid()
    where = ["--host", "127.0.0.1", "--port", str(running)]
    put = subprocess.run([str(SHELF_CLI), *where, "put", str(source), name],
                         capture_output=True, text=True, timeout=60)
    assert put.returncode == 0, put.stderr
    back = tmp_path / "back.bin"
    get = subprocess.run([str(SHELF_CLI), *where, "get", name, str(back)],
                         capture_output=True, text=True, timeout=60)
    assert get.returncode == 0, get.stderr
    assert back.read_bytes() == data
    # HASH loads OpenSSL: it must work under MemoryDenyWriteExecute and the syscall filter.
    digest = subprocess.run([str(SHELF_CLI), *where, "hash", name],
                            capture_output=True, text=True, timeout=60)
    assert digest.stdout.split()[:1] == [hashlib.sha256(data).hexdigest()], digest.stderr
    # Stored as the service user, inside the library, in the machine.
    stored = machine.out("stat -c '%%U %%s' /srv/shelf/%s" % name)
    assert stored == "shelf %d" % len(data)


def test_reload_applies_a_config_change(machine, installed, running):
    try:
        edit_ini(machine, installed, "read_only = yes\n")
        machine.sh("systemctl reload shelfd", timeout=30)
        # systemd 252 ends the reload job when the signal is sent: poll for the effect.
        refusal = wait_for(lambda: put_refused(running, "after-reload.txt"), timeout=10,
                           interval=0.1, what="the reload to make the library read-only")
        assert refusal.startswith("FAIL denied ") and "write permission" in refusal
        wait_for(lambda: "read_only = True" in machine.journal(), timeout=10, interval=0.2,
                 what="the reload's line in the journal")
        edit_ini(machine, installed, "")
        machine.sh("systemctl reload shelfd", timeout=30)
        wait_for(lambda: put_refused(running, "after-second-reload-%d.txt" % time.monotonic_ns())
                 is None, timeout=10, interval=0.1, what="uploads to be accepted again")
        assert machine.state() == "active"
    finally:
        edit_ini(machine, installed, "")


def test_a_bad_config_is_refused_and_shelfd_keeps_serving(machine, installed, running):
    hups = machine.journal().count("SIGHUP")
    try:
        edit_ini(machine, installed, "max_upload = plenty\n")
        reload = machine.sh("systemctl reload shelfd", timeout=30, check=False)
        assert reload.returncode != 0, reload.stdout + reload.stderr
        assert machine.state() == "active"
        # --check-config said what is wrong, in one line, before any signal was sent.
        journal = wait_for(lambda: re.search(r"max_upload.*plenty", machine.journal())
                           and machine.journal(), timeout=10, interval=0.2,
                           what="--check-config's line in the journal")
        assert journal.count("SIGHUP") == hups
        assert put_refused(running, "still-serving-%d.txt" % os.getpid()) is None
        with Raw(running) as conn:
            reply, body = conn.get("still-serving-%d.txt" % os.getpid())
            assert reply.startswith("OK 100 ") and body == b"x" * 100
    finally:
        edit_ini(machine, installed, "")


def test_warnings_reach_the_journal_with_their_priority(machine, installed, running):
    try:
        # A key that only a restart applies: shelfd warns at the reload.
        machine.path(INI).write_text(installed["ini"].replace(
            "port = %d" % running, "port = %d" % (running + 1)))
        machine.sh("systemctl reload shelfd", timeout=30)
        warnings = wait_for(lambda: "port changed" in machine.journal("-p", "warning")
                            and machine.journal("-p", "warning"), timeout=10, interval=0.2,
                            what="the reload's warning under journalctl -p warning")
    finally:
        edit_ini(machine, installed, "")
    lines = [line for line in warnings.splitlines() if "port changed" in line]
    # Logged for the journal: the priority is the journal's, the message carries no
    # timestamp or pid of its own (the journal adds both).
    assert not re.match(r"\d{4}-\d\d-\d\d", lines[0]) and "shelfd[" not in lines[0], lines[0]
    assert "listening on" not in warnings  # info lines are not warnings
    assert "listening on" in machine.journal("-p", "info")


def test_sandbox_exposure(machine, installed):
    result = machine.sh("systemd-analyze security shelfd --no-pager", check=False)
    score = re.search(r"Overall exposure level for shelfd\.service: ([\d.]+)", result.stdout)
    assert score, result.stdout + result.stderr
    FIGURES["systemd-analyze security shelfd"] = score.group(1)
    assert float(score.group(1)) <= 2.0, result.stdout


def test_stop_during_a_download_lets_it_finish_without_sigkill(machine, installed, running):
    size = 48 << 20
    data = os.urandom(size)
    name = "big-%d.bin" % os.getpid()
    with Raw(running) as conn:
        assert conn.put(name, data)[1].startswith("OK %d " % size)
    seconds = 2.0  # paced so the stop lands in the middle of the download
    with Raw(running) as conn:
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        assert conn.request("GET %s" % name).startswith("OK %d " % size)
        digest = hashlib.sha256()
        received = 0
        begun = time.monotonic()

        def read(upto: int) -> None:
            nonlocal received
            while received < upto:
                block = conn.exact(min(256 << 10, upto - received))
                digest.update(block)
                received += len(block)
                ahead = begun + seconds * received / size - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)  # pacing the reader, not waiting for a state

        read(size // 8)
        stopper = machine.sh("systemctl stop shelfd", popen=True)
        try:
            states = []
            wait_for(lambda: states.append(machine.state()) or
                     states[-1] in ("deactivating", "inactive", "failed"),
                     timeout=10, interval=0.05, what="the stop to begin (states: %s)" % states)
            stop_seen = time.monotonic()
            read(size)
            finished = time.monotonic()
            assert stopper.wait(40) == 0, stopper.stdout.read()
        finally:
            if stopper.poll() is None:
                stopper.kill()
                stopper.wait()
            stopper.stdout.close()
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    FIGURES["download served after the stop began"] = "%.1f s" % (finished - stop_seen)
    assert finished - stop_seen > 0.5
    # (systemd forgets ExecMainStatus once a stopped unit is unloaded: the journal says it)
    show = machine.out("systemctl show shelfd -p ActiveState -p Result")
    assert dict(line.split("=", 1) for line in show.splitlines()) == {
        "ActiveState": "inactive", "Result": "success"}, show
    def stopped():
        text = machine.journal()
        after = text[text.rindex("Stopping shelfd.service"):]
        return "stopped after" in after and "Deactivated successfully" in after and text
    journal = wait_for(stopped, timeout=10, interval=0.2, what="the stop in the journal")
    tail = journal[journal.rindex("Stopping shelfd.service"):]
    assert "SIGKILL" not in journal and "Killing process" not in journal, tail
