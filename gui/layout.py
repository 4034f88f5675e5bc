"""The window's layout, menus, keys, mouse and context menus.

UI thread only. ``build_window(app)`` creates every control on ``app`` (the
names the rest of the code and the tests use: ``connect_button``,
``upload_button``, ``cancel_button``...). The layout holds at the minimum
window size (``MIN_SIZE``): rows that must stay visible (the bars, the
transfer buttons, the status line) are laid out before the lists that
stretch, and the two panes have minimum sizes, so nothing is squeezed out.

Tab moves through every control in reading order (Shift+Tab back); a ring
shows which one has the focus; F6 jumps between the two lists; Shift+F10 or
the Menu key opens the context menu of the focused list; Alt plus the
underlined letter opens a menu.
"""

from __future__ import annotations

import os
import tkinter as tk
import tkinter.font
from tkinter import ttk

from gui.panes import LocalPane, RemotePane, make_icons
from gui.transfers import TransferList
from gui.widgets import RING, ROW_BACKGROUND, FocusRing, Tooltip, style_selection

MIN_SIZE = (720, 540)
DRAG_THRESHOLD = 6    # pixels before a press becomes a drag


def build_window(app) -> None:
    root = app.root
    scale = app.scale
    style = ttk.Style(root)
    font = tk.font.nametofont("TkDefaultFont")
    style.configure("Treeview", rowheight=max(font.metrics("linespace") + int(8 * scale),
                                              int(22 * scale)))
    style_selection(root, app.theme)
    app.icons = make_icons(root, int(round(16 * scale)))
    root.minsize(int(MIN_SIZE[0] * scale), int(MIN_SIZE[1] * scale))
    background = ROW_BACKGROUND.get(app.theme, ROW_BACKGROUND["default"])
    build_menus(app)

    outer = ttk.Frame(root, padding=(6, 4, 6, 2))
    outer.pack(fill="both", expand=True)

    bar = ttk.Frame(outer)
    bar.pack(side="top", fill="x")
    ttk.Label(bar, text="Host").pack(side="left")
    app.host_var = tk.StringVar(root, value=app.settings.host)
    app.host_box = ttk.Combobox(bar, textvariable=app.host_var, width=18,
                                values=app.settings.recent)
    app.host_box.pack(side="left", padx=(4, 8))
    app.host_box.bind("<<ComboboxSelected>>", app._recent_chosen)
    ttk.Label(bar, text="Port").pack(side="left")
    app.port_var = tk.StringVar(root, value=str(app.settings.port))
    app.port_entry = ttk.Entry(bar, textvariable=app.port_var, width=6)
    app.port_entry.pack(side="left", padx=(4, 8))
    for widget in (app.host_box, app.port_entry):
        widget.bind("<Return>", lambda e: app.connect_clicked())
        widget.bind("<KP_Enter>", lambda e: app.connect_clicked())
    app.connect_button = ttk.Button(bar, text="Connect", command=app.connect_clicked,
                                    style="Accent.TButton", width=10)
    app.connect_button.pack(side="left")
    app.state_var = tk.StringVar(root, value="Not connected")
    app.state_label = ttk.Label(bar, textvariable=app.state_var, anchor="w")
    app.state_label.pack(side="left", padx=10, fill="x", expand=True)

    tools = ttk.Frame(outer)
    tools.pack(side="top", fill="x", pady=(4, 0))
    app.upload_button = ttk.Button(tools, text="Upload →", command=app.upload_selected)
    app.download_button = ttk.Button(tools, text="← Download", command=app.download_selected)
    app.refresh_button = ttk.Button(tools, text="Refresh", command=app.refresh)
    for button in (app.upload_button, app.download_button, app.refresh_button):
        button.pack(side="left", padx=(0, 6))

    # Packed before the panes, so the status line is never squeezed out.
    app.status_var = tk.StringVar(root, value="Not connected")
    status = ttk.Frame(outer)
    status.pack(side="bottom", fill="x", pady=(2, 0))
    app.security_var = tk.StringVar(root, value="")  # "🔒 TLS" while the session is encrypted
    app.security_label = ttk.Label(status, textvariable=app.security_var, anchor="e")
    app.security_label.pack(side="right", padx=(8, 0))
    app.status_label = ttk.Label(status, textvariable=app.status_var, anchor="w")
    app.status_label.pack(side="left", fill="x", expand=True)
    app.tooltips = [Tooltip(app.status_label,
                            lambda e: _clipped_text(app.status_label, app.status_var.get()))]

    app.vpaned = tk.PanedWindow(outer, orient="vertical", sashwidth=int(6 * scale),
                                background=background, borderwidth=0, opaqueresize=True)
    app.vpaned.pack(side="top", fill="both", expand=True, pady=(4, 0))
    app.paned = tk.PanedWindow(app.vpaned, orient="horizontal", sashwidth=int(6 * scale),
                               background=background, borderwidth=0, opaqueresize=True)
    app.local = LocalPane(app.paned, app.icons,
                          app.settings.local_folder or os.path.expanduser("~"),
                          app.settings.show_hidden, tuple(app.settings.local_sort))
    app.local.on_error = lambda message: app.show_error(message, log_it=True)
    app.remote = RemotePane(app.paned, app.icons, tuple(app.settings.remote_sort))
    for pane in (app.local, app.remote):
        app.paned.add(pane, minsize=int(300 * scale), stretch="always")
    app.vpaned.add(app.paned, minsize=int(190 * scale), stretch="always")

    bottom = ttk.Notebook(app.vpaned)
    transfers_tab = ttk.Frame(bottom, padding=(4, 4, 4, 2))
    buttons = ttk.Frame(transfers_tab)
    buttons.pack(side="bottom", fill="x", pady=(4, 0))   # before the list: never squeezed
    app.cancel_button = ttk.Button(buttons, text="Cancel", command=app.cancel_selected)
    app.retry_button = ttk.Button(buttons, text="Retry", command=app.retry_selected)
    app.clear_button = ttk.Button(buttons, text="Clear finished", command=app.clear_finished)
    for button in (app.cancel_button, app.retry_button, app.clear_button):
        button.pack(side="left", padx=(0, 6))
    app.queue_var = tk.StringVar(root, value="")
    ttk.Label(buttons, textvariable=app.queue_var).pack(side="right")
    app.transfer_list = TransferList(transfers_tab, scale)
    app.transfer_list.pack(side="top", fill="both", expand=True)
    app.tooltips.append(Tooltip(app.transfer_list.tree,
                                lambda e: _row_tooltip(app.transfer_list.tree, e)))
    bottom.add(transfers_tab, text="Transfers", underline=0)

    log_tab = ttk.Frame(bottom, padding=4)
    app.log_text = tk.Text(log_tab, height=5, wrap="word", state="disabled",
                           borderwidth=0, highlightthickness=0)
    log_scroll = ttk.Scrollbar(log_tab, orient="vertical", command=app.log_text.yview)
    app.log_text.configure(yscrollcommand=log_scroll.set)
    app.log_text.pack(side="left", fill="both", expand=True)
    log_scroll.pack(side="right", fill="y")
    app.log_text.tag_configure("error", foreground="#d64545")
    app.log_text.tag_configure("ok", foreground="#2e8b57")
    app.log_text.tag_configure("time", foreground="#888888")
    bottom.add(log_tab, text="Messages", underline=0)
    bottom.enable_traversal()
    app.bottom = bottom
    app.vpaned.add(bottom, minsize=int(165 * scale), stretch="never",
                   height=int(200 * scale))

    for pane in (app.local, app.remote):
        tree = pane.tree
        tree.bind("<Double-1>", lambda e, p=pane: double_click(app, p, e))
        tree.bind("<Return>", lambda e, p=pane: enter(app, p))
        tree.bind("<KP_Enter>", lambda e, p=pane: enter(app, p))
        tree.bind("<Button-3>", lambda e, p=pane: context_menu(app, p, e))
        tree.bind("<Shift-F10>", lambda e, p=pane: context_menu(app, p))
        tree.bind("<Key-Menu>", lambda e, p=pane: context_menu(app, p))
        tree.bind("<ButtonPress-1>", lambda e, p=pane: drag_start(app, p, e), add="+")
        tree.bind("<B1-Motion>", lambda e: drag_motion(app, e), add="+")
        tree.bind("<ButtonRelease-1>", lambda e: drag_end(app, e), add="+")
        tree.bind("<<TreeviewSelect>>", lambda e: app._update_actions(), add="+")
        tree.bind("<FocusIn>", lambda e, t=tree: _focus_a_row(t), add="+")
    app.remote.tree.bind("<BackSpace>", lambda e: app.remote_up())
    app.remote.tree.bind("<Alt-Up>", lambda e: app.remote_up())
    transfer_tree = app.transfer_list.tree
    transfer_tree.bind("<Shift-F10>", lambda e: transfer_menu(app))
    transfer_tree.bind("<Key-Menu>", lambda e: transfer_menu(app))
    transfer_tree.bind("<Button-3>", lambda e: transfer_menu(app, e))
    transfer_tree.bind("<Delete>", lambda e: app.cancel_selected())
    transfer_tree.bind("<FocusIn>", lambda e: _focus_a_row(transfer_tree), add="+")
    app.local.sort_changed = app.remote.sort_changed = app.settings_changed
    app.local.folder_changed = app.settings_changed
    for paned in (app.paned, app.vpaned):
        paned.bind("<ButtonRelease-1>", lambda e: app.settings_changed(), add="+")
    bind_keys(app)
    app.focus_ring = FocusRing(root, RING.get(app.theme, RING["default"]))
    app._update_actions()


