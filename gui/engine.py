"""The transfer engine: batches of files, moved by a few workers per server that reuse sessions.

Shapes. A ``Batch`` is what one action queued (a selection, a drop, and in the
version-2 client a whole folder tree: a recursive transfer is a batch whose
jobs carry paths below a folder, nothing else changes). A batch holds
``FileJob``s and belongs to one server for good: its jobs go to that server's
``Lane`` and nowhere else. A lane has a FIFO of queued jobs and at most
``MAX_PARALLEL`` workers; each worker keeps one session open and takes job
after job until the lane is empty, paused or stopped.

Threads. ``TransferEngine``, ``Batch`` and ``Lane`` bookkeeping run on the Tk
thread (UI thread only), except the few fields a worker shares, which change
only under ``Lane.lock``: a job's move from QUEUED to RUNNING (the worker
claims it), ``Worker.job`` and the worker's socket. A worker writes the live
progress of its own job (``job.done``, ``Worker.progress_at``) and the UI reads
them once per tick: progress never becomes a message, so a 10,000-file batch
costs the UI one message per file (``FileFinished``), handled in constant time,
plus one redraw per tick. Every worker ends with ``WorkerStopped``.

Cancelling is cooperative and prompt: the UI sets the job's flag and shuts the
worker's socket down (``Worker.abort``), which wakes any blocked connect, recv,
send or sendfile at once, whatever the server is doing.
"""

from __future__ import annotations

import collections
import enum
import errno
import fcntl
import logging
import os
import socket
import stat
import threading
import time
from dataclasses import dataclass, field

from common.client import (CannotConnect, Changed, Client, Exists, NotFound, ProtocolError, RemoteError,
                           ServerBusy, ShelfError)
from common.protocol import BUSY, VERSION, Channel, ConnectionLost, parse_greeting
from gui.wording import plain_error

log = logging.getLogger("shelf.gui")

MAX_PARALLEL = 3
STALL_SECONDS = 3.0     # no progress for this long: the row says "stalled"
SESSION_TIMEOUT = 30.0  # a socket wait with no progress at all fails after this
# Seconds spent dropping what a stopped upload left on the server. The server lets
# go of a broken upload once it has flushed the bytes it kept (an fsync of what may be
# gigabytes of dirty pages): on a busy machine that takes seconds. The worker waits
# here after the job's final message, so nobody waits on it but the next file.
DROP_WAIT = 20.0
PART_SUFFIX = ".shelf-part"

UPLOAD = "upload"
DOWNLOAD = "download"


