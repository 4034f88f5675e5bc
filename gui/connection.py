"""Connecting, disconnecting and what the control session reports: the window's side of it.

UI thread only. ``ConnectionActions`` is a part of ``ShelfApp`` (a mixin: the
same ``app.connect``, ``app.disconnect``... that buttons, keys, menus and tests
call); the network side is ``gui.remote.RemoteWorker``, which answers with
``Connected``, ``Listed``, ``RemoteFailed`` and ``Disconnected`` messages that
the app's drain loop hands to the methods here. Disconnect asks what becomes of
transfers still going to that server (pause or cancel): a transfer belongs to
the server it was queued for.
"""

from __future__ import annotations

import time

from common.humanize import human_size
from gui.dialogs import ChoiceDialog
from gui.remote import Connected, Listed, RemoteFailed
from gui.wording import plural, sentence


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

    def connect(self, host: str, port: int) -> None:
        self.host_var.set(host)
        self.port_var.set(str(port))
        self.connecting = True
        self.state_var.set("Connecting to %s:%d…" % (host, port))
        self.status_var.set("Connecting to %s:%d… (Cancel stops)" % (host, port))
        self.connect_button.configure(text="Cancel", state="normal")
        self.remote.clear("Connecting…")
        self.log_message("Connecting to %s:%d" % (host, port))
        self.remote_worker.request_connect(host, port)

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
        self.connected = True
        self.connecting = False
        self.address = (message.host, message.port)
        self.settings.remember_server(message.host, message.port)
        self.host_box.configure(values=self.settings.recent)
        self.state_var.set("Connected to %s:%d" % self.address)
        self.connect_button.configure(text="Disconnect", state="normal")
        self.log_message("Connected to %s:%d" % self.address, "ok")
        self.status_var.set("Connected to %s:%d" % self.address)
        if self.transfers.resume_server(self.address):
            self.log_message("Resuming the transfers to %s:%d" % self.address)
        self._update_actions()
        self.settings_changed()

    def _listed(self, message: Listed) -> None:
        if not self.connected:
            return
        started = time.monotonic()
        self.remote.show_entries(message.entries)
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
        self.state_var.set(text)
        self.connect_button.configure(text="Connect", state="normal")
        self.remote.clear("Not connected")
        if text == "Disconnected":
            self.log_message("Disconnected")
            self.status_var.set("Disconnected")
        self._update_actions()
