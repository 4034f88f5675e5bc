"""Accounts: the users file, password checks, and failed logins per address.

**The users file** (``--users FILE``) holds one account a line::

    # name permissions root argon2id-hash
    alice rwdm / $argon2id$v=19$m=19456,t=2,p=1$...
    bob r photos/bob $argon2id$v=19$...

``permissions`` is a word of PROTOCOL.md's letters (``-`` for none), ``root``
the user's folder as a percent-encoded library path (``/`` for the whole
library). Blank lines and lines starting with ``#`` are ignored. Only
``shelfd user add|passwd|del`` (``daemon.usercmd``) writes it: a new file
beside it (mode 0600), fsync, rename over it, fsync of the folder, under an
``flock`` of the file so two commands never lose each other's change. A
line that does not parse stops shelfd from starting (one line naming the
file and line); at SIGHUP the old accounts stay (``__main__`` logs why).

A root is checked for syntax only when a user is added: ``shelfd user`` may
not know which library the accounts serve. LOGIN checks that it is a folder
and says so when it is not.

**Which process.** The master parses the file (at start and on SIGHUP) and
never imports argon2: parsing needs no hashing, and argon2-cffi's module and
its cffi back end would be pages every forked session copies or keeps. A
session process imports it at its first LOGIN (``verify``), as ``shelfd user``
does to hash. Hashes are argon2id with OWASP's first choice of parameters
(19 MiB, 2 passes, 1 lane: about 25 ms here). Not argon2-cffi 25's defaults,
RFC 9106's "low memory" profile: 64 MiB and 4 lanes, about 190 ms of two
cores here, which 64 sessions logging in at once would multiply into 4 GiB.
A hash keeps its own parameters, so changing these later still verifies the
old ones. argon2's own ``verify`` compares in constant time. An
unknown user is checked against a dummy hash made with the same parameters,
so the work, and the time, are the same as for a wrong password.

**Failed logins per address** (``FailureTable``): a table in shared memory
that the master creates before it forks anything, as ``daemon.pool``'s
``PeerTable``; every session process inherits the mapping, reads it before
spending argon2's cost and writes a failure into it. A pipe to the master
was the other choice, but the master would then have to answer questions
too (a session must know of the ban before it verifies), which means a
second channel back and a master that waits on its children. Rows are
updated under a ``lockf`` of the memfd that backs the table, so two
sessions failing at once both count. Ten failures from one address within
ten minutes refuse every LOGIN from it for ten minutes (IPv6 addresses count
by their /64, which one host usually owns whole). Loopback is not exempt.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import re
import socket
import struct
import time
from dataclasses import dataclass

from common.protocol import InvalidName, ShelfError, decode_path, encode_path, split_path
from daemon.grant import Grant, parse_permissions

USER_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
MAX_PASSWORD = 1024  # bytes: its encoded form still fits a LOGIN line
FILE_MODE = 0o600
ARGON2_KIB, ARGON2_PASSES, ARGON2_LANES = 19 * 1024, 2, 1  # OWASP's first choice for argon2id


class AccountsError(ShelfError):
    """The users file cannot be read or does not parse (one line for the user)."""


@dataclass(frozen=True)
class Account:
    name: str
    permissions: str    # canonical letters ("" for none)
    root: tuple         # segments of the user's folder; () is the whole library
    hash: str           # argon2id, PHC string format

    def grant(self, max_upload: int | None) -> Grant:
        return Grant(self.name, self.permissions, self.root, max_upload)

    def line(self) -> str:
        return "%s %s %s %s" % (self.name, self.permissions or "-", encode_path(self.root),
                                self.hash)


def check_name(name: str) -> str:
    if not USER_NAME.fullmatch(name):
        raise AccountsError("a user name is 1 to 64 letters, digits, '.', '_' or '-': %r"
                            % name)
    return name


def parse_root(text: str) -> tuple:
    """A root as an administrator types it (``photos/bob``, ``/photos/bob``, ``/``)."""
    try:
        return split_path(text.strip())
    except InvalidName as exc:
        raise AccountsError("bad root folder %r: %s" % (text, exc)) from None


def root_text(root: tuple) -> str:
    """How LOGIN's reply and ``user list`` write a root: ``/`` then its path."""
    return "/" + "/".join(root)


# -- the file ------------------------------------------------------------------

def parse(text: str, path: str = "users file") -> dict[str, Account]:
    accounts: dict[str, Account] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(" ")
        where = "%s line %d" % (path, number)
        if len(parts) != 4:
            raise AccountsError("%s: expected 'name permissions root hash', found %d fields"
                                % (where, len(parts)))
        name, permissions, root, hashed = parts
        try:
            check_name(name)
            permissions = parse_permissions(permissions)
            root = decode_path(root)
        except (ValueError, ShelfError) as exc:
            raise AccountsError("%s: %s" % (where, exc)) from None
        if not hashed.startswith("$argon2id$"):
            raise AccountsError("%s: the password hash is not argon2id (set it again with "
                                "shelfd user passwd %s)" % (where, name))
        if name in accounts:
            raise AccountsError("%s: user %s appears twice" % (where, name))
        accounts[name] = Account(name, permissions, root, hashed)
    return accounts


