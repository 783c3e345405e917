"""The core reward model made trainable: initial weights, what is frozen, LoRA, gradient checkpointing.

Freezing follows the official trainer: the language tower trains unless `freeze_llm`, the vision tower
unless `freeze_vision_tower`, the merger when `tune_merger`, rm_head always; `embed_tokens` is frozen
except the `<|Reward|>` row. That row lives in its own small parameter (`RewardRowEmbedding`), so the
optimizer holds 1 row instead of 151658 (the official trainer updates the whole table and restores
the other rows after every step: the same result, without 2 × 151658 × hidden of Adam state).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn
from torch.nn import functional as F

from hpsv3_serve.checkpoint import (
    DTYPES,
    load_config,
    load_model,
    resolve_base,
    resolve_checkpoint,
    to_our_key,
)
from hpsv3_serve.errors import ModelLoadError
from hpsv3_serve.model import HPSv3RewardModel
from hpsv3_serve.prompt import REWARD_TOKEN_ID, VOCAB_ROWS

from .config import ModelOptions

RM_HEAD_INIT_STD = 0.02  # Qwen2-VL's initializer_range: how the official model initialises a new rm_head


class RewardRowEmbedding(nn.Module):
    """`embed_tokens` with a frozen table and a trainable `<|Reward|>` row (merged back on export)."""

    def __init__(self, table: nn.Embedding) -> None:
        super().__init__()
        self.weight = nn.Parameter(table.weight.detach(), requires_grad=False)
        self.reward_row = nn.Parameter(table.weight.detach()[REWARD_TOKEN_ID].clone())

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        embeds = F.embedding(input_ids, self.weight)
        is_reward = (input_ids == REWARD_TOKEN_ID).unsqueeze(-1)
        return torch.where(is_reward, self.reward_row.to(embeds.dtype), embeds)

    def merged(self) -> torch.Tensor:
        """The full table with the trained row in place."""
        table = self.weight.detach().clone()
        table[REWARD_TOKEN_ID] = self.reward_row.detach().to(table.dtype)
        return table


def _base_weights(base: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Qwen2-VL weights of a local base folder in our key names, embedding cut to 151658 rows (as the
    official `resize_token_embeddings(len(tokenizer))` does)."""
    files = sorted(base.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(
            f"model.init is null, so training starts from the base weights, but {base} has no *.safetensors: "
            f"download them (`hf download Qwen/Qwen2-VL-7B-Instruct --local-dir DIR`) and set model.base=DIR, "
            f"or set model.init to an HPSv3 checkpoint to fine-tune"
        )
    state = {}
    for file in files:
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            for key in handle.keys():  # noqa: SIM118
                ours = to_our_key(key)
                if ours is not None:
                    state[ours] = handle.get_tensor(key).to(dtype)
    state["language_model.embed_tokens.weight"] = state["language_model.embed_tokens.weight"][:VOCAB_ROWS]
    return state


def initial_model(options: ModelOptions) -> tuple[HPSv3RewardModel, Path, torch.Tensor | None]:
    """(model, base folder, lm_head to carry into the output or None) from `model.init` / `model.base`."""
    if options.dtype not in DTYPES:
        raise ModelLoadError(f"model.dtype must be one of {sorted(DTYPES)}, got {options.dtype!r}")
    dtype, base = DTYPES[options.dtype], resolve_base(options.base)
    if options.init:
        checkpoint = resolve_checkpoint(options.init)
        with safe_open(str(checkpoint), framework="pt", device="cpu") as handle:
            lm_head = handle.get_tensor("lm_head.weight") if "lm_head.weight" in handle.keys() else None  # noqa: SIM118
        return load_model(checkpoint, base, dtype), base, lm_head
    state = _base_weights(base, dtype)
    with torch.device("meta"):
        model = HPSv3RewardModel(load_config(base))
    head = {name: torch.zeros(p.shape) for name, p in model.rm_head.named_parameters()}
    for name, tensor in head.items():
        if name.endswith("weight"):
            nn.init.normal_(tensor, std=RM_HEAD_INIT_STD)
        state[f"rm_head.{name}"] = tensor
    model.load_state_dict(state, strict=True, assign=True)
    model.rebuild_rotary_buffers()
    model.rm_head.float()
    return model, base, None


def _linear_names(model: nn.Module, vision: bool) -> list[str]:
    prefixes = ("language_model.", "visual.") if vision else ("language_model.",)
    return [
        name for name, module in model.named_modules() if isinstance(module, nn.Linear) and name.startswith(prefixes)
    ]


def make_trainable(model: HPSv3RewardModel, options: ModelOptions) -> nn.Module:
    """Set requires_grad as configured, split off the reward row, wrap in LoRA if asked; returns the model."""
    model.requires_grad_(False)
    model.language_model.embed_tokens = RewardRowEmbedding(model.language_model.embed_tokens)
    embed = model.language_model.embed_tokens
    if options.gradient_checkpointing:
        for tower in (model.language_model, model.visual):
            tower.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if options.lora.enable:
        from peft import LoraConfig, get_peft_model

        lora = options.lora
        config = LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias="none",
            target_modules=_linear_names(model, lora.vision),
        )  # fmt: skip
        wrapped = get_peft_model(model, config)
    else:
        wrapped = model
        model.language_model.requires_grad_(not options.freeze_llm)
        model.visual.requires_grad_(not options.freeze_vision_tower)
    if not options.lora.vision:
        model.visual.merger.requires_grad_(options.tune_merger)
    embed.weight.requires_grad_(False)
    embed.reward_row.requires_grad_(options.train_reward_token)
    model.rm_head.requires_grad_(True)
    model.rm_head.float()
    return wrapped


def trainable_summary(model: nn.Module) -> str:
    """'N of M parameters train (x %)'."""
    total = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return f"{trained:,} of {total:,} parameters train ({100 * trained / max(total, 1):.2f} %)"
