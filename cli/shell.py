"""``shelf-cli shell``: the classroom's menu loop as a proper prompt.

One session for the whole shell, reopened with a clear message when the
connection drops. A command interrupted by Ctrl+C (or cut in any other way)
closes the session, whose framing is lost with bytes in flight; the next
command opens a new one. Readline history (kept in the user's state folder)
and tab completion of library names (for get, stat, hash) and local paths
(for put), written back with the quoting the shell's own parser reads.
Fed from a pipe, the shell exits with the code of its last failed command.
Single-threaded, in the terminal's process.
"""

from __future__ import annotations

import argparse
import cmd
import glob
import os
import shlex
import sys
import time

from cli import commands
from cli.exits import EXIT_INTERRUPTED, EXIT_TRANSFER_FAILED, EXIT_USAGE, exit_code_for
from common.client import ConnectionLost, ShelfError

INTRO = """Shelf library at {address}. Commands:
  ls               list the library          stat NAME   size and date
  get NAME [DEST]  download (--force, --continue, --verify)
  put FILE [NAME]  upload                    hash NAME   SHA-256
  help, quit
Names with spaces go in quotes; Tab completes names and paths."""

NAME_CACHE_SECONDS = 5.0


class ShellUsage(commands.LocalError):
    """A command line the shell cannot run (its usage follows)."""


class WordParser(argparse.ArgumentParser):
    """argparse for one shell command: errors are raised, never exit the shell."""

    def error(self, message: str):
        raise ShellUsage("%s (usage: %s)" % (message, self.format_usage().strip()[7:]))

    def exit(self, status: int = 0, message: str | None = None):
        raise ShellUsage((message or "").strip() or "usage: %s" % self.format_usage().strip())


def get_parser() -> WordParser:
    parser = WordParser(prog="get", add_help=False)
    parser.add_argument("-f", "--force", action="store_true")
    parser.add_argument("-c", "--continue", dest="resume", action="store_true")
    parser.add_argument("--verify", action="store_true")
    parser.add_argument("names", nargs="+", metavar="NAME [DEST]")
    return parser


