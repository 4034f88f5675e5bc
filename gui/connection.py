"""Connecting, disconnecting and what the control session reports: the window's side of it.

UI thread only. ``ConnectionActions`` is a part of ``ShelfApp`` (a mixin: the
same ``app.connect``, ``app.disconnect``... that buttons, keys, menus and tests
call); the network side is ``gui.remote.RemoteWorker``, which answers with
``Connected``, ``Listed``, ``RemoteFailed`` and ``Disconnected`` messages that
the app's drain loop hands to the methods here. Disconnect asks what becomes of
transfers still going to that server (pause or cancel): a transfer belongs to
the server it was queued for.

The host field takes a host name (with the port beside it) or a server URL,
``shelf://[USER@]HOST[:PORT]`` or ``shelfs://...`` for TLS, read as shelf-cli
reads it (``parse_url``: a copy of ``cli.remote.parse_server``'s rules, as the
packaged desktop client carries no ``cli``). The control session may ask two
questions on the way in: whether to trust a certificate (``TrustQuestion``,
answered on the queue the worker waits on) and who logs in (``LoginNeeded``,
answered with ``request_login`` from the login dialog, which stays up and shows
the server's refusal until the login succeeds or is cancelled).
"""

from __future__ import annotations

import time

from typing import NamedTuple

from common.humanize import human_size
from common.protocol import DEFAULT_PORT, USER_NAME
from gui.dialogs import ChoiceDialog, Dialog, LoginDialog
from gui.remote import Connected, Listed, LoginNeeded, RemoteFailed, TrustChanged, TrustQuestion
from gui.wording import plural, sentence


class ServerURL(NamedTuple):
    host: str
    port: int
    tls: bool = False
    user: str | None = None


def parse_url(url: str) -> ServerURL:
    """``shelf://[USER@]HOST[:PORT]`` or ``shelfs://...`` (IPv6 in brackets); ValueError
    with a sentence for a person otherwise. Never a password in a URL."""
    scheme, sep, rest = url.strip().partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("shelf", "shelfs"):
        raise ValueError("write the server as shelf://HOST[:PORT], or shelfs://HOST[:PORT] "
                         "for TLS")
    rest = rest.rstrip("/")
    if "/" in rest or "?" in rest or "#" in rest:
        raise ValueError("a server URL names a server, not a path")
    user = None
    if "@" in rest:
        user, _, rest = rest.rpartition("@")
        if ":" in user:
            raise ValueError("never put a password in a server URL: Shelf asks for it")
        if not USER_NAME.fullmatch(user):
            raise ValueError("bad user name “%s”: 1 to 64 letters, digits, “.”, “_” or “-”"
                             % user)
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise ValueError("bad IPv6 address in the server URL")
        port_text = tail[1:] if tail else ""
    else:
        host, colon, port_text = rest.rpartition(":") if ":" in rest else (rest, "", "")
        if colon and not port_text:
            raise ValueError("no port after “:” in the server URL")
    if not host:
        raise ValueError("no host in the server URL")
    port = DEFAULT_PORT
    if port_text:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError("the port must be a number from 1 to 65535")
        port = int(port_text)
    return ServerURL(host, port, scheme == "shelfs", user)


def url_of(host: str, port: int, tls: bool, user: str | None) -> str:
    shown = "[%s]" % host if ":" in host else host
    return "%s://%s%s:%d" % ("shelfs" if tls else "shelf", user + "@" if user else "", shown,
                             port)


