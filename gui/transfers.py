"""The transfer queue the window sees: batches, their state, and the transfer list.

UI thread only, all of it. ``TransferEngine`` turns an action into a
``Batch`` on the lane of the batch's own server (``gui.engine`` moves the
bytes), applies each worker message in constant time, and once per tick
(``tick``) samples the live progress of the running files and says which
batches changed. ``TransferList`` draws one row per batch (a row per file
only when the batch is opened, filled a slice per tick).
"""

from __future__ import annotations

import time
import tkinter as tk
from tkinter import ttk

from common.humanize import human_duration, human_rate, human_size
from gui.engine import (DOWNLOAD, MAX_PARALLEL, STALL_SECONDS, UPLOAD, Batch, FileFinished,
                        FileJob, Lane, LanePaused, State, WorkerStopped, part_path,
                        remove_quietly)
from gui.wording import plural

__all__ = ["TransferEngine", "TransferList", "State", "UPLOAD", "DOWNLOAD"]


class TransferEngine:
    """Batches, lanes and counters. UI thread only.

    ``on_change(batch)`` after a batch changed (coalesced: the app redraws
    once per tick), ``on_batch_finished(batch)`` when its last file ended,
    ``on_file_failed(job)`` for each failed file.
    """

    def __init__(self, post, on_change, on_batch_finished, on_file_failed, journal=None,
                 max_parallel: int = MAX_PARALLEL):
        self.post = post
        self.on_change = on_change
        self.on_batch_finished = on_batch_finished
        self.on_file_failed = on_file_failed
        self.journal = journal
        self.max_parallel = max_parallel
        self.lanes: dict[tuple, Lane] = {}
        self.batches: dict[int, Batch] = {}
        self.transfers: dict[int, FileJob] = {}   # every file by id
        self.unfinished = 0
        self.live_workers = 0
        self._next_batch = 1
        self._next_job = 1

    # -- queueing --

    def lane(self, address: tuple) -> Lane:
        lane = self.lanes.get(address)
        if lane is None:
            lane = self.lanes[address] = Lane(address, self.post, self.max_parallel)
        return lane

    def set_access(self, address: tuple, access) -> None:
        """How that server's workers open sessions from now on (``gui.engine.Access``:
        TLS, trust, login), once the control session got in. UI thread only."""
        self.lane(address).access = access

    def add_batch(self, direction: str, address: tuple, items, folder: str = "") -> Batch:
        """Queue ``items`` (dicts: name, path, size, and mtime/overwrite/resume/version)
        as one batch."""
        batch = Batch(self._next_batch, direction, tuple(address), folder=folder)
        self._next_batch += 1
        for item in items:
            job = FileJob(self._next_job, batch, item["name"], item["path"], item["size"],
                          item.get("mtime", 0.0), item.get("overwrite", False),
                          item.get("resume", False), version=item.get("version"))
            self._next_job += 1
            batch.jobs.append(job)
            batch.total_bytes += job.size
            self.transfers[job.id] = job
        self.batches[batch.id] = batch
        self.unfinished += len(batch.jobs)
        if self.journal is not None:
            batch.journal_key = self.journal.add(batch)
        lane = self.lane(batch.address)
        lane.enqueue(batch.jobs)
        self._start(lane)
        self.on_change(batch)
        return batch

    def _start(self, lane: Lane) -> None:
        started = lane.start_workers()
        self.live_workers += len(started)
        for worker in started:
            self._mark_started(worker.job)

    @staticmethod
    def _mark_started(job: FileJob) -> None:
        if not job.batch.first_start:
            job.batch.first_start = time.monotonic()

    # -- worker messages (constant work each) --

    def handle(self, message) -> None:
        if isinstance(message, FileFinished):
            self._file_finished(message)
        elif isinstance(message, WorkerStopped):
            self.live_workers -= 1
            lane = message.worker.lane
            self._start(lane)  # work queued while it was leaving
        elif isinstance(message, LanePaused):
            for batch in self.batches.values():
                if batch.address == message.lane.address and not batch.finished:
                    self.on_change(batch)

    def _file_finished(self, message: FileFinished) -> None:
        job, batch = message.job, message.job.batch
        lane = self.lanes[batch.address]
        if message.paused:
            with lane.lock:
                job.state = State.QUEUED
                job.pause_requested = False
                job.done = 0
                job.error = message.error
            lane.enqueue([job], front=True)
            self.on_change(batch)
            return
        if job.state is not State.RUNNING:
            return  # a stale message
        job.state = message.state
        job.error = message.error
        job.finished_at = time.monotonic()
        self._count(job, +1)
        if message.state is State.DONE:
            job.done = job.size
        elif message.state is State.FAILED:
            self.on_file_failed(job)
        if self.journal is not None:
            self.journal.note(batch, self._index(job), job.state.value)
        self.on_change(batch)
        if batch.finished:
            self._batch_finished(batch)

    @staticmethod
    def _index(job: FileJob) -> int:
        return job.id - job.batch.jobs[0].id  # ids within a batch are consecutive

    def _count(self, job: FileJob, sign: int) -> None:
        batch = job.batch
        if job.state is State.DONE:
            batch.done_count += sign
            batch.done_bytes += sign * job.size
        elif job.state is State.FAILED:
            batch.failed_count += sign
        elif job.state is State.CANCELLED:
            batch.cancelled_count += sign
        self.unfinished -= sign

    def _batch_finished(self, batch: Batch) -> None:
        batch.finished_at = time.monotonic()
        if batch._cancel_asked:
            batch.cancel_latency = batch.finished_at - batch._cancel_asked
        if self.journal is not None and not batch.failed_count:
            self.journal.forget(batch)
        self.on_batch_finished(batch)

    # -- once per tick --

    def tick(self, now: float) -> dict:
        """Live figures of the running batches: {batch: (live bytes, running, stalled)}."""
        live: dict[Batch, list] = {}
        for lane in self.lanes.values():
            with lane.lock:
                pairs = [(w.job, w.progress_at) for w in lane.workers if w.job is not None]
            for job, progress_at in pairs:
                figures = live.setdefault(job.batch, [0, 0, True])
                figures[0] += job.done
                figures[1] += 1
                figures[2] = figures[2] and now - progress_at > STALL_SECONDS
                self._mark_started(job)
        for batch, figures in live.items():
            batch.sample_speed(figures[0], now)
        return live

    # -- the person's actions --

    @property
    def running(self) -> list[FileJob]:
        return [job for lane in self.lanes.values() for job in lane.running_jobs()]

    @property
    def active(self) -> list[FileJob]:
        return [job for job in self.transfers.values() if not job.state.finished]

    def queued_count(self) -> int:
        return self.unfinished - len(self.running)

    def cancel_batches(self, batch_ids) -> None:
        for batch_id in batch_ids:
            batch = self.batches.get(batch_id)
            if batch is not None:
                self.cancel_jobs(batch.jobs)

    def cancel_jobs(self, jobs) -> None:
        now = time.monotonic()
        touched = set()
        for job in jobs:
            if job.state.finished:
                continue
            lane = self.lanes[job.batch.address]
            job.batch._cancel_asked = job.batch._cancel_asked or now
            with lane.lock:
                job.cancel_requested = True
                queued = job.state is State.QUEUED
                if queued:
                    job.state = State.CANCELLED
            if queued:
                job.finished_at = now
                self._count(job, +1)
                self._forget_part(job)
                if self.journal is not None:
                    self.journal.note(job.batch, self._index(job), "cancelled")
                touched.add(job.batch)
            else:
                lane.abort_job(job)  # the worker posts FileFinished(CANCELLED)
        for batch in touched:
            self.on_change(batch)
            if batch.finished:
                self._batch_finished(batch)

    def cancel_all(self) -> None:
        self.cancel_jobs([job for job in self.transfers.values() if not job.state.finished])

    def stop_all(self) -> None:
        """Quitting: pause every lane and wake every worker; the queue stays in the journal."""
        for lane in self.lanes.values():
            lane.set_paused(True, "Shelf was closed")
            with lane.lock:
                for worker in lane.workers:
                    if worker.job is not None:
                        worker.job.pause_requested = True
            lane.abort_all()

    def pause_server(self, address: tuple, reason: str = "paused") -> None:
        lane = self.lanes.get(tuple(address))
        if lane is None:
            return
        lane.set_paused(True, reason)
        with lane.lock:
            running = [w.job for w in lane.workers if w.job is not None]
            for job in running:
                job.pause_requested = True
        lane.abort_all()
        for batch in self.batches.values():
            if batch.address == lane.address and not batch.finished:
                self.on_change(batch)

    def resume_server(self, address: tuple) -> bool:
        lane = self.lanes.get(tuple(address))
        if lane is None or not lane.paused:
            return False
        lane.set_paused(False)
        self._start(lane)
        for batch in self.batches.values():
            if batch.address == lane.address and not batch.finished:
                self.on_change(batch)
        return True

    def unfinished_on(self, address: tuple) -> int:
        return sum(len(b.jobs) - b.finished_count for b in self.batches.values()
                   if b.address == tuple(address))

    def retry(self, batches, files=()) -> list[FileJob]:
        """Queue the failed and cancelled files of ``batches`` (and ``files``) again."""
        jobs = [job for batch in batches for job in batch.jobs] + list(files)
        retried = []
        for job in jobs:
            if job.state not in (State.FAILED, State.CANCELLED):
                continue
            self._count(job, -1)
            job.state = State.QUEUED
            job.done = 0
            job.error = ""
            job.cancel_requested = job.pause_requested = False
            job.batch.finished_at = 0.0
            job.batch._cancel_asked = 0.0
            if self.journal is not None:
                self.journal.note(job.batch, self._index(job), "queued")
            retried.append(job)
        lanes = set()
        for job in retried:
            lane = self.lanes[job.batch.address]
            lane.enqueue([job])
            lanes.add(lane)
        for lane in lanes:
            lane.set_paused(False)
            self._start(lane)
        for batch in {job.batch for job in retried}:
            self.on_change(batch)
        return retried

    def clear_finished(self) -> list[Batch]:
        cleared = [b for b in self.batches.values() if b.finished]
        for batch in cleared:
            del self.batches[batch.id]
            for job in batch.jobs:
                self.transfers.pop(job.id, None)
                if job.state is State.FAILED:
                    self._forget_part(job)
            if self.journal is not None:
                self.journal.forget(batch)
        return cleared

    @staticmethod
    def _forget_part(job: FileJob) -> None:
        if job.direction == DOWNLOAD and job.resume:
            remove_quietly(part_path(job.local_path))
            job.resume = False


