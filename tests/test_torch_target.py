"""The GPU target on the fast torch engine (`build.py --target gpu --engine torch`), rendered and served by the real
tritonserver on CPU: the same Python model with `device` cpu (KIND_CPU, fp32), scores equal to the official golden
file through both public ensembles."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from hpsv3_client import HPSv3Client
from hpsv3_repository.build import RepositoryError, main, render, settings_for_checkpoint
from hpsv3_repository.launcher import TritonServer

from .conftest import IMAGES, _running


def _settings(tiny: Path, checkpoint: Path, **overrides):
    return settings_for_checkpoint(checkpoint, tiny / "base", device="cpu", torch_dtype="float32", **overrides)


@pytest.fixture(scope="module")
def torch_server(tiny: Path, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    repository = render("gpu", _settings(tiny, tiny_checkpoint), tmp_path_factory.mktemp("torch") / "repo", "torch")
    yield from _running(repository, tmp_path_factory.mktemp("torch-triton"))


def test_the_torch_render_has_two_steps_on_the_gpu(tiny: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "repo"
    assert main(["--target", "gpu", "--engine", "torch", "--checkpoint", str(tiny_checkpoint),
                 "--base", str(tiny / "base"), "--out", str(out)]) == 0  # fmt: skip
    assert sorted(path.name for path in out.iterdir()) == [
        "hpsv3", "hpsv3_patches", "preprocess", "preprocess_patches", "reward_model"
    ]  # fmt: skip
    config = (out / "reward_model" / "config.pbtxt").read_text()
    assert "kind: KIND_GPU" in config and '"bfloat16"' in config and "allow_ragged_batch" in config
    assert "dynamic_batching" in config and str(tiny_checkpoint.resolve()) in config
    with pytest.raises(RepositoryError, match="--checkpoint"):
        render("gpu", _settings(tiny, tmp_path / "missing.safetensors"), tmp_path / "none", "torch")
    with pytest.raises(RepositoryError, match="runs onnx"):
        render("cpu", _settings(tiny, tiny_checkpoint), tmp_path / "none", "torch")


def test_served_torch_engine_reproduces_the_golden_file(torch_server: TritonServer, golden: dict) -> None:
    """Files go to `hpsv3` (preprocess decodes them), PIL images to `hpsv3_patches`: both give the official
    scores, with four requests in flight (the dynamic batcher may put them in one batch)."""
    items = golden["items"] * 2
    files = [IMAGES / item["image"] for item in items]
    pixels = [Image.open(path) for path in files]
    prompts = [item["prompt"] for item in items]
    client = HPSv3Client(torch_server.grpc_url, concurrency=4)
    for results in (client.score(files, prompts), client.score(pixels, prompts)):
        for result, item in zip(results, items, strict=True):
            assert result.ok, result.error
            assert abs(result.mu - item["mu"]) <= 1e-5 and abs(result.log_sigma - item["log_sigma"]) <= 1e-5


def test_a_bad_request_fails_alone(torch_server: TritonServer, golden: dict) -> None:
    item = golden["items"][0]
    results = HPSv3Client(torch_server.grpc_url).score([b"not an image", IMAGES / item["image"]], item["prompt"])
    assert not results[0].ok and abs(results[1].mu - item["mu"]) <= 1e-5
