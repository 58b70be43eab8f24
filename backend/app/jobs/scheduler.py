"""``Scheduler``: the queue of jobs waiting for a training slot, the slots, and queue positions.

Plain bookkeeping on job ids: no threads, no clock, no records. The manager calls it under its lock,
asks ``next_ready()`` which queued job may start now, and reports ends with ``release``.
"""

from __future__ import annotations

from collections import deque


class Scheduler:
    """FIFO queue over ``slots`` training slots.

    Args:
        slots: how many jobs run at once (``max_concurrent_jobs``); may be changed later.
    """

    def __init__(self, slots: int):
        self.slots = slots
        self.queue: deque[str] = deque()
        self.running: set[str] = set()

    def __contains__(self, job_id: str) -> bool:
        """Whether ``job_id`` waits in the queue."""
        return job_id in self.queue

    def enqueue(self, job_id: str) -> int | None:
        """Queue ``job_id`` (once); return its position (1: next) when it must wait, None when a slot is free."""
        if job_id not in self.queue:
            self.queue.append(job_id)
        position = self.queue.index(job_id) + 1
        return None if position + len(self.running) <= self.slots else position

    def dequeue(self, job_id: str) -> bool:
        """Take ``job_id`` out of the queue; False when it was not queued."""
        if job_id not in self.queue:
            return False
        self.queue.remove(job_id)
        return True

    def next_ready(self) -> str | None:
        """The queued job that takes a free slot now (it counts as running), or None: no slot or no job."""
        if not self.queue or len(self.running) >= self.slots:
            return None
        job_id = self.queue.popleft()
        self.running.add(job_id)
        return job_id

    def claim(self, job_id: str) -> None:
        """Count ``job_id`` as running without queueing it (a run re-attached after a restart)."""
        self.running.add(job_id)

    def release(self, job_id: str) -> None:
        """``job_id``'s run is over: its slot is free."""
        self.running.discard(job_id)

    def positions(self) -> dict[str, int]:
        """Each queued job's position, from 1."""
        return {job_id: position for position, job_id in enumerate(self.queue, start=1)}
