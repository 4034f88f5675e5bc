"""Where shelf-cli's password comes from, for a server named ``shelf://USER@HOST``.

In the terminal's process, before the first connection; no state. In this
order: ``--password-stdin`` (one line of standard input), ``SHELF_PASSWORD``,
a prompt on the terminal (``getpass``, not echoed). Never an argument, never
written anywhere: it lives in this process's memory for as long as it may have
to log in again (the shell reconnects). Without a terminal and without a
source, a clear usage error (exit 2) rather than a hang or a wrong login.
"""

from __future__ import annotations

import getpass
import os
import sys

from common.files import LocalError

ENVIRONMENT = "SHELF_PASSWORD"


class NoPassword(LocalError):
    """No way to get the password (a usage error: exit 2)."""


def password_for(server, from_stdin: bool) -> bytes | None:
    """The password to LOGIN to ``server`` (a ``cli.remote.Server``); None without a user."""
    if server.user is None:
        if from_stdin:
            raise NoPassword("--password-stdin needs a user to log in as: name the server "
                             "shelf://USER@HOST[:PORT]")
        return None
    if from_stdin:
        line = sys.stdin.buffer.readline()
        password = line.rstrip(b"\n").removesuffix(b"\r")
        if not password:
            raise NoPassword("--password-stdin: standard input held no password line")
        return password
    if os.environ.get(ENVIRONMENT):
        return os.environ[ENVIRONMENT].encode("utf-8")
    if sys.stdin.isatty():
        return getpass.getpass("Password for %s: " % server.url()).encode("utf-8")
    raise NoPassword("no password to log in to %s: set %s, give --password-stdin, or run "
                     "on a terminal" % (server.url(), ENVIRONMENT))
