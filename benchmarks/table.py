"""`table`: the paper's preference-accuracy table from finished `pairs` / `ranking` runs: reward models as rows,
test sets as columns, model ties apart. Nothing is scored: it reads each run's REPORT.json.

A column is named after its run's data file, or LABEL in LABEL=REPORT.json (HPDv3=runs/hpdv3/pairs.json): give
labels when several test sets share a file name (test.json)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from .formats import DataError
from .report import Report, percent, table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("reports", nargs="+", metavar="[LABEL=]REPORT.json", help="pairs.json or ranking.json files")


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """No endpoint: the runs are done."""


def _column(spec: str) -> tuple[str | None, Path]:
    label, _, path = spec.rpartition("=")
    return label or None, Path(path)


def _read(path: Path) -> dict:
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read a report ({exc}); give the pairs.json or ranking.json of a run") from exc
    if result.get("task") not in ("pairs", "ranking"):
        raise DataError(f"{path}: not a pairs or ranking report (task {result.get('task')!r})")
    return result


def run_table(args: argparse.Namespace) -> Report:
    columns: dict[str, dict[str, dict]] = {}  # column → model → overall counts
    sources = {}
    for spec in args.reports:
        label, path = _column(spec)
        result = _read(path)
        label = label or Path(result["data"]).name
        if label in columns:
            raise DataError(f"two reports make the column {label!r}: name them, e.g. HPDv3={path}")
        models = result.get("models") or {result["run"].get("model", "hpsv3"): result}
        columns[label] = {model: block["overall"] for model, block in models.items()}
        sources[label] = {"report": str(path), "data": result["data"], "task": result["task"]}
    models = list(dict.fromkeys(model for column in columns.values() for model in column))

    def cells(key: str, show: Callable[[object], str]) -> list[list[object]]:
        return [[m, *(show(columns[c][m][key]) if m in columns[c] else "—" for c in columns)] for m in models]

    lines = ["# Preference accuracy", "", *table(["model", *columns], cells("accuracy", percent)), ""]
    lines += ["Model ties (pairs the model scored equal: not correct above):", ""]
    lines += [*table(["model", *columns], cells("model_ties", str)), "", "Pairs counted:", ""]
    lines += table(["model", *columns], cells("pairs", str))
    found = {m: {c: columns[c][m] for c in columns if m in columns[c]} for m in models}
    result = {"task": "table", "columns": list(columns), "sources": sources, "models": found, "run": {}}
    return Report("table", result, "\n".join(lines) + "\n")
