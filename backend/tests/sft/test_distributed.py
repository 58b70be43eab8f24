"""distributed_strategy without a cluster: the submit-time rules (config, thread executor), what fsdp gives TRL, how
``auto`` resolves, and the decoder layers fsdp wraps. The training itself is tested on a real Ray head
(backend/tests/api/test_api_fsdp.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.core.errors import InvalidConfig
from app.sft.config import SFTConfig
from app.sft.distributed import decoder_layer_classes, release_optimizer_state, resolve_strategy, training_strategy

BASE = {"base_model": "m", "dataset_name": "d", "max_steps": 1}


def test_fsdp_on_one_worker_is_refused_saying_what_it_needs():
    with pytest.raises(ValidationError) as refused:
        SFTConfig(**BASE, distributed_strategy="fsdp")
    assert refused.value.errors()[0]["msg"] == (
        "Value error, distributed_strategy fsdp shards the model across the job's workers: it needs num_workers >= 2 "
        "(num_workers is 1; one worker holds the whole model, use ddp or auto)")


def test_qlora_under_fsdp_on_cpu_workers_is_refused_saying_why():
    with pytest.raises(ValidationError) as refused:
        SFTConfig(**BASE, distributed_strategy="fsdp", num_workers=2, num_gpus_per_worker=0, use_qlora=True)
    assert "bitsandbytes' 4-bit weights (bnb_4bit_quant_storage) are sharded on CUDA only" in str(refused.value)
    # LoRA and full fine-tuning are fine there.
    SFTConfig(**BASE, distributed_strategy="fsdp", num_workers=2, num_gpus_per_worker=0)
    SFTConfig(**BASE, distributed_strategy="fsdp", num_workers=2, use_lora=False)


def test_the_thread_executor_refuses_fsdp_naming_the_field(make_manager, tiny_config):
    manager = make_manager()
    with pytest.raises(InvalidConfig) as refused:
        manager.create_job({**tiny_config, "distributed_strategy": "fsdp", "num_workers": 2})
    assert refused.value.detail == ("config.distributed_strategy: fsdp shards the model across Ray workers: it needs "
                                    "SFT_EXECUTOR=ray; the thread executor trains a job in one process")
    assert sum(manager.counts().values()) == 0


def test_auto_resolves_to_ddp_when_the_model_fits_one_worker_else_fsdp():
    auto = SFTConfig(**BASE, num_workers=2)
    assert resolve_strategy(auto, fits_one_worker=True) == "ddp"
    assert resolve_strategy(auto, fits_one_worker=False) == "fsdp"
    assert resolve_strategy(SFTConfig(**BASE), fits_one_worker=False) == "ddp"  # one worker: nothing to shard
    assert resolve_strategy(SFTConfig(**BASE, num_workers=2, distributed_strategy="ddp"), fits_one_worker=False) == "ddp"
    assert training_strategy(SFTConfig(**BASE)) is None
    assert training_strategy(auto) == "ddp"  # unresolved at training time: data-parallel
    assert training_strategy(SFTConfig(**BASE, num_workers=2, distributed_strategy="fsdp")) == "fsdp"


def test_fsdp_gives_trl_fsdp2_with_fsdp_activation_checkpointing_instead_of_the_trainers(tmp_path):
    config = SFTConfig(**BASE, num_workers=2, distributed_strategy="fsdp", gradient_checkpointing=True)
    args = config.to_trl(output_dir=tmp_path, device="cpu", fsdp_layer_classes=["LlamaDecoderLayer"])
    assert args.fsdp_plugin_args["fsdp_version"] == 2
    assert args.fsdp_plugin_args["transformer_cls_names_to_wrap"] == "LlamaDecoderLayer"
    assert args.fsdp_plugin_args["state_dict_type"] == "FULL_STATE_DICT"
    assert args.fsdp_plugin_args["activation_checkpointing"] is True
    assert not args.activation_checkpointing
    plain = config.to_trl(output_dir=tmp_path, device="cpu")
    assert plain.fsdp_plugin_args is None and plain.activation_checkpointing


def test_the_decoder_layers_are_found_on_the_model_and_under_peft(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert decoder_layer_classes(model) == ["LlamaDecoderLayer"]
    peft = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    assert decoder_layer_classes(peft) == ["LlamaDecoderLayer"]


def test_an_fsdp_run_drops_its_optimizer_state_before_the_final_save_and_other_runs_keep_it():
    from types import SimpleNamespace

    import torch

    def trained():
        weight = torch.nn.Parameter(torch.ones(4, 4))
        optimizer = torch.optim.AdamW([weight])
        weight.sum().backward()
        optimizer.step()
        return optimizer

    kept, dropped = trained(), trained()
    release_optimizer_state(SimpleNamespace(optimizer=kept), "ddp")
    wrapped = SimpleNamespace(optimizer=dropped)  # as accelerate's AcceleratedOptimizer holds torch's
    release_optimizer_state(SimpleNamespace(optimizer=wrapped), "fsdp")
    assert set(kept.state[kept.param_groups[0]["params"][0]]) >= {"exp_avg", "exp_avg_sq"}
    assert not dropped.state
