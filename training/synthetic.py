"""A synthetic pair set with a learnable rule, as HPDv3 JSON: the preferred image is the colour the prompt names.

`python -m hpsv3_training.synthetic OUT` writes OUT/images/*.png (small noisy solid colours), OUT/train.json
and OUT/test.json. The same files feed `hpsv3 train`, its in-process evaluation and `hpsv3 bench pairs`.
A model can only beat 50 % by reading the colour word in the prompt and the colour of the image.
Some rows carry `confidence: null` and `choice_dist: null`, as HPDv3's Midjourney and HPDv2 rows do.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 50, 220), "yellow": (230, 220, 30)}
TEMPLATES = ("a {} square", "a plain {} background", "the colour {}, nothing else", "{} paint on a wall")
REPEAT = 12  # the colour word is said many times: a tiny model finds it among ~800 tokens far sooner
NOISE = 40  # ± grey levels of uniform noise per pixel
SIZE = 56


def _image(rng: np.random.Generator, colour: str, path: Path) -> None:
    base = np.array(COLOURS[colour], np.int16)
    pixels = base + rng.integers(-NOISE, NOISE + 1, size=(SIZE, SIZE, 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").save(path)


def _pairs(rng: np.random.Generator, out: Path, split: str, count: int) -> list[dict]:
    names, records = list(COLOURS), []
    for index in range(count):
        named, other = rng.choice(names, size=2, replace=False)
        paths = [f"images/{split}-{index:04d}-{suffix}.png" for suffix in ("a", "b")]
        _image(rng, named, out / paths[0])
        _image(rng, other, out / paths[1])
        decided = index % 4 != 0  # every 4th row: null confidence and choice_dist, kept by the reader
        records.append({
            "prompt": TEMPLATES[index % len(TEMPLATES)].format(named) + ": " + ", ".join([named] * REPEAT),
            "path1": paths[0],
            "path2": paths[1],
            "choice_dist": [int(rng.integers(3, 6)), int(rng.integers(0, 2))] if decided else None,
            "confidence": round(float(rng.uniform(0.95, 1.0)), 4) if decided else None,
            "model1": f"painter-{named}",
            "model2": f"painter-{other}",
        })  # fmt: skip
    return records


def make_colour_pairs(out: Path, train: int = 256, test: int = 64, seed: int = 0) -> tuple[Path, Path]:
    """Write the images and OUT/train.json, OUT/test.json; returns the two JSON paths."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files = []
    for split, count in (("train", train), ("test", test)):
        files.append(out / f"{split}.json")
        files[-1].write_text(json.dumps(_pairs(rng, out, split, count), indent=1) + "\n", encoding="utf-8")
    return files[0], files[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpsv3_training.synthetic", description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="output folder (images/, train.json, test.json)")
    parser.add_argument("--train", type=int, default=256, help="training pairs")
    parser.add_argument("--test", type=int, default=64, help="held-out pairs")
    parser.add_argument("--seed", type=int, default=0, help="numpy seed")
    args = parser.parse_args(argv)
    train, test = make_colour_pairs(args.out, args.train, args.test, args.seed)
    print(f"wrote {train} and {test} (images in {args.out / 'images'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
