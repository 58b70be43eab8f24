"""Held-out scoring: greedy generation compared to the reference answer, for a job's model and its base."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .budget import Budget
from .data import read_rows
from .device import default_device
from .errors import DatasetError, RequestError
from .formats import convert_rows
from .generation import check_fits_context
from .model_cache import Loaded, ModelCache, use_base, use_tuned

if TYPE_CHECKING:
    from .artifacts import Artifact


#: The wrong answers a score lists at most (the first ones).
MISSES_SHOWN = 100


def load_rows(path: str | Path) -> list[dict]:
    """Read a JSONL file of chat rows ({"messages": [...]}), skipping blank lines."""
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _parse_json(text: str) -> tuple[bool, Any]:
    """Return (True, value) if text parses as JSON, else (False, None)."""
    try:
        return True, json.loads(text)
    except ValueError:
        return False, None


def is_match(prediction: str, reference: str) -> bool:
    """True if the stripped strings are equal or both parse as JSON to equal values."""
    prediction, reference = prediction.strip(), reference.strip()
    if prediction == reference:
        return True
    pred_ok, pred = _parse_json(prediction)
    ref_ok, ref = _parse_json(reference)
    return pred_ok and ref_ok and pred == ref


def generate_answers(
    model: Any, tokenizer: Any, prompts: list[Any], *, max_new_tokens: int = 64, batch_size: int = 8,
    budget: Any = None,
) -> list[str]:
    """Greedy answers (stripped) to ``prompts``: chat messages (rendered with the chat template and its generation
    prompt) or raw text, generated ``batch_size`` at a time, left-padded.

    ``budget`` (an ``app.sft.budget.Budget``) stops generation at its next token when it runs out
    or is cancelled, and raises then.
    """
    texts = [prompt if isinstance(prompt, str) else
             tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True) for prompt in prompts]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    padding_side, was_training = tokenizer.padding_side, model.training
    tokenizer.padding_side = "left"
    model.eval()
    predictions: list[str] = []
    import torch

    try:
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = tokenizer(
                    texts[start : start + batch_size],
                    return_tensors="pt",
                    padding=True,
                    add_special_tokens=False,
                ).to(model.device)
                output = model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                    stopping_criteria=budget.stopping_criteria() if budget is not None else None,
                )
                if budget is not None:
                    budget.raise_if_stopped()
                new_tokens = output[:, batch["input_ids"].shape[1] :]
                predictions.extend(t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    return predictions


def score_exact_match(
    model: Any, tokenizer: Any, rows: list[dict], *, max_new_tokens: int = 64, batch_size: int = 8,
    budget: Any = None, graders: list[Any] | None = None, grading: Any = None,
) -> dict:
    """Greedy-generate the last assistant turn of each row and score exact (JSON) match against it, and each of
    ``graders`` (``app.sft.graders`` definitions; ``grading`` their ``GradingContext``) as its mean score."""
    prompts = [row["messages"][:-1] for row in rows]
    references = [row["messages"][-1]["content"] for row in rows]
    predictions = generate_answers(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                   batch_size=batch_size, budget=budget)
    prompts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    matches = [is_match(p, r) for p, r in zip(predictions, references)]
    scores: dict[str, float] = {}
    if graders:
        from .graders import make_sample, mean_scores, reference_item

        items = [reference_item(ref, messages=row["messages"][:-1]) for ref, row in zip(references, rows)]
        scores, _ = mean_scores(graders, [make_sample(p) for p in predictions], items, grading)
    return {
        "exact_match": sum(matches) / len(matches) if matches else 0.0,
        "n": len(matches),
        "scores": scores,
        "examples": [
            {"prompt": p, "reference": r, "prediction": pred, "match": m}
            for p, r, pred, m in list(zip(prompts, references, predictions, matches))[:3]
        ],
        "misses": [
            {"row": i, "prompt": p, "reference": r, "prediction": pred}
            for i, (p, r, pred, m) in enumerate(zip(prompts, references, predictions, matches)) if not m
        ][:MISSES_SHOWN],
    }


def chat_rows(dataset_name: str, split: str, *, limit: int | None,
              allowed_roots: list[Path] | None) -> list[dict[str, Any]]:
    """Rows of a conversational dataset (messages, sharegpt or alpaca) as ``{"messages": [...]}``."""
    try:
        raw = read_rows(dataset_name, split, limit=limit, allowed_roots=allowed_roots)
        rows, fmt = convert_rows(raw)
    except DatasetError as exc:
        raise RequestError(f"dataset_name: {exc}") from None
    if fmt not in ("messages", "sharegpt", "alpaca"):
        raise RequestError(f"dataset_name: {dataset_name} is in the {fmt} format; evaluation needs "
                           "conversational rows (messages, sharegpt or alpaca) with a final assistant answer")
    return [{"messages": row["prompt"] + row["completion"]} for row in rows]


def evaluate(cache: ModelCache, artifact: Artifact, rows: list[dict[str, Any]], *, cache_dir: Path,
             max_new_tokens: int = 64, device: str | None = None, budget: Budget | None = None,
             graders: list[Any] | None = None, grading: Any = None) -> dict[str, Any]:
    """Exact-match scores (and each of ``graders``' mean score) of the base model and of the job's model on ``rows``.

    Raises:
        RequestError: a row's prompt and ``max_new_tokens`` do not fit the model's context.
        GenerationCancelled, GenerationTimedOut: ``budget`` ended the scoring early.
    """
    device = device or default_device()
    budget = budget or Budget()
    score = functools.partial(score_exact_match, rows=rows, max_new_tokens=max_new_tokens, budget=budget,
                              graders=graders, grading=grading)
    base = None
    with use_tuned(cache, artifact, cache_dir=cache_dir, device=device) as loaded:
        _check_rows_fit(loaded, rows, max_new_tokens=max_new_tokens)
        if loaded.has_adapter:
            with loaded.model.disable_adapter():
                base = score(loaded.model, loaded.tokenizer)
        tuned = score(loaded.model, loaded.tokenizer)
    if base is None:
        with use_base(cache, artifact, cache_dir=cache_dir, device=device) as loaded:
            base = score(loaded.model, loaded.tokenizer)
    return {"base": base, "tuned": tuned}


def _check_rows_fit(loaded: Loaded, rows: list[dict[str, Any]], *, max_new_tokens: int) -> None:
    for number, row in enumerate(rows, start=1):
        text = loaded.tokenizer.apply_chat_template(row["messages"][:-1], tokenize=False, add_generation_prompt=True)
        tokens = len(loaded.tokenizer(text, add_special_tokens=False)["input_ids"])
        check_fits_context(loaded.model, prompt_tokens=tokens, max_new_tokens=max_new_tokens,
                           field_name=f"dataset_name: row {number}")
