"""shelfd as a service: options and config file, logging, detaching, systemd.

Runs in the master process before and around ``Server.serve_forever``.
Everything that can fail because of the user's input (options, config file,
root, PID file, port) fails here, before detaching, with one line on stderr
and a non-zero exit; nothing here ever shows a traceback.
"""

from __future__ import annotations

import argparse
import configparser
import logging
import math
import os
import socket
import stat
import sys
import time
from dataclasses import dataclass, fields, replace

from common import __version__
from common.protocol import DEFAULT_HOST, DEFAULT_PORT, ShelfError
from daemon.sessionlog import session_log

log = logging.getLogger("shelfd")

SYSLOG_SOCKET = "/dev/log"
LONGEST_WAIT = 365 * 24 * 3600.0  # seconds: a timeout past a year is a typo
LOG_LEVELS = ("debug", "info", "warning", "error")
# Settings a SIGHUP can change for every session that starts afterwards.
LIVE_SETTINGS = {"max_clients", "max_per_ip", "idle_timeout", "max_upload", "read_only",
                 "log_level", "log_file", "grace", "trash_days", "keep_uploads_hours",
                 "anonymous", "proxy_protocol",
                 "tls_cert", "tls_key"}  # (--tls: the certificate is re-read at SIGHUP)


class ConfigError(ShelfError):
    pass


@dataclass(frozen=True)
class Settings:
    root: str | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    daemon: bool = False
    pidfile: str | None = None
    max_clients: int = 64
    max_per_ip: int | None = None  # None: a quarter of max_clients (see merge_settings)
    backlog: int = 1024     # connections the kernel queues before the master accepts
    idle_timeout: float = 300.0
    max_upload: int | None = None
    read_only: bool = False
    log_file: str | None = None
    log_level: str = "info"
    grace: float = 10.0
    prefork: int = 4        # ready session processes kept (0: a fresh fork per session)
    no_fsync: bool = False  # benchmarks only: shows what the durability promise costs
    anonymous: str | None = None  # permission letters; None: "rw" without accounts, none with
    users: str | None = None        # the accounts file (shelfd user add ...)
    tls: bool = False               # the listener speaks TLS from the first byte
    tls_cert: str | None = None     # PEM certificate chain (else a self-signed one)
    tls_key: str | None = None      # its PEM private key
    state_dir: str | None = None    # where shelfd keeps its own state (the self-signed cert)
    proxy_protocol: str | None = None  # addresses allowed to send a PROXY v2 header
    trash_days: float = 30.0        # how long deleted files stay restorable (0: no trash)
    keep_uploads_hours: float = 24.0  # how long a broken upload's bytes wait for RESUME
    ftp_port: int | None = None     # the FTP front (daemon/ftp.py) listens here; None: off
    ftp_passive_ports: tuple | None = None  # (low, high) for PASV/EPSV; None: any port


def parse_size(text: str) -> int:
    """Bytes from '1048576', '500M', '4G', '2TiB'."""
    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    factor = units.get(value[-1:], 1)
    number = value[:-1] if value[-1:] in units else value
    try:
        amount = float(number)
    except ValueError:
        amount = math.nan
    if not math.isfinite(amount):
        raise ValueError("%r is not a size (examples: 1048576, 500M, 4G)" % text)
    result = int(amount * factor)
    if result < 0:
        raise ValueError("a size cannot be negative")
    return result


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off"):
        return False
    raise ValueError("%r is not yes or no" % text)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("cannot be negative")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be between 0 and 65535")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be more than 0")
    if not value <= LONGEST_WAIT:
        raise ValueError("must be a number of seconds up to %d (a year)" % LONGEST_WAIT)
    return value


def _retention(longest: float):
    """A retention time in days or hours: 0 (off) up to a limit (a typo guard)."""
    def convert(text: str) -> float:
        value = float(text)
        if not 0 <= value <= longest:
            raise ValueError("must be a number from 0 to %g" % longest)
        return value
    return convert


