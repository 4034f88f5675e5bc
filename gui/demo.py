"""``make run``: a demo shelfd on a demo library, and the desktop client connected to it.

Runs in the terminal's process: shelfd is a child process (its log goes to
this terminal), the client runs on the main thread, and shelfd is stopped
with SIGTERM when the window closes. On a machine with no display the demo
keeps shelfd in the foreground until Ctrl+C, which is what issue #2's
``make run`` promised before the client existed.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time

SAMPLES = {
    "Read me.txt": "Welcome to Shelf.\n\nDrag files between the panes, or select them and press "
                   "Upload or Download.\nEverything you upload lands here whole, or not at all.\n",
    "notes.txt": "shopping: coffee, bread, a bigger disk\n",
    "日本語のメモ.txt": "ファイルの名前は自由です。\n",
    "budget 2026.csv": "month,income,spent\n" + "".join(
        "%02d,%d,%d\n" % (m, 3000 + 50 * m, 2500 + 70 * m) for m in range(1, 13)),
    "résumé.md": "# Résumé\n\n* Founding engineer, Shelf\n",
}


def make_demo_library(folder: str) -> bool:
    """Create the demo library with a few sample files; False if it already had files."""
    os.makedirs(folder, exist_ok=True)
    if any(not name.startswith(".") for name in os.listdir(folder)):
        return False
    for name, text in SAMPLES.items():
        with open(os.path.join(folder, name), "w", encoding="utf-8") as handle:
            handle.write(text)
    with open(os.path.join(folder, "photo 🎉.bin"), "wb") as handle:
        handle.write(os.urandom(2_400_000))
    return True


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class DemoServer:
    """A shelfd child process whose stderr is echoed to ours."""

    def __init__(self, library: str, port: int = 8021):
        if not port_is_free(port):
            port = 0
        command = [sys.executable, "-m", "daemon", "--root", library, "--port", str(port)]
        if getattr(sys, "frozen", False):  # a packaged build has no "python -m"
            command = [os.path.join(os.path.dirname(sys.executable), "shelfd"), "--root",
                       library, "--port", str(port)]
        self.proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.port = self._wait_listening()
        self._echo = threading.Thread(target=self._echo_rest, daemon=True)
        self._echo.start()

    def _wait_listening(self, timeout: float = 15.0) -> int:
        deadline = time.monotonic() + timeout
        buffered = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stderr], [], [], 0.2)
            if ready:
                chunk = os.read(self.proc.stderr.fileno(), 4096)
                if not chunk:
                    break
                sys.stderr.buffer.write(chunk)
                sys.stderr.flush()
                buffered += chunk
                match = re.search(rb"listening on \S+:(\d+)", buffered)
                if match:
                    return int(match.group(1))
            elif self.proc.poll() is not None:
                break
        self.stop()
        raise SystemExit("shelf demo: shelfd did not start")

    def _echo_rest(self) -> None:
        for line in self.proc.stderr:
            sys.stderr.buffer.write(line)
            sys.stderr.flush()

    def stop(self) -> None:
        stop_process(self.proc)


def stop_process(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM (shelfd's graceful stop), then SIGKILL if it outlives ``grace``."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shelf-demo")
    parser.add_argument("--library", default=os.path.expanduser(
        "~/.local/share/shelf/demo-library"))
    parser.add_argument("--port", type=int, default=8021)
    args = parser.parse_args(argv)
    if make_demo_library(args.library):
        print("shelf demo: created a demo library in %s" % args.library, file=sys.stderr)
    server = DemoServer(args.library, args.port)
    try:
        if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
            print("shelf demo: no display, so no window; shelfd serves %s on port %d until "
                  "Ctrl+C" % (args.library, server.port), file=sys.stderr)
            try:
                server.proc.wait()
            except KeyboardInterrupt:
                pass
            return 0
        from gui.__main__ import main as gui_main
        return gui_main(["--host", "127.0.0.1", "--port", str(server.port)])
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl+C: still no traceback
        server.stop()


def quiet_main() -> int:
    """``make run``: Ctrl+C at any moment ends it without a traceback."""
    try:
        return main()
    except KeyboardInterrupt:
        print("shelf demo: interrupted", file=sys.stderr)
        return 0


if __name__ == "__main__":
    sys.exit(quiet_main())
