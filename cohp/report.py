"""The run's record: report.json (written atomically, so its presence marks a finished prompt) and a
contact sheet PNG with one row per generator and per img2img round, scores under each image."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

from hpsv3_serve.files import write_text_atomic

THUMB, LABEL, PAD = 128, 28, 6
KEPT, BEST_ROW, TEXT = (220, 30, 30), (30, 120, 220), (20, 20, 20)


def write_json_atomic(path: Path, data: dict) -> None:
    """Write `data` as JSON to `path`, all or nothing."""
    write_text_atomic(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def _rows(report: dict) -> list[tuple[str, list[dict]]]:
    rows = [(name, model["images"]) for name, model in report["models"].items() if "images" in model]
    rows += [(f"round {r['round']} ({r['strength']:g})", r["images"]) for r in report["rounds"]]
    return rows


def contact_sheet(report: dict, folder: Path, path: Path) -> None:
    """Draw every image of `report` (paths relative to `folder`) in rows; the kept image framed in red,
    each row's best in blue."""
    rows = _rows(report)
    columns = max(len(images) for _, images in rows)
    header = 110
    sheet = Image.new("RGB", (header + columns * (THUMB + PAD) + PAD, len(rows) * (THUMB + LABEL + PAD) + PAD), "white")
    draw = ImageDraw.Draw(sheet)
    kept = report["final"]["source"]
    for row, (title, images) in enumerate(rows):
        top = PAD + row * (THUMB + LABEL + PAD)
        draw.text((PAD, top + THUMB // 2), title, fill=TEXT)
        best = max(image["score"] for image in images)
        for column, image in enumerate(images):
            left = header + column * (THUMB + PAD)
            thumb = Image.open(folder / image["path"]).convert("RGB").resize((THUMB, THUMB), Image.Resampling.LANCZOS)
            sheet.paste(thumb, (left, top))
            frame = KEPT if image["path"] == kept else BEST_ROW if image["score"] == best else None
            if frame:
                draw.rectangle((left - 2, top - 2, left + THUMB + 1, top + THUMB + 1), outline=frame, width=3)
            draw.text((left, top + THUMB + 4), f"{image['score']:.4f}  seed {image['seed']}", fill=TEXT)
    sheet.save(path)
