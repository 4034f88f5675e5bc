"""shelfd --prefork N: session processes kept ready, one live session per process."""

from __future__ import annotations

import os
import re
import signal

from helpers import Raw, wait_for, zombies_of


def session_pids(daemon) -> list[int]:
    return [int(pid) for pid in re.findall(r"session started \(pid (\d+)", daemon.log())]


def test_ready_processes_serve_sessions_one_after_another(daemon_factory, library):
    daemon = daemon_factory(library, "--prefork", "3")
    wait_for(lambda: len(daemon.children()) == 3, what="three ready processes")
    data = os.urandom(300_000)
    with daemon.connect() as conn:
        assert conn.put("p.bin", data) == ("OK", "OK %d" % len(data))
    for _ in range(20):
        with daemon.connect() as conn:
            assert conn.get("p.bin") == ("OK %d" % len(data), data)
    wait_for(lambda: len(session_pids(daemon)) == 21, what="21 logged sessions")
    pids = session_pids(daemon)
    assert len(set(pids)) <= 6  # 21 sessions, a handful of processes: they were reused
    assert 3 <= len(daemon.children()) <= 6  # at least N ready, at most 2N idle
    assert zombies_of(daemon.pid) == []
    assert daemon.pid not in pids


def test_busy_when_every_allowed_process_is_busy(daemon_factory, library):
    daemon = daemon_factory(library, "--prefork", "2", "--max-clients", "3")
    held = [daemon.connect() for _ in range(3)]
    try:
        for conn in held:
            assert conn.request("NOOP") == "OK"
        with Raw(daemon.port, greet=False) as extra:
            assert extra.line() == "BUSY"
        assert len(daemon.children()) == 3  # never more processes than max_clients
    finally:
        for conn in held:
            conn.close()
    wait_for(lambda: "refused" in daemon.log(), what="the refusal in the log")
    wait_for(lambda: daemon.log().count("session ended") == 3, what="the sessions to end")

    def served():
        with Raw(daemon.port, greet=False) as again:  # BUSY is fair until the
            return again.line() == "READY shelf/1"    # master hears a process is free
    wait_for(served, what="a free process to serve a new client")


def test_killed_session_process_is_replaced_and_its_upload_removed(daemon_factory, library):
    daemon = daemon_factory(library, "--prefork", "2")
    conn = daemon.connect()
    assert conn.request("PUT cut.bin 1000000") == "OK"
    conn.send(b"x" * 1000)
    temp = wait_for(lambda: [n for n in os.listdir(library) if n.startswith(".shelf-upload")],
                    what="the temporary")[0]
    os.kill(int(temp.rsplit(".", 1)[1]), signal.SIGKILL)
    wait_for(lambda: os.listdir(library) == [], what="the temporary to be removed")
    wait_for(lambda: "was killed by SIGKILL" in daemon.log(), what="the log line")
    conn.close()
    with daemon.connect() as fresh:
        assert fresh.request("LIST") == "EMPTY"
    wait_for(lambda: len(daemon.children()) >= 2, what="the pool to be topped up")


def test_sigterm_stops_ready_and_busy_processes(daemon_factory, library):
    daemon = daemon_factory(library, "--prefork", "4")
    wait_for(lambda: len(daemon.children()) == 4, what="four ready processes")
    with daemon.connect() as conn:
        conn.request("NOOP")
        assert daemon.stop() == 0
        assert conn.closed_by_peer()


def test_reload_replaces_ready_processes(daemon_factory, library, tmp_path):
    config = tmp_path / "shelfd.ini"
    config.write_text("[shelfd]\nread_only = no\n")
    daemon = daemon_factory(library, "--prefork", "2", "--config", str(config))
    before = set(wait_for(lambda: len(daemon.children()) == 2 and daemon.children(),
                          what="two ready processes"))
    config.write_text("[shelfd]\nread_only = yes\n")
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: len(set(daemon.children()) - before) == 2, what="two fresh processes")
    with daemon.connect() as conn:
        assert conn.request("PUT x 1") == "FAIL library is read-only"


def test_process_names_tell_ready_from_busy(daemon_factory, library):
    daemon = daemon_factory(library, "--prefork", "2")
    from helpers import process_name
    assert process_name(daemon.pid) == "shelfd"
    wait_for(lambda: len(daemon.children()) == 2, what="two ready processes")
    assert daemon.sessions() == []
    assert {process_name(pid) for pid in daemon.children()} == {"shelfd ready"}
    with daemon.connect() as conn:
        assert conn.request("NOOP") == "OK"
        busy = wait_for(daemon.sessions, what="one busy process")
        assert len(busy) == 1
    wait_for(lambda: daemon.sessions() == [], what="the process to be ready again")
