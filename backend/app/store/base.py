"""``JobStore``: what the service keeps durably, as a protocol. ``SQLiteStore`` is the one behind it.

Everything above the store (the job manager, the event log, the keys, the API's files and exports)
uses these public methods only, so a store for another database is one class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class JobStore(Protocol):
    """Durable records of jobs, saved configs, job events, metrics, files, exports, API keys, webhooks and preferences.

    ``outbox``: the webhook deliveries a write causes (rows of ``store.webhooks.DELIVERY_FIELDS``), stored
    in the same transaction as the write itself.
    """

    def close(self) -> None: ...

    # Jobs

    def insert_job(self, record: dict[str, Any]) -> None: ...

    def update_job(self, job_id: str, *, resume: bool = False, outbox: Sequence[dict[str, Any]] = (),
                   **fields: Any) -> None:
        """Write ``fields`` of a job's record (and ``outbox``). Raises ``TerminalJob`` when that would change
        the status of a job that has ended, unless ``resume`` (nothing is written then)."""

    def delete_job(self, job_id: str) -> None:
        """Forget a job's record with its events, metrics, exports and ``/v1`` data."""

    def load_jobs(self) -> list[dict[str, Any]]:
        """Every job's record, in creation order."""

    def max_job_seq(self) -> int: ...

    # Saved configs

    def insert_config(self, config_id: str, name: str, config: dict[str, Any], created_at: str, *,
                      owner: str | None = None) -> None: ...

    def delete_config(self, config_id: str) -> None: ...

    def load_configs(self) -> list[dict[str, Any]]: ...

    # Events and metrics

    def add_event(self, job_id: str, seq: int, time: str, type: str, level: str, message: str,
                  data: dict[str, Any] | None, *, outbox: Sequence[dict[str, Any]] = ()) -> None: ...

    def events(self, job_id: str, *, after: int = 0, limit: int = 100) -> list[dict[str, Any]]: ...

    def max_event_seq(self, job_id: str) -> int: ...

    def add_metric(self, job_id: str, step: int, attempt: int, data: dict[str, Any]) -> None: ...

    def metrics(self, job_id: str) -> list[dict[str, Any]]: ...

    # Files, /v1 job data, exports

    def insert_file(self, record: dict[str, Any]) -> None: ...

    def get_file(self, file_id: str) -> dict[str, Any] | None: ...

    def load_files(self, *, purpose: str | None = None, newest_first: bool = True,
                   owner: str | None = None) -> list[dict[str, Any]]: ...

    def delete_file(self, file_id: str) -> None: ...

    def put_openai_job(self, job_id: str, data: dict[str, Any]) -> None: ...

    def load_openai_jobs(self) -> dict[str, dict[str, Any]]: ...

    def insert_export(self, record: dict[str, Any]) -> None: ...

    def update_export(self, export_id: str, *, outbox: Sequence[dict[str, Any]] = (), **fields: Any) -> None: ...

    def exports(self, job_id: str | None = None) -> list[dict[str, Any]]: ...

    def delete_export(self, export_id: str) -> None: ...

    # API keys

    def insert_key(self, record: dict[str, Any]) -> None: ...

    def get_key(self, key_id: str) -> dict[str, Any] | None: ...

    def load_keys(self, *, include_revoked: bool = True) -> list[dict[str, Any]]: ...

    def revoke_key(self, key_id: str, revoked_at: str) -> None: ...

    def count_active_keys(self) -> int: ...

    # Webhooks: endpoints, the outbox of deliveries, their attempts

    def insert_webhook(self, record: dict[str, Any]) -> None: ...

    def load_webhooks(self) -> list[dict[str, Any]]:
        """Every endpoint, its secret included, oldest first."""

    def delete_webhook(self, endpoint_id: str) -> None:
        """Forget an endpoint with its deliveries and their attempts."""

    def webhook_deliveries(self, endpoint_id: str, *, limit: int = 100,
                           delivery_id: str | None = None) -> list[dict[str, Any]]:
        """An endpoint's deliveries (or the one ``delivery_id``), newest first, each with its ``attempt_log``."""

    def get_webhook_delivery(self, delivery_id: str) -> dict[str, Any] | None: ...

    def due_webhook_deliveries(self, now: float, *, limit: int = 100) -> list[dict[str, Any]]:
        """Pending deliveries due at ``now`` (epoch seconds), of endpoints that exist, oldest first."""

    def next_webhook_due(self) -> float | None: ...

    def update_webhook_delivery(self, delivery_id: str, *, attempt: dict[str, Any] | None = None,
                                **fields: Any) -> bool:
        """Set a delivery's ``fields`` and record ``attempt`` in one transaction; False: no such delivery."""

    # Preferences picked in "Try it" (rows of ``store.preferences.PREFERENCE_FIELDS``)

    def insert_preference(self, record: dict[str, Any]) -> None: ...

    def preferences(self, *, owner: str | None = None, job_id: str | None = None, limit: int | None = None,
                    offset: int = 0) -> list[dict[str, Any]]:
        """Preferences of ``owner`` (None: everyone's), of one job or all, oldest first."""

    def count_preferences(self, *, owner: str | None = None, job_id: str | None = None) -> int: ...

    def get_preference(self, preference_id: str) -> dict[str, Any] | None: ...

    def delete_preferences(self, *, preference_id: str | None = None, owner: str | None = None,
                           job_id: str | None = None) -> int:
        """Delete one preference (``preference_id``) or all of ``owner``'s for ``job_id``; return how many went."""
