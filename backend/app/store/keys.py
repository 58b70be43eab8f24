"""API keys: created, listed, verified and revoked; only a hash of each secret is kept.

A key reads ``sft_<key_id>_<secret>``. The key id (public, shown in lists as the key's prefix)
finds the record; the secret's SHA-256 is compared with ``hmac.compare_digest``. The secret is 32
random bytes, so a plain hash is enough (no password stretching: nothing to brute-force).

Keys live in the service's SQLite database, beside the jobs they own, so ``python -m app keys``
and a running server see the same keys: a key revoked from the command line is refused at the
server's next request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .base import JobStore

KEY_PREFIX = "sft_"
#: Characters a key's name may use: it is the owner recorded on jobs, configs and files.
NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.@")


class InvalidKeyName(ValueError):
    """A key name that cannot name a user; the message says why."""


@dataclass(frozen=True)
class ApiKey:
    """A key's public record (never its secret)."""

    key_id: str
    name: str
    admin: bool
    created_at: str
    revoked_at: str | None = None

    @property
    def prefix(self) -> str:
        """What identifies the key in lists and logs: the start of the key, before its secret."""
        return f"{KEY_PREFIX}{self.key_id}"

    def to_dict(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "prefix": self.prefix, "name": self.name, "admin": self.admin,
                "created_at": self.created_at, "revoked_at": self.revoked_at}


class KeyStore:
    """API keys in the service's database (the ``api_keys`` table of ``store``)."""

    def __init__(self, store: JobStore):
        self.store = store

    def create(self, name: str, *, admin: bool = False) -> tuple[ApiKey, str]:
        """Create a key for the user ``name``; return its record and the key itself (shown once).

        Raises:
            InvalidKeyName: ``name`` is empty, too long or has characters outside ``[A-Za-z0-9-_.@]``.
        """
        check_name(name)
        key_id = secrets.token_hex(5)
        secret = secrets.token_urlsafe(32)
        record = ApiKey(key_id=key_id, name=name, admin=admin, created_at=_utcnow())
        self.store.insert_key({"key_id": key_id, "name": name, "admin": admin, "secret_hash": _hash(secret),
                               "created_at": record.created_at})
        return record, f"{KEY_PREFIX}{key_id}_{secret}"

    def verify(self, presented: str) -> ApiKey | None:
        """The live key ``presented`` is, or None (malformed, unknown, wrong secret or revoked)."""
        if not presented.startswith(KEY_PREFIX):
            return None
        key_id, _, secret = presented[len(KEY_PREFIX):].partition("_")
        if not key_id or not secret:
            return None
        row = self.store.get_key(key_id)
        if row is None:
            return None
        if not hmac.compare_digest(_hash(secret), row["secret_hash"]) or row["revoked_at"] is not None:
            return None
        return _key_from_row(row)

    def list(self, *, include_revoked: bool = True) -> list[ApiKey]:
        return [_key_from_row(row) for row in self.store.load_keys(include_revoked=include_revoked)]

    def get(self, key_id: str) -> ApiKey | None:
        row = self.store.get_key(key_id)
        return _key_from_row(row) if row is not None else None

    def revoke(self, key_id: str) -> ApiKey | None:
        """Revoke a key (it is refused from now on; its jobs stay its user's). None: no such key."""
        if key_id.startswith(KEY_PREFIX):
            key_id = key_id[len(KEY_PREFIX):]
        self.store.revoke_key(key_id, _utcnow())
        return self.get(key_id)

    def active_count(self) -> int:
        return self.store.count_active_keys()


def check_name(name: str) -> None:
    if not name:
        raise InvalidKeyName("name: must not be empty")
    if len(name) > 64:
        raise InvalidKeyName(f"name: at most 64 characters (got {len(name)})")
    bad = sorted(set(name) - NAME_CHARACTERS)
    if bad:
        raise InvalidKeyName(f"name: {name!r} has characters other than letters, digits and - _ . @ "
                             f"({''.join(bad)!r})")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _utcnow() -> str:
    return datetime.now(timezone.utc).isoformat()


def _key_from_row(row: dict[str, Any]) -> ApiKey:
    return ApiKey(key_id=row["key_id"], name=row["name"], admin=bool(row["admin"]), created_at=row["created_at"],
                  revoked_at=row["revoked_at"])