def controls(app) -> list:
    """Every control Tab must reach, in reading order."""
    return [app.host_box, app.port_entry, app.connect_button, app.upload_button,
            app.download_button, app.refresh_button, app.local.up_button,
            app.local.home_button, app.local.hidden_check, app.local.path_entry, app.local.tree,
            app.remote.filter_entry, app.remote.tree, app.bottom, app.transfer_list.tree,
            app.cancel_button, app.retry_button, app.clear_button]


def build_menus(app) -> None:
    root = app.root
    menubar = tk.Menu(root, tearoff=False)
    app.menubar = menubar
    file_menu = tk.Menu(menubar, tearoff=False)
    file_menu.add_command(label="Connect…", underline=0, command=lambda: _focus(app.host_box))
    file_menu.add_command(label="Disconnect", underline=0,
                          command=lambda: app.connected and app.disconnect())
    file_menu.add_command(label="Refresh", underline=0, accelerator="F5", command=app.refresh)
    file_menu.add_separator()
    file_menu.add_command(label="Quit", underline=0, accelerator="Ctrl+Q", command=app.on_close)
    menubar.add_cascade(label="File", underline=0, menu=file_menu)

    edit_menu = tk.Menu(menubar, tearoff=False)
    edit_menu.add_command(label="Select all", underline=7, accelerator="Ctrl+A",
                          command=lambda: _select_all_focused(app))
    edit_menu.add_command(label="Go to folder…", underline=0, accelerator="Ctrl+L",
                          command=app.focus_path)
    edit_menu.add_command(label="Filter the library", underline=0, accelerator="Ctrl+F",
                          command=app.focus_filter)
    menubar.add_cascade(label="Edit", underline=0, menu=edit_menu)

    view_menu = tk.Menu(menubar, tearoff=False)
    app.hidden_menu_var = tk.BooleanVar(root, value=app.settings.show_hidden)
    view_menu.add_checkbutton(label="Hidden files", underline=0, variable=app.hidden_menu_var,
                              command=lambda: _toggle_hidden(app))
    view_menu.add_command(label="Transfers", underline=0,
                          command=lambda: app.bottom.select(0))
    view_menu.add_command(label="Messages", underline=0, command=lambda: app.bottom.select(1))
    menubar.add_cascade(label="View", underline=0, menu=view_menu)

    transfer_menu_ = tk.Menu(menubar, tearoff=False)
    transfer_menu_.add_command(label="Upload", underline=0, command=app.upload_selected)
    transfer_menu_.add_command(label="Download", underline=0, command=app.download_selected)
    transfer_menu_.add_separator()
    transfer_menu_.add_command(label="Cancel", underline=0, command=app.cancel_selected)
    transfer_menu_.add_command(label="Retry", underline=0, command=app.retry_selected)
    transfer_menu_.add_command(label="Show files", underline=0,
                               command=lambda: _open_selected_batch(app))
    transfer_menu_.add_command(label="Clear finished", underline=1, command=app.clear_finished)
    menubar.add_cascade(label="Transfers", underline=0, menu=transfer_menu_)

    help_menu = tk.Menu(menubar, tearoff=False)
    help_menu.add_command(label="Keyboard", underline=0, command=lambda: _show_keys(app))
    menubar.add_cascade(label="Help", underline=0, menu=help_menu)
    root.configure(menu=menubar)
    app.menus = {"file": file_menu, "edit": edit_menu, "view": view_menu,
                 "transfers": transfer_menu_, "help": help_menu}


