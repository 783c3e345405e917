"""What the served judges share with their clients: output names and the multi-reward call's one decode.

- `score_output(name)`: the tensor of the `rewards` model that carries model `name`'s score (`SCORE_PICKSCORE`,
  `SCORE_CLIP_H`, `SCORE_HPSV2_1`, `SCORE_HPSV3` = HPSv3's mu).
- `prepare_all`: one encoded image and prompt → each judge's prepared item and HPSv3's patches, from a single
  decode (judges `prepare` a PIL image as it is; HPSv3's `prepare_image` converts it to RGB as its preprocess does).
"""

from __future__ import annotations

import re
from typing import Any

from ..inputs import PreparedImage, open_image, prepare_image
from ..limits import InputLimits


def score_output(name: str) -> str:
    """The `rewards` model's output tensor for model `name`."""
    return "SCORE_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def prepare_all(
    judges: dict[str, Any], data: bytes, prompt: str, limits: InputLimits, hpsv3: bool
) -> tuple[dict[str, Any], PreparedImage | None]:
    """(each judge's prepared item, HPSv3's patches or None): the image is decoded once, here; errors name the input."""
    image = open_image(data, limits)  # the one decode, in the file's own mode (what each judge's official code sees)
    items = {name: judge.prepare(image, prompt) for name, judge in judges.items()}
    return items, prepare_image(image, limits) if hpsv3 else None
