"""The two browser panes: a shared base, your files (Local) and the library (Remote).

UI thread only, all of it. The local pane reads the local disk directly (a
folder listing is quick and never waits on the network); the remote pane
never talks to the network: the app asks a worker for the listing and hands
the reply to ``RemotePane.show_entries``. A long list is drawn a slice per
event-loop turn (``RENDER_SLICE`` rows), so 10,000 rows never freeze the window.
Special files (pipes, sockets, devices, broken links) are listed as what they
are and are never opened.
"""

from __future__ import annotations

import os
import stat
import tkinter as tk
from dataclasses import dataclass
from tkinter import ttk

from common.humanize import human_size, local_time
from gui.wording import plural

RENDER_SLICE = 1500   # rows inserted per turn of the event loop
KIND_WORDS = {"fifo": "pipe (FIFO)", "socket": "socket", "device": "device",
              "broken": "broken link", "other": "special file"}


@dataclass(frozen=True)
class Row:
    name: str
    size: int
    mtime: float
    is_dir: bool = False
    kind: str = "file"     # file, folder, fifo, socket, device, broken, other
    version: str | None = None  # a library file's version (None for folders, local rows)

    @property
    def special(self) -> bool:
        return self.kind in KIND_WORDS


def make_icons(master, size: int) -> dict[str, tk.PhotoImage]:
    """Folder and file icons drawn at the screen's scale (no image files needed)."""
    folder = tk.PhotoImage(master=master, width=size, height=size)
    unit = size / 16
    tab = "#e0a526"
    body = "#f4c145"
    folder.put(tab, to=(int(1 * unit), int(3 * unit), int(7 * unit), int(5 * unit)))
    folder.put(body, to=(int(1 * unit), int(5 * unit), int(15 * unit), int(14 * unit)))
    folder.put(tab, to=(int(1 * unit), int(13 * unit), int(15 * unit), int(14 * unit)))
    page = tk.PhotoImage(master=master, width=size, height=size)
    edge = "#7d8a99"
    page.put(edge, to=(int(3 * unit), int(1 * unit), int(13 * unit), int(15 * unit)))
    page.put("#ffffff", to=(int(4 * unit), int(2 * unit), int(12 * unit), int(14 * unit)))
    for line in (5, 8, 11):
        page.put("#aab4c0", to=(int(5 * unit), int(line * unit), int(11 * unit),
                                int(line * unit) + max(1, int(unit))))
    return {"folder": folder, "file": page}


