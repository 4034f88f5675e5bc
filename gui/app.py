"""The desktop client's window: composition and the actions its controls call.

UI thread only, everything in this module. Workers (the control session in
``gui.remote``, transfer workers in ``gui.engine``) reach the UI only through
``self.events``, a ``queue.Queue`` that one ``after()`` loop drains for at
most ``DRAIN_BUDGET`` seconds a tick (``_drain``), then redraws what changed
once; the loop's id is kept and cancelled on close. Tk's own work (redraw,
geometry, input) always gets the rest of the tick.

Every user action is a plain method (``connect``, ``upload_selected``,
``download_names``, ``drop_paths``, ``retry_selected``...) that buttons,
keys, menus and tests all call the same way. Connecting and what the control
session reports are in ``gui.connection``, the offer to resume an earlier
run's transfers in ``gui.resume`` (both parts of this class); the layout
and the keyboard live in ``gui.layout``; what is shown to a person is worded
by ``gui.wording``.
"""

from __future__ import annotations

import logging
import os
import queue
import stat
import time
import tkinter as tk
import traceback

from common import __version__
from common.humanize import human_size
from common.protocol import DEFAULT_PORT, is_valid_name
from gui import settings as settings_module
from gui.connection import ConnectionActions
from gui.desktop import apply_theme, set_window_icon, write_crash_log
from gui.dialogs import ChoiceDialog, resolve_conflicts
from gui.engine import FOLDERS_LATER, FileFinished, LanePaused, WorkerStopped
from gui.journal import Journal
from gui import layout
from gui.layout import build_window
from gui.panes import KIND_WORDS
from gui.engine import Access
from gui.remote import (Connected, Disconnected, Listed, LoginNeeded, RemoteFailed, RemoteWorker,
                        TrustChanged, TrustQuestion)
from gui.resume import ResumeActions
from gui.transfers import DOWNLOAD, UPLOAD, TransferEngine, batch_figures
from gui.wording import plain_error, plural, sentence

log = logging.getLogger("shelf.gui")

POLL_MS = 30          # the drain loop's period
DRAIN_BUDGET = 0.012  # seconds of message handling per tick; the rest is Tk's
QUIT_WAIT = 1.5       # seconds quitting waits for workers' final messages
MAX_FAILURE_LINES = 20  # per batch in Messages; the row and the count tell the rest
CHECK_SLICE = 2000    # paths of a selection checked per turn of the event loop


