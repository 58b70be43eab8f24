"""A /v1 fine-tuning request as the service's own ``SFTConfig``, and the service's errors back in /v1's names.

One table, ``FIELDS``, says which request parameter becomes which config field; it is read one way to
build the config and the other way to name the parameter of a config error (``config.dataset_name`` is
``training_file``), from the error's structured ``field`` rather than from its message.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Any

from ...core.errors import InvalidConfig
from ...jobs import files
from ...jobs.bases import JOB_PREFIX, model_source, resolve_job_base
from ...jobs.preflight import build_config
from ...jobs.scoped import ScopedJobs
from ...sft.config import SFTConfig
from ...sft.formats import method_problem
from ...sft.paths import PathRefused
from . import jobs
from .errors import OpenAIError, invalid
from .schemas import AUTO_BETA, DpoHyperparameters, Hyperparameters, JobCreateRequest

#: /v1 request parameter -> the SFTConfig field it sets (and, read backwards, the parameter a field's error names).
FIELDS: dict[str, str] = {
    "model": "base_model",
    "training_file": "dataset_name",
    "validation_file": "eval_dataset_name",
    "seed": "seed",
    "hyperparameters.n_epochs": "num_train_epochs",
    "hyperparameters.batch_size": "per_device_train_batch_size",
    "hyperparameters.learning_rate_multiplier": "learning_rate",
    "method.type": "method",
    "hyperparameters.beta": "beta",
}
#: SFTConfig field -> the /v1 parameter that set it.
PARAMS: dict[str, str] = {field: param for param, field in FIELDS.items()}


@dataclass(frozen=True)
class FineTune:
    """What a /v1 request resolves to: the config to submit and what the job's /v1 record keeps."""

    config: SFTConfig
    extras: dict[str, Any]


def fine_tune(request: JobCreateRequest, scoped: ScopedJobs) -> FineTune:
    """The request's files looked up (as this user's), "auto" resolved, and one validated ``SFTConfig``.

    Raises:
        OpenAIError: a /v1 error naming the parameter (an unsupported method, a file of the wrong
            purpose or format, a value the config refuses).
    """
    _check_supported(request)
    settings = scoped.manager.settings
    start = _start_model(request.model, scoped)
    train = _fine_tune_file(scoped, request.training_file, "training_file")
    validation = None
    if request.validation_file is not None:
        validation = _fine_tune_file(scoped, request.validation_file, "validation_file")
        if validation["details"]["format"] != train["details"]["format"]:
            raise invalid(f"validation_file {validation['file_id']} is in the "
                          f"{files.FORMAT_NAMES[validation['details']['format']]} format and training_file "
                          f"{train['file_id']} in the {files.FORMAT_NAMES[train['details']['format']]} one; "
                          "use one format", param="validation_file")
    method = request.method.type if request.method is not None else "supervised"
    given = getattr(request.method, method) if request.method is not None else None
    asked = (given.hyperparameters if given is not None else None) or request.hyperparameters \
        or (DpoHyperparameters() if method == "dpo" else Hyperparameters())
    if problem := method_problem(train["details"]["format"], "dpo" if method == "dpo" else "sft"):
        raise invalid(f"training_file: file {train['file_id']}: {problem}", param="training_file")
    examples = train["details"]["rows"]
    n_epochs = jobs.auto_epochs(examples) if asked.n_epochs == "auto" else asked.n_epochs
    batch_size = jobs.auto_batch_size(examples) if asked.batch_size == "auto" else asked.batch_size
    multiplier = 1.0 if asked.learning_rate_multiplier == "auto" else asked.learning_rate_multiplier
    base_rate = jobs.base_learning_rate(jobs.estimate_parameters(
        model_source(start), cache_dir=settings.resolved_model_cache_dir, allowed_roots=settings.resolved_model_roots))
    steps_per_epoch = math.ceil(examples / batch_size)
    values: dict[str, Any] = {
        "model": start["base_model"],
        "training_file": train["path"],
        "seed": request.seed if request.seed is not None else secrets.randbelow(2**31),
        "hyperparameters.n_epochs": n_epochs,
        "hyperparameters.batch_size": batch_size,
        "hyperparameters.learning_rate_multiplier": min(1.0, base_rate * multiplier),
    }
    hyperparameters = {"n_epochs": n_epochs, "batch_size": batch_size, "learning_rate_multiplier": multiplier}
    if method == "dpo":
        values["method.type"] = "dpo"
        beta = getattr(asked, "beta", "auto")  # legacy hyperparameters carry no beta
        values["hyperparameters.beta"] = hyperparameters["beta"] = AUTO_BETA if beta == "auto" else beta
    extra: dict[str, Any] = {"dataset_format": train["details"]["format"], "save_steps": steps_per_epoch,
                             "save_total_limit": jobs.KEPT_CHECKPOINTS, "base_job": start.get("base_job")}
    if validation is not None:
        values["validation_file"] = validation["path"]
        extra["eval_steps"] = steps_per_epoch
    try:
        config = build_config({**{FIELDS[param]: value for param, value in values.items()}, **extra}, prefix="")
    except InvalidConfig as exc:
        raise config_error(exc) from None
    return FineTune(config=config, extras={
        "model": request.model, "suffix": request.suffix, "metadata": request.metadata,
        "training_file": train["file_id"], "validation_file": validation["file_id"] if validation else None,
        "hyperparameters": hyperparameters, "base_learning_rate": base_rate, "method": method,
    })