def load(path: str) -> dict[str, Account]:
    """The accounts in ``path``; AccountsError (one line) when it cannot be used."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise AccountsError("users file %s does not exist (create it with: shelfd user add "
                            "NAME --users %s)" % (path, path)) from None
    except OSError as exc:
        raise AccountsError("cannot read users file %s: %s"
                            % (path, (exc.strerror or str(exc)).lower())) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise AccountsError("users file %s is not UTF-8 text" % path) from None
    return parse(text, path)


def render(accounts: dict[str, Account]) -> str:
    lines = ["# shelfd accounts: name permissions root argon2id-hash. "
             "Change with 'shelfd user', not by hand."]
    lines.extend(account.line() for account in sorted(accounts.values(), key=lambda a: a.name))
    return "\n".join(lines) + "\n"


def write_atomically(path: str, text: str, owner_of: int | None = None) -> None:
    """Replace ``path`` with ``text``: a 0600 file beside it, fsync, rename, fsync the folder.

    Run as root, the new file keeps the owner of the open file ``owner_of``
    (the one it replaces), so a shelfd running as its own user can still
    read a file an administrator changed with sudo.
    """
    folder = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(folder, ".%s.%d.tmp" % (os.path.basename(path), os.getpid()))
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        try:
            os.fchmod(fd, FILE_MODE)  # whatever the umask said
            if owner_of is not None and os.geteuid() == 0:
                old = os.fstat(owner_of)
                os.fchown(fd, old.st_uid, old.st_gid)
            data = text.encode("utf-8")
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(folder_fd)
    finally:
        os.close(folder_fd)


class LockedFile:
    """``with LockedFile(path) as users:`` ``users.accounts``, changed, then ``users.save()``.

    Held under an exclusive flock from the read to the end of the block.
    The lock is on the file itself; a writer that renamed a new file over it
    meanwhile is noticed (another inode) and the lock taken again, on the new
    one. With ``create``, a missing file is made empty first (``user add``).
    """

    def __init__(self, path: str, create: bool = False):
        self.path = path
        self.create = create
        self.fd: int | None = None
        self.accounts: dict[str, Account] = {}

    def __enter__(self) -> "LockedFile":
        while True:
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                if not self.create:
                    load(self.path)  # says the file does not exist
                try:
                    fd = os.open(self.path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                                 FILE_MODE)
                except FileExistsError:
                    continue
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                try:
                    self.accounts = load(self.path)
                except BaseException:
                    self.__exit__()
                    raise
                return self
            os.close(fd)

    def save(self) -> None:
        write_atomically(self.path, render(self.accounts), owner_of=self.fd)

    def __exit__(self, *exc_info) -> None:
        if self.fd is not None:
            os.close(self.fd)  # and with it the lock
            self.fd = None


# -- passwords (session processes and `shelfd user` only) ------------------------

_hasher = None
_dummy_hash: str | None = None


M_MMAP_THRESHOLD = -3  # mallopt(3)


def _argon2():
    global _hasher
    if _hasher is None:
        _map_large_allocations()
        from argon2 import PasswordHasher, Type
        _hasher = PasswordHasher(time_cost=ARGON2_PASSES, memory_cost=ARGON2_KIB,
                                 parallelism=ARGON2_LANES, type=Type.ID)
    return _hasher


def _map_large_allocations() -> None:
    """Make glibc give argon2's 19 MiB back to the system after each use.

    glibc serves a large malloc with its own mmap and unmaps it on free, but
    the first such free raises its threshold above that size, so from the
    second argon2 call on the 19 MiB came from the heap and stayed: a session
    that had failed one LOGIN kept 24 MiB of its own instead of 5 (measured,
    USS). A fixed threshold keeps every later call on the mmap path.
    """
    try:
        import ctypes
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 128 * 1024)
    except (OSError, AttributeError):
        pass  # not glibc: only more memory kept


def hash_password(password: bytes) -> str:
    return _argon2().hash(password)


def verify(accounts: dict[str, Account], name: str, password: bytes) -> Account | None:
    """The account if ``password`` is its password; None otherwise, after the same work.

    An unknown name is verified against a dummy hash with the parameters of
    the hashes in the file (the first account's, else argon2-cffi's
    defaults), so its cost and time are those of a wrong password.
    """
    from argon2.exceptions import InvalidHashError, VerificationError

    hasher = _argon2()
    account = accounts.get(name)
    hashed = account.hash if account is not None else _dummy(accounts)
    try:
        hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return None
    return account


def _dummy(accounts: dict[str, Account]) -> str:
    global _dummy_hash
    if _dummy_hash is None:
        from argon2 import PasswordHasher, extract_parameters
        from argon2.exceptions import InvalidHashError

        hasher = _argon2()
        sample = next(iter(accounts.values()), None)
        if sample is not None:
            try:
                hasher = PasswordHasher.from_parameters(extract_parameters(sample.hash))
            except InvalidHashError:
                pass  # the defaults then
        _dummy_hash = hasher.hash(os.urandom(16))
    return _dummy_hash


# -- failed logins per address ----------------------------------------------------

def address_key(host: str) -> bytes:
    """16 bytes per address: IPv4 mapped into IPv6, an IPv6 address cut to its /64."""
    try:
        return b"\0" * 10 + b"\xff\xff" + socket.inet_pton(socket.AF_INET, host)
    except OSError:
        pass
    try:
        packed = socket.inet_pton(socket.AF_INET6, host)
    except OSError:
        return (host.encode("utf-8", "replace") + b"\0" * 16)[:16]
    if packed[:12] == b"\0" * 10 + b"\xff\xff":
        return packed  # an IPv4 client of a dual-stack listener
    return packed[:8] + b"\0" * 8


class FailureTable:
    """Failed LOGINs per address over a window, shared by every session process.

    Made by the master before the first fork (a memfd mapped MAP_SHARED);
    read and written only by session processes, each change under a
    ``lockf`` of the memfd. A row: address key, start of its window
    (CLOCK_MONOTONIC, one clock for every process), failures in the window,
    used flag, and the end of a ban. When every row is taken, the one whose
    window is oldest (and not banned, if any) makes room.
    """

    ROW = struct.Struct("<16sdIId")  # key, window start, count, used, banned until
    LIMIT = 10        # failures...
    WINDOW = 600.0    # ...within this many seconds...
    BAN = 600.0       # ...refuse LOGIN from that address this long

    def __init__(self, rows: int = 4096, limit: int = LIMIT, window: float = WINDOW,
                 ban: float = BAN, clock=time.monotonic):
        self.rows, self.limit, self.window, self.ban, self.clock = rows, limit, window, ban, clock
        size = rows * self.ROW.size
        self.fd = os.memfd_create("shelfd-login-failures", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, size)
        self.memory = mmap.mmap(self.fd, size)  # MAP_SHARED: children write the same pages

    def close(self) -> None:
        self.memory.close()
        os.close(self.fd)

    def banned_for(self, host: str) -> float:
        """Seconds left of a ban on ``host`` (0.0: LOGIN may go on)."""
        key = address_key(host)
        with self._locked():
            row = self._find(key)
            if row is None:
                return 0.0
            return max(0.0, self._read(row)[4] - self.clock())

    def record_failure(self, host: str) -> bool:
        """Count one failed LOGIN from ``host``; True when it is banned from now on."""
        key, now = address_key(host), self.clock()
        with self._locked():
            row = self._find(key)
            if row is None:
                row = self._free_row(now)
                start, count, banned = now, 0, 0.0
            else:
                _, start, count, _, banned = self._read(row)
                if now - start > self.window:
                    start, count = now, 0
            count += 1
            if count >= self.limit and banned <= now:
                banned, start, count = now + self.ban, now, 0  # a new window once it ends
            self.memory[row * self.ROW.size:(row + 1) * self.ROW.size] = self.ROW.pack(
                key, start, count, 1, banned)
            return banned > now

    def _locked(self):
        table = self

        class Held:
            def __enter__(self):
                fcntl.lockf(table.fd, fcntl.LOCK_EX)

            def __exit__(self, *exc_info):
                fcntl.lockf(table.fd, fcntl.LOCK_UN)
        return Held()

    def _read(self, row: int) -> tuple:
        return self.ROW.unpack_from(self.memory, row * self.ROW.size)

    def _find(self, key: bytes) -> int | None:
        size = self.ROW.size
        found = self.memory.find(key)
        while found >= 0:  # a search in C; only a used row's key counts
            if found % size == 0 and self._read(found // size)[3]:
                return found // size
            found = self.memory.find(key, found + 1)
        return None

    def _free_row(self, now: float) -> int:
        oldest, oldest_start = 0, None
        for row, (_, start, _, used, banned) in enumerate(self.ROW.iter_unpack(self.memory)):
            if not used:
                return row
            if banned > now:
                continue
            if now - start > self.window:
                return row  # expired: as good as free
            if oldest_start is None or start < oldest_start:
                oldest, oldest_start = row, start
        return oldest