class BrowserPane(ttk.Frame):
    """A titled, sortable Name/Size/Modified list. Subclasses fill ``rows``. UI thread only."""

    title = ""

    def __init__(self, master, icons: dict[str, tk.PhotoImage], sort=("name", False)):
        super().__init__(master, padding=(4, 4))
        self.icons = icons
        self.rows: dict[str, Row] = {}
        self._pending: list[Row] = []
        self._keep = (set(), "")
        self._render_job = None
        self.sort_column, self.sort_descending = sort
        self.header = ttk.Frame(self)
        self.header.pack(fill="x")
        ttk.Label(self.header, text=self.title, font="TkHeadingFont").pack(side="left")
        self.build_header(self.header)
        self.footer = ttk.Label(self, text="", anchor="w")
        self.footer.pack(side="bottom", fill="x", pady=(4, 0))  # before the list: never squeezed
        tree_frame = ttk.Frame(self)
        tree_frame.pack(fill="both", expand=True, pady=(4, 0))
        self.tree = ttk.Treeview(tree_frame, columns=("size", "modified"), selectmode="extended")
        self.tree.column("#0", width=260, minwidth=120, stretch=True)
        self.tree.column("size", width=84, minwidth=60, anchor="e", stretch=False)
        self.tree.column("modified", width=148, minwidth=140, anchor="w", stretch=False)
        self.tree.tag_configure("special", foreground="#8a6d00")
        for column in ("#0", "size", "modified"):
            self.tree.heading(column, command=lambda c=column: self.sort_by(c))
        scroll = ttk.Scrollbar(tree_frame, orient="vertical", command=self.tree.yview)
        self.tree.configure(yscrollcommand=scroll.set)
        self.tree.pack(side="left", fill="both", expand=True)
        scroll.pack(side="right", fill="y")
        self.tree.bind("<Control-a>", self.select_all)
        self.tree.bind("<Control-A>", self.select_all)
        self._update_headings()

    def build_header(self, header: ttk.Frame) -> None:
        """Subclasses add their own controls to the header row."""

    # -- rows ----------------------------------------------------------------

    def set_rows(self, rows: list[Row], keep_selection: bool = True) -> None:
        self.rows = {row.name: row for row in rows}
        self.render(keep_selection)

    def visible_rows(self) -> list[Row]:
        return list(self.rows.values())

    def sorted_rows(self) -> list[Row]:
        rows = self.visible_rows()
        key = {"#0": lambda r: r.name.casefold(), "name": lambda r: r.name.casefold(),
               "size": lambda r: (r.size, r.name.casefold()),
               "modified": lambda r: (r.mtime, r.name.casefold())}[self.sort_column]
        rows.sort(key=key, reverse=self.sort_descending)
        rows.sort(key=lambda r: not r.is_dir)  # folders first, whatever the order (stable)
        return rows

    def render(self, keep_selection: bool = True) -> None:
        """Redraw the list; past RENDER_SLICE rows the rest follows a slice per turn."""
        selected = set(self.tree.selection()) if keep_selection else set()
        focus = self.tree.focus() if keep_selection else ""
        if self._render_job is not None:
            self.after_cancel(self._render_job)
            self._render_job = None
        self.tree.delete(*self.tree.get_children())
        self._pending = self.sorted_rows()
        self._keep = (selected, focus)
        self._render_slice()
        self.update_footer()

    def _render_slice(self) -> None:
        self._render_job = None
        rows, self._pending = self._pending[:RENDER_SLICE], self._pending[RENDER_SLICE:]
        insert = self.tree.insert
        folder, page = self.icons["folder"], self.icons["file"]
        for row in rows:
            if row.is_dir:
                size = ""
            elif row.special:
                size = KIND_WORDS[row.kind]
            else:
                size = human_size(row.size)
            insert("", "end", iid=row.name, text=" " + row.name,
                   image=folder if row.is_dir else page, values=(size, local_time(row.mtime)),
                   tags=("special",) if row.special else ())
        selected, focus = self._keep
        keep = [item for item in selected if self.tree.exists(item)]
        if keep:
            self.tree.selection_add(keep)
        if focus and self.tree.exists(focus):
            self.tree.focus(focus)
        if self._pending:
            self._render_job = self.after(1, self._render_slice)

    def stop_render(self) -> None:
        if self._render_job is not None:
            self.after_cancel(self._render_job)
            self._render_job = None

    def finish_render(self) -> None:
        """Draw whatever is still pending now (tests, and before acting on the rows)."""
        while self._render_job is not None:
            self.after_cancel(self._render_job)
            self._render_slice()

    def update_footer(self) -> None:
        files = [row for row in self.visible_rows() if not row.is_dir]
        folders = len(self.visible_rows()) - len(files)
        parts = [plural(len(files), "file")]
        if folders:
            parts.append(plural(folders, "folder"))
        parts.append(human_size(sum(row.size for row in files)))
        self.footer.configure(text=", ".join(parts))

    # -- sorting and selection -------------------------------------------------

    def sort_by(self, column: str) -> None:
        column = "name" if column == "#0" else column
        if column == self.sort_column:
            self.sort_descending = not self.sort_descending
        else:
            self.sort_column, self.sort_descending = column, False
        self._update_headings()
        self.render()
        self.sort_changed()

    def sort_changed(self) -> None:
        """Hook: the app saves the settings."""

    def _update_headings(self) -> None:
        arrow = " ▼" if self.sort_descending else " ▲"
        for column, text in (("#0", "Name"), ("size", "Size"), ("modified", "Modified")):
            name = "name" if column == "#0" else column
            self.tree.heading(column, text=text + (arrow if name == self.sort_column else ""))

    def displayed_names(self) -> list[str]:
        self.finish_render()
        return list(self.tree.get_children())

    def selected_rows(self) -> list[Row]:
        return [self.rows[item] for item in self.tree.selection() if item in self.rows]

    def select(self, names) -> None:
        self.finish_render()
        items = [name for name in names if self.tree.exists(name)]
        self.tree.selection_set(items)
        if items:
            self.tree.focus(items[0])
            self.tree.see(items[0])

    def select_all(self, event=None) -> str:
        self.finish_render()
        self.tree.selection_set(self.tree.get_children())
        return "break"


