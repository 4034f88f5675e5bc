"""Dialogs that answer through a callback, so nothing blocks the event loop.

UI thread only. Each dialog is a real Toplevel with real buttons; it grabs
input like a modal dialog but returns at once, and calls ``on_answer`` when
a button is pressed (or Escape / the window's close box, which mean
Cancel). Tests ``invoke()`` the same buttons a person clicks.
"""

from __future__ import annotations

import collections
import os
import tkinter as tk
from tkinter import ttk

from common.files import unused_name

SKIP = "skip"
KEEP_BOTH = "keep_both"
OVERWRITE = "overwrite"
CANCEL = "cancel"


class Dialog(tk.Toplevel):
    """Base: a transient, centred window with a message and a row of buttons."""

    def __init__(self, parent, title: str, message: str, buttons, on_answer, default=None,
                 detail: str = ""):
        super().__init__(parent)
        self.withdraw()
        self.title(title)
        self.transient(parent.winfo_toplevel())
        self.resizable(False, False)
        self.on_answer = on_answer
        self.answered = False
        body = ttk.Frame(self, padding=16)
        body.pack(fill="both", expand=True)
        ttk.Label(body, text=message, wraplength=440, justify="left",
                  font="TkHeadingFont").pack(anchor="w")
        if detail:
            ttk.Label(body, text=detail, wraplength=440, justify="left").pack(anchor="w",
                                                                             pady=(6, 0))
        self.extra = ttk.Frame(body)
        self.extra.pack(fill="x", pady=(8, 0))
        row = ttk.Frame(body)
        row.pack(fill="x", pady=(12, 0))
        self.buttons: dict[str, ttk.Button] = {}
        for answer, label in reversed(buttons):
            button = ttk.Button(row, text=label, command=lambda a=answer: self.answer(a))
            button.pack(side="right", padx=(6, 0))
            self.buttons[answer] = button
        cancel = CANCEL if CANCEL in self.buttons else buttons[-1][0]
        self.protocol("WM_DELETE_WINDOW", lambda: self.answer(cancel))
        self.bind("<Escape>", lambda e: self.answer(cancel))
        if default:
            self.buttons[default].configure(default="active")
            self.bind("<Return>", lambda e: self.answer(default))
        self._place(parent)
        self.deiconify()
        try:
            self.grab_set()
        except tk.TclError:
            pass  # another grab (rare under test): still usable
        (self.buttons.get(default) or self).focus_set()

    def _place(self, parent) -> None:
        self.update_idletasks()
        top = parent.winfo_toplevel()
        x = top.winfo_rootx() + (top.winfo_width() - self.winfo_reqwidth()) // 2
        y = top.winfo_rooty() + (top.winfo_height() - self.winfo_reqheight()) // 3
        self.geometry("+%d+%d" % (max(0, x), max(0, y)))

    def answer(self, value) -> None:
        if self.answered:
            return
        self.answered = True
        extra = self.extra_answer()
        try:
            self.grab_release()
        except tk.TclError:
            pass
        self.destroy()
        self.on_answer(value, *extra)

    def extra_answer(self) -> tuple:
        return ()

    def show_text(self, text: str) -> None:
        """A line a person may need to copy (a fingerprint): read-only, selectable."""
        self.text_var = tk.StringVar(self, value=text)
        self.text_entry = ttk.Entry(self.extra, textvariable=self.text_var, state="readonly",
                                    width=max(40, min(80, len(text) + 2)), font="TkFixedFont")
        self.text_entry.pack(fill="x")
        self._place(self.master)


