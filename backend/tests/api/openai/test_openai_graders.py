"""/v1/fine_tuning/alpha/graders through the official openai SDK: validate and run, and 400s naming the field."""

from __future__ import annotations

import openai
import pytest

from judge_server import JudgeServer

JSON_MATCH = {"type": "string_check", "name": "json_match", "operation": "eq", "input": "{{sample.output_json}}",
              "reference": "{{item.reference_json}}"}


@pytest.fixture
def live(gated_server):
    return gated_server


def test_validate_and_run_string_check(live):
    client = live.client
    assert client.fine_tuning.alpha.graders.validate(grader=JSON_MATCH).grader.name == "json_match"
    item = {"reference_json": {"name": "Ada", "age": 36}}
    good = client.fine_tuning.alpha.graders.run(grader=JSON_MATCH, model_sample='{"age": 36, "name": "Ada"}',
                                                item=item)
    assert good.reward == 1.0 and good.metadata.type == "string_check" and not good.metadata.errors.sample_parse_error
    bad = client.fine_tuning.alpha.graders.run(grader=JSON_MATCH, model_sample="Ada is 36", item=item)
    assert bad.reward == 0.0 and bad.metadata.errors.sample_parse_error


def test_run_multi_and_python(live):
    grader = {"type": "multi", "name": "blend", "calculate_output": "0.5 * exact + 0.5 * words",
              "graders": {"exact": {"type": "string_check", "name": "exact", "operation": "eq",
                                    "input": "{{sample.output_text}}", "reference": "{{item.answer}}"},
                          "words": {"type": "python", "name": "words",
                                    "source": "def grade(sample, item):\n"
                                              "    return len(sample['output_text'].split()) / 4"}}}
    result = live.client.fine_tuning.alpha.graders.run(grader=grader, model_sample="the cat sat", item={"answer": "x"})
    assert result.sub_rewards == {"exact": 0.0, "words": 0.75} and result.reward == pytest.approx(0.375)
    escape = {"type": "python", "name": "p", "source": "def grade(sample, item):\n    return len(open('/etc/hostname').read())"}
    refused = live.client.fine_tuning.alpha.graders.run(grader=escape, model_sample="x")
    assert refused.reward == 0.0 and refused.metadata.errors.python_grader_runtime_error
    assert "outside the grader's folder" in refused.metadata.errors.python_grader_runtime_error_details


def test_run_score_model_against_a_judge(live):
    with JudgeServer() as judge:
        grader = {"type": "score_model", "name": "judge", "model": "judge-1", "base_url": judge.base_url,
                  "input": [{"role": "user", "content": "Is {{sample.output_text}} the capital of {{item.country}}?"}]}
        result = live.client.fine_tuning.alpha.graders.run(grader=grader, model_sample="Paris",
                                                           item={"country": "France"})
    assert result.reward == 0.9 and result.metadata.token_usage == 15
    assert result.model_grader_token_usage_per_model == {"judge-1": 15}


@pytest.mark.parametrize(("grader", "param", "words"), [
    ({**JSON_MATCH, "evaluation_metric": "cosine", "type": "text_similarity"}, "grader.text_similarity.evaluation_metric",
     "embeddings model"),
    ({**JSON_MATCH, "operation": "regex"}, "grader.string_check.operation", "'eq'"),
    ({"type": "label_model", "name": "x"}, "grader", "string_check"),
    ({"type": "multi", "name": "m", "calculate_output": "a + b", "graders": {"a": JSON_MATCH}}, "grader.multi",
     "unknown name 'b'"),
    ({"type": "python", "name": "p", "source": "import os"}, "grader.python.source", "grade(sample, item)"),
])
def test_invalid_graders_are_400_naming_the_field(live, grader, param, words):
    with pytest.raises(openai.BadRequestError) as info:
        live.client.fine_tuning.alpha.graders.validate(grader=grader)
    error = info.value.body
    assert error["param"] == param and words in error["message"], error
    with pytest.raises(openai.BadRequestError):
        live.client.fine_tuning.alpha.graders.run(grader=grader, model_sample="x")


def test_score_model_judged_by_this_servers_own_v1_chat(live, tiny_model_dir):
    """The judge is this service's /v1 chat on a base model: the request goes through end to end; the tiny random
    model answers no score, which the grader reports as the judge's parse error (not a server error)."""
    grader = {"type": "score_model", "name": "self_judge", "model": str(tiny_model_dir), "base_url": f"{live.url}/v1",
              "sampling_params": {"max_completions_tokens": 4, "temperature": 0},
              "input": [{"role": "user", "content": "Score {{sample.output_text}} from 0 to 1."}]}
    result = live.client.fine_tuning.alpha.graders.run(grader=grader, model_sample="Paris")
    errors = result.metadata.errors
    assert not errors.api_model_grader_server_error, errors.api_model_grader_server_error_details
    assert errors.api_model_grader_parse_error and "holds no score" in errors.api_model_grader_server_error_details
    assert result.metadata.token_usage is not None and result.metadata.token_usage > 0
