"""CLIP-based judges on transformers' `CLIPModel`: PickScore, CLIP ViT-H/14 (cosine) and the LAION aesthetic predictor.

- PickScore (`yuvalkirstain/PickScore_v1`, processor `laion/CLIP-ViT-H-14-laion2B-s32B-b79K`), as its README:
  CLIPProcessor preprocessing (`clip_inputs.TRANSFORMERS`), text padded/truncated to 77 tokens, score
  `logit_scale.exp() * cos(image_embeds, text_embeds)` (about 0..30; the README's softmax over images is left out).
- CLIP ViT-H/14 (`laion/CLIP-ViT-H-14-laion2B-s32B-b79K`): the plain cosine of the L2-normalised embeddings
  (-1..1; no 100x or 2.5x scale and no clamp at 0, unlike CLIPScore), as open_clip computes it (HPSv2's evaluation):
  its image transform (`clip_inputs.OPENAI`) and its prompt cleaning (ftfy, HTML unescape, whitespace, lowercase)
  before the checkpoint's tokenizer.json, which then gives open_clip's token ids.
- LAION aesthetic predictor v2 (`sac+logos+ava1-l14-linearMSE`): CLIP ViT-L/14 (`openai/clip-vit-large-patch14`)
  image embeds with OpenAI's `clip.load` transform, L2-normalised, then the published MLP (five Linear layers, no
  activations); the prompt is ignored. About 1..10.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from ..errors import ModelLoadError
from ..inputs import ImageInput, open_image
from ..limits import DEFAULT_LIMITS, InputLimits
from .base import check_text
from .clip_inputs import OPENAI, TRANSFORMERS, clip_pixels

CONTEXT_LENGTH = 77


@dataclass(frozen=True)
class ClipItem:
    """One prepared pair: normalised pixels and (for text-aware judges) the prompt's token ids."""

    pixels: np.ndarray  # float32 [3, S, S]
    token_ids: tuple[int, ...] = ()


def load_clip_tokenizer(folder: Path):
    """The folder's `tokenizer.json` (transformers' fast CLIP tokenizer format), truncating to 77 tokens."""
    from tokenizers import Tokenizer

    path = folder / "tokenizer.json"
    if not path.is_file():
        raise ModelLoadError(f"{folder}: no tokenizer.json; pass the CLIP processor folder (or its hub id)")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(CONTEXT_LENGTH)
    tokenizer.no_padding()
    return tokenizer


class ClipJudge:
    """Shared by the CLIP judges: the image side (tower + convention) and, if the judge reads prompts, the text side."""

    name = "clip"
    convention = OPENAI
    reads_prompt = True

    def __init__(self, model: nn.Module, tokenizer, device: str = "cpu", limits: InputLimits = DEFAULT_LIMITS):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = device
        self.limits = limits
        self.image_size = getattr(model.config, "vision_config", model.config).image_size

    def clean(self, prompt: str) -> str:
        """The text the tokenizer sees (as is; the open_clip judge cleans it first)."""
        return prompt

    def prepare(self, image: ImageInput, prompt: str) -> ClipItem:
        """Decode and preprocess the image; tokenise the prompt (errors name the input)."""
        check_text(prompt, self.limits)
        pixels = self.pixels(open_image(image, self.limits))
        ids = tuple(self.tokenizer.encode(self.clean(prompt)).ids) if self.reads_prompt else ()
        return ClipItem(pixels, ids)

    def pixels(self, image: Image.Image) -> np.ndarray:
        """float32 [3, S, S] model input of an opened image (any PIL mode)."""
        return clip_pixels(image, self.image_size, self.convention)

    def _image_embeds(self, items: list[ClipItem]) -> torch.Tensor:
        pixels = torch.from_numpy(np.stack([item.pixels for item in items])).to(self.device, self.model.dtype)
        embeds = self.model.visual_projection(self.model.vision_model(pixel_values=pixels).pooler_output)
        return embeds / embeds.norm(dim=-1, keepdim=True)

    def _text_embeds(self, items: list[ClipItem]) -> torch.Tensor:
        width = max(len(item.token_ids) for item in items)
        ids = torch.zeros((len(items), width), dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, item in enumerate(items):
            ids[row, : len(item.token_ids)] = torch.tensor(item.token_ids)
            mask[row, : len(item.token_ids)] = 1
        output = self.model.text_model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device))
        embeds = self.model.text_projection(output.pooler_output)
        return embeds / embeds.norm(dim=-1, keepdim=True)

    @torch.no_grad()
    def cosine(self, items: list[ClipItem]) -> torch.Tensor:
        return (self._image_embeds(items) * self._text_embeds(items)).sum(dim=-1).float()

    def score_batch(self, items: list[ClipItem]) -> list[float]:
        return self.cosine(items).tolist()