class ShelfApp(ConnectionActions, ResumeActions):
    def __init__(self, root: tk.Tk, host: str | None = None, port: int | None = None,
                 settings_path: str | None = None, theme: str | None = None,
                 queue_folder: str | None = None):
        self.root = root
        self.settings_path = settings_path
        self.settings = settings_module.load(settings_path)
        self.events: queue.Queue = queue.Queue()
        self.closing = False
        self.closed = False
        self.connected = False
        self.connecting = False
        self.address: tuple | None = None   # the server the window browses
        self.access = Access()              # how it was reached (TLS, user)
        self.active_dialog = None
        self.interrupted = False            # set by the SIGINT handler (only a flag)
        self._drag = None
        self._dirty: set = set()
        self._new_batches: set = set()
        self._failure_lines: dict = {}
        self._save_job = None
        self._check_job = None
        self._close_deadline = 0.0
        self.context_menu = None

        root.title("Shelf")
        set_window_icon(root)
        root.report_callback_exception = self.report_exception
        self.scale = max(1.0, root.winfo_fpixels("1i") / 96.0)
        self.theme = apply_theme(root, theme)
        build_window(self)
        root.geometry(self.settings.geometry)
        root.protocol("WM_DELETE_WINDOW", self.on_close)

        if queue_folder is None:
            queue_folder = os.path.join(settings_module.state_dir(), "queue")
        self.journal = Journal(queue_folder)
        self._left_over = self.journal.unfinished()  # read before this run queues anything
        self.transfers = TransferEngine(self.post, self._batch_changed, self._batch_finished,
                                        self._file_failed, self.journal)
        self.remote_worker = RemoteWorker(self.post)
        self.remote.on_open = self.open_remote_folder
        layout.enable_file_drop(self)
        self._open_first_folder()
        self.root.after_idle(self._restore_split)
        self._poll_id = root.after(POLL_MS, self._drain)
        self.log_message("Shelf %s ready" % __version__)
        self.root.bind("<Configure>", self._window_moved, add="+")
        if host:
            self.connect(host, port or DEFAULT_PORT)
        self._resume_job = self.root.after(200, self.offer_resume)
        if os.environ.get("SHELF_PROBE"):
            from gui import probe
            probe.install(self)

    def _open_first_folder(self) -> None:
        home = os.path.expanduser("~")
        wanted = self.settings.local_folder or home
        if not self.local.open_folder(wanted, quiet=True):
            self.local.open_folder(home)
            self.show_error("The folder %s is no longer there; showing your home folder"
                            % wanted, log_it=True)

    def _restore_split(self) -> None:
        self.root.update_idletasks()
        width = self.paned.winfo_width()
        split = self.settings.split if 260 < self.settings.split < width - 260 else width // 2
        if width > 100:
            self.paned.sash_place(0, split, 1)
        height = self.vpaned.winfo_height()
        if 200 < self.settings.vsplit < height - 150:
            self.vpaned.sash_place(0, 1, self.settings.vsplit)

    # -- the message loop ------------------------------------------------------------

    def post(self, message) -> None:
        """Queue a message for the UI. May be called from any thread (it only enqueues)."""
        self.events.put(message)

    def _drain(self) -> None:
        """UI thread only: handle messages for at most DRAIN_BUDGET, redraw once, come back."""
        deadline = time.monotonic() + DRAIN_BUDGET
        handled = 0
        while True:
            try:
                message = self.events.get_nowait()
            except queue.Empty:
                break
            self._dispatch(message)
            handled += 1
            if handled % 32 == 0 and time.monotonic() > deadline:
                break
        self._tick()
        if self.interrupted and not self.closing:
            self._begin_close(cancel=False)
        if self.closing and (self.transfers.live_workers == 0 or
                             time.monotonic() > self._close_deadline):
            self._finish_close()
            return
        self._poll_id = self.root.after(POLL_MS, self._drain)

    def _dispatch(self, message) -> None:
        if isinstance(message, (FileFinished, WorkerStopped, LanePaused)):
            self.transfers.handle(message)
        elif isinstance(message, Connected):
            self._connected(message)
        elif isinstance(message, Listed):
            self._listed(message)
        elif isinstance(message, RemoteFailed):
            self._remote_failed(message)
        elif isinstance(message, Disconnected):
            self._set_disconnected("Disconnected")
        elif isinstance(message, LoginNeeded):
            self._login_needed(message)
        elif isinstance(message, TrustQuestion):
            self._trust_question(message)
        elif isinstance(message, TrustChanged):
            self._trust_changed(message)

    def _tick(self) -> None:
        """Once per tick: live progress of running batches, changed rows, the queue line."""
        now = time.monotonic()
        live = self.transfers.tick(now)
        dirty = self._dirty | set(live)
        self._dirty = set()
        for batch in dirty:
            if batch.id not in self.transfers.batches:
                continue
            lane = self.transfers.lanes.get(batch.address)
            paused = lane.pause_reason if lane is not None and lane.paused else None
            figures = batch_figures(batch, live.get(batch), paused)
            self.transfer_list.show(batch, figures, follow=batch in self._new_batches)
        self._new_batches.clear()
        for batch_id, shown in list(self.transfer_list.open_batches.items()):
            batch = self.transfers.batches.get(batch_id)
            if batch is not None and batch not in dirty and shown < len(batch.jobs):
                self.transfer_list.refresh_files(batch)  # the next slice of file rows
        if dirty:
            self._update_queue_label(live)
        self.journal.flush()

    # -- actions ----------------------------------------------------------------------

    def refresh(self) -> None:
        self.local.refresh()
        if self.connected:
            self.remote_worker.request_list(self.remote.folder)

    def open_remote_folder(self, folder: str) -> None:
        """Show the library ``folder`` ("" is the root) once its listing arrives."""
        if not self.connected:
            return
        self.status_var.set("Opening %s…" % ("/" + folder if folder else "the library"))
        self.remote_worker.request_list(folder)

    def remote_up(self) -> str:
        """Backspace / Alt+Up in the library: the parent folder, with this one selected."""
        folder = self.remote.folder
        if self.connected and folder:
            parent, _, name = folder.rpartition("/")
            self.remote.select_after = name
            self.open_remote_folder(parent)
        return "break"

    def focus_path(self) -> str:
        self.local.path_entry.focus_set()
        self.local.path_entry.select_range(0, "end")
        return "break"

    def focus_filter(self) -> str:
        self.remote.filter_entry.focus_set()
        self.remote.filter_entry.select_range(0, "end")
        return "break"

    def upload_selected(self) -> None:
        rows = self.local.selected_rows()
        if not rows:
            self.status_var.set("Select files in Your files to upload")
            return
        self.upload_paths([self.local.path_of(row) for row in rows])

    def download_selected(self) -> None:
        names = [row.name for row in self.remote.selected_rows()]  # in the folder shown
        if not names:
            self.status_var.set("Select files in the Library to download")
            return
        self.download_names(names)

    def drop_paths(self, paths) -> None:
        """Files dropped on the library (from the file manager or the other pane)."""
        self.upload_paths(list(paths))

    def upload_paths(self, paths) -> None:
        """Check the paths, then queue the files among them as one batch.

        A big selection is checked ``CHECK_SLICE`` paths per turn of the event
        loop (a stat each: 10,000 of them would freeze the window for a few
        hundred milliseconds), then queued as one batch to the server it was
        chosen for."""
        if not self.connected:
            self.show_error("Connect to a library first", log_it=True)
            return
        paths = list(paths)
        address = self.address
        items, refused = [], []
        if len(paths) <= CHECK_SLICE:
            self._check_uploads(paths, items, refused)
            self._queue_uploads(address, items, refused)
            return
        self.status_var.set("Checking %s…" % plural(len(paths), "file"))

        def step(start: int) -> None:
            self._check_job = None
            self._check_uploads(paths[start:start + CHECK_SLICE], items, refused)
            if start + CHECK_SLICE < len(paths):
                self._check_job = self.root.after(1, step, start + CHECK_SLICE)
            else:
                self._queue_uploads(address, items, refused)

        step(0)

    def _check_uploads(self, paths, items, refused) -> None:
        for path in paths:
            name = os.path.basename(os.path.normpath(path))
            row = self.local.rows.get(name) if os.path.dirname(path) == self.local.folder \
                else None
            if row is not None and row.special:
                refused.append("“%s” is a %s, not a file" % (name, KIND_WORDS[row.kind]))
                continue
            try:
                info = os.stat(path)  # one stat says it all
            except OSError as exc:
                refused.append("cannot read %s: %s" % (name, (exc.strerror or exc)).lower()
                               if exc.strerror else "cannot read %s" % name)
                continue
            if stat.S_ISDIR(info.st_mode):
                refused.append("“%s” is a folder: Shelf 1.0 uploads files only; open the "
                               "folder and select the files inside" % name)
                continue
            if not stat.S_ISREG(info.st_mode):
                refused.append("“%s” is not a regular file (a pipe, socket or device)" % name)
                continue
            if not is_valid_name(name):
                refused.append("Cannot upload “%s”: names starting with “.” are hidden in "
                               "the library" % name if name.startswith(".") else
                               "Cannot upload “%s”: not a valid library name" % name)
                continue
            items.append({"name": name, "path": path, "size": info.st_size})

    def _queue_uploads(self, address, items, refused) -> None:
        if self.closing or self.closed:
            return
        self._report_refused(refused, "uploaded")
        if not items:
            return
        if not self.connected or self.address != address:
            self.show_error("Not uploaded: the connection to %s:%d ended while the files "
                            "were checked" % address, log_it=True)
            return
        folder = self.remote.folder
        self._queue(UPLOAD, items, set(self.remote.rows),
                    "in %s" % folder if folder else "in the library", allow_overwrite=False,
                    remote_folder=folder)

    def download_names(self, names, folder: str | None = None) -> None:
        folder = folder or self.local.folder
        if not self.connected:
            self.show_error("Connect to a library first", log_it=True)
            return
        items, folders = [], []
        for name in names:
            row = self.remote.rows.get(name)
            if row is not None and row.is_dir:
                folders.append(name)  # this version moves files only
                continue
            items.append({"name": self.remote.folder + "/" + name if self.remote.folder
                          else name,
                          "path": os.path.join(folder, name),
                          "size": row.size if row else 0, "mtime": row.mtime if row else 0,
                          "version": row.version if row else None})
        if folders:
            self._report_refused(["“%s” is a folder: %s (shelf-cli get -r fetches one now)"
                                  % (name, FOLDERS_LATER) for name in folders], "downloaded")
            if not items:
                return
        try:
            taken = set(os.listdir(folder))
        except OSError as exc:
            self.show_error("Cannot write in %s: %s" % (folder, (exc.strerror or exc)),
                            log_it=True)
            return
        self._queue(DOWNLOAD, items, taken, "in %s" % folder, allow_overwrite=True,
                    folder=folder)

    def _report_refused(self, refused, verb) -> None:
        for line in refused[:MAX_FAILURE_LINES]:
            self.log_message(sentence(line), "error")
        if refused:
            text = sentence(refused[0]) if len(refused) == 1 else \
                "%s not %s (see Messages)" % (plural(len(refused), "item"), verb)
            self.status_var.set(text)

    def _queue(self, direction, items, taken, where, allow_overwrite, folder="",
               remote_folder="") -> None:
        """Ask about names already taken, then queue what is left as one batch.

        Names are checked in the library folder shown; an upload's job then names
        its path there (``remote_folder/name``)."""
        address = self.address
        chosen = []

        def enqueue(item):
            if remote_folder:
                item["name"] = remote_folder + "/" + item["name"]
            chosen.append(item)

        def show(dialog):
            self.active_dialog = dialog

        def finished():
            if chosen:
                self.add_batch(direction, address, chosen, folder)

        resolve_conflicts(self.root, items, taken, where, allow_overwrite, enqueue, show,
                          lambda name: self.log_message("Skipped %s" % name),
                          lambda: self.status_var.set("Cancelled"),
                          local_names=direction == DOWNLOAD, finished=finished)

    def add_batch(self, direction, address, items, folder=""):
        batch = self.transfers.add_batch(direction, address, items, folder)
        self._new_batches.add(batch)
        self._tick()
        verb = "Uploading" if direction == UPLOAD else "Downloading"
        if len(items) > 1:
            self.status_var.set("%s %s (%s)" % (verb, plural(len(items), "file"),
                                                human_size(batch.total_bytes)))
        return batch

    def cancel_selected(self) -> None:
        batches = self.transfer_list.selected_batches()
        files = self.transfer_list.selected_files()
        self.transfers.cancel_batches([b.id for b in batches])
        self.transfers.cancel_jobs(files)

    def retry_selected(self) -> list:
        """Retry the selected failed or cancelled files, only on the server they belong to."""
        batches = self.transfer_list.selected_batches()
        files = self.transfer_list.selected_files()
        servers = {b.address for b in batches} | {f.batch.address for f in files}
        if not servers:
            self.status_var.set("Select the transfers to retry")
            return []
        elsewhere = sorted(s for s in servers if not self.connected or s != self.address)
        if elsewhere:
            text = ("Retry refused: %s belong%s to %s; connect to %s to retry them"
                    % ("these transfers" if len(batches) + len(files) > 1 else
                       "this transfer", "" if len(batches) + len(files) > 1 else "s",
                       ", ".join("%s:%d" % s for s in elsewhere),
                       "it" if len(elsewhere) == 1 else "each"))
            self.show_error(text, log_it=True)
            return []
        retried = self.transfers.retry(batches, files)
        if retried:
            self.log_message("Retrying %s" % plural(len(retried), "file"))
            self.status_var.set("Retrying %s" % plural(len(retried), "file"))
        return retried

    def clear_finished(self) -> None:
        for batch in self.transfers.clear_finished():
            self.transfer_list.remove(batch.id)
        self._update_queue_label({})

    def drop_between_panes(self, source_pane, target_widget) -> None:
        layout.drop_between_panes(self, source_pane, target_widget)

    def controls(self) -> list:
        return layout.controls(self)

    # -- transfer outcomes -------------------------------------------------------------

    def _batch_changed(self, batch) -> None:
        self._dirty.add(batch)

    def _file_failed(self, job) -> None:
        what = "Upload" if job.direction == UPLOAD else "Download"
        text = "%s of %s failed: %s" % (what, job.name, job.error)
        shown = self._failure_lines.get(job.batch.id, 0)
        if shown < MAX_FAILURE_LINES:
            self.log_message(text, "error")
        self._failure_lines[job.batch.id] = shown + 1
        self.status_var.set(text)

    def _batch_finished(self, batch) -> None:
        self._dirty.add(batch)
        seconds = max(0.001, batch.finished_at - (batch.first_start or batch.created))
        verb = "Uploaded" if batch.direction == UPLOAD else "Downloaded"
        where = "to" if batch.direction == UPLOAD else "from"
        if batch.done_count:
            what = batch.jobs[0].name if len(batch.jobs) == 1 else \
                plural(batch.done_count, "file")
            self.log_message("%s %s (%s in %.1f s, %s/s) %s %s" % (
                verb, what, human_size(batch.done_bytes), seconds,
                human_size(batch.done_bytes / seconds), where, batch.server), "ok")
        if batch.failed_count > MAX_FAILURE_LINES:
            self.log_message("… and %s more failed (open the row to see each)"
                             % plural(batch.failed_count - MAX_FAILURE_LINES, "file"), "error")
        if batch.cancelled_count:
            self.log_message("Cancelled %s" % (batch.jobs[0].name if len(batch.jobs) == 1
                                               else plural(batch.cancelled_count, "file")))
        if batch.failed_count:
            self.status_var.set("%s of %s failed (see the transfer list)" % (
                plural(batch.failed_count, "file"), format(len(batch.jobs), ",")) if
                len(batch.jobs) > 1 else "%s of %s failed: %s" % (
                "Upload" if batch.direction == UPLOAD else "Download", batch.jobs[0].name,
                batch.jobs[0].error))
        elif batch.done_count and len(batch.jobs) > 1:
            self.status_var.set("%s %s in %.1f s" % (verb, plural(batch.done_count, "file"),
                                                     seconds))
        # The library is listed again once per batch, not once per file.
        if batch.done_count:
            if batch.direction == UPLOAD and self.connected and self.address == batch.address:
                self.remote_worker.request_list(self.remote.folder)
            elif batch.direction == DOWNLOAD and batch.folder == self.local.folder:
                self.local.refresh()

    def _update_queue_label(self, live) -> None:
        running = sum(figures[1] for figures in live.values())
        queued = max(0, self.transfers.unfinished - running)
        stalled = sum(1 for figures in live.values() if figures[2])
        parts = []
        if running:
            parts.append("%d running" % running)
        if queued:
            parts.append("%s queued" % format(queued, ","))
        if stalled:
            parts.append("%d stalled" % stalled)
        self.queue_var.set(", ".join(parts))

    def _update_actions(self) -> None:
        connected = "normal" if self.connected else "disabled"
        self.upload_button.configure(state=connected)
        self.download_button.configure(state=connected)

    # -- messages to the person -------------------------------------------------------------

    def show_error(self, text: str, log_it: bool = False) -> None:
        """An error where the person is looking: the status bar (tooltip when long)."""
        text = sentence(plain_error(text))
        self.status_var.set(text)
        if log_it:
            self.log_message(text, "error")

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
        if issubclass(exc_type, KeyboardInterrupt):
            self.interrupted = True
            return
        path = write_crash_log("".join(traceback.format_exception(exc_type, exc, tb)))
        text = "Something went wrong: %s" % (exc or exc_type.__name__)
        if path:
            text += " (details in %s)" % path
        try:
            self.log_message(text, "error")
            self.status_var.set(text)
        except tk.TclError:
            pass

    # -- settings, saved as they change ------------------------------------------------------

    def settings_changed(self) -> None:
        if self._save_job is None and not self.closed:
            self._save_job = self.root.after(400, self._save_now)

    def _save_now(self) -> None:
        self._save_job = None
        self.save_settings()

    def _window_moved(self, event) -> None:
        if event.widget is self.root:
            self.settings_changed()

    def save_settings(self) -> None:
        s = self.settings
        try:
            s.geometry = self.root.geometry()
            s.split = int(self.paned.sash_coord(0)[0])
            s.vsplit = int(self.vpaned.sash_coord(0)[1])
        except (tk.TclError, IndexError):
            pass
        s.local_folder = self.local.folder
        s.show_hidden = bool(self.local.hidden_var.get())
        s.local_sort = [self.local.sort_column, self.local.sort_descending]
        s.remote_sort = [self.remote.sort_column, self.remote.sort_descending]
        settings_module.save(s, self.settings_path)

    # -- closing --------------------------------------------------------------------------------

    def on_close(self) -> None:
        if self.closing or self.closed:
            return
        left = self.transfers.unfinished
        if not left:
            self._begin_close()
            return

        def answered(choice) -> None:
            self.active_dialog = None
            if choice is True:
                self._begin_close(cancel=True)
            elif choice == "later":
                self._begin_close(cancel=False)

        self.active_dialog = ChoiceDialog(
            self.root, "Quit Shelf?", "%s still to transfer." % plural(left, "file"),
            [("later", "Quit, finish next time"), (True, "Cancel them and quit"),
             (False, "Keep working")], answered, default="later", cancel_value=False,
            detail="Next time Shelf offers to resume them. Cancelled downloads leave no "
                   "partial files; cancelled uploads leave nothing in the library.")

    def _begin_close(self, cancel: bool = True) -> None:
        """Stop what runs (cancelled, or kept for next time), then close once every worker
        sent its final message, or after QUIT_WAIT whatever the network does."""
        self.closing = True
        self._close_deadline = time.monotonic() + QUIT_WAIT
        if cancel:
            self.transfers.cancel_all()
        self.transfers.stop_all()
        self.remote_worker.abort()
        self.status_var.set("Closing…")

    def _finish_close(self) -> None:
        self.closed = True
        self.journal.flush()
        self.save_settings()
        self.remote_worker.stop()
        for job in (self._save_job, self._resume_job, self._check_job):
            if job is not None:
                self.root.after_cancel(job)
        self.root.after_cancel(self._poll_id)
        self.local.stop_render()
        self.remote.stop_render()
        self.remote_worker.thread.join(0.4)
        self.root.destroy()
