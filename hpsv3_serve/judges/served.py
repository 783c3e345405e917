"""What the served judges share with their clients: output names and the multi-reward call's one decode.

- `score_output(name)`: the tensor of the `rewards` model that carries model `name`'s score (`SCORE_PICKSCORE`,
  `SCORE_CLIP_H`, `SCORE_HPSV2_1`, `SCORE_HPSV3` = HPSv3's mu).
- `RewardsResult`: what `HPSv3Client(model="rewards")` returns per item: every served model's score by name, and
  why a model that refused the item did not score it.
- `prepare_all`: one encoded image and prompt → each judge's prepared item and HPSv3's patches, from a single
  decode (judges `prepare` a PIL image as it is; HPSv3's `prepare_image` converts it to RGB as its preprocess does).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..inputs import PreparedImage, open_image, prepare_image
from ..limits import InputLimits


def score_output(name: str) -> str:
    """The `rewards` model's output tensor for model `name`."""
    return "SCORE_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


@dataclass
class RewardsResult:
    """Every served model's score of one (image, prompt) pair (`scores`: model name → score; hpsv3's is mu) and why
    any model that refused it could not score it (`errors`: model name → message), or why no model could (`error`)."""

    image: str
    prompt: str
    scores: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    errors: dict[str, str] = field(default_factory=dict)
    model = "rewards"

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        data = {"image": self.image, "prompt": self.prompt, "model": self.model}
        if self.error:
            return data | {"error": self.error}
        return data | {"scores": self.scores} | ({"errors": self.errors} if self.errors else {})


def judge_device(device: str, args: dict) -> str:
    """A Triton model's `device` parameter for its instance: `cuda` (KIND_GPU) is the instance's own card."""
    if device == "cuda":
        import torch

        device = f"cuda:{args['model_instance_device_id']}"
        torch.cuda.set_device(device)
    return device


def served_judge(
    name: str, weights: str, base: str, onnx: str, limits: InputLimits, device: str = "cpu", dtype: str = "float32"
):
    """The judge a Triton model runs: the exported towers on ONNX Runtime when `onnx` names their folder, else the
    torch judge from `weights` / `base` (empty: its hub ids) on `device` in `dtype`."""
    if onnx:
        from pathlib import Path

        from .onnx_judge import OnnxJudge

        return OnnxJudge(Path(onnx), limits)
    from . import load_judge

    scorer = load_judge(name, weights or None, base or None, device, dtype, limits=limits)
    scorer.close()  # prepare + score_batch are used directly; the scorer's threads are not needed
    return scorer.judge


def prepare_all(
    judges: dict[str, Any], data: bytes, prompt: str, limits: InputLimits, hpsv3: bool
) -> tuple[dict[str, Any], PreparedImage | None]:
    """(each judge's prepared item, HPSv3's patches or None): the image is decoded once, here; errors name the input."""
    image = open_image(data, limits)  # the one decode, in the file's own mode (what each judge's official code sees)
    items = {name: judge.prepare(image, prompt) for name, judge in judges.items()}
    return items, prepare_image(image, limits) if hpsv3 else None
