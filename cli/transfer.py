"""shelf-cli's get and put: one file, several, or a whole tree (``-r``).

Shared by the one-shot subcommands and the shell. Single-threaded, in the
terminal's process; each file is one transfer over ``session.client`` (a
transfer cut on this side closed its session, and the next file opens a new
one). A ``Batch`` goes on after a file's error and remembers the first exit
code; a lost connection ends it.

Trees: a remote name becomes a local name only once it is a valid segment
(no ``/``, no ``.`` or ``..``, nothing hidden), every local folder is made by
us or is a real folder (never a link followed), so nothing is written outside
DEST. Uploading, links and special files are skipped with a note; folders are
made first (MKDIR; one that exists is fine), then the files go.
"""

from __future__ import annotations

import os
import shlex
import stat
import sys
from dataclasses import dataclass, field

from cli.commands import Session, progress_bar, stat_or_none
from cli.remote import Path, resolve, text, wants_folder
from common.client import ConnectionLost, Entry, Exists, NotFound, ShelfError
from common.files import (DestinationExists, IsAFolder, LocalError, LocalNotFound,
                          LocalWriteError, Partial, UploadRecords, Unverified,
                          download_atomically, upload_resumably, why)
from common.humanize import human_size
from common.protocol import InvalidName, validate_name

__all__ = ["Batch", "GetOptions", "PutOptions", "run_get", "run_put", "split_put_words"]


def say(line: str) -> None:
    sys.stderr.write("shelf-cli: %s\n" % line)


class Batch:
    """Run many transfers; report each failure in one line on stderr and keep the
    first exit code. ``prefixes``: before an error, before a note."""

    def __init__(self, quiet: bool, prefixes: tuple[str, str] = ("shelf-cli: ", "shelf-cli: ")):
        from cli.exits import exit_code_for
        self.exit_code_for = exit_code_for
        self.quiet = quiet
        self.prefixes = prefixes
        self.first_failure = 0
        self.done = 0

    def fail(self, exc: ShelfError) -> None:
        sys.stderr.write("%s%s\n" % (self.prefixes[0], exc))
        self.first_failure = self.first_failure or self.exit_code_for(exc)

    def note(self, text: str) -> None:
        if not self.quiet:
            sys.stderr.write("%s%s\n" % (self.prefixes[1], text))

    def run(self, action) -> bool:
        """``action()``; False after a failure (reported). A lost connection
        ends the batch: nothing after it could work."""
        try:
            action()
        except ConnectionLost:
            raise
        except ShelfError as exc:
            self.fail(exc)
            return False
        self.done += 1
        return True


# -- get ---------------------------------------------------------------------------

@dataclass
class GetOptions:
    recursive: bool = False
    force: bool = False
    resume: bool = False
    verify: bool = False
    show_progress: bool = False
    quiet: bool = False


def run_get(session: Session, typed: list[str], dest: str | None, options: GetOptions,
            current: Path = (), out=None, always_report: bool = False,
            prefixes: tuple[str, str] = ("shelf-cli: ", "shelf-cli: ")) -> int:
    """``get [-r] PATH... [DEST]``; the exit code (0, or the first failure's)."""
    out = out or sys.stdout
    paths = [resolve(word, current) for word in typed]
    batch = Batch(options.quiet, prefixes)
    if dest is not None:
        dest = os.path.expanduser(dest)
    if options.recursive:
        folder = os.path.abspath(dest or ".")
        make_local_folders(folder)
    elif dest is not None and (os.path.isdir(dest) or dest.endswith(os.sep)):
        if not os.path.isdir(dest):
            raise LocalNotFound("no such folder: %s" % dest)
        folder = os.path.abspath(dest)
    elif dest is not None and len(paths) > 1:
        raise LocalError("with several paths the last argument must be a folder: %s" % dest)
    else:
        folder = None  # one file, saved as DEST (or under its own name here)
    many = len(paths) > 1 or options.recursive or always_report

    def saved(target: str, size: int) -> None:
        if many and not options.quiet:
            out.write("saved %s (%s)\n" % (target, human_size(size)))

    for path in paths:
        def one(path=path):
            try:
                entry = session.client.stat(path) if path else Entry("", 0, 0, "folder")
            except NotFound:
                raise NotFound("no such file in the library: %s" % text(path)) from None
            if entry.is_folder:
                if not options.recursive:
                    raise IsAFolder("%s is a folder; get -r downloads a folder"
                                    % text(path))
                if path:
                    local = os.path.join(folder, path[-1])
                    make_local_folder(local)
                else:  # the root: its contents go into DEST itself
                    local = folder
                get_tree(session, path, local, options, batch, saved)
                return
            if folder is not None:
                target = os.path.join(folder, path[-1])
            else:
                target = os.path.abspath(dest if dest is not None else path[-1])
            size = get_file(session, path, target, options, batch, entry)
            if size is not None:
                saved(target, size)
        batch.run(one)
    return batch.first_failure


