"""Where a demo training step's time goes: the limit runner's loop (bench/limit_sft.py) in one dtype setup,
timed over a few steps and profiled with ``torch.profiler`` on one more.

Setups (``--setup``):
  fp32      fp32 weights, no autocast (the service's CPU default before #28)
  autocast  bf16 base weights, fp32 LoRA weights, ``torch.autocast(bf16)``, attention in fp32 (the service's
            bf16: TrainingArguments' bf16 is autocast; sft/attention.py)
  autocast-bf16-attention  the same with attention in bf16 too (the service's bf16 before fp32 attention)
  bf16      bf16 base weights, fp32 LoRA weights, no autocast: PEFT casts the LoRA path's input to fp32 and its
            output back, so the frozen matmuls run in bf16 with no per-op casts

Prints one line, ``BENCH_RESULT {json}``: steps/s, per-step losses and the profile's top operator groups.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))

from bare_sft import RESULT_PREFIX  # noqa: E402
from bare_trl_demo import TRAIN_PATH, load_prompt_completion  # noqa: E402
from limit_sft import attend_in_fp32, batches, tokenize  # noqa: E402

#: Profiler operator names -> the group the report shows.
_GROUPS = (("matmul", ("mm", "addmm", "bmm", "matmul", "linear")),
           ("attention", ("scaled_dot_product", "flash_attention", "_efficient_attention")),
           ("casts", ("to_copy", "_to_copy", "copy_", "to")),
           ("optimizer", ("adamw", "_fused_adamw", "foreach")),
           ("loss", ("cross_entropy", "log_softmax", "nll_loss")))


def _group(name: str) -> str:
    op = name.removeprefix("aten::")
    for group, names in _GROUPS:
        if any(op == n or op.startswith(n + "_") or n in op for n in names):
            return group
    return "elementwise/other"


def run(model_dir: str, setup: str, steps: int, profile: bool) -> dict:
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dtype = torch.float32 if setup == "fp32" else torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    if setup == "autocast":
        attend_in_fp32(model)
    examples = tokenize(load_prompt_completion(TRAIN_PATH), tokenizer, 256)
    set_seed(42)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3, fused=True)
    causal_lm = model.get_base_model()
    backbone, head = causal_lm.base_model, causal_lm.get_output_embeddings()

    def step(batch):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=setup.startswith("autocast")):
            hidden = backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              use_cache=False).last_hidden_state[:, :-1]
            targets = batch["labels"][:, 1:]
            mask = targets != -100
            logits = head(hidden[mask])
        loss = F.cross_entropy(logits.float(), targets[mask], reduction="sum") / mask.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    data = list(batches(examples, batch_size=8, seed=42, steps=steps + 2, pad_id=tokenizer.pad_token_id))
    losses = [step(data[0])]  # warm-up (first-call allocations, oneDNN primitive creation)
    started = time.perf_counter()
    for batch in data[1:steps + 1]:
        losses.append(step(batch))
    runtime = time.perf_counter() - started
    groups: dict[str, float] = defaultdict(float)
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            step(data[steps + 1])
        for event in prof.key_averages():
            groups[_group(event.key)] += event.self_cpu_time_total / 1000
    total = sum(groups.values()) or 1.0
    return {"setup": setup, "steps": steps, "steps_per_s": round(steps / runtime, 4), "step_losses": losses,
            "torch_threads": torch.get_num_threads(),
            "profile_ms": {k: round(v, 1) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
            "profile_share": {k: round(v / total, 3) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--setup", choices=["fp32", "autocast", "autocast-bf16-attention", "bf16"], required=True)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    print(RESULT_PREFIX + json.dumps(run(args.model, args.setup, args.steps, not args.no_profile)), flush=True)


if __name__ == "__main__":
    main()
