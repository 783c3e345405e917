"""CLIP-family preprocessing, as each official implementation does it (PIL + numpy; torchvision is not needed).

Two conventions, which differ from each other and from HPSv3's (`inputs.py`: smart_resize to ~200k pixels, no crop):

- `TRANSFORMERS`: `CLIPProcessor` as PickScore's README runs it (transformers 4.x `CLIPImageProcessor`):
  `convert("RGB")` first (alpha dropped), resize the short side to 224 (PIL BICUBIC, long side truncated),
  centre crop with the offset rounded down, rescale 1/255 in float64 → float32, normalise with the CLIP mean/std.
  (transformers 5 composites transparent images onto white instead; the official recipe predates that.)
- `OPENAI`: `clip.load(...)`'s and open_clip's torchvision transform: resize and centre crop in the image's own
  mode (a palette image resizes NEAREST, RGBA premultiplied, as PIL does), crop offset `round((h - 224) / 2)`,
  then `convert("RGB")`, `x / 255` in float32, normalise.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..inputs import IMAGE_MEAN, IMAGE_STD

TRANSFORMERS = "transformers"
OPENAI = "openai"
CONVENTIONS = (TRANSFORMERS, OPENAI)


def _table(convention: str) -> np.ndarray:
    """float32 [3, 256]: the normalised value of each (channel, grey level) under a convention's arithmetic."""
    levels = np.arange(256)
    scaled = (levels * (1 / 255)).astype(np.float32) if convention == TRANSFORMERS else np.float32(levels) / 255
    mean, std = np.array(IMAGE_MEAN, np.float32)[:, None], np.array(IMAGE_STD, np.float32)[:, None]
    return (scaled[None, :] - mean) / std


TABLES = {convention: _table(convention) for convention in CONVENTIONS}


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) with the short side at `size` and the long side `int(size * long / short)`."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def crop_box(width: int, height: int, size: int, convention: str) -> tuple[int, int, int, int]:
    """The centred size × size box (left, top, right, bottom) of a resized image."""
    if convention == TRANSFORMERS:
        left, top = (width - size) // 2, (height - size) // 2
    else:
        left, top = round((width - size) / 2.0), round((height - size) / 2.0)  # Python's: half to even
    return left, top, left + size, top + size


def clip_pixels(image: Image.Image, size: int, convention: str) -> np.ndarray:
    """float32 [3, size, size] model input for an opened image (any PIL mode), by `convention`."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown CLIP preprocessing convention {convention!r}; use one of {CONVENTIONS}")
    if convention == TRANSFORMERS and image.mode != "RGB":
        image = image.convert("RGB")
    width, height = resized_size(image.width, image.height, size)
    if (width, height) != image.size:
        image = image.resize((width, height), Image.BICUBIC)
    cropped = image.crop(crop_box(width, height, size, convention)).convert("RGB")
    pixels = np.asarray(cropped, dtype=np.uint8).transpose(2, 0, 1)
    lookup = pixels.reshape(3, -1) + np.arange(0, 3 * 256, 256)[:, None]
    return np.take(TABLES[convention].ravel(), lookup).reshape(3, size, size)
