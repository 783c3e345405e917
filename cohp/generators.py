"""The generator registry: which diffusers pipelines CoHP runs, with the official recipe's settings.

Add a generator with one `register(Generator(...))` call: a name, a hub id or local folder, the diffusers
text-to-image and image-to-image class names, and its sampling settings.
"""

from __future__ import annotations

import gc
import inspect
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Generator:
    """One diffusion model: where it lives, its two pipeline classes and how to sample it."""

    name: str
    source: str  # hub id or local folder
    text2image: str  # diffusers class names
    image2image: str
    steps: int
    guidance: float
    size: int = 1024
    negative_prompt: bool = True  # the official img2img passes negative_prompt="" except for FLUX
    load_kwargs: dict = field(default_factory=dict)  # extra from_pretrained arguments (e.g. variant)
    call_kwargs: dict = field(default_factory=dict)  # extra pipeline arguments (e.g. max_sequence_length)
    tiny: str | None = None  # the tiny_pipelines architecture of the same layout


REGISTRY: dict[str, Generator] = {}


def register(generator: Generator) -> Generator:
    """Add (or replace) a generator under its name."""
    REGISTRY[generator.name] = generator
    return generator


# Settings of the official CoHP (hpsv3==1.0.0, hpsv3/cohp/utils_cohp/pipelines.py).
register(
    Generator(
        "flux",
        "black-forest-labs/FLUX.1-dev",
        "FluxPipeline",
        "FluxImg2ImgPipeline",
        steps=28,
        guidance=3.5,
        negative_prompt=False,
        call_kwargs={"max_sequence_length": 512},
        tiny="flux",
    )
)
register(
    Generator(
        "kolors",
        "Kwai-Kolors/Kolors-diffusers",
        "KolorsPipeline",
        "KolorsImg2ImgPipeline",
        steps=50,
        guidance=5.0,
        load_kwargs={"variant": "fp16"},
        tiny="kolors",
    )
)
register(
    Generator(
        "sd3",
        "stabilityai/stable-diffusion-3-medium-diffusers",
        "StableDiffusion3Pipeline",
        "StableDiffusion3Img2ImgPipeline",
        steps=28,
        guidance=7.0,
        tiny="sd3",
    )
)
register(
    Generator(
        "playground",
        "playgroundai/playground-v2.5-1024px-aesthetic",
        "StableDiffusionXLPipeline",
        "StableDiffusionXLImg2ImgPipeline",
        steps=50,  # the official run uses the pipeline defaults
        guidance=5.0,
        load_kwargs={"variant": "fp16"},
        tiny="sdxl",
    )
)

DEFAULT_MODELS = ("flux", "kolors", "sd3", "playground")
TINY_SIZE, TINY_STEPS = 64, 4


def resolve(names: list[str], tiny: bool = False) -> list[Generator]:
    """The registered generators called `names`, with the tiny stand-ins' sampling settings when `tiny`
    (their weights come from `tiny_weights`). Raises ValueError naming an unknown generator."""
    unknown = [name for name in names if name not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown generator {', '.join(map(repr, unknown))}: choose from {', '.join(REGISTRY)}")
    generators = [REGISTRY[name] for name in names]
    if not tiny:
        return generators
    missing = [g.name for g in generators if g.tiny is None]
    if missing:
        raise ValueError(f"no tiny stand-in for {', '.join(map(repr, missing))} (set `tiny=` in its registry entry)")
    return [replace(g, steps=TINY_STEPS, size=TINY_SIZE, load_kwargs={}) for g in generators]


def tiny_weights(generators: list[Generator], root: Path, seed: int = 0) -> list[Generator]:
    """The generators loading their tiny random-weight pipelines from `root` (built there on first use)."""
    from .tiny_pipelines import build

    return [replace(g, source=str(build(g.tiny, root, seed))) for g in generators]


def check_strengths(generators: list[Generator], strengths: tuple[float, ...]) -> None:
    """Raise ValueError when a round would run no denoising step (img2img runs int(steps × strength))."""
    for generator in generators:
        for strength in strengths:
            if int(generator.steps * strength) < 1:
                raise ValueError(
                    f"strength {strength:g} gives no img2img step with {generator.name!r} ({generator.steps} steps): "
                    f"use a strength of at least {1 / generator.steps:.3g}"
                )


def dtype_for(device: str) -> torch.dtype:
    """bfloat16 on CUDA (as the official img2img), float32 on CPU."""
    import torch

    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def load(generator: Generator, kind: str, device: str):
    """The `kind` ("text2image" or "image2image") pipeline of `generator` on `device`, progress bars off."""
    import diffusers

    cls = getattr(diffusers, getattr(generator, kind))
    pipeline = cls.from_pretrained(generator.source, dtype=dtype_for(device), **generator.load_kwargs)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)


def release_memory() -> None:
    """Return the memory of pipelines the caller has just dropped (`del pipeline` first)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def sample(
    pipeline: object,
    generator: Generator,
    prompt: str,
    seed: int,
    image: Image.Image | None = None,
    strength: float | None = None,
) -> Image.Image:
    """One image from seed `seed` (a CPU torch.Generator, so the same on any device); img2img when `image`."""
    import torch

    kwargs = dict(generator.call_kwargs)
    kwargs.update(num_inference_steps=generator.steps, guidance_scale=generator.guidance)
    accepted = inspect.signature(pipeline.__call__).parameters
    for name, value in (("height", generator.size), ("width", generator.size)):
        if name in accepted:
            kwargs[name] = value
    if image is not None:
        kwargs.update(image=image, strength=strength)
        if generator.negative_prompt:
            kwargs["negative_prompt"] = ""
    output = pipeline(prompt=prompt, generator=torch.Generator("cpu").manual_seed(seed), **kwargs)
    return output.images[0]
