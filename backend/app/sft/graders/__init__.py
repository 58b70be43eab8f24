"""Graders in OpenAI's shapes (string_check, text_similarity, python, score_model, multi): definitions
(specs.py), templates, and running them over model samples (run.py). Knows nothing of HTTP or jobs."""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter

from .judge import JudgeEndpoint
from .run import ERROR_FLAGS, GradeResult, GradingContext, grade_samples, mean_scores, no_errors
from .sandbox import SandboxLimits
from .specs import Grader, MultiGrader, PythonGrader, ScoreModelGrader, StringCheckGrader, TextSimilarityGrader
from .templates import make_sample

GRADER = TypeAdapter(Grader)
GRADERS = TypeAdapter(list[Grader])


def parse_grader(data: Any) -> Grader:
    """A grader definition validated (pydantic.ValidationError names the field at fault)."""
    return GRADER.validate_python(data)


def unique_grader_names(graders: list[Grader]) -> list[Grader]:
    """``graders`` if no two share a name (a name is a score's key), else ValueError naming it."""
    seen: set[str] = set()
    for grader in graders:
        if grader.name in seen:
            raise ValueError(f"two graders are named {grader.name!r}: each name keys a score, so names must differ")
        seen.add(grader.name)
    return graders


def json_match_grader(name: str = "json_match") -> StringCheckGrader:
    """JSON equality: the answer parses as JSON equal to the reference (``item.reference_json``). Templates
    render JSON values with sorted keys, so equal values compare equal as text; an answer that is not JSON
    scores 0 (a sample_parse_error)."""
    return StringCheckGrader(type="string_check", name=name, operation="eq", input="{{sample.output_json}}",
                             reference="{{item.reference_json}}")


def exact_match_grader(name: str = "exact_match") -> MultiGrader:
    """The /evaluate score: the stripped answer equals the reference, or both are equal JSON."""
    text = StringCheckGrader(type="string_check", name="text", operation="eq", input="{{sample.output_text}}",
                             reference="{{item.reference}}")
    return MultiGrader(type="multi", name=name, graders={"text": text, "json": json_match_grader("json")},
                       calculate_output="max(text, json)")


def reference_item(reference: str, **fields: Any) -> dict[str, Any]:
    """The ``item`` of an eval row whose expected answer is ``reference``: reference (stripped), reference_json
    (when it parses as JSON), and ``fields`` (e.g. the prompt messages)."""
    reference = reference.strip()
    try:
        reference_json = json.loads(reference)
    except ValueError:
        reference_json = None
    return {**fields, "reference": reference, "reference_json": reference_json}


__all__ = [
    "ERROR_FLAGS", "GRADER", "GRADERS", "GradeResult", "Grader", "GradingContext", "JudgeEndpoint", "MultiGrader",
    "PythonGrader", "SandboxLimits", "ScoreModelGrader", "StringCheckGrader", "TextSimilarityGrader",
    "exact_match_grader", "grade_samples", "json_match_grader", "make_sample", "mean_scores", "no_errors",
    "parse_grader", "reference_item", "unique_grader_names",
]
