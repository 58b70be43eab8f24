"""The two loss paths of a run: TRL's fused LM head, or ordinary cross-entropy over the trained tokens.

TRL 1.16's ``SFTTrainer`` patches a fused, tiled LM head into the model (``trl.trainer.utils.add_fused_lm_head``)
and trains through it: it never builds the ``(batch, length, vocab)`` logits, and it computes the entropy and
whether the label is the top-1 prediction for every token of every step, for its ``entropy`` and
``mean_token_accuracy`` metrics. Without Triton (on CPU) it also projects every position, prompt and padding
included. On the 2-core reference machine one forward + backward of the demo job costs 31 % more through it than
with ordinary cross-entropy.

``CrossEntropySFTTrainer`` keeps TRL's data preparation, collator, labels and loss normalisation and replaces only
the head: it runs the model's backbone, projects the positions whose next-token label is trained through the
model's own output layer, and takes the summed cross-entropy divided by the same token count TRL divides by
(``num_items_in_batch``), so the per-step losses equal TRL's. Above ``LOGITS_CHUNK_BYTES`` of logits it projects
and scores them in chunks, each recomputed in the backward pass (as Liger's fused linear cross-entropy and TRL's
chunked loss avoid the whole logits). Entropy and token accuracy come from those logits on
logging steps only, when asked for.

Imported when a trainer is built (it imports trl), under ``models.model_load_lock``.
"""

from __future__ import annotations

import functools
import types
from typing import Any

import torch
import torch.nn.functional as F
import trl
from peft import PeftModel

#: Config attributes of models whose logits are more than ``lm_head(hidden)`` (soft-capping, scaling: Gemma 2,
#: Cohere, Granite, Falcon-H1...). TRL's head applies them; the plain head does not, so those models keep TRL's.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                     "logits_scaling")


def plain_head_problem(model: Any) -> str | None:
    """Why ``model`` (the causal LM, before PEFT) cannot train with the plain head; None when it can."""
    config = model.config
    text_config = config.get_text_config()
    if text_config is not config:
        return "it is a vision-language model"
    transforms = [name for name in _LOGIT_TRANSFORMS if getattr(text_config, name, None) is not None]
    if transforms:
        return f"its logits are transformed ({', '.join(transforms)})"
    if getattr(text_config, "output_router_logits", False) or getattr(text_config, "router_aux_loss_coef", 0.0):
        return "it is a mixture-of-experts model with a load-balancing loss"
    return None


#: Most bytes of fp32 logits the cross_entropy path holds at once (its forward's output; the backward's gradient of
#: the same size): trained tokens × vocabulary × 4 B above it are projected and scored in chunks of this size, each
#: recomputed in the backward pass (one more LM-head forward per trained token). 16k trained tokens of a 128k
#: vocabulary would otherwise hold 8 GiB; the demo (~320 trained tokens × 49k) stays under it, in one piece.
LOGITS_CHUNK_BYTES = 256 * 1024 * 1024


def chunk_tokens_for(vocab_size: int, budget_bytes: int = LOGITS_CHUNK_BYTES) -> int:
    """Trained tokens per chunk so that a chunk's fp32 logits fit ``budget_bytes``."""
    return max(1, budget_bytes // (4 * vocab_size))


def _chunk_loss(head: Any, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(hidden).float(), targets, reduction="sum")


def chunked_cross_entropy(head: Any, hidden: torch.Tensor, targets: torch.Tensor, chunk_tokens: int) -> torch.Tensor:
    """Summed cross-entropy of ``head(hidden)`` against ``targets`` without ever holding more than ``chunk_tokens``
    rows of logits: each chunk's logits are freed after its loss and recomputed for its backward
    (``torch.utils.checkpoint``, which replays autocast as it was)."""
    from torch.utils.checkpoint import checkpoint

    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk_tokens):
        end = start + chunk_tokens
        total = total + checkpoint(_chunk_loss, head, hidden[start:end], targets[start:end], use_reentrant=False)
    return total


def add_trained_logits_head(model: Any) -> None:
    """Let ``model(..., labels=labels, trained_logits=True)`` return the summed loss of the trained positions.

    It returns ``(loss_sum, logits, targets, hidden)``: the backbone runs as in the model's own forward; the output
    layer (a PEFT-wrapped one included) projects only the positions whose shifted label is not -100 (``hidden``,
    ``targets``). With ``chunk_tokens`` set and more trained tokens than that, the projection and its loss run in
    chunks (``chunked_cross_entropy``) and ``logits`` is None. Like TRL's fused head, it is a flag on ``forward``
    rather than a separate call, so that wrappers around the model (PEFT, DDP) stay in the call path. Without the
    flag the forward is the one it replaces (TRL's, which itself falls back to the model's own).
    """
    replaced = model.forward

    @functools.wraps(type(model).forward)  # generate() checks its kwargs against this signature
    def forward(self, *args, trained_logits=False, labels=None, chunk_tokens=None, **kwargs):
        if not trained_logits:
            if labels is not None:
                kwargs["labels"] = labels
            return replaced(*args, **kwargs)
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state[:, :-1]
        head = self.get_output_embeddings()
        targets = labels[:, 1:].to(head.weight.device)
        mask = targets != -100
        hidden, targets = hidden.to(head.weight.device)[mask], targets[mask]
        if chunk_tokens is not None and targets.numel() > chunk_tokens:
            return chunked_cross_entropy(head, hidden, targets, chunk_tokens), None, targets, hidden
        logits = head(hidden)
        return F.cross_entropy(logits.float(), targets, reduction="sum"), logits, targets, hidden

    model.forward = types.MethodType(forward, model)


