"""Start-up time of the packaged programs (dist/), as one JSON line.

shelfd: from exec to its ``listening on`` log line. shelf: from exec to its
window being mapped (found with ``xdotool search --sync``). Median of 5 starts
each; needs a display for the GUI (the bench runs this under xvfb-run).
"""

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time


def shelfd_start(binary: str, work: str) -> float:
    log = os.path.join(work, "start.log")
    if os.path.exists(log):
        os.unlink(log)
    started = time.perf_counter()
    proc = subprocess.Popen([binary, "--root", work, "--port", "0", "--log-file", log])
    try:
        while True:
            if os.path.exists(log) and re.search(r"listening on", open(log).read()):
                return time.perf_counter() - started
            if time.perf_counter() - started > 30:
                raise RuntimeError("shelfd did not listen")
            time.sleep(0.001)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


def gui_start(binary: str, work: str) -> float:
    env = dict(os.environ, XDG_CONFIG_HOME=os.path.join(work, "config"))
    started = time.perf_counter()
    proc = subprocess.Popen([binary], env=env)
    try:
        subprocess.run(["xdotool", "search", "--sync", "--onlyvisible", "--name", "^Shelf$"],
                       capture_output=True, timeout=30, check=True)
        return time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(15)


def main() -> None:
    dist = sys.argv[1] if len(sys.argv) > 1 else "dist"
    work = tempfile.mkdtemp(prefix="shelf-startup-")
    figures = {}
    if os.path.exists(os.path.join(dist, "shelfd")):
        shelfd_start(os.path.join(dist, "shelfd"), work)  # warm the page cache
        figures["shelfd_listen_s"] = statistics.median(
            shelfd_start(os.path.join(dist, "shelfd"), work) for _ in range(5))
    if os.path.exists(os.path.join(dist, "shelf")) and shutil.which("xdotool") and \
            os.environ.get("DISPLAY"):
        gui_start(os.path.join(dist, "shelf"), work)
        figures["shelf_window_s"] = statistics.median(
            gui_start(os.path.join(dist, "shelf"), work) for _ in range(5))
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
