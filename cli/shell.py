"""``shelf-cli shell``: the classroom's menu loop as a proper prompt.

One session for the whole shell, reopened with a clear message when the
connection drops. A command interrupted by Ctrl+C (or cut in any other way)
closes the session, whose framing is lost with bytes in flight; the next
command opens a new one. The shell has a current library folder (``cd``,
``pwd``) that relative paths resolve against; ``..`` and ``/`` are arithmetic
on this side, never sent. Readline history (kept in the user's state folder)
and tab completion of library paths, folder by folder, and local paths (for
put), written back with the quoting the shell's own parser reads. Fed from a
pipe, the shell exits with the code of its last failed command.
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

from cli import commands, transfer
from cli.exits import EXIT_INTERRUPTED, EXIT_TRANSFER_FAILED, EXIT_USAGE, exit_code_for
from cli.parsers import COMMANDS
from cli.remote import Path, resolve, text
from common.client import ConnectionLost, NotFound, ShelfError

INTRO = """Shelf library at {address}. Commands:
  ls [FOLDER]        list                   cd FOLDER, pwd   the current folder
  get [-r] PATH... [DEST]   download (--force, --continue, --verify)
  put [-r] FILE... [FOLDER_OR_NAME]   upload (--replace, --continue)
  stat, hash, mkdir, rm, rmdir, mv, trash, restore, df, help, quit
