"""The asyncio load generator: closed-loop workers, each with one request in flight through `HPSv3Client`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from hpsv3_serve.inputs import ImageInput


async def drive(
    url: str,
    images: Sequence[ImageInput],
    prompts: Sequence[str],
    concurrency: int,
    timeout_s: float = 120,
    model: str = "hpsv3",
) -> tuple[float, list[float], list[str]]:
    """Send every pair as its own request, `concurrency` in flight; (wall s, latencies s, errors)."""
    from hpsv3_client import HPSv3Client

    async with HPSv3Client(url, model=model, concurrency=concurrency, timeout_s=timeout_s) as client:
        await client.wait_ready(timeout_s=60)
        queue = list(zip(images, prompts, strict=True))[::-1]
        latencies: list[float] = []
        errors: list[str] = []

        async def worker() -> None:
            while queue:
                image, prompt = queue.pop()
                started = time.perf_counter()
                (result,) = await client.score_async([image], [prompt])
                latencies.append(time.perf_counter() - started)
                if result.error:
                    errors.append(result.error)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, latencies, errors
