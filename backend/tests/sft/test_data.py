from __future__ import annotations

import json

import pytest

from app.sft import DatasetError, SFTConfig
from app.sft.data import check_dataset, prepare_datasets, read_rows
from app.sft.formats import convert_rows, detect_format
from factories import write_jsonl

ALPACA = [{"instruction": "Say hi", "input": "", "output": "hi"},
          {"instruction": "Add", "input": "1 and 2", "output": "3", "system": "Be brief."}]
SHAREGPT = [{"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "Q"},
                               {"from": "gpt", "value": "A"}]}]
MESSAGES = [{"messages": [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
                          {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}]}]
PROMPT_COMPLETION = [{"prompt": "2+2=", "completion": "4"}]
TEXT = [{"text": "just some text"}]


def convert(rows, fmt="auto", mapping=None, tmp_path=None):
    raw = read_rows(str(write_jsonl(tmp_path / "d.jsonl", rows)))
    return convert_rows(raw, dataset_format=fmt, column_mapping=mapping)


def test_alpaca(tmp_path):
    rows, fmt = convert(ALPACA, "alpaca", tmp_path=tmp_path)
    assert fmt == "alpaca"
    assert rows[0] == {"prompt": [{"role": "user", "content": "Say hi"}],
                       "completion": [{"role": "assistant", "content": "hi"}]}
    assert rows[1]["prompt"] == [{"role": "system", "content": "Be brief."},
                                 {"role": "user", "content": "Add\n\n1 and 2"}]


def test_sharegpt_roles_are_mapped(tmp_path):
    rows, _ = convert(SHAREGPT, "sharegpt", tmp_path=tmp_path)
    assert [m["role"] for m in rows[0]["prompt"]] == ["system", "user"]
    assert rows[0]["completion"] == [{"role": "assistant", "content": "A"}]


def test_messages_put_earlier_turns_in_the_prompt(tmp_path):
    rows, _ = convert(MESSAGES, "messages", tmp_path=tmp_path)
    assert len(rows[0]["prompt"]) == 3
    assert rows[0]["completion"] == [{"role": "assistant", "content": "A2"}]


def test_prompt_completion_and_text(tmp_path):
    assert convert(PROMPT_COMPLETION, tmp_path=tmp_path)[0] == [{"prompt": "2+2=", "completion": "4"}]
    assert convert(TEXT, tmp_path=tmp_path)[0] == [{"text": "just some text"}]


@pytest.mark.parametrize("rows,expected", [(ALPACA, "alpaca"), (SHAREGPT, "sharegpt"), (MESSAGES, "messages"),
                                           (PROMPT_COMPLETION, "prompt_completion"), (TEXT, "text")])
def test_auto_detects_each_format(tmp_path, rows, expected):
    assert convert(rows, tmp_path=tmp_path)[1] == expected


def test_detect_names_the_columns():
    with pytest.raises(DatasetError, match=r"cannot detect the format from columns \['answer', 'question'\]"):
        detect_format(["question", "answer"])


def test_column_mapping(tmp_path):
    rows, fmt = convert([{"question": "Q", "answer": "A"}], mapping={"instruction": "question", "output": "answer"},
                        tmp_path=tmp_path)
    assert fmt == "alpaca"
    assert rows[0]["completion"][0]["content"] == "A"


