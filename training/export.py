"""The trained model → `HPSv3.safetensors` in the official layout, the config used, and the base files.

The output folder serves as it is: `hpsv3 score --checkpoint OUT --base OUT/base`, `hpsv3 serve`,
`hpsv3 export` (ONNX, vLLM) read it like the published checkpoint. LoRA is merged and the trained
`<|Reward|>` row is put back into `embed_tokens` first.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import yaml
from torch import nn

from hpsv3_serve.checkpoint import BASE_FILES, CHECKPOINT_FILE, DTYPES, save_official
from hpsv3_serve.files import write_text_atomic
from hpsv3_serve.model import HPSv3RewardModel

from .model_setup import RewardRowEmbedding

CONFIG_FILE = "training_config.yaml"
BASE_DIR = "base"


def unwrap(model: nn.Module) -> HPSv3RewardModel:
    """The plain reward model: LoRA merged in (peft), reward row merged into the embedding table."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    embed = model.language_model.embed_tokens
    if isinstance(embed, RewardRowEmbedding):
        table = nn.Embedding(*embed.weight.shape, _weight=embed.merged(), _freeze=True)
        model.language_model.embed_tokens = table
    return model


def trained_state(model: nn.Module, dtype: str) -> dict[str, torch.Tensor]:
    """Our key names, weights in `dtype`, rm_head in float32 (as the official checkpoint)."""
    state = unwrap(model).state_dict()
    return {
        k: v.detach().cpu().float() if k.startswith("rm_head.") else v.detach().cpu().to(DTYPES[dtype])
        for k, v in state.items()
    }


def write_output(
    model: nn.Module, out: Path, base: Path, config: dict, dtype: str, lm_head: torch.Tensor | None = None
) -> Path:
    """Write OUT/HPSv3.safetensors, OUT/training_config.yaml and OUT/base/ (config + tokenizer); returns the file."""
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / CHECKPOINT_FILE
    save_official(trained_state(model, dtype), checkpoint, lm_head=lm_head)
    write_text_atomic(out / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))
    (out / BASE_DIR).mkdir(exist_ok=True)
    for name in BASE_FILES:
        if (base / name).is_file():
            shutil.copy2(base / name, out / BASE_DIR / name)
    return checkpoint
