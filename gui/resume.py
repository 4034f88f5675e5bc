"""Offering to resume what an earlier run left unfinished (after a quit, a crash or a kill).

UI thread only. ``ResumeActions`` is a part of ``ShelfApp`` (a mixin). At
start the app reads ``gui.journal``'s unfinished records (before this run
queues anything); a moment later ``offer_resume`` asks once whether to resume
them. Resumed downloads go on from their part files (the jobs are marked
``resume``); discarded ones lose their part files.
"""

from __future__ import annotations

from common.humanize import human_size
from gui.dialogs import ChoiceDialog
from gui.engine import DOWNLOAD, part_path, remove_quietly
from gui.wording import plural


class ResumeActions:
    """Resume or discard what the journal kept from an earlier run. UI thread only."""

    def offer_resume(self) -> None:
        self._resume_job = None
        if self.closing or self.closed or self.active_dialog is not None:
            return
        left, self._left_over = self._left_over, []
        if not left:
            return
        files = sum(len(record["files"]) for record in left)
        size = sum(f[2] for record in left for f in record["files"])
        servers = sorted({"%s:%d" % (r["host"], r["port"]) for r in left})

        def answered(choice) -> None:
            self.active_dialog = None
            if choice == "resume":
                self.resume_records(left)
            elif choice == "discard":
                self.discard_records(left)
            # Escape or the close box: not now. The records and part files stay, and the
            # next start asks again (nothing is thrown away unasked).

        self.active_dialog = ChoiceDialog(
            self.root, "Resume transfers?", "%s (%s) to or from %s were not finished when "
            "Shelf last closed." % (plural(files, "file"), human_size(size), ", ".join(servers)),
            [("resume", "Resume them"), ("discard", "Discard them")], answered,
            default="resume", cancel_value="later",
            detail="Downloads go on from the part they had; uploads start their file again.")

    def resume_records(self, records) -> None:
        for record in records:
            # f[5], the version a download was queued for, is what its part file holds;
            # a record without one (an older Shelf's) starts its downloads over.
            items = [{"name": f[0], "path": f[1], "size": f[2], "mtime": f[3],
                      "overwrite": f[4], "resume": True,
                      "version": f[5] if len(f) > 5 else None} for f in record["files"]]
            self.journal.discard(record["key"])
            self.add_batch(record["direction"], (record["host"], record["port"]), items,
                           record.get("folder", ""))
        self.log_message("Resumed %s from the last session"
                         % plural(sum(len(r["files"]) for r in records), "file"))

    def discard_records(self, records) -> None:
        for record in records:
            if record["direction"] == DOWNLOAD:
                for f in record["files"]:
                    remove_quietly(part_path(f[1]))
            self.journal.discard(record["key"])
