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
import os
import socket
import sys
from dataclasses import dataclass, fields, replace

from common import __version__
from common.protocol import DEFAULT_HOST, DEFAULT_PORT, ShelfError

log = logging.getLogger("shelfd")

LOG_FORMAT = "%(asctime)s shelfd[%(process)d] %(levelname)s %(message)s"
LOG_LEVELS = ("debug", "info", "warning", "error")
# Settings a SIGHUP can change for every session that starts afterwards.
LIVE_SETTINGS = {"max_clients", "idle_timeout", "max_upload", "read_only", "log_level",
                 "log_file", "grace"}


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
    idle_timeout: float = 300.0
    max_upload: int | None = None
    read_only: bool = False
    log_file: str | None = None
    log_level: str = "info"
    grace: float = 10.0
    prefork: int = 0        # idle session processes kept ready (0: fork per session)
    no_fsync: bool = False  # benchmarks only: shows what the durability promise costs


def parse_size(text: str) -> int:
    """Bytes from '1048576', '500M', '4G', '2TiB'."""
    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    factor = units.get(value[-1:], 1)
    number = value[:-1] if value[-1:] in units else value
    try:
        result = int(float(number) * factor)
    except ValueError:
        raise ValueError("%r is not a size (examples: 1048576, 500M, 4G)" % text) from None
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
    return value


def _level(text: str) -> str:
    if text.lower() not in LOG_LEVELS:
        raise ValueError("must be one of %s" % ", ".join(LOG_LEVELS))
    return text.lower()


CONVERTERS = {
    "root": str, "host": str, "port": _port, "daemon": parse_bool, "pidfile": str,
    "max_clients": _positive_int, "idle_timeout": _seconds, "max_upload": parse_size,
    "read_only": parse_bool, "log_file": str, "log_level": _level, "grace": _seconds,
    "no_fsync": parse_bool, "prefork": _count,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shelfd",
        description="Serve a folder as a Shelf library: a process per session.",
        epilog="Signals: TERM/INT stop gracefully, HUP reopens the log and re-reads the "
               "config. Config file: INI, section [shelfd], keys like the long options "
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
    add("--idle-timeout", type=typed("idle_timeout"), metavar="SECONDS",
        help="close sessions idle this long (default 300)")
    add("--max-upload", type=typed("max_upload"), metavar="BYTES",
        help="largest accepted upload, e.g. 4G (default: free space)")
    add("--read-only", action="store_true", default=None, help="refuse every upload")
    add("--log-file", metavar="FILE", help="log here instead of stderr")
    add("--log-level", type=typed("log_level"), metavar="LEVEL",
        help="debug, info, warning or error (default info)")
    add("--grace", type=typed("grace"), metavar="SECONDS",
        help="how long a stop waits for sessions (default 10)")
    add("--prefork", type=typed("prefork"), metavar="N",
        help="keep N session processes ready, each serving sessions one after another "
             "(default 0: a fresh process per session)")
    add("--config", metavar="FILE", help="INI file with a [shelfd] section")
    add("--version", action="version", version="shelfd %s" % __version__)
    # Benchmarks only: skip the fsyncs that make a stored file durable.
    add("--no-fsync", action="store_true", default=None, help=argparse.SUPPRESS)
    # Used by the re-executed daemon when a frozen executable detaches.
    add("--detached-fds", help=argparse.SUPPRESS)
    return parser


def read_config(path: str) -> dict:
    parser = configparser.ConfigParser(interpolation=None)
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
    absolute = {name: os.path.abspath(getattr(settings, name))
                for name in ("root", "pidfile", "log_file") if getattr(settings, name)}
    return replace(settings, **absolute)


# -- logging -----------------------------------------------------------------

def configure_logging(settings: Settings, to_stderr: bool = True) -> None:
    """(Re)build the shelfd logger's handler; also how SIGHUP reopens the file."""
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    if settings.log_file:
        handler = logging.FileHandler(settings.log_file, encoding="utf-8")
    elif to_stderr:
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT, "%Y-%m-%d %H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(settings.log_level.upper())
    log.propagate = False


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
    listener and the status pipe as inherited descriptors.
    """
    import subprocess  # only this rare path needs it; the master stays small

    read_end, write_end = os.pipe()
    fds = "%d,%d" % (listener.fileno(), write_end)
    args = [a for a in argv if a != "--daemon"] + ["--detached-fds", fds]
    env = dict(os.environ, PYINSTALLER_RESET_ENVIRONMENT="1")
    listener.set_inheritable(True)
    subprocess.Popen([sys.executable] + args, pass_fds=(listener.fileno(), write_end),
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, cwd="/", start_new_session=True, env=env)
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
