"""Dataset preview: what a dataset looks like to the trainer, before a job is submitted."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ..jobs.access import path_access
from ..sft.preview import preview_dataset
from .deps import CurrentUser, GateDep, ManagerDep
from .schemas import ERROR_RESPONSES, DatasetPreviewRequest, DatasetPreviewResponse, ErrorResponse

router = APIRouter(prefix="/api/sft", tags=["datasets"],
                   responses={**ERROR_RESPONSES,
                              503: {"model": ErrorResponse, "description": "Too many model requests are queued "
                                    "(see Retry-After)"},
                              504: {"model": ErrorResponse, "description": "Stopped at the request time limit "
                                    "(SFT_REQUEST_TIMEOUT_SECONDS)"}})


@router.post("/datasets/preview", response_model=DatasetPreviewResponse)
async def preview(request: DatasetPreviewRequest, manager: ManagerDep, gate: GateDep, http: Request,
                  user: CurrentUser) -> dict:
    """Detected format, row count, three examples rendered as the model sees them, token lengths."""
    settings = manager.settings
    path_access(manager, user).check_sources(dataset_name=request.dataset_name, base_model=request.base_model)

    # It loads a tokenizer (converting a bundled model the first time), so it runs on the model
    # request threads like generate and evaluate, not on the pool that serves /health.
    # Its DatasetError and ModelError name their field (dataset_name, base_model): a 400 (core/errors.py).
    def work(budget) -> dict:
        return preview_dataset(
            dataset_name=request.dataset_name, dataset_split=request.dataset_split,
            dataset_format=request.dataset_format, column_mapping=request.column_mapping,
            base_model=request.base_model, max_length=request.max_length,
            completion_only_loss=request.completion_only_loss, examples=request.examples,
            max_rows=request.max_rows, cache_dir=settings.resolved_model_cache_dir,
            allowed_roots=settings.resolved_dataset_roots, model_roots=settings.resolved_model_roots,
        )

    return await gate.run(http, work)
