"""The words of each shelf-cli command: one definition for the command line and the shell.

No I/O. ``COMMANDS`` names each command, says what it does, and adds its
arguments to an ``argparse`` parser; ``cli/__main__.py`` makes subcommands of
them, ``cli/shell.py`` one parser per typed line.
"""

from __future__ import annotations

import argparse

EXIT_HELP = """exit codes:
  0    success
  1    already exists (in the library, or the local destination without --force);
       a folder to remove is not empty
  2    usage error (bad option, invalid name, a folder where a file is needed)
  3    no such file or folder (in the library or locally)
  4    cannot connect
  5    server busy (too many sessions), or another download to the same
       destination is running
  6    transfer failed (connection lost, refused by the server, the library is
       full, checksum mismatch, the destination cannot be written, a --continue
       that would mix two versions)
  7    TLS trust refused
  8    login refused or permission denied
  130  interrupted (Ctrl+C); no partial file is left at the destination"""

RESUME_HELP = """A cut download keeps its bytes in .NAME.shelf-part beside the destination, with
.NAME.shelf-part.json recording the library path and the version of the file they
came from. --continue asks the server for the rest of that very version; when the
library file changed since (another version), it refuses and keeps the bytes, and
--continue --force starts over from the new version instead."""

PUT_RESUME_HELP = """An upload that was cut (Ctrl+C, a lost connection, a killed shelf-cli) can be
continued with put --continue and the same FILE and NAME: the server keeps the bytes
it got (for 24 hours with shelfd's defaults), and a record of the upload is kept in
the user's state folder until the server has the whole file. A FILE changed since
(size or modification time) is uploaded whole."""


def ls(parser):
    parser.add_argument("folder", nargs="?", default="", metavar="FOLDER",
                        help="the folder to list (default: the root, or the shell's folder)")
    parser.add_argument("--json", action="store_true",
                        help="machine-readable: name, path, kind (file or folder), size, "
                             "mtime, version")


def get(parser):
    parser.usage = "%(prog)s [-h] [-r] [-f] [-c] [--verify] PATH... [DEST]"
    parser.add_argument("paths", nargs="+", metavar="PATH", help="library files or folders, "
                        "then where to save them")
    parser.add_argument("-r", "--recursive", action="store_true",
                        help="download folders with everything in them; DEST is then "
                             "always a folder (made when missing) that each PATH goes into")
    parser.add_argument("-f", "--force", action="store_true",
                        help="replace an existing local file; with --continue, start over "
                             "when the library file changed")
    parser.add_argument("-c", "--continue", dest="resume", action="store_true",
                        help="resume a download that was cut (same version only); files "
                             "already there with the library's size are skipped")
    parser.add_argument("--verify", action="store_true",
                        help="check the SHA-256 before saving")


def put(parser):
    parser.usage = ("%(prog)s [-h] [-r] [--replace] [-c] [--as NAME] [--size N] "
                    "FILE... [FOLDER_OR_NAME]")
    parser.add_argument("files", nargs="+", metavar="FILE", help="local files or folders, "
                        "then where to put them in the library")
    parser.add_argument("-r", "--recursive", action="store_true",
                        help="upload folders with everything in them (links and special "
                             "files are skipped with a note); the last argument is then "
                             "always a library folder, made when missing")
    parser.add_argument("--replace", action="store_true",
                        help="replace a file of the same name (needs the d permission)")
    parser.add_argument("-c", "--continue", dest="resume", action="store_true",
                        help="continue an upload that was cut")
    parser.add_argument("--as", dest="name", metavar="NAME",
                        help="the name in the library (one file, or - for stdin)")
    parser.add_argument("--size", type=int, help="byte count, with - (stdin)")


def one_path(what: str, json_help: str | None = None):
    def define(parser):
        parser.add_argument("path", metavar="PATH", help=what)
        if json_help:
            parser.add_argument("--json", action="store_true", help=json_help)
    return define


def mkdir(parser):
    parser.add_argument("path", metavar="PATH")
    parser.add_argument("-p", "--parents", action="store_true",
                        help="make missing folders above it too; an existing folder is fine")


def rm(parser):
    parser.add_argument("paths", nargs="+", metavar="PATH", help="library files")


def mv(parser):
    parser.add_argument("source", metavar="FROM")
    parser.add_argument("target", metavar="TO",
                        help="the new path; ending in / means into that folder")


def json_only(parser):
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def restore(parser):
    parser.add_argument("id", metavar="ID", help="as `trash` lists it")
    parser.add_argument("path", nargs="?", metavar="PATH",
                        help="where to put it back (default: where it was)")


def nothing(parser):
    pass


# name: (one line of help, a longer description or None, arguments)
COMMANDS = {
    "ls": ("list a folder", "List a library folder: folders end in /.", ls),
    "get": ("download files and folders",
            "Download PATH to DEST (a file or a folder; default: the current folder). With "
            "several paths the last argument must be a folder. Nothing partial is ever left "
            "at DEST.\n\n" + RESUME_HELP, get),
    "put": ("upload files and folders",
            "Upload FILEs (- is stdin) into the current library folder, or into "
            "FOLDER_OR_NAME: an existing library folder, or (for one file) the file's name "
            "in the library. The last argument counts as FOLDER_OR_NAME when it is not a "
            "local file. Never replaces without --replace.\n\n" + PUT_RESUME_HELP, put),
    "stat": ("size, date and version of a file (or a folder)", None,
             one_path("a file or folder", "machine-readable output")),
    "hash": ("SHA-256 of a file (sha256sum format)", None, one_path("a file")),
    "mkdir": ("make a folder", "Make a folder; its parent must exist (or use -p).", mkdir),
    "rm": ("delete files", "Delete files: to the trash where the server keeps one "
           "(see trash, restore). Folders go with rmdir.", rm),
    "rmdir": ("remove an empty folder", None, one_path("an empty folder")),
    "mv": ("rename or move a file or folder",
           "Rename or move FROM to TO. Never replaces: an existing TO is an error (exit 1).",
           mv),
    "trash": ("list what can be restored", "List the deleted files the server still keeps, "
              "newest first.", json_only),
    "restore": ("put a deleted file back", "Put a file from the trash back where it was, or "
                "at PATH.", restore),
    "df": ("free and total space", None, json_only),
}


class Formatter(argparse.HelpFormatter):
    """Paragraphs wrapped one by one; indented lines (the exit codes) kept as written."""

    def _fill_text(self, text, width, indent):
        import textwrap
        blocks = []
        for block in text.split("\n\n"):
            if any(line.startswith(" ") for line in block.splitlines()):
                blocks.append("\n".join(indent + line for line in block.splitlines()))
            else:
                blocks.append(textwrap.fill(" ".join(block.split()), width,
                                            initial_indent=indent, subsequent_indent=indent))
        return "\n\n".join(blocks)
