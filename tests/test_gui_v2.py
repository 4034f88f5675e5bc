"""The desktop client with protocol 2: library folders, logins and TLS trust.

Real programs, as in test_gui.py: a real shelfd subprocess (with ``--users``,
with ``--tls --state-dir``), a real Tk window under Xvfb, real dialogs whose
buttons are ``invoke()``d, keys delivered with ``event_generate`` to the focused
widget. known_servers is the one shelf-cli uses (``XDG_CONFIG_HOME``).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from helpers import ROOT, python_env
from test_gui import home, make_app, press, pump, tk_process_state, wait_transfers_done  # noqa: F401

pytestmark = pytest.mark.gui


@pytest.fixture(autouse=True)
def config_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config"


def known_servers(config_home) -> str:
    path = config_home / "shelf" / "known_servers"
    return path.read_text() if path.exists() else ""


def add_user(users, name: str, password: str, permissions: str = "rwdm", root: str = "/"):
    """The real ``shelfd user add``, the password on stdin (as test_accounts.py does)."""
    done = subprocess.run([sys.executable, "-m", "daemon", "user", "add", name, "--permissions",
                           permissions, "--root", root, "--users", str(users)],
                          input=password.encode() + b"\n", capture_output=True,
                          env=python_env(), cwd=str(ROOT), timeout=60)
    assert done.returncode == 0, done.stderr.decode()


def fingerprint_of(daemon) -> str:
    return re.search(r"tls certificate (sha256:[0-9a-f]{64})", daemon.log()).group(1)


def listed(app, folder: str):
    return pump(app, lambda: app.connected and app.remote.folder == folder and
                app.status_var.get().startswith("Library:"), what="the listing of %r" % folder)


def dialog_words(dialog) -> str:
    """Every label's text in a dialog, as a person reads it."""
    words, widgets = [], [dialog]
    while widgets:
        widget = widgets.pop(0)
        if widget.winfo_class() == "TLabel":
            words.append(str(widget.cget("text")))
        widgets.extend(widget.winfo_children())
    return " ".join(words)


def open_row(app, name: str, key: str = "<Return>") -> None:
    app.remote.select([name])
    app.status_var.set("")
    press(app, app.remote.tree, key)