class LocalPane(BrowserPane):
    """Your files: a folder on this machine. UI thread only."""

    title = "Your files"

    def __init__(self, master, icons, folder: str, show_hidden: bool = False, sort=("name", False)):
        self.path_var = tk.StringVar(master, value=folder)
        self.hidden_var = tk.BooleanVar(master, value=show_hidden)
        self.folder = ""
        self.on_error = lambda message: None
        super().__init__(master, icons, sort)
        self.tree.bind("<BackSpace>", lambda e: self.go_up())
        self.tree.bind("<Alt-Up>", lambda e: self.go_up())

    def build_header(self, header) -> None:
        # Created in reading order, so Tab goes Up, Home, Hidden.
        ttk.Frame(header).pack(side="left", fill="x", expand=True)
        self.up_button = ttk.Button(header, text="Up", width=4, command=self.go_up)
        self.up_button.pack(side="left")
        self.home_button = ttk.Button(header, text="Home", width=6,
                                      command=lambda: self.open_folder(os.path.expanduser("~")))
        self.home_button.pack(side="left", padx=(4, 4))
        self.hidden_check = ttk.Checkbutton(header, text="Hidden", variable=self.hidden_var,
                                            command=self.refresh)
        self.hidden_check.pack(side="left")
        bar = ttk.Frame(self)
        bar.pack(fill="x", pady=(4, 0))
        self.path_entry = ttk.Entry(bar, textvariable=self.path_var)
        self.path_entry.pack(fill="x")
        self.path_entry.bind("<Return>", lambda e: self.open_folder(self.path_var.get()))
        self.path_entry.bind("<KP_Enter>", lambda e: self.open_folder(self.path_var.get()))

    def open_folder(self, folder: str, quiet: bool = False) -> bool:
        """Show ``folder``. Another folder starts with nothing selected: a selection
        never carries over to files of the same name elsewhere."""
        folder = os.path.abspath(os.path.expanduser(folder.strip() or "~"))
        try:
            rows = list_local(folder, self.hidden_var.get())
        except OSError as exc:
            reason = "no such folder" if isinstance(exc, FileNotFoundError) else \
                "not a folder" if isinstance(exc, NotADirectoryError) else \
                (exc.strerror or str(exc)).lower()
            if not quiet:
                self.on_error("cannot open %s: %s" % (folder, reason))
            self.path_entry.state(["invalid"])
            self.path_entry.focus_set()
            self.path_entry.select_range(0, "end")
            return False
        same = folder == self.folder
        self.folder = folder
        self.path_var.set(folder)
        self.path_entry.state(["!invalid"])
        self.set_rows(rows, keep_selection=same)
        if not same:
            self.folder_changed()
        children = self.tree.get_children()
        if children and not (same and self.tree.focus()):
            self.tree.focus(children[0])
        return True

    def folder_changed(self) -> None:
        """Hook: the app saves the settings."""

    def refresh(self) -> None:
        self.open_folder(self.folder)

    def go_up(self) -> str:
        parent = os.path.dirname(self.folder.rstrip(os.sep)) or os.sep
        previous = os.path.basename(self.folder.rstrip(os.sep))
        if self.open_folder(parent) and previous:
            self.select([previous])
        return "break"

    def path_of(self, row: Row) -> str:
        return os.path.join(self.folder, row.name)


def list_local(folder: str, show_hidden: bool) -> list[Row]:
    """The folder's entries, each with what it is; nothing here opens a file."""
    rows = []
    with os.scandir(folder) as scan:
        for item in scan:
            if not show_hidden and item.name.startswith("."):
                continue
            try:
                info = item.stat()  # through a symlink: what it points to
            except OSError:
                try:
                    info = item.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISLNK(info.st_mode):
                    rows.append(Row(item.name, 0, info.st_mtime, False, "broken"))
                    continue
            rows.append(Row(item.name, 0 if stat.S_ISDIR(info.st_mode) else info.st_size,
                            info.st_mtime, stat.S_ISDIR(info.st_mode), kind_of(info.st_mode)))
    return rows


def kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "other"


