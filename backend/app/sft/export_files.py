"""The files written beside an exported model (Ollama's Modelfile for GGUF, the README model card), and
an export's folder as a tar streamed from its files."""

from __future__ import annotations

import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

#: Bytes read from a file per chunk of a streamed archive.
ARCHIVE_CHUNK = 1024 * 1024

# Ollama


#: The Go template Ollama renders for ChatML models: what a ChatML Jinja template writes, message by
#: message, then the assistant's turn opened (Ollama always asks for the next assistant answer).
CHATML_GO_TEMPLATE = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
)
_PROBE = [{"role": "user", "content": "PROBE-USER"}]


def chatml_default_system(tokenizer: Any) -> tuple[bool, str | None]:
    """Whether the tokenizer's chat template is ChatML, and the system prompt it adds when a chat has
    none (SmolLM2 adds one). The template is rendered, not parsed: a template counts as ChatML when
    its output is exactly ChatML for chats with and without a system message."""
    def render(messages: list[dict[str, str]]) -> str | None:
        try:
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception:  # a template that rejects the probe is not one we can translate
            return None

    with_system = [{"role": "system", "content": "PROBE-SYSTEM"}, *_PROBE,
                   {"role": "assistant", "content": "PROBE-ANSWER"}, {"role": "user", "content": "PROBE-AGAIN"}]
    if render(with_system) != chatml(with_system):
        return False, None
    plain = render(_PROBE)
    if plain is None:
        return False, None
    if plain == chatml(_PROBE):
        return True, None
    head, tail = "<|im_start|>system\n", "<|im_end|>\n" + chatml(_PROBE)
    if plain.startswith(head) and plain.endswith(tail):
        default = plain[len(head):-len(tail)]
        if plain == chatml([{"role": "system", "content": default}, *_PROBE]):
            return True, default
    return False, None


def chatml(messages: Iterable[dict[str, str]]) -> str:
    """ChatML text of ``messages`` with the assistant's turn opened."""
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + "<|im_start|>assistant\n"


def ollama_modelfile(tokenizer: Any, *, gguf_name: str, generation: dict[str, Any]) -> tuple[str, bool]:
    """An Ollama Modelfile for ``gguf_name`` beside it, and whether it carries a chat TEMPLATE.

    ChatML templates (SmolLM2, Qwen, the service's fallback) become Ollama's Go template, with the
    template's default system prompt as SYSTEM. Other templates are kept in the GGUF (llama.cpp reads
    them) but Ollama needs a Go template written by hand: the Modelfile says so.
    """
    is_chatml, system = chatml_default_system(tokenizer)
    lines = ["# Ollama: ollama create NAME -f Modelfile (in this folder), then ollama run NAME", f"FROM ./{gguf_name}"]
    if is_chatml:
        lines.append(f'TEMPLATE """{CHATML_GO_TEMPLATE}"""')
        if system:
            lines.append(f'SYSTEM """{system}"""')
    else:
        lines.append("# The base model's chat template is not ChatML, so no TEMPLATE is written: Ollama then "
                     "uses the raw prompt. The GGUF keeps the Jinja template for llama.cpp.")
    for stop in stop_tokens(tokenizer, chatml_template=is_chatml):
        lines.append(f'PARAMETER stop "{stop}"')
    for key, value in generation_defaults(generation).items():
        lines.append(f"PARAMETER {key} {value}")
    return "\n".join(lines) + "\n", is_chatml


def stop_tokens(tokenizer: Any, *, chatml_template: bool) -> list[str]:
    """Strings that end an answer: ChatML's markers, and the tokenizer's end-of-sequence token."""
    stops = ["<|im_start|>", "<|im_end|>"] if chatml_template else []
    eos = tokenizer.eos_token
    if eos and eos not in stops:
        stops.append(eos)
    return [s.replace("\\", "\\\\").replace('"', '\\"') for s in stops]


def generation_defaults(generation: dict[str, Any]) -> dict[str, Any]:
    """Ollama PARAMETERs from the model's generation_config; greedy (temperature 0) when it does not
    sample, as the service's own /generate answers by default."""
    if not generation.get("do_sample"):
        return {"temperature": 0}
    names = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
             "repetition_penalty": "repeat_penalty"}
    return {ollama: generation[hf] for hf, ollama in names.items() if generation.get(hf) is not None}


# Model cards