def test_folders_open_go_up_and_show_breadcrumbs(make_app, shelfd, library, home):
    (library / "photos" / "2024").mkdir(parents=True)
    (library / "photos" / "2024" / "beach.jpg").write_bytes(b"sand" * 1000)
    (library / "photos" / "cat.jpg").write_bytes(b"meow")
    (library / "top.txt").write_text("top")
    app = make_app()
    app.local.open_folder(home)
    app.connect("127.0.0.1", shelfd.port)
    listed(app, "")
    assert app.remote.displayed_names() == ["photos", "top.txt"]
    assert app.remote.crumb_labels() == ["127.0.0.1"]

    open_row(app, "photos")                       # Enter opens a folder
    listed(app, "photos")
    assert app.remote.displayed_names() == ["2024", "cat.jpg"]
    assert app.remote.crumb_labels() == ["127.0.0.1", "photos"]

    app.remote.select(["2024"])                   # a double-click opens it too
    app.remote.tree.update()
    box = app.remote.tree.bbox("2024")
    app.status_var.set("")
    for event in ("<ButtonPress-1>", "<ButtonRelease-1>") * 2:  # two clicks: Tk's double
        app.remote.tree.event_generate(event, x=box[0] + 20, y=box[1] + box[3] // 2)
    listed(app, "photos/2024")
    assert app.remote.displayed_names() == ["beach.jpg"]
    assert app.remote.crumb_labels() == ["127.0.0.1", "photos", "2024"]

    app.status_var.set("")
    press(app, app.remote.tree, "<BackSpace>")    # up, with the folder left selected
    listed(app, "photos")
    assert [row.name for row in app.remote.selected_rows()] == ["2024"]

    (library / "photos" / "dog.jpg").write_bytes(b"woof")
    app.status_var.set("")
    press(app, app.remote.tree, "<F5>")           # F5 lists the folder shown again
    pump(app, lambda: "dog.jpg" in app.remote.displayed_names(), what="the refreshed listing")
    assert app.remote.folder == "photos"

    app.status_var.set("")
    press(app, app.remote.tree, "<Alt-Up>")
    listed(app, "")
    assert [row.name for row in app.remote.selected_rows()] == ["photos"]

    open_row(app, "photos")
    listed(app, "photos")
    app.status_var.set("")
    app.remote.crumbs[0].invoke()                 # the root breadcrumb
    listed(app, "")

    # A folder row is still not transferable: the clear message, nothing queued.
    app.remote.select(["photos"])
    app.download_selected()
    assert "is a folder" in app.status_var.get()
    assert not app.transfers.transfers


def test_uploads_go_into_the_folder_shown_and_downloads_come_from_it(make_app, shelfd, library,
                                                                     home, tmp_path):
    (library / "docs").mkdir()
    (library / "docs" / "report.txt").write_bytes(b"quarterly\n" * 5000)
    (library / "report.txt").write_text("the root one, not this")
    source = tmp_path / "home" / "notes.txt"
    source.write_bytes(b"notes\n" * 3000)
    app = make_app()
    app.local.open_folder(home)
    app.connect("127.0.0.1", shelfd.port)
    listed(app, "")
    open_row(app, "docs")
    listed(app, "docs")

    app.local.select(["notes.txt"])
    app.upload_selected()
    jobs = wait_transfers_done(app, 1)
    assert [job.state.value for job in jobs] == ["done"], [job.error for job in jobs]
    assert (library / "docs" / "notes.txt").read_bytes() == source.read_bytes()
    assert not (library / "notes.txt").exists()
    pump(app, lambda: "notes.txt" in app.remote.displayed_names(), what="the relisted folder")
    assert app.remote.folder == "docs"

    # The conflict check looks at the folder shown: notes.txt is there now.
    app.local.select(["notes.txt"])
    app.upload_selected()
    pump(app, lambda: app.active_dialog is not None, what="the conflict dialog")
    assert "“notes.txt” is already in docs." in dialog_words(app.active_dialog)
    app.active_dialog.buttons["skip"].invoke()

    app.remote.select(["report.txt"])
    app.download_selected()
    jobs = wait_transfers_done(app, 2)
    assert all(job.state.value == "done" for job in jobs), [job.error for job in jobs]
    assert (tmp_path / "home" / "report.txt").read_bytes() == b"quarterly\n" * 5000


@pytest.fixture
def users(tmp_path):
    path = tmp_path / "users"
    add_user(path, "alice", "correct horse")
    return path


def test_login_through_the_dialog_a_wrong_password_shown_in_it(make_app, daemon_factory, library,
                                                               users, home, tmp_path):
    (library / "shared.txt").write_text("for alice")
    daemon = daemon_factory(library, "--users", str(users))
    app = make_app()
    app.local.open_folder(home)
    app.connect("127.0.0.1", daemon.port)
    from gui.dialogs import LoginDialog
    dialog = pump(app, lambda: isinstance(app.active_dialog, LoginDialog) and app.active_dialog,
                  what="the login dialog")
    assert not app.connected

    dialog.user_var.set("alice")
    dialog.password_var.set("wrong horse")
    dialog.buttons["login"].invoke()
    # The server takes a second to refuse: the window keeps answering meanwhile.
    longest, last = 0.0, time.monotonic()

    def refused():
        nonlocal longest, last
        now = time.monotonic()
        longest, last = max(longest, now - last), now
        text = dialog.error_var.get()
        return text and text != "Logging in…"
    pump(app, refused, what="the refusal in the dialog")
    assert "wrong user or password" in dialog.error_var.get()
    assert longest < 0.5, "the window froze for %.2f s during the LOGIN" % longest
    assert dialog.winfo_exists() and app.active_dialog is dialog and not app.connected
    assert dialog.password_var.get() == ""

    dialog.password_var.set("correct horse")
    press(app, dialog.password_entry, "<Return>")
    pump(app, lambda: app.connected and app.status_var.get().startswith("Library:"),
         what="logged in and listed")
    assert app.active_dialog is None
    assert app.state_var.get() == "Connected to 127.0.0.1:%d as alice" % daemon.port
    assert app.remote.displayed_names() == ["shared.txt"]

    # Transfer workers open their own sessions, logged in as alice too.
    (tmp_path / "home" / "mine.txt").write_bytes(b"alice's\n" * 100)
    app.local.refresh()
    app.local.select(["mine.txt"])
    app.upload_selected()
    jobs = wait_transfers_done(app, 1)
    assert jobs[0].state.value == "done", jobs[0].error
    assert (library / "mine.txt").read_bytes() == b"alice's\n" * 100


def test_a_url_with_a_user_asks_for_the_password(make_app, daemon_factory, library, users):
    daemon = daemon_factory(library, "--users", str(users), "--anonymous", "r")
    app = make_app()
    app.host_var.set("shelf://alice@127.0.0.1:%d" % daemon.port)
    app.connect_button.invoke()
    from gui.dialogs import LoginDialog
    dialog = pump(app, lambda: isinstance(app.active_dialog, LoginDialog) and app.active_dialog,
                  what="the login dialog")
    assert dialog.user_var.get() == "alice"
    dialog.password_var.set("correct horse")
    dialog.buttons["login"].invoke()
    pump(app, lambda: app.connected, what="logged in")
    assert app.state_var.get().endswith("as alice")
    assert app.security_var.get() == "Not encrypted"


@pytest.fixture
def tls_shelfd(daemon_factory, library, tmp_path):
    return daemon_factory(library, "--tls", "--state-dir", str(tmp_path / "state"))


def test_accept_a_fingerprint_then_refuse_a_changed_one(make_app, daemon_factory, tls_shelfd,
                                                       library, home, tmp_path, config_home):
    fingerprint = fingerprint_of(tls_shelfd)
    app = make_app()
    app.local.open_folder(home)
    app.host_var.set("shelfs://127.0.0.1:%d" % tls_shelfd.port)
    app.connect_button.invoke()
    dialog = pump(app, lambda: app.active_dialog is not None and
                  app.active_dialog.title() == "Trust this server?" and app.active_dialog,
                  what="the trust dialog")
    assert dialog.text_var.get() == fingerprint
    assert known_servers(config_home) == ""
    dialog.buttons[True].invoke()
    pump(app, lambda: app.connected and app.status_var.get().startswith("Library:"),
         what="connected over TLS")
    assert app.security_var.get() == "🔒 TLS"
    assert known_servers(config_home) == "127.0.0.1:%d %s\n" % (tls_shelfd.port, fingerprint)

    # The transfer workers trust what the person accepted (no second question).
    (tmp_path / "home" / "secret.txt").write_bytes(b"over tls\n" * 1000)
    app.local.refresh()
    app.local.select(["secret.txt"])
    app.upload_selected()
    jobs = wait_transfers_done(app, 1)
    assert jobs[0].state.value == "done", jobs[0].error
    assert (library / "secret.txt").read_bytes() == b"over tls\n" * 1000

    app.disconnect()
    pump(app, lambda: not app.connected, what="disconnected")
    assert app.security_var.get() == ""
    port = tls_shelfd.port
    tls_shelfd.stop()
    for name in ("tls-cert.pem", "tls-key.pem"):
        (tmp_path / "state" / name).unlink()  # the next start makes a new certificate
    again = daemon_factory(library, "--tls", "--state-dir", str(tmp_path / "state"), port=port)
    app.connect_button.invoke()
    warning = pump(app, lambda: app.active_dialog is not None and
                   app.active_dialog.title() == "Certificate changed" and app.active_dialog,
                   what="the changed-certificate warning")
    pump(app, lambda: not app.connecting, what="the refusal")
    assert not app.connected
    words = dialog_words(warning)
    assert "intercepting" in words and fingerprint in words and fingerprint_of(again) in words
    assert known_servers(config_home) == "127.0.0.1:%d %s\n" % (port, fingerprint)
    warning.buttons["ok"].invoke()
    assert app.active_dialog is None


def test_refusing_a_fingerprint_connects_nowhere_and_remembers_nothing(make_app, tls_shelfd,
                                                                       config_home):
    app = make_app()
    app.connect("127.0.0.1", tls_shelfd.port, tls=True)
    dialog = pump(app, lambda: app.active_dialog is not None and app.active_dialog,
                  what="the trust dialog")
    dialog.buttons[False].invoke()
    pump(app, lambda: not app.connecting, what="the refusal")
    assert not app.connected and "not accepted" in app.status_var.get()
    assert known_servers(config_home) == ""


def test_the_command_line_names_a_server_as_a_url(shelfd, tmp_path):
    """``shelf --server shelf://HOST:PORT`` connects at start (INTERFACE.md)."""
    import os
    import signal
    from helpers import wait_for
    env = dict(python_env(), HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"),
               XDG_STATE_HOME=str(tmp_path / "state"))
    bad = subprocess.run([sys.executable, "-m", "gui", "--server", "ftp://x"], env=env,
                         capture_output=True, text=True, timeout=60, cwd=str(ROOT))
    assert bad.returncode == 2 and "shelf://HOST[:PORT]" in bad.stderr
    both = subprocess.run([sys.executable, "-m", "gui", "--server", "shelf://x", "--host", "y"],
                          env=env, capture_output=True, text=True, timeout=60, cwd=str(ROOT))
    assert both.returncode == 2 and "not both" in both.stderr
    before = shelfd.log().count("session started")
    gui = subprocess.Popen([sys.executable, "-m", "gui", "--server",
                            "shelf://127.0.0.1:%d" % shelfd.port], env=env, cwd=str(ROOT),
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: shelfd.log().count("session started") > before, timeout=30,
                 what="the window to connect")
        wait_for(lambda: " LIST " in shelfd.log(), timeout=30, what="the window's listing")
    finally:
        gui.send_signal(signal.SIGINT)  # closes the quiet way
        try:
            gui.wait(20)
        except subprocess.TimeoutExpired:
            os.kill(gui.pid, signal.SIGKILL)
            gui.wait(10)
