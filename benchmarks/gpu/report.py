"""The run's record: JSON rewritten after every phase (partial results survive a kill) and a text summary.

Each rewrite is atomic (`hpsv3_serve.files`, standard library only): a kill mid-write leaves the previous
record, never half of one."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hpsv3_serve.files import write_text_atomic

TARGETS = {"speedup": 3.0, "pct_peak": 60.0, "p50_ms": 60.0}  # issue #8, on an H100/H200


class Report:
    """Accumulates results under `out/` as `NAME.json` and `NAME.txt` (the text made by `renderer`)."""

    def __init__(
        self, out: Path, meta: dict, name: str = "gpu_bench", renderer: Callable[[dict], str] | None = None
    ) -> None:
        self.out, self.name, self.renderer = out, name, renderer or render
        self.data: dict = {"meta": meta, "errors": []}
        out.mkdir(parents=True, exist_ok=True)
        self.write()

    def set(self, key: str, value: object) -> None:
        self.data[key] = value
        self.write()

    def append(self, key: str, value: object) -> None:
        self.data.setdefault(key, []).append(value)
        self.write()

    def write(self) -> None:
        write_text_atomic(self.out / f"{self.name}.json", json.dumps(self.data, indent=2) + "\n")
        write_text_atomic(self.out / f"{self.name}.txt", self.renderer(self.data) + "\n")


def run_facts(profile: Any, self_check: bool, cuda: bool) -> dict:
    """What every GPU report starts with: when, which commit and command, the profile, the card, torch."""
    import torch

    return {
        "started_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "commit": os.environ.get("HPSV3_COMMIT", "unknown"),
        "command": " ".join(sys.argv),
        "self_check": self_check,
        "profile": asdict(profile),
        "size": profile.size,
        "dtype": profile.dtype,
        "device_name": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }


def best(rows: list[dict]) -> dict | None:
    """The row with the most images/s (rows that failed have none)."""
    measured = [row for row in rows if "images_per_s" in row]
    return max(measured, key=lambda row: row["images_per_s"]) if measured else None


def summarise(data: dict) -> dict:
    """Headline numbers and the issue's targets, from whatever phases finished."""
    official, fast = best(data.get("official", [])), best(data.get("fast", []))
    latency = data.get("latency", {})
    summary: dict = {}
    if official and fast:
        summary["speedup"] = fast["images_per_s"] / official["images_per_s"]
    stream = data.get("stream", {})
    if "fast" in stream and "official" in stream:
        summary["speedup_end_to_end"] = stream["fast"]["images_per_s"] / stream["official"]["images_per_s"]
    if fast:
        summary["pct_peak"] = fast["pct_peak"]
    if "fast" in latency:
        summary["p50_ms"] = latency["fast"]["p50_ms"]
    if not data["meta"].get("self_check"):
        summary["targets"] = {
            name: {"value": summary[name], "target": target, "met": summary[name] <= target}
            if name == "p50_ms"
            else {"value": summary[name], "target": target, "met": summary[name] >= target}
            for name, target in TARGETS.items()
            if name in summary
        }
    return summary


def _throughput_lines(title: str, rows: list[dict]) -> list[str]:
    lines = [f"{title}:", "  batch  images/s  TFLOP/s  % of peak  padding"]
    for row in rows:
        if "images_per_s" in row:
            lines.append(
                f"  {row['batch']:>5}  {row['images_per_s']:>8.2f}  {row['tflops']:>7.1f}  {row['pct_peak']:>9.1f}"
                f"  {row['padding_pct']:>6.1f}%"
            )
        else:
            lines.append(f"  {row['batch']:>5}  {row.get('error', 'skipped')}")
    return lines


def render(data: dict) -> str:
    """A short human-readable summary (printed at the end and kept beside the JSON)."""
    meta = data["meta"]
    lines = [
        f"HPSv3 GPU benchmark ({'CPU self-check, tiny shapes' if meta.get('self_check') else meta.get('size')})",
        f"device: {meta.get('device_name')}  torch {meta.get('torch')}  transformers {meta.get('transformers')}"
        f"  dtype {meta.get('dtype')}  fast path: {meta.get('fast_engine')} {meta.get('fast_options')}",
    ]
    if "peak_tflops" in data:
        lines.append(f"measured matmul peak: {data['peak_tflops']:.4g} TFLOP/s ({meta.get('peak_shape')})")
    if "flops_per_image" in data:
        lines.append(f"model FLOPs per image (mean of the requests): {data['flops_per_image'] / 1e12:.4g} TFLOP")
    if "parity" in data:
        parity = data["parity"]
        lines.append(
            f"parity over {parity['items']} items: max |Δmu| {parity['max_abs_mu']:.2e}, max |Δlog_sigma| "
            f"{parity['max_abs_log_sigma']:.2e} (mu spread {parity['mu_std']:.3f}); "
            f"{'ok' if parity['ok'] else 'FAILED'} at tolerance {parity['tolerance']:g}"
        )
    for key, title in (("official", "official-style forward (model only)"), ("fast", "fast path (model only)")):
        if data.get(key):
            lines += _throughput_lines(title, data[key])
    for path, row in data.get("latency", {}).items():
        lines.append(
            f"batch-1 latency, {path}: p50 {row['p50_ms']:.1f} ms, p90 {row['p90_ms']:.1f} ms ({row['n']} requests)"
        )
    for path, row in data.get("stream", {}).items():
        lines.append(
            f"end to end from JPEG bytes, {path}: {row['images_per_s']:.2f} images/s at batch {row['batch']}"
            f" ({row['images']} requests, preprocessed {row['preprocessing']})"
        )
    summary = summarise(data)
    ratios = [
        f"{label} {summary[key]:.2f}×"
        for key, label in (("speedup", "model only"), ("speedup_end_to_end", "end to end"))
        if key in summary
    ]
    if ratios:
        lines.append("fast path / official-style, each at its best batch size: " + ", ".join(ratios))
    for name, row in summary.get("targets", {}).items():
        lines.append(f"target {name}: {row['value']:.2f} vs {row['target']:g}: {'met' if row['met'] else 'NOT met'}")
    lines += [f"error: {error}" for error in data["errors"]]
    return "\n".join(lines)
