"""Freezing options, the reward-row embedding and LoRA: what trains, and what the export writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hpsv3_serve.checkpoint import load_model
from hpsv3_serve.prompt import REWARD_TOKEN_ID
from hpsv3_serve.tiny import TINY_CHECKPOINT
from hpsv3_training.config import LoraOptions, ModelOptions
from hpsv3_training.export import write_output
from hpsv3_training.model_setup import initial_model, make_trainable


def _options(tiny: Path, **fields: object) -> ModelOptions:
    return ModelOptions(base=str(tiny / "base"), init=str(tiny / TINY_CHECKPOINT), **fields)


def _trainable(model: torch.nn.Module) -> set[str]:
    return {name for name, param in model.named_parameters() if param.requires_grad}


def test_freezing_follows_the_official_options(tiny: Path) -> None:
    options = _options(tiny, freeze_vision_tower=True, tune_merger=True, freeze_llm=True)
    model, _, lm_head = initial_model(options)
    names = _trainable(make_trainable(model, options))
    assert lm_head is not None, "the initial checkpoint's lm_head is carried into the output"
    assert names == {n for n in names if n.startswith(("visual.merger.", "rm_head."))} | {
        "language_model.embed_tokens.reward_row"
    }
    assert any(n.startswith("visual.merger.") for n in names) and "rm_head.5.bias" in names
    full = _options(tiny)
    all_names = _trainable(make_trainable(initial_model(full)[0], full))
    assert "language_model.layers.0.mlp.up_proj.weight" in all_names and "visual.blocks.0.attn.qkv.weight" in all_names
    assert "language_model.embed_tokens.weight" not in all_names


def test_reward_row_embedding_is_the_table_with_one_trainable_row(tiny: Path) -> None:
    options = _options(tiny)
    model = make_trainable(initial_model(options)[0], options)
    embed = model.language_model.embed_tokens
    ids = torch.tensor([[0, 17, REWARD_TOKEN_ID, 151643]])
    torch.testing.assert_close(embed(ids), embed.weight[ids], rtol=0, atol=0)
    embed(ids).sum().backward()
    assert embed.weight.grad is None and embed.reward_row.grad is not None


@pytest.mark.parametrize("vision", [False, True])
def test_lora_trains_adapters_and_exports_merged_weights(tiny: Path, tmp_path: Path, vision: bool) -> None:
    options = _options(tiny, lora=LoraOptions(enable=True, r=4, alpha=8, vision=vision))
    model, base, lm_head = initial_model(options)
    wrapped = make_trainable(model, options)
    names = _trainable(wrapped)
    assert any("lora_A" in n and "language_model" in n for n in names)
    assert any("lora_A" in n and "visual.blocks" in n for n in names) == vision
    assert not any("lora" not in n and "language_model.layers" in n for n in names), "tower weights frozen"
    with torch.no_grad():
        for name, param in wrapped.named_parameters():
            if "lora_B" in name:
                param.fill_(0.01)
            if name.endswith("reward_row"):
                param.add_(1.0)
    checkpoint = write_output(wrapped, tmp_path, base, {"model": {}}, "float32", lm_head)
    state = load_file(str(checkpoint))
    initial = load_file(str(tiny / TINY_CHECKPOINT))
    assert state.keys() == initial.keys(), "the official key set, adapters merged away"
    changed = [k for k in state if not torch.equal(state[k], initial[k])]
    assert "model.layers.0.self_attn.q_proj.weight" in changed
    assert ("visual.blocks.0.attn.qkv.weight" in changed) == vision
    assert (state["model.embed_tokens.weight"] != initial["model.embed_tokens.weight"]).any(1).nonzero().tolist() == [
        [REWARD_TOKEN_ID]
    ]
    load_model(checkpoint, tmp_path / "base")  # loads as a published checkpoint does


def test_gradient_checkpointing_gives_the_same_gradients(tiny: Path, scorer) -> None:
    from hpsv3_serve.batching import collate

    from .conftest import IMAGES

    batch = collate([scorer.prepare(IMAGES / "small_200.png", "a cat"), scorer.prepare(IMAGES / "gray_300.png", "")])
    inputs = {
        "input_ids": torch.from_numpy(batch.input_ids),
        "attention_mask": torch.from_numpy(batch.attention_mask),
        "reward_index": torch.from_numpy(batch.reward_index),
        "pixel_values": torch.from_numpy(batch.pixel_values),
        "image_grid_thw": torch.from_numpy(batch.image_grid_thw),
    }
    grads = []
    for checkpointing in (False, True):
        options = _options(tiny, gradient_checkpointing=checkpointing)
        model = make_trainable(initial_model(options)[0], options).train()
        assert (
            model.language_model.is_activation_checkpointing
            == model.visual.is_activation_checkpointing
            == checkpointing
        )
        model.rm_head[2].p = 0.0  # dropout off: the two runs must see the same function
        model(**inputs).sum().backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-6, msg=name)
