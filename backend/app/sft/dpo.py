"""Preference tuning (``method: dpo``): TRL's ``DPOConfig`` / ``DPOTrainer`` for one ``SFTConfig``, and how
well a model prefers the chosen answer of held-out pairs.

``trainer.py`` stays the one place that drives TRL's trainers; it asks this module for the DPO arguments
and the trainer class. The reference model is never a second copy for LoRA / QLoRA runs: ``ref_model``
stays None and TRL scores the reference with the adapter disabled. A full fine-tune keeps a frozen copy of
the weights it started from (as TRL does), taken in memory rather than reloaded from the Hub.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .data import read_rows
from .errors import DatasetError
from .formats import PREFERENCE_FORMATS, convert_rows

if TYPE_CHECKING:
    import trl

    from .artifacts import Artifact
    from .config import SFTConfig
    from .model_cache import ModelCache

#: The DPO metrics a job keeps in its metrics series (beside loss, learning rate, grad norm).
DPO_METRIC_KEYS = ("rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected")


def dpo_args(config: SFTConfig, common: dict[str, Any]) -> trl.DPOConfig:
    """``trl.DPOConfig`` from the arguments every method shares plus the DPO fields of ``config``."""
    import trl

    return trl.DPOConfig(**common, beta=config.beta, loss_type=[config.loss_type])


def dpo_trainer_kwargs(model: Any, use_lora: bool) -> dict[str, Any]:
    """What ``trl.DPOTrainer`` takes beyond the arguments every trainer gets: its reference model.

    With LoRA the reference is the adapter-disabled policy (None); a full fine-tune gets a frozen copy of
    the starting weights (TRL would reload them from ``model.config._name_or_path``, which for a converted
    or merged model is not what was loaded)."""
    if use_lora:
        return {"ref_model": None}
    reference = copy.deepcopy(model).eval()
    reference.requires_grad_(False)
    return {"ref_model": reference}


def preference_accuracy(model: Any, tokenizer: Any, rows: list[dict[str, Any]], *, max_length: int = 1024) -> float:
    """Share of TRL preference rows (``prompt`` / ``chosen`` / ``rejected``) where ``model`` gives the chosen
    answer a higher summed log-probability than the rejected one (ties count as wrong)."""
    import torch

    if not rows:
        raise ValueError("no preference rows to score")
    model.eval()
    wins = 0
    with torch.no_grad():
        for row in rows:
            chosen = answer_logprob(model, tokenizer, row["prompt"], row["chosen"], max_length=max_length)
            rejected = answer_logprob(model, tokenizer, row["prompt"], row["rejected"], max_length=max_length)
            wins += chosen > rejected
    return wins / len(rows)


def answer_logprob(model: Any, tokenizer: Any, prompt: Any, answer: Any, *, max_length: int = 1024) -> float:
    """Summed log-probability of ``answer`` after ``prompt``, rendered as TRL renders a preference pair
    (conversational: the chat template with its generation prompt, then the answer turn)."""
    import torch

    prompt_text, answer_text = render_pair(tokenizer, prompt, answer)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer_text, add_special_tokens=False)["input_ids"]
    ids = (prompt_ids + answer_ids)[:max_length]
    device = next(model.parameters()).device
    logits = model(input_ids=torch.tensor([ids], device=device)).logits[0, :-1].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    targets = torch.tensor(ids[1:], device=device)
    start = len(prompt_ids) - 1
    return float(logprobs[start:].gather(1, targets[start:, None]).sum())


def render_pair(tokenizer: Any, prompt: Any, answer: Any) -> tuple[str, str]:
    """``(prompt text, answer text)`` of one side of a preference pair, as the model sees them."""
    if isinstance(prompt, list):
        prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(prompt + answer, tokenize=False)
        if full.startswith(prompt_text):
            return prompt_text, full[len(prompt_text):]
        return "", full
    text = answer
    if tokenizer.eos_token and not text.endswith(tokenizer.eos_token):
        text += tokenizer.eos_token
    return prompt, text


def preference_pairs(dataset_name: str, split: str = "train", *, limit: int | None = None,
                     allowed_roots: list[Path] | None = None) -> list[dict[str, Any]]:
    """A preference dataset's rows as TRL preference rows (DatasetError when it is not one)."""
    raw = read_rows(dataset_name, split, limit=limit, allowed_roots=allowed_roots)
    rows, fmt = convert_rows(raw)
    if fmt not in PREFERENCE_FORMATS:
        raise DatasetError(f"expected preference pairs, found {fmt} rows", source=dataset_name)
    return rows


def score_preferences(cache: ModelCache, artifact: Artifact, rows: list[dict[str, Any]], *, cache_dir: Path,
                      device: str | None = None) -> dict[str, float]:
    """Held-out preference accuracy (``preference_accuracy``) of a job's model and of the model it started
    from (with LoRA: the same weights, adapter disabled; the DPO reference). Loads through the service's
    model cache, as evaluation does."""
    from .device import default_device
    from .model_cache import use_base, use_tuned

    device = device or default_device()
    base = None
    with use_tuned(cache, artifact, cache_dir=cache_dir, device=device) as loaded:
        if loaded.has_adapter:
            with loaded.model.disable_adapter():
                base = preference_accuracy(loaded.model, loaded.tokenizer, rows)
        tuned = preference_accuracy(loaded.model, loaded.tokenizer, rows)
    if base is None:
        with use_base(cache, artifact, cache_dir=cache_dir, device=device) as loaded:
            base = preference_accuracy(loaded.model, loaded.tokenizer, rows)
    return {"base": base, "tuned": tuned, "pairs": len(rows)}
