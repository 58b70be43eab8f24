"""Bare TRL baseline of the DPO section: a service DPO job, as a plain ``trl.DPOTrainer`` script.

What a user would write: read OpenAI preference rows (``input.messages``, ``preferred_output``,
``non_preferred_output``) into TRL's conversational ``prompt`` / ``chosen`` / ``rejected``, LoRA with the
adapter-disabled model as the reference (``ref_model=None``), and the ``trl.DPOConfig`` arguments
``app.sft.config.SFTConfig.to_trl`` passes for a DPO config with these fields (``bench/bare_sft.py``'s
``trl_args`` without the SFT-only ones, plus beta and the loss). It imports nothing from the service.

Prints one line, ``BENCH_RESULT {json}``, with the keys of ``bench/bare_sft.py``'s.
"""

from __future__ import annotations

import time

START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bare_sft import add_job_options, load_tokenizer_and_model, print_result, trl_args  # noqa: E402


def load_pairs(path: Path) -> list[dict]:
    """OpenAI preference rows as TRL's conversational preference rows."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [{"prompt": r["input"]["messages"], "chosen": r["preferred_output"], "rejected": r["non_preferred_output"]}
            for r in rows]


def dpo_args(*, beta: float, loss_type: str, **fields) -> dict:
    """The keyword arguments of ``trl.DPOConfig`` the service passes for a DPO job with these fields."""
    args = trl_args(**fields)
    for sft_only in ("packing", "completion_only_loss"):
        args.pop(sft_only)
    return {**args, "beta": beta, "loss_type": [loss_type]}


def add_dpo_options(parser: argparse.ArgumentParser) -> None:
    add_job_options(parser)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--loss-type", default="sigmoid")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dpo_options(parser)
    args = parser.parse_args()

    import torch
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import set_seed

    imported = time.perf_counter()
    cuda = torch.cuda.is_available()
    tokenizer, model = load_tokenizer_and_model(args.model, args.precision)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    loaded = time.perf_counter()

    dataset = Dataset.from_list(load_pairs(args.data))
    prepared = time.perf_counter()

    output_dir = Path(args.output_dir)
    config = trl.DPOConfig(**dpo_args(
        output_dir=str(output_dir / "checkpoints"), max_steps=args.max_steps, learning_rate=args.learning_rate,
        batch_size=args.batch_size, max_length=args.max_length, seed=args.seed, precision=args.precision,
        use_cpu=not cuda, beta=args.beta, loss_type=args.loss_type))
    lora = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                      target_modules="all-linear", task_type="CAUSAL_LM")
    set_seed(args.seed)
    trainer = trl.DPOTrainer(model=model, ref_model=None, args=config, train_dataset=dataset,
                             processing_class=tokenizer, peft_config=lora)
    del model
    built = time.perf_counter()

    output = trainer.train()
    trained = time.perf_counter()
    trainer.save_model(str(output_dir / "adapter"))
    tokenizer.save_pretrained(str(output_dir / "adapter"))
    saved = time.perf_counter()

    history = trainer.state.log_history
    print_result({"imported": imported, "loaded": loaded, "prepared": prepared, "built": built, "trained": trained,
                  "saved": saved}, runtime=float(output.metrics["train_runtime"]),
                 global_step=trainer.state.global_step, train_loss=float(output.training_loss),
                 step_losses=[float(e["loss"]) for e in history if "loss" in e and "train_runtime" not in e],
                 tokens=next((float(e["num_tokens"]) for e in reversed(history) if "num_tokens" in e), None),
                 device="cuda" if cuda else "cpu")


if __name__ == "__main__":
    main()
