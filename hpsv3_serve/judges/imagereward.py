"""ImageReward (`THUDM/ImageReward`; image-reward 1.5's `ImageReward.load("ImageReward-v1.0")`) on transformers' BLIP.

- Model, as `ImageReward.score`: BLIP's ViT-L/16 (`BlipVisionModel`) → BLIP's BERT reading the prompt with
  cross-attention to every image token (`BlipTextModel`) → the text [CLS] state → an MLP (improved-aesthetic-
  predictor's, `AestheticMLP`: 768→1024→128→64→16→1, no activations) → `(x - MEAN) / STD`, about -2..2.
  transformers' modules differ from BLIP's only by configuration: the ViT's LayerNorm eps is 1e-6 (timm's, not
  BlipVisionConfig's 1e-5) and `is_decoder=True` builds BLIP's `add_cross_attention` layers while the forward pass
  runs with `is_decoder=False` (bidirectional self-attention, as BLIP's encoder). Padding is masked with the dtype's
  minimum instead of -10000 (both give a zero weight after the softmax).
- Weights: `ImageReward.pt`'s state dict (a pickle: refused, with the command that converts it) as safetensors with the
  official keys, `med_config.json` beside it; keys are mapped to transformers' names here (`official_to_ours`).
  `blip.vision_proj` / `blip.text_proj` (the official model holds them; its score never uses them) and the
  `position_ids` buffer are skipped; any other key under the ViT, the BERT or the MLP that does not map is refused.
- Text: `bert-base-uncased`'s WordPiece tokenizer with `[DEC]` (bos) and `[ENC]` added (BLIP's `init_tokenizer`),
  padded and truncated to 35 tokens with [CLS] first (`score` keeps [CLS]; BLIP's ITM head would put [ENC] there).
- Images: OpenAI CLIP's transform (`clip_inputs.OPENAI`): resize 224 bicubic in the image's mode, centre crop, RGB,
  CLIP mean / std.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from ..checkpoint import DTYPES
from ..errors import ModelLoadError
from ..inputs import ImageInput, open_image
from ..limits import DEFAULT_LIMITS, InputLimits
from .base import check_text
from .clip_inputs import OPENAI, clip_pixels
from .clip_judges import AestheticMLP
from .weights import resolve_file, resolve_folder

MEAN, STD = 0.16717362830052426, 1.0333394966054072
MAX_TOKENS = 35
IMAGE_SIZE = 224
WEIGHTS_FILE, MED_CONFIG = "ImageReward.pt", "med_config.json"
TOKENIZER_FILES = ["vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
PREFIXES = {"vision": "blip.visual_encoder.", "text": "blip.text_encoder.", "mlp": "mlp."}
SHAPE_KEYS = ["blip.visual_encoder.patch_embed.proj.weight", "blip.visual_encoder.blocks.0.mlp.fc1.weight",
              "mlp.layers.0.weight"]  # fmt: skip
VISION_KEYS = [  # (official timm-style ViT key, BlipVisionModel key); {i}: block, {p}: weight or bias
    ("cls_token", "embeddings.class_embedding"),
    ("pos_embed", "embeddings.position_embedding"),
    ("patch_embed.proj.{p}", "embeddings.patch_embedding.{p}"),
    ("blocks.{i}.norm1.{p}", "encoder.layers.{i}.layer_norm1.{p}"),
    ("blocks.{i}.attn.qkv.{p}", "encoder.layers.{i}.self_attn.qkv.{p}"),
    ("blocks.{i}.attn.proj.{p}", "encoder.layers.{i}.self_attn.projection.{p}"),
    ("blocks.{i}.norm2.{p}", "encoder.layers.{i}.layer_norm2.{p}"),
    ("blocks.{i}.mlp.fc1.{p}", "encoder.layers.{i}.mlp.fc1.{p}"),
    ("blocks.{i}.mlp.fc2.{p}", "encoder.layers.{i}.mlp.fc2.{p}"),
    ("norm.{p}", "post_layernorm.{p}"),
]  # BLIP's BERT (med.py) and BlipTextModel share their key names; the MLP keys are the official ones


def _pattern(template: str) -> re.Pattern:
    return re.compile(re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{p\}", r"(?P<p>weight|bias)"))


def rename_vision(key: str, to_official: bool = False) -> str | None:
    """A ViT key in the other layout (official → BlipVisionModel, or back), or None if it is not a ViT tensor."""
    for official, ours in VISION_KEYS:
        source, target = (ours, official) if to_official else (official, ours)
        match = _pattern(source).fullmatch(key)
        if match:
            return target.format(**match.groupdict())
    return None


def official_to_ours(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Split an ImageReward state dict into {"vision", "text", "mlp"} states under transformers' names."""
    missing = [key for key in SHAPE_KEYS if key not in state]
    if missing:
        raise ModelLoadError(f"not an ImageReward checkpoint (image-reward 1.5's layout): no {missing[0]}")
    parts: dict[str, dict[str, torch.Tensor]] = {part: {} for part in PREFIXES}
    unknown = []
    for key, value in state.items():
        part = next((name for name, prefix in PREFIXES.items() if key.startswith(prefix)), None)
        if part is None or key.endswith("position_ids"):  # blip.vision_proj / text_proj; a buffer
            continue
        rest = key[len(PREFIXES[part]) :]
        ours = rename_vision(rest) if part == "vision" else rest
        if ours is None:
            unknown.append(key)
        else:
            parts[part][ours] = value
    if unknown:
        raise ModelLoadError(f"not ImageReward's layout (image-reward 1.5): unexpected keys {sorted(unknown)[:5]}")
    return parts