class ClipCosineJudge(ClipJudge):
    """CLIP ViT-H/14: cosine similarity of image and prompt, with open_clip's image transform and prompt cleaning."""

    name = "clip-h"

    def __init__(self, model: nn.Module, tokenizer, device: str = "cpu", limits: InputLimits = DEFAULT_LIMITS):
        try:
            import ftfy  # noqa: F401
        except ImportError as exc:
            raise ModelLoadError(f"{self.name} cleans prompts as open_clip does, with ftfy: pip install ftfy") from exc
        super().__init__(model, tokenizer, device, limits)

    def clean(self, prompt: str) -> str:
        """open_clip's `_clean_lower`: ftfy.fix_text, HTML unescaped twice, whitespace runs joined, lowercase."""
        import ftfy

        return " ".join(html.unescape(html.unescape(ftfy.fix_text(prompt))).split()).lower()


class PickScoreJudge(ClipJudge):
    """PickScore: `logit_scale.exp() * cosine`, CLIPProcessor preprocessing."""

    name = "pickscore"
    convention = TRANSFORMERS

    def score_batch(self, items: list[ClipItem]) -> list[float]:
        with torch.no_grad():
            return (self.model.logit_scale.exp().float() * self.cosine(items)).tolist()


class AestheticMLP(nn.Module):
    """The published MLP of improved-aesthetic-predictor (`simple_inference.py`): Linear layers with dropout between
    and no activation (its ReLUs are commented out); the layer indices match the .pth keys `layers.{0,2,4,6,7}`."""

    def __init__(self, input_size: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1),
        )  # fmt: skip

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        return self.layers(embeds)


def load_mlp(path: Path) -> AestheticMLP:
    """The aesthetic MLP from a safetensors file with the .pth's keys (input size read from `layers.0.weight`)."""
    state = load_file(str(path))
    if "layers.0.weight" not in state:
        raise ModelLoadError(f"{path}: no layers.0.weight; not the aesthetic predictor's MLP")
    mlp = AestheticMLP(state["layers.0.weight"].shape[1])
    try:
        mlp.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"{path} does not fit the aesthetic MLP: {exc}") from exc
    return mlp.eval()


class AestheticJudge(ClipJudge):
    """LAION aesthetic predictor v2: CLIP ViT-L/14 image embeds, L2-normalised, → MLP (float32). Prompt unused."""

    name = "aesthetic"
    reads_prompt = False

    def __init__(self, model: nn.Module, mlp: AestheticMLP, device: str = "cpu", limits: InputLimits = DEFAULT_LIMITS):
        super().__init__(model, None, device, limits)
        embed_dim = model.config.projection_dim
        if mlp.layers[0].in_features != embed_dim:
            raise ModelLoadError(
                f"aesthetic MLP takes {mlp.layers[0].in_features}-d embeds but the CLIP model gives {embed_dim}: "
                "the v2 MLP goes with CLIP ViT-L/14 (768)"
            )
        self.mlp = mlp.to(device).float().eval()

    def _image_embeds(self, items: list[ClipItem]) -> torch.Tensor:
        pixels = torch.from_numpy(np.stack([item.pixels for item in items])).to(self.device, self.model.dtype)
        embeds = self.model(pixel_values=pixels).image_embeds.float()
        norms = embeds.norm(dim=-1, keepdim=True)
        return embeds / torch.where(norms == 0, torch.ones_like(norms), norms)  # the official `normalized`

    def score_batch(self, items: list[ClipItem]) -> list[float]:
        with torch.no_grad():
            return self.mlp(self._image_embeds(items))[:, 0].tolist()