class LoginDialog(tk.Toplevel):
    """User and password for a server; stays up while the login runs, shows the server's
    refusal, and closes when the app says the login succeeded (``close``).

    ``on_submit(user, password_bytes)`` when Log in is pressed (or Enter);
    ``on_cancel()`` for Cancel, Escape or the close box. While a login runs
    (a wrong password takes the server a second to refuse) the fields are
    disabled; the window keeps redrawing, since the LOGIN runs in a worker.
    """

    def __init__(self, parent, server: str, user: str, on_submit, on_cancel,
                 error: str = ""):
        super().__init__(parent)
        self.withdraw()
        self.title("Log in")
        self.transient(parent.winfo_toplevel())
        self.resizable(False, False)
        self.on_submit, self.on_cancel = on_submit, on_cancel
        self.answered = False
        body = ttk.Frame(self, padding=16)
        body.pack(fill="both", expand=True)
        ttk.Label(body, text="Log in to %s" % server, font="TkHeadingFont").grid(
            row=0, column=0, columnspan=2, sticky="w")
        self.user_var = tk.StringVar(self, value=user)
        self.password_var = tk.StringVar(self)
        ttk.Label(body, text="User").grid(row=1, column=0, sticky="w", pady=(10, 0))
        self.user_entry = ttk.Entry(body, textvariable=self.user_var, width=28)
        self.user_entry.grid(row=1, column=1, sticky="ew", padx=(8, 0), pady=(10, 0))
        ttk.Label(body, text="Password").grid(row=2, column=0, sticky="w", pady=(6, 0))
        self.password_entry = ttk.Entry(body, textvariable=self.password_var, show="•",
                                        width=28)
        self.password_entry.grid(row=2, column=1, sticky="ew", padx=(8, 0), pady=(6, 0))
        self.error_var = tk.StringVar(self, value=error)
        self.error_label = ttk.Label(body, textvariable=self.error_var, foreground="#d64545",
                                     wraplength=360, justify="left")
        self.error_label.grid(row=3, column=0, columnspan=2, sticky="w", pady=(8, 0))
        row = ttk.Frame(body)
        row.grid(row=4, column=0, columnspan=2, sticky="e", pady=(12, 0))
        self.buttons = {"cancel": ttk.Button(row, text="Cancel", command=self.cancel),
                        "login": ttk.Button(row, text="Log in", command=self.submit,
                                            default="active")}
        self.buttons["login"].pack(side="left", padx=(0, 6))
        self.buttons["cancel"].pack(side="left")
        self.protocol("WM_DELETE_WINDOW", self.cancel)
        self.bind("<Escape>", lambda e: self.cancel())
        self.bind("<Return>", lambda e: self.submit())
        self.bind("<KP_Enter>", lambda e: self.submit())
        Dialog._place(self, parent)
        self.deiconify()
        try:
            self.grab_set()
        except tk.TclError:
            pass
        (self.password_entry if user else self.user_entry).focus_set()

    def submit(self) -> None:
        if self.answered or str(self.buttons["login"].cget("state")) == "disabled":
            return
        user = self.user_var.get().strip()
        if not user:
            self.error_var.set("Enter your user name")
            self.user_entry.focus_set()
            return
        self.error_var.set("Logging in…")
        for widget in (self.user_entry, self.password_entry, self.buttons["login"]):
            widget.configure(state="disabled")
        self.on_submit(user, self.password_var.get().encode("utf-8"))

    def refused(self, reason: str) -> None:
        """The server said no: show why, and let the person try again."""
        for widget in (self.user_entry, self.password_entry, self.buttons["login"]):
            widget.configure(state="normal")
        self.error_var.set(reason)
        self.password_var.set("")
        self.password_entry.focus_set()

    def cancel(self) -> None:
        if self.answered:
            return
        self.close()
        self.on_cancel()

    def answer(self, value=None) -> None:
        """As the other dialogs: any answer but a login is Cancel."""
        self.cancel()

    def close(self) -> None:
        if self.answered:
            return
        self.answered = True
        self.password_var.set("")
        try:
            self.grab_release()
        except tk.TclError:
            pass
        self.destroy()


