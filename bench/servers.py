"""The servers the benchmark measures, each started as its own process on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

from gui.demo import stop_process

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- servers -------------------------------------------------------------------

class Server:
    """A server process on 127.0.0.1 serving ``folder`` (and accepting uploads into ``upload``)."""

    kind = "?"          # "shelf", "http", "ftp", "limit"

    def __init__(self, name: str):
        self.name = name
        self.proc = None
        self.port = None

    def spawn(self, command) -> None:
        """Start the server's process quietly and wait until its port answers."""
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self):
        stop_process(self.proc)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on %d" % port)


class Shelf(Server):
    kind = "shelf"

    def __init__(self, folder, name="Shelf", extra=()):
        super().__init__(name)
        self.port = free_port()
        env = dict(os.environ, PYTHONPATH=ROOT)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "--root", folder, "--port", str(self.port),
             "--log-level", "error", "--max-clients", "128",
             "--max-per-ip", "128", *extra],  # every client is on 127.0.0.1
            env=env, cwd=ROOT, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        wait_port(self.port)


class Limit(Server):
    kind = "limit"

    def __init__(self, mode, path):
        super().__init__("limit")
        self.proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "bench", "limit_peer.py"),
                                      mode, path], stdout=subprocess.PIPE)
        self.port = int(self.proc.stdout.readline())


class HttpServer(Server):
    kind = "http"

    def __init__(self, folder):
        super().__init__("python -m http.server")
        self.port = free_port()
        self.spawn([sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1",
                    "--directory", folder])


class Nginx(Server):
    kind = "http"

    def __init__(self, folder, work):
        super().__init__("nginx")
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(binary):
            raise RuntimeError("nginx is not installed")
        self.port = free_port()
        prefix = os.path.join(work, "nginx")
        os.makedirs(os.path.join(prefix, "logs"), exist_ok=True)
        conf = os.path.join(prefix, "nginx.conf")
        with open(conf, "w") as handle:
            handle.write("""worker_processes 2; pid %s/nginx.pid; error_log %s/logs/error.log;
events { worker_connections 1024; }
http { access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;
  server { listen 127.0.0.1:%d; root %s; autoindex on; } }
""" % (prefix, prefix, self.port, folder))
        self.spawn([binary, "-p", prefix, "-c", conf, "-g", "daemon off;"])


class PyFtpdlib(Server):
    kind = "ftp"

    def __init__(self, folder):
        super().__init__("pyftpdlib")
        import pyftpdlib  # noqa: F401 - missing means "not installed"
        self.port = free_port()
        self.spawn([sys.executable, "-m", "pyftpdlib", "-i", "127.0.0.1", "-p", str(self.port),
                    "-d", folder, "-w"])


class Vsftpd(Server):
    kind = "ftp"

    def __init__(self, folder, work):
        super().__init__("vsftpd")
        binary = shutil.which("vsftpd") or "/usr/sbin/vsftpd"
        if not os.path.exists(binary) or os.geteuid() != 0:
            raise RuntimeError("vsftpd is not installed (or we are not root)")
        self.port = free_port()
        os.makedirs("/var/run/vsftpd/empty", exist_ok=True)
        conf = os.path.join(work, "vsftpd.conf")
        with open(conf, "w") as handle:
            handle.write("""listen=YES
listen_address=127.0.0.1
listen_port=%d
anonymous_enable=YES
anon_root=%s
no_anon_password=YES
write_enable=YES
anon_upload_enable=YES
anon_umask=022
local_enable=NO
seccomp_sandbox=NO
background=NO
xferlog_enable=NO
pasv_enable=YES
pasv_address=127.0.0.1
max_clients=0
max_per_ip=0
use_sendfile=YES
""" % (self.port, folder))
        self.spawn([binary, conf])


