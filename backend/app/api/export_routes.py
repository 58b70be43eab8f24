"""Export routes: what this machine can export, start an export, follow it, download it, delete it."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ..jobs.exports import ExportManager
from .deps import ManagerDep, ValidJob
from .schemas import ERROR_RESPONSES, ExportFormatsResponse, ExportListResponse, ExportResponse

router = APIRouter(prefix="/api/sft", tags=["exports"], responses=ERROR_RESPONSES)


def get_exports(manager: ManagerDep) -> ExportManager:
    return ExportManager.of(manager)


ExportsDep = Annotated[ExportManager, Depends(get_exports)]


class ExportRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"format": "gguf", "type": "q8_0"}, {"format": "adapter"}]},
    )

    format: Literal["gguf", "merged", "adapter"] = Field(
        ..., description="gguf: one file for llama.cpp / Ollama / LM Studio, with a Modelfile; merged: the "
        "adapter merged into the full-precision base (safetensors); adapter: the PEFT adapter (vLLM's layout).",
    )
    type: str | None = Field(
        None, max_length=20,
        description="GGUF type: f16 (default), bf16, q8_0; K-quants (q4_k_m...) where llama-quantize is "
        "installed. GET /api/sft/export-formats lists what this machine makes.",
    )


@router.get("/export-formats", response_model=ExportFormatsResponse)
def export_formats(exports: ExportsDep) -> dict:
    """What this machine can export: formats, GGUF types (and why the others are missing), architectures."""
    return exports.capabilities()


@router.post("/jobs/{job_id}/export", response_model=ExportResponse, status_code=202)
def start_export(job: ValidJob, request: ExportRequest, exports: ExportsDep) -> dict:
    """Start exporting a finished job (runs in the background; follow it in GET .../exports). Asking again for
    an export the job has (pending, running or completed) returns that one; a job keeps at most
    SFT_MAX_EXPORTS_PER_JOB exports (409 beyond: delete one)."""
    return exports.submit(job, fmt=request.format, gguf_type=request.type)


@router.get("/jobs/{job_id}/exports", response_model=ExportListResponse)
def list_exports(job: ValidJob, exports: ExportsDep) -> dict:
    """The job's exports, oldest first, with their status."""
    return {"job_id": job.job_id, "exports": exports.list(job.job_id)}


@router.get("/jobs/{job_id}/exports/{export_id}", response_model=ExportResponse)
def get_export(job: ValidJob, export_id: str, exports: ExportsDep) -> dict:
    """One export's status and files."""
    return exports.get(job.job_id, export_id)


@router.delete("/jobs/{job_id}/exports/{export_id}", response_model=ExportResponse)
def delete_export(job: ValidJob, export_id: str, exports: ExportsDep) -> dict:
    """Delete an export that is not running (409 while it runs): its record and files. Returns it as it was."""
    return exports.delete(job.job_id, export_id)


@router.get(
    "/jobs/{job_id}/exports/{export_id}/download",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-tar": {}},
                     "description": "The export's files as an uncompressed .tar, at its top level."}},
)
def download_export(job: ValidJob, export_id: str, exports: ExportsDep) -> StreamingResponse:
    """Download a completed export: its files (model, Modelfile, README.md) as one .tar, streamed."""
    filename, size, chunks = exports.archive(job, export_id)
    return StreamingResponse(chunks, media_type="application/x-tar",
                             headers={"Content-Length": str(size),
                                      "Content-Disposition": f'attachment; filename="{filename}"'})


@router.get("/jobs/{job_id}/exports/{export_id}/files/{name}", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}, "description": "One file of the export."}})
def download_export_file(job: ValidJob, export_id: str, name: str, exports: ExportsDep) -> FileResponse:
    """Download one file of a completed export (e.g. just the .gguf, or the Modelfile)."""
    return FileResponse(exports.file(job.job_id, export_id, name), media_type="application/octet-stream",
                        filename=name)
