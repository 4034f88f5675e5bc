"""The desktop client's window: composition and the actions its controls call.

UI thread only, everything in this module. Workers (the control session in
``gui.remote``, transfers in ``gui.transfers``) reach the UI only through
``self.events``, a ``queue.Queue`` that one ``after()`` loop drains in bounded
batches (``_drain``); the loop's id is kept and cancelled on close.

Every user action is a plain method (``connect``, ``upload_selected``,
``download_names``, ``drop_paths``, ...) that the buttons, keys, menus and the
tests all call the same way.
"""

from __future__ import annotations

import logging
import os
import queue
import time
import tkinter as tk
import tkinter.font
import traceback
from tkinter import ttk

from common import __version__
from common.humanize import human_size
from common.protocol import DEFAULT_PORT, is_valid_name
from gui import settings as settings_module
from gui.desktop import apply_theme, set_window_icon, write_crash_log
from gui.dialogs import ConfirmDialog, resolve_conflicts
from gui.panes import LocalPane, RemotePane, make_icons
from gui.remote import Connected, Disconnected, Listed, RemoteFailed, RemoteWorker
from gui.transfers import (DOWNLOAD, UPLOAD, Finished, Progress, State, TransferList,
                           TransferManager)

log = logging.getLogger("shelf.gui")

POLL_MS = 40          # the drain loop's period
MAX_BATCH = 200       # messages handled per tick, so a flood never freezes the UI
DRAG_THRESHOLD = 6    # pixels before a press becomes a drag


