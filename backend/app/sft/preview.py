"""Dataset preview: a dataset as the trainer will see it, before any job is submitted.

Reads rows with the same loader and path checks as training (``data.read_rows`` /
``formats.convert_rows``), renders them the way TRL does (chat template on the prompt with its
generation prompt, then on prompt + completion; the completion is the text after the prompt) and
measures token lengths with the base model's tokenizer.
"""

from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

from .data import read_rows
from .errors import DatasetError, ModelError, naming
from .formats import convert_rows
from .models import load_tokenizer, resolve_model


def preview_dataset(
    *,
    dataset_name: str,
    base_model: str,
    cache_dir: Path,
    dataset_split: str = "train",
    dataset_format: str = "auto",
    column_mapping: dict[str, str] | None = None,
    max_length: int = 1024,
    completion_only_loss: bool = True,
    examples: int = 3,
    max_rows: int = 10_000,
    allowed_roots: list[Path] | None = None,
    model_roots: list[Path] | None = None,
) -> dict[str, Any]:
    """Detected format, row count, rendered examples and token-length statistics.

    Args:
        max_rows: rows read and measured at most (``rows_capped`` says when there were more).
        allowed_roots, model_roots: where local datasets and local models may be read from (the path
            policy training applies; None allows any path).

    Returns:
        ``dataset_format``, ``rows``, ``rows_capped``, ``examples`` (each a list of ``{"text",
        "trained"}`` segments and its token count), ``token_lengths`` (min, mean, median, p95, max),
        ``truncated_rows`` and ``truncated_share`` at ``max_length``.

    Raises:
        DatasetError: the dataset cannot be read or a row does not match its format (field: dataset_name).
        ModelError: the base model (its tokenizer) cannot be resolved or loaded (field: base_model).
    """
    with naming({DatasetError: "dataset_name", ModelError: "base_model"}):
        raw = read_rows(dataset_name, dataset_split, limit=max_rows + 1, allowed_roots=allowed_roots)
        capped = len(raw.rows) > max_rows
        if capped:
            raw = replace(raw, rows=raw.rows[:max_rows])
        rows, fmt = convert_rows(raw, dataset_format=dataset_format, column_mapping=column_mapping)
        tokenizer = load_tokenizer(resolve_model(base_model, cache_dir=cache_dir, allowed_roots=model_roots))
        rendered = []
        for i, row in enumerate(rows):
            try:
                rendered.append(_render(tokenizer, row, completion_only_loss=completion_only_loss))
            except Exception as exc:  # the model's chat template refused the row (jinja raises its own types)
                raise DatasetError(f"the model's chat template cannot render it ({type(exc).__name__}: {exc})",
                                   source=raw.source, location=raw.locate(i)) from None
        lengths = [_tokens(tokenizer, segments) for segments in rendered]
        truncated = sum(1 for n in lengths if n > max_length)
        ordered = sorted(lengths)
        return {
            "dataset_name": dataset_name,
            "dataset_split": dataset_split,
            "dataset_format": fmt,
            "rows": len(rows),
            "rows_capped": capped,
            "examples": [{"segments": segments, "tokens": n} for segments, n in list(zip(rendered, lengths))[:examples]],
            "token_lengths": {
                "min": ordered[0],
                "mean": round(statistics.fmean(ordered), 1),
                "median": statistics.median(ordered),
                "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
                "max": ordered[-1],
            },
            "max_length": max_length,
            "truncated_rows": truncated,
            "truncated_share": round(truncated / len(rows), 4),
        }


def _tokens(tokenizer, segments: list[dict[str, Any]]) -> int:
    """A row's length in tokens; a preference pair's is its prompt's and its longer answer's (the trainer
    truncates prompt + answer, each side on its own)."""
    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    shared = "".join(s["text"] for s in segments if not s.get("label"))
    answers = [s["text"] for s in segments if s.get("label")]
    return max(count(shared + answer) for answer in answers) if answers else count(shared)


def _render(tokenizer, row: dict[str, Any], *, completion_only_loss: bool) -> list[dict[str, Any]]:
    """The row's training text as segments, each marked with whether the loss covers it (a preference pair:
    its prompt, then each answer labelled 'chosen' or 'rejected', rendered as DPO renders them)."""
    if "chosen" in row:
        from .dpo import render_pair

        prompt_text, chosen = render_pair(tokenizer, row["prompt"], row["chosen"])
        _, rejected = render_pair(tokenizer, row["prompt"], row["rejected"])
        return [{"text": prompt_text, "trained": False}, {"text": chosen, "trained": True, "label": "chosen"},
                {"text": rejected, "trained": True, "label": "rejected"}]
    if "text" in row:
        text = row["text"]
        if tokenizer.eos_token and not text.endswith(tokenizer.eos_token):
            text += tokenizer.eos_token  # TRL appends EOS to plain text
        return [{"text": text, "trained": True}]
    prompt, completion = row["prompt"], row["completion"]
    if isinstance(prompt, list):  # conversational: rendered as TRL renders it
        prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(prompt + completion, tokenize=False)
        completion_text = full[len(prompt_text):] if full.startswith(prompt_text) else full
        if not full.startswith(prompt_text):
            prompt_text = ""
    else:
        prompt_text = prompt
        completion_text = completion
        if tokenizer.eos_token and not completion_text.endswith(tokenizer.eos_token):
            completion_text += tokenizer.eos_token
    segments = []
    if prompt_text:
        segments.append({"text": prompt_text, "trained": not completion_only_loss})
    segments.append({"text": completion_text, "trained": True})
    return segments
