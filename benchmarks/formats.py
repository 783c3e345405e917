"""Human-preference data files → pairs (preferred image, other image, prompt) and ranked lists.

Supported formats (the fields read; anything else in a record is ignored):

  hpdv3        {"prompt", "path1" (preferred), "path2", "model1"?, "model2"?, "choice_dist"?}
               a human tie: the two largest counts of `choice_dist` are equal
  hpdv2-pairs  {"prompt", "file_path": [a, b], "human_preference": [x, y]}: the larger value is preferred;
               equal values are a human tie
  hpdv2        {"prompt", "image_path": [...], "rank": [...]}: ranked lists, rank 1 = best
  imagereward  {"prompt", "generations": [...], "ranking": [...]}: ranked lists, rank 1 = best
  pickapic     {"caption", "jpg_0", "jpg_1", "label_0", "label_1", "model_0"?, "model_1"?}: label 1 is preferred,
               0.5/0.5 is a human tie; jpg_* are the image bytes (parquet) or paths (JSON)

Files are JSON (a list of records), JSONL or parquet (pyarrow). Relative image paths are resolved against
--images-root (default: the data file's folder). Ranked lists become all their pairs of images; two images of
the same rank are a human tie.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hpsv3_serve.inputs import IMAGE_SUFFIXES, ImageInput

LIST_FORMATS = ("hpdv2", "imagereward")
PAIR_FORMATS = ("hpdv3", "hpdv2-pairs", "pickapic", *LIST_FORMATS)
SIGNATURES = {  # format → the fields that identify it, in the order formats are tried
    "hpdv3": ("path1", "path2", "prompt"),
    "hpdv2-pairs": ("file_path", "human_preference", "prompt"),
    "hpdv2": ("image_path", "rank", "prompt"),
    "imagereward": ("generations", "ranking", "prompt"),
    "pickapic": ("caption", "jpg_0", "jpg_1", "label_0", "label_1"),
}


class DataError(Exception):
    """The data file cannot be read as the format says; the message names the file and record."""


@dataclass(frozen=True)
class ImageRef:
    """An image of the data set: a file (`path`) or bytes held in the data file itself (`data`)."""

    name: str  # as the data file writes it (a path, or FILE#ROW.COLUMN for bytes)
    path: Path | None = None
    data: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def missing(self) -> bool:
        return self.path is not None and not self.path.is_file()

    def source(self) -> ImageInput:
        """What `HPSv3Client` reads: the path or the bytes."""
        return str(self.path) if self.path is not None else self.data

    def read(self) -> bytes:
        return self.path.read_bytes() if self.path is not None else self.data


@dataclass(frozen=True)
class Pair:
    """Two images for one prompt; `chosen` is the one people preferred unless `human_tie`."""

    prompt: str
    chosen: ImageRef
    rejected: ImageRef
    human_tie: bool = False
    models: tuple[str, str] | None = None  # the generators of chosen and rejected, when the file says


@dataclass(frozen=True)
class RankedList:
    """Images for one prompt with their human ranks (lower is better)."""

    prompt: str
    images: tuple[ImageRef, ...]
    ranks: tuple[float, ...]

    def pairs(self) -> list[Pair]:
        """Every pair of the list, the better-ranked image as `chosen`; equal ranks are human ties."""
        found = []
        for i, j in itertools.combinations(range(len(self.images)), 2):
            better, worse = (i, j) if self.ranks[i] <= self.ranks[j] else (j, i)
            tie = self.ranks[i] == self.ranks[j]
            found.append(Pair(self.prompt, self.images[better], self.images[worse], human_tie=tie))
        return found


def image_files(paths: list[Path]) -> list[Path]:
    """The --images arguments as image files: files as given, folders give their images (sorted)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"--images {path}: neither an image file nor a folder")
    if not files:
        raise DataError(f"--images {' '.join(map(str, paths))}: no images found")
    return files


def read_records(path: Path) -> list[dict]:
    """The records of a .json (a list), .jsonl or .parquet file."""
    if not path.is_file():
        raise DataError(f"--data {path}: no such file")
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise DataError(f"--data {path}: reading parquet needs pyarrow: pip install 'hpsv3-serve[bench]'") from exc
        return pq.read_table(path).to_pylist()
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        records = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"--data {path}: not valid JSON ({exc})") from exc
    if not isinstance(records, list):
        raise DataError(f"--data {path}: expected a JSON list of records, found {type(records).__name__}")
    return records


def detect_format(path: Path, records: list[dict], allowed: tuple[str, ...]) -> str:
    """The format whose identifying fields the first record has."""
    first = records[0] if records and isinstance(records[0], dict) else {}
    for name in allowed:
        if all(key in first for key in SIGNATURES[name]):
            return name
    expected = "; ".join(f"{name}: {', '.join(SIGNATURES[name])}" for name in allowed)
    raise DataError(f"--data {path}: cannot tell the format from the fields {sorted(first)}; expected {expected}")