class CrossEntropySFTTrainer(trl.SFTTrainer):
    """``trl.SFTTrainer`` whose training and evaluation loss is ordinary cross-entropy over the trained tokens.

    Args:
        token_metrics: log ``entropy`` and ``mean_token_accuracy`` (of the trained tokens), computed on logging
            steps only; TRL computes them on every step.
        *args, **kwargs: as ``trl.SFTTrainer``.
    """

    def __init__(self, *args: Any, token_metrics: bool = False, chunk_logits: bool = True, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.token_metrics = token_metrics
        # Tokens seen since the last log, kept on the device: counting them each step would wait for the device.
        self._pending_tokens: torch.Tensor | int = 0
        model = self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model
        add_trained_logits_head(model)
        self._head = model.get_output_embeddings()
        #: Trained tokens per chunk of logits (None: never chunked).
        self.chunk_tokens = chunk_tokens_for(self._head.out_features) if chunk_logits else None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if return_outputs:  # only for compute_metrics, which needs the full logits: TRL's path builds them
            return super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        loss_sum, logits, targets, hidden = model(**inputs, trained_logits=True, chunk_tokens=self.chunk_tokens)
        count = targets.numel() if num_items_in_batch is None else num_items_in_batch
        loss = loss_sum / torch.as_tensor(count).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())  # as trl.SFTTrainer.compute_loss
        if self.token_metrics and (mode == "eval" or self._logs_this_step()):
            self._record_token_metrics(mode, logits, hidden, targets)
        if mode == "train":
            self._count_tokens(inputs)
        return loss

    def _logs_this_step(self) -> bool:
        """Whether the optimizer step this batch belongs to ends with a log (transformers' DefaultFlowCallback)."""
        step = self.state.global_step + 1
        return (step == 1 and self.args.logging_first_step) or (
            self.args.logging_strategy == "steps" and step % self.state.logging_steps == 0)

    def _record_token_metrics(self, mode: str, logits: torch.Tensor | None, hidden: torch.Tensor,
                              targets: torch.Tensor) -> None:
        with torch.no_grad():
            if logits is not None:
                chunks = [(logits.detach(), targets)]
            else:  # chunked: project the trained tokens again, a chunk at a time
                size = self.chunk_tokens
                chunks = ((self._head(hidden[i:i + size].detach()), targets[i:i + size])
                          for i in range(0, targets.numel(), size))
            entropy_sum = correct_sum = hidden.new_zeros((), dtype=torch.float32)
            for chunk_logits, chunk_targets in chunks:
                log_probs = chunk_logits.float().log_softmax(-1)
                entropy_sum = entropy_sum - (log_probs.exp() * log_probs).sum()
                # argmax takes the first maximum, as TRL's is_top1: a tie with an earlier token is not a hit
                correct_sum = correct_sum + (log_probs.argmax(-1) == chunk_targets).sum()
            n = self.accelerator.gather_for_metrics(torch.tensor(targets.numel(), device=targets.device)).sum()
            entropy_sum = self.accelerator.gather_for_metrics(entropy_sum).sum()
            correct_sum = self.accelerator.gather_for_metrics(correct_sum).sum()
        self._metrics[mode]["entropy"].append((entropy_sum / n).item() if n > 0 else 0.0)
        self._metrics[mode]["mean_token_accuracy"].append((correct_sum / n).item() if n > 0 else 0.0)

    def _count_tokens(self, inputs: dict[str, Any]) -> None:
        # The tokens TRL counts for its num_tokens metric: attention-masked ones, or every position padding-free.
        if "attention_mask" in inputs:
            tokens = inputs["attention_mask"].sum()
        else:
            tokens = torch.tensor(inputs["position_ids"].size(1), device=inputs["position_ids"].device)
        self._pending_tokens = self._pending_tokens + tokens

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if torch.is_tensor(self._pending_tokens):
            seen = self.accelerator.gather_for_metrics(self._pending_tokens).sum().item()
            self._total_train_tokens += int(seen) // self._tp_size
            self._pending_tokens = 0
        self._metrics["train" if self.model.training else "eval"]["num_tokens"] = [self._total_train_tokens]
        super().log(logs, start_time)


