"""Webhooks: endpoints per user, the events of jobs as OpenAI names them, the outbox, and each attempt.

An endpoint (``POST /api/webhooks``) names a URL and the event types it wants; it gets a secret
(``whsec_...``, shown once) that signs every delivery (``webhook_sender.sign``). A user's endpoint receives
the events of that user's jobs only; an admin may register a ``global`` one, which receives everyone's.

Events have OpenAI's shape, ``{"id", "object": "event", "created_at", "type", "data": {"id": job_id, ...}}``,
and OpenAI's names for a job's end (``fine_tuning.job.succeeded | failed | cancelled``: a stopped job is
``cancelled``, as /v1 shows it) plus ours (started, stopping, a checkpoint saved, an export finished).

Nothing is sent from the code that changes a job: ``JobRecords`` asks this object (its ``outbox``) for the
deliveries a status change or an event causes, and the store writes them in the same transaction as the
change. The ``Sender`` thread then delivers them at least once, each with its own ``webhook-id`` kept on
every retry, with exponential back-off for ``SFT_WEBHOOKS_RETRY_PERIOD_SECONDS``, recording every attempt.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from ..core.errors import JobConflict, ServiceError
from ..core.settings import Settings
from ..sft.jsontext import loads_stored
from ..store import JobStore
from .events import JobEventType
from .models import JobStatus, SFTJob, utcnow
from .webhook_sender import Sender, UnsafeUrl, backoff, post, resolve

#: Endpoints one user may register.
MAX_ENDPOINTS_PER_OWNER = 16


class WebhookEventType(str, Enum):
    """The events an endpoint may ask for (``type`` in a payload)."""

    #: The job completed (OpenAI's name).
    JOB_SUCCEEDED = "fine_tuning.job.succeeded"
    #: The job failed: an error, a cancel without saving, a lost run (OpenAI's name).
    JOB_FAILED = "fine_tuning.job.failed"
    #: The job was stopped, before it ran or at a step, its adapter saved; a resume continues it (OpenAI's name).
    JOB_CANCELLED = "fine_tuning.job.cancelled"
    #: An attempt of the job began training.
    JOB_STARTED = "fine_tuning.job.started"
    #: A stop (or a /v1 pause) was asked: the job saves at its next step and ends ``cancelled``.
    JOB_STOPPING = "fine_tuning.job.stopping"
    #: The job wrote a checkpoint.
    CHECKPOINT_SAVED = "fine_tuning.job.checkpoint.saved"
    #: An export of the job (GGUF, merged, adapter) completed or failed.
    EXPORT_FINISHED = "fine_tuning.job.export.finished"


#: What an endpoint receives when its registration names no events: a job's end.
JOB_END_EVENTS = (WebhookEventType.JOB_SUCCEEDED, WebhookEventType.JOB_FAILED, WebhookEventType.JOB_CANCELLED)

_STATUS_EVENTS = {JobStatus.COMPLETED: WebhookEventType.JOB_SUCCEEDED, JobStatus.FAILED: WebhookEventType.JOB_FAILED,
                  JobStatus.STOPPED: WebhookEventType.JOB_CANCELLED, JobStatus.RUNNING: WebhookEventType.JOB_STARTED,
                  JobStatus.STOPPING: WebhookEventType.JOB_STOPPING}


class WebhookNotFound(ServiceError, LookupError):
    status_code = 404
    error_type = "not_found"


class InvalidWebhook(ServiceError, ValueError):
    """A registration that cannot be used; ``field`` is the one at fault."""

    status_code = 400
    error_type = "invalid_request"

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}", errors=[{"field": field, "message": message, "type": self.error_type}])


class WebhookForbidden(ServiceError):
    status_code = 403
    error_type = "forbidden"


class WebhookConflict(JobConflict):
    """The request does not fit the delivery's state."""


