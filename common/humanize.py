"""Sizes, dates, speeds and durations for people (shared by the CLI and the GUI)."""

from __future__ import annotations

import time
import unicodedata

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(size: int | float) -> str:
    """12 B, 47.1 KiB, 3.0 GiB: binary units, one decimal above bytes."""
    if size < 1024:
        return "%d B" % size
    value = float(size)
    for unit in _UNITS[1:]:
        value /= 1024
        if value < 1024 or unit == _UNITS[-1]:
            return "%.1f %s" % (value, unit)
    return "%d B" % size  # not reached


def human_rate(bytes_per_second: float) -> str:
    return human_size(int(bytes_per_second)) + "/s"


def human_duration(seconds: float | None) -> str:
    """0:03, 1:02:03; an em dash when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "—"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return "%d:%02d:%02d" % (hours, minutes, seconds) if hours else "%d:%02d" % (minutes, seconds)


def local_time(mtime: float) -> str:
    """A modification time in the local zone, to the minute."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(mtime))


def display_width(text: str) -> int:
    """Terminal columns: East Asian wide and full-width characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 0 if unicodedata.combining(ch)
               else 1 for ch in text)


def pad(text: str, width: int) -> str:
    return text + " " * max(0, width - display_width(text))
