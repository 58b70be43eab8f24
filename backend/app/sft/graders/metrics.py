"""string_check and text_similarity: the comparisons, each with a maintained library where one exists —
rapidfuzz (fuzzy_match), sacrebleu (bleu), nltk (gleu), Google's rouge-score (rouge_1..rouge_5, rouge_l)."""

from __future__ import annotations

import functools


def string_check(operation: str, text: str, reference: str) -> float:
    """1.0 or 0.0: eq / ne compare exactly; like: reference occurs in text; ilike: the same, ignoring case."""
    if operation == "eq":
        return float(text == reference)
    if operation == "ne":
        return float(text != reference)
    if operation == "like":
        return float(reference in text)
    if operation == "ilike":
        return float(reference.lower() in text.lower())
    raise ValueError(f"unknown operation {operation!r}")


def similarity(metric: str, text: str, reference: str) -> float:
    """How close ``text`` is to ``reference`` by ``metric``, from 0.0 to 1.0."""
    if metric == "fuzzy_match":
        from rapidfuzz import fuzz

        return fuzz.ratio(text, reference) / 100.0
    if metric == "bleu":
        import sacrebleu

        return sacrebleu.sentence_bleu(text, [reference]).score / 100.0
    if metric == "gleu":
        from nltk.translate.gleu_score import sentence_gleu

        return float(sentence_gleu([reference.split()], text.split()))
    if metric.startswith("rouge_"):
        kind = "rougeL" if metric == "rouge_l" else f"rouge{metric.removeprefix('rouge_')}"
        return float(_rouge(kind).score(reference, text)[kind].fmeasure)
    raise ValueError(f"unsupported metric {metric!r}")


@functools.cache
def _rouge(kind: str):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer([kind])