KEYS = ("Tab / Shift+Tab: next / previous control    F6: the other list\n"
        "Enter or double-click: open a folder, or transfer the selection\n"
        "Ctrl+A: select all    Ctrl+L: type a folder    Ctrl+F: filter the library\n"
        "F5: refresh    Backspace or Alt+Up: up one folder    Delete (transfers): cancel\n"
        "Shift+F10 or the Menu key: context menu    Alt+letter: menus    Ctrl+Q: quit")


def _show_keys(app) -> None:
    app.log_message(KEYS.replace("\n", "; "))
    app.bottom.select(1)


def bind_keys(app) -> None:
    root = app.root
    root.bind("<F5>", lambda e: app.refresh())
    root.bind("<F6>", lambda e: switch_pane(app))
    for key in ("<Control-q>", "<Control-Q>"):
        root.bind(key, lambda e: app.on_close())
    for key in ("<Control-l>", "<Control-L>"):
        root.bind(key, lambda e: app.focus_path())
    for key in ("<Control-f>", "<Control-F>"):
        root.bind(key, lambda e: app.focus_filter())
    app.remote.filter_entry.bind("<Escape>", lambda e: app.remote.filter_var.set(""))


def _focus(widget) -> None:
    widget.focus_set()


def _clipped_text(label, text: str):
    """The whole text when the label cannot show it all."""
    font = tk.font.nametofont(str(label.cget("font") or "TkDefaultFont"))
    return text if font.measure(text) > label.winfo_width() else None


