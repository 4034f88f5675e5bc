"""The session processes' log: the master's lines, each written with one os.write.

Python's logging builds a LogRecord and runs a Formatter and a Handler for
every line. In a forked session process that machinery copied about 380 KiB
of the master's pages (40 children measured, USS summed): more than all the
rest of a session's work. So a session logs through this small writer: the
same lines, rendered by the same function as the master's handler
(``daemon.service.render_line``), to the same descriptor, which the handler
opened with O_APPEND, so lines from many processes never mix.

Where the master logs somewhere a descriptor cannot reach (syslog), the
writer hands every line to ``logging`` as before.
"""

from __future__ import annotations

import logging
import os
import time

LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING,
          "ERROR": logging.ERROR}


class SessionLog:
    """The subset of ``logging.Logger`` a session uses: debug, info, warning, error."""

    def __init__(self, name: str):
        self.fallback = logging.getLogger(name)
        self.fd: int | None = None
        self.render = None
        self.level = logging.INFO

    def direct(self, fd: int | None, render, level: int) -> None:
        """Write to ``fd`` with ``render(levelname, message, created, pid)``; None: logging."""
        self.fd, self.render, self.level = fd, render, level

    def _log(self, levelname: str, message: str, args: tuple) -> None:
        if self.fd is None:
            self.fallback.log(LEVELS[levelname], message, *args)
            return
        if LEVELS[levelname] < self.level:
            return
        line = self.render(levelname, message % args if args else message, time.time(),
                           os.getpid())
        try:
            os.write(self.fd, (line + "\n").encode("utf-8", "replace"))
        except OSError:
            pass  # a log that cannot be written must not end a session

    def debug(self, message: str, *args) -> None:
        self._log("DEBUG", message, args)

    def info(self, message: str, *args) -> None:
        self._log("INFO", message, args)

    def warning(self, message: str, *args) -> None:
        self._log("WARNING", message, args)

    def error(self, message: str, *args) -> None:
        self._log("ERROR", message, args)


session_log = SessionLog("shelfd.session")
