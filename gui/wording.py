"""Words for people: counts with the right plural, byte counts as sizes, plain errors.

Pure functions, safe from any thread.
"""

from __future__ import annotations

import re

from common.humanize import human_size

_BYTES = re.compile(r"\b(\d{4,}) bytes\b")

# Low-level phrasings and what a person should read instead (matched in order).
_PLAIN = [
    (re.compile(r"broken pipe|connection reset|connection closed after|closed the connection"
                r"|connection closed in the middle", re.I),
     "the server closed the connection"),
    (re.compile(r"timed out waiting for the peer|timed out in the middle|timed out sending",
                re.I), "the server stopped answering"),
    (re.compile(r"connection refused", re.I), None),  # already clear: keep it
]


def plural(count: int, word: str, words: str | None = None) -> str:
    """``1 file``, ``2 files``, ``1,000 files``."""
    return "%s %s" % (format(count, ","), word if count == 1 else (words or word + "s"))


def humanize_bytes(text: str) -> str:
    """``the limit is 1048576 bytes`` -> ``the limit is 1.0 MiB``."""
    return _BYTES.sub(lambda m: human_size(int(m.group(1))), text)


def plain_error(text: str) -> str:
    """An error from the client library or the OS, in words a person understands."""
    text = humanize_bytes(text.strip())
    for pattern, plain in _PLAIN:
        if pattern.search(text):
            if plain is None:
                break
            prefix = text.split(":", 1)[0] if text.lower().startswith("cannot") else ""
            return "%s: %s" % (prefix, plain) if prefix and prefix != text else plain
    if text.lower().startswith("connection lost: "):
        text = text[len("connection lost: "):]
    return text


def sentence(text: str) -> str:
    """Capitalise the first letter (for the status bar)."""
    return text[:1].upper() + text[1:]
