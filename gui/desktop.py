"""What the desktop client asks of the desktop: a theme, a window icon, a crash log.

UI thread only (called while the window is built, and from Tk's exception hook).
"""

from __future__ import annotations

import logging
import os
import time
import tkinter as tk

from gui import settings as settings_module

log = logging.getLogger("shelf.gui")


def set_window_icon(root: tk.Tk) -> None:
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
    try:
        icons = [tk.PhotoImage(master=root, file=os.path.join(folder, "shelf-%d.png" % size))
                 for size in (128, 48)]
        root.iconphoto(True, *icons)
        root._shelf_icons = icons  # keep them alive as long as the window
    except tk.TclError as exc:
        log.info("window icon unavailable: %s", exc)


def apply_theme(root: tk.Tk, theme: str | None = None) -> str:
    """sv-ttk in the system's light or dark mode; plain ttk if it cannot load."""
    mode = (theme or os.environ.get("SHELF_THEME") or system_theme()).lower()
    if mode not in ("light", "dark"):
        mode = "light"
    try:
        import sv_ttk
        sv_ttk.set_theme(mode, root)
    except (ImportError, tk.TclError) as exc:
        log.info("sv-ttk theme unavailable: %s", exc)
        return "default"
    return mode


def system_theme() -> str:
    """'dark' when the desktop asks for it (GNOME's color-scheme), else 'light'."""
    import shutil
    import subprocess
    if not shutil.which("gsettings"):
        return "light"
    try:
        result = subprocess.run(["gsettings", "get", "org.gnome.desktop.interface",
                                 "color-scheme"], capture_output=True, text=True, timeout=1)
    except (OSError, subprocess.SubprocessError):
        return "light"
    return "dark" if "dark" in result.stdout else "light"


def write_crash_log(text: str) -> str | None:
    try:
        folder = settings_module.state_dir()
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "shelf-gui.log")
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(time.strftime("%Y-%m-%d %H:%M:%S ") + text + "\n")
        return path
    except OSError:
        return None
