"""`latency`: a concurrency sweep against the endpoint → throughput, p50/p90/p99, errors, and where the server
spent the time (queue and compute of each ensemble step, from Triton's statistics API).

Load comes from perf_analyzer when it is on PATH (--load-generator auto) and from our asyncio generator
(`loadgen.drive`, closed loop through HPSv3Client) otherwise. Each finished level is appended to
latency-levels.jsonl in --output; a rerun with the same settings keeps those levels and measures the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from . import perf_analyzer
from .cache import JsonlLog, read_jsonl
from .charts import latency_curve
from .formats import DataError, image_files
from .loadgen import drive
from .report import Report, number, table
from .scoring import FIRST
from .triton_stats import SERVER_MODELS, add_delta, server_breakdown, server_snapshot, snapshot_after, step_cells

SYNTHETIC_SIZES = ((1024, 1024), (1344, 768), (768, 1344), (512, 512))  # typical generator outputs
LEVELS_FILE = "latency-levels.jsonl"


def synthetic_images() -> dict[str, bytes]:
    """Seeded PNGs of typical generator sizes (gradients + noise, so they compress like pictures)."""
    rng = np.random.default_rng(0)
    images = {}
    for width, height in SYNTHETIC_SIZES:
        x, y = np.meshgrid(np.linspace(0, 255, width), np.linspace(0, 255, height))
        pixels = np.stack([x, y, (x + y) / 2], axis=-1) + rng.normal(0, 12, (height, width, 3))
        buffer = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
        images[f"synthetic {width}x{height}.png"] = buffer.getvalue()
    return images


def load_images(paths: list[Path]) -> dict[str, bytes]:
    """name → bytes of the --images files (folders give their images), or the synthetic set without any."""
    if not paths:
        return synthetic_images()
    files = image_files(paths)
    return {str(path): path.read_bytes() for path in files}


def _percentiles(latencies_s: list[float]) -> dict[str, float]:
    p50, p90, p99 = np.percentile(np.asarray(latencies_s) * 1000, [50, 90, 99]).tolist()
    return {"p50": p50, "p90": p90, "p99": p99, "mean": 1000 * float(np.mean(latencies_s))}


def measure_asyncio(args: argparse.Namespace, images: list[bytes], concurrency: int) -> dict:
    """One level with our generator: --requests requests cycling through the images."""
    load = [images[i % len(images)] for i in range(args.requests)]
    prompts = [args.prompt] * len(load)
    wall, latencies, errors = asyncio.run(drive(args.endpoint, load, prompts, concurrency, args.timeout, args.model))
    return {
        "requests": len(load),
        "errors": len(errors),
        "error_examples": errors[:FIRST],
        "throughput_per_s": (len(load) - len(errors)) / wall,
        "latency_ms": _percentiles(latencies),
    }


def load_generator(args: argparse.Namespace, name: str, images: list[bytes]) -> Callable[[int], dict]:
    """concurrency → the level's client-side numbers, measured by perf_analyzer or the asyncio generator."""
    if name == "asyncio":
        return lambda concurrency: measure_asyncio(args, images, concurrency)
    data_file = perf_analyzer.write_input_data(images, args.prompt, args.output)

    def measure(concurrency: int) -> dict:
        level = perf_analyzer.measure(
            args.endpoint, args.model, concurrency, args.requests, args.stability, data_file, args.output
        )
        return level | {"errors": 0, "error_examples": []}  # it exits at the first error (raised as ScoringError)

    return measure


def measure_level(url: str, measure: Callable[[int], dict], concurrency: int) -> dict:
    """One level, with the server statistics over it."""
    totals: dict = {}
    before, started = server_snapshot(url), time.perf_counter()
    level = measure(concurrency)
    wall = time.perf_counter() - started
    answered = level["requests"] - level["errors"] if level["requests"] else None
    add_delta(totals, before, snapshot_after(url, before, answered))
    return {"concurrency": concurrency, **level, "server": server_breakdown(totals, wall, level["latency_ms"]["mean"])}