class ConflictDialog(Dialog):
    """"NAME already exists": Skip / Keep both / (Overwrite) / Cancel, and apply to all.

    ``on_answer(choice, apply_to_all)``.
    """

    def __init__(self, parent, name: str, where: str, on_answer, allow_overwrite: bool,
                 remaining: int = 0, suggestion: str = ""):
        buttons = [(SKIP, "Skip"), (KEEP_BOTH, "Keep both")]
        if allow_overwrite:
            buttons.append((OVERWRITE, "Overwrite"))
        buttons.append((CANCEL, "Cancel"))
        detail = "Keep both saves the new one as “%s”." % suggestion if suggestion else ""
        self.apply_var = tk.BooleanVar(parent, value=False)
        super().__init__(parent, "File exists", "“%s” is already %s." % (name, where), buttons,
                         on_answer, default=KEEP_BOTH, detail=detail)
        self.apply_check = ttk.Checkbutton(
            self.extra, text="Do this for the other %d conflict%s"
            % (remaining, "" if remaining == 1 else "s"), variable=self.apply_var)
        if remaining:
            self.apply_check.pack(anchor="w")

    def extra_answer(self) -> tuple:
        answer = (self.apply_var.get(),)
        del self.apply_var  # freed here, on the Tk thread, not by a collection elsewhere
        return answer


class ConfirmDialog(Dialog):
    """A yes/no question; ``on_answer(True or False)``."""

    def __init__(self, parent, title: str, message: str, yes: str, no: str, on_answer,
                 detail: str = ""):
        super().__init__(parent, title, message, [(True, yes), (False, no)],
                         lambda value: on_answer(bool(value)), default=False, detail=detail)
        self.protocol("WM_DELETE_WINDOW", lambda: self.answer(False))
        self.bind("<Escape>", lambda e: self.answer(False))


class ChoiceDialog(Dialog):
    """A question with several answers; ``on_answer(value)``; Escape or the close box
    give ``cancel_value``."""

    def __init__(self, parent, title: str, message: str, buttons, on_answer, default,
                 cancel_value, detail: str = ""):
        super().__init__(parent, title, message, buttons, on_answer, default=default,
                         detail=detail)
        self.protocol("WM_DELETE_WINDOW", lambda: self.answer(cancel_value))
        self.bind("<Escape>", lambda e: self.answer(cancel_value))


def resolve_conflicts(root, items, taken, where, allow_overwrite, enqueue, show, skipped,
                      cancelled, local_names=False, finished=None) -> None:
    """Hand each of ``items`` to ``enqueue``, asking about every name already ``taken``.

    One ConflictDialog at a time, answered through a callback, so the event
    loop keeps running; ``show(dialog or None)`` tells the app which dialog is
    up. Keep both renames to the first free ``name (2).ext``; Overwrite (only
    when allowed) marks the item; "apply to all" answers the rest the same
    way; Cancel drops the rest of the batch. Items are dicts with ``name``,
    ``path`` and ``overwrite``; ``local_names`` says which of them can clash.
    ``finished()`` is called once, when every item was handed over or dropped.
    """
    taken = set(taken)
    pending = collections.deque(items)
    sticky = {}

    def target_name(item):
        return os.path.basename(item["path"]) if local_names else item["name"]

    def step():
        while pending:
            item = pending[0]
            name = target_name(item)
            if name not in taken:
                pending.popleft()
                taken.add(name)
                enqueue(item)
                continue
            if "choice" in sticky:
                pending.popleft()
                apply(item, sticky["choice"])
                continue
            remaining = sum(1 for other in pending if target_name(other) in taken) - 1
            show(ConflictDialog(root, name, where, on_answer, allow_overwrite, remaining,
                                suggestion=unused_name(name, taken)))
            return
        show(None)
        if finished is not None:
            finished()

    def apply(item, choice):
        if choice == KEEP_BOTH:
            new_name = unused_name(target_name(item), taken)
            if local_names:
                item["path"] = os.path.join(os.path.dirname(item["path"]), new_name)
            else:
                item["name"] = new_name
            taken.add(new_name)
            enqueue(item)
        elif choice == OVERWRITE:
            item["overwrite"] = True
            enqueue(item)
        elif choice == SKIP:
            skipped(target_name(item))

    def on_answer(choice, apply_to_all):
        show(None)
        if choice == CANCEL:
            pending.clear()
            cancelled()
            if finished is not None:
                finished()
            return
        item = pending.popleft()
        if apply_to_all:
            sticky["choice"] = choice
        apply(item, choice)
        step()

    step()
