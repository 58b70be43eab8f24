"""Grader definitions in OpenAI's shapes (``openai.types.graders``), validated once.

A definition that OpenAI accepts and this service can run is accepted as it is; what this service
cannot run (``cosine`` and ``meteor`` need models or corpora it does not have offline, a python grader's
``image_tag``) is refused here with the reason, so a job never fails later for it.
"""

from __future__ import annotations

import ast
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .formula import FormulaError, check_formula
from .templates import check_template

#: text_similarity metrics and the library that computes each (see metrics.py).
SIMILARITY_METRICS = ("fuzzy_match", "bleu", "gleu", "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5",
                      "rouge_l")
#: OpenAI's metrics this service refuses, and why.
UNSUPPORTED_METRICS = {
    "cosine": "cosine similarity needs an embeddings model, and this service has none offline; use fuzzy_match, "
              "bleu, gleu or a rouge_* metric",
    "meteor": "METEOR needs the WordNet corpus, which this service does not have offline (NLTK downloads it at run "
              "time); use bleu, gleu or a rouge_* metric",
}

#: Longest python grader source accepted (OpenAI's limit is 256 kB).
MAX_SOURCE_CHARS = 256_000

Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*$",
                            description="The grader's name: the metric's name in scores, and a variable in a "
                            "multi grader's formula (letters, digits, _ and -; not starting with a digit).")]
Template = Annotated[str, Field(max_length=100_000, description="Text; may hold {{item.*}} and {{sample.*}} "
                                "templates (sample.output_text, sample.output_json.*).")]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Compares(_Spec):
    """A grader of ``input`` against ``reference``, both templates."""

    name: Name
    input: Template
    reference: Template

    @field_validator("input", "reference")
    @classmethod
    def _check_templates(cls, value: str) -> str:
        return check_template(value)


class StringCheckGrader(_Compares):
    """Compares input and reference: eq, ne, like (reference is a substring of input), ilike (case-blind like)."""

    type: Literal["string_check"] = Field(..., description="Always string_check.")
    operation: Literal["eq", "ne", "like", "ilike"] = Field(..., description="eq, ne, like or ilike.")


class TextSimilarityGrader(_Compares):
    """Similarity of input to reference, 0..1, by ``evaluation_metric``."""

    type: Literal["text_similarity"] = Field(..., description="Always text_similarity.")
    evaluation_metric: Literal["cosine", "fuzzy_match", "bleu", "gleu", "meteor", "rouge_1", "rouge_2", "rouge_3",
                               "rouge_4", "rouge_5", "rouge_l"] = Field(
        ..., description="fuzzy_match (rapidfuzz), bleu (sacrebleu), gleu (nltk), rouge_1..rouge_5, rouge_l "
        "(rouge-score); cosine and meteor are refused (no embeddings model or WordNet offline).")

    @field_validator("evaluation_metric")
    @classmethod
    def _runnable(cls, value: str) -> str:
        if value in UNSUPPORTED_METRICS:
            raise ValueError(f"{value} is not supported here: {UNSUPPORTED_METRICS[value]}")
        return value