def get_file(session: Session, path: Path, target: str, options: GetOptions, batch: Batch,
             entry: Entry | None = None) -> int | None:
    """One file; its size, or None when it was already there (``--continue``)."""
    name = text(path)
    if os.path.lexists(target) and not options.force:
        if options.resume and entry is not None and is_same_size_file(target, entry):
            batch.note("%s is already there; skipped" % target)
            return None
        raise DestinationExists("%s already exists (use --force to replace it)" % target)
    try:
        remote = entry if entry is not None and entry.version else session.client.stat(path)
    except NotFound:
        raise NotFound("no such file in the library: %s" % name) from None
    with progress_bar(name, remote.size, options.show_progress, initial=None) as progress:
        try:
            return download_atomically(
                session.client, name, target, overwrite=options.force, resume=options.resume,
                restart_changed=options.force, keep_partial=True, verify=options.verify,
                progress=progress, remote=remote, note=batch.note)
        except NotFound:
            raise NotFound("no such file in the library: %s" % name) from None
        except Unverified:
            raise  # it says what to do
        except Partial as exc:
            raise Partial("%s; run again with --continue to resume" % exc) from None


def is_same_size_file(target: str, entry: Entry) -> bool:
    try:
        info = os.lstat(target)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_size == entry.size


def make_local_folders(folder: str) -> None:
    """DEST of ``get -r``, made with its parents when missing. The user named it,
    so a link on the way is theirs to follow; below it, nothing is followed."""
    try:
        os.makedirs(folder, exist_ok=True)
    except FileExistsError:
        raise LocalWriteError("cannot write into %s: it exists and is not a folder"
                              % folder) from None
    except OSError as exc:
        raise LocalWriteError("cannot make the folder %s: %s" % (folder, why(exc))) from None


def make_local_folder(path: str) -> None:
    """One folder below DEST: made by us, or already a real folder (not a link)."""
    try:
        os.mkdir(path)
        return
    except FileExistsError:
        pass
    except OSError as exc:
        raise LocalWriteError("cannot make the folder %s: %s" % (path, why(exc))) from None
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        raise LocalWriteError("cannot write into %s: it is a symbolic link; not followed"
                              % path)
    if not stat.S_ISDIR(mode):
        raise LocalWriteError("cannot write into %s: it exists and is not a folder" % path)


def get_tree(session: Session, remote: Path, local: str, options: GetOptions, batch: Batch,
             saved) -> None:
    """Recreate the library folder ``remote`` as the local folder ``local``."""
    top = os.path.abspath(local)
    pending = [(remote, top)]
    while pending:
        folder, here = pending.pop(0)
        try:
            entries = session.client.list(folder)
        except NotFound:
            batch.fail(NotFound("no such folder in the library: %s" % text(folder)))
            continue
        for entry in entries:
            try:
                name = validate_name(entry.name)
            except InvalidName as exc:  # the server should never send one; check anyway
                batch.fail(LocalError("skipped a name from the library in %s: %s"
                                      % (text(folder), exc)))
                continue
            child = os.path.join(here, name)
            if os.path.dirname(child) != here or os.path.commonpath([top, child]) != top:
                batch.fail(LocalError("skipped %r: not inside %s" % (name, top)))
                continue
            path = folder + (name,)
            if entry.is_folder:
                if batch.run(lambda: make_local_folder(child)):
                    pending.append((path, child))
                continue

            def one(path=path, child=child, entry=entry):
                size = get_file(session, path, child, options, batch, entry)
                if size is not None:
                    saved(child, size)
            batch.run(one)


