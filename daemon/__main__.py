"""Entry point of shelfd: parse, check, listen, maybe detach, serve, stop.

Master process. Every expected failure becomes one line on stderr and a
non-zero exit; the launcher of ``--daemon`` exits only once the daemon
reports that it serves (or why it could not).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from dataclasses import fields, replace

from common.protocol import ShelfError
from daemon import accounts, service
from daemon.grant import Library
from daemon.store import Store
from daemon.pidfile import PidFile
from daemon.server import Server, open_listener
from daemon.session import ShelfHandler

log = logging.getLogger("shelfd")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["user"]:
        from daemon import usercmd
        return usercmd.main(argv[1:])
    args = service.build_parser().parse_args(argv)
    absolute_paths(args)
    try:
        if args.check_config:
            return check_config(args)
        return run(args, argv)
    except ShelfError as exc:
        sys.stderr.write("shelfd: %s\n" % exc)
        return 1
    except KeyboardInterrupt:
        return 130


def absolute_paths(args) -> None:
    """Paths mean what they meant where the command was typed, also after detaching."""
    for name in ("root", "pidfile", "log_file", "config", "users", "tls_cert", "tls_key",
                 "state_dir"):
        value = getattr(args, name, None)
        if value:
            setattr(args, name, os.path.abspath(value))


def check_config(args) -> int:
    """--check-config: everything a start would check short of taking the port."""
    settings = service.merge_settings(args)
    service.check_paths(settings)
    if settings.log_file:
        service.open_log_handler(settings).close()
    if settings.users:
        accounts.load(settings.users)  # systemd's ExecReload runs this first: a broken
                                       # users file fails the reload, and the old stay
    if settings.tls and settings.tls_cert:
        from daemon.tls import load_context
        load_context(settings.tls_cert, settings.tls_key)
    print("config ok: would serve %s on %s:%d%s" % (
        settings.root, settings.host, settings.port, " read-only" if settings.read_only else ""))
    return 0


def run(args, argv: list[str]) -> int:
    settings = service.merge_settings(args)
    service.configure_logging(settings)
    if settings.daemon and not args.detached_fds and not settings.log_file:
        service.open_syslog().close()  # refuse now, while the user still sees stderr
    library = Library(Store(settings.root, durable=not settings.no_fsync))
    library.configure(settings)
    if settings.users:
        library.accounts = accounts.load(settings.users)  # a broken file: one line, exit 1
        library.login_failures = accounts.FailureTable()  # before the first fork
    if settings.no_fsync:
        log.warning("--no-fsync: stored files are not flushed to disk (benchmarks only)")
    pidfile = PidFile(settings.pidfile) if settings.pidfile else None
    # The handler reads the settings in effect: a reload replaces server.settings.
    handler = ShelfHandler(library, lambda: server.settings)
    if settings.tls:  # ssl only in a --tls master; the certificate before the port
        from daemon.tls import TlsHandler
        handler = TlsHandler(handler, lambda: server.settings)
        handler.load_certificate(settings)
    status_fd = None
    if args.detached_fds:  # we are the re-executed half of a frozen --daemon
        listen_fd, status_fd = (int(fd) for fd in args.detached_fds.split(","))
        listener = socket.socket(fileno=listen_fd)
        listener.set_inheritable(False)
        os.chdir("/")
        os.umask(0o022)
    else:
        if pidfile:
            pidfile.check()  # the usual "already running", before taking the port
        listener = listen(settings)
        if settings.daemon:
            if getattr(sys, "frozen", False):
                service.detach_reexec(argv, listener)
            status_fd = service.detach_classic()
    if settings.daemon or args.detached_fds:
        service.configure_logging(settings, to_stderr=False)

    ftp = {"pid": None, "address": None}
    if settings.ftp_port is not None:  # an FTP master of its own: pyftpdlib stays out of ours
        from daemon import ftp as ftp_front
        ftp_listener = listen(replace(settings, port=settings.ftp_port))
        ftp["address"] = ftp_listener.getsockname()[:2]
        ftp["pid"] = ftp_front.start_master(settings, library, ftp_listener, [listener])
        ftp_listener.close()

    def stop_ftp():
        if ftp["pid"] is not None:
            try:
                os.kill(ftp["pid"], signal.SIGTERM)  # reaped with the sessions
            except ProcessLookupError:
                pass

    server = Server([(listener, handler)], settings)
    state = {"settings": settings}

    def on_ready():
        try:
            if pidfile:  # the lock decides who runs, once each one listens
                pidfile.write()
                server.master_fds.append(pidfile.fd)
        except ShelfError as exc:
            service.report_to_launcher(status_fd, str(exc))
            raise
        host, port = listener.getsockname()[:2]
        if settings.tls:
            log.info("tls certificate %s", handler.fingerprint)
        log.info("listening on %s:%d%s", host, port, " (tls)" if settings.tls else "")
        if ftp["address"] is not None:
            log.info("ftp listening on %s:%d", *ftp["address"])
        log.info("serving %s%s (max %d sessions, %d per address, idle timeout %g s)",
                 settings.root, " read-only" if settings.read_only else "",
                 settings.max_clients, settings.max_per_ip, settings.idle_timeout)
        if library.accounts is not None:
            log.info("accounts: %d users from %s", len(library.accounts), settings.users)
            warn_about_users_file(settings.users)
        warn_about_exposure(settings, library)
        # No MAINPID=: under a one-file executable the bootloader is the main
        # process systemd started, and it forwards signals to us.
        service.sd_notify("READY=1\nSTATUS=listening on %s:%d" % (host, port))
        service.report_to_launcher(status_fd, "ok")

    def on_reload():
        service.sd_notify("RELOADING=1")
        try:
            state["settings"] = reload(args, state["settings"], server, library)
            if settings.tls:
                handler.reload_certificate(state["settings"])
        finally:
            service.sd_notify("READY=1")

    def cleanup():  # in a child of its own (see Server._start_cleanup)
        current = state["settings"]
        store = library.store
        store.remove_temporaries()  # an older shelfd's; the expiries take the orphans
        trashed = store.expire_trash(current.trash_days * 86400)
        kept = store.expire_uploads(current.keep_uploads_hours * 3600)
        if trashed or kept:
            log.info("clean-up: removed %d files from the trash (older than %g days) and "
                     "%d broken uploads (older than %g hours)", trashed, current.trash_days,
                     kept, current.keep_uploads_hours)

    server.cleanup = cleanup
    server.on_ready = on_ready
    server.on_reload = on_reload
    server.on_stopping = lambda: (stop_ftp(), service.sd_notify("STOPPING=1"))
    try:
        server.serve_forever()
    finally:
        if pidfile:
            pidfile.remove()
    log.info("exit")
    return 0


def listen(settings) -> socket.socket:
    try:
        return open_listener(settings.host, settings.port, settings.backlog)
    except socket.gaierror as exc:
        raise ShelfError("cannot listen on %s: %s" % (settings.host, exc.strerror)) from None
    except OSError as exc:
        raise ShelfError("cannot listen on %s:%d: %s"
                         % (settings.host, settings.port, (exc.strerror or str(exc)).lower())) from None


def warn_about_users_file(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if mode & 0o077:
        log.warning("users file %s can be read by others (mode %o): chmod 600 it",
                    path, mode & 0o777)


def reload_accounts(settings, library: Library) -> None:
    """SIGHUP: the users file again; a file that does not parse leaves the old accounts."""
    if not settings.users or library.accounts is None:
        return
    try:
        library.accounts = accounts.load(settings.users)
    except ShelfError as exc:
        log.error("reload: %s; the %d accounts read before stay", exc, len(library.accounts))
        return
    log.info("reload: %d accounts from %s", len(library.accounts), settings.users)
    warn_about_users_file(settings.users)


def warn_about_exposure(settings, library: Library) -> None:
    if settings.anonymous == "" and not settings.users:
        log.warning("--anonymous none and no accounts: every request but LOGIN, NOOP and "
                    "QUIT is refused")
    if os.geteuid() == 0:
        log.warning("running as root: a dedicated user is safer (see packaging/systemd)")
    anonymous = library.anonymous
    if settings.host in ("0.0.0.0", "::", "") and anonymous is not None \
            and set(anonymous.permissions) & set("wdm"):
        log.warning("listening on all addresses with uploads open: anyone who can reach "
                    "this port can change %s (anonymous grant %s)", settings.root,
                    anonymous.word())


def reload(args, current, server: Server, library: Library):
    """SIGHUP: reopen the log, re-read the config, apply what can change live."""
    try:
        new = service.merge_settings(args)
        if new.log_file != current.log_file or new.log_level != current.log_level:
            service.open_log_handler(new, to_stderr=not current.daemon).close()
    except ShelfError as exc:
        reopen_log(current)
        log.error("reload ignored: %s", exc)
        return current
    changed = [f.name for f in fields(new) if getattr(new, f.name) != getattr(current, f.name)]
    live = {name: getattr(new, name) for name in changed if name in service.LIVE_SETTINGS}
    applied = replace(current, **live)
    server.settings = applied
    library.configure(applied)
    reopen_log(applied)
    reload_accounts(applied, library)
    if server.prefork:
        server.retire_workers()  # their settings are the old ones
    if live:
        log.info("reloaded: log reopened; now in effect: %s",
                 ", ".join("%s = %s" % item for item in sorted(live.items())))
    else:
        log.info("reloaded: log reopened; no setting changed")
    for name in changed:
        if name not in live:
            log.warning("reload: %s changed, takes effect after a restart", name)
    return applied


def reopen_log(settings) -> None:
    """Reopen the log (logrotate moved it); if that fails, keep logging where we were."""
    try:
        service.configure_logging(settings, to_stderr=not settings.daemon)
    except ShelfError as exc:
        log.error("reload: %s; still logging to the file open before", exc)


if __name__ == "__main__":
    sys.exit(main())
