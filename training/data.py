"""HPDv3 pair files → training pairs, and the collator that turns them into model batches.

A record is `{"prompt", "path1", "path2", "choice_dist", "confidence", "model1", "model2"}` with
`path1` the image people preferred (HPDv3's `all.json`, `train.json`, `test.json`). Relative image paths
start from `images_root` (default: the JSON file's folder, as `hpsv3 bench` reads them).

- `confidence_threshold`: keep pairs with confidence ≥ threshold (official: 0.95). HPDv3 writes
  `confidence: null` for its Midjourney and HPDv2 pairs, which the official filter crashes on; such
  rows are KEPT (they are curated pairs without an annotator vote count), as are rows without the key.
- `tied_threshold`: a pair whose vote margin |c1 − c2| / (c1 + c2) is at most this is tied (needs
  `choice_dist`; null or missing counts are never tied). Losses mask tied pairs, except `btt`.

Preprocessing is the core's (`hpsv3_serve.inputs`, `hpsv3_serve.prompt`, `hpsv3_serve.batching`):
training sees exactly the tokens and pixels that scoring and serving see.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from hpsv3_serve.batching import PreparedItem, collate
from hpsv3_serve.inputs import prepare_image
from hpsv3_serve.limits import InputLimits
from hpsv3_serve.prompt import PromptTokenizer, check_prompt

from .errors import DataError

LOCAL_FILES = InputLimits(allow_urls=False)  # pair files name local images; never fetch

REQUIRED = ("prompt", "path1", "path2")
SHOW_MISSING = 3


@dataclass(frozen=True)
class PairRecord:
    """One human judgement: `chosen` (path1) was preferred to `rejected` (path2) for `prompt`."""

    prompt: str
    chosen: Path
    rejected: Path
    tied: bool = False


def _is_tied(record: dict, tied_threshold: float | None) -> bool:
    counts = record.get("choice_dist")
    if tied_threshold is None or not counts or len(counts) < 2 or sum(counts[:2]) <= 0:
        return False
    return abs(counts[0] - counts[1]) / sum(counts[:2]) <= tied_threshold


def _keep(record: dict, confidence_threshold: float | None) -> bool:
    confidence = record.get("confidence")
    return confidence_threshold is None or confidence is None or confidence >= confidence_threshold


def _read_json(path: Path) -> list[dict]:
    if not path.is_file():
        raise DataError(
            f"pair file {path}: no such file (set data.train / data.eval in the config to HPDv3 JSON files)"
        )
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"pair file {path}: not valid JSON ({exc})") from exc
    if not isinstance(records, list):
        raise DataError(f"pair file {path}: expected a JSON list of pair records, found {type(records).__name__}")
    return records


def read_pairs(
    files: list[str | Path],
    images_root: str | Path | None = None,
    confidence_threshold: float | None = None,
    tied_threshold: float | None = None,
) -> list[PairRecord]:
    """The pairs of HPDv3 JSON files, filtered by confidence, with every image file checked to exist."""
    pairs, missing = [], []
    for file in map(Path, files):
        root = Path(images_root) if images_root else file.resolve().parent
        for index, record in enumerate(_read_json(file)):
            if not isinstance(record, dict) or any(not isinstance(record.get(key), str) for key in REQUIRED):
                raise DataError(
                    f"{file}[{index}]: a pair record needs text fields {', '.join(REQUIRED)}: {record!r:.120}"
                )
            if not _keep(record, confidence_threshold):
                continue
            try:
                prompt = check_prompt(record["prompt"])
            except ValueError as exc:
                raise DataError(f"{file}[{index}]: {exc}") from exc
            chosen, rejected = (root / record[key] for key in ("path1", "path2"))
            missing += [path for path in (chosen, rejected) if not path.is_file()]
            pairs.append(PairRecord(prompt, chosen, rejected, _is_tied(record, tied_threshold)))
    if missing:
        shown = ", ".join(map(str, missing[:SHOW_MISSING]))
        raise DataError(
            f"{len(missing)} image files of {', '.join(map(str, files))} do not exist (e.g. {shown}); "
            f"relative paths start from data.images_root (now {images_root or 'the JSON file folder'}): set it"
        )
    return pairs


class PairDataset(Dataset):
    """Pairs, each prepared on access (in DataLoader workers) with the core preprocessing."""

    def __init__(self, pairs: list[PairRecord], tokenizer: PromptTokenizer) -> None:
        if not pairs:
            raise DataError("no pairs left to train on: check the files and data.confidence_threshold")
        self.pairs = pairs
        self.tokenizer = tokenizer

    def __len__(self) -> int:
        return len(self.pairs)

    def _item(self, image: Path, prompt: str) -> PreparedItem:
        prepared = prepare_image(image, LOCAL_FILES)
        return PreparedItem(self.tokenizer.encode_one(prompt, prepared.num_tokens), prepared)

    def __getitem__(self, index: int) -> tuple[PreparedItem, PreparedItem, bool]:
        pair = self.pairs[index]
        return self._item(pair.chosen, pair.prompt), self._item(pair.rejected, pair.prompt), pair.tied


def collate_pairs(examples: list[tuple[PreparedItem, PreparedItem, bool]]) -> dict[str, torch.Tensor]:
    """One right-padded batch of 2B sequences: the B preferred images first, then the B others."""
    batch = collate([chosen for chosen, _, _ in examples] + [rejected for _, rejected, _ in examples])
    return {
        "input_ids": torch.from_numpy(batch.input_ids),
        "attention_mask": torch.from_numpy(batch.attention_mask),
        "reward_index": torch.from_numpy(batch.reward_index),
        "pixel_values": torch.from_numpy(batch.pixel_values),
        "image_grid_thw": torch.from_numpy(batch.image_grid_thw),
        "tied": torch.tensor([tied for _, _, tied in examples], dtype=torch.bool),
    }
