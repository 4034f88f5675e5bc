"""``shelf-cli shell``: the classroom's menu loop as a proper prompt.

One session for the whole shell, reopened with a clear message when the
connection drops. Readline history (kept in the user's state folder) and tab
completion of library names (for get, stat, hash) and local paths (for put).
Single-threaded, in the terminal's process.
"""

from __future__ import annotations

import cmd
import glob
import os
import shlex
import sys
import time

from cli import commands
from common.client import Client, ConnectionLost, ShelfError

INTRO = """Shelf library at {address}. Commands:
  ls               list the library          stat NAME   size and date
  get NAME [DEST]  download                  hash NAME   SHA-256
  put FILE [NAME]  upload                    help, quit
Names with spaces go in quotes; Tab completes names and paths."""

NAME_CACHE_SECONDS = 5.0


class ShelfShell(cmd.Cmd):
    def __init__(self, host: str, port: int, timeout: float, stdin=None, stdout=None):
        super().__init__(stdin=stdin, stdout=stdout)
        self.host, self.port, self.timeout = host, port, timeout
        self.address = "%s:%d" % (host, port)
        self.prompt = "shelf %s> " % self.address
        self.client: Client | None = None
        self.names: list[str] = []
        self.names_at = 0.0
        self.interactive = sys.stdin.isatty() if stdin is None else False
        self.show_progress = sys.stderr.isatty()

    # -- the session -----------------------------------------------------------

    def connect(self) -> Client:
        if self.client is None or self.client.closed:
            self.client = Client(self.host, self.port, timeout=self.timeout)
        return self.client

    def call(self, action):
        """Run ``action(client)``; after a dropped connection reconnect once and retry."""
        try:
            return action(self.connect())
        except ConnectionLost as exc:
            if isinstance(exc, commands.Partial):
                raise
            self.say("connection lost (%s); reconnecting to %s ..." % (exc, self.address))
            self.client = None
            return action(self.connect())

    def say(self, text: str) -> None:
        sys.stderr.write(text + "\n")

    def onecmd(self, line: str) -> bool:
        try:
            return super().onecmd(line)
        except KeyboardInterrupt:
            self.say("interrupted")
        except ShelfError as exc:
            self.say("error: %s" % exc)
        except OSError as exc:
            self.say("error: %s" % (exc.strerror or exc))
        return False

    def emptyline(self) -> bool:
        return False

    def default(self, line: str) -> bool:
        if line == "EOF":
            self.stdout.write("\n")
            return True
        self.say("unknown command %r; type help" % line.split()[0])
        return False

    @staticmethod
    def split(arg: str) -> list[str]:
        try:
            return shlex.split(arg)
        except ValueError as exc:
            raise commands.LocalError("cannot read that line: %s" % exc) from None

    # -- commands ----------------------------------------------------------------

    def do_ls(self, arg: str) -> None:
        """ls: list the library."""
        self.call(lambda client: commands.cmd_ls(client, out=self.stdout))

    def do_get(self, arg: str) -> None:
        """get NAME [DEST]: download NAME (to DEST, a file or a folder)."""
        words = self.split(arg)
        if not 1 <= len(words) <= 2:
            return self.say("usage: get NAME [DEST]")
        ((name, target),) = commands.resolve_destinations([words[0]], words[1] if len(words) > 1
                                                          else None)
        size = self.call(lambda client: commands.cmd_get(client, name, target,
                                                         show_progress=self.show_progress))
        self.stdout.write("saved %s (%d bytes)\n" % (target, size))

    def do_put(self, arg: str) -> None:
        """put FILE [NAME]: upload FILE (as NAME)."""
        words = self.split(arg)
        if not 1 <= len(words) <= 2:
            return self.say("usage: put FILE [NAME]")
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
            return self.say("usage: stat NAME")
        self.call(lambda client: commands.cmd_stat(client, words[0], out=self.stdout))

    def do_hash(self, arg: str) -> None:
        """hash NAME: the SHA-256 of a file."""
        words = self.split(arg)
        if len(words) != 1:
            return self.say("usage: hash NAME")
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
        return [quote_for_completion(n) for n in self.library_names() if n.startswith(text)]

    complete_get = complete_stat = complete_hash = complete_names

    def complete_put(self, text, line, begidx, endidx):
        matches = glob.glob(os.path.expanduser(text) + "*")
        return [m + (os.sep if os.path.isdir(m) else "") for m in matches]


def quote_for_completion(name: str) -> str:
    return name.replace(" ", "\\ ")


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


def run_shell(host: str, port: int, timeout: float) -> int:
    shell = ShelfShell(host, port, timeout)
    shell.connect()  # fail at once, with an exit code, when there is no server
    interactive = sys.stdin.isatty()
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
    finally:
        if history:
            try:
                import readline
                readline.set_history_length(1000)
                readline.write_history_file(history)
            except OSError:
                pass
        if shell.client is not None:
            shell.client.close()
    return 0
