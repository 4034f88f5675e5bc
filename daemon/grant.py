"""What a session may do, and the only way it reaches the store.

A ``Grant`` is a user's permissions (PROTOCOL.md's letters ``r w d m``), root
folder and limits. Every session holds one (the anonymous grant until a LOGIN
replaces it) and reaches the library only through an ``Access``: the store as
that grant sees it. An ``Access`` joins the grant's root in front of every path
(a path is a tuple of validated segments, so nothing a client sends can climb
out of it), checks the permission each call needs, and applies the limits.
The store below it has no policy at all; the verb table in ``daemon.session``
checks the same permissions earlier, so a refusal tells nothing about what
exists.

``Library`` is what the master opens once and every session process inherits:
the store, the anonymous grant, the service's rules (trash, kept uploads), and
with ``--users`` the accounts and the table of failed logins per address
(``daemon.accounts``). SIGHUP changes it in the master; sessions forked after
that see the change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from daemon.store import Entry, NotFound, OpenFile, Segments, Store, StoreError

PERMISSIONS = "rwdm"  # in the order a permissions word is written
KEPT_UPLOADS_PER_USER = 16  # broken uploads kept for RESUME, per user (the oldest go first)
ANONYMOUS = "anonymous"


class Denied(StoreError):
    code = "denied"


class TooLarge(StoreError):
    code = "toolarge"


def parse_permissions(text: str) -> str:
    """``rw``, ``rwdm``, ``-`` or ``none`` into a canonical word (letters in PERMISSIONS order)."""
    text = text.strip().lower()
    if text in ("-", "none", ""):
        return ""
    if set(text) - set(PERMISSIONS) or len(set(text)) != len(text):
        raise ValueError("permissions are letters from %r (or 'none'), each at most once: %r"
                         % (PERMISSIONS, text))
    return "".join(letter for letter in PERMISSIONS if letter in text)


@dataclass(frozen=True)
class Grant:
    user: str = ANONYMOUS
    permissions: str = "rw"
    root: Segments = ()
    max_upload: int | None = None

    def word(self) -> str:
        """The permissions as LOGIN's reply writes them (``-`` for none)."""
        return self.permissions or "-"

    def allows(self, needs: str) -> bool:
        return all(letter in self.permissions for letter in needs)


@dataclass
class Library:
    """The store and the rules of this service, shared by every session."""

    store: Store
    anonymous: Grant | None = field(default_factory=Grant)
    trash: bool = True           # DELETE moves files to the trash (--trash-days > 0)
    keep_uploads: bool = True    # broken uploads are kept for RESUME (--keep-uploads-hours > 0)
    accounts: dict | None = None  # name -> daemon.accounts.Account with --users, else None
    login_failures: object = None  # daemon.accounts.FailureTable (made before the first fork)
    max_upload: int | None = None  # every grant's upload limit (--max-upload)

    def features(self) -> list[str]:
        """The words after ``READY shelf/2`` in this service's greeting."""
        words = []
        if self.accounts is not None:
            words.append("login")
        if self.anonymous is not None:
            words.append("anonymous")
        words.append("folders")
        if self.trash:
            words.append("trash")
        if self.keep_uploads:
            words.append("resume")
        return words

    def configure(self, settings) -> None:
        """The service's rules from its settings (at start, and again on SIGHUP).

        The anonymous grant: ``--anonymous`` (default ``rw``, or none where
        ``--users`` names accounts), less everything but reading with
        ``--read-only``, limited by ``--max-upload``; no permission at all
        means no anonymous grant (only LOGIN is served). The accounts
        themselves are read by ``__main__`` (a broken file at SIGHUP keeps
        the old ones).
        """
        permissions = settings.anonymous
        if permissions is None:
            permissions = "" if getattr(settings, "users", None) else "rw"
        if settings.read_only:
            permissions = permissions.replace("w", "").replace("d", "").replace("m", "")
        self.anonymous = (Grant(ANONYMOUS, permissions, (), settings.max_upload)
                          if permissions else None)
        self.max_upload = settings.max_upload
        self.trash = settings.trash_days > 0
        self.keep_uploads = settings.keep_uploads_hours > 0


