"""A window-system probe for tests and the benchmark: ``SHELF_PROBE=1 shelf ...``.

UI thread only. The app owns the X selection ``SHELF_PROBE``; another X
client that asks for it (``selection_get(selection="SHELF_PROBE")``) gets a
JSON picture of the window: where each control is and whether it is mapped,
the focus, rows on screen, the transfer batches. Only Tk's event loop can
answer, so the time a request takes is also how long the window was unable
to respond: the responsiveness probe of the real-input tests (which then
click and type with xdotool, like a person).
"""

from __future__ import annotations

import json
import time
import tkinter as tk

SELECTION = "SHELF_PROBE"


def install(app) -> None:
    widget = app.root

    def answer(offset, length):
        offset, length = int(offset), int(length)
        if offset == 0:
            app._probe_text = json.dumps(snapshot(app))
        return app._probe_text[offset:offset + length]

    widget.selection_handle(answer, selection=SELECTION)
    widget.selection_own(selection=SELECTION)
    app._probe_text = "{}"


def _box(widget) -> dict:
    try:
        return {"mapped": bool(widget.winfo_ismapped() and widget.winfo_viewable()),
                "x": widget.winfo_rootx(), "y": widget.winfo_rooty(),
                "w": widget.winfo_width(), "h": widget.winfo_height()}
    except tk.TclError:
        return {"mapped": False}


def _rows(tree, limit: int = 40) -> dict:
    rows = {}
    for item in tree.get_children()[:limit]:
        box = tree.bbox(item)
        if box:
            rows[item] = [tree.winfo_rootx() + box[0], tree.winfo_rooty() + box[1], box[2],
                          box[3]]
    return rows


def _headings(tree) -> dict:
    """Where to click each column's heading (a band along the list's top edge)."""
    boxes, x = {}, tree.winfo_rootx()
    for column in ("#0",) + tuple(tree.cget("columns")):
        width = int(tree.column(column, "width"))
        boxes[column] = [x, tree.winfo_rooty() + 2, width, 14]
        x += width
    return boxes


def _cells(tree, column: str, limit: int = 40) -> dict:
    cells = {}
    for item in tree.get_children()[:limit]:
        box = tree.bbox(item, column)
        if box:
            cells[item] = [tree.winfo_rootx() + box[0], tree.winfo_rooty() + box[1], box[2],
                           box[3]]
    return cells


def snapshot(app) -> dict:
    controls = {str(w): _box(w) for w in app.controls()}
    focus = app.root.focus_get()
    ring = app.focus_ring.visible_around()
    batches = []
    for batch in app.transfers.batches.values():
        batches.append({"id": batch.id, "server": batch.server, "files": len(batch.jobs),
                        "done": batch.done_count, "failed": batch.failed_count,
                        "cancelled": batch.cancelled_count, "finished": batch.finished,
                        "state": app.transfer_list.row_state(batch.id)
                        if app.transfer_list.tree.exists(str(batch.id)) else "",
                        "cancel_latency": batch.cancel_latency})
    return {
        "time": time.monotonic(),
        "window": _box(app.root),
        "controls": controls,
        "names": {name: str(getattr(app, name)) for name in (
            "host_box", "port_entry", "connect_button", "upload_button", "download_button",
            "cancel_button", "retry_button", "clear_button")},
        "panes": {"local": str(app.local.tree), "remote": str(app.remote.tree),
                  "transfers": str(app.transfer_list.tree)},
        "focus": str(focus) if focus is not None else "",
        "ring": str(ring) if ring is not None else "",
        "local_folder": app.local.folder,
        "local_rows": _rows(app.local.tree), "remote_rows": _rows(app.remote.tree),
        "local_selected": len(app.local.tree.selection()),
        "remote_count": len(app.remote.rows),
        "transfer_rows": _rows(app.transfer_list.tree),
        "batches": batches,
        "connected": app.connected,
        "address": list(app.address) if app.address else None,
        "status": app.status_var.get(),
        "state": app.state_var.get(),
        "menu": bool(app.context_menu is not None and app.context_menu.winfo_ismapped()),
        "dialog": app.active_dialog.title() if app.active_dialog is not None else "",
        "dialog_buttons": {str(answer): _box(button) for answer, button in
                           getattr(app.active_dialog, "buttons", {}).items()},
        "status_label": _box(app.status_label),
        "transfer_state_cells": _cells(app.transfer_list.tree, "state"),
        "headings": {"local": _headings(app.local.tree), "remote": _headings(app.remote.tree)},
        "sort": {"local": [app.local.sort_column, app.local.sort_descending],
                 "remote": [app.remote.sort_column, app.remote.sort_descending]},
        "tooltip": next((text for text in (t.shown_text() for t in app.tooltips) if text), ""),
        "unfinished": app.transfers.unfinished,
    }