def ours_to_official(vision: dict, text: dict, mlp: dict) -> dict[str, torch.Tensor]:
    """The inverse of `official_to_ours` (the tiny model is written with the official keys)."""
    vision = {rename_vision(key, to_official=True): value for key, value in vision.items()}
    parts = {"vision": vision, "text": text, "mlp": mlp}
    return {PREFIXES[part] + key: value.contiguous() for part, state in parts.items() for key, value in state.items()}


def vision_config(vision: dict[str, torch.Tensor]):
    """The ViT's BlipVisionConfig, read from its weights (the official hard-codes ViT-L/16 at 224: 64-wide heads)."""
    from transformers import BlipVisionConfig

    width, _, patch, _ = vision["embeddings.patch_embedding.weight"].shape
    return BlipVisionConfig(
        hidden_size=width, intermediate_size=vision["encoder.layers.0.mlp.fc1.weight"].shape[0],
        num_hidden_layers=len({key.split(".")[2] for key in vision if key.startswith("encoder.layers.")}),
        num_attention_heads=width // 64, image_size=IMAGE_SIZE, patch_size=patch, hidden_act="gelu",
        layer_norm_eps=1e-6,
    )  # fmt: skip


def text_config(med_config: dict, encoder_width: int):
    """The BERT's BlipTextConfig from med_config.json; cross-attention reads `encoder_width` (the ViT's width, as
    BLIP_Pretrain sets `encoder_width`)."""
    from transformers import BlipTextConfig

    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "max_position_embeddings", "hidden_act", "layer_norm_eps", "pad_token_id")  # fmt: skip
    return BlipTextConfig(
        **{key: med_config[key] for key in keys if key in med_config}, encoder_hidden_size=encoder_width,
        is_decoder=True, bos_token_id=None, sep_token_id=None, eos_token_id=None,
    )  # fmt: skip


def build(parts: dict[str, dict[str, torch.Tensor]], med_config: dict, dtype: torch.dtype, device: str):
    """(BlipVisionModel, BlipTextModel, AestheticMLP) holding exactly `parts` (built on the meta device)."""
    from transformers import BlipTextModel, BlipVisionModel

    vision_cfg = vision_config(parts["vision"])
    with torch.device("meta"):
        vision = BlipVisionModel(vision_cfg)
        text = BlipTextModel(text_config(med_config, vision_cfg.hidden_size), add_pooling_layer=False)
    mlp = AestheticMLP(parts["mlp"]["layers.0.weight"].shape[1])
    for name, module in (("vision", vision), ("text", text), ("mlp", mlp)):
        try:
            module.load_state_dict(parts[name], strict=True, assign=name != "mlp")
        except RuntimeError as exc:
            raise ModelLoadError(f"the ImageReward weights do not fit med_config.json ({name}): {exc}") from exc
    embeddings = text.embeddings  # a buffer the state does not hold
    embeddings.position_ids = torch.arange(embeddings.position_embeddings.num_embeddings).expand((1, -1))
    return vision.to(device, dtype).eval(), text.to(device, dtype).eval(), mlp.to(device).float().eval()


