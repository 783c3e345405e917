"""HPSv3Client against the real tritonserver serving the toy `hpsv3` (MU = image bytes, SIGMA = prompt bytes + 1)."""

from __future__ import annotations

import asyncio
import base64
import functools
import http.server
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpsv3_client import HPSv3Client, ModelNotReadyError, ServerUnavailableError
from hpsv3_client.hpsv3_client import image_inputs
from hpsv3_repository.launcher import TritonServer, free_port
from hpsv3_serve.inputs import prepare_image
from hpsv3_serve.limits import InputLimits

from .conftest import IMAGES, TOY_REPOSITORY


@pytest.fixture(scope="module")
def image_site() -> Iterator[str]:
    """http://127.0.0.1:PORT serving the fixture images."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(IMAGES))
    handler.log_message = lambda *args: None
    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{site.server_address[1]}"
    site.shutdown()
    site.server_close()
    thread.join(timeout=5)


def _expected(image: bytes | Image.Image, prompt: str) -> tuple[float, float]:
    """The toy models' answer: files by their byte count, pixels (the hpsv3_patches route) by their patches."""
    sigma = float(len(prompt.encode("utf-8")) + 1)
    if isinstance(image, bytes):
        return float(len(image)), sigma
    prepared = prepare_image(image)
    _, height, width = prepared.grid_thw
    return float(int(prepared.patches.astype(np.int64).sum()) % 1000 + height * width), sigma


def test_scores_every_kind_of_input_in_order(toy_server: TritonServer, image_site: str) -> None:
    png, jpg = IMAGES / "small_200.png", IMAGES / "photo_800x600.jpg"
    pil = Image.open(IMAGES / "palette_400.png")
    data_url = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
    images = [str(png), jpg, jpg.read_bytes(), pil, data_url, f"{image_site}/gray_300.png"]
    prompts = ["a", "ä photo", "", "猫 and 犬", "x" * 50, "last"]
    sent = [png.read_bytes(), jpg.read_bytes(), jpg.read_bytes(), pil, png.read_bytes()]
    sent.append((IMAGES / "gray_300.png").read_bytes())

    results = HPSv3Client(toy_server.grpc_url, concurrency=3).score(images, prompts, progress=True)

    assert [r.error for r in results] == [None] * len(images)
    for result, data, prompt in zip(results, sent, prompts, strict=True):
        assert (result.mu, result.sigma) == _expected(data, prompt)
        assert result.log_sigma == pytest.approx(math.log(result.sigma))
        assert result.prompt == prompt
    assert results[0].image == str(png) and results[2].image == f"<{len(sent[2])} bytes>"
    assert results[3].image == "<PIL image 400x400 P>"


def test_pixels_go_as_the_patches_the_server_would_make_of_the_file() -> None:
    """PIL images (any mode), numpy arrays and torch tensors go as PATCHES + GRID_THW: exactly what the server's
    preprocess makes of a lossless file of the same pixels; files go as they are."""
    import torch

    for name in ("palette_400.png", "rgba_640x480.png", "gray_300.png", "cmyk_500x375.jpg"):
        image = Image.open(IMAGES / name)
        image.load()
        rgb = np.asarray(image.convert("RGB"))
        expected = prepare_image(IMAGES / name)
        for pixels in (image, rgb, torch.from_numpy(rgb).permute(2, 0, 1), torch.from_numpy(rgb) / 255):
            is_pixels, inputs = image_inputs(pixels)
            assert is_pixels and [tensor.name() for tensor in inputs] == ["PATCHES", "GRID_THW"]
            assert inputs[0].shape() == [1, *expected.patches.shape]
    is_pixels, inputs = image_inputs(IMAGES / "small_200.png")
    assert not is_pixels and [tensor.name() for tensor in inputs] == ["IMAGE"]


def test_a_bad_item_fails_only_itself(toy_server: TritonServer) -> None:
    client = HPSv3Client(toy_server.grpc_url)
    results = client.score([b"good", b"BAD image", b"fine!"], "p")
    assert [r.ok for r in results] == [True, False, True]
    assert "bad image" in results[1].error and results[1].mu is None and results[1].sigma is None
    assert (results[0].mu, results[2].mu) == (4.0, 5.0)
    assert client.score([b"after"], "p")[0].mu == 5.0  # the next request is served normally


def test_unreadable_items_fail_client_side(toy_server: TritonServer, tmp_path: Path) -> None:
    missing = tmp_path / "missing.png"
    results = HPSv3Client(toy_server.grpc_url).score(
        [missing, "data:image/png,notbase64", b"ok", 42, tmp_path], ["p", "p", "p", "p", "p"]
    )
    assert [r.ok for r in results] == [False, False, True, False, False]
    assert results[0].error == f"{missing}: no such file"
    assert "data: URL" in results[1].error
    assert results[3].error == "<int>: an image must be a path, URL, bytes, a PIL image or an array"
    assert results[4].error == f"{tmp_path}: not a regular file"


