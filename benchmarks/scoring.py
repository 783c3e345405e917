"""Score a data set's (image, prompt) items on the endpoint, through the cache: each distinct (image file
content, prompt) is scored once, ever; missing files and failed items are set aside and reported."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tqdm import tqdm

from hpsv3_serve.client_tls import tls_options

from .cache import PROBE_PROMPT, Key, ScoreCache, probe_image
from .formats import ImageRef

if TYPE_CHECKING:
    from hpsv3_client import HPSv3Client

Item = tuple[ImageRef, str]  # (image, prompt)
FIRST = 5  # how many missing files / errors a report lists by name


class ScoringError(Exception):
    """The endpoint cannot be used for the benchmark; the message says why."""


@dataclass(frozen=True)
class Endpoint:
    """Where and how to score: gRPC address, model name, requests in flight, seconds per request."""

    url: str
    model: str = "hpsv3"
    concurrency: int = 16
    timeout_s: float = 120.0
    tls: dict = field(default_factory=dict)  # HPSv3Client's TLS keywords (hpsv3_serve.client_tls)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Endpoint:
        """From the common flags: --endpoint, --model, --concurrency, --timeout, --tls-*."""
        return cls(args.endpoint, args.model, args.concurrency, args.timeout, tls_options(args))


@dataclass
class Scores:
    """mu of each scored item, and the items without one (image file missing, or the request failed)."""

    mu: dict[Item, float] = field(default_factory=dict)
    missing: list[ImageRef] = field(default_factory=list)
    failed: dict[Item, str] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)

    def problem(self, image: ImageRef, prompt: str) -> str | None:
        """ "missing" or "failed" when the item has no score, else None."""
        if (image, prompt) in self.mu:
            return None
        return "failed" if (image, prompt) in self.failed else "missing"

    def problems(self) -> dict:
        """Missing files and failed items: counts and the first few by name (the report's exclusions)."""
        return {
            "missing_images": {"count": len(self.missing), "first": [image.name for image in self.missing[:FIRST]]},
            "failed_items": {
                "count": len(self.failed),
                "first": [f"{image.name}: {error}" for (image, _), error in list(self.failed.items())[:FIRST]],
            },
        }


def _sha256(image: ImageRef) -> str | OSError:
    try:
        return hashlib.sha256(image.read()).hexdigest()
    except OSError as exc:
        return exc


def _hash_all(images: list[ImageRef]) -> list[str | OSError]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        hashed = pool.map(_sha256, images)
        return list(tqdm(hashed, total=len(images), desc="reading images", unit="img", disable=None))


async def _check_model(client: HPSv3Client, endpoint: Endpoint, cache: ScoreCache) -> None:
    (probe,) = await client.score_async([probe_image()], [PROBE_PROMPT])
    if probe.error:
        raise ScoringError(f"the endpoint {endpoint.url} cannot score a probe image: {probe.error}")
    cache.check_model(endpoint.model, (probe.mu, probe.sigma))


def _content_keys(distinct: list[Item], present: list[ImageRef], scores: Scores) -> dict[Item, Key]:
    """(sha256 of the image bytes, prompt) of each item whose image can be read; the others go to `failed`."""
    digests = dict(zip(present, _hash_all(present), strict=True))
    keys: dict[Item, Key] = {}
    for image, prompt in distinct:
        digest = digests.get(image)
        if isinstance(digest, OSError):
            scores.failed[(image, prompt)] = f"cannot read {image.path}: {digest.strerror}"
        elif digest is not None:
            keys[(image, prompt)] = (digest, prompt)
    return keys


async def _score_todo(client: HPSv3Client, cache: ScoreCache, todo: dict[Key, ImageRef], workers: int) -> dict:
    """Score every key of `todo`, appending each result to the cache as it lands; the errors by key."""
    queue, errors = list(todo.items())[::-1], {}
    bar = tqdm(total=len(todo), desc="scoring", unit="img", disable=None)

    async def worker() -> None:
        while queue:
            key, image = queue.pop()
            (result,) = await client.score_async([image.source()], [key[1]])
            if result.error:  # the client's message starts with the image it names; the report names it
                errors[key] = result.error.removeprefix(f"{result.image}: ")
            else:
                cache.put(key, result.mu, result.sigma)
            bar.update()

    try:
        await asyncio.gather(*(worker() for _ in range(workers)))
    finally:
        bar.close()
    return errors


async def _score(endpoint: Endpoint, cache: ScoreCache, distinct: list[Item], scores: Scores) -> None:
    """Check the served model, hash the images, score what the cache lacks, fill `scores`."""
    from hpsv3_client import HPSv3Client

    options = {"model": endpoint.model, "concurrency": endpoint.concurrency, "timeout_s": endpoint.timeout_s}
    async with HPSv3Client(endpoint.url, **options, **endpoint.tls) as client:
        await _check_model(client, endpoint, cache)  # before reading thousands of images: fail fast
        present = [image for image in dict.fromkeys(image for image, _ in distinct) if not image.missing]
        keys = await asyncio.to_thread(_content_keys, distinct, present, scores)
        todo = {key: image for (image, _), key in keys.items() if cache.get(key) is None}
        errors = await _score_todo(client, cache, todo, endpoint.concurrency)
    for item, key in keys.items():
        if key in errors:
            scores.failed[item] = errors[key]
        else:
            scores.mu[item] = cache.get(key)[0]
    unique = len(set(keys.values()))
    scores.stats = {"items": len(distinct), "unique": unique, "from_cache": unique - len(todo)}
    scores.stats["scored_now"] = len(todo) - len(errors)


def score_items(items: Iterable[Item], cache: ScoreCache, endpoint: Endpoint) -> Scores:
    """mu for every item, from the cache or scored now; the endpoint is always checked to serve the cache's model."""
    distinct = list(dict.fromkeys(items))
    images = dict.fromkeys(image for image, _ in distinct)
    scores = Scores(missing=[image for image in images if image.missing])
    asyncio.run(_score(endpoint, cache, distinct, scores))
    return scores
