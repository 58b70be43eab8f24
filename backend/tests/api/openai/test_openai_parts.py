"""The /v1 API's parts without a server: what "auto" picks, names, status mapping, file checks,
result CSVs, stop strings in a stream, error wording."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.api.openai import jobs, mapping
from app.api.openai.errors import validation_message
from app.jobs import files
from app.api.sft_job_manager import JobStatus, SFTJob
from app.core.errors import InvalidConfig
from app.sft.generation import _StopCutter
from factories import contact_rows, write_jsonl


@pytest.mark.parametrize(("examples", "epochs"), [(3, 25), (10, 10), (16, 7), (50, 3), (5000, 3), (10_000, 2),
                                                  (100_000, 1)])
def test_auto_epochs_see_100_to_25000_examples(examples, epochs):
    assert jobs.auto_epochs(examples) == epochs


@pytest.mark.parametrize(("examples", "batch"), [(1, 1), (15, 1), (16, 2), (32, 4), (64, 8), (100_000, 8)])
def test_auto_batch_size_is_a_power_of_two_up_to_8(examples, batch):
    assert jobs.auto_batch_size(examples) == batch


@pytest.mark.parametrize(("parameters", "rate"), [(None, 2e-4), (135e6, 1e-3), (1e9, 5.29e-4), (7e9, 2e-4),
                                                  (70e9, 1e-4)])
def test_the_learning_rate_follows_the_model_size(parameters, rate):
    assert jobs.base_learning_rate(parameters) == pytest.approx(rate)


def test_parameters_are_counted_from_config_json_or_read_from_the_name(tiny_model_dir: Path, tmp_path: Path):
    import transformers

    actual = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir).num_parameters()
    counted = jobs.estimate_parameters(str(tiny_model_dir), cache_dir=tmp_path)
    assert counted == pytest.approx(actual, rel=0.02)  # norms are left out
    assert jobs.estimate_parameters("smollm2-135m-instruct", cache_dir=tmp_path) == 135e6
    assert jobs.estimate_parameters("meta-llama/Llama-3.1-8B-Instruct", cache_dir=tmp_path) == 8e9
    assert jobs.estimate_parameters("someone/a-model", cache_dir=tmp_path) is None


def test_fine_tuned_names():
    job = SFTJob({"base_model": "/models/tiny-model", "dataset_name": "d"}, job_id="abc")
    assert jobs.fine_tuned_name(job, {"suffix": "crm"}) == "ft:tiny-model:crm:abc"
    assert jobs.fine_tuned_name(job, {"model": "HuggingFaceTB/SmolLM2-135M-Instruct"}) == \
        "ft:HuggingFaceTB/SmolLM2-135M-Instruct::abc"
    assert jobs.model_label("./weights/q4.gguf") == "q4"
    assert jobs.parse_fine_tuned("ft:tiny-model:crm:abc") == ("abc", None)
    assert jobs.parse_fine_tuned("ft:tiny-model::abc:ckpt-step-12") == ("abc", 12)
    assert jobs.parse_fine_tuned("ft:tiny") is None
    assert jobs.parse_fine_tuned("smollm2-135m-instruct") is None


@pytest.mark.parametrize(("status", "attempts", "stop", "expected"), [
    (JobStatus.PENDING, 0, None, "queued"),
    (JobStatus.RUNNING, 1, None, "running"),
    (JobStatus.COMPLETED, 1, None, "succeeded"),
    (JobStatus.FAILED, 1, None, "failed"),
    (JobStatus.STOPPING, 1, {"kind": "pause", "attempts": 1}, "running"),
    (JobStatus.STOPPING, 1, {"kind": "cancel", "attempts": 1}, "cancelled"),
    (JobStatus.STOPPING, 1, None, "cancelled"),  # stopped through /api/sft
    (JobStatus.STOPPED, 1, {"kind": "pause", "attempts": 1}, "paused"),
    (JobStatus.STOPPED, 2, {"kind": "pause", "attempts": 1}, "cancelled"),  # resumed since, then stopped
    (JobStatus.STOPPED, 0, {"kind": "cancel", "attempts": 0}, "cancelled"),
])
def test_status_mapping(status, attempts, stop, expected):
    job = SFTJob({"base_model": "m", "dataset_name": "d"}, status=status)
    job.attempts = [{"attempt": n + 1} for n in range(attempts)]
    assert jobs.openai_status(job, {"stop": stop} if stop else {}) == expected


def test_a_training_file_is_checked_line_by_line(tmp_path: Path):
    chat = tmp_path / "chat.jsonl"
    chat.write_text("\n".join(json.dumps(row) for row in contact_rows(3)) + "\n\n")
    assert files.check_training_file(chat, "chat.jsonl") == (3, "messages")
    legacy = write_jsonl(tmp_path / "legacy.jsonl", [{"prompt": "2+2=", "completion": "4"}] * 2)
    assert files.check_training_file(legacy, "legacy.jsonl") == (2, "prompt_completion")

    def problem(lines: list[str]) -> str:
        path = tmp_path / "bad.jsonl"
        path.write_text("\n".join(lines) + "\n")
        with pytest.raises(files.InvalidFile) as caught:
            files.check_training_file(path, "bad.jsonl")
        assert caught.value.status_code == 400 and caught.value.field == "file"
        return caught.value.detail

    good = json.dumps(contact_rows(1)[0])
    assert problem([good, "", "[1, 2]"]) == "Invalid file bad.jsonl, line 3: expected a JSON object, got list"
    assert problem([good, '{"text": "x"}']).startswith("Invalid file bad.jsonl, line 2: expected a chat example")
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]},
                          {"role": "assistant", "content": "yo"}]}
    assert "line 1: messages[1].content is a list of content parts" in problem([json.dumps(parts)])
    assert "line 2: field 'completion' is empty" in problem(['{"prompt": "a", "completion": "b"}',
                                                             '{"prompt": "a", "completion": " "}'])
    assert problem(["", "  "]) == "Invalid file bad.jsonl: it has no examples (expected one JSON object per line)"


def test_the_result_csv_keeps_each_steps_latest_values():
    metrics = [{"step": 1, "loss": 2.0, "attempt": 1}, {"step": 2, "loss": 1.5, "attempt": 1},
               {"step": 2, "eval_loss": 1.7, "attempt": 1},
               {"step": 2, "loss": 1.4, "num_tokens": 60.0, "attempt": 2}]  # resumed from step 1
    lines = files.metrics_csv(metrics).splitlines()
    assert lines == ["step,train_loss,valid_loss,learning_rate,grad_norm,epoch,tokens_seen,elapsed_seconds",
                     "1,2.0,,,,,,", "2,1.4,1.7,,,,60.0,"]


def test_a_stream_holds_back_what_may_start_a_stop_string():
    cutter = _StopCutter(["\nUser:"])
    assert cutter.feed("Hello") == ("Hello", False)
    assert cutter.feed(" there\nUs") == (" there", False)  # "\nUs" may begin the stop string
    assert cutter.feed("ually") == ("\nUsually", False)
    assert cutter.feed("\nUser: hi") == ("", True)
    plain = _StopCutter(None)
    assert plain.feed("a\n") == ("a\n", False) and plain.flush() == ""


def test_validation_errors_read_like_openais():
    message, param = validation_message([
        {"loc": ("body", "n"), "msg": "Input should be less than or equal to 1", "type": "less_than_equal"},
        {"loc": ("body", "tools"), "msg": "Extra inputs are not permitted", "type": "extra_forbidden"},
        {"loc": ("body", "model"), "msg": "Field required", "type": "missing"},
    ])
    assert param == "n"
    assert message == ("Invalid value for 'n': Input should be less than or equal to 1; Unrecognized request "
                       "argument supplied: tools (this server does not support it); Missing required parameter: "
                       "'model'.")


def test_config_errors_come_back_in_the_requests_names_by_their_field():
    assert {mapping.FIELDS[param]: param for param in mapping.FIELDS} == mapping.PARAMS  # one table, both ways
    refused = InvalidConfig("config.dataset_name: /data/files/file-1.jsonl: line 3: not JSON; config.lora_r: too small")
    error = mapping.config_error(refused)
    assert (error.status_code, error.param) == (400, "training_file")
    assert error.detail == "training_file: /data/files/file-1.jsonl: line 3: not JSON"
    structured = InvalidConfig("the model cannot be loaded", field="config.base_model")
    assert (mapping.config_error(structured).param, mapping.config_error(structured).detail) == (
        "model", "model: the model cannot be loaded")
    unnamed = mapping.config_error(InvalidConfig("config.lora_r: too small"))
    assert (unnamed.param, unnamed.detail) == (None, "config.lora_r: too small")
