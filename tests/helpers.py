"""Test helpers: a real shelfd subprocess and a raw protocol connection.

The raw connection deliberately does not use ``common.protocol``: tests check
our framing with an independent reader, so one bug cannot hide another.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 10.0


def wait_for(condition, timeout: float = TIMEOUT, interval: float = 0.01, what: str = "condition"):
    """Poll ``condition()`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def python_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("NOTIFY_SOCKET", None)
    return env


class Daemon:
    """A real shelfd started as a subprocess on --port 0 with its own log file."""

    def __init__(self, root: Path, *args: str, log_path: Path | None = None, env=None,
                 port: int = 0):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path or self._fresh_log_path()
        self.args = list(args)
        self.stderr_path = self.log_path.with_suffix(".stderr")
        self._stderr = open(self.stderr_path, "wb")
        command = [sys.executable, "-m", "daemon", "--root", str(self.root), "--port", str(port),
                   "--log-file", str(self.log_path), *self.args]
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self._stderr, env=env or python_env(), cwd=str(ROOT))
        self.port = self.wait_listening()
        self.pid = self.proc.pid

    def _fresh_log_path(self) -> Path:
        """A log of our own, so a restarted daemon is not read from its predecessor's log."""
        number = 1
        while True:
            suffix = "" if number == 1 else "-%d" % number
            path = self.root.parent / ("shelfd-%s%s.log" % (self.root.name, suffix))
            if not path.exists():
                return path
            number += 1

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def wait_listening(self) -> int:
        def listening():
            match = re.search(r"listening on \S+:(\d+)", self.log())
            if match:
                return int(match.group(1))
            if self.proc.poll() is not None:
                raise AssertionError("shelfd exited with %s: %s"
                                     % (self.proc.returncode, self.stderr_path.read_text()))
            return None
        return wait_for(listening, what="shelfd to listen")

    def connect(self) -> "Raw":
        return Raw(self.port)

    def children(self) -> list[int]:
        """Session and ready processes (the short-lived clean-up process left out)."""
        return [pid for pid in process_children(self.pid)
                if process_name(pid) != "shelfd clean-up"]

    def sessions(self) -> list[int]:
        """The processes serving a session now (ready pool processes are not)."""
        return [pid for pid in self.children() if process_name(pid) == "shelfd session"]

    def stop(self, sig=signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._stderr.close()
        return self.proc.returncode

    def alive(self) -> bool:
        return self.proc.poll() is None


def process_children(pid: int) -> list[int]:
    children = []
    try:
        for task in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, task)) as handle:
                children.extend(int(p) for p in handle.read().split())
    except FileNotFoundError:
        pass
    return children


def process_name(pid: int) -> str | None:
    try:
        with open("/proc/%d/comm" % pid) as handle:
            return handle.read().strip()
    except OSError:
        return None


def process_state(pid: int) -> str | None:
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return None


def zombies_of(pid: int) -> list[int]:
    return [child for child in process_children(pid) if process_state(child) == "Z"]


class Raw:
    """A bare TCP connection speaking the protocol by hand."""

    def __init__(self, port: int, host: str = "127.0.0.1", greet: bool = True):
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.buffer = b""
        self.greeting = self.line() if greet else None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.sock.close()

    def send(self, data: bytes | str):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def request(self, line: bytes | str) -> str:
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.send(line + b"\n")
        return self.line()

    def line(self) -> str:
        while b"\n" not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("connection closed; buffered %r" % self.buffer[:200])
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode("utf-8")

    def exact(self, count: int) -> bytes:
        while len(self.buffer) < count:
            data = self.sock.recv(1 << 20)
            if not data:
                raise EOFError("connection closed after %d of %d bytes" % (len(self.buffer), count))
            self.buffer += data
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def closed_by_peer(self) -> bool:
        """True once the server has closed the connection (EOF after any data)."""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.buffer += data
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def put(self, name: str, data: bytes, replace: bool = False) -> tuple[str, str | None]:
        """PUT (the first reply is ``OK <upload token>``); (first reply, final reply or None)."""
        first = self.request("PUT %s %d%s" % (name, len(data), " replace" if replace else ""))
        if not first.startswith("OK "):
            return first, None
        self.send(data)
        return first, self.line()

    def get(self, name: str, offset: int | None = None,
            version: str | None = None) -> tuple[str, bytes | None]:
        request = "GET %s" % name if offset is None else "GET %s %d" % (name, offset)
        if version is not None:
            request += " " + version
        reply = self.request(request)
        if not reply.startswith("OK "):
            return reply, None
        return reply, self.exact(int(reply.split()[1]))


GREETING = "READY shelf/2"  # then the server's features


def greeted(line: str | bytes) -> bool:
    """True if ``line`` is a version-2 greeting (whatever the features)."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")
    return line.rstrip("\n") == GREETING or line.startswith(GREETING + " ")


def visible(root) -> list[str]:
    """What a user sees in a library folder: the server's working folders left out."""
    return sorted(name for name in os.listdir(root) if not name.startswith(".shelf-"))


def upload_temporaries(root) -> list[str]:
    """The data files of uploads in progress or kept for RESUME (``.shelf-uploads``)."""
    folder = Path(root) / ".shelf-uploads"
    if not folder.is_dir():
        return []
    return sorted(name for name in os.listdir(folder) if not name.endswith(".info"))
