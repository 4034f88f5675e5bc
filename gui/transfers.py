"""Transfers: the workers, their messages, the queue and the transfer list.

Concurrency model: each running transfer has its own worker thread and its
own shelfd session (shelfd forks a process per session, so transfers really
run in parallel). Workers never touch Tk: they put messages on the app's
``queue.Queue`` (``Progress``, ``Finished``) and read only their own
``threading.Event`` for cancellation. Everything else here runs on the Tk
thread: ``TransferManager`` owns the state machine, starts at most
``MAX_PARALLEL`` workers and starts the next one when a worker's final
message arrives (never because a thread was seen to die).
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
import tkinter as tk
from dataclasses import dataclass, field
from tkinter import ttk

from common.client import Cancelled, Client, Exists, ShelfError
from common.files import download_atomically
from common.humanize import human_duration, human_rate, human_size

log = logging.getLogger("shelf.gui")

MAX_PARALLEL = 3
PROGRESS_INTERVAL = 0.1  # seconds between progress messages of one transfer


class State(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (State.DONE, State.FAILED, State.CANCELLED)


UPLOAD = "upload"
DOWNLOAD = "download"


# -- messages (worker -> UI) ---------------------------------------------------

@dataclass(frozen=True)
class Progress:
    transfer_id: int
    done: int


@dataclass(frozen=True)
class Finished:
    transfer_id: int
    state: State
    error: str = ""


# -- the model -----------------------------------------------------------------

@dataclass
class Transfer:
    """One row of the transfer list. Mutated on the Tk thread only."""

    id: int
    direction: str
    name: str          # the name in the library
    local_path: str    # the file on this machine
    size: int
    overwrite: bool = False
    state: State = State.QUEUED
    done: int = 0
    error: str = ""
    started: float = 0.0
    finished_at: float = 0.0
    speed: float = 0.0
    cancel_event: threading.Event = field(default_factory=threading.Event)
    _samples: list = field(default_factory=list)

    def note_progress(self, done: int, now: float) -> None:
        self.done = done
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[0][0] > 3.0:
            self._samples.pop(0)  # speed over the last ~3 s
        first_time, first_done = self._samples[0]
        if now > first_time:
            self.speed = (done - first_done) / (now - first_time)

    @property
    def eta(self) -> float | None:
        if self.state is not State.RUNNING or self.speed <= 0:
            return None
        return (self.size - self.done) / self.speed

    @property
    def fraction(self) -> float:
        if self.state is State.DONE:
            return 1.0
        return min(1.0, self.done / self.size) if self.size else 0.0


# -- the worker (any thread but Tk's) ------------------------------------------

def run_transfer(transfer: Transfer, host: str, port: int, post) -> None:
    """Body of a worker thread: move the bytes, post Progress, always post Finished."""
    last_post = [0.0]

    def progress(done: int) -> None:
        now = time.monotonic()
        if now - last_post[0] >= PROGRESS_INTERVAL:
            last_post[0] = now
            post(Progress(transfer.id, done))

    cancel = transfer.cancel_event.is_set
    try:
        with Client(host, port) as client:
            if transfer.direction == UPLOAD:
                upload(client, transfer, progress, cancel)
            else:
                download_atomically(client, transfer.name, transfer.local_path,
                                    overwrite=transfer.overwrite, progress=progress,
                                    cancel=cancel, size=transfer.size)
    except Cancelled:
        post(Finished(transfer.id, State.CANCELLED))
    except ShelfError as exc:
        if transfer.cancel_event.is_set():
            post(Finished(transfer.id, State.CANCELLED))
        else:
            post(Finished(transfer.id, State.FAILED, str(exc)))
    except OSError as exc:
        post(Finished(transfer.id, State.FAILED, friendly_os_error(exc)))
    except Exception as exc:  # noqa: BLE001 - a worker must always post its final message
        log.exception("transfer %s crashed", transfer.name)
        post(Finished(transfer.id, State.FAILED, "unexpected error: %s" % exc))
    else:
        post(Finished(transfer.id, State.DONE))


def upload(client: Client, transfer: Transfer, progress, cancel) -> None:
    try:
        handle = open(transfer.local_path, "rb")
    except OSError as exc:
        raise ShelfError("cannot read %s: %s" % (transfer.local_path, friendly_os_error(exc))) \
            from None
    with handle:
        size = os.fstat(handle.fileno()).st_size  # what is there now, not when queued
        try:
            client.put(transfer.name, handle, size, progress=progress, cancel=cancel)
        except Exists:
            raise Exists("%s is already in the library" % transfer.name) from None


def friendly_os_error(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower() if exc.strerror else str(exc)


# -- the manager (Tk thread only) -------------------------------------------------

class TransferManager:
    """Queue, state machine and worker start-up. UI thread only.

    ``on_change(transfer)`` is called after every change of a transfer, so the
    view can redraw its row; ``on_finished(transfer)`` after it ends.
    """

    def __init__(self, post, on_change, on_finished, max_parallel: int = MAX_PARALLEL):
        self.post = post
        self.on_change = on_change
        self.on_finished = on_finished
        self.max_parallel = max_parallel
        self.transfers: dict[int, Transfer] = {}
        self.threads: dict[int, threading.Thread] = {}
        self.address: tuple[str, int] | None = None
        self._next_id = 1

    def add(self, direction: str, name: str, local_path: str, size: int,
            overwrite: bool = False) -> Transfer:
        transfer = Transfer(self._next_id, direction, name, local_path, size, overwrite)
        self._next_id += 1
        self.transfers[transfer.id] = transfer
        self.on_change(transfer)
        self.start_queued()
        return transfer

    @property
    def running(self) -> list[Transfer]:
        return [t for t in self.transfers.values() if t.state is State.RUNNING]

    @property
    def active(self) -> list[Transfer]:
        return [t for t in self.transfers.values() if not t.state.finished]

    def start_queued(self) -> None:
        if self.address is None:
            return
        for transfer in list(self.transfers.values()):
            if len(self.running) >= self.max_parallel:
                return
            if transfer.state is State.QUEUED:
                self._start(transfer)

    def _start(self, transfer: Transfer) -> None:
        transfer.state = State.RUNNING
        transfer.started = time.monotonic()
        transfer._samples = [(transfer.started, 0)]
        host, port = self.address
        thread = threading.Thread(target=run_transfer, args=(transfer, host, port, self.post),
                                  name="transfer-%d" % transfer.id, daemon=True)
        self.threads[transfer.id] = thread
        thread.start()
        self.on_change(transfer)

    def handle(self, message) -> None:
        """Apply a worker's message (called by the app's queue drain)."""
        transfer = self.transfers.get(message.transfer_id)
        if transfer is None:
            return
        if isinstance(message, Progress):
            if transfer.state is State.RUNNING:
                transfer.note_progress(message.done, time.monotonic())
                self.on_change(transfer)
        elif isinstance(message, Finished):
            self.threads.pop(transfer.id, None)
            transfer.state = message.state
            transfer.error = message.error
            transfer.finished_at = time.monotonic()
            if message.state is State.DONE:
                transfer.done = transfer.size
            self.on_change(transfer)
            self.on_finished(transfer)
            self.start_queued()

    def cancel(self, transfer_ids) -> None:
        for transfer_id in transfer_ids:
            transfer = self.transfers.get(transfer_id)
            if transfer is None:
                continue
            if transfer.state is State.QUEUED:
                transfer.state = State.CANCELLED
                self.on_change(transfer)
                self.on_finished(transfer)
            elif transfer.state is State.RUNNING:
                transfer.cancel_event.set()  # the worker posts Finished(CANCELLED)

    def cancel_all(self) -> None:
        self.cancel([t.id for t in self.active])

    def retry(self, transfer_ids) -> list[Transfer]:
        """Queue failed or cancelled transfers again, as new rows' worth of state."""
        retried = []
        for transfer_id in transfer_ids:
            transfer = self.transfers.get(transfer_id)
            if transfer is None or transfer.state not in (State.FAILED, State.CANCELLED):
                continue
            transfer.state = State.QUEUED
            transfer.done = 0
            transfer.error = ""
            transfer.speed = 0.0
            transfer.cancel_event = threading.Event()
            self.on_change(transfer)
            retried.append(transfer)
        self.start_queued()
        return retried

    def clear_finished(self) -> list[int]:
        cleared = [t.id for t in self.transfers.values() if t.state.finished]
        for transfer_id in cleared:
            del self.transfers[transfer_id]
        return cleared