# -- put -----------------------------------------------------------------------------

@dataclass
class PutOptions:
    recursive: bool = False
    replace: bool = False
    resume: bool = False
    show_progress: bool = False
    quiet: bool = False
    name: str | None = None          # --as NAME (one file, or stdin)
    size: int | None = None          # --size N, with - (stdin)
    continue_hint: str = "shelf-cli put"  # how to run put again, for the --continue hint
    records: UploadRecords | None = field(default=None, repr=False)


def split_put_words(words: list[str], name: str | None) -> tuple[list[str], str | None]:
    """``FILE... [FOLDER_OR_NAME]``: a last word that is no local path names the library
    side (``--as NAME`` is the older spelling for one file)."""
    if name is None and len(words) >= 2 and not os.path.lexists(words[-1]) \
            and all(w == "-" or os.path.lexists(w) for w in words[:-1]):
        return words[:-1], words[-1]
    return words, name


def upload_records() -> UploadRecords | None:
    try:
        return UploadRecords()
    except ImportError:  # no platformdirs: uploads cannot be continued
        return None


def run_put(session: Session, files: list[str], target: str | None, options: PutOptions,
            current: Path = (), out=None, always_report: bool = False,
            prefixes: tuple[str, str] = ("shelf-cli: ", "shelf-cli: ")) -> int:
    """``put [-r] [--replace] [--continue] FILE... [FOLDER_OR_NAME]``; the exit code."""
    out = out or sys.stdout
    batch = Batch(options.quiet, prefixes)
    if options.name is not None:
        if len(files) > 1:
            raise LocalError("--as NAME works with one file only")
        target = options.name
    folder, single_name = put_destination(session, files, target, options, current)
    if "-" in files:
        if single_name is None or options.size is None:
            raise LocalError("put - needs a name (put - NAME, or --as NAME) and --size N")
        with progress_bar(text(single_name), options.size, options.show_progress) as progress:
            try:
                session.client.put(single_name, sys.stdin.buffer, options.size,
                                   progress=progress, replace=options.replace)
            except Exists:
                raise exists_error(single_name) from None
        return 0
    many = len(files) > 1 or options.recursive or always_report

    def stored(remote: Path, size: int) -> None:
        if many and not options.quiet:
            out.write("stored %s (%s)\n" % (text(remote), human_size(size)))

    for local in files:
        local = os.path.expanduser(local)
        if options.recursive and os.path.isdir(local):
            batch.run(lambda local=local: put_tree(session, local, folder, options, batch,
                                                   stored))
            continue

        def one(local=local):
            remote = single_name if single_name is not None else \
                folder + (library_name(local),)
            stored(remote, put_file(session, local, remote, options, batch))
        batch.run(one)
    return batch.first_failure


def put_destination(session: Session, files: list[str], target: str | None,
                    options: PutOptions, current: Path) -> tuple[Path, Path | None]:
    """(the library folder files go into, or the one name the one file gets)."""
    if target is None:
        if files == ["-"]:
            raise LocalError("put - needs a name (put - NAME, or --as NAME) and --size N")
        return current, None
    path = resolve(target, current)
    if options.recursive:
        if path:  # -r: the last word is always a folder; made when missing
            from cli.commands import cmd_mkdir
            cmd_mkdir(session.client, path, parents=True)
        return path, None
    entry = stat_or_none(session.client, path) if path else Entry("", 0, 0, "folder")
    if entry is not None and entry.is_folder:
        return path, None
    if wants_folder(target):
        raise NotFound("no such folder in the library: %s" % text(path))
    if len(files) > 1:
        if entry is None:
            raise NotFound("no such folder in the library: %s (with several files the last "
                           "argument must be a folder)" % text(path))
        raise LocalError("%s is a file; with several files the last argument must be a "
                         "folder" % text(path))
    return path[:-1], path


