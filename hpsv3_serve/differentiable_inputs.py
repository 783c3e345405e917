"""Differentiable image preprocessing in torch: the official `preprocess_tensor` at the inference budget.

float [3, H, W] in [0, 1] → ×255 (the official takes 0..255 floats; no rounding) → bilinear
`F.interpolate(align_corners=False)`, no antialias, to the `inputs.smart_resize` size (min = max = 200704
pixels, the PIL path's grid) → ×1/255 → CLIP mean/std → the frame repeated to temporal_patch_size → 14×14
patches in 2×2 merge order: the layout of `inputs.normalise_patches`, so the same token ids apply.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from .errors import ImageSizeError, InputError
from .inputs import IMAGE_MEAN, IMAGE_STD, MERGE_SIZE, PATCH_DIM, PATCH_SIZE, TEMPORAL_PATCH_SIZE, smart_resize

GREY_LEVELS = 255  # the official processor receives 0..255 floats and rescales them by 1/255


def unbatch(pixels: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """[B, 3, H, W] or a list of [3, H, W] → a list of images; errors name the input (`pixels` or `pixels[i]`)."""
    if isinstance(pixels, torch.Tensor):
        if pixels.ndim != 4:
            hint = " (one image: pixels[None])" if pixels.ndim == 3 else ""
            raise InputError("pixels", f"expected a tensor [B, 3, H, W]{hint}, got shape {list(pixels.shape)}")
        images = list(pixels.unbind(0))
    elif isinstance(pixels, (list, tuple)):
        images = list(pixels)
    else:
        raise InputError(
            "pixels", f"expected a tensor [B, 3, H, W] or a list of [3, H, W], got {type(pixels).__name__}"
        )
    if not images:
        raise InputError("pixels", "an empty batch: pass at least one image")
    for index, image in enumerate(images):
        check_image(image, f"pixels[{index}]")
    check_range(images)
    return images


def check_image(image: object, name: str) -> None:
    """Type, shape, dtype and aspect ratio of one image (no device sync)."""
    if not isinstance(image, torch.Tensor):
        raise InputError(name, f"expected a torch tensor [3, H, W], got {type(image).__name__}")
    if image.ndim != 3 or image.shape[0] != 3:
        raise InputError(
            name, f"expected [3, H, W] (RGB, channels first), got shape {list(image.shape)}; from [H, W, 3] use "
            ".permute(2, 0, 1)"
        )  # fmt: skip
    if not image.is_floating_point():
        raise InputError(
            name, f"expected floats in [0, 1], got {image.dtype}; for uint8 pixels pass pixels.float() / 255"
        )
    height, width = image.shape[1:]
    if height == 0 or width == 0:
        raise ImageSizeError(name, f"{width}x{height}: the image is empty")
    try:
        smart_resize(height, width)
    except ValueError as exc:
        raise ImageSizeError(name, f"{width}x{height}: {exc}") from exc


def check_range(images: list[torch.Tensor]) -> None:
    """Refuse values outside [0, 1] or NaN (one device sync for the batch): clamping here would silently zero
    the gradient of those pixels, so the caller decides (e.g. `.clamp(0, 1)` as diffusers' decoders do)."""
    with torch.no_grad():
        flags = [(~((image >= 0) & (image <= 1))).any().to(images[0].device) for image in images]
        bad = torch.stack(flags).tolist()
    if any(bad):
        index = bad.index(True)
        image = images[index].detach()
        raise InputError(
            f"pixels[{index}]",
            f"values must lie in [0, 1], got min {image.min().item():.4g}, max {image.max().item():.4g} "
            f"(NaN: {bool(image.isnan().any())}); clamp first, e.g. pixels.clamp(0, 1)",
        )


def resized(image: torch.Tensor) -> torch.Tensor:
    """One checked image at its smart_resize size, normalised as the official processor does, in float32 (float64
    stays float64): [3, h, w]."""
    image = image.to(torch.promote_types(image.dtype, torch.float32))
    height, width = smart_resize(*image.shape[1:])
    scaled = F.interpolate((image * GREY_LEVELS)[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    mean = torch.tensor(IMAGE_MEAN, dtype=image.dtype, device=image.device).view(3, 1, 1)
    std = torch.tensor(IMAGE_STD, dtype=image.dtype, device=image.device).view(3, 1, 1)
    return (scaled * (1 / GREY_LEVELS) - mean) / std


def patches(image: torch.Tensor) -> torch.Tensor:
    """[3, h, w] → pixel_values [h·w/196, 1176]: 2×2 merge blocks, then channel, frame (repeated), row, column."""
    grid_h, grid_w = image.shape[1] // PATCH_SIZE, image.shape[2] // PATCH_SIZE
    blocks = image.view(3, grid_h // MERGE_SIZE, MERGE_SIZE, PATCH_SIZE, grid_w // MERGE_SIZE, MERGE_SIZE, PATCH_SIZE)
    ordered = blocks.permute(1, 4, 2, 5, 0, 3, 6).unsqueeze(5)  # h-block, w-block, h-merge, w-merge, channel, frame
    frames = ordered.expand(*ordered.shape[:5], TEMPORAL_PATCH_SIZE, PATCH_SIZE, PATCH_SIZE)
    return frames.reshape(grid_h * grid_w, PATCH_DIM)


def pixel_values(images: list[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, int, int]]]:
    """Checked images (`unbatch`) → (pixel_values [Σ h·w, 1176], differentiable with respect to the images;
    grid_thw (1, h, w) of each image in 14-pixel patches)."""
    scaled = [resized(image) for image in images]
    grids = [(1, image.shape[1] // PATCH_SIZE, image.shape[2] // PATCH_SIZE) for image in scaled]
    return torch.cat([patches(image) for image in scaled]), grids