@pytest.mark.parametrize("rows,fmt,message", [
    ([{"instruction": "x"}], "alpaca", "line 1: missing field 'output'"),
    ([{"instruction": "x", "output": "  "}], "alpaca", "line 1: field 'output' is empty"),
    ([{"instruction": 3, "output": "y"}], "alpaca", "line 1: field 'instruction' must be text, got int"),
    ([{"conversations": [{"from": "bot", "value": "x"}]}], "sharegpt",
     "line 1: conversations[1] has from 'bot'; expected one of assistant, gpt, human, system, tool, user"),
    ([{"messages": [{"role": "user", "content": "q"}]}], "messages",
     "line 1: the last turn must be the assistant's, got 'user'"),
    ([{"messages": [{"role": "assistant", "content": "a"}]}], "messages",
     "line 1: a conversation needs a user turn before the assistant's"),
    ([{"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "a"}]}], "messages",
     "line 1: messages[1] (user) has empty or missing 'content'"),
    ([{"messages": []}], "messages", "line 1: field 'messages' must be a non-empty list of turns"),
    ([{"text": ""}], "text", "line 1: field 'text' is empty"),
])
def test_bad_rows_name_the_line(tmp_path, rows, fmt, message):
    with pytest.raises(DatasetError) as info:
        convert(rows, fmt, tmp_path=tmp_path)
    assert str(info.value) == f"{tmp_path / 'd.jsonl'}, {message}"


def test_bad_row_deep_in_the_file(tmp_path):
    rows = [*TEXT * 5, {"txt": "typo"}]
    with pytest.raises(DatasetError, match=r"line 6: missing field 'text'"):
        convert(rows, "text", tmp_path=tmp_path)


def test_not_json_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(TEXT[0]) + "\n" * 2 + "{oops\n")
    with pytest.raises(DatasetError, match=r"bad.jsonl, line 3: not JSON \(Expecting property name"):
        read_rows(str(path))


def test_jsonl_line_must_be_an_object(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a"}\n[1, 2]\n')
    with pytest.raises(DatasetError, match="line 2: expected a JSON object, got list"):
        read_rows(str(path))


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(DatasetError, match="the file has no rows"):
        read_rows(str(path))


def test_json_array_file(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(ALPACA, indent=2))
    raw = read_rows(str(path))
    assert len(raw.rows) == 2 and raw.locate(1) == "item 2"


def test_csv_file(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("prompt,completion\n2+2=,4\n3+3=,6\n")
    rows, fmt = convert_rows(read_rows(str(path)))
    assert fmt == "prompt_completion" and rows[1] == {"prompt": "3+3=", "completion": "6"}


def test_csv_errors_name_the_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("prompt,completion\n2+2=,4\n3+3=,\n")
    with pytest.raises(DatasetError, match=r"d.csv, line 3: field 'completion' is empty"):
        convert_rows(read_rows(str(path)))


def test_parquet_file(tmp_path):
    import datasets

    path = tmp_path / "d.parquet"
    datasets.Dataset.from_list(TEXT * 3).to_parquet(str(path))
    assert convert_rows(read_rows(str(path)))[1] == "text"


def test_save_to_disk_directory(tmp_path):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list(ALPACA)}).save_to_disk(str(tmp_path / "ds"))
    assert convert_rows(read_rows(str(tmp_path / "ds"), "train"))[1] == "alpaca"
    with pytest.raises(DatasetError, match=r"no split 'test' \(splits: train\)"):
        read_rows(str(tmp_path / "ds"), "test")


def test_directory_of_data_files(tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", TEXT)
    write_jsonl(folder / "eval.jsonl", TEXT * 2)
    assert len(read_rows(str(folder), "eval").rows) == 2
    with pytest.raises(DatasetError, match="no file for split 'test' among eval.jsonl, train.jsonl"):
        read_rows(str(folder), "test")


def test_missing_file_and_roots(tmp_path):
    with pytest.raises(DatasetError, match="file or directory not found"):
        read_rows(str(tmp_path / "nope.jsonl"))
    path = write_jsonl(tmp_path / "d.jsonl", TEXT)
    with pytest.raises(DatasetError, match="local datasets must be under an allowed root"):
        read_rows(str(path), allowed_roots=[tmp_path / "elsewhere"])


def test_unknown_bundled_dataset():
    with pytest.raises(DatasetError, match="no bundled dataset 'bundled:nope'"):
        read_rows("bundled:nope")


def test_bundled_demo_dataset_parses():
    assert check_dataset("bundled:json-extract", "train") == "messages"
    assert check_dataset("bundled:json-extract", "eval") == "messages"


def test_unreachable_hub_fails_fast_and_says_so(unreachable_hub):
    import time

    started = time.monotonic()
    with pytest.raises(DatasetError, match="someone/not-a-real-dataset-xyz: the Hugging Face Hub could not be reached"):
        read_rows("someone/not-a-real-dataset-xyz", limit=5)
    assert time.monotonic() - started < 10


def test_prepare_with_limit_and_validation_split(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", TEXT * 20)
    cfg = SFTConfig(base_model="m", dataset_name=str(path), max_steps=1, max_samples=10, validation_split=0.2)
    data = prepare_datasets(cfg)
    assert (data.train_rows, data.eval_rows) == (8, 2)


def test_prepare_with_eval_dataset(tmp_path):
    train = write_jsonl(tmp_path / "t.jsonl", MESSAGES * 4)
    evaluation = write_jsonl(tmp_path / "e.jsonl", MESSAGES)
    cfg = SFTConfig(base_model="m", dataset_name=str(train), eval_dataset_name=str(evaluation), max_steps=1)
    data = prepare_datasets(cfg)
    assert (data.dataset_format, data.train_rows, data.eval_rows) == ("messages", 4, 1)


def test_check_dataset_reads_a_file_once_until_it_changes(tmp_path, monkeypatch):
    import os

    from app.sft import data as data_module

    path = tmp_path / "rows.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n')
    reads = []
    real_read_rows = data_module.read_rows
    monkeypatch.setattr(data_module, "read_rows", lambda *a, **k: reads.append(a) or real_read_rows(*a, **k))
    assert check_dataset(str(path), "train") == "prompt_completion"
    assert check_dataset(str(path), "train") == "prompt_completion"
    assert len(reads) == 1
    # A changed file is read again, and its error is not remembered.
    path.write_text('{"nothing": "useful"}\n')
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    for _ in range(2):
        with pytest.raises(Exception, match="rows.jsonl"):
            check_dataset(str(path), "train")
    assert len(reads) == 3
