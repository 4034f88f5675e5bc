"""``shelfd user add|passwd|del|list``: the only writer of the users file.

Runs in its own short process, never in the daemon. A password comes from
the terminal (asked twice, never echoed) or, when standard input is not a
terminal, as one line from it (scripts: ``printf '%s\\n' "$pw" | shelfd user
add alice``); it is never an argument, which every user of the machine could
read in the process list. The file is changed under a lock and replaced
atomically (``daemon.accounts.LockedFile``); a running shelfd sees the change
after a SIGHUP (``systemctl reload shelfd``).

Which file: ``--users FILE``, else the ``users`` key of ``--config FILE``
(default /etc/shelf/shelfd.ini, the packaged one, when it exists).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from common.protocol import ShelfError
from daemon.accounts import (MAX_PASSWORD, Account, AccountsError, LockedFile, check_name,
                             hash_password, load, parse_root, root_text)
from daemon.grant import parse_permissions

PACKAGED_CONFIG = "/etc/shelf/shelfd.ini"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shelfd user", description="Manage the accounts in shelfd's users file.",
        epilog="The password is asked on the terminal (twice), or read as one line from "
               "standard input when it is not a terminal. Send shelfd a SIGHUP "
               "(systemctl reload shelfd) to apply a change.")
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--users", metavar="FILE", help="the users file (default: the "
                       "'users' key of --config)")
    where.add_argument("--config", metavar="FILE",
                       help="shelfd's config file (default %s if it exists)" % PACKAGED_CONFIG)
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = sub.add_parser("add", parents=[where], help="add a user (asks for the password)")
    add.add_argument("name")
    add.add_argument("--permissions", default="rw", metavar="LETTERS",
                     help="r read, w add files and folders, d delete and replace, m rename; "
                          "or none (default rw)")
    add.add_argument("--root", default="/", metavar="PATH",
                     help="the library folder the user is confined to (default: the whole "
                          "library)")
    passwd = sub.add_parser("passwd", parents=[where], help="set a user's password")
    passwd.add_argument("name")
    delete = sub.add_parser("del", parents=[where], help="remove a user")
    delete.add_argument("name")
    sub.add_parser("list", parents=[where], help="name, permissions and root of each user")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        path = users_path(args)
        if args.action == "list":
            return list_users(path)
        name = check_name(args.name)
        if args.action == "add":
            try:
                permissions = parse_permissions(args.permissions)
            except ValueError as exc:
                raise AccountsError(str(exc)) from None
            root = parse_root(args.root)
            if os.path.exists(path):
                refuse_existing(load(path), name)  # before asking for a password
            hashed = hash_password(read_password(name))
            with LockedFile(path, create=True) as users:
                refuse_existing(users.accounts, name)
                users.accounts[name] = Account(name, permissions, root, hashed)
                users.save()
            print("added %s (%s, root %s) to %s" % (name, permissions or "-", root_text(root),
                                                     path))
        elif args.action == "passwd":
            existing(load(path), name, path)
            hashed = hash_password(read_password(name))
            with LockedFile(path) as users:
                account = existing(users.accounts, name, path)
                users.accounts[name] = Account(name, account.permissions, account.root, hashed)
                users.save()
            print("password of %s changed in %s" % (name, path))
        else:
            with LockedFile(path) as users:
                existing(users.accounts, name, path)
                del users.accounts[name]
                users.save()
            print("removed %s from %s" % (name, path))
        print("reload shelfd to apply (systemctl reload shelfd, or kill -HUP its pid)",
              file=sys.stderr)
        return 0
    except ShelfError as exc:
        sys.stderr.write("shelfd user: %s\n" % exc)
        return 1
    except OSError as exc:
        sys.stderr.write("shelfd user: %s: %s\n" % (exc.filename or "users file",
                                                   (exc.strerror or str(exc)).lower()))
        return 1
    except (KeyboardInterrupt, EOFError):
        sys.stderr.write("\nshelfd user: cancelled, nothing changed\n")
        return 130


def users_path(args) -> str:
    if args.users:
        return os.path.abspath(args.users)
    config = args.config or (PACKAGED_CONFIG if os.path.exists(PACKAGED_CONFIG) else None)
    if config:
        from daemon.service import read_config
        users = read_config(config).get("users")
        if users:
            return os.path.abspath(users)
        raise AccountsError("%s names no users file (add users = FILE to its [shelfd] "
                            "section, or give --users FILE)" % config)
    raise AccountsError("which users file? give --users FILE (or --config FILE with a "
                        "users key)")


def refuse_existing(accounts: dict, name: str) -> None:
    if name in accounts:
        raise AccountsError("user %s already exists (shelfd user passwd %s sets the "
                            "password)" % (name, name))


def existing(accounts: dict, name: str, path: str) -> Account:
    account = accounts.get(name)
    if account is None:
        raise AccountsError("no user %s in %s" % (name, path))
    return account


def list_users(path: str) -> int:
    accounts = load(path)
    if not accounts:
        print("no users in %s" % path, file=sys.stderr)
    for account in sorted(accounts.values(), key=lambda a: a.name):
        print("%s %s %s" % (account.name, account.permissions or "-", root_text(account.root)))
    return 0


def read_password(name: str) -> bytes:
    """From the terminal (twice, must match), or one line of standard input."""
    if sys.stdin.isatty():
        first = getpass.getpass("Password for %s: " % name)
        if getpass.getpass("Again: ") != first:
            raise AccountsError("the passwords differ; nothing changed")
        password = first.encode("utf-8")
    else:
        line = sys.stdin.buffer.readline()
        password = line[:-1] if line.endswith(b"\n") else line
        password = password[:-1] if password.endswith(b"\r") else password
    if not password:
        raise AccountsError("the password is empty; nothing changed")
    if len(password) > MAX_PASSWORD:
        raise AccountsError("the password is over %d bytes" % MAX_PASSWORD)
    return password
