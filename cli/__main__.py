"""shelf-cli: the terminal client (one-shot subcommands and the ``shell`` prompt).

Single-threaded. Every failure is one line on stderr and a distinct exit
code (see cli/exits.py); a traceback never reaches the user.
"""

from __future__ import annotations

import argparse
import os
import sys

from cli.exits import (EXIT_BUSY, EXIT_CANNOT_CONNECT, EXIT_EXISTS,  # noqa: F401 (re-exported)
                       EXIT_INTERRUPTED, EXIT_NOT_FOUND, EXIT_OK, EXIT_TRANSFER_FAILED,
                       EXIT_USAGE, exit_code_for)
from common import __version__
from common.client import ConnectionLost, ShelfError
from common.humanize import human_size
from common.protocol import DEFAULT_HOST, DEFAULT_PORT

EXIT_HELP = """exit codes:
  0    success
  1    already exists (in the library, or the local destination without --force)
  2    usage error (bad option, invalid name)
  3    no such file (in the library or locally)
  4    cannot connect
  5    server busy (too many sessions), or another download to the same
       destination is running
  6    transfer failed (connection lost, refused by the server, checksum mismatch,
       the destination cannot be written, a --continue that would mix two versions)
  130  interrupted (Ctrl+C); no partial file is left at the destination

A cut download keeps its bytes in .NAME.shelf-part beside the destination, with
.NAME.shelf-part.json recording the library file's name, size and modification
time; --continue resumes only while the library file still matches them.

environment: SHELF_HOST, SHELF_PORT give the defaults for --host and --port."""


def port_number(text: str) -> int:
    """argparse type of --port: a TCP port, 1 to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a port number: %r" % text) from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError("port %d is out of range (1-65535)" % port)
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shelf-cli", description="Talk to a Shelf library from the terminal.",
        epilog=EXIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=os.environ.get("SHELF_HOST", DEFAULT_HOST),
                        help="server address (default $SHELF_HOST or %s)" % DEFAULT_HOST)
    parser.add_argument("--port", type=port_number, default=None,
                        help="server port (default $SHELF_PORT or %d)" % DEFAULT_PORT)
    parser.add_argument("--timeout", type=float, default=30.0, help=argparse.SUPPRESS)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress, no chatter")
    parser.add_argument("--version", action="version", version="shelf-cli %s" % __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    ls = sub.add_parser("ls", help="list the library")
    ls.add_argument("--json", action="store_true", help="machine-readable output")

    get = sub.add_parser("get", help="download files",
                         description="Download NAME to DEST (a file or a folder; default: "
                                     "the current folder). With several names the last "
                                     "argument must be a folder.")
    get.add_argument("names", nargs="+", metavar="NAME [DEST]")
    get.add_argument("-f", "--force", action="store_true", help="replace an existing file")
    get.add_argument("-c", "--continue", dest="resume", action="store_true",
                     help="resume a download that was cut")
    get.add_argument("--verify", action="store_true", help="check the SHA-256 before saving")

    put = sub.add_parser("put", help="upload files",
                         description="Upload FILEs (- is stdin). `put FILE NAME` stores FILE as "
                                     "NAME when NAME is not a local file.")
    put.add_argument("files", nargs="+", metavar="FILE")
    put.add_argument("--as", dest="name", metavar="NAME", help="the name in the library")
    put.add_argument("--size", type=int, help="byte count, with - (stdin)")

    stat = sub.add_parser("stat", help="size and date of a file")
    stat.add_argument("name")
    hash_ = sub.add_parser("hash", help="SHA-256 of a file (sha256sum format)")
    hash_.add_argument("name")
    sub.add_parser("shell", help="an interactive prompt (one session)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if args.port is None:
        try:
            args.port = port_number(os.environ.get("SHELF_PORT", str(DEFAULT_PORT)))
        except argparse.ArgumentTypeError as exc:
            parser.error("SHELF_PORT: %s" % exc)
    try:
        code = run(args)
        sys.stdout.flush()  # a reader that left shows here, not in the exit's flush
        return code
    except BrokenPipeError:
        return reader_went_away()
    except KeyboardInterrupt:
        sys.stderr.write("\nshelf-cli: interrupted\n")
        return EXIT_INTERRUPTED
    except ShelfError as exc:
        sys.stderr.write("shelf-cli: %s\n" % exc)
        return exit_code_for(exc)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        sys.stderr.write("shelf-cli: %s\n" % ("%s: %s" % (exc.filename, reason.lower())
                                              if exc.filename else reason))
        return EXIT_TRANSFER_FAILED
    except Exception as exc:  # noqa: BLE001 - a bug still ends in one line, not a traceback
        sys.stderr.write("shelf-cli: internal error: %s: %s (please report it)\n"
                         % (type(exc).__name__, exc))
        return EXIT_TRANSFER_FAILED


def reader_went_away() -> int:
    """``shelf-cli ls | head``: the rest of the output has nobody to read it.

    Nothing to report (the reader chose to stop), so exit 0 in silence; stdout
    goes to /dev/null so the interpreter's last flush cannot complain either.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return EXIT_OK


