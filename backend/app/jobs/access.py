"""Who may read which files: the one rule for the paths a request names (datasets, models).

Keys off (the local user) and admin keys read what the server's path policy allows
(``SFT_DATASET_ROOTS``, ``SFT_MODEL_ROOTS``). A user's key reads:

- their own uploads and their own jobs' output directories (adapters, checkpoints, merged models),
  however they are named: a file id, an ``ft:`` model or a path;
- the shared roots (``SFT_SHARED_ROOTS``; by default the dataset and model roots), read-only, less the
  data directory, the output root and the model cache, where every user's uploads, outputs, logs and
  converted models live;
- for models, also the bundled models' folders in the model cache (converted once for everyone), not the
  models converted there from someone's GGUF file.

A reference is resolved (symlinks followed) and checked without being opened, so a refusal reads the
same for a file that exists and one that does not, and never says what is there or whose it is. The
server's own path policy (``app.sft.paths``) still applies after this one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from ..core.errors import InvalidConfig
from ..sft.errors import DatasetError, ModelError
from ..sft.data import BUNDLED_PREFIX, looks_local
from ..sft.models import BUNDLED_MODELS, is_local_model, list_models
from ..sft.paths import PathRefused, check_path_text, is_within, resolve_allowed_path

Kind = Literal["dataset", "model"]

#: The config fields that name a file, and what they name.
CONFIG_REFERENCES: tuple[tuple[str, Kind], ...] = (
    ("base_model", "model"), ("dataset_name", "dataset"), ("eval_dataset_name", "dataset"),
)


class Caller(Protocol):
    """Who is asking (``app.api.auth.Principal``)."""

    admin: bool

    @property
    def owner(self) -> str | None: ...


@dataclass(frozen=True)
class PathAccess:
    """The files one caller may name. ``own`` is None for a caller the server's path policy alone governs."""

    own: tuple[Path, ...] | None = None
    shared_datasets: tuple[Path, ...] = ()
    shared_models: tuple[Path, ...] = ()
    private: tuple[Path, ...] = ()
    #: The bundled models' folders in the model cache (the rest of it was converted from someone's file).
    bundled: tuple[Path, ...] = ()

    @property
    def restricted(self) -> bool:
        return self.own is not None

    def allows(self, path: Path, *, kind: Kind) -> bool:
        """Whether the resolved ``path`` is this caller's to read."""
        if self.own is None or is_within(path, self.own):
            return True
        if kind == "model" and is_within(path, self.bundled):
            return True
        shared = self.shared_datasets if kind == "dataset" else self.shared_models
        return is_within(path, shared) and not is_within(path, self.private)

    def check(self, reference: str, *, kind: Kind) -> None:
        """Raise PathRefused when ``reference`` is a local path this caller may not read (bundled names
        and Hub ids pass: the path policy and the loaders judge them)."""
        if self.own is None or not is_local(check_path_text(reference), kind=kind):
            return
        if not self.allows(resolve_allowed_path(reference, roots=None, kind=kind), kind=kind):
            listed = ", ".join(str(root) for root in self.shared(kind)) or "none on this server"
            raise PathRefused(f"local {kind}s must be your own uploads or job outputs, or lie under a shared "
                              f"root ({listed})")

    def check_sources(self, *, dataset_name: str | None = None, base_model: str | None = None) -> None:
        """Raise DatasetError / ModelError naming the field (``dataset_name``, ``base_model``) when one of
        them is a path this caller may not read: the 400 a path outside the roots gets."""
        if dataset_name is not None:
            try:
                self.check(dataset_name, kind="dataset")
            except PathRefused as exc:
                error = DatasetError(str(exc), source=dataset_name)
                error.field = "dataset_name"
                raise error from None
        if base_model is not None:
            try:
                self.check(base_model, kind="model")
            except PathRefused as exc:
                raise ModelError(f"'{base_model}': {exc}", field="base_model") from None

    def check_config(self, config: Mapping[str, Any]) -> None:
        """InvalidConfig naming the field when a config names a file this caller may not read."""
        for field, kind in CONFIG_REFERENCES:
            value = config.get(field)
            if isinstance(value, str):
                try:
                    self.check(value, kind=kind)
                except PathRefused as exc:
                    raise InvalidConfig(f"config.{field}: '{value}': {exc}") from None

    def shared(self, kind: Kind) -> list[Path]:
        """The shared roots of ``kind`` this caller may read, those inside a private root left out."""
        roots = self.shared_datasets if kind == "dataset" else self.shared_models
        return [root for root in roots if not is_within(root, self.private)]

    def model_roots(self, roots: Sequence[Path]) -> list[Path]:
        """The model roots whose ``models/`` folders this caller may be shown (``roots``: the server's)."""
        return list(roots) if self.own is None else self.shared("model")


#: The local user (keys off) and admins: the server's path policy alone.
UNRESTRICTED = PathAccess()


def is_local(reference: str, *, kind: Kind) -> bool:
    """Whether ``reference`` names a file on this machine (not a bundled name or a Hub id)."""
    if kind == "dataset":
        return not reference.startswith(BUNDLED_PREFIX) and looks_local(reference)
    return is_local_model(reference)


def path_access(manager: Any, user: Caller) -> PathAccess:
    """What ``user`` may read through ``manager``'s server: their own files and the shared roots.

    Args:
        manager: the job manager (its settings, jobs and stored files).
        user: the caller; an admin (or the local user, keys off) is not restricted.
    """
    if user.admin:
        return UNRESTRICTED
    settings = manager.settings
    jobs, _ = manager.select_jobs(owner=user.owner)
    own = [Path(job.output_dir).resolve() for job in jobs if job.output_dir]
    own += [Path(record["path"]).resolve() for record in manager.store.load_files(owner=user.owner)]
    datasets, models = settings.resolved_shared_roots
    return PathAccess(own=tuple(own), shared_datasets=tuple(datasets), shared_models=tuple(models),
                      private=tuple(settings.private_roots),
                      bundled=tuple(settings.resolved_model_cache_dir / alias for alias in BUNDLED_MODELS))


def check_submission(manager: Any, user: Caller, config: Mapping[str, Any]) -> None:
    """InvalidConfig naming the field when ``config`` names a file ``user`` may not read. Like the rest of
    pre-flight (the model and dataset checks), skipped by a manager made without it (tests of the queue)."""
    if manager.preflight:
        path_access(manager, user).check_config(config)


def models_on_hand(manager: Any, user: Caller) -> list[dict[str, Any]]:
    """The base models ``user`` may name (``app.sft.models.list_models``): for a user's key, not the
    models converted from someone's file nor the local ones outside the shared roots."""
    settings = manager.settings
    access = path_access(manager, user)
    return list_models(cache_dir=settings.resolved_model_cache_dir,
                       model_roots=access.model_roots(settings.resolved_model_roots), converted=not access.restricted)