# -- the view (Tk thread only) ------------------------------------------------------

BAR_WIDTH, BAR_HEIGHT = 120, 12
BAR_COLOURS = {State.RUNNING: "#2f7de1", State.DONE: "#3aa55d", State.FAILED: "#d64545",
               State.CANCELLED: "#9a9a9a", State.QUEUED: "#9a9a9a"}


class TransferList(ttk.Frame):
    """The transfer list: a row per transfer with a drawn progress bar. UI thread only."""

    COLUMNS = ("direction", "progress", "bytes", "speed", "eta", "state")

    def __init__(self, master, scale: float = 1.0):
        super().__init__(master)
        self.bar_width = int(BAR_WIDTH * scale)
        self.bar_height = max(8, int(BAR_HEIGHT * scale))
        self.tree = ttk.Treeview(self, columns=self.COLUMNS, selectmode="extended", height=5)
        headings = {"#0": ("Progress / name", 260), "direction": ("Direction", 105),
                    "progress": ("%", 50), "bytes": ("Done / total", 170),
                    "speed": ("Speed", 100), "eta": ("Time left", 80),
                    "state": ("State", 280)}
        for column, (text, width) in headings.items():
            self.tree.heading(column, text=text, anchor="w")
            self.tree.column(column, width=int(width * scale), anchor="w",
                             stretch=column in ("#0", "state"))
        scroll = ttk.Scrollbar(self, orient="vertical", command=self.tree.yview)
        self.tree.configure(yscrollcommand=scroll.set)
        self.tree.grid(row=0, column=0, sticky="nsew")
        scroll.grid(row=0, column=1, sticky="ns")
        self.rowconfigure(0, weight=1)
        self.columnconfigure(0, weight=1)
        self.images: dict[int, tk.PhotoImage] = {}
        self._drawn: dict[int, tuple] = {}

    def show(self, transfer: Transfer) -> None:
        """Create or update the row of ``transfer``."""
        item = str(transfer.id)
        values = self.row_values(transfer)
        image = self._bar(transfer)
        if self.tree.exists(item):
            self.tree.item(item, values=values)
        else:
            self.tree.insert("", "end", iid=item, text=" " + transfer.name, image=image,
                             values=values)

    def remove(self, transfer_id: int) -> None:
        item = str(transfer_id)
        if self.tree.exists(item):
            self.tree.delete(item)
        self.images.pop(transfer_id, None)
        self._drawn.pop(transfer_id, None)

    def selected_ids(self) -> list[int]:
        return [int(item) for item in self.tree.selection()]

    @staticmethod
    def row_values(transfer: Transfer) -> tuple:
        arrow = "↑ Upload" if transfer.direction == UPLOAD else "↓ Download"
        percent = "%d%%" % int(transfer.fraction * 100)
        done = "%s / %s" % (human_size(transfer.done), human_size(transfer.size))
        running = transfer.state is State.RUNNING
        speed = human_rate(transfer.speed) if running and transfer.speed else ""
        eta = human_duration(transfer.eta) if running else ""
        state = transfer.state.value
        if transfer.error:
            state = "%s: %s" % (state, transfer.error)
        return (arrow, percent, done, speed, eta, state)

    def _bar(self, transfer: Transfer) -> tk.PhotoImage:
        image = self.images.get(transfer.id)
        if image is None:
            image = tk.PhotoImage(master=self, width=self.bar_width, height=self.bar_height)
            self.images[transfer.id] = image
        filled = int(self.bar_width * transfer.fraction)
        key = (filled, transfer.state)
        if self._drawn.get(transfer.id) != key:
            width, height = self.bar_width, self.bar_height
            image.put("#d9d9d9", to=(0, 0, width, height))
            if filled:
                image.put(BAR_COLOURS[transfer.state], to=(0, 0, filled, height))
            image.put("#8c8c8c", to=(0, 0, width, 1))
            image.put("#8c8c8c", to=(0, height - 1, width, height))
            self._drawn[transfer.id] = key
        return image
