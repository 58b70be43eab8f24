"""Running graders over samples: one score per sample, with OpenAI's error flags when a grader could not score.

A grader that cannot score a sample (a missing template variable, a python grader's error, an unreadable
judge reply) scores 0.0 for it and says why in ``errors`` — the way OpenAI's graders/run reports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import metrics
from .formula import FormulaError, evaluate
from .judge import JudgeEndpoint, JudgeError, ask_judge, judge_messages, read_score
from .sandbox import SandboxError, SandboxLimits, run_python_grader
from .specs import MultiGrader, PythonGrader, ScoreModelGrader, StringCheckGrader, TextSimilarityGrader
from .templates import TemplateError, render

ERROR_FLAGS = ("formula_parse_error", "invalid_variable_error", "model_grader_parse_error",
               "model_grader_refusal_error", "model_grader_server_error", "other_error", "python_grader_runtime_error",
               "python_grader_server_error", "sample_parse_error", "truncated_observation_error",
               "unresponsive_reward_error")


def no_errors() -> dict[str, Any]:
    return {**{flag: False for flag in ERROR_FLAGS}, "model_grader_server_error_details": None,
            "python_grader_runtime_error_details": None, "python_grader_server_error_type": None}


@dataclass
class GradeResult:
    """One grader's score of one sample."""

    score: float = 0.0
    errors: dict[str, Any] = field(default_factory=no_errors)
    sub_rewards: dict[str, float] = field(default_factory=dict)
    token_usage: int | None = None
    #: Why the grader could not score (None when it did).
    details: str | None = None

    @property
    def failed(self) -> bool:
        return any(self.errors[flag] for flag in ERROR_FLAGS)

    def fail(self, flag: str, details: str) -> GradeResult:
        """Score 0.0, with ``flag`` set and ``details`` also in OpenAI's details field of its kind."""
        self.score, self.errors[flag], self.details = 0.0, True, details
        if flag.startswith("model_grader"):
            self.errors["model_grader_server_error_details"] = details
        elif flag.startswith("python_grader"):
            self.errors["python_grader_runtime_error_details"] = details
        return self


@dataclass(frozen=True)
class GradingContext:
    """What graders need from outside: the judge endpoint and the python sandbox's limits."""

    judge: JudgeEndpoint = field(default_factory=JudgeEndpoint)
    sandbox: SandboxLimits = field(default_factory=SandboxLimits)


def grade_samples(grader: Any, samples: list[dict[str, Any]], items: list[dict[str, Any]],
                  context: GradingContext | None = None) -> list[GradeResult]:
    """``grader``'s result for each (sample, item) pair (``templates.make_sample`` builds a sample)."""
    context = context or GradingContext()
    if isinstance(grader, MultiGrader):
        return _multi(grader, samples, items, context)
    if isinstance(grader, PythonGrader):
        return _python(grader, samples, items, context)
    return [_one(grader, sample, item, context) for sample, item in zip(samples, items)]


def _one(grader: Any, sample: dict[str, Any], item: dict[str, Any], context: GradingContext) -> GradeResult:
    result = GradeResult()
    try:
        if isinstance(grader, ScoreModelGrader):
            reply, result.token_usage = ask_judge(grader, judge_messages(grader, sample, item), context.judge)
            result.score = read_score(reply, grader.range)
            return result
        text, reference = render(grader.input, sample, item), render(grader.reference, sample, item)
    except TemplateError as exc:
        flag = "sample_parse_error" if "sample.output_json" in str(exc) else "invalid_variable_error"
        return result.fail(flag, str(exc))
    except JudgeError as exc:
        return result.fail("model_grader_parse_error" if exc.kind == "parse" else "model_grader_server_error", str(exc))
    if isinstance(grader, StringCheckGrader):
        result.score = metrics.string_check(grader.operation, text, reference)
    elif isinstance(grader, TextSimilarityGrader):
        result.score = metrics.similarity(grader.evaluation_metric, text, reference)
    return result


def _python(grader: PythonGrader, samples: list[dict[str, Any]], items: list[dict[str, Any]],
            context: GradingContext) -> list[GradeResult]:
    try:
        outcomes = run_python_grader(grader.source, list(zip(samples, items)), context.sandbox)
    except SandboxError as exc:
        return [_server_error(str(exc)) for _ in samples]
    results = []
    for outcome in outcomes:
        if "error" in outcome:
            results.append(GradeResult().fail("python_grader_runtime_error", outcome["error"]))
        else:
            results.append(GradeResult(score=outcome["score"]))
    return results


def _server_error(message: str) -> GradeResult:
    result = GradeResult().fail("python_grader_server_error", message)
    result.errors["python_grader_server_error_type"] = "limit_exceeded" if "limit" in message else "process_failed"
    return result


def _multi(grader: MultiGrader, samples: list[dict[str, Any]], items: list[dict[str, Any]],
           context: GradingContext) -> list[GradeResult]:
    parts = {name: grade_samples(sub, samples, items, context) for name, sub in grader.named_graders().items()}
    results = []
    for index in range(len(samples)):
        result = GradeResult(sub_rewards={name: part[index].score for name, part in parts.items()})
        for part in parts.values():
            for key, value in part[index].errors.items():
                if value and not result.errors.get(key):
                    result.errors[key] = value
            result.details = result.details or part[index].details
        try:
            result.score = evaluate(grader.calculate_output, result.sub_rewards)
        except FormulaError as exc:
            result.fail("formula_parse_error", str(exc))
        usage = [part[index].token_usage for part in parts.values() if part[index].token_usage is not None]
        result.token_usage = sum(usage) if usage else None
        results.append(result)
    return results


def mean_scores(graders: list[Any], samples: list[dict[str, Any]], items: list[dict[str, Any]],
                context: GradingContext | None = None) -> tuple[dict[str, float], dict[str, list[GradeResult]]]:
    """Each grader's mean score over the samples (by grader name), and every sample's result."""
    per_grader = {grader.name: grade_samples(grader, samples, items, context) for grader in graders}
    means = {name: (sum(r.score for r in results) / len(results) if results else 0.0)
             for name, results in per_grader.items()}
    return means, per_grader
