"""Image loading and preprocessing: sizes from the contract, every input kind, clear errors."""

from __future__ import annotations

import base64
import http.server
import io
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpsv3_serve.errors import ImageDecodeError, ImageNotFoundError, ImageSizeError
from hpsv3_serve.inputs import (
    IMAGE_FORMATS,
    IMAGE_SUFFIXES,
    MAX_PATCHES,
    MAX_RATIO,
    MIN_PATCHES,
    PATCH_DIM,
    PATCH_SIZE,
    PIXELS,
    load_image,
    prepare_image,
    smart_resize,
)
from hpsv3_serve.limits import InputLimits

from .conftest import IMAGES


@pytest.mark.parametrize(
    ("size", "resized"),
    [
        ((512, 512), (448, 448)),
        ((1080, 1920), (336, 588)),
        ((200, 200), (448, 448)),  # upscaled to the fixed pixel budget
        ((900, 300), (756, 252)),
        ((2100, 2100), (448, 448)),
        ((28, 5000), (56, 5992)),  # min side upscaled past the budget: official behaviour
    ],
)
def test_smart_resize_matches_contract(size: tuple[int, int], resized: tuple[int, int]) -> None:
    assert smart_resize(*size) == resized
    height, width = resized
    assert height % 28 == 0 and width % 28 == 0


def test_smart_resize_keeps_pixel_budget_close() -> None:
    for height, width in [(512, 768), (1024, 1024), (333, 777), (1920, 1080), (64, 4096)]:
        new_h, new_w = smart_resize(height, width)
        assert 0.9 * PIXELS <= new_h * new_w <= PIXELS


def test_prepare_shapes_for_1920x1080() -> None:
    prepared = prepare_image(IMAGES / "wide_1920x1080.jpg")
    assert prepared.grid_thw == (1, 24, 42)
    assert prepared.pixel_values.shape == (24 * 42, PATCH_DIM)
    assert prepared.pixel_values.dtype == np.float32
    assert prepared.num_tokens == 24 * 42 // 4


def test_rgba_alpha_is_dropped_not_composited() -> None:
    rgba = Image.open(IMAGES / "rgba_640x480.png")
    assert rgba.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(load_image(rgba)), np.asarray(rgba.convert("RGB")))


def test_path_bytes_pil_and_data_url_agree() -> None:
    path = IMAGES / "small_200.png"
    data = path.read_bytes()
    data_url = "data:image/png;base64," + base64.b64encode(data).decode()
    reference = prepare_image(path).pixel_values
    for source in (str(path), data, Image.open(path), data_url, f"file://{path}"):
        np.testing.assert_array_equal(prepare_image(source).pixel_values, reference)


@pytest.fixture()
def http_images() -> str:
    """A real HTTP server on loopback serving the fixture images."""
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(IMAGES))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_url(http_images: str) -> None:
    fetched = prepare_image(f"{http_images}/gray_300.png").pixel_values
    np.testing.assert_array_equal(fetched, prepare_image(IMAGES / "gray_300.png").pixel_values)
    with pytest.raises(ImageNotFoundError, match=r"missing\.png"):
        prepare_image(f"{http_images}/missing.png")
    with pytest.raises(ImageNotFoundError, match="disabled"):
        prepare_image(f"{http_images}/gray_300.png", InputLimits(allow_urls=False))
    with pytest.raises(ImageSizeError, match=r"over the limit of 1000 \(raise it with --max-image-bytes\)"):
        prepare_image(f"{http_images}/photo_800x600.jpg", InputLimits(max_image_bytes=1000))


def test_errors_name_the_input(tmp_path: Path) -> None:
    with pytest.raises(ImageNotFoundError, match=r"nope\.png: no such file"):
        prepare_image(tmp_path / "nope.png")
    text = tmp_path / "notes.png"
    text.write_text("this is not a picture")
    with pytest.raises(ImageDecodeError, match=r"notes\.png: not a recognised image"):
        prepare_image(text)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes((IMAGES / "photo_800x600.jpg").read_bytes()[:2000])
    with pytest.raises(ImageDecodeError, match=r"truncated\.jpg"):
        prepare_image(truncated)
    with pytest.raises(ImageDecodeError, match="<0 bytes>"):
        prepare_image(b"")
    with pytest.raises(ImageDecodeError, match="base64"):
        prepare_image("data:image/png;base64,@@@not-base64@@@")


def test_extreme_aspect_ratio_is_rejected() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (4020, 20), "white").save(buffer, "PNG")
    with pytest.raises(ImageSizeError, match="aspect ratio must be smaller than 200"):
        prepare_image(buffer.getvalue())


def _patches(height: int, width: int) -> int:
    new_h, new_w = smart_resize(height, width)
    return (new_h // PATCH_SIZE) * (new_w // PATCH_SIZE)


def test_patch_count_range_is_attained_and_never_left() -> None:
    """The TensorRT profile range: both ends are reached, and a sweep of sizes (every aspect ratio the
    official limit allows, tiny to 20k px) stays inside it."""
    assert _patches(65, 4160) == MIN_PATCHES and _patches(1, 200) == MAX_PATCHES
    assert _patches(448, 448) == PIXELS // PATCH_SIZE**2 == 1024
    rng = np.random.default_rng(0)
    widths = rng.integers(1, 20_000, 40_000)
    heights = np.maximum(1, np.ceil(widths / MAX_RATIO * rng.uniform(1, MAX_RATIO, widths.size))).astype(int)
    counts = {_patches(int(h), int(w)) for h, w in zip(heights, widths, strict=True) if w / h <= MAX_RATIO}
    counts |= {_patches(k * k * m, 256 * m) for k in range(2, 17) for m in range(1, 40)}  # a or b exactly whole
    assert min(counts) >= MIN_PATCHES and max(counts) <= MAX_PATCHES


def test_every_image_suffix_names_a_format_the_decoder_accepts() -> None:
    Image.init()
    formats = {suffix: Image.registered_extensions().get(suffix) for suffix in IMAGE_SUFFIXES}
    assert all(format in IMAGE_FORMATS for format in formats.values()), formats
    assert set(IMAGE_FORMATS) <= set(formats.values())  # and every accepted format has a name
