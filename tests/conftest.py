"""Shared fixtures: a real shelfd per test, and a guard against leaks.

The leak guard fails any test that leaves behind threads, open file
descriptors or child processes of the test process: a test that forgets to
stop its daemon or close a socket is a bug in the test or in the product.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers import Daemon, process_children, wait_for  # noqa: E402


def _open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


@pytest.fixture(autouse=True)
def no_leaks(request):
    threads_before = set(threading.enumerate())
    children_before = set(process_children(os.getpid()))
    fds_before = _open_fds()
    yield
    if request.node.get_closest_marker("allow_leaks"):
        return
    wait_for(lambda: set(process_children(os.getpid())) <= children_before, timeout=10,
             what="the test's child processes to exit")
    wait_for(lambda: set(threading.enumerate()) <= threads_before, timeout=10,
             what="the test's threads to end: %s" % (set(threading.enumerate()) - threads_before))
    leaked = _open_fds() - fds_before
    # A descriptor number reused for the same kind of object is not a leak;
    # anything still open that was not open before is.
    leaked = {fd for fd in leaked if os.path.exists("/proc/self/fd/%d" % fd)}
    assert not leaked, "leaked file descriptors: %s" % {
        fd: os.readlink("/proc/self/fd/%d" % fd) for fd in leaked
        if os.path.exists("/proc/self/fd/%d" % fd)}


@pytest.fixture
def library(tmp_path) -> Path:
    root = tmp_path / "library"
    root.mkdir()
    return root


@pytest.fixture
def daemon_factory(tmp_path):
    started = []

    def start(root: Path | None = None, *args: str, **kwargs) -> Daemon:
        root = root or tmp_path / "library"
        daemon = Daemon(root, *args, **kwargs)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


@pytest.fixture
def shelfd(daemon_factory, library) -> Daemon:
    return daemon_factory(library)
