"""Images an RL loop holds: numpy arrays and torch tensors, turned into the uint8 RGB pixels a file would decode to.

Rules (one place, used by the in-process scorer and the client alike):

- dtype: uint8 as it is; float (16, 32, 64, bfloat16) in [0, 1] becomes `round(x * 255)` clamped to 0..255 (round
  half to even, as `torch.round`: flow_grpo's `(images * 255).round().clamp(0, 255).to(torch.uint8)`); NaN or
  infinity is an error; any other dtype is an error (scale it to uint8 or [0, 1] float yourself).
- layout: numpy arrays are read HWC and torch tensors CHW, each falling back to the other when the channel axis does
  not fit; channels 3 (RGB), 4 (RGBA: alpha dropped, as the official `convert("RGB")` drops it) or 1 / no channel
  axis (grey, repeated to RGB, as PIL converts "L").
- batches: a 4-D array or tensor is a batch along its first axis; a 2-D or 3-D one is one image.

The pixels then take the file route's resize and patching, so an array scores exactly as a lossless file of the
same pixels. torch is never imported here: tensors are recognised by their type and converted with their own methods
on their own device (a CUDA batch is converted there and copied to the host as uint8).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import ImageDecodeError, ImageSizeError
from .limits import DEFAULT_LIMITS, InputLimits

CHANNELS = (1, 3, 4)
FLOAT_RULE = "floats in [0, 1] become round(x * 255), clamped to 0..255"


def is_tensor(value: object) -> bool:
    """A torch tensor (recognised without importing torch)."""
    return type(value).__module__.split(".")[0] == "torch" and hasattr(value, "detach")


def is_array(value: object) -> bool:
    """A numpy array or a torch tensor: an image held in memory."""
    return isinstance(value, np.ndarray) or is_tensor(value)


def describe_array(value: Any) -> str:
    """`<ndarray uint8 512x512x3>`, `<Tensor float32 3x512x512 cuda:0>`: a name for messages."""
    shape = "x".join(str(size) for size in value.shape) or "scalar"
    dtype = str(value.dtype).removeprefix("torch.")
    device = f" {value.device}" if is_tensor(value) and str(value.device) != "cpu" else ""
    return f"<{type(value).__name__} {dtype} {shape}{device}>"


def image_items(images: object) -> list:
    """The images of a call as a list: a 4-D array or tensor is a batch, a 2-D or 3-D one a single image; any other
    sequence is a list of images (each may be an array, a path, bytes or a PIL image)."""
    if is_array(images):
        return list(images) if images.ndim == 4 else [images]
    if isinstance(images, (str, bytes, bytearray)) or not isinstance(images, Sequence):
        return [images]
    return list(images)


def _uint8(value: Any, name: str) -> np.ndarray:
    """The value's numbers as a numpy uint8 array (same shape), by the dtype rule."""
    if is_tensor(value):
        torch = sys.modules["torch"]
        tensor = value.detach()
        if tensor.is_floating_point():
            if not bool(torch.isfinite(tensor).all()):
                raise ImageDecodeError(name, "holds NaN or infinite values")
            tensor = tensor.float().mul(255).round_().clamp_(0, 255).to(torch.uint8)
        elif tensor.dtype != torch.uint8:
            raise ImageDecodeError(name, f"dtype {tensor.dtype} is not an image: use uint8 (0..255) or {FLOAT_RULE}")
        return tensor.cpu().numpy()
    if np.issubdtype(value.dtype, np.floating):
        if not np.isfinite(value).all():
            raise ImageDecodeError(name, "holds NaN or infinite values")
        return np.clip(np.rint(value.astype(np.float32) * 255), 0, 255).astype(np.uint8)
    if value.dtype != np.uint8:
        raise ImageDecodeError(name, f"dtype {value.dtype} is not an image: use uint8 (0..255) or {FLOAT_RULE}")
    return value


def _channels_last(array: np.ndarray, channels_first: bool, name: str) -> np.ndarray:
    """[H, W, C] from [H, W], [H, W, C] or [C, H, W], preferring the given layout when both fit."""
    if array.ndim == 2:
        return array[:, :, None]
    if array.ndim != 3:
        raise ImageDecodeError(name, "an image array has 2 or 3 axes ([H, W, C] or [C, H, W]); a batch has 4")
    first, last = array.shape[0] in CHANNELS, array.shape[-1] in CHANNELS
    if first and (channels_first or not last):
        return np.moveaxis(array, 0, -1)
    if last:
        return array
    raise ImageDecodeError(name, f"no channel axis of size 1, 3 or 4 in shape {list(array.shape)}")


def array_pixels(value: Any, limits: InputLimits = DEFAULT_LIMITS) -> np.ndarray:
    """uint8 [H, W, 3] RGB pixels of a numpy array or torch tensor (the rules above); errors name the array."""
    name = describe_array(value)
    if 0 in value.shape:
        raise ImageDecodeError(name, "holds no pixels")
    pixels = _channels_last(_uint8(value, name), is_tensor(value), name)
    height, width, channels = pixels.shape
    if height * width > limits.max_image_pixels:
        raise ImageSizeError(
            name,
            f"{width}x{height} is {width * height} pixels, over the limit of {limits.max_image_pixels} "
            "(raise it with --max-image-pixels)",
        )
    if channels == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, :3])
