"""Graders against hand-computed scores, the python sandbox's escapes, and score_model against a judge server."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from app.sft.graders import (
    GradingContext,
    JudgeEndpoint,
    SandboxLimits,
    exact_match_grader,
    grade_samples,
    json_match_grader,
    make_sample,
    mean_scores,
    parse_grader,
    reference_item,
)
from judge_server import JudgeServer


def score(grader: dict, output: str, item: dict | None = None, context: GradingContext | None = None):
    return grade_samples(parse_grader(grader), [make_sample(output)], [item or {}], context)[0]


def check(operation: str, reference: str = "{{item.city}}") -> dict:
    return {"type": "string_check", "name": "c", "input": "{{sample.output_text}}", "reference": reference,
            "operation": operation}


@pytest.mark.parametrize(("operation", "output", "expected"), [
    ("eq", "Paris", 1.0), ("eq", "paris", 0.0), ("ne", "Lyon", 1.0), ("ne", "Paris", 0.0),
    ("like", "It is Paris.", 1.0), ("like", "It is PARIS.", 0.0), ("ilike", "It is PARIS.", 1.0),
    ("ilike", "Lyon", 0.0),
])
def test_string_check(operation, output, expected):
    assert score(check(operation), output, {"city": "Paris"}).score == expected


def similarity(metric: str, output: str, reference: str) -> float:
    return score({"type": "text_similarity", "name": "s", "input": "{{sample.output_text}}",
                  "reference": reference, "evaluation_metric": metric}, output).score


def test_text_similarity_hand_computed():
    # Indel similarity: one substitution is 2 edits over 8 characters -> 1 - 2/8.
    assert similarity("fuzzy_match", "abcd", "abce") == pytest.approx(0.75)
    # rouge_1 / rouge_l: 3 of 3 output words match, 3 of 4 reference words -> F1 = 2 * 1 * 0.75 / 1.75.
    assert similarity("rouge_1", "the cat sat", "the cat sat down") == pytest.approx(6 / 7)
    assert similarity("rouge_l", "the cat sat", "the cat sat down") == pytest.approx(6 / 7)
    # rouge_2: bigrams 2/2 precision, 2/3 recall -> F1 = 0.8.
    assert similarity("rouge_2", "the cat sat", "the cat sat down") == pytest.approx(0.8)
    # gleu: 1..4-grams, 3 of the output's 3 match, 3 of the reference's 6 -> min(1, 0.5).
    assert similarity("gleu", "the cat", "the cat sat") == pytest.approx(0.5)
    assert similarity("bleu", "the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)
    assert similarity("bleu", "a b c d", "w x y z") == pytest.approx(0.0)


@pytest.mark.parametrize(("metric", "why"), [("cosine", "embeddings model"), ("meteor", "WordNet")])
def test_metrics_needing_downloads_are_refused_saying_why(metric, why):
    with pytest.raises(ValidationError, match=why) as info:
        parse_grader({"type": "text_similarity", "name": "s", "input": "a", "reference": "b",
                      "evaluation_metric": metric})
    assert info.value.errors()[0]["loc"][-1] == "evaluation_metric"


def test_templates_and_json_helpers():
    item = reference_item('{"name": "Ada", "age": 36}', messages=[])
    assert score(check("eq", "{{item.reference_json.name}}"), "Ada", item).score == 1.0
    nested = {"type": "string_check", "name": "n", "input": "{{sample.output_json.person.name}}",
              "reference": "Ada", "operation": "eq"}
    assert score(nested, '{"person": {"name": "Ada"}}').score == 1.0
    missing = score(check("eq", "{{item.nope}}"), "Ada", item)
    assert missing.score == 0.0 and missing.errors["invalid_variable_error"] and "item.nope" in missing.details
    # JSON equality: key order and spacing do not matter; text that is not JSON scores 0 with sample_parse_error.
    json_match = json_match_grader()
    results = grade_samples(json_match, [make_sample('{"age":36,"name":"Ada"}'), make_sample("Ada, 36")],
                            [item, item])
    assert [r.score for r in results] == [1.0, 0.0] and results[1].errors["sample_parse_error"]
    means, _ = mean_scores([exact_match_grader()], [make_sample("yes"), make_sample('{"age": 36, "name": "Ada"}')],
                           [reference_item("yes"), item])
    assert means == {"exact_match": 1.0}


def test_bad_definitions_name_the_field():
    with pytest.raises(ValidationError, match="item.<field>") as info:
        parse_grader(check("eq", "{{env.HOME}}"))
    assert info.value.errors()[0]["loc"][-1] == "reference"
    with pytest.raises(ValidationError, match="line 1"):
        parse_grader({"type": "python", "name": "p", "source": "def grade(:"})
    with pytest.raises(ValidationError, match="grade"):
        parse_grader({"type": "python", "name": "p", "source": "x = 1"})
    with pytest.raises(ValidationError, match="image_tag"):
        parse_grader({"type": "python", "name": "p", "source": "def grade(s, i): return 1", "image_tag": "2025"})


def multi(formula: str) -> dict:
    return {"type": "multi", "name": "m", "calculate_output": formula, "graders": {
        "exact": check("eq"), "fuzzy": {"type": "text_similarity", "name": "f", "input": "{{sample.output_text}}",
                                        "reference": "{{item.city}}", "evaluation_metric": "fuzzy_match"}}}


def test_multi_formula():
    # exact 0, fuzzy ("Pariz" vs "Paris": 2 edits over 10 characters) 0.8 -> (0 + 2 * 0.8) / 3.
    result = score(multi("(exact + 2 * fuzzy) / 3"), "Pariz", {"city": "Paris"})
    assert result.score == pytest.approx(1.6 / 3) and result.sub_rewards == {"exact": 0.0, "fuzzy": 0.8}
    assert score(multi("max(exact, fuzzy) - abs(-0.5)"), "Paris", {"city": "Paris"}).score == pytest.approx(0.5)
    assert score(multi("exact / (fuzzy - 1)"), "Paris", {"city": "Paris"}).errors["formula_parse_error"]
    for formula, why in [("__import__('os').system('id')", "not allowed"), ("exact.real", "not allowed"),
                         ("exact + other", "unknown name 'other'"), ("exact +", "not a formula"),
                         ("(lambda: 1)()", "not allowed")]:
        with pytest.raises(ValidationError, match=why) as info:
            parse_grader(multi(formula))
        assert "calculate_output" in str(info.value)


FAST = GradingContext(sandbox=SandboxLimits(seconds_per_sample=1.0, memory_bytes=256 * 2**20))


def python_grader(body: str) -> dict:
    return {"type": "python", "name": "p", "source": "def grade(sample, item):\n" + body}


def test_python_grader_scores():
    source = ("    import json, difflib\n"
              "    return difflib.SequenceMatcher(None, sample['output_text'], item['reference']).ratio()")
    assert score(python_grader(source), "abcd", {"reference": "abce"}, FAST).score == pytest.approx(0.75)
    # Its own folder is usable.
    source = "    open('notes.txt', 'w').write('ok')\n    return len(open('notes.txt').read())"
    assert score(python_grader(source), "x", {}, FAST).score == 2.0


@pytest.mark.parametrize(("body", "expected"), [
    ("    return len(open('/etc/hostname').read())", "opening '/etc/hostname'"),
    ("    import os\n    return len(open(os.path.expanduser('~/.bashrc')).read())", "outside the grader's folder"),
    ("    import socket\n    socket.create_connection(('127.0.0.1', 80))", "importing socket"),
    ("    import os\n    return os.system('id')", "os.system"),
    ("    import os\n    return len(os.listdir('/'))", "os.listdir"),
    ("    while True:\n        pass", "time limit of 1.0 s"),
    ("    return len(bytearray(10 ** 10))", "memory limit of 256 MiB"),
    ("    return [1] * 10 ** 9", "MemoryError"),
    ("    return 'high'", "not a number"),
])
def test_python_grader_escapes_fail_closed(body, expected):
    started = time.monotonic()
    result = score(python_grader(body), "x", {}, FAST)
    assert result.score == 0.0 and result.errors["python_grader_runtime_error"]
    assert expected in result.details
    assert time.monotonic() - started < 4


def test_python_grader_that_swallows_its_timeout_is_killed():
    body = "    while True:\n        try:\n            while True:\n                pass\n        except BaseException:\n            pass"
    started = time.monotonic()
    result = score(python_grader(body), "x", {}, FAST)
    assert result.errors["python_grader_server_error"] and "time limit" in result.details
    assert result.errors["python_grader_server_error_type"] == "limit_exceeded"
    assert time.monotonic() - started < 5


def test_score_model_against_a_judge_server():
    grader = {"type": "score_model", "name": "judge", "model": "judge-1", "range": [0, 1],
              "sampling_params": {"temperature": 0, "max_completions_tokens": 20},
              "input": [{"role": "system", "content": "Score whether the answer names the capital."},
                        {"role": "user", "content": "Question: {{item.question}} Answer: {{sample.output_text}}"}]}
    with JudgeServer() as judge:
        context = GradingContext(judge=JudgeEndpoint(base_url=judge.base_url, api_key="k-1"))
        good = score(grader, "Paris", {"question": "Capital of France?"}, context)
        bad = score(grader, "Lyon", {"question": "Capital of France?"}, context)
        assert (good.score, bad.score, good.token_usage) == (0.9, 0.1, 15)
        sent = judge.requests[0]
        assert sent["path"] == "/v1/chat/completions" and sent["auth"] == "Bearer k-1"
        assert sent["body"]["messages"][1]["content"] == "Question: Capital of France? Answer: Paris"
        assert sent["body"]["temperature"] == 0 and sent["body"]["max_tokens"] == 20
        # The grader's own base_url wins over the context's; a narrow range makes 0.9 out of range.
        narrow = score({**grader, "range": [0, 0.5], "base_url": judge.base_url}, "Paris", {"question": "?"})
        assert narrow.errors["model_grader_parse_error"] and "outside the range" in narrow.details
        rambling = score({**grader, "model": "rambling"}, "Paris", {"question": "?"}, context)
        assert rambling.errors["model_grader_parse_error"] and "no score" in rambling.details
        broken = score({**grader, "model": "broken"}, "Paris", {"question": "?"}, context)
        assert broken.errors["model_grader_server_error"] and "500" in broken.details
    unset = score(grader, "Paris", {"question": "?"})
    assert unset.errors["model_grader_server_error"] and "SFT_JUDGE_BASE_URL" in unset.details