def _permissions(text: str) -> str:
    from daemon.grant import parse_permissions

    return parse_permissions(text)


def _proxies(text: str) -> str:
    from daemon.proxy import parse_trusted

    return parse_trusted(text)


def _passive_ports(text: str) -> tuple:
    from daemon.ftp import parse_passive_ports  # no pyftpdlib in there
    return parse_passive_ports(text)


def _level(text: str) -> str:
    if text.lower() not in LOG_LEVELS:
        raise ValueError("must be one of %s" % ", ".join(LOG_LEVELS))
    return text.lower()


CONVERTERS = {
    "root": str, "host": str, "port": _port, "daemon": parse_bool, "pidfile": str,
    "max_clients": _positive_int, "max_per_ip": _positive_int, "backlog": _positive_int, "idle_timeout": _seconds, "max_upload": parse_size,
    "read_only": parse_bool, "log_file": str, "log_level": _level, "grace": _seconds,
    "no_fsync": parse_bool, "prefork": _count, "anonymous": _permissions,
    "users": str, "tls": parse_bool, "tls_cert": str, "tls_key": str, "state_dir": str,
    "proxy_protocol": _proxies, "ftp_port": _port, "ftp_passive_ports": _passive_ports,
    "trash_days": _retention(36500), "keep_uploads_hours": _retention(24 * 365),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shelfd",
        description="Serve a folder as a Shelf library: a process per session.",
        epilog="Accounts: shelfd user add|passwd|del|list (shelfd user --help). "
               "Signals: TERM/INT stop gracefully, HUP reopens the log and re-reads the "
               "config and the users file. Config file: INI, section [shelfd], keys like the long options "
               "(max_clients = 64); command-line options win.")
    add = parser.add_argument

    def typed(name):
        converter = CONVERTERS[name]

        def convert(text):
            try:
                return converter(text)
            except ValueError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None
        convert.__name__ = name.replace("_", " ")
        return convert

    add("--root", metavar="DIR", help="the library folder (required)")
    add("--host", type=typed("host"), help="address to listen on (default 127.0.0.1)")
    add("--port", type=typed("port"), help="TCP port (default 8021; 0 picks a free one)")
    add("--daemon", action="store_true", default=None, help="detach from the terminal")
    add("--pidfile", metavar="FILE", help="write and lock a PID file")
    add("--max-clients", type=typed("max_clients"), metavar="N",
        help="live sessions before new clients get BUSY (default 64)")
    add("--max-per-ip", type=typed("max_per_ip"), metavar="N",
        help="live sessions from one address before it gets BUSY "
             "(default: a quarter of --max-clients, at least 4)")
    add("--backlog", type=typed("backlog"), metavar="N",
        help="connections the kernel queues while the master is busy (default 1024)")
    add("--idle-timeout", type=typed("idle_timeout"), metavar="SECONDS",
        help="close sessions idle this long (default 300)")
    add("--max-upload", type=typed("max_upload"), metavar="BYTES",
        help="largest accepted upload, e.g. 4G (default: free space)")
    add("--read-only", action="store_true", default=None,
        help="anonymous sessions may only read (the same as --anonymous r)")
    add("--anonymous", type=typed("anonymous"), metavar="PERMS",
        help="what a session may do before any LOGIN: letters r (read), w (add files and "
             "folders), d (delete, replace), m (rename), or none (default rw; none with "
             "--users)")
    add("--proxy-protocol", type=typed("proxy_protocol"), metavar="ADDR[,ADDR...]",
        help="balancers (addresses or networks) whose connections start with a PROXY "
             "protocol v2 header naming the real client; required from them, never "
             "accepted from anyone else")
    add("--ftp-port", type=typed("ftp_port"), metavar="PORT",
        help="also serve FTP on this port (0 picks a free one): the same library and "
             "accounts, anonymous as user 'anonymous' (default: off)")
    add("--ftp-passive-ports", type=typed("ftp_passive_ports"), metavar="LOW-HIGH",
        help="ports for FTP passive data connections (PASV, EPSV); default any free port")
    add("--users", metavar="FILE",
        help="the accounts file (made with 'shelfd user add NAME --users FILE'); LOGIN is "
             "then served and --anonymous defaults to none. Re-read on SIGHUP")
    add("--trash-days", type=typed("trash_days"), metavar="DAYS",
        help="keep deleted files restorable this long (default 30; 0: delete at once)")
    add("--keep-uploads-hours", type=typed("keep_uploads_hours"), metavar="HOURS",
        help="keep the bytes of a broken upload this long for RESUME "
             "(default 24; 0: drop them)")
    add("--log-file", metavar="FILE", help="log here instead of stderr")
    add("--log-level", type=typed("log_level"), metavar="LEVEL",
        help="debug, info, warning or error (default info)")
    add("--grace", type=typed("grace"), metavar="SECONDS",
        help="how long a stop waits for sessions (default 10)")
    add("--prefork", type=typed("prefork"), metavar="N",
        help="keep N session processes ready, each serving one session at a time; the "
             "pool grows with demand and shrinks after 15 s idle (default 4; 0: a fresh "
             "process per session)")
    add("--tls", action="store_true", default=None,
        help="speak TLS (1.2 or newer) on the listener; without --tls-cert/--tls-key a "
             "self-signed certificate is made in --state-dir on first start")
    add("--tls-cert", metavar="FILE", help="PEM certificate (chain) for --tls")
    add("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    add("--state-dir", metavar="DIR",
        help="where shelfd keeps its own state, such as the self-signed certificate "
             "(default: $STATE_DIRECTORY under systemd, /var/lib/shelf as root, else the "
             "user's state folder)")
    add("--config", metavar="FILE", help="INI file with a [shelfd] section")
    add("--check-config", action="store_true",
        help="check the options and config file, print what would be served, and exit "
             "(0 if they are good)")
    add("--version", action="version", version="shelfd %s" % __version__)
    # Benchmarks only: skip the fsyncs that make a stored file durable.
    add("--no-fsync", action="store_true", default=None, help=argparse.SUPPRESS)
    # Used by the re-executed daemon when a frozen executable detaches.
    add("--detached-fds", help=argparse.SUPPRESS)
    return parser


