"""The score cache: one JSONL line per scored (image content, prompt), appended and flushed as results arrive.

A run killed at any moment loses at most the line being written: `read_jsonl` drops a last line without its
newline (and `JsonlLog` cuts it off before appending), so a rerun scores only what is not in the file yet.
The first line records the served model's score of a fixed probe image; a rerun against an endpoint that
scores the probe differently (another model, another precision) refuses to mix its scores with the file's.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path
from typing import IO

from PIL import Image

FORMAT = "hpsv3-bench-scores/1"
PROBE_PROMPT = "a probe image for the score cache: a diagonal gradient"
PROBE_TOLERANCE = 1e-4  # relative and absolute: batching moves a score by ~1e-7, another model by far more

Key = tuple[str, str]  # (sha256 of the image file bytes, prompt)


class CacheError(Exception):
    """The cache file cannot be used; the message names the file and what to do."""


def content_key(data: bytes, prompt: str) -> Key:
    return hashlib.sha256(data).hexdigest(), prompt


def probe_image() -> bytes:
    """A small deterministic PNG every run scores first, to check the endpoint serves the cache's model."""
    image = Image.linear_gradient("L").resize((96, 64)).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def read_jsonl(path: Path) -> list[dict]:
    """Every complete line of a JSONL file written by `JsonlLog`; a last line cut short by a kill is dropped."""
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")[:-1]  # the part after the last newline is empty or was cut short
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise CacheError(f"{path}:{number}: not a JSON line ({exc}); delete the file to start over") from exc
    return records


class JsonlLog:
    """Appends records to a JSONL file, one flushed line each, after cutting off a partial last line."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            data = path.read_bytes()
            keep = data.rfind(b"\n") + 1
            if keep < len(data):
                with path.open("r+b") as handle:
                    handle.truncate(keep)
        self.path = path
        self._handle: IO[str] = path.open("a", encoding="utf-8")

    def append(self, record: dict) -> None:
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


class ScoreCache:
    """(image sha256, prompt) → (mu, sigma) of one served model, backed by a JSONL file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        records = read_jsonl(path)
        self.header: dict | None = records[0] if records else None
        if self.header is not None and self.header.get("format") != FORMAT:
            raise CacheError(f"{path} is not a score cache of this tool (first line {records[0]}); use another --cache")
        self.scores: dict[Key, tuple[float, float]] = {
            (r["image_sha256"], r["prompt"]): (r["mu"], r["sigma"]) for r in records[1:]
        }
        self._log: JsonlLog | None = None

    def check_model(self, model: str, probe: tuple[float, float]) -> None:
        """Start a new file with this model's probe scores, or refuse a file made with another model."""
        if self.header is None:
            self.header = {"format": FORMAT, "model": model, "probe_mu": probe[0], "probe_sigma": probe[1]}
            self._open().append(self.header)
            return
        cached = (self.header["probe_mu"], self.header["probe_sigma"])
        pairs = zip(cached, probe, strict=True)
        same = all(math.isclose(a, b, rel_tol=PROBE_TOLERANCE, abs_tol=PROBE_TOLERANCE) for a, b in pairs)
        if self.header.get("model") != model or not same:
            raise CacheError(
                f"{self.path} holds scores of another model: model {self.header.get('model')!r} scored the probe "
                f"image mu={cached[0]:.6g} sigma={cached[1]:.6g}, the endpoint's {model!r} scores it "
                f"mu={probe[0]:.6g} sigma={probe[1]:.6g}; use another --cache (or --output), or delete the file"
            )

    def get(self, key: Key) -> tuple[float, float] | None:
        return self.scores.get(key)

    def put(self, key: Key, mu: float, sigma: float) -> None:
        """Record one score, on disk before this returns (flushed)."""
        self.scores[key] = (mu, sigma)
        self._open().append({"image_sha256": key[0], "prompt": key[1], "mu": mu, "sigma": sigma})

    def _open(self) -> JsonlLog:
        if self._log is None:
            self._log = JsonlLog(self.path)
        return self._log

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