def load_tokenizer(folder: Path):
    """BLIP's `init_tokenizer` on transformers' BertTokenizer: [DEC] as bos and [ENC] added; then the tokenizers
    backend, padding and truncating to 35 tokens as `score`'s `padding="max_length", truncation=True` (thread-safe)."""
    from transformers import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(folder)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    backend = tokenizer.backend_tokenizer
    backend.enable_truncation(MAX_TOKENS)
    backend.enable_padding(length=MAX_TOKENS, pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token)
    return backend


@dataclass(frozen=True)
class ImageRewardItem:
    """One prepared pair: CLIP-normalised pixels and the 35 token ids with their attention mask."""

    pixels: np.ndarray
    input_ids: tuple[int, ...]
    attention_mask: tuple[int, ...]


class ImageRewardJudge:
    """ImageReward's `score` on batches (module docstring)."""

    name = "imagereward"

    def __init__(self, vision, text, mlp, tokenizer, device: str = "cpu", limits: InputLimits = DEFAULT_LIMITS):
        self.vision, self.text, self.mlp, self.tokenizer = vision, text, mlp, tokenizer
        self.device, self.limits = device, limits

    def prepare(self, image: ImageInput, prompt: str) -> ImageRewardItem:
        check_text(prompt, self.limits)
        pixels = clip_pixels(open_image(image, self.limits), IMAGE_SIZE, OPENAI)
        encoding = self.tokenizer.encode(prompt)
        return ImageRewardItem(pixels, tuple(encoding.ids), tuple(encoding.attention_mask))

    @torch.no_grad()
    def score_batch(self, items: list[ImageRewardItem]) -> list[float]:
        pixels = torch.from_numpy(np.stack([item.pixels for item in items])).to(self.device, self.vision.dtype)
        image_embeds = self.vision(pixel_values=pixels).last_hidden_state
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device)
        ids = torch.tensor([item.input_ids for item in items], device=self.device)
        mask = torch.tensor([item.attention_mask for item in items], device=self.device)
        output = self.text(input_ids=ids, attention_mask=mask, encoder_hidden_states=image_embeds,
                           encoder_attention_mask=image_atts, is_decoder=False)  # fmt: skip
        rewards = (self.mlp(output.last_hidden_state[:, 0, :].float()) - MEAN) / STD
        return rewards[:, 0].tolist()


def _weights_and_config(spec: str, revision: str | None) -> tuple[Path, Path]:
    """The safetensors weights and the med_config.json beside them: a file, a folder holding ImageReward.safetensors,
    or the hub repo (whose ImageReward.pt is refused with the command that converts it)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        pickle = path / WEIGHTS_FILE
        converted = pickle.with_suffix(".safetensors")
        spec = str(pickle if pickle.is_file() and not converted.is_file() else converted)
    if not path.exists():  # a hub id: med_config.json first, so the file converted beside the .pt finds it
        resolve_folder(spec, revision, required=MED_CONFIG, what="ImageReward's weights", patterns=[MED_CONFIG])
    weights = resolve_file(spec, revision, filename=WEIGHTS_FILE)
    config = weights.parent / MED_CONFIG
    if not config.is_file():
        raise ModelLoadError(f"{weights}: no {MED_CONFIG} beside it; put THUDM/ImageReward's {MED_CONFIG} there")
    return weights, config


def load_imagereward(
    weights: tuple[str, str | None], base: tuple[str, str | None], device: str, dtype: str, limits: InputLimits
) -> ImageRewardJudge:
    """The ImageReward judge; `weights` and `base` (the BERT tokenizer) are (hub id or path, revision)."""
    import json

    if dtype not in DTYPES:
        raise ModelLoadError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"--device {device}: torch {torch.__version__} sees no CUDA device; use --device cpu")
    weights_file, config_file = _weights_and_config(*weights)
    parts = official_to_ours(load_file(str(weights_file)))
    vision, text, mlp = build(parts, json.loads(config_file.read_text()), DTYPES[dtype], device)
    folder = resolve_folder(*base, required="vocab.txt", what="a BERT tokenizer folder", patterns=TOKENIZER_FILES)
    return ImageRewardJudge(vision, text, mlp, load_tokenizer(folder), device, limits)
