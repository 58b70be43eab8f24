"""Service settings: one object, read from the environment (prefix ``SFT_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
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
    max_concurrent_jobs: int = Field(1, ge=1, le=64, description="Jobs that train at once.")
    auto_resume_interrupted: bool = Field(
        True,
        description="When the server starts, resume jobs it was running when it stopped (from their "
        "last checkpoint, or from the start when they have none). Off: they are marked failed.",
    )
    allow_remote_code: bool = Field(
        False, description="Allow configs with trust_remote_code=true (runs the model repo's code)."
    )
    generation_cache_size: int = Field(
        2, ge=1, le=64, description="Models kept loaded for generation and evaluation (least recently used go)."
    )
    generate_while_training: bool = Field(
        False,
        description="Serve generation and evaluation while every training slot is busy "
        "(they compete with training for the GPU; refused with 503 otherwise).",
    )

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.resolve()

    @property
    def resolved_database_path(self) -> Path:
        return (self.database_path or self.data_dir / "sft.db").resolve()

    @property
    def resolved_output_root(self) -> Path:
        return (self.output_root or self.data_dir / "outputs").resolve()

    @property
    def resolved_model_cache_dir(self) -> Path:
        return (self.model_cache_dir or self.data_dir / "models").resolve()

    @property
    def resolved_dataset_roots(self) -> list[Path]:
        roots = self.dataset_roots or [self.data_dir, Path.cwd()]
        return [Path(root).resolve() for root in roots]


settings = Settings()
