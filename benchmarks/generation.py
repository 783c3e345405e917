"""`generation`: mean score (HPSv3: mu) of each generator's images per prompt category (the official benchmark's
table), for each served model given with --model (hpsv3,pickscore,...: one table per model).

Layouts: DIR/CATEGORY/**/IMAGE (one generator, named after DIR) or DIR/GENERATOR/CATEGORY/**/IMAGE; each
image's prompt is the .txt file beside it with the same name.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hpsv3_serve.inputs import IMAGE_SUFFIXES

from .cache import ScoreCache
from .charts import category_bars
from .formats import DataError, ImageRef
from .metrics import overall_stats, score_stats
from .report import Report, exclusions, model_blocks, number, table
from .scoring import FIRST, Endpoint, Scores, score_items

LAYOUT_HELP = "category folders (DIR/CATEGORY/IMAGE.png + IMAGE.txt) or generator folders (DIR/GENERATOR/CATEGORY/...)"


def _images(folder: Path, limit: int | None) -> list[Path]:
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return found[:limit]


def _folders(folder: Path) -> list[Path]:
    """Sub-folders, without hidden ones (.ipynb_checkpoints, .cache, ...)."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def discover(root: Path, limit: int | None = None) -> tuple[str, dict[str, dict[str, list[Path]]]]:
    """(layout, generator → category → images); `limit` caps the images of each category."""
    if not root.is_dir():
        raise DataError(f"--images {root}: not a folder; expected {LAYOUT_HELP}")
    subfolders = _folders(root)
    if any(p.suffix.lower() in IMAGE_SUFFIXES for folder in subfolders for p in folder.iterdir()):
        return "categories", {root.resolve().name: {c.name: _images(c, limit) for c in subfolders}}
    found = {g.name: {c.name: _images(c, limit) for c in _folders(g)} for g in subfolders}
    if not any(images for categories in found.values() for images in categories.values()):
        raise DataError(f"--images {root}: no images found; expected {LAYOUT_HELP}")
    return "generators", found


def read_prompt(image: Path, first_line: bool) -> str | None:
    """The prompt in IMAGE.txt (stripped; only its first line with `first_line`), None when there is no file.
    Bytes that are not UTF-8 are kept as lone surrogates, so that image alone fails, as "not valid UTF-8"."""
    text_file = image.with_suffix(".txt")
    if not text_file.is_file():
        return None
    text = text_file.read_text(encoding="utf-8", errors="surrogateescape").strip()
    return text.splitlines()[0].strip() if first_line and text else text


def _tables(block: dict, categories: list[str], heading: str) -> list[str]:
    """The means (generators as rows, best overall first), then each generator's statistics."""
    generators = block["generators"]
    ranked = sorted(generators, key=lambda g: -generators[g]["overall"]["mean"] if generators[g]["overall"] else 0)
    rows = [
        [name, *(number(generators[name]["categories"].get(c, {}).get("mean")) for c in categories),
         number((generators[name]["overall"] or {}).get("mean"))]
        for name in ranked
    ]  # fmt: skip
    lines = table(["generator", *categories, "overall"], rows)
    for name in ranked:
        stats = {**generators[name]["categories"], "OVERALL": generators[name]["overall"]}
        rows = [[c, s["count"], *(number(s[k]) for k in ("mean", "std", "min", "max"))] for c, s in stats.items() if s]
        lines += ["", f"{heading} {name}", "", *table(["category", "count", "mean", "std", "min", "max"], rows)]
    return lines


def markdown(result: dict) -> str:
    """One model: its tables. Several: a section of tables per model."""
    categories, missing = result["categories"], result["missing_prompts"]
    notes = []
    if missing["count"]:
        shown = ", ".join(f"`{name}`" for name in missing["first"])
        notes.append(f"- Images without a .txt prompt ({missing['count']}, excluded): {shown}")
    title = f"# Generation benchmark: {result['images']}"
    if "models" not in result:
        lines = [title, "", "Mean mu per category; overall = mean of means.", "", *_tables(result, categories, "##")]
        return "\n".join([*lines, "", *notes, *exclusions(result)]) + "\n"
    lines = [title, "", "Mean score per category (HPSv3: mu); overall = mean of means."]
    lines += ["", *notes] if notes else []
    for model, block in result["models"].items():
        lines += ["", f"## {model}", "", *_tables(block, categories, "###"), "", *exclusions(block)]
    return "\n".join(lines).rstrip("\n") + "\n"


def _by_generator(found: dict, refs: dict, prompts: dict, scores: Scores) -> dict:
    """generator → per-category statistics and the OVERALL row, from one model's scores."""
    generators = {}
    for generator, categories in found.items():
        stats = {}
        for category, images in categories.items():
            values = [scores.score.get((refs[i], prompts[i])) for i in images if prompts[i] is not None]
            values = [value for value in values if value is not None]
            if values:
                stats[category] = score_stats(values)
        generators[generator] = {"categories": stats, "overall": overall_stats(stats) if stats else None}
    return generators


def run_generation(args: argparse.Namespace) -> Report:
    layout, found = discover(args.images, args.limit)
    prompts, no_prompt = {}, []
    for categories in found.values():
        for images in categories.values():
            for image in images:
                prompt = read_prompt(image, args.first_line)
                prompts[image] = prompt
                if prompt is None:
                    no_prompt.append(str(image.relative_to(args.images)))
    refs = {image: ImageRef(str(image.relative_to(args.images)), image) for image in prompts}
    items = [(refs[image], prompt) for image, prompt in prompts.items() if prompt is not None]
    cache = ScoreCache(args.cache)
    try:
        by_model = score_items(items, cache, Endpoint.from_args(args))
    finally:
        cache.close()
    blocks = {
        model: {"generators": _by_generator(found, refs, prompts, scores), **scores.problems(), "run": scores.stats}
        for model, scores in by_model.items()
    }
    result = {
        "task": "generation",
        "images": str(args.images),
        "layout": layout,
        "limit": args.limit,
        "prompt": "first line of IMAGE.txt" if args.first_line else "IMAGE.txt, stripped",
        "categories": sorted({c for categories in found.values() for c in categories}),
        "missing_prompts": {"count": len(no_prompt), "first": no_prompt[:FIRST]},
        **model_blocks(blocks),
    }
    chart = (lambda path: category_bars(result, path)) if "models" not in result else None  # one model's bars
    failed = sum(len(scores.failed) for scores in by_model.values())
    return Report("generation", result, markdown(result), chart, failed=failed)