class PythonGrader(_Spec):
    """Runs the source's ``grade(sample, item) -> float`` in a sandboxed interpreter (sandbox.py)."""

    type: Literal["python"] = Field(..., description="Always python.")
    name: Name
    source: str = Field(..., min_length=1, max_length=MAX_SOURCE_CHARS,
                        description="Python defining grade(sample, item) that returns a number.")
    image_tag: str | None = Field(None, description="OpenAI's image choice; not supported here (must be null): "
                                  "graders run on the server's own Python with its standard library.")

    @field_validator("image_tag")
    @classmethod
    def _no_image(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError("image_tag is not supported: python graders run on this server's Python "
                             "(standard library only); leave it out")
        return value

    @field_validator("source")
    @classmethod
    def _defines_grade(cls, source: str) -> str:
        try:
            tree = ast.parse(source)
        except SyntaxError as exc:
            raise ValueError(f"line {exc.lineno}: {exc.msg}") from None
        if not any(isinstance(node, ast.FunctionDef) and node.name == "grade" for node in tree.body):
            raise ValueError("must define a top-level function grade(sample, item)")
        return source


class InputText(_Spec):
    type: Literal["input_text", "output_text"] = Field(..., description="input_text or output_text.")
    text: Template


class JudgeMessage(_Spec):
    role: Literal["user", "assistant", "system", "developer"] = Field(..., description="Who speaks.")
    content: Template | InputText = Field(..., description="Text (templates allowed), or one text part.")
    type: Literal["message"] | None = Field(None, description="Always message when given.")

    @field_validator("content")
    @classmethod
    def _check(cls, value: str | InputText) -> str | InputText:
        check_template(value if isinstance(value, str) else value.text)
        return value

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else self.content.text


class SamplingParams(_Spec):
    max_completions_tokens: int | None = Field(None, ge=1, le=32_768, description="Most tokens the judge writes.")
    reasoning_effort: str | None = Field(None, max_length=20, description="Passed to the judge as is.")
    seed: int | None = Field(None, description="Passed to the judge.")
    temperature: float | None = Field(None, ge=0, le=2, description="Passed to the judge.")
    top_p: float | None = Field(None, gt=0, le=1, description="Passed to the judge.")


class ScoreModelGrader(_Spec):
    """An LLM judge: the rubric messages go to ``model`` on an OpenAI-compatible endpoint, which answers a score."""

    type: Literal["score_model"] = Field(..., description="Always score_model.")
    name: Name
    model: str = Field(..., min_length=1, max_length=200, description="The judge model's name at the endpoint.")
    input: list[JudgeMessage] = Field(..., min_length=1, max_length=100, description="The rubric messages.")
    range: list[float] = Field([0.0, 1.0], min_length=2, max_length=2, description="[lowest, highest] score.")
    sampling_params: SamplingParams | None = Field(None, description="The judge's sampling parameters.")
    base_url: str | None = Field(
        None, max_length=2000, pattern=r"^https?://",
        description="This service's addition: the OpenAI-compatible endpoint (e.g. http://host:8000/v1, this "
        "service's own /v1 included). Default: the server's SFT_JUDGE_BASE_URL.")

    @field_validator("range")
    @classmethod
    def _ordered(cls, value: list[float]) -> list[float]:
        if not value[0] < value[1]:
            raise ValueError("must be [lowest, highest] with lowest < highest")
        return value


SingleGrader = Annotated[Union[StringCheckGrader, TextSimilarityGrader, PythonGrader, ScoreModelGrader],
                         Field(discriminator="type")]


class MultiGrader(_Spec):
    """Several graders combined by ``calculate_output``, a formula over their names."""

    type: Literal["multi"] = Field(..., description="Always multi.")
    name: Name
    graders: dict[str, SingleGrader] | SingleGrader = Field(
        ..., description="The graders, by the name the formula uses (OpenAI's map), or one grader (its name).")
    calculate_output: str = Field(..., min_length=1, max_length=2000,
                                  description="Arithmetic over the graders' names: + - * / **, numbers, min, max, "
                                  "abs, round, floor, ceil, sqrt, log, exp.")

    @model_validator(mode="after")
    def _formula_names_graders(self) -> MultiGrader:
        try:
            check_formula(self.calculate_output, set(self.named_graders()))
        except FormulaError as exc:
            raise ValueError(f"calculate_output: {exc}") from None
        return self

    def named_graders(self) -> dict[str, SingleGrader]:
        return dict(self.graders) if isinstance(self.graders, dict) else {self.graders.name: self.graders}


Grader = Annotated[Union[StringCheckGrader, TextSimilarityGrader, PythonGrader, ScoreModelGrader, MultiGrader],
                   Field(discriminator="type")]