class ConnectionActions:
    """Connect, Disconnect and the control session's replies. UI thread only."""

    def connect_clicked(self) -> None:
        if self.connecting:
            self.remote_worker.abort()
            return
        if self.connected:
            self.disconnect()
            return
        host = self.host_var.get().strip()
        if "://" in host:
            try:
                url = parse_url(host)
            except ValueError as exc:
                self.show_error(str(exc), log_it=True)
                self.host_box.focus_set()
                return
            self.connect(*url)
            return
        try:
            port = int(self.port_var.get().strip())
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            self.show_error("The port must be a number from 1 to 65535", log_it=True)
            self.status_var.set("Invalid port")
            self.port_entry.focus_set()
            return
        if not host:
            self.show_error("Enter the server's host name or address", log_it=True)
            self.host_box.focus_set()
            return
        self.connect(host, port)

    def connect(self, host: str, port: int, tls: bool = False, user: str | None = None) -> None:
        self.host_var.set(url_of(host, port, tls, user) if tls or user else host)
        self.port_var.set(str(port))
        self.connecting = True
        self.state_var.set("Connecting to %s:%d…" % (host, port))
        self.status_var.set("Connecting to %s:%d… (Cancel stops)" % (host, port))
        self.connect_button.configure(text="Cancel", state="normal")
        self.remote.clear("Connecting…")
        self.log_message("Connecting to %s" % url_of(host, port, tls, user) if tls or user
                         else "Connecting to %s:%d" % (host, port))
        self.remote_worker.request_connect(host, port, tls, user)

    # -- the questions on the way in --------------------------------------------------

    def _trust_question(self, message: TrustQuestion) -> None:
        """A first contact with a certificate no CA vouches for: ask, answer the worker."""
        def answered(choice) -> None:
            self.active_dialog = None
            message.answers.put(choice is True)
            if choice is True:
                self.log_message("Trusted %s:%d, certificate %s (remembered)"
                                 % (message.host, message.port, message.fingerprint))

        self.active_dialog = ChoiceDialog(
            self.root, "Trust this server?",
            "%s:%d has a certificate no authority this computer trusts vouches for."
            % (message.host, message.port),
            [(True, "Trust and remember"), (False, "Cancel")], answered, default=False,
            cancel_value=False,
            detail="Its SHA-256 fingerprint is below. Compare it with the one the server's "
                   "admin gives you (shelfd logs it when it starts). Trust it only if they "
                   "are the same: Shelf remembers it and warns you if it ever changes.%s"
                   % ("\n\n(%s)" % message.reason if message.reason else ""))
        self.active_dialog.show_text(message.fingerprint)

    def _trust_changed(self, message: TrustChanged) -> None:
        self.log_message("The certificate of %s:%d changed: it was %s and is now %s; "
                         "refused" % (message.host, message.port, message.pinned,
                                      message.seen), "error")

        def answered(choice) -> None:
            self.active_dialog = None

        self.active_dialog = Dialog(
            self.root, "Certificate changed",
            "The certificate of %s:%d has changed since you trusted it. Shelf did not "
            "connect." % (message.host, message.port),
            [("ok", "Close")], answered, default="ok",
            detail="Someone may be intercepting the connection (pretending to be the "
                   "server to read your files and password), or the server's admin installed "
                   "a new certificate. Ask the admin for the new fingerprint (shelfd logs it "
                   "when it starts). Only if it matches the one below, remove the line for "
                   "this server from %s and connect again.\n\nTrusted: %s\nNow shown: %s"
                   % (message.known_servers, message.pinned, message.seen))

    def _login_needed(self, message: LoginNeeded) -> None:
        """The server wants a LOGIN: the dialog (or the one already up, with the refusal)."""
        self.connecting = True  # until logged in: the button cancels
        self.connect_button.configure(text="Cancel", state="normal")
        dialog = self.active_dialog
        if isinstance(dialog, LoginDialog) and dialog.winfo_exists():
            dialog.refused(message.error)
            return
        self.state_var.set("Logging in to %s:%d…" % (message.host, message.port))
        self.status_var.set("Log in to %s:%d" % (message.host, message.port))

        def submitted(user: str, password: bytes) -> None:
            self.status_var.set("Logging in as %s…" % user)
            self.remote_worker.request_login(user, password)

        def cancelled() -> None:
            self.active_dialog = None
            self.remote_worker.request_disconnect()

        self.active_dialog = LoginDialog(self.root, "%s:%d" % (message.host, message.port),
                                         message.user, submitted, cancelled,
                                         error=message.error)

    def disconnect(self) -> None:
        """Disconnect; transfers still going to this server are paused or cancelled (asked)."""
        address = self.address
        left = self.transfers.unfinished_on(address) if address else 0
        if not left:
            self.remote_worker.request_disconnect()
            return

        def answered(choice) -> None:
            self.active_dialog = None
            if choice == "stay":
                return
            if choice == "cancel":
                self.transfers.cancel_batches([b.id for b in self.transfers.batches.values()
                                               if b.address == address])
            else:
                self.transfers.pause_server(address, "disconnected")
            self.remote_worker.request_disconnect()

        self.active_dialog = ChoiceDialog(
            self.root, "Disconnect?", "%s still to transfer with %s:%d."
            % (plural(left, "file"), *address),
            [("pause", "Pause them"), ("cancel", "Cancel them"), ("stay", "Stay connected")],
            answered, default="pause", cancel_value="stay",
            detail="Paused transfers go on when you connect to this server again.")

    def _recent_chosen(self, event=None) -> None:
        host, _, port = self.host_var.get().rpartition(":")
        if host and port.isdigit():
            self.host_var.set(host)
            self.port_var.set(port)

    def _connected(self, message: Connected) -> None:
        if isinstance(self.active_dialog, LoginDialog):
            self.active_dialog.close()
            self.active_dialog = None
        self.connected = True
        self.connecting = False
        self.address = (message.host, message.port)
        access = message.access
        self.access = access
        self.transfers.set_access(self.address, access)
        self.settings.remember_server(message.host, message.port)
        self.host_box.configure(values=self.settings.recent)
        who = " as %s" % access.user if access.user else ""
        self.state_var.set("Connected to %s:%d%s" % (*self.address, who))
        self.security_var.set("🔒 TLS" if access.tls else "Not encrypted")
        self.connect_button.configure(text="Disconnect", state="normal")
        self.log_message("Connected to %s:%d%s%s" % (*self.address, who,
                                                     " (TLS)" if access.tls else ""), "ok")
        self.status_var.set("Connected to %s:%d%s" % (*self.address, who))
        self.remote.server_name = message.host
        self.remote.folder = ""
        if self.transfers.resume_server(self.address):
            self.log_message("Resuming the transfers to %s:%d" % self.address)
        self._update_actions()
        self.settings_changed()

    def _listed(self, message: Listed) -> None:
        if not self.connected:
            return
        started = time.monotonic()
        self.remote.show_entries(message.entries, message.folder)
        files = [entry for entry in message.entries if not entry.is_folder]
        folders = len(message.entries) - len(files)
        self.status_var.set("Library: %s%s, %s (listed in %.2f s)"
                            % (plural(len(files), "file"),
                               ", " + plural(folders, "folder") if folders else "",
                               human_size(sum(entry.size for entry in files)),
                               time.monotonic() - started))
        self._update_actions()

    def _remote_failed(self, message: RemoteFailed) -> None:
        self.show_error(sentence(message.error), log_it=True)
        if message.connected:
            return
        self._set_disconnected("Not connected: %s" % message.error)

    def _set_disconnected(self, text: str) -> None:
        self.connected = False
        self.connecting = False
        self.address = None
        if isinstance(self.active_dialog, LoginDialog):
            self.active_dialog.close()
            self.active_dialog = None
        self.security_var.set("")
        self.remote.folder = ""
        self.state_var.set(text)
        self.connect_button.configure(text="Connect", state="normal")
        self.remote.clear("Not connected")
        if text == "Disconnected":
            self.log_message("Disconnected")
            self.status_var.set("Disconnected")
        self._update_actions()
