"""POST /api/sft/datasets/preview: the dataset as the trainer sees it, through the training loader."""

from __future__ import annotations

import json

from factories import preference_rows, write_jsonl


def test_preview_renders_the_chat_template_and_marks_the_trained_part(client, tiny_model_dir, chat_jsonl):
    answer = client.post("/api/sft/datasets/preview", json={
        "dataset_name": str(chat_jsonl), "base_model": str(tiny_model_dir), "max_length": 36})
    assert answer.status_code == 200, answer.text
    preview = answer.json()
    assert (preview["dataset_format"], preview["rows"], preview["rows_capped"]) == ("messages", 32, False)
    assert len(preview["examples"]) == 3
    prompt, completion = preview["examples"][0]["segments"]
    assert prompt == {"text": "<|im_start|>user\nhello 0<|im_end|>\n<|im_start|>assistant\n", "trained": False,
                      "label": None}
    assert completion == {"text": '{"name": "Ada", "age": 36}<|im_end|>\n', "trained": True, "label": None}
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    lengths = []
    for i in range(32):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": f"hello {i % 7}"}, {"role": "assistant", "content": '{"name": "Ada", "age": 36}'}],
            tokenize=False)
        lengths.append(len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    assert preview["examples"][0]["tokens"] == lengths[0]
    assert preview["token_lengths"] == {"min": min(lengths), "mean": round(sum(lengths) / 32, 1),
                                        "median": sorted(lengths)[15:17][0] / 2 + sorted(lengths)[15:17][1] / 2,
                                        "p95": sorted(lengths)[30], "max": max(lengths)}
    truncated = sum(1 for n in lengths if n > 36)
    assert preview["truncated_rows"] == truncated
    assert preview["truncated_share"] == round(truncated / 32, 4)


def test_preview_counts_the_rows_max_length_truncates(client, tiny_model_dir, tmp_path):
    rows = [{"prompt": "hello", "completion": "a " * n} for n in (2, 4, 40, 80)]
    dataset = write_jsonl(tmp_path / "pc.jsonl", rows)
    preview = client.post("/api/sft/datasets/preview", json={
        "dataset_name": str(dataset), "base_model": str(tiny_model_dir), "max_length": 30,
        "completion_only_loss": False}).json()
    assert preview["dataset_format"] == "prompt_completion"
    # "a " is one token or more: the rows of 40 and 80 are over 30 tokens, those of 2 and 4 are not.
    assert [example["tokens"] > 30 for example in preview["examples"]] == [False, False, True]
    assert (preview["truncated_rows"], preview["truncated_share"]) == (2, 0.5)
    assert all(segment["trained"] for segment in preview["examples"][0]["segments"])


def test_preview_refuses_a_path_outside_the_dataset_roots(client, tiny_model_dir):
    answer = client.post("/api/sft/datasets/preview", json={
        "dataset_name": "/etc/passwd.jsonl", "base_model": str(tiny_model_dir)})
    assert answer.status_code == 400
    assert answer.json()["detail"].startswith("dataset_name: /etc/passwd.jsonl: local datasets must be under an allowed root")


def test_preview_names_a_bad_row_and_a_bad_model(client, tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    answer = client.post("/api/sft/datasets/preview", json={"dataset_name": str(bad), "base_model": str(tiny_model_dir)})
    assert answer.status_code == 400
    assert answer.json()["detail"] == (
        f"dataset_name: {bad}, line 1: the last turn must be the assistant's, got 'user'")
    answer = client.post("/api/sft/datasets/preview", json={"dataset_name": str(bad), "base_model": str(tmp_path)})
    assert answer.status_code == 400
    assert answer.json()["detail"].startswith("dataset_name: ")  # the data is read before the model
    good = write_jsonl(tmp_path / "good.jsonl", [{"text": "hello world"}])
    answer = client.post("/api/sft/datasets/preview", json={"dataset_name": str(good), "base_model": str(tmp_path)})
    assert answer.status_code == 400
    assert answer.json()["detail"] == f"base_model: {tmp_path} is a directory without a config.json, so not a model directory"


def test_preview_applies_the_model_path_policy(client, chat_jsonl, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere")  # a directory outside every model root
    answer = client.post("/api/sft/datasets/preview", json={"dataset_name": str(chat_jsonl), "base_model": str(outside)})
    assert answer.status_code == 400
    assert answer.json()["detail"].startswith(f"base_model: '{outside}': local models must be under an allowed root (")


def test_preview_shows_a_preference_pair_as_dpo_sees_it(client, tiny_model_dir, tmp_path):
    dataset = write_jsonl(tmp_path / "prefs.jsonl", preference_rows(4))
    preview = client.post("/api/sft/datasets/preview", json={
        "dataset_name": str(dataset), "base_model": str(tiny_model_dir), "examples": 1}).json()
    assert preview["dataset_format"] == "openai_preference"
    prompt, chosen, rejected = preview["examples"][0]["segments"]
    assert prompt == {"text": "<|im_start|>user\nhello 0<|im_end|>\n<|im_start|>assistant\n", "trained": False,
                      "label": None}
    assert chosen == {"text": '{"name": "Ada", "age": 36}<|im_end|>\n', "trained": True, "label": "chosen"}
    assert rejected == {"text": '{"name": "Bob", "age": 7}<|im_end|>\n', "trained": True, "label": "rejected"}
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    sides = [len(tokenizer(prompt["text"] + side["text"], add_special_tokens=False)["input_ids"])
             for side in (chosen, rejected)]
    assert preview["examples"][0]["tokens"] == max(sides)
