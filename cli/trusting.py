"""shelf-cli's side of TLS trust: ``--trust``, and the question asked on first contact.

Single-threaded, in the terminal's process. The decisions themselves are
``common.trust``'s (shared with the desktop client); this module only asks.
A terminal (standard input and standard error both ttys) is asked once per
new server, y/N, and a yes is remembered in known_servers; without one, and
without ``--trust``, an untrusted server is refused (exit 7) with a line that
names its fingerprint and the ``--trust`` that would accept it.
"""

from __future__ import annotations

import sys

from common.trust import Trust


def make_trust(host: str, port: int, fingerprint: str | None) -> Trust:
    """The Trust for one shelf-cli run; ValueError for a malformed --trust."""
    trust = Trust(fingerprint=fingerprint)
    if fingerprint is None and sys.stdin.isatty() and sys.stderr.isatty():
        trust.ask = lambda seen: ask_on_terminal(trust, host, port, seen)
    return trust


def ask_on_terminal(trust: Trust, host: str, port: int, fingerprint: str) -> bool:
    server = "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)
    sys.stderr.write(
        "The certificate of %s is not signed by a CA this computer trusts (%s).\n"
        "Its fingerprint is %s\n"
        "Compare it with the one the server's admin gives you (shelfd logs it).\n"
        "Trust this server and remember it? [y/N] "
        % (server, trust.unverified_reason or "unverified", fingerprint))
    sys.stderr.flush()
    try:
        answer = sys.stdin.readline()
    except (OSError, ValueError):
        return False
    return answer.strip().lower() in ("y", "yes")
