"""Dataset preview: what a dataset looks like to the trainer, before a job is submitted."""

from __future__ import annotations

from fastapi import APIRouter

from ..core.errors import InvalidConfig
from ..sft.errors import DatasetError, ModelError
from ..sft.preview import preview_dataset
from .deps import ManagerDep
from .schemas import ERROR_RESPONSES, DatasetPreviewRequest, DatasetPreviewResponse

router = APIRouter(prefix="/api/sft", tags=["datasets"], responses=ERROR_RESPONSES)


@router.post("/datasets/preview", response_model=DatasetPreviewResponse)
def preview(request: DatasetPreviewRequest, manager: ManagerDep) -> dict:
    """Detected format, row count, three examples rendered as the model sees them, token lengths."""
    settings = manager.settings
    try:
        return preview_dataset(
            dataset_name=request.dataset_name, dataset_split=request.dataset_split,
            dataset_format=request.dataset_format, column_mapping=request.column_mapping,
            base_model=request.base_model, max_length=request.max_length,
            completion_only_loss=request.completion_only_loss, examples=request.examples,
            max_rows=request.max_rows, cache_dir=settings.resolved_model_cache_dir,
            allowed_roots=settings.resolved_dataset_roots,
        )
    except DatasetError as exc:
        raise InvalidConfig(f"dataset_name: {exc}") from None
    except ModelError as exc:
        raise InvalidConfig(f"base_model: {exc}") from None