def library_name(local: str) -> str:
    base = os.path.basename(local.rstrip(os.sep)) or local
    try:
        return validate_name(base)
    except InvalidName as exc:
        raise LocalError("%s cannot be a name in the library (%s); give it a name: "
                         "put FILE NAME" % (local, str(exc).replace("invalid name: ", "")))\
            from None


def exists_error(remote: Path) -> Exists:
    return Exists("%s is already in the library (put --replace replaces it)" % text(remote))


def put_file(session: Session, local: str, remote: Path, options: PutOptions,
             batch: Batch) -> int:
    """Upload one regular file; the bytes stored."""
    try:
        fd = os.open(local, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise LocalNotFound("no such file: %s" % local) from None
    except PermissionError:
        raise LocalError("cannot read %s: permission denied" % local) from None
    except OSError as exc:
        raise LocalError("cannot read %s: %s" % (local, why(exc))) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsAFolder("%s is a folder; put -r uploads a folder" % local)
        raise LocalError("%s is not a regular file; not uploaded" % local)
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as handle:
        records = options.records
        name = text(remote)
        with progress_bar(name, info.st_size, options.show_progress,
                          initial=None if options.resume else 0) as progress:
            try:
                stored = upload_resumably(
                    session.client, name, handle, info, server=session.server,
                    records=records, local=local, replace=options.replace,
                    resume=options.resume, progress=progress, note=batch.note)
            except Exists:
                raise exists_error(remote) from None
            except NotFound:
                raise NotFound("no such folder in the library: %s"
                               % text(remote[:-1])) from None
            except (KeyboardInterrupt, ConnectionLost):
                if records is not None and records.load(
                        records.key(session.server, name, local, info)):
                    say("the upload of %s was cut; continue with: %s --continue%s %s %s"
                        % (local, options.continue_hint,
                           " --replace" if options.replace else "",
                           shlex.quote(os.path.abspath(local)), shlex.quote("/" + name)))
                raise
    return stored.size


def put_tree(session: Session, top: str, folder: Path, options: PutOptions, batch: Batch,
             stored) -> None:
    """Upload the local folder ``top`` into the library folder ``folder``: its
    folders first, then its files. Links and special files are skipped."""
    top = os.path.abspath(top)
    root = folder + (library_name(top),)
    folders, files = [root], []
    pending = [(top, root)]
    while pending:
        here, remote = pending.pop(0)
        try:
            with os.scandir(here) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            batch.fail(LocalError("cannot read the folder %s: %s" % (here, why(exc))))
            continue
        for entry in entries:
            local = entry.path
            kind = local_kind(entry)
            if kind == "link":
                batch.note("skipped %s: a symbolic link" % local)
                continue
            if kind not in ("file", "folder"):
                batch.note("skipped %s: %s, not a regular file" % (local, kind))
                continue
            if entry.name.startswith("."):
                batch.note("skipped %s: names starting with '.' are hidden in the library"
                           % local)
                continue
            try:
                path = remote + (library_name(local),)
            except LocalError as exc:
                batch.fail(exc)
                continue
            if kind == "folder":
                folders.append(path)
                pending.append((local, path))
            else:
                files.append((local, path))
    made = set()
    for path in folders:
        if path[:-1] not in made and path != root:
            continue  # its parent could not be made: it reported already
        if batch.run(lambda path=path: make_remote_folder(session, path)):
            made.add(path)
    for local, path in files:
        if path[:-1] in made:
            batch.run(lambda local=local, path=path: stored(path, put_file(
                session, local, path, options, batch)))


def local_kind(entry: os.DirEntry) -> str:
    try:
        mode = entry.stat(follow_symlinks=False).st_mode
    except OSError:
        return "gone"
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "something else"


def make_remote_folder(session: Session, path: Path) -> None:
    """MKDIR; a folder that is already there is fine, a file there is not."""
    try:
        session.client.mkdir(path)
    except Exists:
        entry = stat_or_none(session.client, path)
        if entry is None or not entry.is_folder:
            raise Exists("%s is a file in the library; the folder cannot be made"
                         % text(path)) from None
