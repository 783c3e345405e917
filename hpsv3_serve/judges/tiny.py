"""Tiny judges in the real formats, built offline, for tests: CLIP folders as the hub has them and the aesthetic MLP.

`make_tiny_judges(OUT)` writes
- `OUT/clip-h/`: a CLIPModel (GELU, as LAION's ViT-H/14) with the real CLIP tokenizer and a CLIPProcessor config:
  the tiny `laion/CLIP-ViT-H-14-laion2B-s32B-b79K` (CLIP ViT-H/14 judge, and PickScore's processor);
- `OUT/pickscore/`: a second CLIPModel of the same shape (PickScore's weights are a fine-tuned ViT-H/14);
- `OUT/clip-l/`: a CLIPModel with QuickGELU and float16-exact weights, as OpenAI's ViT-L/14 (the aesthetic
  predictor's backbone);
- `OUT/aesthetic-mlp.safetensors`: the aesthetic MLP with the published .pth's keys;
- `OUT/hpsv2.safetensors`: an HPSv2 checkpoint's `state_dict` (open_clip's layout) for the `clip-h` base;
- `OUT/imagereward/`: ImageReward.safetensors with ImageReward.pt's keys (ViT 128 wide, patch 16, BERT 64 wide with
  cross-attention, MLP) and its med_config.json; `OUT/bert/`: a small WordPiece vocab.txt in bert-base-uncased's
  format and special ids (the real 30522-token vocab is not built offline; tokenisation rules are the same).
Image size 224 and patch 14 as the real models (so preprocessing is the real one); width 64, 2 layers, one
attention head per 64 channels (as OpenAI's `build_model` infers heads). Weights come from numpy's PCG64.
"""

from __future__ import annotations

import json
import math
import string
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
SEEDS = {"clip-h": 1, "pickscore": 2, "clip-l": 3, "aesthetic-mlp": 4, "hpsv2": 5, "imagereward": 6}
IR_VISION_WIDTH, IR_TEXT_WIDTH, IR_PROJECTION = 128, 64, 256  # BLIP_Pretrain's vision_proj / text_proj: 256 wide
BERT_TOKENIZER_CONFIG = {"do_lower_case": True, "model_max_length": 512}  # bert-base-uncased's
WORDS = ["the", "and", "with", "over", "of", "on", "in", "at", "cat", "fox", "dog", "red", "balloon", "lake", "sunset",
         "mountain", "rainbow", "line", "two", "tab", "photo", "night", "lighthouse", "cute", "smiling", "tail",
         "quotes", "numbers", "capitals", "don", "##ing", "##ed", "##er", "##ly", "##s"]  # fmt: skip


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
    elif "norm" in name.lower():
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
    write_imagereward(out, SEEDS["imagereward"])
    return out


def bert_vocab() -> list[str]:
    """A small WordPiece vocab with bert-base-uncased's special ids ([PAD] 0, [unused0..98], [UNK] 100, [CLS] 101,
    [SEP] 102, [MASK] 103): characters, their ## continuations and a few words."""
    chars = [c for c in string.printable if not c.isspace() and not c.isupper()]
    pieces = ["[PAD]", *[f"[unused{i}]" for i in range(99)], "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars,
              *[f"##{c}" for c in chars if c.isalnum()], *WORDS]  # fmt: skip
    return list(dict.fromkeys(pieces))


def write_imagereward(out: Path, seed: int) -> None:
    """`out/imagereward/` (weights with the official keys, med_config.json) and `out/bert/` (the tokenizer)."""
    from transformers import BlipTextModel, BlipVisionConfig, BlipVisionModel

    from .imagereward import MED_CONFIG, WEIGHTS_FILE, ours_to_official, text_config

    vocab = bert_vocab()
    (out / "bert").mkdir(parents=True, exist_ok=True)
    (out / "bert" / "vocab.txt").write_text("".join(f"{piece}\n" for piece in vocab), encoding="utf-8")
    (out / "bert" / "tokenizer_config.json").write_text(json.dumps(BERT_TOKENIZER_CONFIG, indent=2) + "\n")
    med_config = {  # BLIP's med_config.json, tiny; vocab +2 for [DEC] and [ENC]
        "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1, "hidden_size": IR_TEXT_WIDTH, "initializer_range": 0.02,
        "intermediate_size": 4 * IR_TEXT_WIDTH, "layer_norm_eps": 1e-12, "max_position_embeddings": 512,
        "model_type": "bert", "num_attention_heads": 2, "num_hidden_layers": 2, "pad_token_id": 0,
        "type_vocab_size": 2, "vocab_size": len(vocab) + 2, "encoder_width": IR_VISION_WIDTH,
        "add_cross_attention": True,
    }  # fmt: skip
    vision_config = BlipVisionConfig(
        hidden_size=IR_VISION_WIDTH, intermediate_size=4 * IR_VISION_WIDTH, num_hidden_layers=2,
        num_attention_heads=IR_VISION_WIDTH // 64, image_size=224, patch_size=16, layer_norm_eps=1e-6,
    )  # fmt: skip
    torch.manual_seed(seed)
    vision = _seeded(BlipVisionModel(vision_config), seed)
    text = _seeded(BlipTextModel(text_config(med_config, IR_VISION_WIDTH), add_pooling_layer=False), seed + 100)
    mlp = _seeded(AestheticMLP(IR_TEXT_WIDTH), seed + 200)
    state = ours_to_official(vision.state_dict(), text.state_dict(), mlp.state_dict())
    rng = np.random.default_rng(seed + 300)  # unused by the score, present in ImageReward.pt
    for name, width in (("vision_proj", IR_VISION_WIDTH), ("text_proj", IR_TEXT_WIDTH)):
        state[f"blip.{name}.weight"] = _random(rng, "weight", (IR_PROJECTION, width))
        state[f"blip.{name}.bias"] = _random(rng, "bias", (IR_PROJECTION,))
    state["blip.text_encoder.embeddings.position_ids"] = torch.arange(512).expand((1, -1)).contiguous()
    (out / "imagereward").mkdir(exist_ok=True)
    save_file(state, str(out / "imagereward" / Path(WEIGHTS_FILE).with_suffix(".safetensors")))
    (out / "imagereward" / MED_CONFIG).write_text(json.dumps(med_config, indent=2) + "\n")


if __name__ == "__main__":  # python -m hpsv3_serve.judges.tiny OUT (the Makefile's golden-judges target)
    import sys

    print(make_tiny_judges(Path(sys.argv[1])))
