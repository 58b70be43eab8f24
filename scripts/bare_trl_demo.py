"""Bare TRL LoRA run on the bundled JSON-extraction demo data (reference recipe; the benchmark's baseline
is bench/bare_sft.py, which reuses this script's data loading).

Prints one JSON line: total wall time (incl. imports and model loading), training time, steps/s, train loss.
"""

import argparse
import json
import time

START = time.perf_counter()

from pathlib import Path  # noqa: E402

TRAIN_PATH = Path(__file__).resolve().parent.parent / "backend" / "app" / "demo" / "json_extract" / "train.jsonl"


def load_prompt_completion(path: Path) -> list[dict]:
    """Turn chat rows into conversational prompt/completion rows (loss on the completion only)."""
    rows = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                messages = json.loads(line)["messages"]
                rows.append({"prompt": messages[:-1], "completion": messages[-1:]})
    return rows


def main() -> None:
    """Train a LoRA adapter with trl.SFTTrainer and print timing and loss as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", required=True, help="saved Hugging Face model directory")
    parser.add_argument("--output-dir", required=True, help="where the adapter is saved")
    parser.add_argument("--max-steps", type=int, default=40)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--data", type=Path, default=TRAIN_PATH, help="JSONL file of chat rows")
    args = parser.parse_args()

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    dataset = Dataset.from_list(load_prompt_completion(args.data))
    config = SFTConfig(
        output_dir=args.output_dir,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        learning_rate=args.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=0,
        max_length=256,
        bf16=False,
        fp16=False,
        activation_checkpointing=False,
        seed=args.seed,
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
    )
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=lora)
    result = trainer.train()
    trainer.save_model(args.output_dir)
    metrics = result.metrics
    print(
        json.dumps(
            {
                "wall_s": round(time.perf_counter() - START, 1),
                "train_s": round(metrics["train_runtime"], 1),
                "steps": result.global_step,
                "steps_per_s": round(result.global_step / metrics["train_runtime"], 3),
                "train_loss": round(result.training_loss, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