def test_prompt_errors_are_per_item(toy_server: TritonServer) -> None:
    results = HPSv3Client(toy_server.grpc_url).score([b"a", b"b", b"c"], ["ok", "\ud800", 7])
    assert [r.ok for r in results] == [True, False, False]
    assert "UTF-8" in results[1].error and "must be text" in results[2].error


def test_prompt_count_must_match() -> None:
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        HPSv3Client().score([b"a", b"b"], ["one"])


def test_unreachable_server_is_a_quick_clear_error() -> None:
    url = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ServerUnavailableError, match=rf"no Triton server answers at {url}.*hpsv3 serve"):
        HPSv3Client(url, retries=2, backoff_s=0.05).score([b"a"], "p")
    assert time.monotonic() - started < 10


def test_unknown_model_is_a_clear_error(toy_server: TritonServer) -> None:
    with pytest.raises(ModelNotReadyError, match=r"'nope' is not ready.*check the model name"):
        HPSv3Client(toy_server.grpc_url, model="nope").score([b"a"], "p")


def test_async_api_with_many_requests_in_flight(toy_server: TritonServer) -> None:
    images = [b"x" * n for n in range(1, 41)]

    async def main() -> list:
        async with HPSv3Client(toy_server.grpc_url, concurrency=8) as client:
            await client.wait_ready(timeout_s=10)
            first = await client.score_async(images, "pr")
            second = await client.score_async(images[:3], ["a", "bb", "ccc"])
            return first + second

    results = asyncio.run(main())
    assert [r.mu for r in results] == [float(n) for n in range(1, 41)] + [1.0, 2.0, 3.0]
    assert [r.sigma for r in results] == [3.0] * 40 + [2.0, 3.0, 4.0]


def test_score_works_inside_a_running_loop(toy_server: TritonServer) -> None:
    async def main() -> list:
        return HPSv3Client(toy_server.grpc_url).score([b"abc"], "p")  # e.g. from a notebook cell

    assert asyncio.run(main())[0].mu == 3.0


def _toy(port: int, workdir: Path) -> TritonServer:
    server = TritonServer(TOY_REPOSITORY, grpc_port=port, http_port=None, metrics_port=None, workdir=workdir)
    server.start(timeout_s=120)
    return server


def test_several_endpoints_share_the_load_and_lose_nothing_when_one_dies(toy_server: TritonServer, tmp_path: Path):
    """Two real servers: requests spread over both; one is killed mid-stream and every request is still
    answered (by the other); restarted on its port, a health probe brings it back into rotation."""
    port = free_port()
    second = _toy(port, tmp_path / "second")
    client = HPSv3Client(f"{toy_server.grpc_url}, {second.grpc_url}", concurrency=6, backoff_s=0.05, timeout_s=10)
    assert client.url == f"{toy_server.grpc_url},{second.grpc_url}"
    images = [b"x" * (1 + i) for i in range(300)]

    async def stream() -> list:
        """One stream of requests; the second server is killed once 30 answers are in."""

        async def kill() -> None:
            while sum(row["served"] for row in client.health()) < 30:
                await asyncio.sleep(0.01)
            await asyncio.to_thread(second.stop)

        killer = asyncio.ensure_future(kill())
        results = await client.score_async(images, "p")
        await killer
        return results

    results = asyncio.run(stream())
    assert [r.error for r in results] == [None] * len(images), "nothing lost when one endpoint died"
    assert [r.mu for r in results] == [float(len(image)) for image in images]
    health = {row["url"]: row for row in client.health()}
    assert health[toy_server.grpc_url]["served"] > health[second.grpc_url]["served"] > 0
    assert not health[second.grpc_url]["healthy"] and health[second.grpc_url]["reason"]

    revived = _toy(port, tmp_path / "revived")
    try:

        async def until_back() -> int:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not client.health()[1]["healthy"]:
                await client.score_async([b"y"] * 4, "p")
                await asyncio.sleep(0.1)
            served = client.health()[1]["served"]
            await client.score_async([b"z"] * 12, "p")
            return client.health()[1]["served"] - served

        assert asyncio.run(until_back()) > 0, "the restarted endpoint takes requests again"
    finally:
        revived.stop()


def test_limits_are_checked_before_sending(toy_server: TritonServer, tmp_path: Path) -> None:
    """The --endpoint route honours the same input limits as in-process scoring (hpsv3_serve.limits)."""
    Image.new("RGB", (300, 300)).save(tmp_path / "big.png")
    client = HPSv3Client(toy_server.grpc_url, limits=InputLimits(max_image_bytes=100, max_prompt_bytes=8))
    results = client.score([tmp_path / "big.png", b"fine"], ["p", "far too long"])
    assert [r.ok for r in results] == [False, False]
    assert "over the limit of 100" in results[0].error and "--max-prompt-bytes" in results[1].error
    results = HPSv3Client(toy_server.grpc_url, limits=InputLimits(max_image_pixels=200 * 200)).score(
        [tmp_path / "big.png"], "p"
    )
    assert "--max-image-pixels" in results[0].error  # read from the header, nothing decoded or sent
    assert client.score([b"fine"], "p")[0].ok
