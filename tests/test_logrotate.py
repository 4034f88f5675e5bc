"""packaging/logrotate/shelfd, run by the real logrotate against a running shelfd."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from helpers import ROOT, wait_for

SHIPPED = ROOT / "packaging" / "logrotate" / "shelfd"


def logrotate() -> str:
    found = shutil.which("logrotate") or shutil.which("logrotate", path="/usr/sbin:/sbin")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = ["apt-get", "install", "-y", "-q", "logrotate"]
        if subprocess.run(install, env=env, capture_output=True, timeout=600).returncode:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
            subprocess.run(install, env=env, capture_output=True, timeout=600)
        found = shutil.which("logrotate", path="/usr/sbin:/usr/bin:/sbin:/bin")
        if found:
            return found
    pytest.skip("logrotate is not installed (apt-get install logrotate, as root)")


def test_rotation_makes_shelfd_write_to_the_new_file(daemon_factory, library, tmp_path):
    program = logrotate()
    pidfile = tmp_path / "shelfd.pid"
    shelfd = daemon_factory(library, "--pidfile", str(pidfile))
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() == str(shelfd.pid),
             what="the PID file")
    log = shelfd.log_path
    assert "listening on" in log.read_text()

    # The shipped file, pointed at this test's log and PID file.
    config = tmp_path / "logrotate.conf"
    text = SHIPPED.read_text()
    assert "/var/log/shelfd.log" in text and "/run/shelfd.pid" in text
    config.write_text(text.replace("/var/log/shelfd.log", str(log))
                      .replace("/run/shelfd.pid", str(pidfile)))
    config.chmod(0o644)
    result = subprocess.run([program, "--force", "--verbose", "--state", str(tmp_path / "state"),
                             str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr

    rotated = log.with_name(log.name + ".1")  # delaycompress: the newest stays plain
    assert "listening on" in rotated.read_text()
    # The postrotate SIGHUP made shelfd reopen its log: new lines go to the new file.
    wait_for(lambda: log.exists() and "reloaded" in log.read_text(), timeout=10,
             what="shelfd to reopen its log after rotation")
    with shelfd.connect() as conn:
        assert conn.request("LIST") == "EMPTY"
    wait_for(lambda: "session started" in log.read_text(), timeout=10,
             what="a session line in the new log")
    assert "session started" not in rotated.read_text()
    assert shelfd.alive()
