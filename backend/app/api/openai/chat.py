"""The /v1 models and chat completions: the fine-tuned models of succeeded jobs and the base models on
hand, listed, retrieved, deleted and chatted with (streamed as OpenAI's chunks with ``stream: true``)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from starlette.convertors import Convertor, register_url_convertor

from ...jobs.scoped import ScopedJobs
from ...sft.artifacts import Artifact, base_model_artifact, job_artifact
from ...sft.errors import ModelError
from ...sft.generation import chat, stream_chat
from ...jobs.access import models_on_hand, path_access
from ...sft.models import resolve_model
from ...sft.paths import PathRefused
from ..auth import Principal
from ..deps import CacheDep, CurrentUser, GateDep, ManagerDep, TrainingSlotFree
from ..sft_job_manager import JobStatus, SFTJob, SFTJobManager
from . import jobs
from .errors import OpenAIRoute, invalid, not_found, responses
from .schemas import ChatCompletion, ChatCompletionRequest, Deleted, Model, ModelList


class _ModelNameConvertor(Convertor):
    """A model name: anything, slashes (Hub ids, directories) and line breaks included (``path`` stops at those)."""

    regex = r"[\s\S]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("model_name", _ModelNameConvertor())

router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute, responses=responses(400, 404))


# Models


@router.get("/models", response_model=ModelList)
def list_models_route(manager: ManagerDep, user: CurrentUser) -> dict:
    """Base models on hand (as /api/sft/models lists them) and the fine-tuned models of succeeded jobs."""
    data = [_base_model_object(m["name"], Path(m["path"]), m["kind"]) for m in models_on_hand(manager, user)]
    extras = jobs.load_extras(manager)
    for job in ScopedJobs(manager, user).select(status=JobStatus.COMPLETED.value)[0]:
        model = _fine_tuned_model_object(job, extras.get(job.job_id, {}))
        if model is not None:
            data.append(model)
    return {"object": "list", "data": data}


@router.get("/models/{model:model_name}", response_model=Model)
def retrieve_model(model: str, manager: ManagerDep, user: CurrentUser) -> dict:
    """A base model or a fine-tuned one."""
    if model.startswith("ft:"):
        job, extras, _ = _fine_tuned(manager, model, user)
        found = _fine_tuned_model_object(job, extras, name=model)
        if found is None:
            raise not_found(f"The model '{model}' does not exist", param="model", code="model_not_found")
        return found
    ref = _base_model_ref(manager, model, user)
    return _base_model_object(model, Path(ref.path), ref.kind)


@router.delete("/models/{model:model_name}", response_model=Deleted)
def delete_model(model: str, manager: ManagerDep, user: CurrentUser) -> dict:
    """Delete a fine-tuned model: it leaves /v1/models and chat; its files stay in the job's output_dir."""
    if not model.startswith("ft:"):
        raise invalid(f"model: {model} is a base model; only fine-tuned models (ft:...) can be deleted",
                      param="model")
    job, _, step = _fine_tuned(manager, model, user)
    if step is not None:
        raise invalid(f"model: {model} is a checkpoint; delete its fine-tuned model instead", param="model")
    jobs.update_extras(manager, job.job_id, model_deleted=True)
    return {"id": model, "object": "model", "deleted": True}


# Chat


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={**responses(409, 503, 504), 200: {"content": {"text/event-stream": {}},
                                            "description": "A chat.completion, or chunks with stream: true."}},
)
async def chat_completions(request: ChatCompletionRequest, manager: ManagerDep, cache: CacheDep, gate: GateDep,
                           http: Request, user: CurrentUser, slot: TrainingSlotFree):
    """Chat with a fine-tuned (ft:...) or base model; ``stream: true`` answers Server-Sent Events."""
    artifact = await run_in_threadpool(_chat_artifact, manager, request.model, user)
    slot.require()
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in request.messages]
    options = {"cache_dir": manager.settings.resolved_model_cache_dir, "messages": messages,
               "max_new_tokens": request.new_tokens, "temperature": request.temperature, "top_p": request.top_p,
               "seed": request.seed, "stop": request.stop}
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if request.stream:
        # A stream takes a place in the model request gate for its whole answer; its first item comes once the
        # model is loaded and the prompt rendered, so what fails before answers as an error.
        first, chunks = await gate.stream(http, lambda budget: stream_chat(cache, artifact, budget=budget, **options))
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        events = _chat_events(chunks, completion_id=completion_id, created=created, model=request.model,
                              prompt_tokens=first["prompt_tokens"], include_usage=include_usage)
        return StreamingResponse(events, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    out = await gate.run(http, lambda budget: chat(cache, artifact, budget=budget, **options))
    return {
        "id": completion_id, "object": "chat.completion", "created": created, "model": request.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": out["text"], "refusal": None},
                     "logprobs": None, "finish_reason": out["finish_reason"]}],
        "usage": {"prompt_tokens": out["prompt_tokens"], "completion_tokens": out["completion_tokens"],
                  "total_tokens": out["prompt_tokens"] + out["completion_tokens"]},
        "system_fingerprint": None,
    }


