"""/api/webhooks: register, list and delete endpoints; read their deliveries and attempts; redeliver.

Thin routes over the caller's view (``UserWebhooks``); the domain is ``app.jobs.webhooks``.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from ..jobs.webhooks import WebhookEventType, public_endpoint
from .deps import UserWebhooks
from .schemas import (
    ERROR_RESPONSES,
    WebhookDelivery,
    WebhookDeliveryListResponse,
    WebhookEndpoint,
    WebhookEndpointCreated,
    WebhookListResponse,
)

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"], responses=ERROR_RESPONSES)


class WebhookCreateRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"url": "https://example.com/hooks/sft"},
                                        {"url": "https://example.com/hooks/sft",
                                         "events": ["fine_tuning.job.succeeded", "fine_tuning.job.checkpoint.saved"]}]},
    )

    url: str = Field(..., min_length=1, max_length=2048,
                     description="http(s) URL that receives the deliveries (POST, JSON). It must resolve to public "
                     "addresses unless SFT_WEBHOOKS_ALLOW_PRIVATE=true.")
    events: list[WebhookEventType] | None = Field(
        None, min_length=1, max_length=len(WebhookEventType),
        description="Event types to receive. Default: a job's end (fine_tuning.job.succeeded, .failed, .cancelled).")
    scope: Literal["user", "global"] = Field(
        "user", description="user: the events of your jobs; global (admin keys only): every user's jobs.")
    description: str | None = Field(None, max_length=200)


@router.post("", response_model=WebhookEndpointCreated, status_code=201)
def create_webhook(request: WebhookCreateRequest, webhooks: UserWebhooks) -> dict:
    """Register an endpoint; the answer carries its signing secret, shown this once."""
    events = None if request.events is None else [kind.value for kind in request.events]
    return webhooks.create(url=request.url, events=events, scope=request.scope, description=request.description)


@router.get("", response_model=WebhookListResponse)
def list_webhooks(webhooks: UserWebhooks) -> dict:
    """Your endpoints (an admin's: everyone's), oldest first, without their secrets."""
    return {"webhooks": webhooks.list()}


@router.get("/{webhook_id}", response_model=WebhookEndpoint)
def get_webhook(webhook_id: str, webhooks: UserWebhooks) -> dict:
    """One endpoint, without its secret."""
    return public_endpoint(webhooks.get(webhook_id))


@router.delete("/{webhook_id}", response_model=WebhookEndpoint)
def delete_webhook(webhook_id: str, webhooks: UserWebhooks) -> dict:
    """Delete an endpoint with its deliveries (pending ones are not sent). Returns it as it was."""
    return webhooks.delete(webhook_id)


@router.get("/{webhook_id}/deliveries", response_model=WebhookDeliveryListResponse)
def list_deliveries(webhook_id: str, webhooks: UserWebhooks,
                    limit: int = Query(100, ge=1, le=1000, description="At most this many, newest first.")) -> dict:
    """The endpoint's deliveries, newest first, each with every attempt (status, latency, error)."""
    return {"endpoint_id": webhook_id, "deliveries": webhooks.deliveries(webhook_id, limit=limit)}


@router.post("/{webhook_id}/deliveries/{delivery_id}/redeliver", response_model=WebhookDelivery, status_code=202)
def redeliver(webhook_id: str, delivery_id: str, webhooks: UserWebhooks) -> dict:
    """Send a delivery again now, with the same webhook-id (retried with back-off for a new period)."""
    return webhooks.redeliver(webhook_id, delivery_id)