def read_config(path: str) -> dict:
    # "key = value   # why" reads as admins mean it (a "#" needs a space before it)
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as exc:
        raise ConfigError("cannot read config file %s: %s" % (path, exc.strerror)) from None
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ConfigError("config file %s is not valid INI: %s"
                          % (path, str(exc).splitlines()[0])) from None
    if not parser.has_section("shelfd"):
        raise ConfigError("config file %s has no [shelfd] section" % path)
    values = {}
    for key, text in parser.items("shelfd"):
        name = key.replace("-", "_")
        if name not in CONVERTERS:
            raise ConfigError("config file %s: unknown key %r" % (path, key))
        try:
            values[name] = CONVERTERS[name](text)
        except ValueError as exc:
            raise ConfigError("config file %s: %s: %s" % (path, key, exc)) from None
    return values


def default_max_per_ip(max_clients: int) -> int:
    """A quarter of the sessions for one address, but at least 4 (a desktop client's few)."""
    return min(max_clients, max(4, max_clients // 4))


def merge_settings(args: argparse.Namespace) -> Settings:
    """Defaults, then the config file, then the command line."""
    values = read_config(args.config) if args.config else {}
    for item in fields(Settings):
        given = getattr(args, item.name, None)
        if given is not None:
            values[item.name] = given
    settings = Settings(**values)
    if not settings.root:
        raise ConfigError("--root DIR is required (the folder to serve)")
    if settings.max_per_ip is None:
        settings = replace(settings, max_per_ip=default_max_per_ip(settings.max_clients))
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together (a certificate and its key)")
    absolute = {name: os.path.abspath(getattr(settings, name))
                for name in ("root", "pidfile", "log_file", "users", "tls_cert", "tls_key",
                             "state_dir") if getattr(settings, name)}
    return replace(settings, **absolute)


# -- logging -----------------------------------------------------------------

PRIORITIES = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}
ESCAPES = {code: "\\x%02x" % code for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
ESCAPES.update({0x2028: "\\u2028", 0x2029: "\\u2029"})


def render_line(style: str, levelname: str, message: str, created: float, pid: int) -> str:
    """One log line in one of our styles; control characters a client sent are escaped.

    ``file``: our own time stamp and pid; ``journal``: the journal's ``<N>``
    priority prefix (it adds time and pid itself); ``syslog``: syslog's tag.
    """
    message = message.translate(ESCAPES)
    if style == "journal":
        return "<%d>%s %s" % (PRIORITIES.get(levelname, 6), levelname, message)
    if style == "syslog":
        return "shelfd[%d]: %s %s" % (pid, levelname, message)
    return "%s shelfd[%d] %s %s" % (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created)),
                                    pid, levelname, message)


