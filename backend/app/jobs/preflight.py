"""Submit-time checks: a request becomes one resolved ``SFTConfig``, or an ``InvalidConfig`` naming the field.

``build_config`` validates a request's fields once (any API surface calls it: ``/api/sft`` through the
manager, ``/v1``'s mapper directly); ``resolve_config`` takes that typed value, resolves what depends on
the server (the output directory inside the output root) and checks what would only fail later (the
model, the dataset, trackers, remote code, precision on this machine). What it returns is what the
job keeps, every field present. Every ``InvalidConfig`` raised here carries structured ``errors``
whose ``field`` is the dotted path (``config.lora_r``), so a surface maps fields, never message text.
"""

from __future__ import annotations

import difflib
import importlib.util
import shutil
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..core.errors import InvalidConfig, JobConflict
from ..core.settings import Settings
from ..sft.config import SFTConfig
from ..sft.data import check_dataset
from ..sft.errors import DatasetError, ModelError, SFTError
from ..sft.formats import method_problem
from ..sft.models import check_model, default_device, module_names
from .bases import model_source

#: Python packages each ``report_to`` target needs (any one of them).
TRACKER_PACKAGES = {"wandb": ("wandb",), "tensorboard": ("tensorboard", "tensorboardX")}


def build_config(raw: dict[str, Any] | SFTConfig, *, prefix: str = "config.") -> SFTConfig:
    """A request's fields as a validated ``SFTConfig`` (an ``SFTConfig`` is returned as it is).

    Raises:
        InvalidConfig: one structured error per problem, its ``field`` ``prefix`` + the field's name.
    """
    if isinstance(raw, SFTConfig):
        return raw
    try:
        return SFTConfig.model_validate(raw)
    except ValidationError as exc:
        problems = validation_problems(exc.errors(), prefix)
        raise InvalidConfig("; ".join(f"{field}: {message}" for field, message in problems),
                            errors=[{"field": field, "message": message, "type": InvalidConfig.error_type}
                                    for field, message in problems]) from None


def resolve_config(raw: dict[str, Any] | SFTConfig, *, job_id: str, settings: Settings,
                   preflight: bool = True) -> SFTConfig:
    """Validate ``raw`` (unless it is an ``SFTConfig`` already) and check that it can run; return the
    config as the job will keep it.

    Raises:
        InvalidConfig: with a detail naming the field (and file and line for a dataset).
    """
    config = build_config(raw)
    output_dir = resolve_output_dir(config.output_dir, job_id=job_id, settings=settings)
    if config.trust_remote_code and not settings.allow_remote_code:
        raise _refuse("trust_remote_code", "this server does not allow remote code (set SFT_ALLOW_REMOTE_CODE=true)")
    try:
        config.resolve_precision(default_device())
    except SFTError as exc:
        raise _refuse("precision", str(exc)) from None
    _check_trackers(config.report_to)
    if preflight:
        check_model_and_data(config, settings)
    # Fields set by the request stay "set", so the config's own cross-field rules read the same later.
    return config.model_copy(update={"output_dir": str(output_dir)})


def complete_config(config: dict[str, Any]) -> dict[str, Any]:
    """An older record's config (only the fields its request set) with every default filled in, as
    submit stores it now. Raises ``ValidationError`` when it no longer validates."""
    return SFTConfig.model_validate(config).model_dump(mode="json")


def check_model_and_data(config: SFTConfig, settings: Settings) -> None:
    try:
        ref = check_model(model_source(config), cache_dir=settings.resolved_model_cache_dir,
                          allowed_roots=settings.resolved_model_roots)
    except ModelError as exc:
        raise _refuse("base_model", str(exc)) from None
    if config.use_lora and config.lora_target_modules != "all-linear" and not config.trust_remote_code:
        _check_target_modules(config, ref)
    roots = settings.resolved_dataset_roots
    try:
        fmt = check_dataset(config.dataset_name, config.dataset_split, dataset_format=config.dataset_format,
                            column_mapping=config.column_mapping, allowed_roots=roots)
    except DatasetError as exc:
        raise _refuse("dataset_name", str(exc)) from None
    if problem := method_problem(fmt, config.method):
        raise _refuse("dataset_name", f"{config.dataset_name}: {problem}")
    if config.eval_dataset_name:
        try:
            check_dataset(config.eval_dataset_name, config.eval_dataset_split, dataset_format=fmt,
                          column_mapping=config.column_mapping, allowed_roots=roots)
        except DatasetError as exc:
            raise _refuse("eval_dataset_name", str(exc)) from None


