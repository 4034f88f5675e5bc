"""``make bench``: Shelf against the loopback limit and the servers people use instead.

Everything runs on 127.0.0.1 with bounded loops. Every server is started as
its own process, measured with the same Python receiver, in interleaved
rounds; the table shows medians and ratios taken in this one run, because
these machines are shared and noisy. Writes docs/performance.md and two plots.

    python -m bench [--quick] [--no-peers] [--no-gui] [--output docs/performance.md]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.operations import (concurrent_downloads, download, list_folder,  # noqa: E402
                              median_of, session_rate, small_files, timed, upload)
from bench.burst import burst_figures  # noqa: E402
from bench.report import plot, render  # noqa: E402
from bench.servers import HttpServer, Limit, Nginx, PyFtpdlib, Shelf, Vsftpd  # noqa: E402

CHUNK = 1 << 20


# -- the run ------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--no-peers", action="store_true", help="only Shelf and the limit")
    parser.add_argument("--no-gui", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", default=os.path.join(ROOT, "docs", "performance.md"))
    args = parser.parse_args(argv)
    size = (8 << 20) if args.quick else (1 << 30)
    small = 50 if args.quick else 1000
    clients, each = (4, 5) if args.quick else (20, 25)
    parallel, parallel_size = (4, 4 << 20) if args.quick else (64, 64 << 20)
    rounds = 1 if args.quick else args.rounds

    work = tempfile.mkdtemp(prefix="shelf-bench-")
    os.chmod(work, 0o755)  # nginx's workers run as another user
    served = os.path.join(work, "served")
    uploads = os.path.join(work, "uploads")
    os.makedirs(served)
    os.makedirs(uploads)
    incoming = os.path.join(served, "incoming")  # where FTP peers store uploads
    os.makedirs(incoming)
    for folder in (uploads, incoming):
        os.chmod(folder, 0o777)
    big = os.path.join(served, "big.bin")
    with open(big, "wb") as handle:
        block = os.urandom(CHUNK)
        for _ in range(size // CHUNK):
            handle.write(block)
    with open(os.path.join(served, "par.bin"), "wb") as handle:
        handle.write(os.urandom(parallel_size))
    wide_count = 10_000 if args.quick else 100_000
    wide = os.path.join(served, "wide")
    os.makedirs(wide)
    wide_fd = os.open(wide, os.O_RDONLY | os.O_DIRECTORY)
    for index in range(wide_count):  # empty files: a listing's cost, not the disk's
        os.close(os.open("file-%06d.txt" % index, os.O_CREAT | os.O_WRONLY, 0o644,
                         dir_fd=wide_fd))
    os.close(wide_fd)
    names = ["small-%04d.bin" % index for index in range(small)]
    for name in names:
        with open(os.path.join(served, name), "wb") as handle:
            handle.write(os.urandom(4096))
    with open(big, "rb") as handle:  # into the page cache
        while handle.read(CHUNK * 16):
            pass

    missing, results = [], {}
    limit_send = Limit("send", big)
    limit_recv = Limit("recv", uploads)
    shelf = Shelf(served)
    shelf_upload = Shelf(uploads, "Shelf (upload target)")
    shelf_nofsync = Shelf(uploads, "Shelf, no fsync", ["--no-fsync"])
    servers = [shelf]
    if not args.no_peers:
        for make in (lambda: Nginx(served, work), lambda: Vsftpd(served, work),
                     lambda: PyFtpdlib(served), lambda: HttpServer(served)):
            try:
                servers.append(make())
            except Exception as exc:  # noqa: BLE001 - reported as missing, never dropped
                missing.append(str(exc).split("\n")[0])
    # Sessions are measured against a small library: a session's cost, not a listing's.
    few = os.path.join(work, "few")
    os.makedirs(few)
    for name in ("a.txt", "b.txt", "c.txt"):
        with open(os.path.join(few, name), "w") as handle:
            handle.write(name)
    shelf_sessions = Shelf(few, "Shelf (3-file library)")
    shelf_prefork = Shelf(few, "Shelf, --prefork 8", ["--prefork", "8"])
    shelf_fork = Shelf(few, "Shelf, --prefork 0", ["--prefork", "0"])
    download.expected = size
    upload.expected = size
    everything = servers + [limit_send, limit_recv, shelf_upload, shelf_nofsync, shelf_sessions,
                            shelf_prefork, shelf_fork]
    report = {"size": size, "small": small, "missing": missing, "rows": {},
              "clients": clients, "each": each, "parallel": parallel}
    try:
        print("warming up...", file=sys.stderr)
        for server in servers:
            download(server, "big.bin")
        download(limit_send, "big.bin")

        # 1-3: throughput, interleaved rounds
        get_times = {server.name: [] for server in servers}
        get_times["limit"] = []
        client_file = []
        for _ in range(rounds):
            get_times["limit"].append(timed(download, limit_send, "big.bin"))
            for server in servers:
                get_times[server.name].append(timed(download, server, "big.bin"))
            target = os.path.join(work, "download.bin")
            with open(target, "wb") as sink:
                client_file.append(timed(download, shelf, "big.bin", sink))
            os.unlink(target)
        for name, times in get_times.items():
            results.setdefault(name, {})["get_gbps"] = size / statistics.median(times) / 1e9
        results["Shelf"]["get_file_gbps"] = size / statistics.median(client_file) / 1e9

        put_times = {"limit": [], "Shelf": [], "Shelf, no fsync": []}
        ftp_servers = [s for s in servers if s.kind == "ftp"]
        for server in ftp_servers:
            put_times[server.name] = []
        counter = [0]

        def fresh_name():
            counter[0] += 1
            return "up-%d.bin" % counter[0]

        for _ in range(rounds):
            put_times["limit"].append(timed(upload, limit_recv, big, "x"))
            for server, key in ((shelf_upload, "Shelf"), (shelf_nofsync, "Shelf, no fsync")):
                name = fresh_name()
                put_times[key].append(timed(upload, server, big, name))
                os.unlink(os.path.join(uploads, name))
            for server in list(ftp_servers):
                name = fresh_name()
                try:
                    put_times[server.name].append(timed(upload, server, big, "incoming/" + name))
                except Exception as exc:  # noqa: BLE001 - a peer's failure is reported
                    report["missing"].append("%s upload: %s" % (server.name, exc))
                    put_times.pop(server.name)
                    ftp_servers.remove(server)
                    break
                candidate = os.path.join(incoming, name)
                if os.path.exists(candidate):
                    os.unlink(candidate)
        for name, times in put_times.items():
            if times:
                results.setdefault(name, {})["put_gbps"] = size / statistics.median(times) / 1e9

        # 4: small files over one session
        for server in servers:
            seconds = median_of(rounds, lambda: small_files(server, names))
            results[server.name]["small_fps"] = small / seconds

        # 5: LIST of one folder of wide_count files, once warm
        for server in servers:
            try:
                entries = list_folder(server, "wide")
                seconds = median_of(rounds, lambda: timed(list_folder, server, "wide"))
                results[server.name]["list_wide"] = {"seconds": seconds, "entries": entries}
            except Exception as exc:  # noqa: BLE001 - a peer's failure is reported
                report["missing"].append("%s LIST: %s" % (server.name, exc))
        report["wide"] = wide_count

        # 6: sessions, and many parallel downloads
        for server in servers:
            target = shelf_sessions if server is shelf else server
            results[server.name]["sessions"] = session_rate(target, clients, each)
        results["Shelf, --prefork 8"] = {"sessions": session_rate(shelf_prefork, clients, each)}
        results["Shelf, --prefork 0"] = {"sessions": session_rate(shelf_fork, clients, each)}
        results["Shelf"]["parallel"] = concurrent_downloads(shelf, "par.bin", parallel,
                                                            parallel_size)
        if any(s.name == "nginx" for s in servers):
            nginx = next(s for s in servers if s.name == "nginx")
            results["nginx"]["parallel"] = concurrent_downloads(nginx, "par.bin", parallel,
                                                                parallel_size)
        results["Shelf"]["master_rss_kib"] = rss_kib(shelf.proc.pid)
        report["burst"] = burst_table(few, work, args.quick, args.no_peers, report["missing"])
        try:  # 7: TLS, Shelf and nginx with one certificate (bench/tls.py)
            from bench.tls import tls_figures
            report["tls"] = tls_figures(served, uploads, work, big, rounds, clients, each,
                                        report["missing"], peers=not args.no_peers)
        except Exception as exc:  # noqa: BLE001 - reported as missing, never dropped
            report["missing"].append("TLS rows: %s" % str(exc).split("\n")[0])
    finally:
        for server in everything:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)

    if not args.no_gui:
        results["gui"] = gui_figures(args.quick)
        results["startup"] = startup_figures()
    report["rows"] = results
    with open(os.path.splitext(args.output)[0] + ".json", "w") as handle:
        json.dump(report, handle, indent=2)  # first: a rendering bug must not lose a run
    text = render(report, args)
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as handle:
        handle.write(text)
    with open(os.path.splitext(args.output)[0] + ".json", "w") as handle:
        json.dump(report, handle, indent=2)
    plot(report, os.path.dirname(os.path.abspath(args.output)))
    return 0


def burst_table(few: str, work: str, quick: bool, no_peers: bool, missing: list) -> dict:
    """300 clients at once, then idle: Shelf (default and pooled), vsftpd, pyftpdlib.

    Each server gets a fresh process and room for every client (Shelf's
    per-address limit would otherwise turn loopback clients away).
    """
    room = ["--max-clients", "400", "--max-per-ip", "400", "--log-level", "info"]
    makers = [lambda: Shelf(few, "Shelf (default: a pool of 4)", room),
              lambda: Shelf(few, "Shelf, --prefork 0 (a fork per session)",
                            room + ["--prefork", "0"])]
    if not no_peers:
        makers += [lambda: Vsftpd(few, work), lambda: PyFtpdlib(few)]
    sizes = (5, 20) if quick else (10, 100, 300)
    figures = {}
    for make in makers:
        try:
            server = make()
        except Exception as exc:  # noqa: BLE001 - reported as missing, never dropped
            missing.append("burst: %s" % str(exc).split("\n")[0])
            continue
        try:
            figures.update(burst_figures([server], sizes))
        finally:
            server.stop()
    return {"sizes": list(sizes), "servers": figures}


def rss_kib(pid: int) -> int | None:
    try:
        with open("/proc/%d/status" % pid) as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def gui_figures(quick: bool) -> dict:
    """Run bench/gui_probe.py under the display we have, or under xvfb-run."""
    command = [sys.executable, os.path.join(ROOT, "bench", "gui_probe.py")]
    if quick:
        command.append("--quick")
    if not os.environ.get("DISPLAY"):
        if not shutil.which("xvfb-run"):
            return {"error": "no display and no xvfb-run"}
        command = ["xvfb-run", "-a", "-s", "-screen 0 1400x900x24"] + command
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": (result.stderr.strip().splitlines() or ["failed"])[-1]}


def startup_figures() -> dict:
    """Start-up of the packaged programs, when `make dist` has built them."""
    dist = os.path.join(ROOT, "dist")
    if not os.path.exists(os.path.join(dist, "shelfd")):
        return {"error": "dist/ not built (make dist)"}
    command = [sys.executable, os.path.join(ROOT, "bench", "startup_probe.py"), dist]
    if not os.environ.get("DISPLAY") and shutil.which("xvfb-run"):
        command = ["xvfb-run", "-a", "-s", "-screen 0 1400x900x24"] + command
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": (result.stderr.strip().splitlines() or ["failed"])[-1]}




if __name__ == "__main__":
    sys.exit(main())
