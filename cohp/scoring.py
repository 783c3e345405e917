"""Scoring against the endpoint while generation goes on: the #3 client on an event loop of its own thread."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future

from PIL import Image

from hpsv3_client import HPSv3Client
from hpsv3_serve.judges.base import JudgeResult
from hpsv3_serve.results import ScoreResult


class ScoreError(RuntimeError):
    """The endpoint could not score a generated image (its message names the image and the reason)."""


class BackgroundScorer:
    """`submit(image, prompt)` returns at once with a Future of the score (HPSv3: mu; another served judge: its
    score); requests run on a background loop."""

    def __init__(self, url: str, model: str = "hpsv3", timeout_s: float = 120.0, **tls: object) -> None:
        self.model = model
        self.client = HPSv3Client(url, model=model, timeout_s=timeout_s, **tls)  # tls: hpsv3_serve.client_tls
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cohp-scoring", daemon=True)
        self._thread.start()

    def check(self, timeout_s: float = 10.0) -> None:
        """Raise ServerUnavailableError / ModelNotReadyError (clear messages) unless the endpoint serves."""
        asyncio.run_coroutine_threadsafe(self.client.wait_ready(timeout_s), self._loop).result()

    def submit(self, image: Image.Image, prompt: str, name: str) -> Future[float]:
        """Score `image` (its pixels, patched by the client for HPSv3); the Future gives the score or raises ScoreError
        naming `name`."""
        return asyncio.run_coroutine_threadsafe(self._score(image, prompt, name), self._loop)

    async def _score(self, image: Image.Image, prompt: str, name: str) -> float:
        result: ScoreResult | JudgeResult = (await self.client.score_async([image], prompt))[0]
        if result.error:
            raise ScoreError(f"{name}: the endpoint did not score it: {result.error}")
        return float(result.score)

    def close(self, timeout_s: float = 10.0) -> None:
        """Cancel what is still in flight, close the channel and stop the loop thread (also after Ctrl-C)."""

        async def shutdown() -> None:
            current = asyncio.current_task()
            pending = [task for task in asyncio.all_tasks() if task is not current]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await self.client.close()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout_s)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout_s)

    def __enter__(self) -> BackgroundScorer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