def model_card(card: dict[str, Any], *, fmt: str, gguf_type: str | None, gguf_name: str | None) -> str:
    """README.md of an export or of a job's own adapter (``fmt`` "model" for a full fine-tune): what it was
    trained from and on, how long, its final losses, which base goes with it, how to run it."""
    title = {"gguf": f"GGUF ({gguf_type})", "merged": "merged model (safetensors)", "adapter": "LoRA adapter (PEFT)",
             "model": "full fine-tune (safetensors)"}
    lora = card.get("lora") or {}
    rows = [
        ("Job", card.get("job_id")),
        ("Base model", card.get("base_model")),
        ("Training data", card.get("dataset_name")),
        ("Method", card.get("method")),
        ("LoRA", f"r={lora.get('r')}, alpha={lora.get('alpha')}, target modules: {lora.get('target_modules')}"
         if lora else None),
        ("Steps", f"{card.get('global_step')} of {card.get('max_steps')}"),
        ("Final training loss", _number(card.get("train_loss"))),
        ("Last logged loss", _number(card.get("last_loss"))),
        ("Final eval loss", _number(card.get("eval_loss"))),
        ("Trained in", card.get("precision")),
        ("Finished", card.get("completed_at")),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows if v not in (None, "", "None of None"))
    intro = (f"Exported by the SFT job service from job `{card.get('job_id')}`." if card.get("job_id")
             else "Trained by the SFT job service.")
    base = f"## The base model\n\n{card['base_note']}\n\n" if card.get("base_note") else ""
    return (f"# {card.get('base_model')} fine-tuned: {title[fmt]}\n\n{intro}\n\n"
            f"| | |\n|---|---|\n{table}\n\n{base}## Run it\n\n{_usage(card, fmt=fmt, gguf_name=gguf_name)}\n")


def _number(value: Any) -> str | None:
    return f"{value:.4f}" if isinstance(value, (int, float)) else None


def _usage(card: dict[str, Any], *, fmt: str, gguf_name: str | None) -> str:
    base = card.get("base_model")
    if fmt == "gguf":
        return ("llama.cpp:\n\n```sh\n"
                f"llama-cli -m {gguf_name} -cnv\nllama-server -m {gguf_name} --port 8080\n```\n\n"
                "Ollama (the Modelfile beside this file holds the chat template, stop tokens and defaults):\n\n"
                "```sh\nollama create my-model -f Modelfile\nollama run my-model\n```\n\n"
                "LM Studio: import the .gguf file.")
    if fmt in ("merged", "model"):
        how = " (the adapter merged into the full-precision base)" if fmt == "merged" else ""
        return (f"A standalone transformers model{how}:\n\n"
                "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
                "model = AutoModelForCausalLM.from_pretrained('.')\ntokenizer = AutoTokenizer.from_pretrained('.')\n"
                "```\n\nvLLM: `vllm serve .`")
    served = card.get("served_base_model") or base
    return ("adapter_config.json and adapter_model.safetensors sit at the top of this folder, the layout PEFT "
            "and vLLM read.\n\nvLLM (the base model by its Hub id or a local directory):\n\n```sh\n"
            f"vllm serve {served} --enable-lora --lora-modules my-adapter=$PWD --max-lora-rank "
            f"{max(16, int((card.get('lora') or {}).get('r') or 16))}\n```\n\n"
            "then ask for `\"model\": \"my-adapter\"` on its OpenAI API. PEFT:\n\n```python\n"
            "from peft import AutoPeftModelForCausalLM\nmodel = AutoPeftModelForCausalLM.from_pretrained('.')\n```")


# Archives


def archive_stream(folder: Path) -> tuple[int, Iterator[bytes]]:
    """``folder``'s files as an uncompressed tar at its top level (GGUF and safetensors barely compress),
    made as it is read: its exact size and its bytes, so that no download writes a copy to disk.
    GNU format, padded to 10 KiB records as ``tarfile`` pads them."""
    members = []
    for path in sorted(folder.iterdir()):
        if path.is_file():
            stat = path.stat()
            info = tarfile.TarInfo(path.name)
            info.size, info.mtime, info.mode = stat.st_size, int(stat.st_mtime), 0o644
            members.append((path, info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape"), stat.st_size))
    body = sum(len(header) + _padded(size) for _, header, size in members) + 2 * tarfile.BLOCKSIZE
    total = -(-body // tarfile.RECORDSIZE) * tarfile.RECORDSIZE

    def chunks() -> Iterator[bytes]:
        for path, header, size in members:
            yield header
            sent = 0
            with path.open("rb") as f:
                while sent < size and (chunk := f.read(min(ARCHIVE_CHUNK, size - sent))):
                    sent += len(chunk)
                    yield chunk
            if sent != size:
                raise OSError(f"{path} changed while it was archived ({sent} of {size} bytes)")
            yield b"\0" * (_padded(size) - size)
        yield b"\0" * (total - body + 2 * tarfile.BLOCKSIZE)

    return total, chunks()


def _padded(size: int) -> int:
    return -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