async def _wait_ready(args: argparse.Namespace) -> None:
    """A clear error (ServerUnavailableError, ModelNotReadyError) before anything else when nothing serves."""
    from hpsv3_client import HPSv3Client

    async with HPSv3Client(args.endpoint, model=args.model) as client:
        await client.wait_ready(timeout_s=30)


def _generator(choice: str) -> str:
    if choice == "auto":
        return "perf_analyzer" if perf_analyzer.find() else "asyncio"
    if choice == "perf_analyzer" and not perf_analyzer.find():
        raise DataError(
            "--load-generator perf_analyzer: no perf_analyzer on PATH; `bash scripts/setup_perf_analyzer.sh` installs "
            "it into build/perf_analyzer (then add build/perf_analyzer/bin to PATH), or use Triton's SDK image"
        )
    return choice


def markdown(result: dict) -> str:
    levels = result["levels"]
    rows = [
        [lv["concurrency"], lv["requests"] or "—", lv["errors"], number(lv["throughput_per_s"], 2),
         *(number(lv["latency_ms"][k], 1) for k in ("p50", "p90", "p99", "mean"))]
        for lv in levels
    ]  # fmt: skip
    lines = [
        f"# Latency sweep: {result['endpoint']} (model {result['model']}, load by {result['load_generator']})",
        "",
        f"{result['requests_per_level']} requests per level; images: {', '.join(result['images'])}.",
        "",
        *table(["concurrency", "requests", "errors", "images/s", "p50 ms", "p90 ms", "p99 ms", "mean ms"], rows),
        "",
        "Server side (Triton statistics over each level): queue / compute ms per request and images per execution "
        "of each ensemble step; transport/other = client mean latency − server time.",
        "",
    ]
    rows = [
        [lv["concurrency"], number(lv["server"]["server_ms"], 1), number(lv["server"]["transport_other_ms"], 1),
         *step_cells(lv["server"])]
        for lv in levels
    ]  # fmt: skip
    lines += table(["concurrency", "server ms", "transport/other ms", *SERVER_MODELS[1:]], rows)
    errors = [error for lv in levels for error in lv["error_examples"]]
    if errors:
        lines += ["", "Errors (first few): " + "; ".join(f"`{e}`" for e in errors[:FIRST])]
    return "\n".join(lines) + "\n"


def run_latency(args: argparse.Namespace) -> Report:
    generator = _generator(args.load_generator)
    named = load_images(args.images)
    images = list(named.values())
    settings = {"endpoint": args.endpoint, "model": args.model, "load_generator": generator,
                "requests_per_level": args.requests, "images": list(named), "prompt": args.prompt}  # fmt: skip
    if generator == "perf_analyzer":
        settings["stability_percent"] = args.stability
    log_path = args.output / LEVELS_FILE
    done = {r["concurrency"]: r["level"] for r in read_jsonl(log_path) if r["settings"] == settings}
    todo = [c for c in args.sweep if c not in done]
    asyncio.run(_wait_ready(args))
    if todo and generator == "asyncio":  # warm up: first requests pay for loading and allocation
        warm = images * 2
        asyncio.run(drive(args.endpoint, warm, [args.prompt] * len(warm), max(todo), args.timeout, args.model))
    measure = load_generator(args, generator, images)
    log = JsonlLog(log_path)
    try:
        for concurrency in tqdm(todo, desc="concurrency levels", unit="level", disable=None):
            done[concurrency] = measure_level(args.endpoint, measure, concurrency)
            log.append({"settings": settings, "concurrency": concurrency, "level": done[concurrency]})
    finally:
        log.close()
    levels = [done[c] for c in args.sweep]
    result = {"task": "latency", **settings, "levels": levels}
    result |= {"run": {"levels_from_log": len(args.sweep) - len(todo), "levels_measured_now": len(todo)}}
    return Report(
        "latency", result, markdown(result), lambda path: latency_curve(levels, path),
        failed=sum(level["errors"] for level in levels),
    )  # fmt: skip