Paths are relative to the current folder; names with spaces go in quotes;
Tab completes library and local paths."""

NAME_CACHE_SECONDS = 5.0
PREFIXES = ("error: ", "")  # before a batch's errors and notes on stderr


class ShellUsage(commands.LocalError):
    """A command line the shell cannot run (its usage follows)."""


class WordParser(argparse.ArgumentParser):
    """argparse for one shell command: errors are raised, never exit the shell."""

    def error(self, message: str):
        raise ShellUsage("%s (usage: %s)" % (message, self.format_usage().strip()[7:]))

    def exit(self, status: int = 0, message: str | None = None):
        raise ShellUsage((message or "").strip() or "usage: %s" % self.format_usage().strip())


def command_parser(name: str) -> WordParser:
    summary, description, define = COMMANDS[name]
    parser = WordParser(prog=name, add_help=False, description=description or summary)
    define(parser)
    return parser


def get_parser() -> WordParser:
    return command_parser("get")


class ShelfShell(cmd.Cmd):
    def __init__(self, host: str, port: int, timeout: float, stdin=None, stdout=None,
                 **tls):
        super().__init__(stdin=stdin, stdout=stdout)
        self.session = commands.Session(host, port, timeout, **tls)  # tls=, trust=: shelfs://
        self.address = "%s:%d" % (host, port)
        self.current: Path = ()
        self.listings: dict[Path, tuple[float, list]] = {}  # folder: (when, entries)
        self.interactive = sys.stdin.isatty() if stdin is None else False
        self.show_progress = sys.stderr.isatty()
        self.quiet = False
        self.last_failure = 0  # exit code of the last command that failed
        self.prompt_shown = True
        self.update_prompt()

    def update_prompt(self) -> None:
        if self.prompt_shown:
            self.prompt = "shelf %s:/%s> " % (self.address, "/".join(self.current))

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

    def ready(self) -> None:
        """Before a transfer batch (which is not retried as a whole): a session that
        died while the shell sat idle is noticed, and replaced, here."""
        self.call(lambda client: client.noop())

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

    def parse(self, name: str, arg: str):
        return command_parser(name).parse_args(self.split(arg))

    def path(self, typed: str) -> Path:
        return resolve(typed, self.current)

    def batch_result(self, code: int) -> None:
        """A get, put or rm batch reported its own failures; keep its exit code."""
        if code:
            self.last_failure = code

    def changed(self) -> None:
        self.listings.clear()

    # -- where we are ------------------------------------------------------------

    def do_cd(self, arg: str) -> None:
        """cd [FOLDER]: make FOLDER the current library folder (.. goes up, / or nothing
        is the root)."""
        words = self.split(arg)
        if len(words) > 1:
            return self.usage("cd [FOLDER]")
        path = self.path(words[0]) if words else ()
        if path:
            entry = self.call(lambda client: commands.stat_or_none(client, path))
            if entry is None:
                raise NotFound("no such folder in the library: %s" % text(path))
            if not entry.is_folder:
                raise commands.IsAFolder("%s is a file, not a folder" % text(path))
        self.current = path
        self.update_prompt()

    def do_pwd(self, arg: str) -> None:
        """pwd: the current library folder."""
        self.stdout.write("/%s\n" % "/".join(self.current))

    # -- commands ----------------------------------------------------------------

    def do_ls(self, arg: str) -> None:
        """ls [FOLDER] [--json]: list a folder (default: the current one)."""
        options = self.parse("ls", arg)
        folder = self.path(options.folder)
        self.call(lambda client: commands.cmd_ls(client, folder, options.json,
                                                 out=self.stdout))

    def do_get(self, arg: str) -> None:
        """get [-r] [--force] [--continue] [--verify] PATH... [DEST]: download files (with
        -r, folders) to DEST, a local file or folder (default: the local current folder)."""
        options = self.parse("get", arg)
        paths, dest = ((options.paths, None) if len(options.paths) == 1
                       else (options.paths[:-1], options.paths[-1]))
        self.ready()
        self.batch_result(transfer.run_get(self.session, paths, dest, transfer.GetOptions(
            recursive=options.recursive, force=options.force, resume=options.resume,
            verify=options.verify, show_progress=self.show_progress, quiet=self.quiet),
            current=self.current, out=self.stdout, always_report=True, prefixes=PREFIXES))

    def do_put(self, arg: str) -> None:
        """put [-r] [--replace] [--continue] FILE... [FOLDER_OR_NAME]: upload files (with -r,
        folders) into the current library folder, or into FOLDER_OR_NAME."""
        options = self.parse("put", arg)
        files = [os.path.expanduser(word) for word in options.files]
        files, target = transfer.split_put_words(files, options.name)
        self.changed()
        self.ready()
        self.batch_result(transfer.run_put(self.session, files, target, transfer.PutOptions(
            recursive=options.recursive, replace=options.replace, resume=options.resume,
            show_progress=self.show_progress, quiet=self.quiet, size=options.size,
            continue_hint="put", records=transfer.upload_records()),
            current=self.current, out=self.stdout, always_report=True, prefixes=PREFIXES))

    def do_stat(self, arg: str) -> None:
        """stat PATH: size, modification time and version of a file (or a folder)."""
        options = self.parse("stat", arg)
        path = self.path(options.path)
        self.call(lambda client: commands.cmd_stat(client, path, options.json,
                                                   out=self.stdout))

    def do_hash(self, arg: str) -> None:
        """hash PATH: the SHA-256 of a file."""
        options = self.parse("hash", arg)
        path = self.path(options.path)
        self.call(lambda client: commands.cmd_hash(client, path, out=self.stdout))

    def do_mkdir(self, arg: str) -> None:
        """mkdir [-p] PATH: make a folder."""
        options = self.parse("mkdir", arg)
        path = self.path(options.path)
        self.changed()
        self.call(lambda client: commands.cmd_mkdir(client, path, options.parents))

    def do_rm(self, arg: str) -> None:
        """rm PATH...: delete files (to the trash where the server keeps one)."""
        options = self.parse("rm", arg)
        paths = [self.path(word) for word in options.paths]
        self.changed()
        batch = transfer.Batch(self.quiet, PREFIXES)
        for path in paths:
            batch.run(lambda path=path: self.call(lambda client: commands.cmd_rm(client,
                                                                                  path)))
        self.batch_result(batch.first_failure)

    def do_rmdir(self, arg: str) -> None:
        """rmdir PATH: remove an empty folder."""
        path = self.path(self.parse("rmdir", arg).path)
        self.changed()
        self.call(lambda client: commands.cmd_rmdir(client, path))
        if self.current[:len(path)] == path:
            self.current = path[:-1]  # we were in it: it is gone
            self.update_prompt()

    def do_mv(self, arg: str) -> None:
        """mv FROM TO: rename or move a file or folder (TO ending in / means into it)."""
        from cli.__main__ import move_paths
        options = self.parse("mv", arg)
        source, target = move_paths(options.source, options.target, self.current)
        self.changed()
        self.call(lambda client: commands.cmd_mv(client, source, target))
        if source and self.current[:len(source)] == source:
            self.current = target + self.current[len(source):]  # we were in what moved
            self.update_prompt()

    def do_trash(self, arg: str) -> None:
        """trash [--json]: the deleted files that can be restored, newest first."""
        options = self.parse("trash", arg)
        self.call(lambda client: commands.cmd_trash(client, options.json, out=self.stdout))

    def do_restore(self, arg: str) -> None:
        """restore ID [PATH]: put a deleted file back, where it was or at PATH."""
        options = self.parse("restore", arg)
        path = self.path(options.path) if options.path is not None else None
        self.changed()
        self.call(lambda client: commands.cmd_restore(client, options.id, path,
                                                      out=self.stdout))

    def do_df(self, arg: str) -> None:
        """df [--json]: free and total space."""
        options = self.parse("df", arg)
        self.call(lambda client: commands.cmd_df(client, options.json, out=self.stdout))

    def do_quit(self, arg: str) -> bool:
        """quit: leave the shell."""
        return True

    do_exit = do_quit

    # -- completion ----------------------------------------------------------------

    def folder_entries(self, folder: Path) -> list:
        """The entries of a library folder, asked for at most every few seconds."""
        seen = self.listings.get(folder)
        if seen is not None and time.monotonic() - seen[0] < NAME_CACHE_SECONDS:
            return seen[1]
        try:
            entries = self.call(lambda client: client.list(folder))
        except ShelfError:
            return seen[1] if seen else []
        self.listings[folder] = (time.monotonic(), entries)
        return entries

    def library_paths(self, typed: str) -> list[tuple[str, bool]]:
        """Library paths that start with ``typed``; a folder ends in / and is not done."""
        head, slash, start = typed.rpartition("/")
        try:
            folder = resolve(head + slash, self.current) if slash else self.current
        except ShelfError:
            return []
        prefix = head + slash
        return [(prefix + entry.name + ("/" if entry.is_folder else ""), entry.is_folder)
                for entry in self.folder_entries(folder) if entry.name.startswith(start)]

    def complete_names(self, text, line, begidx, endidx):
        start, typed, quote = current_word(line, endidx)
        return completions(line, start, begidx, quote, self.library_paths(typed))

    complete_get = complete_stat = complete_hash = complete_ls = complete_names
    complete_rm = complete_rmdir = complete_mv = complete_mkdir = complete_names

    def complete_cd(self, text, line, begidx, endidx):
        start, typed, quote = current_word(line, endidx)
        folders = [(path, True) for path, folder in self.library_paths(typed) if folder]
        return completions(line, start, begidx, quote, folders)

    def complete_put(self, text, line, begidx, endidx):
        start, typed, quote = current_word(line, endidx)
        return completions(line, start, begidx, quote, local_paths(typed))

    def library_names(self) -> list[str]:
        """The names in the current folder (kept for callers of 1.0)."""
        return [entry.name for entry in self.folder_entries(self.current)]


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


def run_shell(host: str, port: int, timeout: float, quiet: bool = False, **tls) -> int:
    """Run the prompt loop; the exit code (non-interactive: the last failure's)."""
    shell = ShelfShell(host, port, timeout, **tls)
    shell.connect()  # fail at once, with an exit code, when there is no server
    interactive = sys.stdin.isatty()
    shell.interactive = interactive
    if quiet:
        shell.show_progress, shell.quiet = False, True
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
        shell.prompt_shown, shell.prompt = False, ""
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
