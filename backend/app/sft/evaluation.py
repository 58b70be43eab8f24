"""Automatic held-out scoring: greedy generation compared to the reference answer."""

import json
from pathlib import Path
from typing import Any

import torch


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


def score_exact_match(
    model: Any, tokenizer: Any, rows: list[dict], *, max_new_tokens: int = 64, batch_size: int = 8,
    budget: Any = None,
) -> dict:
    """Greedy-generate the last assistant turn of each row and score exact (JSON) match against it.

    ``budget`` (an ``app.sft.inference.Budget``) stops generation at its next token when it runs out
    or is cancelled, and raises then.
    """
    prompts = [
        tokenizer.apply_chat_template(row["messages"][:-1], tokenize=False, add_generation_prompt=True)
        for row in rows
    ]
    references = [row["messages"][-1]["content"] for row in rows]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    padding_side, was_training = tokenizer.padding_side, model.training
    tokenizer.padding_side = "left"
    model.eval()
    predictions: list[str] = []
    try:
        with torch.inference_mode():
            for start in range(0, len(prompts), batch_size):
                batch = tokenizer(
                    prompts[start : start + batch_size],
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
    matches = [is_match(p, r) for p, r in zip(predictions, references)]
    return {
        "exact_match": sum(matches) / len(matches) if matches else 0.0,
        "n": len(matches),
        "examples": [
            {"prompt": p, "reference": r, "prediction": pred, "match": m}
            for p, r, pred, m in list(zip(prompts, references, predictions, matches))[:3]
        ],
    }
