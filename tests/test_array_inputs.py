"""Images held in memory (numpy arrays, torch tensors) on every route: the pixel rules, the in-process scorer, the
client's patches route to `hpsv3_patches`, and direct calls to that ensemble; all against the official golden."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from PIL import Image
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from hpsv3_client import HPSv3Client
from hpsv3_repository.launcher import TritonServer
from hpsv3_serve import Scorer
from hpsv3_serve.errors import ImageDecodeError, ImageSizeError
from hpsv3_serve.inputs import prepare_image
from hpsv3_serve.limits import InputLimits
from hpsv3_serve.pixels import array_pixels, image_items

from .conftest import IMAGES
from .test_hostile_inputs import LEAKS

TOLERANCE = 1e-5


def _decoded(name: str) -> np.ndarray:
    """The fixture's pixels as the file route decodes them: uint8 [H, W, 3]."""
    return np.asarray(Image.open(IMAGES / name).convert("RGB"))


RGB = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)

LAYOUTS = {  # name: (array or tensor, the uint8 [H, W, 3] it stands for)
    "numpy-hwc-uint8": (RGB, RGB),
    "numpy-chw-uint8": (np.ascontiguousarray(RGB.transpose(2, 0, 1)), RGB),
    "numpy-float32": (RGB.astype(np.float32) / 255, RGB),
    "numpy-float64": (RGB / 255.0, RGB),
    "numpy-float16": ((RGB / 255.0).astype(np.float16), RGB),
    "numpy-rgba": (np.concatenate([RGB, np.zeros((5, 7, 1), np.uint8)], axis=2), RGB),
    "numpy-grey-2d": (RGB[:, :, 0], np.repeat(RGB[:, :, :1], 3, axis=2)),
    "numpy-grey-1ch": (RGB[:, :, :1], np.repeat(RGB[:, :, :1], 3, axis=2)),
    "numpy-clamped": (np.full((2, 2, 3), 1.7, np.float32) * [[[1, -1, 2]]], np.array([[[255, 0, 255]] * 2] * 2)),
    "torch-chw-uint8": (torch.from_numpy(RGB).permute(2, 0, 1), RGB),
    "torch-hwc-uint8": (torch.from_numpy(RGB), RGB),
    "torch-float32": (torch.from_numpy(RGB).permute(2, 0, 1).float() / 255, RGB),
    "torch-bfloat16-exact-levels": (torch.tensor([0.0, 0.5, 1.0]).view(3, 1, 1).expand(3, 2, 2).bfloat16(), None),
    "torch-non-contiguous": (torch.from_numpy(RGB).permute(2, 0, 1)[:, ::2, 1:], None),
}


@pytest.mark.parametrize("name", LAYOUTS)
def test_arrays_become_the_pixels_they_stand_for(name: str) -> None:
    value, expected = LAYOUTS[name]
    pixels = array_pixels(value)
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3 and pixels.flags.c_contiguous
    if name == "torch-bfloat16-exact-levels":
        expected = np.broadcast_to(np.array([0, 128, 255], np.uint8), (2, 2, 3))  # round(0.5 * 255) = 128
    if name == "torch-non-contiguous":
        expected = RGB[::2, 1:]
    np.testing.assert_array_equal(pixels, expected)


