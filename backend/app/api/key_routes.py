"""/api/keys: create, list and revoke API keys (admin keys only; with keys off, the local user)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from ..core.errors import InvalidConfig, ServiceError
from ..store.keys import InvalidKeyName
from .deps import AdminUser, KeysDep
from .schemas import ERROR_RESPONSES, ErrorResponse

router = APIRouter(prefix="/api/keys", tags=["keys"],
                   responses={**ERROR_RESPONSES, 403: {"model": ErrorResponse, "description": "Not an admin key"}})


class KeyNotFound(ServiceError, LookupError):
    status_code = 404

    def __init__(self, key_id: str):
        super().__init__(f"API key {key_id} not found")


class KeyCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "alice"}]})

    name: str = Field(..., max_length=64, description="The user the key is for: what they create records it "
                      "as their owner. Several keys may share a name (to rotate one). Letters, digits, - _ . @")
    admin: bool = Field(False, description="Admins see and act on every user's jobs and manage keys.")


class KeyResponse(BaseModel):
    key_id: str
    prefix: str = Field(..., description="The start of the key (sft_<key_id>): how it is known in lists.")
    name: str
    admin: bool
    created_at: str
    revoked_at: str | None = None


class KeyCreateResponse(KeyResponse):
    key: str = Field(..., description="The key itself. Shown this once: only a hash of it is kept.")


@router.post("", response_model=KeyCreateResponse, status_code=201)
def create_key(request: KeyCreateRequest, keys: KeysDep, _: AdminUser) -> dict:
    """Create a key; the answer holds the key, shown this once."""
    try:
        record, key = keys.create(request.name, admin=request.admin)
    except InvalidKeyName as exc:
        raise InvalidConfig(str(exc)) from None
    return {**record.to_dict(), "key": key}


@router.get("", response_model=list[KeyResponse])
def list_keys(keys: KeysDep, _: AdminUser) -> list[dict]:
    """Every key (revoked ones too), by prefix; never a secret."""
    return [record.to_dict() for record in keys.list()]


@router.delete("/{key_id}", response_model=KeyResponse)
def revoke_key(key_id: str, keys: KeysDep, _: AdminUser) -> dict:
    """Revoke a key: refused from its next request on. What its user made stays theirs."""
    record = keys.revoke(key_id)
    if record is None:
        raise KeyNotFound(key_id)
    return record.to_dict()
