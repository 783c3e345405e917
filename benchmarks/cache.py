"""The score cache: one JSONL line per scored (image content, prompt), appended and flushed as results arrive.

A run killed at any moment loses at most the line being written: `read_jsonl` drops a last line without its
newline (and `JsonlLog` cuts it off before appending), so a rerun scores only what is not in the file yet.
One file holds the scores of several served models: each model's header line records its score of a fixed probe
image, and each score line names its model. A rerun against an endpoint that scores the probe differently
(another checkpoint, another precision) refuses to mix its scores with the file's; a model the file does not
hold yet gets a header of its own. Files of format /1 (one model, score lines without "model") stay readable.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path
from typing import IO

from PIL import Image

FORMAT = "hpsv3-bench-scores/2"
READABLE = ("hpsv3-bench-scores/1", FORMAT)  # /1: one model, named by the first line only
PROBE_PROMPT = "a probe image for the score cache: a diagonal gradient"
PROBE_TOLERANCE = 1e-4  # relative and absolute: batching moves a score by ~1e-7, another model by far more

Key = tuple[str, str]  # (sha256 of the image file bytes, prompt)
Score = tuple[float, float | None]  # (score, sigma): HPSv3's mu and sigma; another judge's score and None


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
    """(model, image sha256, prompt) → (score, sigma) of the served models, backed by a JSONL file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        records = read_jsonl(path)
        if records and records[0].get("format") not in READABLE:
            raise CacheError(f"{path} is not a score cache of this tool (first line {records[0]}); use another --cache")
        self.headers: dict[str, dict] = {}
        self.scores: dict[tuple[str, str, str], Score] = {}
        for record in records:
            if "format" in record:
                self.headers[record["model"]] = record
            else:  # format /1 lines name no model: the first line's
                model = record.get("model", records[0]["model"])
                score = record["score"] if "score" in record else record["mu"]
                self.scores[(model, record["image_sha256"], record["prompt"])] = (score, record.get("sigma"))
        self._log: JsonlLog | None = None

    def check_model(self, model: str, probe: Score) -> None:
        """Add a header with this model's probe score, or refuse a file whose `model` scored the probe otherwise."""
        header = self.headers.get(model)
        if header is None:
            header = {"format": FORMAT, "model": model, **_fields("probe_", probe)}
            self.headers[model] = header
            self._open().append(header)
            return
        cached = (header.get("probe_mu", header.get("probe_score")), header.get("probe_sigma"))
        pairs = zip(cached, probe, strict=True)
        if not all(a == b or _close(a, b) for a, b in pairs):
            raise CacheError(
                f"{self.path} holds scores of another model named {model!r}: it scored the probe image "
                f"{_shown(cached)}, the endpoint's {model!r} scores it {_shown(probe)}; use another --cache (or "
                "--output), or delete the file"
            )

    def get(self, model: str, key: Key) -> Score | None:
        return self.scores.get((model, *key))

    def put(self, model: str, key: Key, score: float, sigma: float | None) -> None:
        """Record one score, on disk before this returns (flushed)."""
        self.scores[(model, *key)] = (score, sigma)
        record = {"model": model, "image_sha256": key[0], "prompt": key[1], **_fields("", (score, sigma))}
        self._open().append(record)

    def _open(self) -> JsonlLog:
        if self._log is None:
            self._log = JsonlLog(self.path)
        return self._log

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def _fields(prefix: str, score: Score) -> dict:
    """HPSv3's mu and sigma under their names (as format /1); another judge's `score`."""
    if score[1] is None:
        return {f"{prefix}score": score[0]}
    return {f"{prefix}mu": score[0], f"{prefix}sigma": score[1]}


def _close(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and math.isclose(a, b, rel_tol=PROBE_TOLERANCE, abs_tol=PROBE_TOLERANCE)


def _shown(score: Score) -> str:
    return f"{score[0]:.6g}" if score[1] is None else f"mu={score[0]:.6g} sigma={score[1]:.6g}"
