"""Helpers of the job-service tests: a controllable runner and a way to wind a manager down."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.api.sft_job_manager import SFTJob, SFTJobManager
from app.core.errors import JobConflict, JobNotFound
from factories import wait_for


class GateRunner:
    """A ``runner(job, emit)`` that trains nothing: it blocks until its job is released or stopped.

    ``started`` records the order jobs began in; ``running`` the jobs inside it right now.
    ``fail[job_id] = exc`` makes that job raise once released.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gates: dict[str, threading.Event] = defaultdict(threading.Event)
        self.release_all = threading.Event()
        self.started: list[str] = []
        self.running: set[str] = set()
        self.fail: dict[str, BaseException] = {}
        self.before_return: Callable[[SFTJob, Callable], None] | None = None

    def gate(self, job_id: str) -> threading.Event:
        with self._lock:
            return self._gates[job_id]

    def release(self, job_id: str) -> None:
        self.gate(job_id).set()

    def __call__(self, job: SFTJob, emit) -> dict[str, Any]:
        gate = self.gate(job.job_id)
        with self._lock:
            self.started.append(job.job_id)
            self.running.add(job.job_id)
        try:
            while not (gate.is_set() or self.release_all.is_set() or job.stop_event.is_set()):
                gate.wait(0.01)
            if self.before_return is not None:
                self.before_return(job, emit)
            if job.job_id in self.fail:
                raise self.fail[job.job_id]
            adapter = Path(job.output_dir) / "adapter"
            adapter.mkdir(parents=True, exist_ok=True)
            return {"stopped": job.stop_event.is_set(), "adapter_path": str(adapter), "global_step": 0}
        finally:
            with self._lock:
                self.running.discard(job.job_id)


def job_thread_alive(job_id: str) -> bool:
    return any(t.name == f"sft-job-{job_id}" and t.is_alive() for t in threading.enumerate())


def quiesce(*managers: SFTJobManager, timeout: float = 60.0) -> None:
    """Stop every job of ``managers`` and wait until each has ended and its thread has exited."""
    for manager in managers:
        if isinstance(manager.runner, GateRunner):
            manager.runner.release_all.set()
        for job in list(manager.jobs.values()):
            try:
                manager.stop_job(job.job_id)  # a pending job (queued or not) ends at once
            except (JobConflict, JobNotFound):
                pass
    for manager in managers:
        wait_for(lambda: all(job.status.is_terminal() for job in list(manager.jobs.values())),
                 timeout=timeout, message="every job to end")
    for manager in managers:
        wait_for(lambda: not any(job_thread_alive(job_id) for job_id in list(manager.jobs)),
                 timeout=timeout, message="every job thread to exit")


def error_detail(response) -> str:
    """The ``detail`` of an error answer outside /v1, once its shape is checked: a string ``detail``
    and, for a 400 or a 422, beside it an ``errors`` list of ``{field, message, type}`` that says the
    same, clause by clause (``field: message``; the message alone where no field is at fault)."""
    body = response.json()
    detail = body["detail"]
    assert isinstance(detail, str), body
    if response.status_code not in (400, 422):
        assert body == {"detail": detail}
        return detail
    assert set(body) == {"detail", "errors"} and body["errors"], body
    clauses = [f"{e['field']}: {e['message']}" if e["field"] else e["message"] for e in body["errors"]]
    assert "; ".join(clauses) == detail, body
    assert all(isinstance(e["type"], str) and e["type"] for e in body["errors"]), body
    return detail


def lora_adapter_saver(model_dir: Path) -> Callable[[SFTJob, Callable], None]:
    """A GateRunner ``before_return`` that saves a real (untrained) LoRA adapter of ``model_dir`` where a job's
    adapter goes: for tests of what starts from a job's model (``job:<id>``) without training one."""

    def save(job: SFTJob, emit: Callable) -> None:
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                               LoraConfig(r=8, target_modules="all-linear", task_type="CAUSAL_LM"))
        model.save_pretrained(Path(job.output_dir) / "adapter")

    return save