class _Resolver:
    """Turns a record's image field (path or bytes) into an ImageRef."""

    def __init__(self, data_file: Path, images_root: Path | None) -> None:
        self.data_file = data_file
        self.root = images_root or data_file.resolve().parent

    def __call__(self, value: object, where: str) -> ImageRef:
        if isinstance(value, dict) and value.get("bytes") is not None:  # a datasets Image feature
            value = value["bytes"]
        if isinstance(value, (bytes, bytearray)):
            return ImageRef(name=f"{self.data_file.name}{where}", data=bytes(value))
        if isinstance(value, str) and value:
            path = Path(value)
            return ImageRef(name=value, path=path if path.is_absolute() else self.root / path)
        raise DataError(f"--data {self.data_file}: record {where}: expected an image path or bytes, got {value!r:.80}")


def _models(record: dict, first: str, second: str) -> tuple[str, str] | None:
    """The generators of the two images, when the record names both."""
    return (str(record[first]), str(record[second])) if record.get(first) and record.get(second) else None


def _prompt(record: dict, key: str = "prompt") -> str:
    """The record's prompt; a prompt that is not text makes the record malformed (its text is judged per item)."""
    if not isinstance(record[key], str):
        raise TypeError(f"{key} must be text, got {type(record[key]).__name__}")
    return record[key]


def _hpdv3(record: dict, image: _Resolver, where: str) -> list[Pair]:
    counts = sorted(record.get("choice_dist") or [], reverse=True)
    tie = len(counts) >= 2 and counts[0] == counts[1]
    models = _models(record, "model1", "model2")
    chosen, rejected = image(record["path1"], f"{where}.path1"), image(record["path2"], f"{where}.path2")
    return [Pair(_prompt(record), chosen, rejected, tie, models)]


def _hpdv2_pairs(record: dict, image: _Resolver, where: str) -> list[Pair]:
    first, second = (image(p, f"{where}.file_path[{i}]") for i, p in enumerate(record["file_path"]))
    left, right = record["human_preference"]
    chosen, rejected = (second, first) if right > left else (first, second)
    return [Pair(_prompt(record), chosen, rejected, human_tie=left == right)]


def _pickapic(record: dict, image: _Resolver, where: str) -> list[Pair]:
    first, second = image(record["jpg_0"], f"{where}.jpg_0"), image(record["jpg_1"], f"{where}.jpg_1")
    models = _models(record, "model_0", "model_1")
    if record["label_1"] > record["label_0"]:
        first, second = second, first
        models = models[::-1] if models else None
    return [Pair(_prompt(record, "caption"), first, second, record["label_0"] == record["label_1"], models)]


def _ranked(record: dict, image: _Resolver, where: str, images_key: str, ranks_key: str) -> RankedList:
    paths, ranks = record[images_key], record[ranks_key]
    if len(paths) != len(ranks):
        raise DataError(f"--data {image.data_file}: record {where}: {len(paths)} {images_key} but {len(ranks)} ranks")
    images = tuple(image(p, f"{where}.{images_key}[{i}]") for i, p in enumerate(paths))
    return RankedList(_prompt(record), images, tuple(float(r) for r in ranks))


RANKED_FIELDS = {"hpdv2": ("image_path", "rank"), "imagereward": ("generations", "ranking")}
PAIR_READERS: dict[str, Callable[[dict, _Resolver, str], list[Pair]]] = {
    "hpdv3": _hpdv3,
    "hpdv2-pairs": _hpdv2_pairs,
    "pickapic": _pickapic,
}


def _records(data: Path, fmt: str, allowed: tuple[str, ...], limit: int | None) -> tuple[str, list[dict]]:
    records = read_records(data)[:limit]
    fmt = detect_format(data, records, allowed) if fmt == "auto" else fmt
    return fmt, records


def _each(data: Path, records: list[dict], fmt: str, read: Callable[[dict, str], object]) -> list:
    out = []
    for index, record in enumerate(records):
        try:
            out.append(read(record, f"#{index}"))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"--data {data}: record #{index} is not {fmt} ({type(exc).__name__}: {exc})") from exc
    return out


def _lists(data: Path, records: list[dict], fmt: str, image: _Resolver) -> list[RankedList]:
    images_key, ranks_key = RANKED_FIELDS[fmt]
    return _each(data, records, fmt, lambda r, where: _ranked(r, image, where, images_key, ranks_key))


def load_lists(
    data: Path, images_root: Path | None, fmt: str = "auto", limit: int | None = None
) -> tuple[str, list[RankedList]]:
    """(format, ranked lists) of an hpdv2 or imagereward file: its first `limit` records."""
    fmt, records = _records(data, fmt, LIST_FORMATS, limit)
    return fmt, _lists(data, records, fmt, _Resolver(data, images_root))


def load_pairs(
    data: Path, images_root: Path | None, fmt: str = "auto", limit: int | None = None
) -> tuple[str, list[Pair]]:
    """(format, pairs) of any supported file: its first `limit` records; ranked lists give all their pairs."""
    fmt, records = _records(data, fmt, PAIR_FORMATS, limit)
    image = _Resolver(data, images_root)
    if fmt in LIST_FORMATS:
        return fmt, [pair for ranked in _lists(data, records, fmt, image) for pair in ranked.pairs()]
    read = PAIR_READERS[fmt]
    return fmt, [pair for pairs in _each(data, records, fmt, lambda r, where: read(r, image, where)) for pair in pairs]
