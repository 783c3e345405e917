"""Image loading and preprocessing: the one source of truth (numpy + PIL, no torchvision).

Mirrors the official pipeline byte for byte: `PIL.Image.open(...).convert("RGB")` (alpha is
dropped, not composited), qwen-vl-utils' `smart_resize` at min = max = 200704 pixels, PIL BICUBIC,
then Qwen2-VL's image processor (rescale 1/255 in float64 → float32, CLIP mean/std, frame repeated
to temporal_patch_size 2, 14×14 patches in 2×2 merge order).
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ImageDecodeError, ImageNotFoundError, ImageSizeError
from .limits import DEFAULT_LIMITS, InputLimits
from .pixels import array_pixels, describe_array, is_array

FACTOR = 28
PIXELS = 256 * FACTOR * FACTOR  # 200704: the official min_pixels = max_pixels
MAX_RATIO = 200
PATCH_SIZE = 14
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
PATCH_DIM = 3 * TEMPORAL_PATCH_SIZE * PATCH_SIZE * PATCH_SIZE  # 1176
PATCH_BYTES = 3 * PATCH_SIZE * PATCH_SIZE  # 588: one uint8 frame of a patch, what travels between steps
# Every size smart_resize accepts becomes 508..1816 patches (127..454 merged image tokens). When it rescales,
# the sides in 28-px units are floor (or ceil) of a and b with a·b = 256 and a ≥ √(256/200): floor(a)·floor(b)
# ≥ 1·127 (a just under 2, or exactly 2 computed as 1.99…, e.g. 65×4160), ceil(a)·ceil(b) ≤ 2·227 at the
# aspect-ratio limit (e.g. 1×200); an image already on the budget keeps 1024. TensorRT profiles use this range.
MIN_PATCHES = 4 * 127
MAX_PATCHES = 4 * 454
# What the server decodes: the formats generators and cameras write. PIL would also try EPS (which runs Ghostscript
# when installed), PSD, FITS, WMF and two dozen more on any bytes it is given; those are refused without a decoder.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "AVIF", "GIF", "BMP", "TIFF", "JPEG2000", "PPM", "TGA", "ICO")
# File names taken for images where a folder is listed (benchmarks, demo examples, calibration): one of these formats.
IMAGE_SUFFIXES = (
    ".jpg", ".jpeg", ".png", ".webp", ".avif", ".gif", ".bmp", ".tif", ".tiff", ".jp2", ".j2k", ".ppm", ".tga", ".ico",
)  # fmt: skip
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)

ImageInput = str | os.PathLike | bytes | Image.Image | np.ndarray  # and torch tensors (`pixels.py`)


@dataclass(frozen=True)
class PreparedImage:
    """Model-ready pixels of one image: uint8 patches (what travels), normalised on demand."""

    patches: np.ndarray  # uint8 [grid_h * grid_w, 588]: `patch_pixels`
    grid_thw: tuple[int, int, int]  # (1, grid_h, grid_w) in 14-pixel patches

    @property
    def pixel_values(self) -> np.ndarray:
        """float32 [grid_h * grid_w, 1176]: the Qwen2-VL processor's `pixel_values`, bit for bit."""
        return normalise_patches(self.patches)

    @property
    def num_tokens(self) -> int:
        """Image tokens in the language sequence (patches merged 2×2)."""
        _, grid_h, grid_w = self.grid_thw
        return grid_h * grid_w // (MERGE_SIZE * MERGE_SIZE)


def describe(image: object) -> str:
    """A short, human-readable, UTF-8-safe name for an image input (or anything passed as one), for messages."""
    if isinstance(image, Image.Image):
        return f"<PIL image {image.width}x{image.height} {image.mode}>"
    if isinstance(image, (bytes, bytearray)):
        return f"<{len(image)} bytes>"
    if is_array(image):
        return describe_array(image)
    if not isinstance(image, (str, os.PathLike)):
        return f"<{type(image).__name__}>"
    text = os.fspath(image)
    text = text if isinstance(text, str) else os.fsdecode(text)
    text = text if len(text) <= 120 or not text.startswith("data:") else text[:60] + "…"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _too_big(name: str, size: int, limits: InputLimits) -> ImageSizeError:
    return ImageSizeError(
        name, f"{size} bytes is over the limit of {limits.max_image_bytes} (raise it with --max-image-bytes)"
    )


def _fetch(url: str, name: str, limits: InputLimits) -> bytes:
    """An http(s) image, at most max_image_bytes of it, within the timeout."""
    if not limits.allow_urls:
        raise ImageNotFoundError(name, "image URLs are disabled here; send the image bytes instead")
    try:
        with urllib.request.urlopen(url, timeout=limits.url_timeout_s) as response:
            data = response.read(limits.max_image_bytes + 1)
    except (OSError, ValueError) as exc:
        raise ImageNotFoundError(name, f"could not fetch the URL ({exc})") from exc
    if len(data) > limits.max_image_bytes:
        raise _too_big(name, len(data), limits)
    return data


