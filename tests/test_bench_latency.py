"""benchmarks/latency.py without a server: the default load is decodable images of typical generator sizes."""

from __future__ import annotations

import io

from PIL import Image

from hpsv3_benchmarks.latency import SYNTHETIC_SIZES, load_images


def test_default_images_are_seeded_pngs_of_typical_sizes() -> None:
    images = load_images([])
    assert [Image.open(io.BytesIO(data)).size for data in images.values()] == list(SYNTHETIC_SIZES)
    assert load_images([]) == images, "the same bytes every run: comparable sweeps"
    assert min(len(data) for data in images.values()) > 100_000, "noise keeps them from compressing to nothing"