class RemotePane(BrowserPane):
    """The library: rendered from listings a worker fetched. UI thread only.

    ``folder`` is the library folder shown (``"photos/2024"``; ``""`` is the
    root): it changes only when that folder's listing arrives, so the rows,
    the breadcrumbs and where uploads go always agree. ``on_open(folder)`` is
    the app's request to show another folder (a breadcrumb was clicked)."""

    title = "Library"

    def __init__(self, master, icons, sort=("name", False)):
        self.filter_var = tk.StringVar(master)
        self.folder = ""
        self.server_name = ""
        self.on_open = lambda folder: None
        self.select_after: str | None = None  # a row to select once the listing arrives
        super().__init__(master, icons, sort)
        self.filter_var.trace_add("write", lambda *args: self.render())
        self.placeholder = ttk.Label(self.tree, text="Not connected", anchor="center")
        self.set_placeholder("Not connected")

    def build_header(self, header) -> None:
        self.filter_entry = ttk.Entry(header, textvariable=self.filter_var, width=16)
        self.filter_entry.pack(side="right")
        ttk.Label(header, text="Filter").pack(side="right", padx=(0, 4))
        self.path_bar = ttk.Frame(self)
        self.path_bar.pack(fill="x", pady=(4, 0))
        self.crumbs: list[ttk.Button] = []
        self._show_crumbs()

    def _show_crumbs(self) -> None:
        """The path bar: the server, then each folder down to this one; each opens it."""
        for widget in self.path_bar.winfo_children():
            widget.destroy()
        self.crumbs = []
        if not self.server_name:
            ttk.Label(self.path_bar, text=" ").pack(side="left")
            return
        parts = self.folder.split("/") if self.folder else []
        targets = [("", self.server_name)] + [("/".join(parts[:i + 1]), part)
                                              for i, part in enumerate(parts)]
        for index, (target, label) in enumerate(targets):
            if index:
                ttk.Label(self.path_bar, text="›").pack(side="left", padx=2)
            button = ttk.Button(self.path_bar, text=label, style="Toolbutton", takefocus=False,
                                command=lambda t=target: self.on_open(t))
            button.pack(side="left")
            self.crumbs.append(button)

    def crumb_labels(self) -> list[str]:
        return [str(button.cget("text")) for button in self.crumbs]

    def path_of(self, row: Row) -> str:
        """The row's path in the library (``folder/name``)."""
        return self.folder + "/" + row.name if self.folder else row.name

    def show_entries(self, entries, folder: str = "") -> None:
        """The entries (``common.client.Entry``) of the library ``folder``: folders first,
        with the folder icon and no size. Another folder starts with nothing selected
        (or the folder just left, after going up)."""
        same = folder == self.folder
        self.folder = folder
        self.set_rows([Row(e.name, 0, e.mtime, True, "folder") if e.is_folder else
                       Row(e.name, e.size, e.mtime, version=e.version) for e in entries],
                      keep_selection=same)
        self._show_crumbs()
        if not entries:
            self.set_placeholder("The library is empty: drop files here" if not folder else
                                 "This folder is empty: drop files here")
        else:
            self.set_placeholder(None)
        wanted, self.select_after = self.select_after, None
        if wanted and wanted in self.rows:
            self.select([wanted])
        elif not same:
            children = self.tree.get_children()
            if children:
                self.tree.focus(children[0])

    def set_placeholder(self, text: str | None) -> None:
        if text:
            self.placeholder.configure(text=text)
            self.placeholder.place(relx=0.5, rely=0.4, anchor="center")
        else:
            self.placeholder.place_forget()

    def clear(self, text: str = "Not connected") -> None:
        self.set_rows([])
        self.set_placeholder(text)
        if text == "Not connected":
            self.folder, self.server_name = "", ""
        self._show_crumbs()

    def visible_rows(self) -> list[Row]:
        needle = self.filter_var.get().casefold()
        rows = self.rows.values()
        return [row for row in rows if needle in row.name.casefold()] if needle else list(rows)

    def update_footer(self) -> None:
        shown = self.visible_rows()
        total = len(self.rows)
        files = [row for row in shown if not row.is_dir]
        text = plural(len(files), "file")
        if len(files) != len(shown):
            text += ", " + plural(len(shown) - len(files), "folder")
        text += ", " + human_size(sum(row.size for row in files))
        if len(shown) != total:
            text += " (filtered from %d)" % total
        self.footer.configure(text=text)