class ShelfShell(cmd.Cmd):
    def __init__(self, host: str, port: int, timeout: float, stdin=None, stdout=None):
        super().__init__(stdin=stdin, stdout=stdout)
        self.session = commands.Session(host, port, timeout)
        self.address = "%s:%d" % (host, port)
        self.prompt = "shelf %s> " % self.address
        self.names: list[str] = []
        self.names_at = 0.0
        self.interactive = sys.stdin.isatty() if stdin is None else False
        self.show_progress = sys.stderr.isatty()
        self.last_failure = 0  # exit code of the last command that failed

    # -- the session -----------------------------------------------------------

    @property
    def client(self):
        """The open client, or None (kept for callers of 1.0)."""
        return self.session._client

    def connect(self):
        return self.session.connect()

    def call(self, action):
        """Run ``action(client)``; after a dropped connection reconnect once and retry."""
        try:
            return action(self.connect())
        except ConnectionLost as exc:
            if isinstance(exc, commands.Partial):
                raise
            self.say("connection lost (%s); reconnecting to %s ..." % (exc, self.address))
            self.session.drop()
            return action(self.connect())

    def say(self, text: str) -> None:
        sys.stderr.write(text + "\n")

    def fail(self, text: str, code: int) -> None:
        self.say(text)
        self.last_failure = code

    def onecmd(self, line: str) -> bool:
        try:
            return super().onecmd(line)
        except KeyboardInterrupt:
            # Whatever the command was doing, its bytes may still be in flight.
            self.session.drop()
            self.fail("interrupted (the next command opens a new session)", EXIT_INTERRUPTED)
        except BrokenPipeError:
            raise  # stdout's reader left: nobody to talk to (main() exits quietly)
        except ShelfError as exc:
            self.fail("error: %s" % exc, exit_code_for(exc))
        except OSError as exc:
            reason = exc.strerror or str(exc)
            self.fail("error: %s" % ("%s: %s" % (exc.filename, reason.lower())
                                     if exc.filename else reason), EXIT_TRANSFER_FAILED)
        return False

    def emptyline(self) -> bool:
        return False

    def default(self, line: str) -> bool:
        if line == "EOF":
            if self.interactive:
                self.stdout.write("\n")
            return True
        self.fail("unknown command %r; type help" % line.split()[0], EXIT_USAGE)
        return False

    def usage(self, text: str) -> None:
        self.fail("usage: %s" % text, EXIT_USAGE)

    @staticmethod
    def split(arg: str) -> list[str]:
        try:
            return shlex.split(arg)
        except ValueError as exc:
            raise ShellUsage("cannot read that line: %s" % exc) from None

    # -- commands ----------------------------------------------------------------

    def do_ls(self, arg: str) -> None:
        """ls: list the library."""
        self.call(lambda client: commands.cmd_ls(client, out=self.stdout))

    def do_get(self, arg: str) -> None:
        """get [--force] [--continue] [--verify] NAME... [DEST]: download NAME (to DEST,
        a file or a folder; with several names, a folder)."""
        options = get_parser().parse_args(self.split(arg))
        names, dest = ((options.names, None) if len(options.names) == 1
                       else (options.names[:-1], options.names[-1]))
        for name, target in commands.resolve_destinations(names, dest):
            try:
                size = self.call(lambda client: commands.cmd_get(
                    client, name, target, force=options.force, resume=options.resume,
                    verify=options.verify, show_progress=self.show_progress))
            except ConnectionLost:
                raise  # the others cannot work either
            except ShelfError as exc:
                if len(names) == 1:
                    raise
                self.fail("error: %s" % exc, exit_code_for(exc))
                continue
            self.stdout.write("saved %s (%d bytes)\n" % (target, size))

    def do_put(self, arg: str) -> None:
        """put FILE [NAME]: upload FILE (as NAME)."""
        words = self.split(arg)
        if not 1 <= len(words) <= 2:
            return self.usage("put FILE [NAME]")
        path = os.path.expanduser(words[0])
        name = words[1] if len(words) > 1 else None
        size = self.call(lambda client: commands.cmd_put(client, path, name,
                                                         show_progress=self.show_progress))
        self.names_at = 0.0
        self.stdout.write("stored %s (%d bytes)\n" % (name or os.path.basename(path), size))

    def do_stat(self, arg: str) -> None:
        """stat NAME: size and modification time."""
        words = self.split(arg)
        if len(words) != 1:
            return self.usage("stat NAME")
        self.call(lambda client: commands.cmd_stat(client, words[0], out=self.stdout))

    def do_hash(self, arg: str) -> None:
        """hash NAME: the SHA-256 of a file."""
        words = self.split(arg)
        if len(words) != 1:
            return self.usage("hash NAME")
        self.call(lambda client: commands.cmd_hash(client, words[0], out=self.stdout))

    def do_quit(self, arg: str) -> bool:
        """quit: leave the shell."""
        return True

    do_exit = do_quit

    # -- completion ----------------------------------------------------------------

    def library_names(self) -> list[str]:
        if time.monotonic() - self.names_at > NAME_CACHE_SECONDS:
            try:
                self.names = [entry.name for entry in self.call(lambda c: c.list())]
            except ShelfError:
                return self.names
            self.names_at = time.monotonic()
        return self.names

    def complete_names(self, text, line, begidx, endidx):
        start, typed, quote = current_word(line, endidx)
        matches = [(name, False) for name in self.library_names() if name.startswith(typed)]
        return completions(line, start, begidx, quote, matches)

    complete_get = complete_stat = complete_hash = complete_names

    def complete_put(self, text, line, begidx, endidx):
        start, typed, quote = current_word(line, endidx)
        return completions(line, start, begidx, quote, local_paths(typed))


# -- completion: the shell's words, as shlex reads them ------------------------------

ESCAPE = " \t\\'\""  # what needs a backslash outside quotes


