"""`HPSv3Reward`: a served HPSv3 as the reward function of an RL trainer (flow_grpo, DanceGRPO, DiffusionNFT, ...).

    reward = HPSv3Reward("gpu-a:8001,gpu-b:8001", sigma_penalty=0.0)
    scores, info = reward(images, prompts)            # blocking: numpy float32 [B], info["sigma"], info["mu"]
    future = reward.submit(images, prompts)           # non-blocking: a concurrent.futures.Future of the same
    scores, info = await reward.acall(images, prompts)  # from asyncio code

`images` is what a trainer holds: a stacked batch (torch [B, 3, H, W] float in [0, 1] or uint8, numpy
[B, H, W, 3] uint8, ...) or a list of arrays, tensors, PIL images or paths (`hpsv3_serve.pixels` has the rules).
Arrays and tensors are copied to host uint8 in the calling thread before the call returns a future, so the trainer
may reuse or free its buffers at once; everything else (resize, patching, gRPC) runs on the reward's own event-loop
thread. One loop and one set of channels serve every call, from any thread: the object is thread-safe, keeps its
connections between steps, and never touches CUDA or imports torch (a CUDA tensor is converted by its own methods).
Like any gRPC client it does not survive `fork`: make it in the process that calls it (not before forking
DataLoader workers that would use it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Sequence

import numpy as np

from hpsv3_serve.errors import HPSv3Error, InputError
from hpsv3_serve.pixels import array_pixels, describe_array, image_items, is_array

from .hpsv3_client import DEFAULT_URL, HPSv3Client

SCORE_DTYPE = np.float32


class RewardError(HPSv3Error):
    """Some items of a reward call failed and no `failed_score` was given. Nothing is lost: `scores` (NaN where an
    item failed) and `info` (`errors`, `failed`, `mu`, `sigma`) hold every item's outcome."""

    code = "reward_failed"

    def __init__(self, message: str, scores: np.ndarray, info: dict) -> None:
        super().__init__(message)
        self.scores, self.info = scores, info


def _snapshot(image: object, index: int) -> object:
    """An array or tensor as host uint8 pixels now (the caller may overwrite its buffer next); other inputs as they
    are. A bad array becomes an `InputError` that names it, to be reported for this item alone."""
    if not is_array(image):
        return image
    try:
        return array_pixels(image)
    except InputError as exc:
        return InputError(f"images[{index}] {describe_array(image)}", exc.reason)


class HPSv3Reward:
    """`reward(images, prompts) -> (scores, info)` against one or more HPSv3 endpoints (failover as `HPSv3Client`).

    - `scores`: numpy float32 [B]: mu, or `mu - sigma_penalty * sigma` (an uncertainty-penalised reward).
    - `info`: `mu` and `sigma` (float32 [B]), `errors` (per item: None or the reason), `failed` (indices).
    - A failed item never sinks the others: with `failed_score` set, it gets that score and is listed in `info`;
      without it (the default), the call raises `RewardError`, which carries every item's scores and errors.
    - `client_options` go to `HPSv3Client` (model, concurrency, timeout_s, retries, TLS, headers). With `model=`
      another judge served by `hpsv3 serve --models` ("pickscore", ...), `scores` and `info["mu"]` hold its SCORE
      and `info["sigma"]` is NaN (no `sigma_penalty`: only HPSv3 has a sigma).
    """

    def __init__(
        self,
        url: str | Sequence[str] = DEFAULT_URL,
        *,
        sigma_penalty: float = 0.0,
        failed_score: float | None = None,
        **client_options: object,
    ) -> None:
        self.client = HPSv3Client(url, **client_options)
        self.sigma_penalty = float(sigma_penalty)
        if self.sigma_penalty and self.client.model != "hpsv3":
            raise ValueError(f"sigma_penalty needs HPSv3's sigma; model {self.client.model!r} gives a score only")
        self.failed_score = failed_score
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        """The reward's event loop, started in a daemon thread on first use."""
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, name="hpsv3-reward", daemon=True)
                self._thread.start()
            return self._loop

    def submit(
        self, images: object, prompts: str | Sequence[str], metadata: object = None
    ) -> concurrent.futures.Future:
        """Start scoring and return at once: a Future of `(scores, info)`. `metadata` is accepted for the
        `fn(images, prompts, metadata)` signature of flow_grpo's reward functions and not used."""
        items = [_snapshot(image, index) for index, image in enumerate(image_items(images))]
        texts = [prompts] * len(items) if isinstance(prompts, str) else list(prompts)
        if len(texts) != len(items):
            raise ValueError(f"{len(items)} images but {len(texts)} prompts: pass one prompt per image")
        return asyncio.run_coroutine_threadsafe(self._score(items, texts), self._running_loop())

    def __call__(
        self, images: object, prompts: str | Sequence[str], metadata: object = None
    ) -> tuple[np.ndarray, dict]:
        """Blocking reward: `(scores, info)`; raises `RewardError` when items failed and `failed_score` is None."""
        return self.submit(images, prompts, metadata).result()

    async def acall(
        self, images: object, prompts: str | Sequence[str], metadata: object = None
    ) -> tuple[np.ndarray, dict]:
        """The reward from asyncio code (any event loop): awaits the reward's own loop without blocking yours."""
        return await asyncio.wrap_future(self.submit(images, prompts, metadata))

    async def _score(self, items: list[object], prompts: list[str]) -> tuple[np.ndarray, dict]:
        errors: list[str | None] = [str(item) if isinstance(item, InputError) else None for item in items]
        good = [index for index, error in enumerate(errors) if error is None]
        results = await self.client.score_async([items[index] for index in good], [prompts[index] for index in good])
        mu = np.full(len(items), np.nan, SCORE_DTYPE)
        sigma = np.full(len(items), np.nan, SCORE_DTYPE)
        for index, result in zip(good, results, strict=True):
            if result.ok:
                mu[index] = result.score  # mu for HPSv3; another served judge's SCORE (model=...), without sigma
                sigma[index] = np.nan if result.sigma is None else result.sigma
            else:
                errors[index] = f"images[{index}]: {result.error}"
        scores = mu - SCORE_DTYPE(self.sigma_penalty) * sigma if self.sigma_penalty else mu.copy()
        failed = [index for index, error in enumerate(errors) if error is not None]
        info = {"mu": mu, "sigma": sigma, "errors": errors, "failed": failed}
        if failed and self.failed_score is None:
            raise RewardError(
                f"{len(failed)} of {len(items)} images could not be scored (first: {errors[failed[0]]}); the others "
                "are in this error's .scores and .info; pass failed_score= to score failures instead of raising",
                scores,
                info,
            )
        if failed:
            scores[failed] = self.failed_score
        return scores, info

    def close(self) -> None:
        """Close the channels and stop the reward's thread (a later call starts them again)."""
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None:
            return
        asyncio.run_coroutine_threadsafe(self.client.close(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    def __enter__(self) -> HPSv3Reward:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
