from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from app.sft import ModelError
from app.sft.models import CHATML_TEMPLATE, check_model, list_models, load_tokenizer, resolve_model


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


def test_unreachable_hub_says_so(tmp_path, unreachable_hub):
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


def _run_python(code: str, *args: str) -> str:
    backend = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(backend)}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_load_ml_stack_freezes_the_import_heap_once():
    # A fresh interpreter: in this one, an earlier test has already loaded the stack.
    out = _run_python("""
        import gc
        from app.sft.models import load_ml_stack
        assert gc.get_freeze_count() == 0
        load_ml_stack()
        frozen = gc.get_freeze_count()
        load_ml_stack()
        print(frozen, gc.get_freeze_count())
    """)
    first, second = map(int, out.split())
    assert first > 100_000  # torch, transformers, PEFT, TRL: ~500k objects
    assert second == first


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_release_memory_hands_the_freed_heap_back():
    out = _run_python("""
        import torch  # release_memory imports it: importing it after the frees would reuse the heap
        from app.sft.models import release_memory

        def rss_mb():
            for line in open("/proc/self/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024

        blocks = [bytes(10_000) + bytes([i % 256]) for i in range(20_000)]  # ~200 MB of heap chunks
        last = blocks[-1]  # pins the top of the heap, so free() alone cannot shrink it
        del blocks
        freed = rss_mb()
        release_memory()
        print(freed, rss_mb())
    """)
    freed, released = map(float, out.split())
    assert freed - released > 150


_LAYER_BUFFERS = """
    import ctypes, sys
    from app.sft.device import pin_mmap_threshold

    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]

    def rss_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

    def block(size):
        address = libc.malloc(size)
        libc.memset(address, 1, size)
        return address

    if sys.argv[1] == "pin":
        assert pin_mmap_threshold()
    libc.free(block(16 << 20))  # a freed 16 MiB mapping: glibc's own threshold rises to 16 MiB
    before = rss_mb()
    blocks = [block(4 << 20) for _ in range(40)]  # 160 MiB of an fsdp layer's gathered parameters and gradients
    top = block(64 << 10)  # something still alive above them
    for address in blocks:
        libc.free(address)
    print(rss_mb() - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_a_pinned_mmap_threshold_hands_each_freed_buffer_back():
    # glibc's defaults keep the freed buffers as heap holes; pinned, each was its own mapping, unmapped when freed
    assert float(_run_python(_LAYER_BUFFERS, "default")) > 120
    assert float(_run_python(_LAYER_BUFFERS, "pin")) < 16


def test_list_models(tmp_path, tiny_model_dir):
    import shutil

    cache_dir = tmp_path / "cache"
    shutil.copytree(tiny_model_dir, cache_dir / "gguf-tiny-1234")
    shutil.copytree(tiny_model_dir, tmp_path / "root" / "models" / "my-model")
    (tmp_path / "root" / "models" / "not-a-model").mkdir()
    models = list_models(cache_dir=cache_dir, model_roots=[tmp_path / "root"])
    by_kind = {}
    for item in models:
        by_kind.setdefault(item["kind"], []).append(item)
    bundled = by_kind["bundled"][0]
    assert bundled["name"] == "smollm2-135m-instruct" and bundled["ready"] is False
    assert [m["path"] for m in by_kind["converted"]] == [str((cache_dir / "gguf-tiny-1234").resolve())]
    assert [m["name"] for m in by_kind["local"]] == [str((tmp_path / "root" / "models" / "my-model").resolve())]
    assert all(m["ready"] for m in by_kind["local"] + by_kind["converted"])
