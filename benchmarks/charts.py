"""PNG charts of the reports (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np


def _pyplot() -> ModuleType:
    """matplotlib.pyplot on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def category_bars(result: dict, path: Path) -> None:
    """Grouped bars: mean mu per category and overall, one bar per generator."""
    plt = _pyplot()
    generators, columns = result["generators"], [*result["categories"], "overall"]
    width = 0.8 / max(len(generators), 1)
    figure, axes = plt.subplots(figsize=(max(6.0, 1.2 * len(columns) * max(1, len(generators)) ** 0.5), 4.5))
    for index, (name, data) in enumerate(generators.items()):
        stats = {**data["categories"], "overall": data["overall"] or {}}
        means = [stats.get(column, {}).get("mean", np.nan) for column in columns]
        axes.bar(np.arange(len(columns)) + (index - (len(generators) - 1) / 2) * width, means, width, label=name)
    axes.set_xticks(np.arange(len(columns)), columns, rotation=30, ha="right")
    axes.set_ylabel("mean mu")
    axes.set_title("HPSv3 generation benchmark")
    axes.axhline(0, color="black", linewidth=0.6)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def latency_curve(levels: list[dict], path: Path) -> None:
    """p50 and p99 latency against throughput, one point per concurrency level (labelled)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.5, 4.5))
    throughput = [level["throughput_per_s"] for level in levels]
    for key, style in (("p50", "o-"), ("p99", "s--")):
        axes.plot(throughput, [level["latency_ms"][key] for level in levels], style, label=key)
    for level, x in zip(levels, throughput, strict=True):
        axes.annotate(f"c={level['concurrency']}", (x, level["latency_ms"]["p50"]), textcoords="offset points",
                      xytext=(4, -12), fontsize="small")  # fmt: skip
    axes.set_xlabel("throughput (images/s)")
    axes.set_ylabel("latency (ms)")
    axes.set_title("HPSv3 endpoint: latency vs throughput")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def soak_curves(raw: dict, path: Path) -> None:
    """Answers per second (10 s buckets) and the server's memory (in all and by part) over the soak."""
    plt = _pyplot()
    figure, (rate, memory) = plt.subplots(2, 1, figsize=(7, 6.5), sharex=True)
    done = np.asarray(raw["done_at_s"])
    edges = np.arange(0, done.max() + 1e-9, 10.0) if done.size else np.zeros(0)  # whole 10 s buckets only
    if edges.size >= 2:
        counts, _ = np.histogram(done, edges)
        rate.step(edges[1:], counts / 10.0, where="post")
    rate.set_ylabel("answers/s")
    rate.set_title("HPSv3 soak: throughput and server memory")
    rate.grid(alpha=0.3)
    samples = raw["memory"]
    if samples:
        times = [sample["t"] for sample in samples]
        names = list(dict.fromkeys(name for sample in samples for name in sample if name != "t"))
        parts = {name: [sample.get(name, 0.0) for sample in samples] for name in names}
        memory.plot(times, np.sum(list(parts.values()), axis=0), ".-", color="black", label="server")
        for name, mib in parts.items():
            memory.plot(times, mib, "-", label=name)
        memory.legend(fontsize="small", ncol=3)
    memory.set_xlabel("time (s)")
    memory.set_ylabel("server memory (MiB)")
    memory.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