class Access:
    """The store as one grant sees it: paths below the grant's root, permissions checked."""

    def __init__(self, library: Library, grant: Grant):
        self.library = library
        self.store = library.store
        self.grant = grant

    def need(self, letters: str) -> None:
        if not self.grant.allows(letters):
            names = {"r": "read", "w": "write", "d": "delete", "m": "rename"}
            missing = [names[letter] for letter in letters if letter not in self.grant.permissions]
            raise Denied("permission denied: %s needs the %s permission"
                         % (self.grant.user, " and ".join(missing)))

    def _full(self, path: Segments) -> Segments:
        return self.grant.root + tuple(path)

    # -- reading -------------------------------------------------------------------

    def listing(self, folder: Segments) -> list[Entry]:
        self.need("r")
        return self.store.listing(self._full(folder))

    def stat(self, path: Segments) -> Entry:
        self.need("r")
        return self.store.stat(self._full(path))

    def open_file(self, path: Segments, version: str | None = None) -> OpenFile:
        self.need("r")
        return self.store.open_file(self._full(path), version)

    def sha256(self, path: Segments) -> tuple[str, Entry]:
        self.need("r")
        return self.store.sha256(self._full(path))

    def space(self) -> tuple[int, int]:
        return self.store.space()

    # -- uploads -------------------------------------------------------------------

    def begin_upload(self, path: Segments, size: int, replace: bool):
        self.need("wd" if replace else "w")
        limit = self.grant.max_upload
        if limit is not None and size > limit:
            raise TooLarge("file too large: the limit is %d bytes" % limit)
        return self.store.begin_upload(self._full(path), size, replace=replace,
                                       owner=self.grant.user)

    def resume_upload(self, token: str):
        self.need("w")
        upload = self.store.resume_upload(token, owner=self.grant.user)
        if upload.path[:len(self.grant.root)] != self.grant.root or (
                upload.replace and not self.grant.allows("d")):
            upload.keep()  # another grant's upload: it stays theirs
            raise NotFound("no such upload")
        return upload

    def drop_upload(self, token: str) -> None:
        self.need("w")
        self.store.drop_upload(token, owner=self.grant.user)

    def keep_broken(self, upload) -> None:
        """A session ended in the middle of ``upload``: keep its bytes for RESUME, or drop them."""
        if not self.library.keep_uploads:
            upload.abort()
            return
        upload.keep()
        try:
            self.store.cap_uploads(self.grant.user, KEPT_UPLOADS_PER_USER)
        except StoreError:
            pass  # the master's clean-up gets there later

    # -- changes -------------------------------------------------------------------

    def mkdir(self, path: Segments) -> None:
        self.need("w")
        self.store.mkdir(self._full(path))

    def rmdir(self, path: Segments) -> None:
        self.need("d")
        self.store.rmdir(self._full(path))

    def delete(self, path: Segments) -> None:
        self.need("d")
        if self.library.trash:
            self.store.trash_file(self._full(path), owner=self.grant.user)
        else:
            self.store.delete(self._full(path))

    def rename(self, source: Segments, target: Segments) -> None:
        self.need("m")
        self.store.rename(self._full(source), self._full(target))

    # -- the trash -------------------------------------------------------------------

    def trash_listing(self) -> list[tuple[str, Segments, int, int]]:
        """(id, path relative to the grant's root, size, deleted) of what may be restored."""
        self.need("r")
        root = self.grant.root
        return [(item.id, tuple(item.path)[len(root):], item.size, int(item.deleted))
                for item in self.store.trash_listing(within=root)]

    def restore(self, trash_id: str, target: Segments | None) -> Entry:
        self.need("w")
        return self.store.restore(trash_id, None if target is None else self._full(target),
                                  within=self.grant.root)

    def purge(self, trash_id: str) -> None:
        self.need("d")
        self.store.purge(trash_id, within=self.grant.root)
