"""shelfd --prefork N: session processes kept ready, one live session per process."""

from __future__ import annotations

import os
import re
import signal

from helpers import Raw, greeted, upload_temporaries, wait_for, zombies_of


def session_pids(daemon) -> list[int]:
    return [int(pid) for pid in re.findall(r"session started \(pid (\d+)", daemon.log())]


def test_ready_processes_serve_sessions_one_after_another(daemon_factory, library):
    daemon = daemon_factory(library, "--prefork", "3")
    wait_for(lambda: len(daemon.children()) == 3, what="three ready processes")
    data = os.urandom(300_000)
    with daemon.connect() as conn:
        assert conn.put("p.bin", data)[1].startswith("OK %d " % len(data))
    for _ in range(20):
        with daemon.connect() as conn:
            reply, body = conn.get("p.bin")
            assert reply.startswith("OK %d " % len(data)) and body == data
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
            return greeted(again.line())             # master hears a process is free
    wait_for(served, what="a free process to serve a new client")


def test_killed_session_process_is_replaced_and_its_upload_kept(daemon_factory, library):
    daemon = daemon_factory(library, "--prefork", "2")
    conn = daemon.connect()
    token = conn.request("PUT cut.bin 1000000").split(" ")[1]
    conn.send(b"x" * 1000)
    kept = library / ".shelf-uploads" / token
    wait_for(lambda: kept.exists() and kept.stat().st_size == 1000, what="the first bytes")
    os.kill(wait_for(daemon.sessions, what="the session process")[0], signal.SIGKILL)
    wait_for(lambda: "was killed by SIGKILL" in daemon.log(), what="the log line")
    conn.close()
    with daemon.connect() as fresh:
        assert fresh.request("LIST") == "EMPTY"
        assert fresh.request("RESUME " + token) == "OK 1000"  # the kernel let go of its lock
        fresh.send(b"y" * 999_000)
        assert fresh.line().startswith("OK 1000000 ")
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
        assert conn.request("PUT x 1").startswith("FAIL denied ")


def test_process_names_tell_ready_from_busy(daemon_factory, library):
    daemon = daemon_factory(library, "--prefork", "2")
    from helpers import process_name
    assert process_name(daemon.pid) == "shelfd"
    # (A child just forked, such as the start-up clean-up, is "shelfd" for a moment.)
    wait_for(lambda: len(daemon.children()) == 2 and {
        process_name(pid) for pid in daemon.children()} == {"shelfd ready"},
        what="two ready processes, named so")
    assert daemon.sessions() == []
    with daemon.connect() as conn:
        assert conn.request("NOOP") == "OK"
        busy = wait_for(daemon.sessions, what="one busy process")
        assert len(busy) == 1
    wait_for(lambda: daemon.sessions() == [], what="the process to be ready again")
