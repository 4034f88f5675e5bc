"""Render docs/screenshot.png: the real window, both panes filled, transfers running.

Run by ``make screenshot`` (under Xvfb when there is no display). Starts a
demo shelfd, drives the app like the GUI tests do, grabs the window with
Pillow's ImageGrab and stops everything.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gui.demo import DemoServer, make_demo_library  # noqa: E402


def pump(root, condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("screenshot: timed out")
        root.update()
        time.sleep(0.01)


def main(output: str) -> int:
    from PIL import ImageGrab

    from gui.__main__ import make_root
    from gui.app import ShelfApp

    work = tempfile.mkdtemp(prefix="shelf-shot-")
    library = os.path.join(work, "library")
    make_demo_library(library)
    for name, size in (("holiday video.mp4", 734_003_200), ("dataset.tar", 2_147_483_648)):
        with open(os.path.join(library, name), "wb") as handle:
            handle.truncate(size)
    home = os.path.join(work, "Documents")
    os.makedirs(os.path.join(home, "Projects"))
    os.makedirs(os.path.join(home, "Photos"))
    for name, size in (("thesis-final.pdf", 4_812_000), ("backup 2026-11.tar", 6_442_450_944),
                       ("camera roll.zip", 3_221_225_472), ("notes.md", 2_048),
                       ("presentation.odp", 12_345_678)):
        with open(os.path.join(home, name), "wb") as handle:
            handle.truncate(size)
    server = DemoServer(library, 0)
    os.environ["XDG_CONFIG_HOME"] = os.path.join(work, "config")
    os.environ["XDG_STATE_HOME"] = os.path.join(work, "state")
    root = make_root()
    app = ShelfApp(root, host="127.0.0.1", port=server.port, theme="light")
    try:
        root.geometry("1180x720+0+0")
        app.local.open_folder(home)
        pump(root, lambda: len(app.remote.rows) >= 6)
        app.upload_paths([os.path.join(home, "backup 2026-11.tar"),
                          os.path.join(home, "camera roll.zip"),
                          os.path.join(home, "thesis-final.pdf")])
        app.download_names(["dataset.tar"])
        app.local.select(["backup 2026-11.tar", "camera roll.zip", "thesis-final.pdf"])
        app.remote.select(["holiday video.mp4"])
        pump(root, lambda: any(t.done > 300 << 20 for t in app.transfers.transfers.values()))
        pump(root, lambda: app.transfers.transfers[3].state.finished)
        root.update()
        app.local.tree.focus_set()  # the focus ring shows in the picture
        root.update()
        x, y = root.winfo_rootx(), root.winfo_rooty()
        top = max(0, y - 80)  # the menu bar sits above the root window: keep it, crop the rest
        image = ImageGrab.grab(bbox=(x, top, x + root.winfo_width(), y + root.winfo_height()),
                               xdisplay=os.environ.get("DISPLAY"))
        grey = image.convert("L")
        first = next((row for row in range(y - top)
                      if max(grey.crop((0, row, image.width, row + 1)).getdata()) > 16), 0)
        image = image.crop((0, first, image.width, image.height))
        image.save(output)
        print("wrote %s (%dx%d)" % (output, image.width, image.height))
    finally:
        app._begin_close()
        pump(root, lambda: app.closed, timeout=60)
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshot.png"))
