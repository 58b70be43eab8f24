"""Bare TRL baseline of the benchmark: the service's demo job, as a plain ``trl.SFTTrainer`` script.

It trains exactly what a service job with the same fields trains: the same rows (chat rows split into
conversational prompt/completion, loss on the completion), the same LoRA config, the same
``trl.SFTConfig`` arguments as ``app.sft.config.SFTConfig.to_trl`` (``trl_args`` below mirrors it;
``backend/tests/test_bench_smoke.py`` checks that the two stay equal), ``set_seed`` before the trainer
is built (LoRA init), and it saves the adapter and tokenizer the same way. It imports nothing from the
service: what differs from a service job is the service itself (job thread, callbacks that record
progress, metrics and events, the HTTP API).

Prints one line, ``BENCH_RESULT {json}``: timings of each stage (imports, load, data, trainer build, train, save),
steps/s, train loss, train tokens/s.
"""

from __future__ import annotations

import time

START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from bare_trl_demo import TRAIN_PATH, load_prompt_completion  # noqa: E402

RESULT_PREFIX = "BENCH_RESULT "

#: The service's fallback template for tokenizers without one (app.sft.models.CHATML_TEMPLATE).
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def trl_args(*, output_dir: str, max_steps: int, learning_rate: float, batch_size: int, max_length: int,
             seed: int, precision: str, packing: bool = False, gradient_checkpointing: bool = False,
             use_cpu: bool = True, logging_steps: int = 1) -> dict:
    """The keyword arguments of ``trl.SFTConfig``: those ``app.sft.config.SFTConfig.to_trl`` passes for a
    config with these fields and every other field at its default."""
    return dict(
        output_dir=output_dir,
        max_steps=max_steps,
        num_train_epochs=1.0,
        learning_rate=learning_rate,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=8,
        gradient_accumulation_steps=1,
        max_length=max_length,
        packing=packing,
        warmup_steps=0.0,
        lr_scheduler_type="linear",
        weight_decay=0.0,
        max_grad_norm=1.0,
        seed=seed,
        data_seed=seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        activation_checkpointing=gradient_checkpointing,
        eval_strategy="no",
        eval_steps=None,
        save_strategy="no",
        save_steps=500,
        save_total_limit=None,
        logging_steps=logging_steps,
        logging_first_step=True,
        report_to="none",
        completion_only_loss=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=use_cpu,
    )


def load_tokenizer_and_model(path: str, precision: str):
    """The tokenizer (a pad token and a chat template ensured, as the service does) and the model, in the dtype
    the service loads a LoRA base in."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32  # LoRA on a bf16 base, as the service
    return tokenizer, AutoModelForCausalLM.from_pretrained(path, dtype=dtype)


def print_result(times: dict[str, float], *, runtime: float, global_step: int, train_loss: float,
                 step_losses: list[float], tokens: float | None, device: str) -> None:
    """The ``BENCH_RESULT`` line. ``times``: perf_counter stamps at imported, loaded, prepared, built, trained,
    saved."""
    import resource

    import torch

    t = {"start": START, **times}
    stages = ("import_s", "load_s", "data_s", "build_s", "train_wall_s", "save_s")
    marks = ("start", "imported", "loaded", "prepared", "built", "trained", "saved")
    print(RESULT_PREFIX + json.dumps({
        "wall_s": round(t["saved"] - START, 3),
        **{stage: round(t[b] - t[a], 3) for stage, a, b in zip(stages, marks, marks[1:])},
        "train_runtime": round(runtime, 3),
        "global_step": global_step,
        "steps_per_s": round(global_step / runtime, 4) if runtime > 0 else None,
        "train_loss": train_loss,
        "step_losses": step_losses,
        "train_tokens_per_second": round(tokens / runtime, 2) if tokens and runtime > 0 else None,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_gpu_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device == "cuda" else None,
    }), flush=True)


def add_job_options(parser: argparse.ArgumentParser) -> None:
    """The options that say which job to train; the limit runner (bench/limit_sft.py) takes the same."""
    parser.add_argument("--model", required=True, help="model directory (or a cached Hub id)")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--data", type=Path, default=TRAIN_PATH, help="JSONL file of chat rows")
    parser.add_argument("--max-steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=42)
    # Defaults are the service's (app.sft.config.SFTConfig), for fields a config leaves out.
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-alpha", type=int, default=32)
    parser.add_argument("--lora-dropout", type=float, default=0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_job_options(parser)
    parser.add_argument("--packing", action="store_true")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    # Knobs the service does not expose, measured by the GPU check (scripts/gpu_check.py).
    parser.add_argument("--padding-free", action="store_true", help="trl.SFTConfig(padding_free=True)")
    parser.add_argument("--use-liger-kernel", action="store_true", help="trl.SFTConfig(use_liger_kernel=True)")
    args = parser.parse_args()

    import torch
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    imported = time.perf_counter()
    cuda = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32  # LoRA on a bf16 base, as the service
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    loaded = time.perf_counter()

    dataset = Dataset.from_list(load_prompt_completion(args.data))
    prepared = time.perf_counter()

    output_dir = Path(args.output_dir)
    knobs: dict = {}
    if args.padding_free:
        # TRL 1.16 refuses padding_free with a max_length and no packing (it would not truncate); the demo
        # rows are far shorter than max_length, so nothing is cut either way.
        knobs.update(padding_free=True, max_length=None)
    if args.use_liger_kernel:
        knobs["use_liger_kernel"] = True
    config = trl.SFTConfig(**{**trl_args(
        output_dir=str(output_dir / "checkpoints"), max_steps=args.max_steps, learning_rate=args.learning_rate,
        batch_size=args.batch_size, max_length=args.max_length, seed=args.seed, precision=args.precision,
        packing=args.packing, gradient_checkpointing=args.gradient_checkpointing, use_cpu=not cuda,
    ), **knobs})
    lora = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                      target_modules="all-linear", task_type="CAUSAL_LM")
    set_seed(args.seed)
    trainer = trl.SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                             peft_config=lora)
    del model
    built = time.perf_counter()

    output = trainer.train()
    trained = time.perf_counter()
    trainer.save_model(str(output_dir / "adapter"))
    tokenizer.save_pretrained(str(output_dir / "adapter"))
    saved = time.perf_counter()

    import resource

    state = trainer.state
    runtime = float(output.metrics["train_runtime"])
    tokens = next((float(e["num_tokens"]) for e in reversed(state.log_history) if "num_tokens" in e), None)
    print(RESULT_PREFIX + json.dumps({
        "wall_s": round(saved - START, 3),
        "import_s": round(imported - START, 3),
        "load_s": round(loaded - imported, 3),
        "data_s": round(prepared - loaded, 3),
        "build_s": round(built - prepared, 3),
        "train_wall_s": round(trained - built, 3),
        "save_s": round(saved - trained, 3),
        "train_runtime": round(runtime, 3),
        "global_step": state.global_step,
        "steps_per_s": round(state.global_step / runtime, 4) if runtime > 0 else None,
        "train_loss": float(output.training_loss),
        "train_tokens_per_second": round(tokens / runtime, 2) if tokens and runtime > 0 else None,
        "device": "cuda" if cuda else "cpu",
        "torch_threads": torch.get_num_threads(),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_gpu_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
    }), flush=True)


if __name__ == "__main__":
    main()
