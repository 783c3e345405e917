"""Score a data set's (image, prompt) items on the endpoint with each served model, through the cache: each distinct
(model, image file content, prompt) is scored once, ever; missing files and failed items are set aside and reported."""

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
    """Where and how to score: gRPC address, served model names, requests in flight, seconds per request."""

    url: str
    models: tuple[str, ...] = ("hpsv3",)
    concurrency: int = 16
    timeout_s: float = 120.0
    tls: dict = field(default_factory=dict)  # HPSv3Client's TLS keywords (hpsv3_serve.client_tls)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Endpoint:
        """From the common flags: --endpoint, --model (comma-separated), --concurrency, --timeout, --tls-*."""
        return cls(args.endpoint, parse_models(args.model), args.concurrency, args.timeout, tls_options(args))


def parse_models(text: str) -> tuple[str, ...]:
    """`hpsv3,pickscore` → ("hpsv3", "pickscore"); each name once, in the order given."""
    models = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if not models:
        raise ScoringError(f"--model {text!r} names no model; give served model names, e.g. hpsv3,pickscore")
    return models


@dataclass
class Scores:
    """One model's score of each scored item (HPSv3: mu), and the items without one (image file missing, or the
    request failed)."""

    score: dict[Item, float] = field(default_factory=dict)
    missing: list[ImageRef] = field(default_factory=list)
    failed: dict[Item, str] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)

    def problem(self, image: ImageRef, prompt: str) -> str | None:
        """ "missing" or "failed" when the item has no score, else None."""
        if (image, prompt) in self.score:
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
        raise ScoringError(f"{endpoint.url} cannot score a probe image with model {client.model!r}: {probe.error}")
    cache.check_model(client.model, (probe.score, probe.sigma))


def _content_keys(distinct: list[Item], present: list[ImageRef]) -> tuple[dict, dict]:
    """(sha256 of the image bytes, prompt) of each item whose image can be read, and the errors of the others."""
    digests = dict(zip(present, _hash_all(present), strict=True))
    keys, unreadable = {}, {}
    for image, prompt in distinct:
        digest = digests.get(image)
        if isinstance(digest, OSError):
            unreadable[(image, prompt)] = f"cannot read {image.path}: {digest.strerror}"
        elif digest is not None:
            keys[(image, prompt)] = (digest, prompt)
    return keys, unreadable


async def _score_todo(client: HPSv3Client, cache: ScoreCache, todo: dict[Key, ImageRef], workers: int) -> dict:
    """Score every key of `todo`, appending each result to the cache as it lands; the errors by key."""
    queue, errors = list(todo.items())[::-1], {}
    bar = tqdm(total=len(todo), desc=f"scoring ({client.model})", unit="img", disable=None)

    async def worker() -> None:
        while queue:
            key, image = queue.pop()
            (result,) = await client.score_async([image.source()], [key[1]])
            if result.error:  # the client's message starts with the image it names; the report names it
                errors[key] = result.error.removeprefix(f"{result.image}: ")
            else:
                cache.put(client.model, key, result.score, result.sigma)
            bar.update()

    try:
        await asyncio.gather(*(worker() for _ in range(workers)))
    finally:
        bar.close()
    return errors


async def _score(endpoint: Endpoint, cache: ScoreCache, distinct: list[Item], missing: list[ImageRef]) -> dict:
    """Check each served model, hash the images once, score what the cache lacks per model; Scores by model."""
    from hpsv3_client import HPSv3Client

    options = {"concurrency": endpoint.concurrency, "timeout_s": endpoint.timeout_s, **endpoint.tls}
    clients = [HPSv3Client(endpoint.url, model=model, **options) for model in endpoint.models]
    try:
        for client in clients:  # before reading thousands of images: fail fast
            await _check_model(client, endpoint, cache)
        present = [image for image in dict.fromkeys(image for image, _ in distinct) if not image.missing]
        keys, unreadable = await asyncio.to_thread(_content_keys, distinct, present)
        unique = len(set(keys.values()))
        found = {}
        for client in clients:
            todo = {key: image for (image, _), key in keys.items() if cache.get(client.model, key) is None}
            errors = await _score_todo(client, cache, todo, endpoint.concurrency)
            found[client.model] = scores = _collect(client.model, cache, keys, errors, missing, unreadable)
            scores.stats = {"items": len(distinct), "unique": unique, "from_cache": unique - len(todo)}
            scores.stats["scored_now"] = len(todo) - len(errors)
    finally:
        for client in clients:
            await client.close()
    return found


def _collect(model: str, cache: ScoreCache, keys: dict, errors: dict, missing: list, unreadable: dict) -> Scores:
    """One model's Scores: each item's score from the cache, or why it has none."""
    scores = Scores(missing=missing, failed=dict(unreadable))
    for item, key in keys.items():
        if key in errors:
            scores.failed[item] = errors[key]
        else:
            scores.score[item] = cache.get(model, key)[0]
    return scores


def score_items(items: Iterable[Item], cache: ScoreCache, endpoint: Endpoint) -> dict[str, Scores]:
    """Each model's score of every item, from the cache or scored now; the endpoint is always checked to serve the
    cache's models."""
    distinct = list(dict.fromkeys(items))
    images = dict.fromkeys(image for image, _ in distinct)
    return asyncio.run(_score(endpoint, cache, distinct, [image for image in images if image.missing]))
