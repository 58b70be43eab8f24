"""Routes that use a trained job: generate, evaluate, merge, download; and the models on hand.

Thin: each route resolves the job's artifact and calls ``app.sft`` (generation, evaluation,
artifacts). Generate, evaluate and merge run on the app's ``ModelRequestGate`` (own threads, bounded queue, time limit, stopped
when the client leaves), never on the thread pool that serves ``/health`` and the job routes.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from ..jobs.access import models_on_hand
from ..jobs.grader_policy import check_graders, listed
from ..sft import artifacts, evaluation, generation
from ..sft.budget import Budget
from .deps import CacheDep, CurrentUser, GateDep, GradingDep, ManagerDep, TrainingSlotFree, UserJobs, ValidJob
from .schemas import (
    ERROR_RESPONSES,
    ErrorResponse,
    EvaluateRequest,
    EvaluateResponse,
    GenerateRequest,
    GenerateResponse,
    MergeResponse,
    ModelInfo,
)

router = APIRouter(prefix="/api/sft", tags=["models"],
                   responses={**ERROR_RESPONSES,
                              503: {"model": ErrorResponse, "description": "Every training slot is busy, or too "
                                    "many model requests are queued (see Retry-After)"},
                              504: {"model": ErrorResponse, "description": "Stopped at the request time limit "
                                    "(SFT_REQUEST_TIMEOUT_SECONDS)"}})


@router.post("/jobs/{job_id}/generate", response_model=GenerateResponse)
async def generate(job: ValidJob, request: GenerateRequest, manager: ManagerDep, cache: CacheDep,
                   gate: GateDep, http: Request, slot: TrainingSlotFree) -> dict:
    """Generate with a finished job's model (greedy by default), optionally beside its base model."""
    artifact = artifacts.job_artifact(job, checkpoint=request.checkpoint,
                                      model_roots=manager.settings.resolved_model_roots)
    slot.require()
    messages = [m.model_dump() for m in request.messages] if request.messages is not None else None
    return await gate.run(http, lambda budget: generation.generate(
        cache, artifact, cache_dir=manager.settings.resolved_model_cache_dir, messages=messages,
        prompt=request.prompt, max_new_tokens=request.max_new_tokens, temperature=request.temperature,
        top_p=request.top_p, seed=request.seed, compare_base=request.compare_base, budget=budget,
    ))


@router.get(
    "/jobs/{job_id}/adapter",
    response_class=FileResponse,
    responses={200: {"content": {"application/gzip": {}},
                     "description": "The adapter (or full model) directory as a .tar.gz, root folder adapter/."}},
)
def download_adapter(job: ValidJob) -> FileResponse:
    """Download the job's adapter directory (the model directory for a full fine-tune) as .tar.gz."""
    artifact = artifacts.job_artifact(job)
    # Built once per adapter, beside it in the job's output_dir; later downloads send the same file.
    archive = artifacts.cached_archive(artifact.path)
    return FileResponse(archive, media_type="application/gzip", filename=f"{job.job_id}-adapter.tar.gz")


@router.post("/jobs/{job_id}/merge", response_model=MergeResponse)
async def merge(job: ValidJob, manager: ManagerDep, gate: GateDep, http: Request) -> dict:
    """Merge the LoRA adapter into its base (fp32, also for QLoRA) and save it to <output_dir>/merged."""
    artifact = artifacts.job_artifact(job, model_roots=manager.settings.resolved_model_roots)
    cache_dir = manager.settings.resolved_model_cache_dir
    return await gate.run(http, lambda budget: artifacts.merge_adapter(artifact, cache_dir=cache_dir))


@router.post("/evaluate", response_model=EvaluateResponse)
async def evaluate(request: EvaluateRequest, manager: ManagerDep, cache: CacheDep, gate: GateDep,
                   http: Request, jobs: UserJobs, slot: TrainingSlotFree, grading: GradingDep) -> dict:
    """Exact-match score, and each grader's mean score, of the base model and of the job's model on a
    conversational dataset."""
    job = jobs.get(request.job_id)
    settings = manager.settings
    jobs.paths.check_sources(dataset_name=request.dataset_name)
    check_graders(listed(request.graders or [], "graders"), settings, jobs.user)
    artifact = artifacts.job_artifact(job, checkpoint=request.checkpoint, model_roots=settings.resolved_model_roots)
    slot.require()

    def work(budget: Budget) -> dict:
        rows = evaluation.chat_rows(request.dataset_name, request.split, limit=request.max_samples,
                                              allowed_roots=settings.resolved_dataset_roots)
        return evaluation.evaluate(cache, artifact, rows, cache_dir=settings.resolved_model_cache_dir,
                                   max_new_tokens=request.max_new_tokens, budget=budget, graders=request.graders,
                                   grading=grading)

    scores = await gate.run(http, work)
    return {"job_id": job.job_id, "dataset_name": request.dataset_name, "split": request.split, **scores}


@router.get("/models", response_model=list[ModelInfo])
def list_models(manager: ManagerDep, user: CurrentUser) -> list[dict]:
    """Models usable offline: bundled aliases, converted and local model directories, the Hub cache."""
    return models_on_hand(manager, user)