def new_secret() -> str:
    """A signing secret as Standard Webhooks writes one: ``whsec_`` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, timezone.utc).isoformat()


class Webhooks:
    """The endpoints (kept in memory too: the outbox is asked under the manager's lock, so it reads no
    database), the outbox rows of job changes, and the sender.

    Args:
        store: the job store, read each time (``lambda: manager.store``).
        settings: ``webhooks_*`` settings.
    """

    def __init__(self, store: Callable[[], JobStore], settings: Settings):
        self._store = store
        self.settings = settings
        self._lock = threading.Lock()
        self.endpoints: dict[str, dict[str, Any]] = {e["endpoint_id"]: e for e in store().load_webhooks()}
        self.sender = Sender(store, self.attempt, self._queue_again, workers=settings.webhooks_max_parallel)
        if self.endpoints:
            self.sender.start()

    @property
    def store(self) -> JobStore:
        return self._store()

    # Endpoints

    def create(self, *, url: str, events: list[str] | None, owner: str | None, scope: str,
               description: str | None = None) -> dict[str, Any]:
        """Register an endpoint; return its record with the secret (the one time it is shown).

        Raises:
            InvalidWebhook: an unusable URL (also one that resolves to a non-public address, unless allowed)
                or an unknown event type.
            WebhookConflict: ``owner`` has MAX_ENDPOINTS_PER_OWNER endpoints already.
        """
        try:
            resolve(url, allow_private=self.settings.webhooks_allow_private)
        except UnsafeUrl as exc:
            raise InvalidWebhook("url", str(exc)) from None
        kinds = [kind.value for kind in JOB_END_EVENTS] if events is None else list(dict.fromkeys(events))
        known = {kind.value for kind in WebhookEventType}
        for index, name in enumerate(kinds):
            if name not in known:
                raise InvalidWebhook(f"events.{index}", f"unknown event type {name!r}; one of {', '.join(sorted(known))}")
        if not kinds:
            raise InvalidWebhook("events", "name at least one event type (or leave it out for a job's end)")
        record = {"endpoint_id": "wh_" + secrets.token_hex(12), "url": url, "events": kinds, "secret": new_secret(),
                  "owner": owner, "scope": scope, "description": description, "created_at": utcnow()}
        with self._lock:
            mine = sum(1 for e in self.endpoints.values() if e["owner"] == owner)
            if mine >= MAX_ENDPOINTS_PER_OWNER:
                raise WebhookConflict(f"{mine} webhook endpoints are registered, the most one user may have; "
                                      "delete one first")
            self.store.insert_webhook(record)
            self.endpoints[record["endpoint_id"]] = record
        self.sender.start()
        return record

    def get(self, endpoint_id: str) -> dict[str, Any]:
        endpoint = self.endpoints.get(endpoint_id)
        if endpoint is None:
            raise WebhookNotFound(f"Webhook {endpoint_id} not found")
        return endpoint

    def delete(self, endpoint_id: str) -> dict[str, Any]:
        """Forget an endpoint, its deliveries and their attempts (pending ones are not sent)."""
        with self._lock:
            endpoint = self.get(endpoint_id)
            self.store.delete_webhook(endpoint_id)
            del self.endpoints[endpoint_id]
        return endpoint

    def deliveries(self, endpoint_id: str, *, limit: int = 100) -> list[dict[str, Any]]:
        """The endpoint's deliveries, newest first, with every attempt."""
        self.get(endpoint_id)
        return [self._public_delivery(row) for row in self.store.webhook_deliveries(endpoint_id, limit=limit)]

    def redeliver(self, endpoint_id: str, delivery_id: str) -> dict[str, Any]:
        """Send a delivery again now (same webhook-id, retried for a new period); one in flight goes again once
        its attempt has answered."""
        row = self.store.get_webhook_delivery(delivery_id)
        if row is None or row["endpoint_id"] != self.get(endpoint_id)["endpoint_id"]:
            raise WebhookNotFound(f"Delivery {delivery_id} of webhook {endpoint_id} not found")
        if not self.sender.redo_after(delivery_id):
            self._queue_again(delivery_id)
        [shown] = self.store.webhook_deliveries(endpoint_id, delivery_id=delivery_id)
        return self._public_delivery(shown)

    def _queue_again(self, delivery_id: str) -> None:
        now = time.time()
        self.store.update_webhook_delivery(delivery_id, status="pending", next_attempt_at=now,
                                           retry_until=now + self.settings.webhooks_retry_period_seconds)
        self.notify()

    # The outbox: what JobRecords writes with a change (it holds the manager's lock; no I/O here)

    def for_status(self, job: SFTJob, old: JobStatus, new: JobStatus, fields: dict[str, Any]) -> list[dict[str, Any]]:
        """The deliveries ``job``'s move from ``old`` to ``new`` causes."""
        kind = _STATUS_EVENTS.get(new)
        if kind is None or (new is JobStatus.RUNNING and old is not JobStatus.PENDING):
            return []
        data: dict[str, Any] = {"id": job.job_id, "status": new.value}
        if new is JobStatus.RUNNING:
            data["attempt"] = len(fields.get("attempts") or job.attempts)
        if new is JobStatus.FAILED:
            detail = fields.get("error_detail") or {}
            data.update(error=fields.get("error"), category=detail.get("category"))
        if new.is_terminal():
            result = fields.get("result") or {}
            data.update(adapter_path=result.get("adapter_path"), global_step=result.get("global_step"))
        return self._rows(job, kind, data)

    def for_event(self, job: SFTJob, kind: JobEventType, data: dict[str, Any] | None) -> list[dict[str, Any]]:
        """The deliveries an event of ``job``'s log causes (a checkpoint saved)."""
        if kind is not JobEventType.CHECKPOINT_SAVED:
            return []
        data = data or {}
        return self._rows(job, WebhookEventType.CHECKPOINT_SAVED,
                          {"id": job.job_id, "step": data.get("step"), "checkpoint": data.get("path")})

    def for_export(self, job: SFTJob | None, record: dict[str, Any], *, status: str,
                   error: str | None = None) -> list[dict[str, Any]]:
        """The deliveries an export's end causes (``record``: the export's, ``status``: how it ended)."""
        if job is None:
            return []
        return self._rows(job, WebhookEventType.EXPORT_FINISHED, {
            "id": job.job_id, "export_id": record["export_id"], "format": record["format"], "type": record["type"],
            "status": status, "error": error})

    def notify(self) -> None:
        """Outbox rows were committed: wake the sender."""
        if self.endpoints:
            self.sender.start()
            self.sender.wake()

    def _rows(self, job: SFTJob, kind: WebhookEventType, data: dict[str, Any]) -> list[dict[str, Any]]:
        receivers = [e for e in list(self.endpoints.values()) if kind.value in e["events"]
                     and (e["scope"] == "global" or e["owner"] == job.owner)]
        if not receivers:
            return []
        now = time.time()
        event_id = "evt_" + secrets.token_hex(12)
        body = json.dumps({"id": event_id, "object": "event", "created_at": int(now), "type": kind.value,
                           "data": data}, separators=(",", ":"))
        return [{"delivery_id": "msg_" + secrets.token_hex(12), "endpoint_id": e["endpoint_id"], "event_id": event_id,
                 "event_type": kind.value, "job_id": job.job_id, "body": body, "status": "pending", "attempts": 0,
                 "created_at": utcnow(), "next_attempt_at": now,
                 "retry_until": now + self.settings.webhooks_retry_period_seconds} for e in receivers]

    # The sender's work

    def attempt(self, row: dict[str, Any]) -> None:
        """One attempt of a due delivery, recorded with its outcome and what comes next."""
        endpoint = self.endpoints.get(row["endpoint_id"])
        if endpoint is None:
            return
        started = utcnow()
        outcome = post(endpoint["url"], webhook_id=row["delivery_id"], body=row["body"], secret=endpoint["secret"],
                       timeout=self.settings.webhooks_timeout_seconds,
                       allow_private=self.settings.webhooks_allow_private)
        attempts = row["attempts"] + 1
        fields: dict[str, Any] = {"attempts": attempts, "last_status_code": outcome.status_code,
                                  "last_error": outcome.error}
        if outcome.ok:
            fields.update(status="delivered", delivered_at=utcnow(), next_attempt_at=None)
        else:
            retry_at = time.time() + backoff(attempts, self.settings.webhooks_first_retry_seconds)
            if retry_at <= row["retry_until"]:
                fields.update(status="pending", next_attempt_at=retry_at)
            else:
                fields.update(status="failed", next_attempt_at=None)
        self.store.update_webhook_delivery(row["delivery_id"], attempt={
            "delivery_id": row["delivery_id"], "attempt": attempts, "started_at": started,
            "status_code": outcome.status_code, "latency_ms": outcome.latency_ms, "error": outcome.error,
            "response": outcome.response}, **fields)

    def close(self) -> None:
        self.sender.close()

    @staticmethod
    def _public_delivery(row: dict[str, Any]) -> dict[str, Any]:
        return {"id": row["delivery_id"], "endpoint_id": row["endpoint_id"], "event_id": row["event_id"],
                "event_type": row["event_type"], "job_id": row["job_id"], "status": row["status"],
                "created_at": row["created_at"], "next_attempt_at": iso(row["next_attempt_at"]),
                "delivered_at": row["delivered_at"], "last_status_code": row["last_status_code"],
                "last_error": row["last_error"], "payload": loads_stored(row["body"]),
                "attempts": [{key: attempt[key] for key in ("attempt", "started_at", "status_code", "latency_ms",
                                                            "error", "response")} for attempt in row["attempt_log"]]}