# -- the view ------------------------------------------------------------------------------

BAR_WIDTH, BAR_HEIGHT = 100, 12
BAR_COLOURS = {"running": "#2f7de1", "done": "#3aa55d", "failed": "#d64545",
               "cancelled": "#9a9a9a", "queued": "#9a9a9a", "stalled": "#e0a526",
               "paused": "#e0a526"}
DETAIL_SLICE = 400   # file rows added per tick when a batch is opened
FIELD_INSET = 12     # pixels of a list's width that are border and padding (both sides)


def batch_figures(batch: Batch, live: tuple | None, lane_paused: str | None) -> dict:
    """What a batch's row says, from its counters and the tick's live figures."""
    live_bytes, running, stalled = live or (0, 0, False)
    count = len(batch.jobs)
    if batch.total_bytes:
        fraction = min(1.0, (batch.done_bytes + live_bytes) / batch.total_bytes)
    else:
        fraction = batch.finished_count / count if count else 1.0
    if batch.finished and not batch.failed_count and not batch.cancelled_count:
        fraction = 1.0
    single = batch.jobs[0] if count == 1 else None
    speed = eta = ""
    if batch.finished:
        if batch.failed_count:
            kind = "failed"
            state = ("failed: %s" % single.error) if single else \
                "%s failed" % plural(batch.failed_count, "file")
            if not single and batch.done_count:
                state = "%s done, %s" % (format(batch.done_count, ","), state)
        elif batch.cancelled_count == count:
            kind, state = "cancelled", "cancelled"
        elif batch.cancelled_count:
            kind = "done"
            state = "done, %s cancelled" % format(batch.cancelled_count, ",")
        else:
            kind, state = "done", "done"
    elif running:
        kind = "stalled" if stalled else "running"
        state = "stalled: no progress" if stalled else "running"
        if not stalled and batch.speed > 0:
            speed = human_rate(batch.speed)
            left = batch.total_bytes - batch.done_bytes - live_bytes
            eta = human_duration(max(0, left) / batch.speed)
    elif lane_paused is not None:
        kind, state = "paused", "paused: %s" % lane_paused if lane_paused else "paused"
    else:
        kind, state = "queued", "queued"
    if not single and not batch.finished and batch.failed_count:
        state += ", %s failed" % format(batch.failed_count, ",")
    files = "" if single else "%s/%s" % (format(batch.finished_count, ","), format(count, ","))
    done_bytes = batch.total_bytes if fraction >= 1.0 else batch.done_bytes + live_bytes
    return {"fraction": fraction, "kind": kind, "state": state, "speed": speed, "eta": eta,
            "files": files, "bytes": "%s / %s" % (human_size(done_bytes),
                                                  human_size(batch.total_bytes))}


