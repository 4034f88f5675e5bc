"""The desktop client's figures for the benchmark, printed as one JSON line.

1. Listing: time from creating the window to a listed library of 10,000 files.
2. A large upload: gaps between event-loop ticks (an ``after(10)`` callback).
3. Batches: select-all + Upload of 1,000 and 10,000 small files (4 KiB), the
   time to the last file and the event loop's blocked time meanwhile (p99 and
   worst tick gap), against ``shelf-cli put`` of the same files into a fresh
   library.

Needs a display (the bench runs it under xvfb-run when there is none).
"""

import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from gui.demo import DemoServer  # noqa: E402


def pump(root, condition, timeout=600):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(json.dumps({"error": "timed out"}))
        root.update()
        time.sleep(0.002)


class Ticker:
    """Gaps between ``after(10)`` callbacks: how long the window could not respond."""

    def __init__(self, root):
        self.root, self.gaps, self.last, self.pending = root, [], time.monotonic(), None
        self.pending = root.after(10, self.tick)

    def tick(self):
        now = time.monotonic()
        self.gaps.append(now - self.last)
        self.last = now
        self.pending = self.root.after(10, self.tick)

    def stop(self) -> dict:
        self.root.after_cancel(self.pending)
        gaps = sorted(self.gaps) or [0.0]
        return {"ticks": len(gaps), "p99_gap_ms": 1000 * gaps[max(0, int(len(gaps) * 0.99) - 1)],
                "worst_gap_ms": 1000 * gaps[-1]}


def make_files(folder, count, size=4096):
    os.makedirs(folder)
    block = os.urandom(size)
    for index in range(count):
        with open(os.path.join(folder, "photo-%05d.jpg" % index), "wb") as handle:
            handle.write(block)


def cli_seconds(folder, work, tag) -> float:
    library = os.path.join(work, "cli-library-%s" % tag)
    os.makedirs(library)
    server = DemoServer(library, 0)
    try:
        names = sorted(os.listdir(folder))
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "cli", "--host", "127.0.0.1", "--port",
                        str(server.port), "put", *names], cwd=folder, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env=dict(os.environ, PYTHONPATH=ROOT))
        seconds = time.monotonic() - started
        # Names starting with "." are the server's own working folders (protocol 2).
        assert len([n for n in os.listdir(library) if not n.startswith(".")]) == len(names)
    finally:
        server.stop()
    return seconds


def gui_batch(root_factory, folder, work, tag) -> dict:
    from gui.app import ShelfApp
    library = os.path.join(work, "gui-library-%s" % tag)
    os.makedirs(library)
    server = DemoServer(library, 0)
    root = root_factory()
    app = ShelfApp(root, host="127.0.0.1", port=server.port, theme="light",
                   queue_folder=os.path.join(work, "queue-%s" % tag))
    try:
        pump(root, lambda: app.connected)
        app.local.open_folder(folder)
        app.local.select_all()
        root.update()
        ticker = Ticker(root)
        started = time.monotonic()
        app.upload_selected()
        pump(root, lambda: app.transfers.batches)  # a big selection is checked a slice per tick
        batch = app.transfers.batches[max(app.transfers.batches)]
        pump(root, lambda: batch.finished)
        seconds = time.monotonic() - started
        figures = ticker.stop()
        figures.update(seconds=seconds, files=len(batch.jobs), done=batch.done_count)
        app._begin_close()
        pump(root, lambda: app.closed)
    finally:
        server.stop()
    return figures


def main() -> None:
    quick = "--quick" in sys.argv
    files = 500 if quick else 10000
    transfer = (64 << 20) if quick else (1 << 30)
    batch_sizes = (200, 1000) if quick else (1000, 10000)
    work = tempfile.mkdtemp(prefix="shelf-gui-bench-")
    library = os.path.join(work, "library")
    os.makedirs(library)
    for index in range(files):
        open(os.path.join(library, "file-%05d.txt" % index), "wb").close()
    big = os.path.join(work, "big.bin")
    with open(big, "wb") as handle:
        handle.truncate(transfer)
    os.environ["XDG_CONFIG_HOME"] = os.path.join(work, "config")
    os.environ["XDG_STATE_HOME"] = os.path.join(work, "state")
    server = DemoServer(library, 0)
    import tkinter as tk
    from gui.app import ShelfApp
    try:
        started = time.monotonic()
        root = tk.Tk()
        app = ShelfApp(root, host="127.0.0.1", port=server.port, theme="light")
        pump(root, lambda: len(app.remote.rows) == files)
        app.remote.finish_render()
        root.update()
        list_seconds = time.monotonic() - started
        ticker = Ticker(root)
        app.upload_paths([big])
        pump(root, lambda: app.transfers.unfinished == 0 and app.transfers.batches)
        large = ticker.stop()
        app._begin_close()
        pump(root, lambda: app.closed)
    finally:
        server.stop()
    batches = {}
    for count in batch_sizes:
        folder = os.path.join(work, "photos-%d" % count)
        make_files(folder, count)
        gui = gui_batch(tk.Tk, folder, work, str(count))
        gui["cli_seconds"] = cli_seconds(folder, work, str(count))
        batches[str(count)] = gui
    print(json.dumps({"files": files, "list_seconds": list_seconds,
                      "transfer_mib": transfer >> 20, "ticks": large["ticks"],
                      "p99_gap_ms": large["p99_gap_ms"], "worst_gap_ms": large["worst_gap_ms"],
                      "batches": batches}))


if __name__ == "__main__":
    main()