def current_word(line: str, end: int) -> tuple[int, str, str]:
    """The word being typed at ``end``: (where it starts, its value as shlex
    reads it, the quote still open or '')."""
    start, value, quote, escaped = 0, [], "", False
    for index, char in enumerate(line[:end]):
        if escaped:
            # In double quotes a backslash escapes only " and \ (POSIX).
            value.append(char if not quote or char in '"\\' else "\\" + char)
            escaped = False
        elif quote:
            if char == quote:
                quote = ""
            elif char == "\\" and quote == '"':
                escaped = True
            else:
                value.append(char)
        elif char in " \t":
            start, value = index + 1, []
        elif char == "\\":
            escaped = True
        elif char in "'\"":
            quote = char
        else:
            value.append(char)
    return start, "".join(value), quote


def quote_word(value: str, quote: str, complete: bool) -> str:
    """``value`` as one shell word, in the quoting style the user began with."""
    if quote == '"':
        inner = value.replace("\\", "\\\\").replace('"', '\\"')
        return '"' + inner + ('"' if complete else "")
    if quote == "'":
        return "'" + value.replace("'", "'\\''") + ("'" if complete else "")
    return "".join("\\" + char if char in ESCAPE else char for char in value)


def completions(line: str, start: int, begidx: int, quote: str,
                matches: list[tuple[str, bool]]) -> list[str]:
    """What readline puts in place of ``line[begidx:endidx]`` for each match.

    Readline splits words at every space, escaped or not, so it only replaces
    the piece after the last space; the word's earlier part must read the
    same in the completed form. ``matches`` holds (value, is a folder).
    """
    typed_head = line[start:begidx]
    results = []
    for value, folder in matches:
        word = quote_word(value, quote, complete=not folder)
        if word.startswith(typed_head):
            results.append(word[len(typed_head):])
    return results


def quote_for_completion(name: str) -> str:
    return quote_word(name, "", complete=True)


def local_paths(typed: str) -> list[tuple[str, bool]]:
    """Local files and folders whose path starts with ``typed`` (``~`` kept as typed)."""
    home_typed = typed.split(os.sep, 1)[0] if typed.startswith("~") else ""
    home_real = os.path.expanduser(home_typed) if home_typed else ""
    expanded = home_real + typed[len(home_typed):] if home_typed else typed
    found = []
    for path in sorted(glob.glob(glob.escape(expanded) + "*")):
        folder = os.path.isdir(path)
        shown = home_typed + path[len(home_real):] if home_typed else path
        found.append((shown + (os.sep if folder else ""), folder))
    return found


def history_file() -> str | None:
    try:
        from platformdirs import user_state_dir
    except ImportError:
        return None
    folder = user_state_dir("shelf", appauthor=False)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return None
    return os.path.join(folder, "shell_history")


def run_shell(host: str, port: int, timeout: float, quiet: bool = False) -> int:
    """Run the prompt loop; the exit code (non-interactive: the last failure's)."""
    shell = ShelfShell(host, port, timeout)
    shell.connect()  # fail at once, with an exit code, when there is no server
    interactive = sys.stdin.isatty()
    shell.interactive = interactive
    if quiet:
        shell.show_progress = False
    history = None
    if interactive:
        try:
            import readline
            readline.set_completer_delims(" \t\n")
            history = history_file()
            if history and os.path.exists(history):
                readline.read_history_file(history)
        except (ImportError, OSError):
            history = None
        shell.intro = INTRO.format(address=shell.address)
    else:
        shell.prompt = ""
        shell.use_rawinput = False
    try:
        shell.cmdloop()
    except KeyboardInterrupt:
        shell.stdout.write("\n")
        shell.last_failure = shell.last_failure or EXIT_INTERRUPTED
    finally:
        if history:
            try:
                import readline
                readline.set_history_length(1000)
                readline.write_history_file(history)
            except OSError:
                pass
        shell.session.close()
    return 0 if interactive else shell.last_failure
