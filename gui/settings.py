"""What the desktop client remembers between runs, in the user's config folder.

UI thread only (read at start, written at close). A missing or damaged file
means defaults, never an error: a person should not lose the app over it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields

from common.protocol import DEFAULT_HOST, DEFAULT_PORT

log = logging.getLogger("shelf.gui")
MAX_RECENT = 8


@dataclass
class Settings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    recent: list = field(default_factory=list)   # ["host:port", ...], newest first
    geometry: str = "1180x760"
    split: int = 0                               # x of the sash between the panes
    vsplit: int = 0                              # y of the sash above the transfer list
    local_folder: str = ""
    show_hidden: bool = False
    local_sort: list = field(default_factory=lambda: ["name", False])
    remote_sort: list = field(default_factory=lambda: ["name", False])

    def remember_server(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        address = "%s:%d" % (host, port)
        self.recent = [address] + [item for item in self.recent if item != address]
        del self.recent[MAX_RECENT:]


def config_path() -> str:
    from platformdirs import user_config_dir
    return os.path.join(user_config_dir("shelf", appauthor=False), "settings.json")


def state_dir() -> str:
    from platformdirs import user_state_dir
    return user_state_dir("shelf", appauthor=False)


def load(path: str | None = None) -> Settings:
    path = path or config_path()
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return Settings()
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable settings %s: %s", path, exc)
        return Settings()
    known = {f.name for f in fields(Settings)}
    settings = Settings()
    for key, value in data.items() if isinstance(data, dict) else ():
        if key in known and isinstance(value, type(getattr(settings, key))):
            setattr(settings, key, value)
    return settings


def save(settings: Settings, path: str | None = None) -> None:
    path = path or config_path()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temp = path + ".tmp"
        with open(temp, "w", encoding="utf-8") as handle:
            json.dump(asdict(settings), handle, indent=2)
        os.replace(temp, path)
    except OSError as exc:
        log.warning("cannot save settings to %s: %s", path, exc)
