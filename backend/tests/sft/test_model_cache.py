"""app.sft.model_cache: loaded models kept, evicted least recently used, a failed load forgotten."""

from __future__ import annotations

import pytest

from app.sft.artifacts import job_artifact
from app.sft.generation import generate
from app.sft.model_cache import ModelCache


def test_cache_evicts_least_recently_used():
    cache = ModelCache(max_models=2)
    loaded = []

    def use(key):
        with cache.use(key, lambda: loaded.append(key) or key.upper()) as value:
            return value

    assert [use("a"), use("b"), use("a"), use("c")] == ["A", "B", "A", "C"]
    assert cache.keys() == ["a", "c"] and loaded == ["a", "b", "c"]
    use("b")
    assert cache.keys() == ["c", "b"] and loaded == ["a", "b", "c", "b"] and cache.loads == 4


def test_cache_forgets_a_failed_load():
    cache = ModelCache(max_models=1)
    with pytest.raises(RuntimeError):
        with cache.use("a", lambda: (_ for _ in ()).throw(RuntimeError("boom"))):
            pass
    assert cache.keys() == [] and cache.loads == 0


def test_generation_cache_bound_is_honoured(trained):
    cache = ModelCache(max_models=1)
    final = job_artifact(trained.jobs["lora"])
    checkpoint = job_artifact(trained.jobs["lora"], checkpoint="checkpoint-20")
    for artifact in (final, final, checkpoint, final):
        generate(cache, artifact, cache_dir=trained.cache_dir, prompt="hello", max_new_tokens=2)
    assert len(cache.keys()) == 1 and cache.loads == 3
    assert str(final.path) in cache.keys()[0]
