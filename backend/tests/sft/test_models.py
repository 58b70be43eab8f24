from __future__ import annotations

import pytest

from app.sft import ModelError
from app.sft.models import CHATML_TEMPLATE, check_model, load_tokenizer, resolve_model


def test_local_directory(tiny_model_dir, tmp_path):
    ref = resolve_model(str(tiny_model_dir), cache_dir=tmp_path)
    assert ref.kind == "local" and ref.ready


def test_bundled_alias_resolves_to_the_cache(tmp_path):
    ref = resolve_model("smollm2-135m-instruct", cache_dir=tmp_path)
    assert ref.kind == "bundled"
    assert ref.gguf_file.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert ref.path == str(tmp_path / "smollm2-135m-instruct")
    assert not ref.ready


def test_missing_gguf(tmp_path):
    with pytest.raises(ModelError, match="GGUF file not found: /nope/model.gguf"):
        resolve_model("/nope/model.gguf", cache_dir=tmp_path)


def test_directory_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="is a directory without a config.json"):
        resolve_model(str(tmp_path / "empty"), cache_dir=tmp_path)


def test_missing_local_path(tmp_path):
    with pytest.raises(ModelError, match="'./no/such/model' is neither a local model directory"):
        resolve_model("./no/such/model", cache_dir=tmp_path)


def test_unreachable_hub_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as info:
        check_model("someone/not-cached-model", cache_dir=tmp_path)
    assert "is not in the local Hugging Face cache and the Hub could not be reached" in str(info.value)


def test_tokenizer_gets_pad_token_and_chat_template(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = None
    tokenizer.chat_template = None
    bare = tmp_path / "bare"
    tokenizer.save_pretrained(bare)
    (bare / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    loaded = load_tokenizer(resolve_model(str(bare), cache_dir=tmp_path))
    assert loaded.pad_token == loaded.eos_token
    assert loaded.chat_template == CHATML_TEMPLATE