def test_floats_round_half_to_even_as_torch_does() -> None:
    levels = np.array([0.5, 1.5, 2.5, 254.5], np.float64) / 255
    as_numpy = array_pixels(np.broadcast_to(levels[:, None, None], (4, 1, 3)))[:, 0, 0]
    as_torch = array_pixels(torch.from_numpy(levels).view(1, 4, 1).expand(3, 4, 1))[:, 0, 0]
    reference = (torch.from_numpy(levels).float() * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    np.testing.assert_array_equal(as_numpy, reference)
    np.testing.assert_array_equal(as_torch, reference)


BAD = {  # name: (value, error class, fragment of the message)
    "nan": (np.full((4, 4, 3), np.nan, np.float32), ImageDecodeError, "NaN or infinite"),
    "inf-tensor": (torch.full((3, 4, 4), float("inf")), ImageDecodeError, "NaN or infinite"),
    "int64": (np.zeros((4, 4, 3), np.int64), ImageDecodeError, "dtype int64 is not an image"),
    "bool-tensor": (torch.zeros(3, 4, 4, dtype=torch.bool), ImageDecodeError, "dtype torch.bool is not an image"),
    "five-axes": (np.zeros((1, 1, 4, 4, 3), np.uint8), ImageDecodeError, "2 or 3 axes"),
    "one-axis": (np.zeros(12, np.uint8), ImageDecodeError, "2 or 3 axes"),
    "two-channels": (np.zeros((5, 5, 2), np.uint8), ImageDecodeError, "no channel axis of size 1, 3 or 4"),
    "empty": (np.zeros((0, 4, 3), np.uint8), ImageDecodeError, "holds no pixels"),
    "empty-tensor": (torch.zeros(3, 0, 0), ImageDecodeError, "holds no pixels"),
    "over-the-pixel-limit": (np.zeros((101, 100, 3), np.uint8), ImageSizeError, "over the limit of 10000"),
}


@pytest.mark.parametrize("name", BAD)
def test_a_bad_array_is_refused_with_its_name(name: str) -> None:
    value, error, fragment = BAD[name]
    with pytest.raises(error) as refused:
        array_pixels(value, InputLimits(max_image_pixels=10_000))
    assert str(refused.value).startswith(f"<{type(value).__name__} ") and fragment in str(refused.value)


def test_a_stacked_batch_is_a_list_of_images() -> None:
    batch = torch.zeros(5, 3, 8, 8)
    assert len(image_items(batch)) == 5 and len(image_items(np.zeros((2, 8, 8, 3), np.uint8))) == 2
    assert len(image_items(np.zeros((8, 8, 3), np.uint8))) == 1 and len(image_items(["a.png", b"x"])) == 2


def _golden_arrays(golden: dict) -> tuple[list, list[str], list[float]]:
    """Each golden image in a different in-memory form, its prompt and the official mu."""
    forms = [
        lambda a: a,  # numpy HWC uint8
        lambda a: torch.from_numpy(a.copy()).permute(2, 0, 1),  # torch CHW uint8
        lambda a: torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 255,  # flow_grpo's float batch
        lambda a: a.astype(np.float64) / 255,
        lambda a: Image.fromarray(a),
    ]
    items = golden["items"]
    images = [forms[index % len(forms)](_decoded(item["image"])) for index, item in enumerate(items)]
    return images, [item["prompt"] for item in items], [item["mu"] for item in items]


def test_in_process_arrays_score_as_the_official_file(scorer: Scorer, golden: dict) -> None:
    images, prompts, official = _golden_arrays(golden)
    for result, mu in zip(scorer.score(images, prompts), official, strict=True):
        assert result.ok, result.error
        assert abs(result.mu - mu) <= TOLERANCE


def test_served_arrays_score_as_the_official_file(tiny_server: TritonServer, golden: dict) -> None:
    images, prompts, official = _golden_arrays(golden)
    for result, mu in zip(HPSv3Client(tiny_server.grpc_url).score(images, prompts), official, strict=True):
        assert result.ok, result.error
        assert abs(result.mu - mu) <= TOLERANCE


def test_a_stacked_float_batch_with_a_bad_neighbour(tiny_server: TritonServer, scorer: Scorer) -> None:
    """A [B, 3, H, W] float batch as a trainer's decoder returns it; the NaN image fails alone, on both routes."""
    image = torch.from_numpy(_decoded("square_512.png").copy()).permute(2, 0, 1).float() / 255
    batch = torch.stack([image, image.flip(2), image * float("nan"), 1 - image])
    prompts = ["a fox", "a fox", "a fox", "a negative fox"]
    local = scorer.score(batch, prompts)
    served = HPSv3Client(tiny_server.grpc_url).score(batch, prompts)
    for route in (local, served):
        assert [result.ok for result in route] == [True, True, False, True]
        assert route[2].error.startswith("<Tensor float32 3x512x512>: holds NaN"), route[2].error
    for remote, reference in zip(served, local, strict=True):
        if remote.ok:
            assert abs(remote.mu - reference.mu) <= TOLERANCE and abs(remote.sigma - reference.sigma) <= TOLERANCE


def test_mixed_files_and_arrays_in_one_call(tiny_server: TritonServer, scorer: Scorer) -> None:
    array = _decoded("photo_800x600.jpg")
    small = (IMAGES / "small_200.png").read_bytes()
    images = [IMAGES / "photo_800x600.jpg", array, np.zeros((5, 5, 2), np.uint8), small]
    served = HPSv3Client(tiny_server.grpc_url).score(images, "a lighthouse")
    assert [result.ok for result in served] == [True, True, False, True]
    assert abs(served[0].mu - served[1].mu) <= TOLERANCE, "a file and its decoded pixels score the same"
    assert "no channel axis" in served[2].error and served[2].image == "<ndarray uint8 5x5x2>"
    (small,) = scorer.score([IMAGES / "small_200.png"], "a lighthouse")
    assert abs(served[3].mu - small.mu) <= TOLERANCE


def _patches_call(client: grpcclient.InferenceServerClient, patches: np.ndarray, grid: np.ndarray) -> float:
    tensors = {"PATCHES": patches, "GRID_THW": grid, "PROMPT": np.array([[b"a lighthouse"]], np.object_)}
    inputs = []
    for name, value in tensors.items():
        tensor = grpcclient.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    return float(client.infer("hpsv3_patches", inputs).as_numpy("MU").ravel()[0])


PREPARED = prepare_image(IMAGES / "photo_800x600.jpg")
VALID = (PREPARED.patches[None], np.array([PREPARED.grid_thw], np.int64))
HOSTILE = {  # name: (patches, grid, fragment of the INVALID_ARGUMENT message)
    "grid-larger-than-patches": (VALID[0], VALID[1] + [0, 2, 0], "patches for an image grid of"),
    "grid-smaller-than-patches": (VALID[0], VALID[1] - [0, 2, 0], "patches for an image grid of"),
    "grid-odd": (VALID[0], VALID[1] + [0, 1, 0], "GRID_THW: "),
    "grid-of-a-video": (VALID[0], VALID[1] + [1, 0, 0], "GRID_THW: "),
    "grid-zero": (VALID[0], VALID[1] * 0, "GRID_THW: "),
    "grid-negative": (VALID[0], -VALID[1], "GRID_THW: "),
    "grid-huge": (VALID[0], VALID[1] * [1, 10**9, 10**9], "GRID_THW: "),
    "too-few-patches": (VALID[0][:, :8], np.array([[1, 2, 4]]), "8 patches; preprocess makes"),
    "two-images-in-one-request": (np.concatenate(VALID[:1] * 2), np.concatenate(VALID[1:] * 2), "batch size"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_the_patches_entry_refuses_what_prepare_image_would_not_make(tiny_server: TritonServer, name: str) -> None:
    patches, grid, fragment = HOSTILE[name]
    with grpcclient.InferenceServerClient(tiny_server.grpc_url) as client:
        normal = _patches_call(client, *VALID)
        with pytest.raises(InferenceServerException) as refused:
            _patches_call(client, patches, grid)
        message = refused.value.message()
        assert fragment in message and refused.value.status() == "StatusCode.INVALID_ARGUMENT", message
        assert not any(leak in message for leak in LEAKS), message
        assert _patches_call(client, *VALID) == normal, f"the server answers normally after {name}"