async def _chat_events(chunks: AsyncIterator[dict[str, Any]], *, completion_id: str, created: int, model: str,
                       prompt_tokens: int, include_usage: bool):
    """OpenAI's chat.completion.chunk events, then ``data: [DONE]``."""

    def event(choices: list[dict[str, Any]], **extra: Any) -> str:
        body = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": None, "choices": choices, **extra}
        return f"data: {json.dumps(body)}\n\n"

    def delta(content: dict[str, Any], finish_reason: str | None = None) -> str:
        return event([{"index": 0, "delta": content, "logprobs": None, "finish_reason": finish_reason}])

    try:
        yield delta({"role": "assistant", "content": ""})
        async for item in chunks:
            if "text" in item:
                yield delta({"content": item["text"]})
                continue
            yield delta({}, item["finish_reason"])
            if include_usage:
                completion = item["completion_tokens"]
                yield event([], usage={"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                                       "total_tokens": prompt_tokens + completion})
    except Exception as exc:  # noqa: BLE001 - headers are sent: the error goes in the stream, as OpenAI's does
        error = {"message": f"generation failed: {type(exc).__name__}: {exc}", "type": "server_error",
                 "param": None, "code": None}
        yield f"data: {json.dumps({'error': error})}\n\n"
    finally:
        await chunks.aclose()  # stops the generation at its next token and frees its place (a no-op once done)
    yield "data: [DONE]\n\n"


# Helpers


def _fine_tuned(manager: SFTJobManager, name: str, user: Principal) -> tuple[SFTJob, dict[str, Any], int | None]:
    """The job behind an ``ft:`` model name (or one of its checkpoints); 404 model_not_found otherwise, also
    for another user's model."""
    parsed = jobs.parse_fine_tuned(name)
    job = ScopedJobs(manager, user).find(parsed[0]) if parsed else None
    extras = jobs.extras_of(manager, job.job_id) if job is not None else {}
    step = parsed[1] if parsed else None
    if job is not None and not extras.get("model_deleted"):
        if step is None and name == jobs.fine_tuned_name(job, extras) and job.status is JobStatus.COMPLETED:
            return job, extras, None
        if step is not None and name == jobs.checkpoint_name(job, extras, step):
            return job, extras, step
    raise not_found(f"The model '{name}' does not exist", param="model", code="model_not_found")


def _fine_tuned_model_object(job: SFTJob, extras: dict[str, Any], name: str | None = None) -> dict[str, Any] | None:
    if extras.get("model_deleted") or not (job.result or {}).get("adapter_path"):
        return None
    return {"id": name or jobs.fine_tuned_name(job, extras), "object": "model",
            "created": jobs.epoch_seconds(job.completed_at) or 0, "owned_by": jobs.ORGANIZATION}


def _base_model_ref(manager: SFTJobManager, name: str, user: Principal):
    try:
        # Another user's model (a merged one in their outputs...) is as missing as a model that is not there.
        path_access(manager, user).check(name, kind="model")
        ref = resolve_model(name, cache_dir=manager.settings.resolved_model_cache_dir,
                            allowed_roots=manager.settings.resolved_model_roots)
    except (ModelError, PathRefused):
        ref = None
    if ref is None or (ref.kind == "hub" and not ref.ready):
        raise not_found(f"The model '{name}' does not exist on this server (GET /v1/models lists the models "
                        "on hand)", param="model", code="model_not_found")
    return ref


def _base_model_object(name: str, path: Path, kind: str) -> dict[str, Any]:
    try:
        created = int(path.stat().st_mtime)
    except OSError:
        created = 0
    return {"id": name, "object": "model", "created": created,
            "owned_by": "system" if kind == "bundled" else "local"}


def _chat_artifact(manager: SFTJobManager, name: str, user: Principal) -> Artifact:
    if name.startswith("ft:"):
        job, _, step = _fine_tuned(manager, name, user)
        return job_artifact(job, checkpoint=f"checkpoint-{step}" if step is not None else None,
                            model_roots=manager.settings.resolved_model_roots)
    _base_model_ref(manager, name, user)
    return base_model_artifact(name, model_roots=manager.settings.resolved_model_roots)