class ShelfApp:
    def __init__(self, root: tk.Tk, host: str | None = None, port: int | None = None,
                 settings_path: str | None = None, theme: str | None = None):
        self.root = root
        self.settings_path = settings_path
        self.settings = settings_module.load(settings_path)
        self.events: queue.Queue = queue.Queue()
        self.closing = False
        self.closed = False
        self.connected = False
        self.active_dialog = None
        self._drag = None
        self._refresh_pending = None

        root.title("Shelf")
        set_window_icon(root)
        root.report_callback_exception = self.report_exception
        self.scale = max(1.0, root.winfo_fpixels("1i") / 96.0)
        self.theme = apply_theme(root, theme)
        self.icons = make_icons(root, int(round(16 * self.scale)))
        self._style_rows()
        self._build()
        root.geometry(self.settings.geometry)
        root.protocol("WM_DELETE_WINDOW", self.on_close)

        self.transfers = TransferManager(self.post, self._transfer_changed,
                                         self._transfer_finished)
        self.remote_worker = RemoteWorker(self.post)
        self._bind_keys()
        self._enable_file_drop()
        self.local.open_folder(self.settings.local_folder or os.path.expanduser("~"))
        self.root.after_idle(self._restore_split)
        self._poll_id = root.after(POLL_MS, self._drain)
        self.log_message("Shelf %s ready" % __version__)
        if host:
            self.connect(host, port or DEFAULT_PORT)

    # -- building -----------------------------------------------------------------

    def _style_rows(self) -> None:
        style = ttk.Style(self.root)
        font = tk.font.nametofont("TkDefaultFont")
        height = max(font.metrics("linespace") + int(8 * self.scale), int(22 * self.scale))
        style.configure("Treeview", rowheight=height)

    def _build(self) -> None:
        root = self.root
        outer = ttk.Frame(root, padding=6)
        outer.pack(fill="both", expand=True)

        bar = ttk.Frame(outer)
        bar.pack(fill="x")
        ttk.Label(bar, text="Host").pack(side="left")
        self.host_var = tk.StringVar(root, value=self.settings.host)
        self.host_box = ttk.Combobox(bar, textvariable=self.host_var, width=22,
                                     values=self.settings.recent)
        self.host_box.pack(side="left", padx=(4, 10))
        self.host_box.bind("<<ComboboxSelected>>", self._recent_chosen)
        ttk.Label(bar, text="Port").pack(side="left")
        self.port_var = tk.StringVar(root, value=str(self.settings.port))
        self.port_entry = ttk.Entry(bar, textvariable=self.port_var, width=7)
        self.port_entry.pack(side="left", padx=(4, 10))
        for widget in (self.host_box, self.port_entry):
            widget.bind("<Return>", lambda e: self.connect_clicked())
        self.connect_button = ttk.Button(bar, text="Connect", command=self.connect_clicked,
                                         style="Accent.TButton")
        self.connect_button.pack(side="left")
        self.state_var = tk.StringVar(root, value="Not connected")
        self.state_label = ttk.Label(bar, textvariable=self.state_var)
        self.state_label.pack(side="left", padx=12)

        tools = ttk.Frame(outer)
        tools.pack(fill="x", pady=(6, 0))
        self.upload_button = ttk.Button(tools, text="Upload →", command=self.upload_selected)
        self.download_button = ttk.Button(tools, text="← Download",
                                          command=self.download_selected)
        self.refresh_button = ttk.Button(tools, text="Refresh", command=self.refresh)
        for button in (self.upload_button, self.download_button, self.refresh_button):
            button.pack(side="left", padx=(0, 6))

        # The status bar is packed before the panes so it is never squeezed out.
        self.status_var = tk.StringVar(root, value="Not connected")
        status = ttk.Frame(outer)
        status.pack(side="bottom", fill="x", pady=(4, 0))
        ttk.Label(status, textvariable=self.status_var, anchor="w").pack(side="left")

        self.vpaned = ttk.PanedWindow(outer, orient="vertical")
        self.vpaned.pack(fill="both", expand=True, pady=(6, 0))
        self.paned = ttk.PanedWindow(self.vpaned, orient="horizontal")
        self.local = LocalPane(self.paned, self.icons,
                               self.settings.local_folder or os.path.expanduser("~"),
                               self.settings.show_hidden, tuple(self.settings.local_sort))
        self.local.on_error = lambda message: self.log_message(message, "error")
        self.remote = RemotePane(self.paned, self.icons, tuple(self.settings.remote_sort))
        self.paned.add(self.local, weight=1)
        self.paned.add(self.remote, weight=1)
        self.vpaned.add(self.paned, weight=3)

        bottom = ttk.Notebook(self.vpaned)
        transfers_tab = ttk.Frame(bottom, padding=4)
        self.transfer_list = TransferList(transfers_tab, self.scale)
        self.transfer_list.pack(fill="both", expand=True)
        buttons = ttk.Frame(transfers_tab)
        buttons.pack(fill="x", pady=(4, 0))
        self.cancel_button = ttk.Button(buttons, text="Cancel", command=self.cancel_selected)
        self.retry_button = ttk.Button(buttons, text="Retry", command=self.retry_selected)
        self.clear_button = ttk.Button(buttons, text="Clear finished",
                                       command=self.clear_finished)
        for button in (self.cancel_button, self.retry_button, self.clear_button):
            button.pack(side="left", padx=(0, 6))
        self.queue_var = tk.StringVar(root, value="")
        ttk.Label(buttons, textvariable=self.queue_var).pack(side="right")
        bottom.add(transfers_tab, text="Transfers")

        log_tab = ttk.Frame(bottom, padding=4)
        self.log_text = tk.Text(log_tab, height=6, wrap="word", state="disabled",
                                borderwidth=0, highlightthickness=0)
        log_scroll = ttk.Scrollbar(log_tab, orient="vertical", command=self.log_text.yview)
        self.log_text.configure(yscrollcommand=log_scroll.set)
        self.log_text.pack(side="left", fill="both", expand=True)
        log_scroll.pack(side="right", fill="y")
        self.log_text.tag_configure("error", foreground="#d64545")
        self.log_text.tag_configure("ok", foreground="#2e8b57")
        self.log_text.tag_configure("time", foreground="#888888")
        bottom.add(log_tab, text="Messages")
        self.bottom = bottom
        self.vpaned.add(bottom, weight=1)


        for pane in (self.local, self.remote):
            pane.tree.bind("<Double-1>", lambda e, p=pane: self._double_click(p, e))
            pane.tree.bind("<Return>", lambda e, p=pane: self._enter(p))
            pane.tree.bind("<KP_Enter>", lambda e, p=pane: self._enter(p))
            pane.tree.bind("<Tab>", lambda e, p=pane: self._switch_pane(p))
            pane.tree.bind("<Button-3>", lambda e, p=pane: self._context_menu(p, e))
            pane.tree.bind("<ButtonPress-1>", lambda e, p=pane: self._drag_start(p, e), add="+")
            pane.tree.bind("<B1-Motion>", self._drag_motion, add="+")
            pane.tree.bind("<ButtonRelease-1>", self._drag_end, add="+")
            pane.tree.bind("<<TreeviewSelect>>", lambda e: self._update_actions(), add="+")
        self._update_actions()

    def _bind_keys(self) -> None:
        root = self.root
        root.bind("<F5>", lambda e: self.refresh())
        root.bind("<Control-q>", lambda e: self.on_close())
        root.bind("<Control-Q>", lambda e: self.on_close())
        root.bind("<Control-l>", lambda e: self.focus_path())
        root.bind("<Control-L>", lambda e: self.focus_path())

    def _enable_file_drop(self) -> None:
        """Accept files dropped from the desktop's file manager, where tkdnd loaded."""
        self.file_drop = False
        if not hasattr(self.remote.tree, "drop_target_register"):
            return
        try:
            from tkinterdnd2 import DND_FILES
            self.remote.tree.drop_target_register(DND_FILES)
            self.remote.tree.dnd_bind("<<Drop>>", self._file_manager_drop)
            self.file_drop = True
        except (ImportError, tk.TclError) as exc:
            log.info("drag and drop from the file manager unavailable: %s", exc)

    def _restore_split(self) -> None:
        self.root.update_idletasks()
        width = self.paned.winfo_width()
        split = self.settings.split if 50 < self.settings.split < width - 50 else width // 2
        if width > 100:
            self.paned.sashpos(0, split)
        height = self.vpaned.winfo_height()
        if 100 < self.settings.vsplit < height - 60:
            self.vpaned.sashpos(0, self.settings.vsplit)

    # -- the message loop ------------------------------------------------------------

    def post(self, message) -> None:
        """Queue a message for the UI. May be called from any thread (it only enqueues)."""
        self.events.put(message)

    def _drain(self) -> None:
        """UI thread only: handle at most MAX_BATCH messages, then come back."""
        for _ in range(MAX_BATCH):
            try:
                message = self.events.get_nowait()
            except queue.Empty:
                break
            self._dispatch(message)
        if self.closing and not self.transfers.active:
            self._finish_close()
            return
        self._poll_id = self.root.after(POLL_MS, self._drain)

    def _dispatch(self, message) -> None:
        if isinstance(message, (Progress, Finished)):
            self.transfers.handle(message)
        elif isinstance(message, Connected):
            self._connected(message)
        elif isinstance(message, Listed):
            self._listed(message)
        elif isinstance(message, RemoteFailed):
            self._remote_failed(message)
        elif isinstance(message, Disconnected):
            self._set_disconnected("Disconnected")

    # -- connection -------------------------------------------------------------------

    def connect_clicked(self) -> None:
        if self.connected:
            self.disconnect()
            return
        host = self.host_var.get().strip()
        try:
            port = int(self.port_var.get().strip())
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            self.log_message("The port must be a number from 1 to 65535", "error")
            self.status_var.set("Invalid port")
            return
        if not host:
            self.log_message("Enter the server's host name or address", "error")
            return
        self.connect(host, port)

    def connect(self, host: str, port: int) -> None:
        self.host_var.set(host)
        self.port_var.set(str(port))
        self.state_var.set("Connecting to %s:%d…" % (host, port))
        self.status_var.set("Connecting to %s:%d…" % (host, port))
        self.connect_button.configure(state="disabled")
        self.remote.clear("Connecting…")
        self.log_message("Connecting to %s:%d" % (host, port))
        self.remote_worker.request_connect(host, port)

    def disconnect(self) -> None:
        self.remote_worker.request_disconnect()

    def _recent_chosen(self, event=None) -> None:
        host, _, port = self.host_var.get().rpartition(":")
        if host and port.isdigit():
            self.host_var.set(host)
            self.port_var.set(port)

    def _connected(self, message: Connected) -> None:
        self.connected = True
        self.transfers.address = (message.host, message.port)
        self.settings.remember_server(message.host, message.port)
        self.host_box.configure(values=self.settings.recent)
        self.state_var.set("Connected to %s:%d" % (message.host, message.port))
        self.connect_button.configure(text="Disconnect", state="normal")
        self.log_message("Connected to %s:%d" % (message.host, message.port), "ok")
        self.status_var.set("Connected to %s:%d" % (message.host, message.port))
        self.transfers.start_queued()
        self._update_actions()

    def _listed(self, message: Listed) -> None:
        started = time.monotonic()
        self.remote.show_entries(message.entries)
        total = sum(entry.size for entry in message.entries)
        self.status_var.set("Library: %d files, %s (listed in %.2f s)"
                            % (len(message.entries), human_size(total),
                               time.monotonic() - started))
        self._update_actions()

    def _remote_failed(self, message: RemoteFailed) -> None:
        error = message.error[:1].upper() + message.error[1:]
        self.log_message(error, "error")
        self.status_var.set(error)
        if message.connected:
            return
        self._set_disconnected("Not connected: %s" % message.error)

    def _set_disconnected(self, text: str) -> None:
        self.connected = False
        self.state_var.set(text)
        self.connect_button.configure(text="Connect", state="normal")
        self.remote.clear("Not connected")
        if text == "Disconnected":
            self.log_message("Disconnected")
            self.status_var.set("Disconnected")
        self._update_actions()

    # -- actions ----------------------------------------------------------------------

    def refresh(self) -> None:
        self.local.refresh()
        if self.connected:
            self.remote_worker.request_list()

    def refresh_remote_soon(self) -> None:
        """Coalesce the refreshes that a burst of finished uploads asks for."""
        if self._refresh_pending is None and self.connected:
            self._refresh_pending = self.root.after(250, self._refresh_remote_now)

    def _refresh_remote_now(self) -> None:
        self._refresh_pending = None
        if self.connected and not self.closed:
            self.remote_worker.request_list()

    def focus_path(self) -> str:
        self.local.path_entry.focus_set()
        self.local.path_entry.select_range(0, "end")
        return "break"

    def upload_selected(self) -> None:
        rows = self.local.selected_rows()
        if not rows:
            self.status_var.set("Select files in Your files to upload")
            return
        self.upload_paths([self.local.path_of(row) for row in rows])

    def download_selected(self) -> None:
        names = [row.name for row in self.remote.selected_rows()]
        if not names:
            self.status_var.set("Select files in the Library to download")
            return
        self.download_names(names)

    def drop_paths(self, paths) -> None:
        """Files dropped on the library (from the file manager or the other pane)."""
        self.upload_paths(list(paths))

    def upload_paths(self, paths) -> None:
        if not self.connected:
            self.log_message("Connect to a library first", "error")
            self.status_var.set("Not connected")
            return
        items = []
        for path in paths:
            name = os.path.basename(os.path.normpath(path))
            if os.path.isdir(path):
                self.log_message("“%s” is a folder: Shelf 1.0 uploads files only; open the "
                                 "folder and select the files inside" % name, "error")
                continue
            if not is_valid_name(name):
                self.log_message("Cannot upload “%s”: names starting with “.” are hidden in "
                                 "the library" % name if name.startswith(".") else
                                 "Cannot upload “%s”: not a valid library name" % name, "error")
                continue
            try:
                size = os.stat(path).st_size
            except OSError as exc:
                self.log_message("Cannot read %s: %s" % (path, exc.strerror), "error")
                continue
            items.append({"name": name, "path": path, "size": size, "overwrite": False})
        taken = set(self.remote.rows)
        self._resolve_conflicts(
            items, taken, where="in the library", allow_overwrite=False,
            enqueue=lambda item: self.transfers.add(UPLOAD, item["name"], item["path"],
                                                    item["size"]))

    def download_names(self, names, folder: str | None = None) -> None:
        folder = folder or self.local.folder
        if not self.connected:
            self.log_message("Connect to a library first", "error")
            return
        items = []
        for name in names:
            row = self.remote.rows.get(name)
            size = row.size if row else 0
            items.append({"name": name, "path": os.path.join(folder, name), "size": size,
                          "overwrite": False})
        try:
            taken = set(os.listdir(folder))
        except OSError as exc:
            self.log_message("Cannot write in %s: %s" % (folder, exc.strerror), "error")
            return

        def enqueue(item):
            self.transfers.add(DOWNLOAD, item["name"], item["path"], item["size"],
                               overwrite=item["overwrite"])
        self._resolve_conflicts(items, taken, where="in %s" % folder, allow_overwrite=True,
                                enqueue=enqueue, local_names=True)

    def _resolve_conflicts(self, items, taken, where, allow_overwrite, enqueue,
                           local_names=False) -> None:
        """Queue ``items``; names already ``taken`` are asked about (see dialogs)."""
        def show(dialog):
            self.active_dialog = dialog

        def cancelled():
            self.status_var.set("Cancelled")

        resolve_conflicts(self.root, items, taken, where, allow_overwrite, enqueue, show,
                          lambda name: self.log_message("Skipped %s" % name), cancelled,
                          local_names)

    def cancel_selected(self) -> None:
        self.transfers.cancel(self.transfer_list.selected_ids())

    def retry_selected(self) -> None:
        if not self.connected:
            self.log_message("Connect to a library first", "error")
        retried = self.transfers.retry(self.transfer_list.selected_ids())
        if retried:
            self.log_message("Retrying %d transfer%s" % (len(retried),
                                                          "" if len(retried) == 1 else "s"))

    def clear_finished(self) -> None:
        for transfer_id in self.transfers.clear_finished():
            self.transfer_list.remove(transfer_id)
        self._update_queue_label()

    # -- transfer outcomes -------------------------------------------------------------

    def _transfer_changed(self, transfer) -> None:
        """Every change of a transfer (the manager's on_change): its row and the queue label."""
        self.transfer_list.show(transfer)
        self._update_queue_label()

    def _transfer_finished(self, transfer) -> None:
        seconds = max(0.001, transfer.finished_at - transfer.started) if transfer.started else 0
        verb = "Uploaded" if transfer.direction == UPLOAD else "Downloaded"
        if transfer.state is State.DONE:
            rate = human_size(transfer.size / seconds) + "/s" if seconds else ""
            self.log_message("%s %s (%s in %.1f s, %s)" % (verb, transfer.name,
                                                           human_size(transfer.size), seconds,
                                                           rate), "ok")
            if transfer.direction == UPLOAD:
                self.refresh_remote_soon()
            elif os.path.dirname(transfer.local_path) == self.local.folder:
                self.local.refresh()
        elif transfer.state is State.FAILED:
            what = "Upload" if transfer.direction == UPLOAD else "Download"
            self.log_message("%s of %s failed: %s" % (what, transfer.name, transfer.error),
                             "error")
            self.status_var.set("%s of %s failed: %s" % (what, transfer.name, transfer.error))
        elif transfer.state is State.CANCELLED:
            self.log_message("Cancelled %s" % transfer.name)

    def _update_queue_label(self) -> None:
        running = len(self.transfers.running)
        queued = sum(1 for t in self.transfers.transfers.values() if t.state is State.QUEUED)
        parts = []
        if running:
            parts.append("%d running" % running)
        if queued:
            parts.append("%d queued" % queued)
        self.queue_var.set(", ".join(parts))

    def _update_actions(self) -> None:
        connected = "normal" if self.connected else "disabled"
        self.upload_button.configure(state=connected)
        self.download_button.configure(state=connected)

    # -- mouse and keys -------------------------------------------------------------------

    def _double_click(self, pane, event) -> str | None:
        item = pane.tree.identify_row(event.y)
        if not item:
            return None
        pane.tree.selection_set(item)
        return self._enter(pane)

    def _enter(self, pane) -> str:
        """Enter: open a folder, or move the selection to the other side."""
        rows = pane.selected_rows()
        if pane is self.local:
            if len(rows) == 1 and rows[0].is_dir:
                self.local.open_folder(self.local.path_of(rows[0]))
            elif rows:
                self.upload_selected()
        elif rows:
            self.download_selected()
        return "break"

    def _switch_pane(self, pane) -> str:
        other = self.remote if pane is self.local else self.local
        other.tree.focus_set()
        if not other.tree.focus() and other.tree.get_children():
            other.tree.focus(other.tree.get_children()[0])
        return "break"

    def _context_menu(self, pane, event) -> None:
        item = pane.tree.identify_row(event.y)
        if item and item not in pane.tree.selection():
            pane.tree.selection_set(item)
        menu = tk.Menu(self.root, tearoff=False)
        if pane is self.local:
            menu.add_command(label="Upload", command=self.upload_selected)
            menu.add_command(label="Up one folder", command=self.local.go_up)
        else:
            menu.add_command(label="Download", command=self.download_selected)
        menu.add_separator()
        menu.add_command(label="Refresh", command=self.refresh)
        try:
            menu.tk_popup(event.x_root, event.y_root)
        finally:
            menu.grab_release()

    def _drag_start(self, pane, event) -> None:
        self._drag = {"pane": pane, "x": event.x_root, "y": event.y_root, "moving": False}

    def _drag_motion(self, event) -> None:
        drag = self._drag
        if drag and not drag["moving"]:
            if abs(event.x_root - drag["x"]) + abs(event.y_root - drag["y"]) > DRAG_THRESHOLD:
                drag["moving"] = True
                drag["pane"].tree.configure(cursor="hand2")

    def _drag_end(self, event) -> None:
        drag, self._drag = self._drag, None
        if not drag or not drag["moving"]:
            return
        drag["pane"].tree.configure(cursor="")
        target = self.root.winfo_containing(event.x_root, event.y_root)
        self.drop_between_panes(drag["pane"], target)

    def drop_between_panes(self, source_pane, target_widget) -> None:
        """A drag from one pane released over ``target_widget``."""
        other = self.remote if source_pane is self.local else self.local
        widget = target_widget
        while widget is not None and widget is not other:
            widget = widget.master
        if widget is None:
            return
        if source_pane is self.local:
            self.upload_selected()
        else:
            self.download_selected()

    def _file_manager_drop(self, event):
        self.drop_paths(self.root.tk.splitlist(event.data))
        return event.action

    # -- messages to the person -------------------------------------------------------------

    def log_message(self, text: str, tag: str | None = None) -> None:
        self.log_text.configure(state="normal")
        self.log_text.insert("end", time.strftime("%H:%M:%S "), "time")
        self.log_text.insert("end", text + "\n", tag or ())
        lines = int(self.log_text.index("end-1c").split(".")[0])
        if lines > 5000:
            self.log_text.delete("1.0", "%d.0" % (lines - 4000))
        self.log_text.see("end")
        self.log_text.configure(state="disabled")
        if tag == "error":
            log.warning(text)

    def log_lines(self) -> list[str]:
        return self.log_text.get("1.0", "end-1c").splitlines()

    def report_exception(self, exc_type, exc, tb) -> None:
        """Tk's hook for an exception in a callback: log it to a file, show one line."""
        path = write_crash_log("".join(traceback.format_exception(exc_type, exc, tb)))
        text = "Something went wrong: %s" % (exc or exc_type.__name__)
        if path:
            text += " (details in %s)" % path
        try:
            self.log_message(text, "error")
            self.status_var.set(text)
        except tk.TclError:
            pass

    # -- closing --------------------------------------------------------------------------------

    def on_close(self) -> None:
        if self.closing or self.closed:
            return
        active = self.transfers.active
        if not active:
            self._begin_close()
            return

        def answered(quit_anyway: bool) -> None:
            self.active_dialog = None
            if quit_anyway:
                self._begin_close()

        self.active_dialog = ConfirmDialog(
            self.root, "Quit Shelf?", "%d transfer%s still running." % (
                len(active), " is" if len(active) == 1 else "s are"),
            "Cancel them and quit", "Keep working", answered,
            detail="Cancelled downloads leave no partial files; cancelled uploads leave "
                   "nothing in the library.")

    def _begin_close(self) -> None:
        """Cancel what runs, then close once every worker sent its final message."""
        self.closing = True
        self.transfers.cancel_all()
        self.status_var.set("Closing…")

    def _finish_close(self) -> None:
        self.closed = True
        self.save_settings()
        self.remote_worker.stop()
        if self._refresh_pending is not None:
            self.root.after_cancel(self._refresh_pending)
        self.root.after_cancel(self._poll_id)
        self.remote_worker.thread.join(2)
        self.root.destroy()

    def save_settings(self) -> None:
        s = self.settings
        try:
            s.geometry = self.root.geometry()
            s.split = int(self.paned.sashpos(0))
            s.vsplit = int(self.vpaned.sashpos(0))
        except tk.TclError:
            pass
        s.local_folder = self.local.folder
        s.show_hidden = bool(self.local.hidden_var.get())
        s.local_sort = [self.local.sort_column, self.local.sort_descending]
        s.remote_sort = [self.remote.sort_column, self.remote.sort_descending]
        settings_module.save(s, self.settings_path)
