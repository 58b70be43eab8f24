"""The "limit" runner of the benchmark: the demo job as a minimal PyTorch + PEFT training loop.

Nothing but what the job trains: the same model, the same LoRA config initialised from the same seed, the same
rows tokenised as TRL tokenises them (chat template, loss on the completion only, truncated to ``max_length``),
in the same order (the sampler's permutation seeded with the seed, as accelerate's seedable sampler) and padded to
the longest row of each batch; AdamW with TRL's defaults, a linear schedule without warm-up, gradient clipping
at 1.0, and ordinary cross-entropy over the trained tokens (the LM head projects only those positions); in bf16
on a CPU, attention in fp32 (``attend_in_fp32``: PyTorch's CPU attention is slower in bf16). No
trainer, callbacks, logging or metrics. Its per-step losses equal the job's, so the benchmark can check that all
three runners train the same thing. Like ``bench/bare_sft.py`` it imports nothing from the service.

Prints one line, ``BENCH_RESULT {json}``, with the keys of ``bench/bare_sft.py``'s.
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

from bare_sft import CHATML_TEMPLATE, RESULT_PREFIX, add_job_options  # noqa: E402
from bare_trl_demo import load_prompt_completion  # noqa: E402


def tokenize(rows: list[dict], tokenizer, max_length: int) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) per row, as TRL 1.16 builds them for conversational prompt/completion rows."""
    out = []
    for row in rows:
        prompt = tokenizer.apply_chat_template(row["prompt"], tokenize=True, return_dict=True,
                                               add_generation_prompt=True)["input_ids"]
        ids = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=True,
                                            return_dict=True)["input_ids"]
        start = next((i for i, (a, b) in enumerate(zip(prompt, ids)) if a != b), min(len(prompt), len(ids)))
        labels = [-100] * start + ids[start:]
        ids, labels = ids[:max_length], labels[:max_length]
        if any(label != -100 for label in labels):
            out.append((ids, labels))
    return out


def batches(examples: list, *, batch_size: int, seed: int, steps: int, pad_id: int):
    """``steps`` batches of padded tensors, epoch after epoch, each epoch in a permutation seeded seed + epoch."""
    import torch

    epoch = 0
    while True:
        generator = torch.Generator()
        generator.manual_seed(seed + epoch)
        order = torch.randperm(len(examples), generator=generator).tolist()
        for i in range(0, len(order), batch_size):
            rows = [examples[j] for j in order[i:i + batch_size]]
            width = max(len(ids) for ids, _ in rows)
            yield {
                "input_ids": torch.tensor([ids + [pad_id] * (width - len(ids)) for ids, _ in rows]),
                "attention_mask": torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows]),
                "labels": torch.tensor([labels + [-100] * (width - len(labels)) for _, labels in rows]),
            }
            steps -= 1
            if steps == 0:
                return
        epoch += 1


def attend_in_fp32(model) -> None:
    """Run ``model``'s ``sdpa`` attention in fp32 with autocast off, the matmuls around it staying bf16: on the
    2-core AMX Xeon the demo's bf16 autocast step spent ~390 ms in bf16 attention, ~126 ms in fp32."""
    import torch
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    def sdpa_in_fp32(module, query, key, value, attention_mask, **kwargs):
        with torch.autocast(query.device.type, enabled=False):
            output, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(),
                                                     attention_mask, **kwargs)
        return output.to(query.dtype), weights

    AttentionInterface.register("limit_sdpa_fp32", sdpa_in_fp32)
    AttentionMaskInterface.register("limit_sdpa_fp32", sdpa_mask)
    model.set_attn_implementation("limit_sdpa_fp32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_job_options(parser)
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_linear_schedule_with_warmup, set_seed

    imported = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32  # LoRA on a bf16 base, as the service
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype)
    if args.precision == "bf16" and device == "cpu":
        attend_in_fp32(model)
    loaded = time.perf_counter()

    examples = tokenize(load_prompt_completion(args.data), tokenizer, args.max_length)
    prepared = time.perf_counter()

    set_seed(args.seed)
    lora = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                      target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora).to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.learning_rate, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                                  fused=True)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, args.max_steps)
    scaler = torch.amp.GradScaler(device) if args.precision == "fp16" else None
    causal_lm = model.get_base_model()
    backbone, head = causal_lm.base_model, causal_lm.get_output_embeddings()
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    built = time.perf_counter()

    losses, tokens = [], 0
    started = time.perf_counter()
    for batch in batches(examples, batch_size=args.batch_size, seed=args.seed, steps=args.max_steps,
                         pad_id=tokenizer.pad_token_id):
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device, dtype=half, enabled=half is not None):
            hidden = backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              use_cache=False).last_hidden_state[:, :-1]
            targets = batch["labels"][:, 1:]
            mask = targets != -100
            logits = head(hidden[mask])
        loss = F.cross_entropy(logits.float(), targets[mask], reduction="sum") / mask.sum()
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
        tokens += int(batch["attention_mask"].sum())
    runtime = time.perf_counter() - started
    trained = time.perf_counter()
    output_dir = Path(args.output_dir)
    model.save_pretrained(str(output_dir / "adapter"))
    tokenizer.save_pretrained(str(output_dir / "adapter"))
    saved = time.perf_counter()

    import resource

    step_losses = torch.stack(losses).float().tolist()
    print(RESULT_PREFIX + json.dumps({
        "wall_s": round(saved - START, 3),
        "import_s": round(imported - START, 3),
        "load_s": round(loaded - imported, 3),
        "data_s": round(prepared - loaded, 3),
        "build_s": round(built - prepared, 3),
        "train_wall_s": round(trained - built, 3),
        "save_s": round(saved - trained, 3),
        "train_runtime": round(runtime, 3),
        "global_step": len(step_losses),
        "steps_per_s": round(len(step_losses) / runtime, 4) if runtime > 0 else None,
        "train_loss": sum(step_losses) / len(step_losses),
        "step_losses": step_losses,
        "train_tokens_per_second": round(tokens / runtime, 2) if runtime > 0 else None,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_gpu_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device == "cuda" else None,
    }), flush=True)


if __name__ == "__main__":
    main()
