"""`hpsv3 make-tiny`: a tiny HPSv3 in the real formats, built offline, for tests and the demo.

Writes `OUT/base/` (a Qwen2-VL config.json in the official flat layout, the real Qwen2 tokenizer
rebuilt from `qwen.tiktoken`, the Qwen2-VL chat template and preprocessor config; no weights) and
`OUT/HPSv3-tiny.safetensors` in the official checkpoint layout (151658 embedding rows, rm_head.{0,3,5},
lm_head). Weights come from numpy's PCG64 at O(1) scale, so scores react to every input.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from .checkpoint import CHECKPOINT_FILE, save_official
from .inputs import IMAGE_MEAN, IMAGE_STD, MERGE_SIZE, PATCH_SIZE, TEMPORAL_PATCH_SIZE
from .model import HPSv3RewardModel
from .prompt import VOCAB_ROWS
from .qwen_tokenizer import SPECIAL_TOKENS, load_or_build_tokenizer

TINY_CHECKPOINT = CHECKPOINT_FILE.replace(".safetensors", "-tiny.safetensors")
TEXT_HIDDEN = 64
TINY_CONFIG = {
    "architectures": ["Qwen2VLForConditionalGeneration"],
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "vision_token_id": 151654,
    "image_token_id": 151655,
    "video_token_id": 151656,
    "hidden_act": "silu",
    "hidden_size": TEXT_HIDDEN,
    "initializer_range": 0.02,
    "intermediate_size": 128,
    "max_position_embeddings": 32768,
    "max_window_layers": 2,
    "model_type": "qwen2_vl",
    "num_attention_heads": 2,  # head_dim 32: vLLM's CPU attention takes head sizes 32, 64, 80, … (the 7B: 128)
    "num_hidden_layers": 2,
    "num_key_value_heads": 1,  # grouped-query attention, as in the 7B (28 query heads, 4 KV heads)
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
    "use_cache": True,
    "use_sliding_window": False,
    "vision_config": {
        "depth": 2,
        "embed_dim": 32,
        "mlp_ratio": 4,
        "num_heads": 2,
        "in_chans": 3,
        "hidden_size": TEXT_HIDDEN,
        "patch_size": PATCH_SIZE,
        "spatial_merge_size": MERGE_SIZE,
        "spatial_patch_size": PATCH_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
    },
    "rope_scaling": {"type": "mrope", "mrope_section": [4, 6, 6]},  # sums to head_dim / 2, as [16, 24, 24] does
    "vocab_size": 152064,
}
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TOKENIZER_CONFIG = {
    "add_prefix_space": False,
    "additional_special_tokens": SPECIAL_TOKENS[1:],
    "bos_token": None,
    "chat_template": QWEN2_VL_CHAT_TEMPLATE,
    "clean_up_tokenization_spaces": False,
    "eos_token": "<|im_end|>",
    "errors": "replace",
    "model_max_length": 32768,
    "pad_token": "<|endoftext|>",
    "split_special_tokens": False,
    "tokenizer_class": "Qwen2Tokenizer",
    "unk_token": None,
}
PREPROCESSOR_CONFIG = {
    "min_pixels": 3136,
    "max_pixels": 12845056,
    "patch_size": PATCH_SIZE,
    "temporal_patch_size": TEMPORAL_PATCH_SIZE,
    "merge_size": MERGE_SIZE,
    "image_mean": list(IMAGE_MEAN),
    "image_std": list(IMAGE_STD),
    "image_processor_type": "Qwen2VLImageProcessor",
    "processor_class": "Qwen2VLProcessor",
}


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_base(base: Path, tiktoken: Path | None = None) -> None:
    """The base folder: config.json, tokenizer, chat template, preprocessor config (no weights)."""
    base.mkdir(parents=True, exist_ok=True)
    _write_json(base / "config.json", TINY_CONFIG)
    load_or_build_tokenizer(tiktoken).save(str(base / "tokenizer.json"))
    _write_json(base / "tokenizer_config.json", TOKENIZER_CONFIG)
    _write_json(base / "chat_template.json", {"chat_template": QWEN2_VL_CHAT_TEMPLATE})
    _write_json(base / "preprocessor_config.json", PREPROCESSOR_CONFIG)


def _random_tensor(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """O(1)-scale values: unit-variance embeddings, He-scaled matrices, norms near 1.

    He scaling keeps activations O(1) through the ReLU rm_head, so scores spread, while fp32 rounding
    stays near 1e-6 (sharper attention spread scores more but pushed fp32 noise to ~1e-5).
    """
    if name.endswith("embed_tokens.weight"):
        values = rng.standard_normal(shape)
    elif len(shape) >= 2:
        values = rng.standard_normal(shape) * math.sqrt(2 / math.prod(shape[1:]))
    elif "norm" in name or "ln_q" in name:
        values = 1.0 + 0.1 * rng.standard_normal(shape)
    else:
        values = 0.1 * rng.standard_normal(shape)
    return torch.from_numpy(values.astype(np.float32))


def random_state(config_dict: dict, seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Seeded weights for every tensor of the model (our key names) and an lm_head."""
    from transformers import Qwen2VLConfig

    with torch.device("meta"):
        model = HPSv3RewardModel(Qwen2VLConfig(**config_dict))
    rng = np.random.default_rng(seed)
    state = {name: _random_tensor(rng, name, tuple(t.shape)) for name, t in sorted(model.state_dict().items())}
    lm_head = _random_tensor(rng, "lm_head.weight", (VOCAB_ROWS, config_dict["hidden_size"]))
    return state, lm_head


def make_tiny(out: Path, seed: int = 0, tiktoken: Path | None = None) -> Path:
    """Write `out/base/` and `out/HPSv3-tiny.safetensors`; returns the checkpoint path."""
    write_base(out / "base", tiktoken)
    state, lm_head = random_state(TINY_CONFIG, seed)
    checkpoint = out / TINY_CHECKPOINT
    save_official(state, checkpoint, lm_head=lm_head)
    return checkpoint