class LineFormatter(logging.Formatter):
    """``render_line`` for logging's records (a traceback keeps its own lines)."""

    def __init__(self, style: str):
        super().__init__()
        self.style = style

    def format(self, record: logging.LogRecord) -> str:
        text = render_line(self.style, record.levelname, record.getMessage(), record.created,
                           record.process)
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def stderr_is_journal() -> bool:
    """True when systemd connected our stderr to the journal (JOURNAL_STREAM)."""
    try:
        device, inode = (int(part) for part in os.environ["JOURNAL_STREAM"].split(":"))
        st = os.fstat(2)
    except (KeyError, ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def open_log_handler(settings: Settings, to_stderr: bool = True) -> logging.Handler:
    """The handler the settings ask for; ConfigError if the log file cannot be opened."""
    if settings.log_file:
        path = settings.log_file
        if os.path.isdir(path):
            raise ConfigError("cannot open log file %s: it is a folder" % path)
        try:
            handler = logging.FileHandler(path, encoding="utf-8")
        except OSError as exc:
            raise ConfigError("cannot open log file %s: %s"
                              % (path, (exc.strerror or str(exc)).lower())) from None
        return _formatted(handler, "file")
    if to_stderr:
        handler = logging.StreamHandler(sys.stderr)
        return _formatted(handler, "journal" if stderr_is_journal() else "file")
    return open_syslog()


def open_syslog() -> logging.Handler:
    """--daemon without --log-file logs to syslog, as classic daemons do."""
    import logging.handlers
    handler = logging.handlers.SysLogHandler(
        address=SYSLOG_SOCKET, facility=logging.handlers.SysLogHandler.LOG_DAEMON)
    if handler.socket.fileno() < 0:  # it does not raise when nothing listens there
        handler.close()
        raise ConfigError("--daemon needs --log-file FILE: there is no syslog at %s "
                          "to send the log to" % SYSLOG_SOCKET)
    return _formatted(handler, "syslog")


def _formatted(handler: logging.Handler, style: str) -> logging.Handler:
    handler.setFormatter(LineFormatter(style))
    return handler


# No caller lookup (sys._getframe), thread or multiprocessing names per record:
# our format uses none of them, and in a forked child each costs copied pages.
logging._srcfile = None
logging.logThreads = False
logging.logMultiprocessing = False


def configure_logging(settings: Settings, to_stderr: bool = True) -> None:
    """(Re)build the shelfd logger's handler; also how SIGHUP reopens the file.

    The new handler is opened before the old one is closed, so a log file
    that cannot be opened (its folder removed) raises ConfigError and
    leaves the logging as it was.
    """
    handler = open_log_handler(settings, to_stderr)
    for old in list(log.handlers):
        log.removeHandler(old)
        old.close()
    log.addHandler(handler)
    log.setLevel(settings.log_level.upper())
    log.propagate = False
    # Session processes write the same lines straight to the same descriptor.
    direct = isinstance(handler, logging.StreamHandler) and hasattr(handler.stream, "fileno")
    session_log.direct(handler.stream.fileno() if direct else None,
                       lambda *line: render_line(handler.formatter.style, *line), log.level)


def check_paths(settings: Settings) -> None:
    """What --check-config checks beyond parsing: the root, the log and PID file folders."""
    root = settings.root
    try:
        st = os.stat(root)
    except OSError as exc:
        raise ConfigError("library root %s: %s" % (root, (exc.strerror or "").lower())) from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError("library root %s is not a folder" % root)
    for what, path in (("log file", settings.log_file), ("PID file", settings.pidfile)):
        if not path:
            continue
        folder = os.path.dirname(path)
        if os.path.isdir(path):
            raise ConfigError("%s %s is a folder" % (what, path))
        if not os.path.isdir(folder):
            raise ConfigError("%s %s: no such folder %s" % (what, path, folder))


# -- systemd -----------------------------------------------------------------

def sd_notify(message: str) -> bool:
    """Tell systemd (Type=notify) about our state; False when not under it."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(path)
            sock.sendall(message.encode("utf-8"))
    except OSError as exc:
        log.warning("cannot notify systemd: %s", exc.strerror or exc)
        return False
    return True


# -- detaching ---------------------------------------------------------------

def detach_classic() -> int:
    """fork, setsid, fork, chdir /, umask, stdio to /dev/null (PEP 3143's order).

    Returns, in the daemon, the write end of a status pipe; the launching
    process stays until the daemon reports ``ok`` on it (or an error, which
    it prints) so its exit status tells the truth about the start.
    """
    read_end, write_end = os.pipe()
    if os.fork() > 0:
        os.close(write_end)
        os._exit(wait_for_daemon(read_end))
    os.close(read_end)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    _finish_detach()
    return write_end


def _finish_detach() -> None:
    os.chdir("/")
    os.umask(0o022)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)


def detach_reexec(argv: list[str], listener: socket.socket) -> None:
    """Detach a frozen (PyInstaller one-file) shelfd by starting itself anew.

    A double fork would break it: the bootloader deletes the unpacked files
    when the middle process exits. The new process gets the already bound
    listener and the status pipe as inherited descriptors; it starts in our
    folder (relative paths keep their meaning) and moves to / itself.
    """
    import subprocess  # only this rare path needs it; the master stays small

    read_end, write_end = os.pipe()
    passed = [listener.fileno(), write_end]
    args = [a for a in argv if a != "--daemon"] + ["--detached-fds",
                                                     ",".join(map(str, passed))]
    env = dict(os.environ, PYINSTALLER_RESET_ENVIRONMENT="1")
    subprocess.Popen([sys.executable] + args, pass_fds=passed,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    os.close(write_end)
    sys.exit(wait_for_daemon(read_end))


def wait_for_daemon(read_end: int) -> int:
    """In the launcher: relay the daemon's start report; 0 if it is serving."""
    # Read one line, not to EOF: a one-file executable's bootloader process keeps
    # an inherited copy of the write end open for as long as the daemon runs.
    report = b""
    while not report.endswith(b"\n"):
        data = os.read(read_end, 4096)
        if not data:
            break
        report += data
    os.close(read_end)
    report = report.decode("utf-8", "replace").strip()
    if report.startswith("ok"):
        return 0
    sys.stderr.write("shelfd: %s\n" % (report or "the daemon exited during start-up"))
    return 1


def report_to_launcher(fd: int | None, message: str) -> None:
    if fd is None:
        return
    try:
        os.write(fd, message.replace("\n", " ").encode("utf-8") + b"\n")
        os.close(fd)
    except OSError:
        pass