def resolve_output_dir(output_dir: str | None, *, job_id: str, settings: Settings) -> Path:
    """A job's output directory inside the output root (relative paths are taken from it)."""
    root = settings.resolved_output_root
    if output_dir is None:
        return root / job_id
    path = Path(output_dir).expanduser()
    resolved = (path if path.is_absolute() else root / path).resolve()
    if not resolved.is_relative_to(root) or resolved == root:
        raise _refuse("output_dir", f"{output_dir!r} resolves outside the output root {root}; "
                      "use a relative path (it is taken from the output root) or leave it unset")
    if any(resolved == own or resolved.is_relative_to(own) or own.is_relative_to(resolved)
           for own in settings.server_paths):
        # Only when the output root holds the server's own folders (SFT_OUTPUT_ROOT=<data>): a job must not
        # write over, or start clean in, uploads, logs or the model cache.
        raise _refuse("output_dir", f"{output_dir!r} would overlap this server's own files "
                      "(uploads, logs, model cache, database); choose another name")
    return resolved


def create_output_dir(output_dir: str, *, fresh: bool = False) -> None:
    """Create a job's output directory at submit, so a name the file system refuses is a 400 now.

    ``fresh`` (with keys, where no job holds the directory any more): what is left in it, a deleted job's
    checkpoints perhaps another user's, is removed, so the new job neither lists nor resumes from them.
    """
    path = Path(output_dir)
    try:
        if fresh and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _refuse("output_dir", f"{output_dir} cannot be created ({exc.strerror or exc})") from None


def format_validation_error(errors: list[dict[str, Any]], prefix: str = "config.") -> str:
    """One clause per problem, each naming the field: ``config.lora_r: Input should be ...``."""
    return "; ".join(f"{field}: {message}" for field, message in validation_problems(errors, prefix))


def validation_problems(errors: list[dict[str, Any]], prefix: str = "config.") -> list[tuple[str, str]]:
    """pydantic's errors as ``(field, message)`` pairs, the field a dotted path under ``prefix``."""
    known = list(SFTConfig.model_fields)
    parts = []
    for error in errors:
        loc = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(error["loc"][-1]), known, n=1)
            message = "unknown field" + (f" (did you mean {close[0]}?)" if close else "")
        field = f"{prefix}{loc}" if loc else (prefix.rstrip(".") or "config")
        parts.append((field, message))
    return parts


def check_partial_config(config: dict[str, Any]) -> None:
    """A template may leave fields out, but the ones it has must be valid."""
    unknown = [key for key in config if key not in SFTConfig.model_fields]
    if unknown:
        known = list(SFTConfig.model_fields)
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, known, n=1)
            hints.append(f"config.{key}: unknown field" + (f" (did you mean {close[0]}?)" if close else ""))
        raise InvalidConfig("; ".join(hints))
    try:
        SFTConfig.model_validate({"base_model": "x", "dataset_name": "x", "max_steps": 1, **config})
    except ValidationError as exc:
        field_errors = [e for e in exc.errors() if e["loc"]]
        if field_errors:
            raise InvalidConfig(format_validation_error(field_errors)) from None


def _refuse(field: str, message: str) -> InvalidConfig:
    """The config's ``field`` cannot run: ``message`` says why (a structured error naming ``config.<field>``)."""
    return InvalidConfig(f"config.{field}: {message}", field=f"config.{field}")


def _check_trackers(report_to: list[str]) -> None:
    for target in report_to:
        packages = TRACKER_PACKAGES[target]
        if not any(importlib.util.find_spec(p) is not None for p in packages):
            raise _refuse("report_to", f"{target} is not installed on this server "
                                       f"(pip install {packages[0]}); install it or leave it out of report_to")


def _check_target_modules(config: SFTConfig, ref: Any) -> None:
    """lora_target_modules against the model's module names, where they can be read cheaply (a local,
    converted or cached model); otherwise the trainer checks them when it loads the model."""
    names = module_names(ref)
    if names is None:
        return
    unknown = names.unknown(list(config.lora_target_modules))
    if unknown:
        raise _refuse("lora_target_modules", f"{', '.join(unknown)} match no module of {config.base_model} "
                      f"(its linear layers: {', '.join(names.linear) or 'none'}; or use 'all-linear')")
