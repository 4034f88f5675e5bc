"""Entry point of the desktop client: ``shelf [--server URL | --host H --port P]``.

Creates the Tk root (with tkdnd for drops from the file manager when its
library loads), the app, and runs the event loop on the main thread. A
failure to start is one friendly line (and a dialog when there is a screen),
never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from common import __version__


def make_root():
    """A Tk root with tkdnd loaded if possible; plain Tk otherwise."""
    import tkinter as tk
    try:
        from tkinterdnd2 import TkinterDnD
        return TkinterDnD.Tk()
    except (ImportError, RuntimeError, tk.TclError):
        return tk.Tk()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shelf", description="The Shelf desktop client.")
    parser.add_argument("--server", metavar="URL",
                        help="connect at start to shelf://[USER@]HOST[:PORT] or shelfs://...")
    parser.add_argument("--host", help="connect to this server at start")
    parser.add_argument("--port", type=int, default=None, help="its port (default 8021)")
    parser.add_argument("--theme", choices=("light", "dark"), help="override the system theme")
    parser.add_argument("--version", action="version", version="shelf %s" % __version__)
    args = parser.parse_args(argv)
    server = None
    if args.server:
        if args.host or args.port:
            parser.error("give --server or --host/--port, not both")
        from gui.connection import parse_url
        try:
            server = parse_url(args.server)
        except ValueError as exc:
            parser.error(str(exc))
    logging.basicConfig(level=logging.WARNING, format="shelf: %(message)s")
    try:
        import tkinter as tk
    except ImportError as exc:  # a minimal system without libxcb1 / libX11
        sys.stderr.write("shelf: cannot load the window toolkit (Tk): %s\n"
                         "shelf: install libxcb1, fontconfig and a font (e.g. fonts-dejavu-core); "
                         "see the README's system requirements\n" % exc)
        return 1
    try:
        root = make_root()
    except tk.TclError as exc:
        sys.stderr.write("shelf: cannot open a window: %s\n" % exc)
        return 1
    from gui.app import ShelfApp
    try:
        app = ShelfApp(root, host=args.host, port=args.port, theme=args.theme)
        if server is not None:
            app.connect(server.host, server.port, server.tls, server.user)
    except Exception as exc:  # noqa: BLE001 - one friendly line instead of a traceback
        from gui.desktop import write_crash_log
        import traceback
        path = write_crash_log(traceback.format_exc())
        sys.stderr.write("shelf: could not start: %s%s\n"
                         % (exc, " (details in %s)" % path if path else ""))
        return 1
    # Ctrl+C in the terminal closes the window the quiet way (the queue is kept for
    # next time). The handler only records; the drain loop acts on it.
    previous = signal.signal(signal.SIGINT, lambda signum, frame: setattr(app, "interrupted", True))
    try:
        root.mainloop()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