class State(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (State.DONE, State.FAILED, State.CANCELLED)


class LocalProblem(ShelfError):
    """Something on this machine stops the transfer (a special file, a name taken)."""


class ServerUnreachable(ShelfError):
    """No session could be opened: the lane pauses instead of failing every file."""


class NotAFile(ShelfError):
    """The library has a folder where a file was expected: folder transfers come with
    the next version of the desktop client."""


FOLDERS_LATER = "folder transfers come with the next version of Shelf"


# -- the model ---------------------------------------------------------------------

@dataclass(eq=False)
class FileJob:
    """One file of a batch. ``state`` changes under the lane's lock (see the module doc)."""

    id: int
    batch: "Batch"
    name: str          # the name in the library
    local_path: str    # the file on this machine
    size: int
    mtime: float = 0.0         # the library's, for a download (kept on the file)
    overwrite: bool = False
    resume: bool = False       # a download may continue from its part file
    version: str | None = None  # the library file's version (a download's part file holds it)
    upload_token: str = ""     # an upload the server keeps for RESUME if its session ends
    state: State = State.QUEUED
    done: int = 0
    error: str = ""
    started: float = 0.0
    finished_at: float = 0.0
    cancel_requested: bool = False
    pause_requested: bool = False

    @property
    def direction(self) -> str:
        return self.batch.direction

    @property
    def address(self) -> tuple:
        return self.batch.address

    @property
    def fraction(self) -> float:
        if self.state is State.DONE:
            return 1.0
        return min(1.0, self.done / self.size) if self.size else 0.0


@dataclass(eq=False)
class Batch:
    """What one action queued: one row of the transfer list. UI thread only."""

    id: int
    direction: str
    address: tuple             # (host, port): the server it belongs to
    jobs: list = field(default_factory=list)
    folder: str = ""           # where downloads land
    total_bytes: int = 0
    done_count: int = 0
    failed_count: int = 0
    cancelled_count: int = 0
    done_bytes: int = 0        # bytes of files that finished
    created: float = field(default_factory=time.monotonic)
    first_start: float = 0.0
    finished_at: float = 0.0
    speed: float = 0.0
    journal_key: str = ""
    cancel_latency: float | None = None  # seconds from Cancel to the last cancelled file
    _cancel_asked: float = 0.0
    _samples: collections.deque = field(default_factory=lambda: collections.deque(maxlen=40))

    @property
    def server(self) -> str:
        return "%s:%d" % self.address

    @property
    def finished_count(self) -> int:
        return self.done_count + self.failed_count + self.cancelled_count

    @property
    def finished(self) -> bool:
        return self.finished_count == len(self.jobs)

    @property
    def title(self) -> str:
        if len(self.jobs) == 1:
            return self.jobs[0].name
        return "%s files" % format(len(self.jobs), ",")

    def sample_speed(self, live_bytes: int, now: float) -> None:
        """Bytes per second over the last few seconds (called once per tick)."""
        total = self.done_bytes + live_bytes
        self._samples.append((now, total))
        while len(self._samples) > 2 and now - self._samples[0][0] > 3.0:
            self._samples.popleft()
        first_time, first_total = self._samples[0]
        self.speed = (total - first_total) / (now - first_time) if now > first_time else 0.0


# -- messages (worker -> UI) ------------------------------------------------------

@dataclass(frozen=True)
class FileFinished:
    job: FileJob
    state: State
    error: str = ""
    worker: "Worker | None" = None
    paused: bool = False       # the job goes back to the queue (pause, unreachable server)


@dataclass(frozen=True)
class WorkerStopped:
    worker: "Worker"


@dataclass(frozen=True)
class LanePaused:
    lane: "Lane"
    reason: str


# -- sessions a worker can be woken from ----------------------------------------------

@dataclass(frozen=True)
class Access:
    """How to open a session with one server: plain or TLS, whom to trust, whom to log in as.

    Made by the control session once the person answered the trust and login
    questions, then shared (read only) by that server's transfer workers, so they
    log in as the same user and accept the same certificate. The password lives
    in this object, in memory, for this run only.
    """

    tls: bool = False
    user: str | None = None
    password: bytes | None = None
    trust: object = None       # a common.trust.Trust (asks nobody for the workers)


class Session(Client):
    """A ``Client`` whose socket exists before it connects, so the UI can shut it down.

    ``Client.__init__`` connects and reads the greeting in one call; a server
    that accepts but never greets (stopped, or not a Shelf server) would hold
    a worker there for the whole timeout, out of reach of Cancel. This opens
    the socket itself, hands it to ``adopt`` first (for TLS, the TLS socket too
    once its handshake is done), then checks the greeting exactly as ``Client``
    does, then logs in when ``access`` names a user.
    """

    def __init__(self, host: str, port: int, adopt, timeout: float = SESSION_TIMEOUT,
                 access: Access | None = None):
        self.host, self.port, self.timeout = host, port, timeout
        self._adopt_socket = adopt
        access = access or Access()
        if access.tls:
            try:
                sock = self._connect_tls(access.trust, None)
            except CannotConnect as exc:
                raise ServerUnreachable(str(exc)) from None
            adopt(sock)
        else:
            sock = self._connect_tcp()
        self.channel = Channel(sock)
        try:
            greeting = self._read_line()
        except ShelfError as exc:
            self.channel.close()
            raise ServerUnreachable("%s:%d did not greet like a Shelf server: %s"
                                    % (host, port, exc)) from None
        if greeting == BUSY:
            self.channel.close()
            raise ServerBusy("server %s:%d is busy: too many sessions, try again later"
                             % (host, port))
        features = parse_greeting(greeting)
        if features is None:
            self.channel.close()
            if greeting.startswith("READY shelf/"):
                raise ProtocolError("%s:%d speaks another version of the Shelf protocol (%s); "
                                    "this Shelf speaks shelf/%d: update the server or use the "
                                    "Shelf that matches it"
                                    % (host, port, greeting.split(" ")[1][:20], VERSION))
            raise ProtocolError("%s:%d is not a Shelf server" % (host, port))
        self.features = features
        self.grant = None
        if access.user is not None and access.password is not None:
            try:
                self.login(access.user, access.password)
            except BaseException:
                self.channel.close()
                raise

    @property
    def needs_login(self) -> bool:
        """The server serves nothing before a LOGIN (accounts, no anonymous grant)."""
        return self.grant is None and "login" in self.features and \
            "anonymous" not in self.features

    def _connect_tcp(self) -> socket.socket:
        """A connected TCP socket, handed to ``adopt`` before it connects (TLS asks
        for one or two of these: see common.trust)."""
        host, port, adopt, timeout = self.host, self.port, self._adopt_socket, self.timeout
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ServerUnreachable("cannot find the server %s: %s"
                                    % (host, (exc.strerror or str(exc)).lower())) from None
        last = None
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            adopt(sock)
            sock.settimeout(timeout)
            try:
                sock.connect(address)
                break
            except OSError as exc:
                sock.close()
                last = exc
        else:
            reason = "timed out" if isinstance(last, socket.timeout) else \
                (getattr(last, "strerror", None) or str(last)).lower()
            raise ServerUnreachable("cannot connect to %s:%d: %s" % (host, port, reason))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def discard(self) -> None:
        """Close without QUIT: the session may be out of step or its socket shut down."""
        self.channel.close()


def part_path(target: str) -> str:
    folder, base = os.path.split(target)
    return os.path.join(folder, "." + base + PART_SUFFIX)


def special_kind(mode: int) -> str | None:
    """What a non-regular, non-folder file is, in words; None for a regular file."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


# -- a worker (its own thread; never touches Tk) ------------------------------------

class Worker:
    """One thread and one session, taking jobs from its lane until there are none."""

    def __init__(self, lane: "Lane", post, first_job: FileJob):
        self.lane = lane
        self.post = post
        self.job: FileJob | None = first_job
        self.progress_at = time.monotonic()
        self.session: Session | None = None
        self._sock: socket.socket | None = None
        self._sock_lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name="transfer-%s:%d" % lane.address)

    def start(self) -> None:
        self.thread.start()

    # -- any thread --

    def abort(self, job: FileJob | None = None) -> None:
        """Wake the worker from whatever socket call it is in (only while it works on
        ``job``, when given). May be called from any thread."""
        with self.lane.lock, self._sock_lock:  # claim() changes self.job under lane.lock
            if job is not None and self.job is not job:
                return
            sock = self._sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # not connected yet, or already closed

    # -- the worker thread --

    def _adopt(self, sock: socket.socket, for_job: bool = True) -> None:
        with self._sock_lock:
            self._sock = sock
        job = self.job
        if for_job and job is not None and (job.cancel_requested or job.pause_requested):
            try:
                sock.shutdown(socket.SHUT_RDWR)  # asked before the socket existed
            except OSError:
                pass

    def _drop_session(self) -> None:
        with self._sock_lock:
            session, self.session, self._sock = self.session, None, None
        if session is not None:
            session.discard()

    def _run(self) -> None:
        try:
            job = self.job
            while job is not None:
                self._do(job)
                job = self.lane.claim(self)
        except Exception:  # noqa: BLE001 - the final message must always go out
            log.exception("transfer worker crashed")
            if self.job is not None:
                self.post(FileFinished(self.job, State.FAILED, "unexpected error", self))
        finally:
            session = self.session
            with self._sock_lock:
                self.session, self._sock = None, None
            if session is not None:
                session.close()
            self.post(WorkerStopped(self))

    def _progress(self, done: int) -> None:
        self.job.done = done
        self.progress_at = time.monotonic()

    def _do(self, job: FileJob) -> None:
        self.progress_at = time.monotonic()
        job.started = self.progress_at
        job.done = 0
        cancelled = lambda: job.cancel_requested or job.pause_requested  # noqa: E731
        move = upload if job.direction == UPLOAD else download
        try:
            if cancelled():
                raise _Stop()
            reused = self.session is not None
            if not reused:
                host, port = self.lane.address
                self.session = Session(host, port, self._adopt, access=self.lane.access)
            try:
                move(self.session, job, self._progress, cancelled)
            except ConnectionLost:
                # A kept session may have been dropped meanwhile (idle timeout, an
                # abort meant for the previous file): one more try on a fresh one.
                if not reused or cancelled() or job.done:
                    raise
                self._drop_session()
                host, port = self.lane.address
                self.session = Session(host, port, self._adopt, access=self.lane.access)
                move(self.session, job, self._progress, cancelled)
        except BaseException as exc:  # noqa: BLE001 - every outcome is one message
            self._failed(job, exc)
            return
        self.progress_at = time.monotonic()
        self.post(FileFinished(job, State.DONE, worker=self))

    def _failed(self, job: FileJob, exc: BaseException) -> None:
        in_step = isinstance(exc, (RemoteError, Exists, LocalProblem, NotAFile))
        if not in_step or (self.session is not None and self.session.closed):
            self._drop_session()
        # Taken before the job goes back to the UI: once queued again, another worker may
        # start it with an upload of its own.
        token, job.upload_token = job.upload_token, ""
        if job.pause_requested and not job.cancel_requested:
            self.post(FileFinished(job, State.QUEUED, worker=self, paused=True))
            self._drop_kept_upload(job.name, token)  # a paused upload starts its file again
        elif job.cancel_requested or isinstance(exc, _Stop):
            self.post(FileFinished(job, State.CANCELLED, worker=self))
            self._drop_kept_upload(job.name, token)
        elif isinstance(exc, (ServerUnreachable, ServerBusy)):
            # Nothing moved: the file goes back to the queue and the lane waits.
            self.lane.pause_from_worker(plain_error(str(exc)))
            self.post(FileFinished(job, State.QUEUED, plain_error(str(exc)), self, paused=True))
        elif isinstance(exc, ShelfError):
            self.post(FileFinished(job, State.FAILED, plain_error(str(exc)), self))
        elif isinstance(exc, OSError):
            self.post(FileFinished(job, State.FAILED, plain_error(os_reason(exc)), self))
        elif isinstance(exc, Exception):
            log.error("transfer of %s crashed", job.name, exc_info=exc)
            self.post(FileFinished(job, State.FAILED, "unexpected error: %s" % exc, self))
        else:
            raise exc

    def _drop_kept_upload(self, name: str, token: str) -> None:
        """An upload stopped by the person leaves nothing behind, not even the bytes a
        server with ``resume`` keeps when a session ends mid-upload: they are dropped
        (ABORT) on a fresh session, which the worker then keeps for its next file. The
        server lets the upload go once it sees the old session end, so until then ABORT
        says NotFound and is tried again, for DROP_WAIT at most."""
        if not token:
            return
        with self.lane.lock:
            self.job = None  # the file is over: it no longer counts as running
        host, port = self.lane.address
        deadline = time.monotonic() + DROP_WAIT
        try:
            if self.session is None or self.session.closed:
                self._drop_session()
                self.session = Session(host, port, lambda sock: self._adopt(sock, False),
                                       timeout=DROP_WAIT, access=self.lane.access)
                self.session.timeout = SESSION_TIMEOUT  # for the next file
            self.session.channel.sock.settimeout(DROP_WAIT)
            pause = 0.02
            while True:
                try:
                    self.session.abort_upload(token)
                    self.session.channel.sock.settimeout(SESSION_TIMEOUT)
                    return
                except NotFound:
                    if time.monotonic() > deadline:
                        log.info("the server still holds the stopped upload of %s", name)
                        self.session.channel.sock.settimeout(SESSION_TIMEOUT)
                        return
                    time.sleep(pause)  # the server is flushing: ask again, less often
                    pause = min(0.5, pause * 2)
        except ShelfError as exc:
            log.info("cannot drop the stopped upload of %s: %s", name, exc)
            self._drop_session()


class _Stop(Exception):
    """Cancelled before anything started."""


def os_reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


def upload(session: Session, job: FileJob, progress, cancelled) -> None:
    """Send one local file. Special files are refused before they are opened."""
    try:
        info = os.stat(job.local_path)
    except OSError as exc:
        raise LocalProblem("cannot read %s: %s" % (job.local_path, os_reason(exc))) from None
    kind = special_kind(info.st_mode)
    if kind or stat.S_ISDIR(info.st_mode):
        raise LocalProblem("%s is %s, not a file" % (os.path.basename(job.local_path),
                                                     kind or "a folder"))
    try:
        # O_NONBLOCK: a FIFO swapped in since the stat() still cannot block open().
        fd = os.open(job.local_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise LocalProblem("cannot read %s: %s" % (job.local_path, os_reason(exc))) from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise LocalProblem("%s is %s, not a file" % (job.name, special_kind(info.st_mode)))
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        job.size = info.st_size  # what is there now, not when it was queued
        keeps = "resume" in getattr(session, "features", ())  # a cut upload stays there
        try:
            session.put(job.name, handle, info.st_size, progress=progress, cancel=cancelled,
                        on_token=lambda token: setattr(job, "upload_token", token if keeps
                                                       else ""))
        except Exists:
            job.upload_token = ""  # the server dropped it
            raise Exists("%s is already in the library" % job.name) from None
        job.upload_token = ""


def download(session: Session, job: FileJob, progress, cancelled) -> None:
    """Fetch one library file into a part file, give it the library's mtime, then rename.

    A download cut by the connection keeps its part file and marks the job
    ``resume``; ``job.version`` names the version the part file holds. A
    retry (or the next run) continues from there only if the library file
    is still that version: the GET names it and the server answers Changed
    otherwise, and then the download starts over from the first byte. Every
    GET names the version the STAT saw, so the bytes and the mtime kept on
    the file are of one version.
    """
    target = job.local_path
    folder = os.path.dirname(target) or "."
    if os.path.lexists(target) and not job.overwrite:
        raise LocalProblem("%s is already in %s" % (os.path.basename(target), folder))
    part = part_path(target)
    for attempt in range(3):
        entry = session.stat(job.name)
        if entry.is_folder:
            raise NotAFile("%s is a folder in the library: %s" % (job.name, FOLDERS_LATER))
        offset, version = 0, entry.version
        if job.resume and job.version:
            try:
                kept = os.path.getsize(part)
            except OSError:
                kept = 0
            if 0 < kept <= entry.size:
                offset, version = kept, job.version  # the server says if it is still that one
        job.size, job.mtime = entry.size, entry.mtime
        try:
            _fetch(session, job, entry, part, offset, version, progress, cancelled)
        except Changed:
            # Not the version the part file (or the STAT) had: nothing of it is kept.
            log.info("%s changed in the library; downloading it again from the start",
                     job.name)
            remove_quietly(part)
            job.resume, job.version = False, None
            if cancelled():
                raise
            continue
        break
    else:
        raise LocalProblem("%s kept changing in the library while it was downloaded; "
                           "try again later" % job.name)
    progress(entry.size)


def _fetch(session: Session, job: FileJob, entry, part: str, offset: int, version: str,
           progress, cancelled) -> None:
    """One GET of ``version`` from ``offset`` into the part file, then the part file
    becomes the target. Raises Changed (the part file untouched) when the library
    file is no longer ``version``."""
    target = job.local_path
    folder = os.path.dirname(target) or "."
    try:
        handle = open(part, "ab" if offset else "wb")
    except OSError as exc:
        raise LocalProblem("cannot write in %s: %s" % (folder, os_reason(exc))) from None
    keep = False
    try:
        with handle:
            try:
                session.get(job.name, handle, offset=offset,
                            progress=lambda done: progress(offset + done), cancel=cancelled,
                            version=version)
            except Changed:
                raise
            except ShelfError:
                keep = not job.cancel_requested and handle.tell() > 0  # cut or paused
                if keep:
                    job.version = version  # what the part file holds
                raise
            handle.flush()
            os.fsync(handle.fileno())
        os.utime(part, (time.time(), entry.mtime))
        if job.overwrite:
            os.replace(part, target)
        else:
            try:
                os.link(part, target)
            except FileExistsError:
                raise LocalProblem("%s appeared meanwhile; not replaced"
                                   % os.path.basename(target)) from None
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV):
                    raise
                os.rename(part, target)  # a file system without hard links
            else:
                os.unlink(part)
    except Changed:
        raise  # the caller starts over
    except BaseException:
        if keep:
            job.resume = True
        else:
            remove_quietly(part)
        raise


def remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# -- a lane: one server's queue and workers -----------------------------------------------

class Lane:
    """The queue and workers of one server. UI thread, except ``claim`` (under ``lock``)."""

    def __init__(self, address: tuple, post, max_parallel: int):
        self.address = address
        self.post = post
        self.max_parallel = max_parallel
        self.lock = threading.Lock()
        self.queue: collections.deque = collections.deque()
        self.workers: list[Worker] = []   # alive and taking jobs
        self.paused = False
        self.pause_reason = ""
        self.access = Access()   # set by the app when the control session got in

    # -- worker thread --

    def claim(self, worker: Worker) -> FileJob | None:
        """The worker's next job, or None: then it leaves the lane and stops."""
        with self.lock:
            while self.queue and not self.paused:
                job = self.queue.popleft()
                if job.state is State.QUEUED:
                    job.state = State.RUNNING
                    worker.job = job
                    return job
            worker.job = None
            if worker in self.workers:
                self.workers.remove(worker)
            return None

    def pause_from_worker(self, reason: str) -> None:
        with self.lock:
            self.paused = True
            self.pause_reason = reason
        self.post(LanePaused(self, reason))

    # -- UI thread --

    def running_jobs(self) -> list[FileJob]:
        with self.lock:
            return [w.job for w in self.workers if w.job is not None]

    def enqueue(self, jobs, front: bool = False) -> None:
        with self.lock:
            if front:
                self.queue.extendleft(reversed(jobs))
            else:
                self.queue.extend(jobs)

    def start_workers(self) -> list[Worker]:
        """Start workers up to the limit while there is work; each takes its first job now."""
        started = []
        with self.lock:
            while not self.paused and len(self.workers) < self.max_parallel and self.queue:
                job = self.queue.popleft()
                if job.state is not State.QUEUED:
                    continue
                job.state = State.RUNNING
                worker = Worker(self, self.post, job)
                self.workers.append(worker)
                started.append(worker)
        for worker in started:
            worker.start()
        return started

    def set_paused(self, paused: bool, reason: str = "") -> None:
        with self.lock:
            self.paused = paused
            self.pause_reason = reason if paused else ""

    def abort_all(self) -> None:
        with self.lock:
            workers = list(self.workers)
        for worker in workers:
            worker.abort()

    def abort_job(self, job: FileJob) -> None:
        with self.lock:
            workers = [w for w in self.workers if w.job is job]
        for worker in workers:
            worker.abort(job)
