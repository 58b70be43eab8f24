"""One user's view of the jobs, configs and files: listing, lookup, submit with quota and idempotency.

Every route reaches the manager through this view (``UserJobs`` in ``app.api.deps``), so who may see
what is decided here, once, rather than by ``owner=`` / ``visible=`` passed by hand on each route.
Another user's object answers exactly as a missing one does (404 naming the id). With keys off the
caller is the machine's one user, an admin: the view then sees and may do everything, as before keys.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..core.errors import ConfigNotFound, JobNotFound
from ..sft.config import SFTConfig
from . import files
from .access import PathAccess, check_submission, path_access
from .bases import resolve_job_base
from .grader_policy import check_graders, listed
from .manager import SFTJobManager
from .models import SFTJob


class Viewer(Protocol):
    """Who is asking (``app.api.auth.Principal`` is one)."""

    admin: bool

    @property
    def owner(self) -> str | None: ...

    @property
    def scope(self) -> str | None: ...

    @property
    def name(self) -> str | None: ...

    def sees(self, owner: str | None) -> bool: ...


class ScopedJobs:
    """The manager's public methods as one user sees them.

    Args:
        manager: the job manager.
        user: the caller; what it creates records ``user.owner``, lists show ``user.scope``.
    """

    def __init__(self, manager: SFTJobManager, user: Viewer):
        self.manager = manager
        self.user = user

    @property
    def quota(self) -> int | None:
        """The most pending + running jobs this user may have (None: not limited, admins and keys off)."""
        return None if self.user.admin else self.manager.settings.max_active_jobs_per_key

    @property
    def paths(self) -> PathAccess:
        """The files this user may name: their own uploads and job outputs, and the shared roots."""
        return path_access(self.manager, self.user)

    def idempotency_key(self, key: str | None) -> str | None:
        """An Idempotency-Key within its user: another user's key never finds (or reveals) this user's job."""
        return key if key is None or self.user.name is None else f"{self.user.name}\x1f{key}"

    # Jobs

    def get(self, job_id: str) -> SFTJob:
        """The job; JobNotFound, the same for another user's job as for a missing one."""
        job = self.manager.get_job(job_id)
        if not self.user.sees(job.owner):
            raise JobNotFound(job_id)
        return job

    def find(self, job_id: str) -> SFTJob | None:
        """The job, or None when it is missing or another user's."""
        try:
            return self.get(job_id)
        except JobNotFound:
            return None

    def select(self, **filters: Any) -> tuple[list[SFTJob], int]:
        """``SFTJobManager.select_jobs`` over this user's jobs (everyone's for an admin)."""
        return self.manager.select_jobs(**filters, owner=self.user.scope)

    def counts(self) -> dict[str, int]:
        return self.manager.counts(owner=self.user.scope)

    def submit(self, config: dict[str, Any], *, idempotency_key: str | None = None) -> SFTJob:
        """Create and queue a job of this user's, within the quota, naming only files the user may read;
        a retried key returns the same job. ``base_model: "job:<id>"`` starts from one of the user's jobs."""
        config = resolve_job_base(self, config)
        check_submission(self.manager, self.user, config or {})
        if isinstance(config, dict) and isinstance(config.get("graders"), list):
            check_graders(listed(config["graders"], "config.graders"), self.manager.settings, self.user)
        return self.manager.submit(config, idempotency_key=self.idempotency_key(idempotency_key),
                                   owner=self.user.owner, max_active=self.quota)

    def plan(self, config: dict[str, Any]) -> dict[str, Any]:
        """The memory plan of a config this user could submit (same checks as ``submit``), not submitted."""
        config = resolve_job_base(self, config)
        check_submission(self.manager, self.user, config or {})
        return self.manager.plan(config)

    def create(self, config: dict[str, Any] | SFTConfig) -> str:
        """Record a pending job of this user's (not queued yet: ``manager.start_job`` queues it)."""
        return self.manager.create_job(config, owner=self.user.owner, max_active=self.quota)

    def check_quota(self, job: SFTJob) -> None:
        """Before a resume: QuotaExceeded when the job's owner has no room for one more active job."""
        if self.quota is not None and job.status.is_terminal():
            self.manager.check_quota(job.owner, self.quota)

    def resume(self, job: SFTJob) -> SFTJob:
        """Continue a stopped or failed job, within the quota."""
        self.check_quota(job)
        return self.manager.resume_job(job.job_id)

    # Configs

    def config(self, config_id: str) -> dict[str, Any]:
        """The saved config; ConfigNotFound, the same for another user's config as for a missing one."""
        config = self.manager.get_config(config_id)
        if not self.user.sees(config.get("owner")):
            raise ConfigNotFound(config_id)
        return config

    def configs(self) -> list[dict[str, Any]]:
        return self.manager.list_configs(owner=self.user.scope)

    def save_config(self, name: str, config: dict[str, Any]) -> str:
        return self.manager.save_config(name, config, owner=self.user.owner)

    def from_template(self, config_id: str, overrides: dict[str, Any] | None) -> dict[str, Any]:
        """A saved config of this user's with ``overrides`` on top."""
        self.config(config_id)
        return self.manager.config_from_template(config_id, overrides)

    # Files

    def file(self, file_id: str, *, field: str = "file_id") -> dict[str, Any]:
        """An uploaded file's record; FileNotFound naming ``field``, also for another user's file."""
        record = self.manager.store.get_file(file_id)
        if record is None or not self.user.sees(record.get("owner")):
            raise files.FileNotFound(file_id, field=field)
        return record

    def files(self, *, purpose: str | None = None, newest_first: bool = True) -> list[dict[str, Any]]:
        return self.manager.store.load_files(purpose=purpose, newest_first=newest_first, owner=self.user.scope)

    def upload(self, source: Any, *, filename: str | None, purpose: str) -> dict[str, Any]:
        """Check and keep an uploaded fine-tuning file as this user's."""
        return files.save_upload(source, filename=filename, purpose=purpose, store=self.manager.store,
                                 settings=self.manager.settings, owner=self.user.owner)
