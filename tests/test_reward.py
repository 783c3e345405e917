"""`HPSv3Reward`, the RL trainer's reward callable, against the served tiny model: official scores, sigma, penalised
rewards, per-item failures, threads, asyncio, buffer reuse, failover, no torch import, and the README example."""

from __future__ import annotations

import asyncio
import math
import re
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hpsv3_client import HPSv3Reward, RewardError
from hpsv3_repository.launcher import TritonServer, free_port

from .conftest import IMAGES

TOLERANCE = 1e-5
README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture(scope="module")
def golden_batch(golden: dict) -> tuple[list[np.ndarray], list[str], np.ndarray, np.ndarray]:
    """The golden images as uint8 arrays, their prompts, the official mu and sigma."""
    items = golden["items"]
    images = [np.asarray(Image.open(IMAGES / item["image"]).convert("RGB")) for item in items]
    mu = np.array([item["mu"] for item in items])
    sigma = np.exp([item["log_sigma"] for item in items])
    return images, [item["prompt"] for item in items], mu, sigma


@pytest.fixture(scope="module")
def reward(tiny_server: TritonServer):
    with HPSv3Reward(tiny_server.grpc_url) as shared:
        yield shared


def test_scores_are_the_official_mu_and_info_carries_sigma(reward: HPSv3Reward, golden_batch) -> None:
    images, prompts, mu, sigma = golden_batch
    scores, info = reward(images, prompts)
    assert scores.dtype == np.float32 and scores.shape == (len(images),)
    np.testing.assert_allclose(scores, mu, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(info["sigma"], sigma, atol=TOLERANCE, rtol=1e-6)
    assert info["errors"] == [None] * len(images) and info["failed"] == []


def test_an_uncertainty_penalised_reward(tiny_server: TritonServer, golden_batch) -> None:
    images, prompts, mu, sigma = golden_batch
    with HPSv3Reward(tiny_server.grpc_url, sigma_penalty=0.5) as penalised:
        scores, info = penalised(images, prompts)
    np.testing.assert_allclose(scores, mu - 0.5 * sigma, atol=2 * TOLERANCE, rtol=0)
    np.testing.assert_allclose(info["mu"], mu, atol=TOLERANCE, rtol=0)


def _with_bad_items(images: list[np.ndarray]) -> list:
    return [images[0], np.full((64, 64, 3), np.nan, np.float32), images[1], np.zeros((5, 5, 2), np.uint8)]


def test_failed_items_raise_with_every_result_kept(reward: HPSv3Reward, golden_batch) -> None:
    images = golden_batch[0]
    with pytest.raises(RewardError, match=r"2 of 4 images could not be scored .*pass failed_score=") as failed:
        reward(_with_bad_items(images), "a fox")
    scores, info = failed.value.scores, failed.value.info
    assert info["failed"] == [1, 3] and np.isnan(scores[[1, 3]]).all() and np.isfinite(scores[[0, 2]]).all()
    assert info["errors"][1].startswith("images[1] <ndarray float32 64x64x3>: holds NaN")
    assert info["errors"][3].startswith("images[3] <ndarray uint8 5x5x2>: no channel axis")


def test_failed_score_scores_failures_and_keeps_going(tiny_server: TritonServer, golden_batch) -> None:
    images, _, _, _ = golden_batch
    with HPSv3Reward(tiny_server.grpc_url, failed_score=-10.0) as tolerant:
        scores, info = tolerant(_with_bad_items(images), "a fox")
        again, _ = tolerant(images[:2], "a fox")
    assert scores[1] == scores[3] == -10.0 and info["failed"] == [1, 3]
    np.testing.assert_allclose(scores[[0, 2]], again, atol=TOLERANCE, rtol=0)


def test_a_trainers_float_batch_and_its_reused_buffer(reward: HPSv3Reward, golden_batch) -> None:
    """torch [B, 3, H, W] in [0, 1] as a VAE decodes it; the trainer overwrites the buffer as soon as submit returns."""
    images, prompts, mu, _ = golden_batch
    batch = torch.stack([torch.from_numpy(images[0].copy()).permute(2, 0, 1).float() / 255] * 3)
    future = reward.submit(batch, prompts[0])
    batch.zero_()
    scores, _ = future.result()
    np.testing.assert_allclose(scores, [mu[0]] * 3, atol=TOLERANCE, rtol=0)


def test_calls_from_many_threads_and_from_asyncio(reward: HPSv3Reward, golden_batch) -> None:
    images, prompts, mu, _ = golden_batch
    order = [np.roll(np.arange(len(images)), shift) for shift in range(6)]
    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(lambda o: reward([images[i] for i in o], [prompts[i] for i in o]), order))
    for indices, (scores, _) in zip(order, outcomes, strict=True):
        np.testing.assert_allclose(scores, mu[indices], atol=TOLERANCE, rtol=0)

    async def two_at_once() -> list:
        return await asyncio.gather(reward.acall(images, prompts), reward.acall(images[:1], prompts[0]))

    (first, _), (second, _) = asyncio.run(two_at_once())
    np.testing.assert_allclose(first, mu, atol=TOLERANCE, rtol=0)
    assert second[0] == pytest.approx(first[0], abs=TOLERANCE)


def test_failover_past_a_dead_endpoint(tiny_server: TritonServer, golden_batch) -> None:
    images, prompts, mu, _ = golden_batch
    with HPSv3Reward(f"127.0.0.1:{free_port()},{tiny_server.grpc_url}", backoff_s=0.05) as pool:
        scores, _ = pool(images, prompts)
        health = {endpoint["url"]: endpoint for endpoint in pool.client.health()}
    np.testing.assert_allclose(scores, mu, atol=TOLERANCE, rtol=0)
    assert health[tiny_server.grpc_url]["served"] >= len(images)


def test_prompt_count_must_match(reward: HPSv3Reward, golden_batch) -> None:
    images = golden_batch[0]
    with pytest.raises(ValueError, match="2 images but 3 prompts"):
        reward(images[:2], ["a", "b", "c"])


def test_the_reward_process_never_imports_torch(tiny_server: TritonServer) -> None:
    """A trainer process with accelerate/DeepSpeed owns torch and CUDA: the reward must not need them."""
    script = f"""
        import sys, numpy as np
        from hpsv3_client import HPSv3Reward
        with HPSv3Reward({tiny_server.grpc_url!r}) as reward:
            scores, info = reward(np.random.default_rng(0).random((2, 300, 400, 3)), "a fox")
        assert np.isfinite(scores).all(), scores
        print(sorted(name for name in ("torch", "transformers", "onnxruntime") if name in sys.modules))
    """
    command = [sys.executable, "-c", textwrap.dedent(script)]
    output = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert output.returncode == 0, output.stderr
    assert output.stdout.strip() == "[]"


def test_the_readme_rl_example_runs(tiny_server: TritonServer, scorer) -> None:
    section = README.read_text(encoding="utf-8").split("## Use as the reward in an RL trainer", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code.replace("127.0.0.1:8001", tiny_server.grpc_url), "README.md", "exec"), namespace)
    scores, info = namespace["scores"], namespace["info"]
    images = namespace["images"]
    reference = scorer.score(images, namespace["prompts"])
    assert len(scores) == len(images) and all(math.isfinite(s) for s in scores)
    np.testing.assert_allclose(scores, [r.mu for r in reference], atol=TOLERANCE, rtol=0)
    assert "sigma" in info
