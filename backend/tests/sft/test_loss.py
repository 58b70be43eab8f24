"""The cross_entropy loss path against TRL's fused LM head: same losses, gradients and metrics on the same batches."""

from __future__ import annotations

import pytest

from app.sft import SFTConfig, SFTTrainer
from app.sft.trainer import read_log

TOL = 1e-5


def build(tiny_model_dir, chat_jsonl, tmp_path, *, fused: bool, token_metrics: bool = True):
    """A trl.SFTTrainer (fused) or a CrossEntropySFTTrainer, LoRA initialised from the same seed."""
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    from app.sft.data import read_rows
    from app.sft.formats import convert_rows
    from app.sft.loss import CrossEntropySFTTrainer

    config = SFTConfig(base_model=str(tiny_model_dir), dataset_name=str(chat_jsonl), max_steps=4,
                       per_device_train_batch_size=4, lora_dropout=0.0)
    args = config.to_trl(output_dir=tmp_path / ("fused" if fused else "plain"), device="cpu")
    rows, _ = convert_rows(read_rows(str(chat_jsonl)))
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                      target_modules="all-linear", task_type="CAUSAL_LM")
    set_seed(config.seed)
    kwargs = dict(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=args,
                  train_dataset=Dataset.from_list(rows), processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
                  peft_config=lora)
    if fused:
        return trl.SFTTrainer(**kwargs)
    return CrossEntropySFTTrainer(token_metrics=token_metrics, **kwargs)


def step(trainer, batch, num_items_in_batch):
    """One forward + backward of ``batch``: the loss and the LoRA gradients by parameter name."""
    trainer.model.train()
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=num_items_in_batch)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.requires_grad}
    return loss.item(), grads


@pytest.mark.parametrize(("count", "chunk_tokens"), [("num_items_in_batch", None), ("none", None),
                                                     ("num_items_in_batch", 5)])
def test_cross_entropy_matches_trls_fused_head(tiny_model_dir, chat_jsonl, tmp_path, count, chunk_tokens):
    fused = build(tiny_model_dir, chat_jsonl, tmp_path, fused=True)
    plain = build(tiny_model_dir, chat_jsonl, tmp_path, fused=False)
    if chunk_tokens:  # the logits in chunks of 5 trained tokens, as a large vocabulary would have them
        plain.chunk_tokens = chunk_tokens
    for (name, a), (_, b) in zip(fused.model.named_parameters(), plain.model.named_parameters()):
        assert a.equal(b), f"{name}: the two trainers start from different weights"

    batches = [batch for _, batch in zip(range(3), fused.get_train_dataloader())]
    for batch in batches:
        n = (batch["labels"][:, 1:] != -100).sum() if count == "num_items_in_batch" else None
        fused_loss, fused_grads = step(fused, batch, n)
        plain_loss, plain_grads = step(plain, batch, n)
        assert plain_loss == pytest.approx(fused_loss, abs=TOL)
        assert fused_grads.keys() == plain_grads.keys() and fused_grads
        for name, grad in fused_grads.items():
            assert (plain_grads[name] - grad).abs().max().item() < TOL, name

    # First step of a run logs (logging_first_step): the plain path computes the same metrics there.
    for metric in ("entropy", "mean_token_accuracy"):
        expected, got = fused._metrics["train"][metric], plain._metrics["train"][metric]
        assert len(got) == len(expected) == len(batches)
        assert got == pytest.approx(expected, abs=TOL)


def test_a_run_logs_the_same_losses_on_both_paths(tiny_config, tmp_path):
    logs = {}
    for path in ("trl", "cross_entropy"):
        cfg = SFTConfig.model_validate({**tiny_config, "loss_path": path, "output_dir": str(tmp_path / path)})
        result = SFTTrainer(cfg, model_cache_dir=tmp_path / "cache").train()
        assert result.loss_path == path
        logs[path] = [entry for entry in read_log(result.output_dir) if "loss" in entry]
    assert [e["step"] for e in logs["cross_entropy"]] == [e["step"] for e in logs["trl"]] == [1, 2, 3, 4]
    for fused, plain in zip(logs["trl"], logs["cross_entropy"]):
        assert plain["loss"] == pytest.approx(fused["loss"], abs=TOL)
        assert plain["num_tokens"] == fused["num_tokens"]
        assert "entropy" in fused and "entropy" not in plain  # token_metrics: off on CPU by default


def test_token_metrics_are_computed_on_logging_steps_only(tiny_config, tmp_path, monkeypatch):
    from app.sft.loss import CrossEntropySFTTrainer

    computed_at = []
    record = CrossEntropySFTTrainer._record_token_metrics

    def spy(self, mode, *args):
        computed_at.append(self.state.global_step + 1)
        record(self, mode, *args)

    monkeypatch.setattr(CrossEntropySFTTrainer, "_record_token_metrics", spy)
    cfg = SFTConfig.model_validate({**tiny_config, "max_steps": 6, "logging_steps": 2, "token_metrics": True,
                                    "output_dir": str(tmp_path / "out")})
    result = SFTTrainer(cfg, model_cache_dir=tmp_path / "cache").train()
    assert computed_at == [1, 2, 4, 6]  # the first step, then every logging_steps
    logged = [e for e in read_log(result.output_dir) if "loss" in e]
    assert [e["step"] for e in logged] == [1, 2, 4, 6]
    for entry in logged:
        assert entry["entropy"] > 0 and 0 <= entry["mean_token_accuracy"] <= 1


def test_loss_path_and_token_metrics_resolve_per_device():
    from app.sft.config import CUDA_LOSS_PATH

    base = {"base_model": "m", "dataset_name": "d", "max_steps": 1}
    auto = SFTConfig(**base)
    assert auto.resolve_loss_path("cpu") == "cross_entropy" and not auto.resolve_token_metrics("cpu")
    assert auto.resolve_loss_path("cuda") == CUDA_LOSS_PATH and auto.resolve_token_metrics("cuda")
    no_metrics = SFTConfig(**base, token_metrics=False)
    assert no_metrics.resolve_loss_path("cuda") == "cross_entropy" and not no_metrics.resolve_token_metrics("cuda")
    assert SFTConfig(**base, loss_path="trl").resolve_token_metrics("cpu")  # TRL's head always computes them
    assert SFTConfig(**base, token_metrics=True).resolve_token_metrics("cpu")
    with pytest.raises(ValueError, match="token_metrics=false needs loss_path cross_entropy"):
        SFTConfig(**base, loss_path="trl", token_metrics=False)
    with pytest.raises(ValueError, match="loss_path"):
        SFTConfig(**base, loss_path="fused")
