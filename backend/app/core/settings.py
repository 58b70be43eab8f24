"""Service settings: one object, read from the environment (prefix ``SFT_``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the server writes lives under ``data_dir`` unless a setting says otherwise."""

    model_config = SettingsConfigDict(env_prefix="SFT_", extra="ignore")

    data_dir: Path = Field(Path("./data"), description="Root of everything the server writes.")
    database_path: Path | None = Field(
        None, description="SQLite database file. Default: <data_dir>/sft.db."
    )
    output_root: Path | None = Field(
        None, description="Jobs' output_dir must resolve inside this. Default: <data_dir>/outputs."
    )
    model_cache_dir: Path | None = Field(
        None,
        description="Where .gguf files and the bundled model are converted once. "
        "Default: <data_dir>/models.",
    )
    dataset_roots: list[Path] = Field(
        default_factory=list,
        description="Directories local datasets may be read from, besides the bundled ones. "
        "Default: the data directory and the current working directory.",
    )
    model_roots: list[Path] = Field(
        default_factory=list,
        description="Directories local models (directories, .gguf files) may be read from, besides the "
        "model cache. Default: the data directory.",
    )
    shared_roots: list[Path] | None = Field(
        None,
        description="With keys: directories every user may read datasets and models from (read-only), besides "
        "their own uploads and jobs' outputs. The data directory, the output root and the model cache are never "
        "shared (other users' files live there). Default: the dataset and model roots; set, they are dataset and "
        "model roots too. Admin keys read the dataset and model roots, as the local user does with keys off.",
    )
    max_concurrent_jobs: int = Field(
        1, ge=1, le=64,
        description="Jobs that train at once (with SFT_EXECUTOR=ray: jobs submitted to the cluster at once; "
        "those the cluster cannot place yet wait in Ray's queue).",
    )
    executor: Literal["thread", "ray"] = Field(
        "thread",
        description="Where jobs train. thread: threads of this server process (the default). ray: an actor per job "
        "on a Ray cluster, with its own GPUs and CPUs, several workers per job, and jobs that outlive a restart "
        "of this server (README: Scale out on Ray; needs pip install '.[ray]').",
    )
    ray_address: str = Field(
        "",
        description="SFT_EXECUTOR=ray: the cluster, as host:port of its head (what `ray start --head` prints), "
        "auto (the cluster this machine is part of) or ray://host:10001 (Ray Client). Empty: start a Ray inside "
        "this server process; its jobs end with it.",
    )
    ray_storage: str | None = Field(
        None,
        description="SFT_EXECUTOR=ray: a directory this server and every node of the cluster reach (a shared "
        "filesystem such as NFS); jobs' outputs and checkpoints go there. Default: the output root, which is "
        "right for a Ray on this machine.",
    )
    ray_stop_grace_seconds: float = Field(
        300.0, gt=0, le=86_400,
        description="SFT_EXECUTOR=ray: how long a stopped job may take to save before Ray kills it (the job then "
        "fails with category cancelled).",
    )
    auto_resume_interrupted: bool = Field(
        True,
        description="When the server starts, resume jobs it was running when it stopped (from their "
        "last checkpoint, or from the start when they have none). Off: they are marked failed.",
    )
    max_auto_resumes: int = Field(
        2, ge=0, le=100,
        description="Automatic resumes a job gets in a row; interrupted once more, it is marked failed "
        "(category interrupted) instead of taking the server down again at every start.",
    )
    request_timeout_seconds: float = Field(
        300.0, gt=0, le=86_400,
        description="Longest a /generate or /evaluate request may generate; then it stops with a 504.",
    )
    model_request_workers: int = Field(
        1, ge=1, le=16, description="Generation, evaluation, merge and /v1 chat requests (streamed too) served at once."
    )
    max_queued_model_requests: int = Field(
        8, ge=0, le=10_000,
        description="Model requests that may wait for a worker; more get a 503 with Retry-After.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host header values the server answers (names, without the port), besides the loopback "
        "names and the address the request came in on; ['*'] answers any.",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Origins (scheme://host:port) allowed to send state-changing requests, besides the "
        "server's own.",
    )
    max_request_bytes: int = Field(
        2 * 1024 * 1024, ge=1024, le=1024**3, description="Largest request body accepted (413 beyond)."
    )
    allow_remote_code: bool = Field(
        False, description="Allow configs with trust_remote_code=true (runs the model repo's code)."
    )
    generation_cache_size: int = Field(
        2, ge=1, le=64, description="Models kept loaded for generation and evaluation (least recently used go)."
    )
    # Graders: where score_model graders without a base_url ask their judge (/evaluate, /v1 graders run)
    judge_base_url: str | None = Field(
        None, pattern=r"^https?://",
        description="OpenAI-compatible endpoint (…/v1) of score_model graders that give no base_url; this service's "
        "own /v1 works.",
    )
    judge_api_key: str | None = Field(None, description="The key sent to judge_base_url (Bearer), when it needs one.")
    judge_allow_private: bool = Field(
        False, description="With keys on, let a score_model grader's own base_url be a loopback, private or "
        "link-local address (off: such judges are refused, so a user cannot make the server call its internal "
        "network). judge_base_url, set by the admin, may always be private; with keys off every address is allowed.")
    python_graders_for_users: bool = Field(
        False, description="With keys on, let every key use python graders (off: admins only). A python grader runs "
        "the user's code in a limited process whose guard is not a security boundary.")
    python_grader_seconds: float = Field(
        5.0, gt=0, le=300, description="Longest one grade(sample, item) call of a python grader may run.")
    python_grader_memory_mb: int = Field(
        512, ge=64, le=65_536, description="Address space of a python grader's process, in MiB.")
    generate_while_training: bool = Field(
        False,
        description="Serve generation and evaluation while every training slot is busy "
        "(they compete with training for the GPU; refused with 503 otherwise).",
    )

    # Fit planner (app.sft.planner): a job whose estimated peak memory per worker exceeds its device is refused
    fit_margin: float = Field(
        1.10, ge=0.5, le=10,
        description="Share of a device's memory a job's estimated peak may reach before submit refuses it (1.10: "
        "10 % above it). The planner's estimates are within ±25 % of measured peaks; a margin above 1 refuses only "
        "jobs clearly too large, a lower one keeps headroom. 10 turns the check off in practice.",
    )
    gpu_memory_gb: float | None = Field(
        None, gt=0, le=100_000,
        description="Memory of each GPU in the cluster, in GiB, for the fit planner. None: the thread executor reads "
        "its GPU; the Ray executor asks each GPU node's nvidia-smi once (Ray's resources carry no GPU memory).",
    )

    auth: Literal["off", "keys"] | None = Field(
        None,
        description="off: no keys (anyone who reaches the port is admin); keys: every API call needs an API key "
        "(python -m app keys create). Default: off while the server listens on a loopback address; on any other "
        "address it refuses to start until a key exists (or SFT_AUTH=off says so explicitly).",
    )
    max_active_jobs_per_key: int = Field(
        4, ge=1, le=10_000,
        description="With keys: the most pending + running jobs one user (a key's name) may have; more get a 429. "
        "Admin keys are not limited.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins (scheme://host:port) whose pages may call the API from a browser (CORS); none by "
        "default. They may also send state-changing requests.",
    )

    max_upload_bytes: int = Field(
        512 * 1024 * 1024, ge=1, description="Largest file POST /v1/files accepts, in bytes (OpenAI's limit: 512 MB)."
    )

    gguf_converter_dir: Path | None = Field(
        None,
        description="Folder the Makefile installs llama.cpp's HF->GGUF converter into (kept apart from the "
        "service's own gguf package). Default: <the Python environment>/gguf-converter.",
    )
    llama_quantize: Path | None = Field(
        None,
        description="llama.cpp's llama-quantize binary, for K-quant GGUF exports (q4_k_m...). "
        "Default: llama-quantize on PATH; without one only f16, bf16 and q8_0 are offered.",
    )
    max_exports_per_job: int = Field(
        8, ge=1, le=1000,
        description="Exports one job keeps (pending, running and completed; failed ones do not count); more get "
        "a 409 until one is deleted. The same format and type asked again returns the export it has.",
    )

    webhooks_allow_private: bool = Field(
        False,
        description="Allow webhook URLs that resolve to loopback, private, link-local or cloud metadata addresses "
        "(checked when an endpoint is registered and again before each delivery). Off: such URLs are refused.",
    )
    webhooks_retry_period_seconds: float = Field(
        72 * 3600, gt=0, le=30 * 24 * 3600,
        description="How long a webhook delivery is retried (exponential back-off) before it is marked failed.",
    )
    webhooks_first_retry_seconds: float = Field(
        5.0, gt=0, le=3600,
        description="The wait before a failed delivery's first retry; each further retry waits twice as long "
        "(at most an hour).",
    )
    webhooks_timeout_seconds: float = Field(
        10.0, gt=0, le=120, description="The most one webhook delivery may take (connect, send, answer)."
    )
    webhooks_max_parallel: int = Field(
        4, ge=1, le=64,
        description="Webhook deliveries sent at once (one at a time per endpoint, so a slow receiver holds one).",
    )

    @field_validator("ray_storage")
    @classmethod
    def _a_shared_directory(cls, value: str | None) -> str | None:
        if value and "://" in value:
            raise ValueError(f"{value}: give a directory every node mounts (object-store URIs are not supported "
                             "yet: the trainer writes to a filesystem)")
        return value or None

    @property
    def resolved_gguf_converter_dir(self) -> Path:
        return (self.gguf_converter_dir or Path(sys.prefix) / "gguf-converter").resolve()

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.resolve()

    @property
    def resolved_database_path(self) -> Path:
        return (self.database_path or self.data_dir / "sft.db").resolve()

    @property
    def resolved_output_root(self) -> Path:
        if self.executor == "ray" and self.ray_storage:
            return Path(self.ray_storage).resolve()
        return (self.output_root or self.data_dir / "outputs").resolve()

    @property
    def resolved_model_cache_dir(self) -> Path:
        return (self.model_cache_dir or self.data_dir / "models").resolve()

    @property
    def resolved_files_dir(self) -> Path:
        """Where files uploaded through /v1/files are kept (inside the data directory)."""
        return self.resolved_data_dir / "files"

    @property
    def resolved_dataset_roots(self) -> list[Path]:
        roots = [*(self.dataset_roots or [self.data_dir, Path.cwd()]), *(self.shared_roots or [])]
        return [Path(root).resolve() for root in roots]

    @property
    def resolved_shared_roots(self) -> tuple[list[Path], list[Path]]:
        """What a user's key may read besides their own files, as (dataset roots, model roots), before the
        data directory and the output root are taken out (``app.jobs.access`` does that)."""
        if self.shared_roots is not None:
            roots = [Path(root).resolve() for root in self.shared_roots]
            return roots, roots
        return self.resolved_dataset_roots, self.resolved_model_roots[:-1]

    @property
    def private_roots(self) -> list[Path]:
        """Where every user's uploads, outputs, logs, converted models and the database live: never shared."""
        return [self.resolved_data_dir, self.resolved_output_root, self.resolved_model_cache_dir]

    @property
    def server_paths(self) -> list[Path]:
        """What the server itself keeps in the data directory: no job's output_dir may overlap them."""
        data = self.resolved_data_dir
        return [self.resolved_files_dir, data / "logs", data / "tmp", self.resolved_model_cache_dir,
                self.resolved_database_path]

    @property
    def resolved_model_roots(self) -> list[Path]:
        """Where local models may be read from: ``model_roots`` (default the data directory), the shared
        roots, the jobs' output root (a job's model is the base of a job that starts from it: ``job:<id>``;
        a user's key still names only that user's own outputs) and the model cache (last)."""
        roots = [Path(root).resolve() for root in [*(self.model_roots or [self.data_dir]), *(self.shared_roots or [])]]
        output_root = self.resolved_output_root
        return [*roots, *([] if any(output_root.is_relative_to(root) for root in roots) else [output_root]), self.resolved_model_cache_dir]


settings = Settings()
