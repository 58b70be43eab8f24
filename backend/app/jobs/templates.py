"""Saved config templates: named, partial configs a job can start from (with overrides)."""

from __future__ import annotations

import threading
import uuid
from typing import Any

from ..core.errors import ConfigNotFound, InvalidConfig, JobConflict
from ..store import JobStore
from .models import utcnow
from .preflight import check_partial_config


class ConfigTemplates:
    """The saved templates, in memory and in the store. ``configs`` maps id -> record."""

    def __init__(self, store_of: Any):
        # ``store_of()`` returns the manager's current store (it may be swapped after start-up).
        self._store_of = store_of
        self._lock = threading.Lock()
        self.configs: dict[str, dict[str, Any]] = {}

    @property
    def store(self) -> JobStore:
        return self._store_of()

    def load(self) -> None:
        for config in self.store.load_configs():
            self.configs[config["config_id"]] = config

    def save(self, name: str, config: dict[str, Any], *, owner: str | None = None) -> str:
        """Save a named template; every key must be an SFTConfig field. Returns its id."""
        if not name or not name.strip():
            raise InvalidConfig("name: must not be empty")
        if not name.isprintable():
            raise InvalidConfig("name: must be printable text (no control characters, tabs or line breaks)")
        check_partial_config(config)
        with self._lock:
            for saved in self.configs.values():
                # Names are unique per owner: another user's names neither collide nor show.
                if saved["name"] == name and saved.get("owner") == owner:
                    raise JobConflict(f"A config named {name!r} already exists ({saved['config_id']})")
            config_id = str(uuid.uuid4())
            record = {"config_id": config_id, "name": name, "config": dict(config), "created_at": utcnow(),
                      "owner": owner}
            self.store.insert_config(config_id, name, record["config"], record["created_at"], owner=owner)
            self.configs[config_id] = record
        return config_id

    def get(self, config_id: str) -> dict[str, Any]:
        """A saved template ``{config_id, name, config, created_at}``. Raises ConfigNotFound."""
        with self._lock:
            if config_id not in self.configs:
                raise ConfigNotFound(config_id)
            return dict(self.configs[config_id])

    def list(self, *, owner: str | None = None) -> list[dict[str, Any]]:
        """Saved templates (of one ``owner``, or everyone's when None)."""
        with self._lock:
            return [dict(config) for config in self.configs.values() if owner is None or config["owner"] == owner]

    def delete(self, config_id: str) -> None:
        with self._lock:
            if config_id not in self.configs:
                raise ConfigNotFound(config_id)
            self.store.delete_config(config_id)
            del self.configs[config_id]

    def apply(self, config_id: str, overrides: dict[str, Any] | None) -> dict[str, Any]:
        """A saved template with ``overrides`` applied on top (validated at submit)."""
        return {**self.get(config_id)["config"], **(overrides or {})}
