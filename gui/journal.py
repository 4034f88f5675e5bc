"""The transfer queue on disk, so a crash or a kill loses nothing that was queued.

UI thread only. Each batch gets two files in the state folder's ``queue/``:
``<key>.json`` (written once, atomically, when the batch is queued: server,
direction and every file: name, local path, size, mtime, overwrite and, for a
download, the library version it was queued for, which a resumed download
names to the server) and ``<key>.log`` (one line ``INDEX STATE`` appended
when a file finishes or is queued again; the last line for an index wins).
Appends are buffered and written once per tick, so a 10,000-file batch costs
one small write per tick, not one rewrite per file. A batch that is over
(cleared, or every file done or cancelled) loses both files.
"""

from __future__ import annotations

import json
import logging
import os
import uuid

log = logging.getLogger("shelf.gui")

FINISHED = ("done", "cancelled")   # what needs no resuming


class Journal:
    def __init__(self, folder: str | None):
        self.folder = folder
        self._pending: dict[str, list[str]] = {}

    def _path(self, key: str, suffix: str) -> str:
        return os.path.join(self.folder, key + suffix)

    def add(self, batch) -> str:
        """Record a new batch; returns its key ("" when there is no folder)."""
        if not self.folder:
            return ""
        key = uuid.uuid4().hex
        record = {"direction": batch.direction, "host": batch.address[0],
                  "port": batch.address[1], "folder": batch.folder,
                  "files": [[j.name, j.local_path, j.size, j.mtime, j.overwrite, j.version]
                            for j in batch.jobs]}
        try:
            os.makedirs(self.folder, exist_ok=True)
            temp = self._path(key, ".json.tmp")
            text = json.dumps(record)  # one write: json.dump() writes piece by piece
            with open(temp, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(temp, self._path(key, ".json"))
        except OSError as exc:
            log.warning("cannot save the transfer queue: %s", exc)
            return ""
        return key

    def note(self, batch, index: int, state: str) -> None:
        if batch.journal_key:
            self._pending.setdefault(batch.journal_key, []).append("%d %s\n" % (index, state))

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for key, lines in pending.items():
            try:
                with open(self._path(key, ".log"), "a", encoding="utf-8") as handle:
                    handle.write("".join(lines))
            except OSError as exc:
                log.warning("cannot save the transfer queue: %s", exc)

    def forget(self, batch) -> None:
        if not batch.journal_key:
            return
        self._pending.pop(batch.journal_key, None)
        for suffix in (".json", ".log"):
            try:
                os.unlink(self._path(batch.journal_key, suffix))
            except OSError:
                pass
        batch.journal_key = ""

    def unfinished(self) -> list[dict]:
        """What earlier runs left: one dict per batch with the files still to move."""
        if not self.folder or not os.path.isdir(self.folder):
            return []
        left = []
        for entry in sorted(os.listdir(self.folder)):
            if not entry.endswith(".json"):
                continue
            key = entry[:-len(".json")]
            try:
                with open(self._path(key, ".json"), encoding="utf-8") as handle:
                    record = json.load(handle)
                states = {}
                if os.path.exists(self._path(key, ".log")):
                    with open(self._path(key, ".log"), encoding="utf-8") as handle:
                        for line in handle:
                            index, _, state = line.strip().partition(" ")
                            if index.isdigit():
                                states[int(index)] = state
                files = [f for i, f in enumerate(record["files"])
                         if states.get(i) not in FINISHED]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring a damaged queue record %s: %s", entry, exc)
                continue
            record["files"] = files
            record["key"] = key
            if files:
                left.append(record)
            else:
                self.discard(key)
        return left

    def discard(self, key: str) -> None:
        for suffix in (".json", ".log"):
            try:
                os.unlink(self._path(key, suffix))
            except OSError:
                pass
