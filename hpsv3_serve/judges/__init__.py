"""Reward models beside HPSv3 ("judges"), one interface: `load_judge(name).score(images, prompts)`.

Each entry loads published weights from the hub by default, or local paths: `weights` is the model itself,
`base` what it is built on (HPSv3: the Qwen2-VL base; PickScore: the CLIP processor; aesthetic: CLIP ViT-L/14;
ImageReward: the bert-base-uncased tokenizer).
Every judge returns one result per item with `.score` (HPSv3's results also carry mu / sigma) and per-item errors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..defaults import DEFAULT_BASE, DEFAULT_BATCH_SIZE, DEFAULT_CHECKPOINT
from ..limits import DEFAULT_LIMITS, InputLimits


@dataclass(frozen=True)
class JudgeSpec:
    """A judge's name, default sources and what its score means."""

    name: str
    weights: str
    base: str | None
    score: str


HPSV3 = JudgeSpec("hpsv3", DEFAULT_CHECKPOINT, DEFAULT_BASE, "mu, with sigma")
PICKSCORE = JudgeSpec(
    "pickscore", "yuvalkirstain/PickScore_v1", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "logit_scale.exp() * cosine"
)
CLIP_H = JudgeSpec("clip-h", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", None, "cosine of CLIP ViT-H/14 embeddings")
AESTHETIC = JudgeSpec(
    "aesthetic", "trl-lib/ddpo-aesthetic-predictor", "openai/clip-vit-large-patch14", "MLP on ViT-L/14, about 1..10"
)
HPSV2 = JudgeSpec("hpsv2", "xswu/HPSv2", CLIP_H.weights, "cosine, open_clip ViT-H/14 fine-tuned")
HPSV21 = JudgeSpec("hpsv2.1", "xswu/HPSv2", CLIP_H.weights, "cosine, as hpsv2")
IMAGEREWARD = JudgeSpec(
    "imagereward", "THUDM/ImageReward", "google-bert/bert-base-uncased", "BLIP + MLP, standardised, about -2..2"
)
AESTHETIC_FILE = "aesthetic-model.pth"  # sac+logos+ava1-l14-linearMSE.pth, as TRL's DDPO example publishes it
JUDGES = {spec.name: spec for spec in (HPSV3, HPSV2, HPSV21, PICKSCORE, CLIP_H, AESTHETIC, IMAGEREWARD)}


def load_judge(
    name: str,
    weights: str | os.PathLike | None = None,
    base: str | os.PathLike | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    batch_size: int = DEFAULT_BATCH_SIZE,
    limits: InputLimits = DEFAULT_LIMITS,
    revision: str | None = None,
    base_revision: str | None = None,
):
    """A scorer for judge `name` (`JUDGES`) with `.score(images, prompts)` / `.iter_score` / `__call__`; revisions pin
    hub ids (commit hash, branch or tag)."""
    from ..errors import ModelLoadError

    if name not in JUDGES:
        known = "; ".join(f"{spec.name}: {spec.score}" for spec in JUDGES.values())
        raise ModelLoadError(f"unknown reward model {name!r}; choose one of: {known}")
    spec = JUDGES[name]
    weights, base = os.fspath(weights or spec.weights), os.fspath(base or spec.base or weights or spec.weights)
    if name == "hpsv3":
        from ..checkpoint import resolve_base, resolve_checkpoint
        from ..scorer import Scorer

        checkpoint, base_dir = resolve_checkpoint(weights, revision=revision), resolve_base(base, base_revision)
        return Scorer.from_pretrained(checkpoint, base_dir, device, dtype, batch_size, limits)
    from .base import JudgeScorer

    if name == "imagereward":
        from .imagereward import load_imagereward

        return JudgeScorer(
            load_imagereward((weights, revision), (base, base_revision), device, dtype, limits), batch_size
        )
    from .loading import load_clip_judge

    judge = load_clip_judge(spec, (weights, revision), (base, base_revision), device, dtype, limits)
    return JudgeScorer(judge, batch_size)