def public_endpoint(endpoint: dict[str, Any], *, with_secret: bool = False) -> dict[str, Any]:
    """An endpoint as the API shows it (its secret only right after it was made)."""
    shown = {"id": endpoint["endpoint_id"], "url": endpoint["url"], "events": endpoint["events"],
             "scope": endpoint["scope"], "owner": endpoint["owner"], "description": endpoint["description"],
             "created_at": endpoint["created_at"]}
    return {**shown, "secret": endpoint["secret"]} if with_secret else shown


class ScopedWebhooks:
    """One user's webhooks: their own endpoints (an admin's view: everyone's); another user's answers 404
    as a missing one does.

    Args:
        webhooks: the manager's ``Webhooks``.
        user: the caller (``app.api.auth.Principal``): ``owner``, ``admin``, ``sees(owner)``.
    """

    def __init__(self, webhooks: Webhooks, user: Any):
        self.webhooks = webhooks
        self.user = user

    def create(self, *, url: str, events: list[str] | None, scope: str = "user",
               description: str | None = None) -> dict[str, Any]:
        if scope == "global" and not self.user.admin:
            raise WebhookForbidden("scope: global webhooks receive every user's events; registering one needs an "
                                   "admin key")
        endpoint = self.webhooks.create(url=url, events=events, owner=self.user.owner, scope=scope,
                                        description=description)
        return public_endpoint(endpoint, with_secret=True)

    def list(self) -> list[dict[str, Any]]:
        return [public_endpoint(e) for e in list(self.webhooks.endpoints.values()) if self.user.sees(e["owner"])]

    def get(self, endpoint_id: str) -> dict[str, Any]:
        endpoint = self.webhooks.get(endpoint_id)
        if not self.user.sees(endpoint["owner"]):
            raise WebhookNotFound(f"Webhook {endpoint_id} not found")
        return endpoint

    def delete(self, endpoint_id: str) -> dict[str, Any]:
        self.get(endpoint_id)
        return public_endpoint(self.webhooks.delete(endpoint_id))

    def deliveries(self, endpoint_id: str, *, limit: int = 100) -> list[dict[str, Any]]:
        self.get(endpoint_id)
        return self.webhooks.deliveries(endpoint_id, limit=limit)

    def redeliver(self, endpoint_id: str, delivery_id: str) -> dict[str, Any]:
        self.get(endpoint_id)
        return self.webhooks.redeliver(endpoint_id, delivery_id)
