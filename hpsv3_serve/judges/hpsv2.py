"""HPSv2 and HPSv2.1 (`xswu/HPSv2`): an open_clip ViT-H/14 fine-tune, scored as `hpsv2.score` does, on transformers'
`CLIPModel`.

- Weights: the `state_dict` of `HPS_v2_compressed.pt` / `HPS_v2.1_compressed.pt` (open_clip's layout), converted once
  to safetensors (pickle is refused; the error gives the command); mapped to CLIPModel's names when loading.
- Base: `laion/CLIP-ViT-H-14-laion2B-s32B-b79K`, its config.json and tokenizer.json only.
- Score: the cosine of the normalised embeddings (`image_features @ text_features.T`, no logit scale), about 0.2..0.35.
- Prompts: open_clip's tokenizer (as the clip-h judge: ftfy, HTML unescape, whitespace, lowercase, 77 tokens).
- Images: hpsv2's eval transform (`light_augmentation=True`), unlike every other CLIP judge here: `convert("RGB")`,
  `ToTensor`, the longest side to 224 (`round(side * 224 / longest)`) by torch's bicubic interpolation with
  antialias on the float tensor (torchvision's tensor `resize`, not PIL's), zero padding to 224 × 224 (the odd pixel
  right / bottom), then the CLIP mean / std. Two inputs the official code cannot score are scored here: RGBA images
  (hpsv2 keeps 4 channels and its 3-channel patch embedding fails; here alpha is dropped) and images whose longest
  side is already 224 but are not square (hpsv2 skips the padding then and fails; here they are padded).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..inputs import IMAGE_MEAN, IMAGE_STD
from ..limits import InputLimits
from .clip_judges import ClipCosineJudge

SIZE = 224
SCORE_FILES = {"hpsv2": "HPS_v2_compressed.pt", "hpsv2.1": "HPS_v2.1_compressed.pt"}  # in the hub repo xswu/HPSv2
TO_SAFETENSORS = (  # python -c "TO_SAFETENSORS" HPS_v2_compressed.pt HPS_v2.safetensors: the checkpoint's state_dict
    "import sys, torch; from safetensors.torch import save_file; "
    "s = torch.load(sys.argv[1], map_location='cpu', weights_only=True)['state_dict']; "
    "save_file({k: v.contiguous() for k, v in s.items()}, sys.argv[2])"
)


def hpsv2_pixels(image: Image.Image, size: int = SIZE) -> np.ndarray:
    """float32 [3, size, size]: hpsv2's eval transform of an opened image (module docstring)."""
    tensor = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)
    tensor = tensor.float().div(255)  # ToTensor
    height, width = tensor.shape[1:]
    scale = size / float(max(height, width))
    new_h, new_w = round(height * scale), round(width * scale)
    if (new_h, new_w) != (height, width):
        tensor = torch.nn.functional.interpolate(
            tensor[None], size=[new_h, new_w], mode="bicubic", align_corners=False, antialias=True
        )[0]
    pad_h, pad_w = size - new_h, size - new_w
    tensor = torch.nn.functional.pad(tensor, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
    mean, std = torch.tensor(IMAGE_MEAN)[:, None, None], torch.tensor(IMAGE_STD)[:, None, None]
    return tensor.sub_(mean).div_(std).numpy()


def _pairs(state_keys: set[str], keys_are_ours: bool) -> list[tuple[str, tuple[str, ...], str]]:
    """(open_clip key, CLIPModel key(s), how) for every tensor of a state dict with `state_keys` (CLIPModel's names
    if `keys_are_ours`, else open_clip's); how: "same", "transpose" or "qkv" (one in_proj holds q, k and v)."""
    pairs = [
        ("visual.class_embedding", ("vision_model.embeddings.class_embedding",), "same"),
        ("visual.conv1.weight", ("vision_model.embeddings.patch_embedding.weight",), "same"),
        ("visual.positional_embedding", ("vision_model.embeddings.position_embedding.weight",), "same"),
        ("visual.proj", ("visual_projection.weight",), "transpose"),
        ("token_embedding.weight", ("text_model.embeddings.token_embedding.weight",), "same"),
        ("positional_embedding", ("text_model.embeddings.position_embedding.weight",), "same"),
        ("text_projection", ("text_projection.weight",), "transpose"),
        ("logit_scale", ("logit_scale",), "same"),
    ]
    norms = {"visual.ln_pre": "vision_model.pre_layrnorm", "visual.ln_post": "vision_model.post_layernorm",
             "ln_final": "text_model.final_layer_norm"}  # fmt: skip
    block = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
             "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}  # fmt: skip
    for part in ("weight", "bias"):
        pairs += [(f"{theirs}.{part}", (f"{ours}.{part}",), "same") for theirs, ours in norms.items()]
    for theirs_prefix, tower in (("visual.", "vision_model"), ("", "text_model")):
        index = 0
        ours_probe, theirs_probe = (
            f"{tower}.encoder.layers.{{}}.layer_norm1.weight",
            f"{theirs_prefix}transformer.resblocks.{{}}.ln_1.weight",
        )
        probe = ours_probe if keys_are_ours else theirs_probe
        while probe.format(index) in state_keys:
            src, dst = f"{theirs_prefix}transformer.resblocks.{index}.", f"{tower}.encoder.layers.{index}."
            for part in ("weight", "bias"):
                qkv = tuple(f"{dst}self_attn.{name}_proj.{part}" for name in "qkv")
                pairs.append((f"{src}attn.in_proj_{part}", qkv, "qkv"))
                pairs += [(f"{src}{theirs}.{part}", (f"{dst}{ours}.{part}",), "same") for theirs, ours in block.items()]
            index += 1
    return pairs


def from_open_clip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An open_clip (= OpenAI layout) CLIP state dict in transformers' CLIPModel names."""
    out = {}
    for theirs, ours, how in _pairs(set(state), keys_are_ours=False):
        tensor = state[theirs]
        parts = tensor.chunk(3) if how == "qkv" else (tensor.T if how == "transpose" else tensor,)
        out.update(zip(ours, parts, strict=True))
    return {key: value.contiguous() for key, value in out.items()}


def to_open_clip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `from_open_clip` (for the tiny HPSv2 checkpoint)."""
    out = {}
    for theirs, ours, how in _pairs(set(state), keys_are_ours=True):
        tensors = [state[key] for key in ours]
        out[theirs] = torch.cat(tensors) if how == "qkv" else (tensors[0].T if how == "transpose" else tensors[0])
    return {key: value.contiguous() for key, value in out.items()}


class HPSv2Judge(ClipCosineJudge):
    """HPSv2 / HPSv2.1: open_clip's cosine with hpsv2's own image transform."""

    def __init__(self, model, tokenizer, device: str, limits: InputLimits, name: str) -> None:
        super().__init__(model, tokenizer, device, limits)
        self.name = name

    def pixels(self, image: Image.Image) -> np.ndarray:
        return hpsv2_pixels(image, self.image_size)
