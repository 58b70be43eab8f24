"""The limits of one model request: a time limit and a cancel flag, checked at every generated token."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .errors import GenerationCancelled, GenerationTimedOut


@dataclass(eq=False)
class Budget:
    """The limits of one model request: a time limit and a cancel flag, checked at every token.

    ``cancel(reason)`` may be called from any thread (the client left, the server is stopping);
    generation stops at its next token and :meth:`raise_if_stopped` says why.
    """

    timeout_seconds: float | None = None
    #: Whose limit ``timeout_seconds`` is, as the time-out message names it.
    limit_name: str = "the time limit of this request"
    started: float = field(default_factory=time.monotonic)
    _cancelled: threading.Event = field(default_factory=threading.Event)
    _reason: str = ""

    def cancel(self, reason: str) -> None:
        self._reason = self._reason or reason
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def expired(self) -> bool:
        return self.timeout_seconds is not None and time.monotonic() - self.started > self.timeout_seconds

    def should_stop(self) -> bool:
        return self._cancelled.is_set() or self.expired()

    def raise_if_stopped(self) -> None:
        """Raise GenerationCancelled or GenerationTimedOut when the work must end (its output is partial)."""
        if self._cancelled.is_set():
            raise GenerationCancelled(f"stopped: {self._reason}")
        if self.expired():
            raise GenerationTimedOut(
                f"stopped after {self.timeout_seconds:g} s, {self.limit_name}; ask for fewer max_new_tokens or rows"
            )

    def stopping_criteria(self) -> Any:
        """A ``StoppingCriteriaList`` for ``model.generate`` that ends generation when :meth:`should_stop`."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        budget = self

        class _BudgetCriteria(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), budget.should_stop(), dtype=torch.bool,
                                  device=input_ids.device)

        return StoppingCriteriaList([_BudgetCriteria()])
