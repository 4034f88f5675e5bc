"""shelf-cli's exit codes (INTERFACE.md) and the error that each one means.

Shared by the one-shot commands and the shell; no state, no I/O.
"""

from __future__ import annotations

from cli import commands
from common.client import CannotConnect, Exists, NotFound, ServerBusy
from common.protocol import InvalidName

EXIT_OK = 0
EXIT_EXISTS = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_CANNOT_CONNECT = 4
EXIT_BUSY = 5
EXIT_TRANSFER_FAILED = 6
EXIT_INTERRUPTED = 130


def exit_code_for(exc: BaseException) -> int:
    for kind, code in ((Exists, EXIT_EXISTS), (commands.DestinationExists, EXIT_EXISTS),
                       (NotFound, EXIT_NOT_FOUND), (commands.LocalNotFound, EXIT_NOT_FOUND),
                       (commands.DownloadInProgress, EXIT_BUSY),
                       (commands.LocalWriteError, EXIT_TRANSFER_FAILED),
                       (commands.CannotResume, EXIT_TRANSFER_FAILED),
                       (commands.LocalError, EXIT_USAGE), (CannotConnect, EXIT_CANNOT_CONNECT),
                       (ServerBusy, EXIT_BUSY), (InvalidName, EXIT_USAGE)):
        if isinstance(exc, kind):
            return code
    return EXIT_TRANSFER_FAILED
