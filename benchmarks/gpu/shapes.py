"""Model sizes (Qwen2-VL-7B and the tiny test model), random-weight construction and the FLOP count."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from transformers import Qwen2VLConfig

from hpsv3_serve.model import HPSv3RewardModel
from hpsv3_serve.tiny import TINY_CONFIG

# Qwen2-VL-7B-Instruct's config.json, with the tiny model's token ids and layout (all shapes differ).
REAL_CONFIG = copy.deepcopy(TINY_CONFIG) | {
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "max_window_layers": 28,
    "torch_dtype": "bfloat16",
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
}
REAL_CONFIG["vision_config"] = TINY_CONFIG["vision_config"] | {
    "depth": 32,
    "embed_dim": 1280,
    "num_heads": 16,
    "hidden_size": 3584,
}
SIZES = {"7b": REAL_CONFIG, "tiny": TINY_CONFIG}


def build_model(size: str, device: str, dtype: torch.dtype, seed: int = 0) -> HPSv3RewardModel:
    """HPSv3 at `size` with seeded random weights made on `device` (rm_head float32), in eval mode.

    Matrices get std 1/sqrt(fan_in), embeddings std 1, norms 1 ± 0.1, biases 0.1: activations stay O(1)
    through 28 bf16 layers, so scores are finite and react to every input.
    """
    with torch.device("meta"):
        model = HPSv3RewardModel(Qwen2VLConfig(**SIZES[size]))
    model = model.to(dtype).to_empty(device=device)
    model.rm_head.float()
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("embed_tokens.weight"):
                param.normal_(0.0, 1.0, generator=generator)
            elif param.dim() >= 2:
                param.normal_(0.0, param[0].numel() ** -0.5, generator=generator)
            elif "norm" in name or "ln_q" in name:
                param.normal_(1.0, 0.1, generator=generator)
            else:
                param.normal_(0.0, 0.1, generator=generator)
    model.rebuild_rotary_buffers(device)
    return model.eval()


@dataclass(frozen=True)
class FlopModel:
    """Multiply-adds ×2 of one image's useful work: vision at its patch count, the language tower over the
    sequence cut at `<|Reward|>` (causal attention counted as the half it computes), and the head."""

    config: Qwen2VLConfig

    def vision(self, patches: int) -> float:
        vision = self.config.vision_config
        dim, mlp = vision.embed_dim, vision.embed_dim * vision.mlp_ratio
        merged = dim * vision.spatial_merge_size**2
        patch_dim = vision.in_chans * vision.temporal_patch_size * vision.patch_size**2
        block = 2 * patches * dim * (3 * dim + dim + 2 * mlp) + 4 * patches**2 * dim
        merger = 2 * (patches / vision.spatial_merge_size**2) * merged * (merged + vision.hidden_size)
        return 2 * patches * patch_dim * dim + vision.depth * block + merger

    def language(self, tokens: int) -> float:
        text = self.config.text_config
        hidden, heads, kv_heads = text.hidden_size, text.num_attention_heads, text.num_key_value_heads
        kv_dim = hidden // heads * kv_heads
        linear = 2 * tokens * hidden * (2 * hidden + 2 * kv_dim + 3 * text.intermediate_size)
        attention = 2 * tokens**2 * hidden  # QKᵀ and AV (4·L²·H) over the causal half
        return text.num_hidden_layers * (linear + attention) + 2 * hidden * 1024 + 2 * 1024 * 16 + 2 * 16 * 2

    def image(self, patches: int, tokens: int) -> float:
        """FLOPs of one (image, prompt) item."""
        return self.vision(patches) + self.language(tokens)
