"""Small things every control shares: a focus ring, tooltips, readable selected rows.

UI thread only.
"""

from __future__ import annotations

import tkinter as tk
from tkinter import ttk

# Selected rows: at least 3:1 against the list's background in both themes
# (the sun-valley defaults are 1.18:1 light and 1.17:1 dark).
SELECTION = {"light": ("#1d5fbf", "#ffffff"), "dark": ("#6aa8ff", "#000000"),
             "default": ("#1d5fbf", "#ffffff")}
RING = {"light": "#0b57d0", "dark": "#8ab4ff", "default": "#0b57d0"}
ROW_BACKGROUND = {"light": "#fafafa", "dark": "#1c1c1c", "default": "#ffffff"}


def luminance(colour: str) -> float:
    """WCAG relative luminance of ``#rrggbb``."""
    colour = colour.lstrip("#")
    channels = [int(colour[i:i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(first: str, second: str) -> float:
    a, b = sorted((luminance(first), luminance(second)), reverse=True)
    return (a + 0.05) / (b + 0.05)


def style_selection(root: tk.Misc, theme: str) -> None:
    background, foreground = SELECTION.get(theme, SELECTION["default"])
    style = ttk.Style(root)
    style.map("Treeview", background=[("selected", background)],
              foreground=[("selected", foreground)])


def row_colours(root: tk.Misc) -> tuple[str, str]:
    """(row background, selected row background) as the style draws them now."""
    style = ttk.Style(root)
    background = style.lookup("Treeview", "background") or "#ffffff"
    selected = background
    for *states, value in style.map("Treeview", "background"):
        if "selected" in states:
            selected = value
            break
    return _hex(root, background), _hex(root, str(selected))


def _hex(root: tk.Misc, colour: str) -> str:
    red, green, blue = root.winfo_rgb(colour)
    return "#%02x%02x%02x" % (red >> 8, green >> 8, blue >> 8)


class FocusRing:
    """A 2-pixel ring drawn around whichever control has the keyboard focus.

    Four thin frames placed around the focused widget (``place(in_=...)``), so
    every control gets the same visible ring whatever the theme draws.
    """

    def __init__(self, root: tk.Tk, colour: str, width: int = 2):
        self.root = root
        self.width = width
        self.sides = [tk.Frame(root, background=colour, takefocus=0) for _ in range(4)]
        self.target: tk.Misc | None = None
        root.bind_all("<FocusIn>", self._focus_in, add="+")
        root.bind_all("<FocusOut>", self._focus_out, add="+")

    def _focus_in(self, event) -> None:
        widget = event.widget
        if not isinstance(widget, tk.Misc) or widget.winfo_toplevel() is not self.root:
            return
        self.show(widget)

    def _focus_out(self, event) -> None:
        if event.widget is self.target:
            self.hide()

    def show(self, widget: tk.Misc) -> None:
        width = self.width
        top, bottom, left, right = self.sides
        try:
            top.place(in_=widget, x=-width, y=-width, relwidth=1.0, width=2 * width,
                      height=width)
            bottom.place(in_=widget, x=-width, rely=1.0, relwidth=1.0, width=2 * width,
                         height=width)
            left.place(in_=widget, x=-width, y=0, relheight=1.0, width=width)
            right.place(in_=widget, relx=1.0, y=0, relheight=1.0, width=width)
        except tk.TclError:
            self.hide()  # a widget the ring cannot be placed in (another toplevel)
            return
        for side in self.sides:
            side.lift()
        self.target = widget

    def hide(self) -> None:
        for side in self.sides:
            side.place_forget()
        self.target = None

    def visible_around(self) -> tk.Misc | None:
        return self.target if self.target is not None and self.sides[0].winfo_ismapped() \
            else None


class Tooltip:
    """A tooltip for a widget; ``text_for(event)`` says what to show (None: nothing)."""

    DELAY_MS = 500

    def __init__(self, widget: tk.Misc, text_for):
        self.widget = widget
        self.text_for = text_for
        self.window: tk.Toplevel | None = None
        self.label: tk.Label | None = None
        self._after = None
        self._text = None
        widget.bind("<Motion>", self._motion, add="+")
        widget.bind("<Leave>", lambda e: self.hide(), add="+")
        widget.bind("<ButtonPress>", lambda e: self.hide(), add="+")

    def _motion(self, event) -> None:
        text = self.text_for(event)
        if text == self._text and (self.window is not None or self._after is not None):
            return
        self.hide()
        self._text = text
        if text:
            x, y = event.x_root + 12, event.y_root + 16
            self._after = self.widget.after(self.DELAY_MS, lambda: self.show(text, x, y))

    def show(self, text: str, x: int, y: int) -> None:
        self._after = None
        self.window = tk.Toplevel(self.widget)
        self.window.wm_overrideredirect(True)
        self.window.geometry("+%d+%d" % (x, y))
        self.label = tk.Label(self.window, text=text, justify="left", wraplength=480,
                              background="#ffffe0", foreground="#000000", relief="solid",
                              borderwidth=1, padx=4, pady=2)
        self.label.pack()

    def shown_text(self) -> str:
        """The text on screen now ("" when no tooltip is mapped)."""
        try:
            if self.window is not None and self.window.winfo_ismapped():
                return str(self.label.cget("text"))
        except tk.TclError:
            pass
        return ""

    def hide(self) -> None:
        if self._after is not None:
            self.widget.after_cancel(self._after)
            self._after = None
        if self.window is not None:
            self.window.destroy()
            self.window = None
        self._text = None
