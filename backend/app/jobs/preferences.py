"""Preferences picked in "Try it": per user, per tuned job; a preference dataset; a DPO job that starts from the job.

Beside a completed job's answer and the base model's, the dashboard lets the user pick the better one or write a
corrected answer. Each pick is a row: the prompt (chat messages), the answer preferred (``chosen``) and the one
not (``rejected``), and how it was made (``source``). A user's rows download as JSONL in TRL's conversational
preference form (``prompt`` / ``chosen`` / ``rejected`` as message lists), and "Train DPO" writes that file into
the user's uploads and submits a ``method: "dpo"`` job whose base is the tuned job (``base_model: "job:<id>"``),
with the tuned job's own training settings unless overridden.

Another user's preference, or one of a job the caller cannot see, answers 404 exactly as a missing one does.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from ..core.errors import InvalidConfig, JobConflict, ServiceError
from . import files
from .models import JobStatus, SFTJob, utcnow
from .preflight import build_config
from .scoped import ScopedJobs

#: Preferences one user may keep (all jobs together).
MAX_PREFERENCES_PER_OWNER = 10_000
#: The longest answer (chosen or rejected) a preference holds, in characters.
MAX_ANSWER_CHARS = 100_000
#: How a preference was made: the tuned answer picked over the base one, the base over the tuned, or a corrected
#: answer written over the tuned one.
SOURCES = ("picked_tuned", "picked_base", "corrected")
#: Epochs a DPO job from preferences trains for when the request sets neither max_steps nor num_train_epochs.
DEFAULT_EPOCHS = 3
#: Fields of the tuned job's config a DPO job does not take: its SFT data and what reads it, its length, its own
#: output directory, the SFT loss. The DPO job sets method, base_model and dataset_name itself.
NOT_CARRIED = (
    "output_dir", "dataset_name", "dataset_format", "dataset_split", "column_mapping", "max_samples",
    "eval_dataset_name", "eval_dataset_split", "validation_split", "eval_steps", "completion_only_loss", "packing",
    "max_steps", "num_train_epochs", "loss_path", "token_metrics",
)
FIXED = ("method", "base_model", "dataset_name")


class PreferenceNotFound(ServiceError, LookupError):
    status_code = 404
    error_type = "not_found"

    def __init__(self, preference_id: str):
        super().__init__(f"Preference {preference_id} not found")


class InvalidPreference(InvalidConfig):
    """A preference (or a request to train on them) that cannot be used; ``field`` is the one at fault."""

    error_type = "invalid_request"

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}", field=field)


def public_preference(record: dict[str, Any]) -> dict[str, Any]:
    """A stored preference as the API shows it."""
    return {"id": record["preference_id"], "job_id": record["job_id"], "prompt": record["prompt"],
            "chosen": record["chosen"], "rejected": record["rejected"], "source": record["source"],
            "owner": record["owner"], "created_at": record["created_at"]}


def trl_row(record: dict[str, Any]) -> dict[str, Any]:
    """A preference as a line of TRL's conversational preference dataset."""
    return {"prompt": record["prompt"], "chosen": [{"role": "assistant", "content": record["chosen"]}],
            "rejected": [{"role": "assistant", "content": record["rejected"]}]}


