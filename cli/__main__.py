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
from cli.parsers import COMMANDS, EXIT_HELP, Formatter
from common import __version__
from common.client import ShelfError
from common.protocol import DEFAULT_HOST, DEFAULT_PORT

ENVIRONMENT_HELP = """environment: SHELF_SERVER gives the default server URL (shelf://[USER@]HOST[:PORT],
or shelfs://[USER@]HOST[:PORT] for TLS); SHELF_PASSWORD the password of USER;
SHELF_HOST and SHELF_PORT the defaults for --host and --port."""


def port_number(text: str) -> int:
    """argparse type of --port: a TCP port, 1 to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a port number: %r" % text) from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError("port %d is out of range (1-65535)" % port)
    return port


def fingerprint(text: str) -> str:
    """argparse type of --trust: sha256:<64 hex digits>."""
    from common.trust import parse_fingerprint

    try:
        return parse_fingerprint(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shelf-cli", description="Talk to a Shelf library from the terminal.",
        epilog=EXIT_HELP + "\n\n" + ENVIRONMENT_HELP, formatter_class=Formatter)
    parser.add_argument("--server", metavar="URL",
                        help="the server, shelf://[USER@]HOST[:PORT], or shelfs://... for "
                             "TLS; USER@ logs in as USER (default $SHELF_SERVER)")
    parser.add_argument("--trust", metavar="sha256:HEX", type=fingerprint,
                        help="shelfs://: accept the server's certificate with exactly this "
                             "fingerprint (shelfd logs it) without asking, and remember it")
    parser.add_argument("--password-stdin", action="store_true",
                        help="read USER's password (shelf://USER@HOST) as one line of standard "
                             "input (else $SHELF_PASSWORD, else a prompt on the terminal)")
    parser.add_argument("--host", default=None,
                        help="server address (default $SHELF_HOST or %s)" % DEFAULT_HOST)
    parser.add_argument("--port", type=port_number, default=None,
                        help="server port (default $SHELF_PORT or %d)" % DEFAULT_PORT)
    parser.add_argument("--timeout", type=float, default=30.0, help=argparse.SUPPRESS)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress, no chatter")
    parser.add_argument("--version", action="version", version="shelf-cli %s" % __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (summary, description, define) in COMMANDS.items():
        define(sub.add_parser(name, help=summary, description=description or summary,
                              epilog=EXIT_HELP, formatter_class=Formatter))
    sub.add_parser("shell", help="an interactive prompt (one session)",
                   description="An interactive prompt on one session: the same commands, "
                               "plus cd and pwd in the library, and Tab completion.",
                   epilog=EXIT_HELP, formatter_class=Formatter)
    return parser


def choose_server(args, parser: argparse.ArgumentParser):
    """--server, else --host/--port, else $SHELF_SERVER, else $SHELF_HOST/$SHELF_PORT."""
    from cli.remote import Server, parse_server

    if args.server is not None:
        if args.host is not None or args.port is not None:
            parser.error("give --server or --host/--port, not both")
        return parse_server(args.server)
    if args.host is None and args.port is None and os.environ.get("SHELF_SERVER"):
        return parse_server(os.environ["SHELF_SERVER"])
    port = args.port
    if port is None:
        try:
            port = port_number(os.environ.get("SHELF_PORT", str(DEFAULT_PORT)))
        except argparse.ArgumentTypeError as exc:
            parser.error("SHELF_PORT: %s" % exc)
    return Server(args.host or os.environ.get("SHELF_HOST") or DEFAULT_HOST, port)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        args.server = choose_server(args, parser)
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
    from cli import commands, transfer
    from cli.remote import resolve

    server = args.server
    show_progress = not args.quiet and sys.stderr.isatty()
    tls = {}
    if server.tls:
        from cli.trusting import make_trust
        tls = {"tls": True, "trust": make_trust(server.host, server.port, args.trust)}
    if server.user is not None:  # the Session's arguments: LOGIN in each session it opens
        from cli.login import password_for
        tls.update(user=server.user, password=password_for(server, args.password_stdin))
    elif args.password_stdin:
        from cli.login import password_for
        password_for(server, True)  # says why it makes no sense
    if args.command == "shell":
        from cli.shell import run_shell
        return run_shell(server.host, server.port, args.timeout, quiet=args.quiet, **tls)
    with commands.Session(server.host, server.port, args.timeout, **tls) as session:
        session.connect()  # first: no server is exit 4 before anything else
        client = session.client
        command = args.command
        if command == "ls":
            commands.cmd_ls(client, resolve(args.folder), args.json)
        elif command == "stat":
            commands.cmd_stat(client, resolve(args.path), args.json)
        elif command == "hash":
            commands.cmd_hash(client, resolve(args.path))
        elif command == "mkdir":
            commands.cmd_mkdir(client, resolve(args.path), parents=args.parents)
        elif command == "rm":
            batch = transfer.Batch(args.quiet)
            for typed in args.paths:
                batch.run(lambda typed=typed: commands.cmd_rm(session.client, resolve(typed)))
            return batch.first_failure
        elif command == "rmdir":
            commands.cmd_rmdir(client, resolve(args.path))
        elif command == "mv":
            commands.cmd_mv(client, *move_paths(args.source, args.target))
        elif command == "trash":
            commands.cmd_trash(client, args.json)
        elif command == "restore":
            commands.cmd_restore(client, args.id,
                                 resolve(args.path) if args.path is not None else None)
        elif command == "df":
            commands.cmd_df(client, args.json)
        elif command == "get":
            paths, dest = ((args.paths, None) if len(args.paths) == 1
                           else (args.paths[:-1], args.paths[-1]))
            return transfer.run_get(session, paths, dest, transfer.GetOptions(
                recursive=args.recursive, force=args.force, resume=args.resume,
                verify=args.verify, show_progress=show_progress, quiet=args.quiet))
        elif command == "put":
            files, target = transfer.split_put_words(args.files, args.name)
            return transfer.run_put(session, files, target, transfer.PutOptions(
                recursive=args.recursive, replace=args.replace, resume=args.resume,
                show_progress=show_progress, quiet=args.quiet, size=args.size,
                continue_hint="shelf-cli --server %s put" % session.server,
                records=transfer.upload_records()))
    return EXIT_OK


def move_paths(source: str, target: str, current=()):
    """mv's two paths; a TO ending in / (or naming . or ..) means into that folder."""
    from cli.remote import resolve, wants_folder

    source_path = resolve(source, current)
    target_path = resolve(target, current)
    if wants_folder(target) and source_path:
        target_path = target_path + source_path[-1:]
    return source_path, target_path


if __name__ == "__main__":
    sys.exit(main())
