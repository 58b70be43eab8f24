"""The "limit" runner of the DPO section: a DPO job as a minimal PyTorch + PEFT loop (a plain forward + backward).

The same model, LoRA config and seed as the job, the same pairs tokenised as TRL tokenises them (the chat
template's prompt with its generation prompt, then each answer; truncated to ``max_length``), in the same order
(``bench/limit_sft.py``'s seeded permutation), each batch the chosen rows then the rejected rows padded to the
longest. A step is one policy forward of that batch with the LM head projecting only the answer tokens, one
reference forward of it with the adapter disabled (no grad), the sigmoid DPO loss, backward, AdamW with TRL's
defaults, a linear schedule and clipping at 1.0. No trainer, callbacks or metrics. Imports nothing from the service.

Prints one line, ``BENCH_RESULT {json}``, with the keys of ``bench/bare_sft.py``'s.
"""

from __future__ import annotations

import time

START = time.perf_counter()

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bare_dpo import add_dpo_options, load_pairs  # noqa: E402
from bare_sft import load_tokenizer_and_model, print_result  # noqa: E402


def tokenize(pairs: list[dict], tokenizer, max_length: int) -> list[tuple[list[int], list[int], list[int]]]:
    """(prompt ids, chosen ids, rejected ids) per pair, as TRL 1.16's DPOTrainer builds them."""
    out = []
    for pair in pairs:
        prompt = tokenizer.apply_chat_template(pair["prompt"], tokenize=True, return_dict=True,
                                               add_generation_prompt=True)["input_ids"]
        answers = []
        for side in ("chosen", "rejected"):
            ids = tokenizer.apply_chat_template(pair["prompt"] + pair[side], tokenize=True, return_dict=True)["input_ids"]
            answers.append(ids[len(prompt):])
        out.append((prompt, *answers))
    return out


def batches(pairs: list, *, batch_size: int, seed: int, steps: int, pad_id: int, max_length: int):
    """``steps`` batches: input ids, attention mask and answer mask of the chosen rows, then the rejected rows."""
    import torch

    epoch = 0
    while True:
        generator = torch.Generator()
        generator.manual_seed(seed + epoch)
        order = torch.randperm(len(pairs), generator=generator).tolist()
        for i in range(0, len(order), batch_size):
            rows = [pairs[j] for j in order[i:i + batch_size]]
            seqs = [(p + a)[:max_length] for side in (1, 2) for p, a in ((r[0], r[side]) for r in rows)]
            answer = [([0] * len(r[0]) + [1] * len(r[side]))[:max_length] for side in (1, 2) for r in rows]
            width = max(len(s) for s in seqs)
            yield {
                "input_ids": torch.tensor([s + [pad_id] * (width - len(s)) for s in seqs]),
                "attention_mask": torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs]),
                "answer_mask": torch.tensor([m + [0] * (width - len(m)) for m in answer], dtype=torch.bool),
            }
            steps -= 1
            if steps == 0:
                return
        epoch += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dpo_options(parser)
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, get_peft_model
    from transformers import get_linear_schedule_with_warmup, set_seed

    imported = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer, model = load_tokenizer_and_model(args.model, args.precision)
    loaded = time.perf_counter()

    pairs = tokenize(load_pairs(args.data), tokenizer, args.max_length)
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
    causal_lm = model.get_base_model()
    backbone, head = causal_lm.base_model, causal_lm.get_output_embeddings()
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    built = time.perf_counter()

    def answer_logps(batch) -> torch.Tensor:
        """Summed log-probabilities of each row's answer tokens (the head projects only those positions)."""
        hidden = backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          use_cache=False).last_hidden_state[:, :-1]
        mask = batch["answer_mask"][:, 1:]
        logits = head(hidden[mask]).float()
        token_logps = torch.log_softmax(logits, -1).gather(1, batch["input_ids"][:, 1:][mask][:, None])[:, 0]
        rows = torch.arange(mask.shape[0], device=mask.device)[:, None].expand_as(mask)[mask]
        return torch.zeros(mask.shape[0], device=mask.device, dtype=token_logps.dtype).index_add(0, rows, token_logps)

    losses, tokens = [], 0
    started = time.perf_counter()
    for batch in batches(pairs, batch_size=args.batch_size, seed=args.seed, steps=args.max_steps,
                         pad_id=tokenizer.pad_token_id, max_length=args.max_length):
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device, dtype=half, enabled=half is not None):
            policy = answer_logps(batch)
            with torch.no_grad(), model.disable_adapter():
                reference = answer_logps(batch)
        chosen, rejected = (policy - reference).chunk(2)
        loss = -F.logsigmoid(args.beta * (chosen - rejected)).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
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

    step_losses = torch.stack(losses).float().tolist()
    print_result({"imported": imported, "loaded": loaded, "prepared": prepared, "built": built, "trained": trained,
                  "saved": saved}, runtime=runtime, global_step=len(step_losses),
                 train_loss=sum(step_losses) / len(step_losses), step_losses=step_losses, tokens=tokens,
                 device=device)


if __name__ == "__main__":
    main()
