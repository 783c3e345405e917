"""Differentiable scoring in-process: gradients of [mu, log_sigma] with respect to generated pixels (ReFL, DRaFT).

Pixels go through `differentiable_inputs` (the official bilinear `preprocess_tensor` at 200704 pixels), prompts
through `PromptTokenizer` (the inference path's token ids), then `HPSv3RewardModel` with autograd on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from .batching import pad_ids
from .checkpoint import DTYPES, load_model, resolve_base, resolve_checkpoint
from .defaults import DEFAULT_BASE, DEFAULT_CHECKPOINT
from .differentiable_inputs import pixel_values, unbatch
from .errors import InputError, ModelLoadError
from .inputs import MERGE_SIZE
from .limits import DEFAULT_LIMITS, InputLimits
from .model import HPSv3RewardModel
from .prompt import PromptTokenizer


def prompt_list(prompts: str | Sequence[str], count: int) -> list[str]:
    """One prompt per image: a str is shared by all, a list must have one per image."""
    if not isinstance(prompts, (str, list, tuple)):
        raise InputError("prompts", f"expected a str or a list of str, got {type(prompts).__name__}")
    listed = [prompts] * count if isinstance(prompts, str) else list(prompts)
    if len(listed) != count:
        raise InputError("prompts", f"{len(listed)} prompts for {count} images: pass one str or one prompt per image")
    return listed


class DifferentiableScorer:
    """`scorer(pixels, prompts)` → float32 [B, 2] (mu, log_sigma), differentiable with respect to `pixels`.

    Always eval semantics (rm_head's dropout off). `freeze` (default) sets requires_grad False on every weight, so
    backward fills only the pixels' gradients. `gradient_checkpointing` recomputes every vision block and decoder
    layer in backward (transformers' activation checkpointing, non-reentrant) instead of keeping their activations.
    """

    def __init__(
        self,
        model: HPSv3RewardModel,
        tokenizer: PromptTokenizer,
        gradient_checkpointing: bool = False,
        freeze: bool = True,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.gradient_checkpointing = gradient_checkpointing
        model.requires_grad_(not freeze)
        if gradient_checkpointing:
            for tower in (model.visual, model.language_model):
                tower.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})

    @classmethod
    def from_pretrained(
        cls,
        checkpoint: str | os.PathLike = DEFAULT_CHECKPOINT,
        base: str | os.PathLike = DEFAULT_BASE,
        device: str = "cpu",
        dtype: str = "float32",
        gradient_checkpointing: bool = False,
        freeze: bool = True,
        limits: InputLimits = DEFAULT_LIMITS,
    ) -> DifferentiableScorer:
        """Load as `Scorer.from_pretrained` does: local paths or hub ids (defaults: MizzenAI/HPSv3 on
        Qwen/Qwen2-VL-7B-Instruct); rm_head stays float32 whatever `dtype`."""
        if dtype not in DTYPES:
            raise ModelLoadError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ModelLoadError(f"device={device!r}: torch {torch.__version__} sees no CUDA device; use device='cpu'")
        base_dir = resolve_base(os.fspath(base))
        model = load_model(resolve_checkpoint(os.fspath(checkpoint)), base_dir, DTYPES[dtype], device)
        return cls(model, PromptTokenizer.from_base(base_dir, limits), gradient_checkpointing, freeze)

    @property
    def device(self) -> torch.device:
        return self.model.language_model.embed_tokens.weight.device

    def _eval_mode(self) -> None:
        """Eval mode everywhere (no dropout). transformers recomputes a layer in backward only while that layer is
        in training mode, so with checkpointing the block/layer modules alone are flagged as training: every
        submodule that acts on the flag (attention dropout, rm_head's dropout) stays in eval mode."""
        self.model.eval()
        if self.gradient_checkpointing:
            for layer in (*self.model.visual.blocks, *self.model.language_model.layers):
                layer.training = True

    def __call__(self, pixels: torch.Tensor | Sequence[torch.Tensor], prompts: str | Sequence[str]) -> torch.Tensor:
        """`pixels`: float [B, 3, H, W] in [0, 1], or a list of [3, H, W] of different sizes; `prompts`: one str
        for all or one per image. Returns [B, 2] float32: mu, log_sigma (sigma = exp(log_sigma)).
        Raises `InputError` naming the bad input."""
        images = [image.to(self.device) for image in unbatch(pixels)]
        texts = prompt_list(prompts, len(images))
        values, grids = pixel_values(images)
        image_tokens = [grid_h * grid_w // MERGE_SIZE**2 for _, grid_h, grid_w in grids]
        input_ids, attention_mask, reward_index = pad_ids(self.tokenizer.encode(texts, image_tokens))

        def tensor(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(array).to(self.device)

        self._eval_mode()
        return self.model(
            input_ids=tensor(input_ids),
            attention_mask=tensor(attention_mask),
            reward_index=tensor(reward_index),
            pixel_values=values,
            image_grid_thw=torch.tensor(grids, device=self.device),
        )