def run(args) -> int:
    from cli import commands

    show_progress = not args.quiet and sys.stderr.isatty()
    if args.command == "shell":
        from cli.shell import run_shell
        return run_shell(args.host, args.port, args.timeout, quiet=args.quiet)
    if args.command == "put":
        # INTERFACE.md's form `put FILE NAME`: a second word that is no local file
        # is the name in the library (`put FILE... --as NAME` is the other spelling).
        if (not args.name and len(args.files) == 2 and not os.path.lexists(args.files[1])
                and (args.files[0] == "-" or os.path.lexists(args.files[0]))):
            args.files, args.name = [args.files[0]], args.files[1]
        if args.name and len(args.files) > 1:
            raise commands.LocalError("--as NAME works with one file only")
    if args.command == "get":
        names, dest = (args.names, None) if len(args.names) == 1 else (args.names[:-1],
                                                                        args.names[-1])
        pairs = commands.resolve_destinations(names, dest)

    with commands.Session(args.host, args.port, args.timeout) as session:
        session.connect()  # first: no server is exit 4 before anything else
        if args.command == "ls":
            commands.cmd_ls(session.client, args.json)
        elif args.command == "stat":
            commands.cmd_stat(session.client, args.name)
        elif args.command == "hash":
            commands.cmd_hash(session.client, args.name)
        elif args.command == "get":
            return run_batch(pairs, lambda pair: commands.cmd_get(
                session.client, pair[0], pair[1], force=args.force, resume=args.resume,
                verify=args.verify, show_progress=show_progress), args.quiet,
                lambda pair: "saved %s" % pair[1])
        elif args.command == "put":
            return run_batch(args.files, lambda path: commands.cmd_put(
                session.client, path, args.name, args.size, show_progress), args.quiet,
                lambda path: "stored %s" % path)
    return EXIT_OK


def run_batch(items, action, quiet: bool, describe) -> int:
    """Run ``action`` on each item in one session; go on after an item's error.

    A lost connection ends the batch (nothing after it could work); an item
    that failed on this side (a full disk) closed the session, and the next
    item opens a new one. The exit code is that of the first failure.
    """
    first_failure = EXIT_OK
    for item in items:
        try:
            size = action(item)
        except ConnectionLost as exc:
            sys.stderr.write("shelf-cli: %s\n" % exc)
            return first_failure or exit_code_for(exc)
        except ShelfError as exc:
            sys.stderr.write("shelf-cli: %s\n" % exc)
            first_failure = first_failure or exit_code_for(exc)
            continue
        if not quiet and len(items) > 1:
            sys.stderr.write("%s (%s)\n" % (describe(item), human_size(size)))
    return first_failure


if __name__ == "__main__":
    sys.exit(main())