def _row_tooltip(tree, event):
    item = tree.identify_row(event.y)
    if not item:
        return None
    state = str(tree.set(item, "state")) if item.isdigit() or item.startswith("f") else ""
    return state if len(state) > 28 else None


def _focus_a_row(tree) -> None:
    """A list that gets the focus shows where it is: its first row at least."""
    if not tree.focus():
        children = tree.get_children()
        if children:
            tree.focus(children[0])


def _toggle_hidden(app) -> None:
    app.local.hidden_var.set(app.hidden_menu_var.get())
    app.local.refresh()
    app.settings_changed()


def _select_all_focused(app) -> None:
    focused = app.root.focus_get()
    pane = app.remote if focused is app.remote.tree else app.local
    pane.select_all()


def _open_selected_batch(app) -> None:
    for batch in app.transfer_list.selected_batches():
        app.transfer_list.open_batch(batch.id)


# -- mouse and keys ---------------------------------------------------------------------

def double_click(app, pane, event):
    item = pane.tree.identify_row(event.y)
    if not item:
        return None
    pane.tree.selection_set(item)
    return enter(app, pane)


def enter(app, pane) -> str:
    """Enter: open a folder, or move the selection to the other side."""
    rows = pane.selected_rows()
    if pane is app.local:
        if len(rows) == 1 and rows[0].is_dir:
            app.local.open_folder(app.local.path_of(rows[0]))
            app.settings_changed()
        elif rows:
            app.upload_selected()
    elif len(rows) == 1 and rows[0].is_dir:
        app.open_remote_folder(app.remote.path_of(rows[0]))
    elif rows:
        app.download_selected()
    return "break"


def switch_pane(app, pane=None) -> str:
    focused = app.root.focus_get()
    other = app.local if focused is app.remote.tree else app.remote
    other.tree.focus_set()
    _focus_a_row(other.tree)
    return "break"