def config_error(exc: InvalidConfig) -> OpenAIError:
    """The manager's refusal of a config, in /v1's names: the first problem whose field the table knows
    names the parameter; otherwise the detail as it is."""
    for error in exc.errors:
        field = (error.get("field") or "").removeprefix("config.")
        if field in PARAMS:
            return invalid(f"{PARAMS[field]}: {error['message']}", param=PARAMS[field])
    return invalid(exc.detail)


def _check_supported(request: JobCreateRequest) -> None:
    if request.method is not None and request.method.type not in ("supervised", "dpo"):
        raise invalid(f"method.type '{request.method.type}' is not supported: this server runs supervised "
                      "and dpo fine-tuning", param="method.type", code="unsupported_method")
    if request.method is not None:
        other = "dpo" if request.method.type == "supervised" else "supervised"
        if getattr(request.method, other) is not None:
            raise invalid(f"method.{other} given with method.type '{request.method.type}'", param=f"method.{other}")
    if request.integrations:
        raise invalid("integrations are not supported by this server (Weights & Biases: report_to through "
                      "/api/sft)", param="integrations")


def _start_model(model: str, scoped: ScopedJobs) -> dict[str, Any]:
    """The config's ``base_model`` (and ``base_job``): a base model as named, or an ``ft:`` model of this user's
    resolved as ``job:<id>`` is (``jobs/bases.py``: a LoRA fine-tune is merged into its base when the job
    starts, not here); other users' read as missing."""
    if not model.startswith("ft:"):
        try:
            scoped.paths.check(model, kind="model")
        except PathRefused as exc:
            raise invalid(f"model: '{model}': {exc}", param="model") from None
        return {"base_model": model}
    parsed = jobs.parse_fine_tuned(model)
    job = scoped.find(parsed[0]) if parsed is not None and parsed[1] is None else None
    extras = jobs.extras_of(scoped.manager, job.job_id) if job is not None else {}
    if job is None or extras.get("model_deleted") or model != jobs.fine_tuned_name(job, extras):
        raise invalid(f"model: the model '{model}' does not exist", param="model", code="model_not_found")
    try:
        return resolve_job_base(scoped, {"base_model": JOB_PREFIX + job.job_id})
    except InvalidConfig as exc:
        raise config_error(exc) from None


def _fine_tune_file(scoped: ScopedJobs, file_id: str, param: str) -> dict[str, Any]:
    record = scoped.file(file_id, field=param)
    if record["purpose"] != files.FINE_TUNE:
        raise invalid(f"{param}: file {file_id} has purpose '{record['purpose']}', not '{files.FINE_TUNE}'",
                      param=param)
    if not files.dataset_roots_allow(scoped.manager.settings, record["path"]):
        raise invalid(f"{param}: file {file_id} is stored in {record['path']}, outside the server's dataset roots; "
                      "add its data directory to SFT_DATASET_ROOTS", param=param)
    return record
