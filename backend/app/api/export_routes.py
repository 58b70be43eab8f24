"""Export routes: what this machine can export, start an export, follow it, download it, delete it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ..jobs.exports import ExportManager
from .deps import ManagerDep, ValidJob
from .schemas import ERROR_RESPONSES

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


class ExportFile(BaseModel):
    name: str
    size_bytes: int


class ExportResult(BaseModel):
    model_config = ConfigDict(extra="allow")

    files: list[ExportFile] = Field(..., description="What the export folder holds.")
    size_bytes: int = Field(..., description="Their total size.")
    seconds: float = Field(..., description="How long the export took (merge and conversion included).")


class ExportResponse(BaseModel):
    export_id: str
    job_id: str
    format: str
    type: str | None = Field(None, description="The GGUF type (gguf exports only).")
    status: Literal["pending", "running", "completed", "failed"]
    path: str = Field(..., description="The export's folder on the server.")
    created_at: str
    started_at: str | None = None
    completed_at: str | None = None
    error: str | None = Field(None, description="Why it failed.")
    result: ExportResult | None = None
    download_url: str | None = Field(None, description="The whole folder as a .tar (once completed).")
    files_url: str | None = Field(None, description="Its files one by one: <files_url>/<name> (once completed).")


class ExportListResponse(BaseModel):
    job_id: str
    exports: list[ExportResponse]


class ExportFormatsResponse(BaseModel):
    formats: list[str]
    gguf_types: list[str] = Field(..., description="GGUF types this machine makes now.")
    default_gguf_type: str
    unavailable_gguf_types: dict[str, str] = Field(..., description="Other GGUF types, and why they are missing.")
    converter: dict[str, Any] = Field(..., description="The HF->GGUF converter: package, version, architectures.")
    quantizer: str | None = Field(None, description="llama.cpp's llama-quantize, when found.")


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
