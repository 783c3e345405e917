"""What the demo page shows, without the page: inputs to score, ranked rows, the preference probability."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hpsv3_serve.inputs import IMAGE_SUFFIXES
from hpsv3_serve.results import ScoreResult

URL_PREFIXES = ("http://", "https://")


@dataclass(frozen=True)
class Item:
    """One image to score: its label on the page, and what goes to the client (bytes or a URL), or why not."""

    label: str
    image: bytes | str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Row:
    """One row of the results table: ranked when scored, `error` when not; `index` is the item's page order."""

    label: str
    index: int
    rank: int | None = None
    mu: float | None = None
    sigma: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class Examples:
    """The images and prompts of the repository's `examples/` folder (empty when it is not there)."""

    images: dict[str, Path]
    prompts: list[str]


def preference_probability(mu_a: float, sigma_a: float, mu_b: float, sigma_b: float) -> float:
    """P(score A > score B) for independent Gaussian scores: Φ((μa − μb) / √(σa² + σb²))."""
    spread = math.hypot(sigma_a, sigma_b)
    if spread == 0.0:
        return 0.5 if mu_a == mu_b else float(mu_a > mu_b)
    return 0.5 * math.erfc(-(mu_a - mu_b) / (spread * math.sqrt(2.0)))


def unique_labels(names: Sequence[str]) -> list[str]:
    """The names, with " (2)", " (3)", ... added to repeats so that each row and chart bar is its own."""
    seen: dict[str, int] = {}
    labels = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        labels.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return labels


def parse_urls(text: str, allowed: bool = True) -> list[Item]:
    """One item per non-blank line: http(s) URLs are fetched by the client; anything else (a path on the demo's
    machine, file://) is refused with a message, and every URL is refused when `allowed` is False."""
    items = []
    for line in text.splitlines():
        url = line.strip()
        if not url:
            continue
        if not allowed:
            items.append(Item(url, error=f"{url}: image URLs are turned off on this demo (--no-urls); upload the file"))
        elif not url.lower().startswith(URL_PREFIXES):
            items.append(Item(url, error=f"{url}: not an http(s) URL; upload local files instead"))
        else:
            items.append(Item(url, image=url))
    return items


def collect(
    uploads: Sequence[tuple[str, bytes]], urls: str, examples: Sequence[tuple[str, Path]], allow_urls: bool = True
) -> list[Item]:
    """Every image to score, in page order (uploads, URLs, examples), each with a label of its own."""
    items = [Item(name, image=data) for name, data in uploads]
    items += parse_urls(urls, allow_urls)
    items += [Item(name, image=path.read_bytes()) for name, path in examples]
    labels = unique_labels([item.label for item in items])
    return [Item(label, item.image, item.error) for label, item in zip(labels, items, strict=True)]


def rows(items: Sequence[Item], results: Sequence[ScoreResult]) -> list[Row]:
    """Table rows: scored items by mu (highest first, ties in page order) ranked 1, 2, ..., then failed items
    in page order with their error. `results` are the client's, one per item without an `error`, in order."""
    sent = iter(results)
    scored, failed = [], []
    for index, item in enumerate(items):
        result = next(sent) if item.error is None else ScoreResult(image=item.label, prompt="", error=item.error)
        if result.ok:
            scored.append(Row(item.label, index, mu=result.mu, sigma=result.sigma))
        else:
            failed.append(Row(item.label, index, error=_readable(result.error or "", item)))
    scored.sort(key=lambda row: -row.mu)
    ranked = [Row(row.label, row.index, rank, row.mu, row.sigma) for rank, row in enumerate(scored, 1)]
    return ranked + failed


def _readable(error: str, item: Item) -> str:
    """The client names uploaded bytes "<N bytes>": name the file instead."""
    if isinstance(item.image, bytes):
        return error.replace(f"<{len(item.image)} bytes>", item.label)
    return error


def table(table_rows: Sequence[Row], digits: int = 5) -> list[dict[str, str]]:
    """The rows as text cells (rank, image, mu, sigma, and error when any row has one)."""
    with_errors = any(row.error for row in table_rows)
    cells = []
    for row in table_rows:
        cell = {
            "rank": str(row.rank) if row.rank is not None else "—",
            "image": row.label,
            "mu": f"{row.mu:.{digits}f}" if row.mu is not None else "",
            "sigma": f"{row.sigma:.{digits}f}" if row.sigma is not None else "",
        }
        if with_errors:
            cell["error"] = row.error or ""
        cells.append(cell)
    return cells


def load_examples(folder: Path | None) -> Examples:
    """Example images (by file name) and the distinct prompts of `folder/prompts.jsonl`, when they exist."""
    if folder is None or not folder.is_dir():
        return Examples({}, [])
    images_dir = folder / "images"
    images = {}
    if images_dir.is_dir():
        images = {p.name: p for p in sorted(images_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    prompts: list[str] = []
    prompts_file = folder / "prompts.jsonl"
    if prompts_file.is_file():
        for line in prompts_file.read_text(encoding="utf-8").splitlines():
            prompt = json.loads(line).get("prompt", "") if line.strip() else ""
            if prompt and prompt not in prompts:
                prompts.append(prompt)
    return Examples(images, prompts)
