"""Moving a library file onto this machine without ever leaving a partial file.

Shared by the terminal and the desktop client; runs in whatever thread calls
it (a desktop worker, the terminal's main thread). The bytes go to a hidden
``.NAME.shelf-part`` beside the target, which becomes the target only when
every byte arrived (and, if asked, the SHA-256 matched).
"""

from __future__ import annotations

import hashlib
import os

from common.client import Client, ConnectionLost, ShelfError

PART_SUFFIX = ".shelf-part"


class LocalError(ShelfError):
    """A problem on this machine's side (a file that is there or is not)."""


class DestinationExists(LocalError):
    pass


class VerifyFailed(ShelfError):
    pass


class Partial(ConnectionLost):
    """A download was cut; the bytes so far are kept for a resume."""


def part_path(target: str) -> str:
    folder, base = os.path.split(target)
    return os.path.join(folder, "." + base + PART_SUFFIX)


def resume_offset(target: str, size: int) -> int:
    """Where a resumed download of a ``size``-byte file into ``target`` starts.

    The bytes kept in its part file, or 0 when there are none or more than the
    file has (then the part file cannot be a prefix of it: start over).
    """
    temp = part_path(target)
    kept = os.path.getsize(temp) if os.path.isfile(temp) else 0
    return kept if kept <= size else 0


def download_atomically(client: Client, name: str, target: str, *, overwrite: bool = False,
                        resume: bool = False, keep_partial: bool = False, verify: bool = False,
                        progress=None, cancel=None, size: int | None = None) -> int:
    """Download ``name`` to ``target``; return the file's size.

    ``progress(done)`` counts from the start of the file (a resumed download
    starts at the kept bytes). With ``keep_partial``, a cut connection keeps
    the part file for ``resume`` and raises Partial; every other failure,
    cancellation or interruption removes it.
    """
    if os.path.lexists(target) and not overwrite:
        raise DestinationExists("%s already exists" % target)
    folder = os.path.dirname(target) or "."
    if not os.path.isdir(folder):
        raise LocalError("no such folder: %s" % folder)
    temp = part_path(target)
    if size is None:
        size = client.stat(name).size
    offset = resume_offset(target, size) if resume else 0
    absolute = (lambda done: progress(offset + done)) if progress else None
    keep = False
    try:
        try:
            handle = open(temp, "ab" if offset else "wb")
        except OSError as exc:
            raise LocalError("cannot write in %s: %s" % (folder, (exc.strerror or exc).lower())) \
                from None
        with handle:
            try:
                client.get(name, handle, offset=offset, progress=absolute, cancel=cancel)
            except ConnectionLost:
                keep = keep_partial and handle.tell() > 0
                raise
            handle.flush()
            os.fsync(handle.fileno())
        if verify:
            expected = client.hash(name)
            actual = sha256_of(temp)
            if actual != expected:
                raise VerifyFailed("%s: checksum mismatch (got %s…, the library says %s…); "
                                   "nothing was saved" % (name, actual[:12], expected[:12]))
        if overwrite:
            os.replace(temp, target)
        else:
            try:
                os.link(temp, target)
            except FileExistsError:
                raise DestinationExists("%s appeared meanwhile; not replaced" % target) from None
            os.unlink(temp)
    except ConnectionLost as exc:
        if keep:
            raise Partial("%s: download cut (%s)" % (name, exc)) from None
        remove_quietly(temp)
        raise
    except BaseException:
        remove_quietly(temp)
        raise
    return size


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def unused_name(name: str, taken) -> str:
    """``report (2).pdf``, ``report (3).pdf``...: the first name not in ``taken``."""
    stem, dot, extension = name.rpartition(".")
    if not stem:  # no extension, or a name like ".bashrc"
        stem, dot, extension = name, "", ""
    number = 2
    while True:
        candidate = "%s (%d)%s%s" % (stem, number, dot, extension)
        if candidate not in taken:
            return candidate
        number += 1