def read_image_bytes(image: str | os.PathLike | bytes, limits: InputLimits = DEFAULT_LIMITS) -> bytes:
    """The encoded file bytes of a path, `file://`, http(s) or `data:` URL (bytes pass through), within
    `limits.max_image_bytes`."""
    name = describe(image)
    if isinstance(image, (bytes, bytearray)):
        if len(image) > limits.max_image_bytes:
            raise _too_big(name, len(image), limits)
        return bytes(image)
    text = os.fspath(image)
    if text.startswith(("http://", "https://")):
        return _fetch(text, name, limits)
    if text.startswith("data:"):
        header, sep, payload = text.partition(",")
        if not sep or not header.endswith(";base64"):
            raise ImageDecodeError(name, "a data: URL must look like data:image/png;base64,<data>")
        if len(payload) * 3 // 4 > limits.max_image_bytes:
            raise _too_big(name, len(payload) * 3 // 4, limits)
        try:
            return base64.b64decode(payload, validate=True)
        except binascii.Error as exc:
            raise ImageDecodeError(name, f"invalid base64 in data: URL ({exc})") from exc
    path = Path(text[7:] if text.startswith("file://") else text)
    if not path.is_file():
        raise ImageNotFoundError(name, "no such file" if not path.exists() else "not a regular file")
    try:
        if path.stat().st_size > limits.max_image_bytes:
            raise _too_big(name, path.stat().st_size, limits)
        return path.read_bytes()
    except OSError as exc:
        raise ImageNotFoundError(name, f"cannot read the file ({exc})") from exc


def _check_pixels(image: Image.Image, name: str, limits: InputLimits) -> None:
    """Refuse an image whose header promises more pixels than the limit, before decoding it."""
    if image.width * image.height > limits.max_image_pixels:
        raise ImageSizeError(
            name,
            f"{image.width}x{image.height} is {image.width * image.height} pixels, over the limit of "
            f"{limits.max_image_pixels} (raise it with --max-image-pixels)",
        )


def check_header_pixels(data: bytes, name: str, limits: InputLimits = DEFAULT_LIMITS) -> None:
    """Refuse encoded bytes whose header promises more pixels than `limits` allow, without decoding (a client's
    check before sending); bytes that are no image header are left to the decoder that receives them."""
    try:
        opened = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageSizeError(name, f"{exc} (raise the limit with --max-image-pixels)") from exc
    except Exception:  # not an image header we read: the server's preprocess gives the reason
        return
    _check_pixels(opened, name, limits)


def load_image(image: ImageInput, limits: InputLimits = DEFAULT_LIMITS) -> Image.Image:
    """Open a path, bytes, PIL image, http(s) URL, `data:` URL, numpy array or torch tensor (`pixels.py`) and return
    it decoded as RGB (as the official code: `convert("RGB")`; animated images give their first frame). Whatever
    decoding untrusted bytes raises becomes an `InputError` naming the input: one bad image never ends a run."""
    return open_image(image, limits, convert_rgb=True)


def open_image(image: ImageInput, limits: InputLimits = DEFAULT_LIMITS, convert_rgb: bool = False) -> Image.Image:
    """`load_image` without the RGB conversion unless asked: decoded in its own mode (P, RGBA, L, CMYK, ...), for
    models whose official preprocessing resizes first and converts later (arrays always come as RGB)."""
    name = describe(image)
    if is_array(image):
        return Image.fromarray(array_pixels(image, limits), "RGB")
    if not isinstance(image, (str, os.PathLike, bytes, bytearray, Image.Image)):
        raise ImageDecodeError(name, "an image must be a path, URL, bytes, a PIL image or an array")
    try:
        if isinstance(image, Image.Image):
            opened = image
        else:
            opened = Image.open(io.BytesIO(read_image_bytes(image, limits)), formats=IMAGE_FORMATS)
            _check_pixels(opened, name, limits)
        opened.load()
        return opened.convert("RGB") if convert_rgb else opened
    except (ImageNotFoundError, ImageDecodeError, ImageSizeError):
        raise
    except Image.DecompressionBombError as exc:
        raise ImageSizeError(name, f"{exc} (raise the limit with --max-image-pixels)") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(
            name, f"not a recognised image format (corrupt file or not an image; accepted: {', '.join(IMAGE_FORMATS)})"
        ) from exc
    except Exception as exc:  # PIL's decoders raise OSError, SyntaxError, ValueError, struct.error, IndexError, ...
        raise ImageDecodeError(name, f"could not decode the image ({type(exc).__name__}: {exc})") from exc


def smart_resize(height: int, width: int, factor: int = FACTOR, pixels: int = PIXELS) -> tuple[int, int]:
    """qwen-vl-utils' smart_resize with min_pixels = max_pixels = `pixels`: (new_height, new_width)."""
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(
            f"absolute aspect ratio must be smaller than {MAX_RATIO}, got {max(height, width) / min(height, width)}"
        )
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > pixels:
        beta = math.sqrt((height * width) / pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < pixels:
        beta = math.sqrt(pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def resize(image: Image.Image, name: str = "image") -> Image.Image:
    """Resize an RGB image to its smart_resize size with PIL BICUBIC."""
    try:
        height, width = smart_resize(image.height, image.width)
    except ValueError as exc:
        raise ImageSizeError(name, f"{image.width}x{image.height}: {exc}") from exc
    return image.resize((width, height), Image.BICUBIC)


def _normalisation_table() -> np.ndarray:
    """float32 [3, 256]: each (channel, grey level) rescaled in float64 → float32, then (x − mean) / std in
    float32, exactly as Qwen2-VL's processor computes it pixel by pixel."""
    levels = (np.arange(256, dtype=np.float64) * (1 / 255)).astype(np.float32)
    mean, std = np.array(IMAGE_MEAN, np.float32)[:, None], np.array(IMAGE_STD, np.float32)[:, None]
    return (levels[None, :] - mean) / std


NORMALISED = _normalisation_table()


def patch_pixels(image: Image.Image) -> np.ndarray:
    """uint8 [h·w, 3·14·14]: a resized RGB image's pixels in patch order (2×2 merge blocks, then channel,
    14×14). One eighth of the float32 patches' bytes: what the server passes between processes."""
    grid_h, grid_w = image.height // PATCH_SIZE, image.width // PATCH_SIZE
    pixels = np.asarray(image, dtype=np.uint8).reshape(
        grid_h // MERGE_SIZE, MERGE_SIZE, PATCH_SIZE, grid_w // MERGE_SIZE, MERGE_SIZE, PATCH_SIZE, 3
    )
    ordered = pixels.transpose(0, 3, 1, 4, 6, 2, 5)  # h-block, w-block, h-merge, w-merge, channel, row, column
    return ordered.reshape(grid_h * grid_w, PATCH_BYTES)


def image_from_patches(patches: np.ndarray, grid_thw: tuple[int, int, int]) -> Image.Image:
    """The resized RGB image back from its `patch_pixels` (the exact inverse), for engines that take images."""
    _, grid_h, grid_w = grid_thw
    blocks = patches.reshape(
        grid_h // MERGE_SIZE, grid_w // MERGE_SIZE, MERGE_SIZE, MERGE_SIZE, 3, PATCH_SIZE, PATCH_SIZE
    )
    pixels = blocks.transpose(0, 2, 5, 1, 3, 6, 4)  # back to rows (h-block, h-merge, row), columns, channel
    return Image.fromarray(np.ascontiguousarray(pixels.reshape(grid_h * PATCH_SIZE, grid_w * PATCH_SIZE, 3)), "RGB")


def normalise_patches(patches: np.ndarray) -> np.ndarray:
    """float32 [n, 1176] model input from `patch_pixels`: looked up in `NORMALISED` (the processor's exact
    values), the one frame repeated to temporal_patch_size."""
    count = patches.shape[0]
    lookup = patches.reshape(count, 3, -1) + np.arange(0, 3 * 256, 256, dtype=np.int32)[:, None]
    values = np.take(NORMALISED.ravel(), lookup)  # [patches, channel, 14·14]
    frames = np.empty((count, 3, TEMPORAL_PATCH_SIZE, PATCH_SIZE * PATCH_SIZE), np.float32)
    frames[:, :, :] = values[:, :, None]
    return frames.reshape(count, PATCH_DIM)


def grid_of(image: Image.Image) -> tuple[int, int, int]:
    """(1, grid_h, grid_w) of a resized image, in 14-pixel patches."""
    return (1, image.height // PATCH_SIZE, image.width // PATCH_SIZE)


def patchify(image: Image.Image) -> PreparedImage:
    """Rescale, normalise and cut a resized RGB image into Qwen2-VL patches (bit-identical to the processor)."""
    return PreparedImage(patches=patch_pixels(image), grid_thw=grid_of(image))


def vision_position_ids(grid_thw: tuple[int, int, int]) -> np.ndarray:
    """Rotary (row, column) ids per patch, in 2×2 merge-block order: int64 [h·w, 2] (host-side, for export)."""
    _, grid_h, grid_w = grid_thw
    rows, cols = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")
    block = (grid_h // MERGE_SIZE, MERGE_SIZE, grid_w // MERGE_SIZE, MERGE_SIZE)
    rows = rows.reshape(block).transpose(0, 2, 1, 3).ravel()
    cols = cols.reshape(block).transpose(0, 2, 1, 3).ravel()
    return np.stack([rows, cols], axis=-1).astype(np.int64)


def prepare_image(image: ImageInput, limits: InputLimits = DEFAULT_LIMITS) -> PreparedImage:
    """Load, resize and patchify one image; errors name the input."""
    return patchify(resize(load_image(image, limits), describe(image)))
