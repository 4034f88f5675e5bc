"""The desktop client's figures for the benchmark, printed as one JSON line.

Time from creating the window to a listed library of 10,000 files, and the
gaps between event-loop ticks (an ``after(10)`` callback) during a large
upload. Needs a display (the bench runs it under xvfb-run when there is none).
"""

import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gui.demo import DemoServer  # noqa: E402


def pump(root, condition, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(json.dumps({"error": "timed out"}))
        root.update()
        time.sleep(0.002)


def main() -> None:
    quick = "--quick" in sys.argv
    files = 500 if quick else 10000
    transfer = (64 << 20) if quick else (1 << 30)
    work = tempfile.mkdtemp(prefix="shelf-gui-bench-")
    library = os.path.join(work, "library")
    os.makedirs(library)
    for index in range(files):
        open(os.path.join(library, "file-%05d.txt" % index), "wb").close()
    big = os.path.join(work, "big.bin")
    with open(big, "wb") as handle:
        handle.truncate(transfer)
    os.environ["XDG_CONFIG_HOME"] = os.path.join(work, "config")
    server = DemoServer(library, 0)
    import tkinter as tk
    from gui.app import ShelfApp
    try:
        started = time.monotonic()
        root = tk.Tk()
        app = ShelfApp(root, host="127.0.0.1", port=server.port, theme="light")
        pump(root, lambda: len(app.remote.rows) == files)
        root.update()
        list_seconds = time.monotonic() - started
        gaps, last, pending = [], [time.monotonic()], []

        def tick():
            now = time.monotonic()
            gaps.append(now - last[0])
            last[0] = now
            pending[:] = [root.after(10, tick)]

        pending.append(root.after(10, tick))
        app.upload_paths([big])
        pump(root, lambda: app.transfers.transfers and
             all(t.state.finished for t in app.transfers.transfers.values()))
        root.after_cancel(pending[0])
        gaps.sort()
        app._begin_close()
        pump(root, lambda: app.closed)
    finally:
        server.stop()
    print(json.dumps({"files": files, "list_seconds": list_seconds,
                      "transfer_mib": transfer >> 20, "ticks": len(gaps),
                      "p99_gap_ms": 1000 * gaps[max(0, int(len(gaps) * 0.99) - 1)],
                      "worst_gap_ms": 1000 * gaps[-1]}))


if __name__ == "__main__":
    main()
