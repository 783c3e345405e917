"""Build a CLIP judge from hub ids or local paths (transformers `from_pretrained`, safetensors only, strict)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..checkpoint import DTYPES
from ..errors import ModelLoadError
from ..limits import InputLimits
from .clip_judges import AestheticJudge, ClipCosineJudge, ClipJudge, PickScoreJudge, load_clip_tokenizer, load_mlp
from .hpsv2 import SCORE_FILES, HPSv2Judge, from_open_clip
from .hpsv2 import TO_SAFETENSORS as HPSV2_RECIPE
from .weights import CLIP_FILES, require_safetensors_folder, resolve_file, resolve_folder


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No load report (a vision tower from a full CLIP lists every text key as unused) and no progress bar."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _pretrained(cls, folder: Path, dtype: torch.dtype, device: str):
    """`cls.from_pretrained(folder)`, refusing missing weights (transformers would fill them with random values)."""
    require_safetensors_folder(folder)
    try:
        with _quiet_transformers():
            model, info = cls.from_pretrained(folder, dtype=dtype, use_safetensors=True, output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"{folder}: could not load {cls.__name__} ({type(exc).__name__}: {exc})") from exc
    if info["missing_keys"]:
        raise ModelLoadError(f"{folder}: weights missing for {sorted(info['missing_keys'])[:5]}; not a CLIP model?")
    return model.to(device).eval()


def _from_state(config, state: dict[str, torch.Tensor], dtype: torch.dtype, device: str):
    """A CLIPModel of `config` holding exactly `state` (built on the meta device: no random init of a ViT-H)."""
    from transformers import CLIPModel

    with torch.device("meta"):
        model = CLIPModel(config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"the HPSv2 weights do not fit the base config: {exc}") from exc
    for embeddings in (model.vision_model.embeddings, model.text_model.embeddings):  # buffers not in the state
        embeddings.position_ids = torch.arange(embeddings.position_embedding.num_embeddings).expand((1, -1))
    return model.to(device, dtype).eval()


def load_clip_judge(
    spec, weights: tuple[str, str | None], base: tuple[str, str | None], device: str, dtype: str, limits: InputLimits
) -> ClipJudge:
    """The judge `spec.name` (pickscore, clip-h, aesthetic) on `device` in `dtype`; `weights` and `base` are
    (hub id or path, revision)."""
    from transformers import CLIPConfig, CLIPModel, CLIPVisionModelWithProjection

    from . import AESTHETIC_FILE

    if dtype not in DTYPES:
        raise ModelLoadError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"--device {device}: torch {torch.__version__} sees no CUDA device; use --device cpu")
    if spec.name in SCORE_FILES:
        state = from_open_clip(
            load_file(str(resolve_file(*weights, filename=SCORE_FILES[spec.name], recipe=HPSV2_RECIPE)))
        )
        base_dir = resolve_folder(*base, patterns=[name for name in CLIP_FILES if "model" not in name])
        model = _from_state(CLIPConfig.from_pretrained(base_dir), state, DTYPES[dtype], device)
        return HPSv2Judge(model, load_clip_tokenizer(base_dir), device, limits, spec.name)
    if spec.name == "aesthetic":
        mlp = load_mlp(resolve_file(*weights, filename=AESTHETIC_FILE))
        clip = _pretrained(CLIPVisionModelWithProjection, resolve_folder(*base), DTYPES[dtype], device)
        return AestheticJudge(clip, mlp, device, limits)
    model = _pretrained(CLIPModel, resolve_folder(*weights), DTYPES[dtype], device)
    tokenizer = load_clip_tokenizer(resolve_folder(*base, required="tokenizer.json", what="a CLIP processor folder"))
    judge_class = PickScoreJudge if spec.name == "pickscore" else ClipCosineJudge
    return judge_class(model, tokenizer, device, limits)