def to_jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(trl_row(r), ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def dpo_config(job: SFTJob, dataset: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The config of a DPO job on ``dataset`` that starts from ``job``: the tuned job's training settings (not its
    data, length or output), ``overrides`` on top.

    Raises:
        InvalidPreference: an override names a field the preferences set (method, base_model, dataset_name).
    """
    for name in FIXED:
        if name in overrides:
            raise InvalidPreference(f"overrides.{name}", f"set by the preferences' DPO job; leave it out")
    carried = {key: value for key, value in job.config.items() if key not in NOT_CARRIED}
    if "max_steps" not in overrides and "num_train_epochs" not in overrides:
        carried["num_train_epochs"] = DEFAULT_EPOCHS
    return {**carried, "method": "dpo", "base_model": f"job:{job.job_id}", "dataset_name": dataset, **overrides}


class ScopedPreferences:
    """One user's preferences (an admin's view: everyone's), through the user's view of the jobs.

    Args:
        jobs: the caller's view of the jobs (``app.api.deps.UserJobs``): who they are, what they may see.
    """

    def __init__(self, jobs: ScopedJobs):
        self.jobs = jobs
        self.user = jobs.user
        self.store = jobs.manager.store

    def _tuned_job(self, job_id: str) -> SFTJob:
        """The caller's completed job (JobNotFound for another user's, as for a missing one)."""
        job = self.jobs.get(job_id)
        if job.status is not JobStatus.COMPLETED:
            raise JobConflict(f"Job {job_id} is {job.status.value}; preferences are kept for a completed job's "
                              "answers")
        return job

    def add(self, *, job_id: str, prompt: list[dict[str, str]], chosen: str, rejected: str,
            source: str) -> dict[str, Any]:
        """Keep one preference of the caller's for their completed job ``job_id``.

        Raises:
            JobNotFound: no such job of the caller's. JobConflict: the job has not completed, or the caller keeps
                MAX_PREFERENCES_PER_OWNER preferences already.
            InvalidPreference: a chosen answer without text, an empty rejected one, a too long one, the same answer
                chosen and rejected, an unknown source, no message with text in the prompt.
        """
        # A rejected answer may be blank (a model's answer of newlines is one to reject); a chosen one says something.
        if not chosen.strip():
            raise InvalidPreference("chosen", "no text; the preferred answer must say something")
        if not rejected:
            raise InvalidPreference("rejected", "empty; give the answer that is worse")
        for name, text in (("chosen", chosen), ("rejected", rejected)):
            if len(text) > MAX_ANSWER_CHARS:
                raise InvalidPreference(name, f"{len(text):,} characters, more than the {MAX_ANSWER_CHARS:,} a "
                                        "preference keeps")
        if chosen.strip() == rejected.strip():
            raise InvalidPreference("chosen", "the same answer as rejected; a preference needs two different answers")
        if source not in SOURCES:
            raise InvalidPreference("source", f"unknown source {source!r}; one of {', '.join(SOURCES)}")
        if not any(message["content"].strip() for message in prompt):
            raise InvalidPreference("prompt", "no message has any text")
        job = self._tuned_job(job_id)
        kept = self.store.count_preferences(owner=self.user.owner)
        if kept >= MAX_PREFERENCES_PER_OWNER:
            raise JobConflict(f"{kept:,} preferences are kept, the most one user may have; delete some first")
        record = {"preference_id": "pref_" + secrets.token_hex(12), "owner": self.user.owner, "job_id": job.job_id,
                  "prompt": prompt, "chosen": chosen, "rejected": rejected, "source": source, "created_at": utcnow()}
        self.store.insert_preference(record)
        return public_preference(record)

    def list(self, *, job_id: str | None = None, limit: int | None = None,
             offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """A page of the caller's preferences (of one job, or all), oldest first, and how many there are."""
        rows = self.store.preferences(owner=self.user.scope, job_id=job_id, limit=limit, offset=offset)
        return [public_preference(r) for r in rows], self.store.count_preferences(owner=self.user.scope, job_id=job_id)

    def jsonl(self, *, job_id: str | None = None) -> bytes:
        """The caller's preferences (of one job, or all) as TRL conversational preference JSONL."""
        return to_jsonl(self.store.preferences(owner=self.user.scope, job_id=job_id))

    def delete(self, preference_id: str) -> dict[str, Any]:
        """Delete one of the caller's preferences; return it as it was."""
        record = self.store.get_preference(preference_id)
        if record is None or not self.user.sees(record["owner"]):
            raise PreferenceNotFound(preference_id)
        self.store.delete_preferences(preference_id=preference_id)
        return public_preference(record)

    def delete_for_job(self, job_id: str) -> int:
        """Delete the caller's preferences of ``job_id`` (an admin's: everyone's); return how many went.

        Raises:
            JobNotFound: the caller has none for ``job_id`` and no such job of theirs exists (a deleted job's
                preferences are still theirs to delete).
        """
        deleted = self.store.delete_preferences(owner=self.user.scope, job_id=job_id)
        if not deleted:
            self.jobs.get(job_id)
        return deleted

    def train(self, job_id: str, overrides: dict[str, Any] | None = None) -> tuple[SFTJob, dict[str, Any], int]:
        """Write the caller's preferences of ``job_id`` into their uploads and submit a DPO job from the job.

        Returns:
            The new job, the file record of its dataset, and how many preferences it holds.

        Raises:
            JobNotFound, JobConflict: as ``add``. InvalidPreference: no preferences for the job, an override of a
                field the preferences set. InvalidConfig: an override that does not validate (``overrides.<field>``),
                or what the submit refuses.
        """
        job = self._tuned_job(job_id)
        rows = self.store.preferences(owner=self.user.scope, job_id=job.job_id)
        if not rows:
            raise InvalidPreference("job_id", f"no preferences kept for job {job.job_id}; pick answers in its "
                                    "Try it first")
        overrides = overrides or {}
        # Checked before a file is written: an override's problem is named overrides.<field>.
        build_config(dpo_config(job, "preferences.jsonl", overrides), prefix="overrides.")
        record = files.save_generated(to_jsonl(rows), filename=f"preferences-{job.job_id}.jsonl", rows=len(rows),
                                      fmt="preference", store=self.store, settings=self.jobs.manager.settings,
                                      owner=self.user.owner)
        try:
            created = self.jobs.submit(dpo_config(job, record["path"], overrides))
        except BaseException:
            files.delete_file(self.store, record, busy_job=None)
            raise
        return created, record, len(rows)