# Preference tuning (method dpo): the same plain head, giving DPOTrainer the per-token outputs it reads.

def _token_log_probs(head: Any, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -F.cross_entropy(head(hidden).float(), targets, reduction="none")


def _token_statistics(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Entropy, mean logit and whether the target is the top-1 token, per row of ``logits`` (no gradient)."""
    log_probs = logits.float().log_softmax(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    # argmax takes the first maximum, as TRL's is_top1: a tie with an earlier token is not a hit
    return entropy, logits.float().mean(-1), logits.argmax(-1) == targets


def trained_token_outputs(head: Any, hidden: torch.Tensor, targets: torch.Tensor,
                          chunk_tokens: int | None) -> tuple[torch.Tensor, ...]:
    """Per trained token: its log-probability (with gradient), and the entropy, mean logit and is-top-1 of its
    next-token distribution (without). Above ``chunk_tokens`` tokens the logits are projected a chunk at a time,
    each chunk recomputed for its backward, and once more (without gradient) for the statistics."""
    from torch.utils.checkpoint import checkpoint

    if chunk_tokens is None or targets.numel() <= chunk_tokens:
        logits = head(hidden).float()
        log_probs = -F.cross_entropy(logits, targets, reduction="none")
        with torch.no_grad():
            return (log_probs, *_token_statistics(logits.detach(), targets))
    spans = [(start, start + chunk_tokens) for start in range(0, targets.numel(), chunk_tokens)]
    log_probs = torch.cat([checkpoint(_token_log_probs, head, hidden[a:b], targets[a:b], use_reentrant=False)
                           for a, b in spans])
    with torch.no_grad():
        stats = [_token_statistics(head(hidden[a:b].detach()), targets[a:b]) for a, b in spans]
    return (log_probs, *(torch.cat(column) for column in zip(*stats, strict=True)))


def add_answer_head(model: Any, chunk_tokens: int | None) -> None:
    """Let ``DPOTrainer``'s ``model(..., labels=labels, fused_lm_head=True)`` project only the answer tokens.

    TRL's fused head (``add_fused_lm_head``) returns the same per-token fields, but projects only the labelled
    positions where Triton runs (CUDA, XPU); elsewhere it projects every position, prompt and padding included,
    and computes its statistics for all of them. This replaces it on ``model`` (after TRL patched it) with the
    plain head over the positions whose shifted label is not -100, returning TRL's ``FusedCausalLMOutput``
    with zeros elsewhere, as TRL's compact path does. Without the flag the forward is TRL's.
    """
    from trl.trainer.utils import FusedCausalLMOutput

    replaced = model.forward

    @functools.wraps(type(model).forward)  # generate() checks its kwargs against this signature
    def forward(self, *args, fused_lm_head=False, labels=None, **kwargs):
        if not fused_lm_head:
            return replaced(*args, labels=labels, **kwargs)
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state[:, :-1]
        head = self.get_output_embeddings()
        targets = labels[:, 1:].to(head.weight.device)
        mask = targets != -100
        outputs = trained_token_outputs(head, hidden.to(head.weight.device)[mask], targets[mask], chunk_tokens)
        # masked_scatter keeps an all-prompt batch connected to the graph (a differentiable zero), as TRL's does
        log_probs, entropy, mean_logits, is_top1 = (x.new_zeros(mask.shape).masked_scatter(mask, x) for x in outputs)
        return FusedCausalLMOutput(loss=-log_probs.sum() / mask.sum().clamp(min=1), log_probs=log_probs,
                                   entropy=entropy, mean_logits=mean_logits, is_top1=is_top1, label_mask=mask)

    model.forward = types.MethodType(forward, model)


class CrossEntropyDPOTrainer(trl.DPOTrainer):
    """``trl.DPOTrainer`` whose policy and reference log-probabilities come from the plain head over the answer
    tokens only (``add_answer_head``); TRL's loss, metrics, data and reference handling are unchanged. On the
    2-core reference machine TRL's head made a bare DPO script 0.10 steps/s against 0.14 with only the answers
    projected, the same per-step losses (bench section dpo).

    Args:
        chunk_logits: project more than ``chunk_tokens_for`` the vocabulary's tokens in chunks.
        *args, **kwargs: as ``trl.DPOTrainer``.
    """

    def __init__(self, *args: Any, chunk_logits: bool = True, **kwargs: Any):
        super().__init__(*args, **kwargs)
        for model in (self.model, self.ref_model):
            if model is None:
                continue
            model = self.accelerator.unwrap_model(model)
            model = model.get_base_model() if isinstance(model, PeftModel) else model
            head = model.get_output_embeddings()
            add_answer_head(model, chunk_tokens_for(head.out_features) if chunk_logits else None)
