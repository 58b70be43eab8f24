from __future__ import annotations

from unittest.mock import Mock

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

from app.sft import ModelError
from app.sft.data import read_rows
from app.sft.errors import DatasetError
from app.sft.hub import HubUnreachable, hub_problem
from app.sft.models import check_model


def hub_answers(monkeypatch, error: Exception | None) -> list[tuple]:
    """HfApi.repo_info raises ``error`` (or answers); returns the calls made."""
    calls = []

    def repo_info(self, repo_id, *, repo_type, timeout):
        calls.append((repo_id, repo_type, timeout))
        if error is not None:
            raise error

    monkeypatch.setattr(HfApi, "repo_info", repo_info)
    return calls


def test_gated_is_not_mistaken_for_not_found(monkeypatch):
    # GatedRepoError is a RepositoryNotFoundError: the order of the checks matters.
    calls = hub_answers(monkeypatch, GatedRepoError("403", response=Mock()))
    assert hub_problem("org/llama", repo_type="model") == \
        "gated on the Hugging Face Hub: accept its terms and set HF_TOKEN"
    assert calls == [("org/llama", "model", 5)]


def test_not_found_and_found(monkeypatch):
    hub_answers(monkeypatch, RepositoryNotFoundError("404", response=Mock()))
    assert hub_problem("org/nope", repo_type="dataset") == "not found on the Hugging Face Hub"
    hub_answers(monkeypatch, None)
    assert hub_problem("org/yes", repo_type="dataset") is None


def test_unreachable_names_the_error(unreachable_hub):
    with pytest.raises(HubUnreachable, match="ConnectError"):
        hub_problem("org/any", repo_type="model")


def test_model_and_dataset_checks_say_gated(monkeypatch, tmp_path):
    hub_answers(monkeypatch, GatedRepoError("403", response=Mock()))
    with pytest.raises(ModelError, match="^model 'org/llama' is gated on the Hugging Face Hub: accept its terms"):
        check_model("org/llama", cache_dir=tmp_path)
    with pytest.raises(DatasetError, match="org/data: gated on the Hugging Face Hub: accept its terms"):
        read_rows("org/data", limit=5)