def fit_columns(natural: dict, least: dict, stretch, width: int) -> dict:
    """Column widths that add up to ``width``: room to spare goes to the ``stretch``
    columns; a shortfall is taken from them first, then from the others, never below
    ``least``."""
    widths = dict(natural)
    extra = width - sum(widths.values())
    if extra >= 0:
        total = sum(natural[c] for c in stretch) or 1
        for column in stretch:
            widths[column] += extra * natural[column] // total
        return widths
    for group in (list(stretch), [c for c in natural if c not in stretch]):
        room = sum(widths[c] - least[c] for c in group)
        if room <= 0:
            continue
        cut = min(-extra, room)
        for column in group:
            widths[column] -= (widths[column] - least[column]) * cut // room
        for column in group:  # what rounding left over
            over = sum(widths.values()) - width
            if over > 0:
                widths[column] -= min(over, widths[column] - least[column])
        extra = width - sum(widths.values())
        if extra >= 0:
            break
    return widths


class TransferList(ttk.Frame):
    """One row per batch, with a drawn progress bar; file rows on demand. UI thread only."""

    COLUMNS = ("server", "progress", "bytes", "speed", "eta", "state")
    STRETCH = ("#0", "state")

    def __init__(self, master, scale: float = 1.0):
        super().__init__(master)
        self.scale = scale
        self.bar_width = int(BAR_WIDTH * scale)
        self.bar_height = max(8, int(BAR_HEIGHT * scale))
        self.tree = ttk.Treeview(self, columns=self.COLUMNS, selectmode="extended", height=4)
        headings = {"#0": ("Name", 230, 150), "server": ("Server", 120, 70),
                    "progress": ("%  files", 90, 60), "bytes": ("Done / total", 150, 90),
                    "speed": ("Speed", 100, 80), "eta": ("Left", 55, 40),
                    "state": ("State", 200, 90)}
        self._natural = {column: int(width * scale)
                         for column, (_, width, _) in headings.items()}
        self._least = {column: int(least * scale) for column, (_, _, least) in headings.items()}
        self._fitted_width = 0
        for column, (text, width, least) in headings.items():
            self.tree.heading(column, text=text, anchor="w")
            self.tree.column(column, width=self._natural[column], minwidth=self._least[column],
                             anchor="w", stretch=column in self.STRETCH)
        for kind, colour in (("failed", "#c62828"), ("cancelled", "#777777"),
                             ("queued", "#666666"), ("stalled", "#a15c00"),
                             ("paused", "#a15c00")):
            self.tree.tag_configure(kind, foreground=colour)
        scroll = ttk.Scrollbar(self, orient="vertical", command=self.tree.yview)
        self.tree.configure(yscrollcommand=scroll.set)
        self.tree.grid(row=0, column=0, sticky="nsew")
        scroll.grid(row=0, column=1, sticky="ns")
        self.rowconfigure(0, weight=1)
        self.columnconfigure(0, weight=1)
        self.images: dict[int, tk.PhotoImage] = {}
        self._drawn: dict[int, tuple] = {}
        self.batches: dict[str, Batch] = {}
        self.open_batches: dict[int, int] = {}   # batch id -> file rows shown so far
        self.tree.bind("<Configure>", self._fit_columns, add="+")
        self.tree.bind("<<TreeviewOpen>>", self._opened)
        self.tree.bind("<<TreeviewClose>>", self._closed)

    def _fit_columns(self, event=None) -> None:
        """Columns that fit the list's width (ttk leaves them as wide as they were
        made, so at 800 px the State column would start past the right edge)."""
        width = self.tree.winfo_width()
        if width <= 1 or width == self._fitted_width:
            return
        self._fitted_width = width
        inside = width - FIELD_INSET  # the themed field's border and padding
        for column, size in fit_columns(self._natural, self._least, self.STRETCH,
                                        inside).items():
            self.tree.column(column, width=size)

    # -- batch rows --

    def show(self, batch: Batch, figures: dict, follow: bool = False) -> None:
        item = str(batch.id)
        values = (batch.server, ("%d%%  %s" % (int(figures["fraction"] * 100),
                                              figures["files"])).strip(),
                  figures["bytes"], figures["speed"], figures["eta"], figures["state"])
        image = self._bar(batch.id, figures["fraction"], figures["kind"])
        tags = (figures["kind"],)
        if self.tree.exists(item):
            self.tree.item(item, values=values, tags=tags)
        else:
            self.batches[item] = batch
            arrow = "↑ " if batch.direction == UPLOAD else "↓ "
            self.tree.insert("", "end", iid=item, text=" " + arrow + batch.title, image=image,
                             values=values, tags=tags)
            if len(batch.jobs) > 1:
                self.tree.insert(item, "end", iid="more-%d" % batch.id, text=" …")
            if follow:
                self.tree.see(item)
        if batch.id in self.open_batches:
            self.refresh_files(batch)

    def remove(self, batch_id: int) -> None:
        item = str(batch_id)
        if self.tree.exists(item):
            self.tree.delete(item)
        self.batches.pop(item, None)
        self.images.pop(batch_id, None)
        self._drawn.pop(batch_id, None)
        self.open_batches.pop(batch_id, None)

    def selected_ids(self) -> list[int]:
        return [int(item) for item in self.tree.selection() if item.isdigit()]

    def selected_batches(self) -> list[Batch]:
        return [self.batches[item] for item in self.tree.selection() if item in self.batches]

    def selected_files(self) -> list[FileJob]:
        files = []
        for item in self.tree.selection():
            if item.startswith("f"):
                parent = self.batches.get(self.tree.parent(item))
                if parent is not None:
                    index = int(item[1:]) - parent.jobs[0].id
                    if 0 <= index < len(parent.jobs):
                        files.append(parent.jobs[index])
        return files

    def row_state(self, batch_id: int) -> str:
        return str(self.tree.set(str(batch_id), "state"))

    # -- file rows, on demand --

    def _opened(self, event=None) -> None:
        item = self.tree.focus()
        batch = self.batches.get(item)
        if batch is None or batch.id in self.open_batches:
            return
        self.open_batches[batch.id] = 0
        self.refresh_files(batch)

    def _closed(self, event=None) -> None:
        item = self.tree.focus()
        batch = self.batches.get(item)
        if batch is None or batch.id not in self.open_batches:
            return
        del self.open_batches[batch.id]
        self.tree.delete(*self.tree.get_children(item))
        self.tree.insert(item, "end", iid="more-%d" % batch.id, text=" …")

    def open_batch(self, batch_id: int) -> None:
        self.tree.item(str(batch_id), open=True)
        self.tree.focus(str(batch_id))
        self._opened()

    def refresh_files(self, batch: Batch) -> None:
        """Add the next slice of file rows and update the running/finished ones shown."""
        shown = self.open_batches[batch.id]
        parent = str(batch.id)
        more = "more-%d" % batch.id
        if self.tree.exists(more):
            self.tree.delete(more)
        end = min(len(batch.jobs), shown + DETAIL_SLICE)
        for job in batch.jobs[shown:end]:
            self.tree.insert(parent, "end", iid="f%d" % job.id, text=" " + job.name,
                             values=self.file_values(job), tags=(self._file_kind(job),))
        self.open_batches[batch.id] = end
        if end < len(batch.jobs):
            self.tree.insert(parent, "end", iid=more,
                             text=" … %s more" % format(len(batch.jobs) - end, ","))
        for job in batch.jobs[:shown]:
            if job.state is State.RUNNING or job.finished_at > batch.created:
                self.tree.item("f%d" % job.id, values=self.file_values(job),
                               tags=(self._file_kind(job),))

    @staticmethod
    def _file_kind(job: FileJob) -> str:
        return job.state.value

    @staticmethod
    def file_values(job: FileJob) -> tuple:
        state = job.state.value + (": " + job.error if job.error else "")
        return ("", "%d%%" % int(job.fraction * 100),
                "%s / %s" % (human_size(job.done), human_size(job.size)), "", "", state)

    # -- the bar --

    def _bar(self, batch_id: int, fraction: float, kind: str) -> tk.PhotoImage:
        image = self.images.get(batch_id)
        if image is None:
            image = tk.PhotoImage(master=self, width=self.bar_width, height=self.bar_height)
            self.images[batch_id] = image
        filled = int(self.bar_width * fraction)
        key = (filled, kind)
        if self._drawn.get(batch_id) != key:
            width, height = self.bar_width, self.bar_height
            image.put("#d9d9d9", to=(0, 0, width, height))
            if kind == "failed":  # a failed row never looks like a queued one
                image.put("#f3c4c4", to=(0, 0, width, height))
            if filled:
                image.put(BAR_COLOURS.get(kind, "#2f7de1"), to=(0, 0, filled, height))
            image.put("#8c8c8c", to=(0, 0, width, 1))
            image.put("#8c8c8c", to=(0, height - 1, width, height))
            self._drawn[batch_id] = key
        return image
