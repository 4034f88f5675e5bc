"""shelf-cli's exit codes (INTERFACE.md) and the error that each one means.

Shared by the one-shot commands and the shell; no state, no I/O.
"""

from __future__ import annotations

from common.client import (CannotConnect, Denied, Exists, NotEmpty, NotFound, RemoteError,
                           ServerBusy)
from common.files import (CannotResume, DestinationExists, DownloadInProgress, LocalError,
                          LocalNotFound, LocalWriteError)
from common.protocol import INVALID, InvalidName
from common.trust import TrustRefused

EXIT_OK = 0
EXIT_EXISTS = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_CANNOT_CONNECT = 4
EXIT_BUSY = 5
EXIT_TRANSFER_FAILED = 6
EXIT_TLS_REFUSED = 7
EXIT_DENIED = 8
EXIT_INTERRUPTED = 130

# First match wins: subclasses before their bases.
_CODES = (
    (Exists, EXIT_EXISTS), (DestinationExists, EXIT_EXISTS),
    (NotEmpty, EXIT_EXISTS),  # the folder still holds something
    (NotFound, EXIT_NOT_FOUND), (LocalNotFound, EXIT_NOT_FOUND),
    (Denied, EXIT_DENIED),
    (DownloadInProgress, EXIT_BUSY),
    (LocalWriteError, EXIT_TRANSFER_FAILED), (CannotResume, EXIT_TRANSFER_FAILED),
    (LocalError, EXIT_USAGE),
    (CannotConnect, EXIT_CANNOT_CONNECT), (ServerBusy, EXIT_BUSY),
    (TrustRefused, EXIT_TLS_REFUSED),
    (InvalidName, EXIT_USAGE),
)


def exit_code_for(exc: BaseException) -> int:
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    if isinstance(exc, RemoteError) and exc.code == INVALID:
        return EXIT_USAGE  # the server found the request itself wrong (a folder into itself)
    return EXIT_TRANSFER_FAILED  # changed, toolarge, full, io, a lost connection
