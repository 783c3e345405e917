"""Tiny judges in the real formats, built offline, for tests: CLIP folders as the hub has them and the aesthetic MLP.

`make_tiny_judges(OUT)` writes
- `OUT/clip-h/`: a CLIPModel (GELU, as LAION's ViT-H/14) with the real CLIP tokenizer and a CLIPProcessor config:
  the tiny `laion/CLIP-ViT-H-14-laion2B-s32B-b79K` (CLIP ViT-H/14 judge, and PickScore's processor);
- `OUT/pickscore/`: a second CLIPModel of the same shape (PickScore's weights are a fine-tuned ViT-H/14);
- `OUT/clip-l/`: a CLIPModel with QuickGELU and float16-exact weights, as OpenAI's ViT-L/14 (the aesthetic
  predictor's backbone);
- `OUT/aesthetic-mlp.safetensors`: the aesthetic MLP with the published .pth's keys;
- `OUT/hpsv2.safetensors`: an HPSv2 checkpoint's `state_dict` (open_clip's layout) for the `clip-h` base.
Image size 224 and patch 14 as the real models (so preprocessing is the real one); width 64, 2 layers, one
attention head per 64 channels (as OpenAI's `build_model` infers heads). Weights come from numpy's PCG64.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from ..inputs import IMAGE_MEAN, IMAGE_STD
from .clip_judges import AestheticMLP
from .clip_tokenizer import BOS, EOS, VOCAB_SIZE, build_clip_tokenizer
from .hpsv2 import to_open_clip

WIDTH, PROJECTION = 64, 32
PREPROCESSOR_CONFIG = {  # laion/CLIP-ViT-H-14-laion2B-s32B-b79K's, as transformers 4.x reads it
    "crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": list(IMAGE_MEAN), "image_std": list(IMAGE_STD),
    "resample": 3, "size": 224,
}  # fmt: skip
TOKENIZER_CONFIG = {
    "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True, "errors": "replace",
    "add_prefix_space": False, "bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS,
}  # fmt: skip
SEEDS = {"clip-h": 1, "pickscore": 2, "clip-l": 3, "aesthetic-mlp": 4, "hpsv2": 5}


def tiny_clip_config(hidden_act: str):
    """A CLIPConfig of the real models' image geometry and vocabulary, tiny everywhere else."""
    from transformers import CLIPConfig

    tower = dict(hidden_size=WIDTH, intermediate_size=4 * WIDTH, num_hidden_layers=2, num_attention_heads=WIDTH // 64,
                 hidden_act=hidden_act, projection_dim=PROJECTION)  # fmt: skip
    # eos_token_id 2, as the hub's CLIP configs: transformers pools the text at the argmax id (49407, the first EOS)
    text = dict(tower, vocab_size=VOCAB_SIZE, max_position_embeddings=77, bos_token_id=0, eos_token_id=2)
    vision = dict(tower, image_size=224, patch_size=14)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=PROJECTION)


def _random(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """O(1)-scale values: He-scaled matrices, norms near 1, small biases and class embedding, logit scale ln 100."""
    if name == "logit_scale":
        values = np.full(shape, math.log(100))
    elif len(shape) >= 2:
        values = rng.standard_normal(shape) * math.sqrt(2 / math.prod(shape[1:]))
    elif "norm" in name:
        values = 1.0 + 0.1 * rng.standard_normal(shape)
    else:
        values = 0.1 * rng.standard_normal(shape)
    return torch.from_numpy(values.astype(np.float32))


def _seeded(module: torch.nn.Module, seed: int, fp16_values: bool = False) -> torch.nn.Module:
    """Every tensor of `module` from PCG64(seed), in name order; `fp16_values`: rounded to float16 and kept float32,
    as OpenAI released CLIP (its `clip.load` rounds weights through float16 even on CPU)."""
    rng = np.random.default_rng(seed)
    state = {name: _random(rng, name, tuple(t.shape)) for name, t in sorted(module.state_dict().items())}
    module.load_state_dict({k: v.half().float() if fp16_values else v for k, v in state.items()})
    return module


def write_processor(folder: Path) -> None:
    """The CLIP tokenizer (tokenizer.json + config) and the CLIPProcessor image config."""
    folder.mkdir(parents=True, exist_ok=True)
    build_clip_tokenizer().save(str(folder / "tokenizer.json"))
    for name, data in (("tokenizer_config.json", TOKENIZER_CONFIG), ("preprocessor_config.json", PREPROCESSOR_CONFIG)):
        (folder / name).write_text(json.dumps(data, indent=2) + "\n")


def write_clip(folder: Path, hidden_act: str, seed: int, processor: bool = True, fp16_values: bool = False) -> Path:
    """A seeded tiny CLIPModel saved with `save_pretrained` (config.json + model.safetensors)."""
    from transformers import CLIPModel

    torch.manual_seed(seed)  # the init before `_seeded` overwrites every tensor
    model = _seeded(CLIPModel(tiny_clip_config(hidden_act)), seed, fp16_values)
    model.save_pretrained(folder)
    if processor:
        write_processor(folder)
    return folder


def make_tiny_judges(out: Path) -> Path:
    """Write the tiny judges (module docstring) under `out`; returns `out`."""
    from transformers import CLIPModel

    write_clip(out / "clip-h", "gelu", SEEDS["clip-h"])
    write_clip(out / "pickscore", "gelu", SEEDS["pickscore"], processor=False)
    write_clip(out / "clip-l", "quick_gelu", SEEDS["clip-l"], fp16_values=True)
    mlp = _seeded(AestheticMLP(PROJECTION), SEEDS["aesthetic-mlp"])
    save_file({k: v.contiguous() for k, v in mlp.state_dict().items()}, str(out / "aesthetic-mlp.safetensors"))
    torch.manual_seed(SEEDS["hpsv2"])
    hpsv2 = _seeded(CLIPModel(tiny_clip_config("gelu")), SEEDS["hpsv2"])
    save_file(to_open_clip(hpsv2.state_dict()), str(out / "hpsv2.safetensors"))
    return out


if __name__ == "__main__":  # python -m hpsv3_serve.judges.tiny OUT (the Makefile's golden-judges target)
    import sys

    print(make_tiny_judges(Path(sys.argv[1])))