def _menu_position(tree, event):
    if event is not None:
        return event.x_root, event.y_root
    item = tree.focus() or (tree.selection()[0] if tree.selection() else "")
    box = tree.bbox(item) if item else ""
    x, y = tree.winfo_rootx(), tree.winfo_rooty()
    if box:
        return x + box[0] + 24, y + box[1] + box[3]
    return x + 24, y + 24


def context_menu(app, pane, event=None) -> str:
    tree = pane.tree
    if event is not None:
        item = tree.identify_row(event.y)
        if item and item not in tree.selection():
            tree.selection_set(item)
            tree.focus(item)
    menu = tk.Menu(app.root, tearoff=False)
    if pane is app.local:
        menu.add_command(label="Upload", underline=0, command=app.upload_selected)
        menu.add_command(label="Open", underline=0, command=lambda: enter(app, pane))
        menu.add_command(label="Up one folder", underline=3, command=app.local.go_up)
    else:
        menu.add_command(label="Download", underline=0, command=app.download_selected)
        menu.add_command(label="Open", underline=0, command=lambda: enter(app, pane))
        menu.add_command(label="Up one folder", underline=3, command=app.remote_up)
    menu.add_separator()
    menu.add_command(label="Select all", underline=7, command=pane.select_all)
    menu.add_command(label="Refresh", underline=0, command=app.refresh)
    _post(app, menu, *_menu_position(tree, event))
    return "break"


def transfer_menu(app, event=None) -> str:
    tree = app.transfer_list.tree
    if event is not None:
        item = tree.identify_row(event.y)
        if item and item not in tree.selection():
            tree.selection_set(item)
            tree.focus(item)
    menu = tk.Menu(app.root, tearoff=False)
    menu.add_command(label="Cancel", underline=0, command=app.cancel_selected)
    menu.add_command(label="Retry", underline=0, command=app.retry_selected)
    menu.add_command(label="Show files", underline=0, command=lambda: _open_selected_batch(app))
    menu.add_command(label="Clear finished", underline=1, command=app.clear_finished)
    _post(app, menu, *_menu_position(tree, event))
    return "break"


def _post(app, menu, x, y) -> None:
    app.context_menu = menu
    menu.bind("<Unmap>", lambda e: setattr(app, "context_menu", None), add="+")
    try:
        menu.tk_popup(x, y)
    finally:
        menu.grab_release()


def drag_start(app, pane, event) -> None:
    app._drag = {"pane": pane, "x": event.x_root, "y": event.y_root, "moving": False}


def drag_motion(app, event) -> None:
    drag = app._drag
    if drag and not drag["moving"]:
        if abs(event.x_root - drag["x"]) + abs(event.y_root - drag["y"]) > DRAG_THRESHOLD:
            drag["moving"] = True
            drag["pane"].tree.configure(cursor="hand2")


def drag_end(app, event) -> None:
    drag, app._drag = app._drag, None
    if not drag or not drag["moving"]:
        return
    drag["pane"].tree.configure(cursor="")
    target = app.root.winfo_containing(event.x_root, event.y_root)
    drop_between_panes(app, drag["pane"], target)


def drop_between_panes(app, source_pane, target_widget) -> None:
    """A drag from one pane released over ``target_widget``."""
    other = app.remote if source_pane is app.local else app.local
    widget = target_widget
    while widget is not None and widget is not other:
        widget = widget.master
    if widget is None:
        return
    if source_pane is app.local:
        app.upload_selected()
    else:
        app.download_selected()


def enable_file_drop(app) -> None:
    """Accept files dropped from the desktop's file manager, where tkdnd loaded."""
    app.file_drop = False
    if not hasattr(app.remote.tree, "drop_target_register"):
        return
    try:
        from tkinterdnd2 import DND_FILES
        app.remote.tree.drop_target_register(DND_FILES)
        app.remote.tree.dnd_bind(
            "<<Drop>>", lambda e: (app.drop_paths(app.root.tk.splitlist(e.data)), e.action)[1])
        app.file_drop = True
    except (ImportError, tk.TclError):
        pass
