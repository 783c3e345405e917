"""A task's report: NAME.json (every number), NAME.md (the tables, also printed), NAME.png when it has a chart."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hpsv3_serve.files import write_atomic, write_text_atomic


@dataclass
class Report:
    """What a task hands back: the numbers, their Markdown, an optional chart, how many items failed."""

    name: str  # file stem: pairs, ranking, generation, latency
    result: dict
    markdown: str
    chart: Callable[[Path], None] | None = None  # draws NAME.png
    failed: int = 0  # items that could not be scored (the exit status is 1 then)

    def write(self, output: Path) -> list[Path]:
        """Write the files into `output`, each atomically (an interrupted write leaves the old file or none,
        never half of one); returns their paths."""
        output.mkdir(parents=True, exist_ok=True)
        written = [output / f"{self.name}.json", output / f"{self.name}.md"]
        write_text_atomic(written[0], json.dumps(self.result, indent=1, ensure_ascii=False) + "\n")
        write_text_atomic(written[1], self.markdown)
        if self.chart is not None:
            written.append(output / f"{self.name}.png")
            write_atomic(written[-1], self.chart)
        return written

    def publish(self, output: Path, prog: str) -> list[Path]:
        """Write the files (`write`), print the Markdown to stdout and where the files went to stderr."""
        written = self.write(output)
        print(self.markdown)
        print(f"{prog}: wrote {', '.join(map(str, written))}", file=sys.stderr)
        return written


def table(header: Sequence[str], rows: Sequence[Sequence[object]], numeric_from: int = 1) -> list[str]:
    """A Markdown table; columns from `numeric_from` on are right-aligned."""
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def number(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f} %"


def interval(bounds: Sequence[float] | None) -> str:
    return "—" if bounds is None else f"{100 * bounds[0]:.2f}–{100 * bounds[1]:.2f} %"


def exclusions(problems: dict) -> list[str]:
    """Markdown lines naming the missing image files and the failed items, when there are any."""
    lines = []
    for key, label in (("missing_images", "Missing image files"), ("failed_items", "Items the endpoint failed")):
        found = problems[key]
        if found["count"]:
            shown = ", ".join(f"`{name}`" for name in found["first"])
            more = f" and {found['count'] - len(found['first'])} more" if found["count"] > len(found["first"]) else ""
            lines.append(f"- {label} ({found['count']}, excluded): {shown}{more}")
    return lines


def model_blocks(blocks: dict[str, dict]) -> dict:
    """One model's numbers at the top level of the report (as before there were several); several under `models`,
    with the run's counts by model."""
    if len(blocks) == 1:
        return next(iter(blocks.values()))
    runs = {model: block.pop("run") for model, block in blocks.items()}
    first = next(iter(runs.values()))
    by_model = {key: {model: run[key] for model, run in runs.items()} for key in ("from_cache", "scored_now")}
    return {"models": blocks, "run": {"items": first["items"], "unique": first["unique"], **by_model}}
