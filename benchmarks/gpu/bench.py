"""The benchmark's phases: peak, parity, per-batch-size sweeps of both paths, latency, end-to-end streams."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import transformers

from hpsv3_benchmarks.gpu.measure import Deadline, latencies_ms, matmul_peak, synchronize, timed_throughput
from hpsv3_benchmarks.gpu.official import official_forward, official_inputs
from hpsv3_benchmarks.gpu.report import Report, best, render, run_facts, summarise
from hpsv3_benchmarks.gpu.shapes import FlopModel, build_model
from hpsv3_benchmarks.gpu.workload import (
    IMAGE_SIZES,
    OFFICIAL_TAIL,
    TEXT_TOKENS,
    Request,
    init_worker,
    length_sorted,
    make_jpegs,
    make_requests,
    official_batch,
    prepare,
)
from hpsv3_serve import engines
from hpsv3_serve.batching import Batch, PreparedItem, collate
from hpsv3_serve.engines.fast_engine import LENGTH_BUCKET


@dataclass(frozen=True)
class Profile:
    """Sizes and counts of one kind of run."""

    size: str
    dtype: str
    official_batches: tuple[int, ...]
    fast_batches: tuple[int, ...]
    items: int  # prepared requests the model-only sweeps draw batches from
    latency_requests: int
    stream_requests: int
    parity_items: int
    tolerance: float  # max |Δ| of mu and log_sigma between the paths
    peak_size: int
    min_seconds: float  # timed rounds per measurement last at least this long …
    max_rounds: int  # … or stop at this many
    warm: bool  # one untimed pass before timing (the self-check only checks that the paths run)
    text_tokens: tuple[int, int]  # range of text ids per request
    image_sizes: tuple[tuple[int, int], ...]


PROFILES = {
    "gpu": Profile(
        size="7b",
        dtype="bfloat16",
        official_batches=(1, 2, 4, 8, 16, 32),
        fast_batches=(1, 8, 16, 32, 64),
        items=64,
        latency_requests=16,
        stream_requests=256,
        parity_items=8,
        tolerance=0.25,  # bf16 through 60 layers, two kernel orders; mu spreads over several units
        peak_size=8192,
        min_seconds=3.0,
        max_rounds=20,
        warm=True,
        text_tokens=TEXT_TOKENS,
        image_sizes=IMAGE_SIZES,
    ),
    "self-check": Profile(
        size="tiny",
        dtype="float32",
        official_batches=(1, 2),
        fast_batches=(1, 2),
        items=2,
        latency_requests=1,
        stream_requests=2,
        parity_items=2,
        tolerance=1e-4,
        peak_size=256,
        min_seconds=0.0,
        max_rounds=1,
        warm=False,
        text_tokens=(40, 60),
        image_sizes=((300, 200), (200, 200)),  # 1120 and 1024 patches: two runs of equal-size images
    ),
}


def environment(device: torch.device, profile: Profile, args: argparse.Namespace) -> dict:
    """What ran where: versions, card, options and the command line."""
    cuda = device.type == "cuda"
    return run_facts(profile, args.self_check, cuda) | {
        "transformers": transformers.__version__,
        "fast_engine": "hpsv3_serve.engines.fast_engine.FastEngine (served by build.py --engine torch)",
        "fast_options": {"compile": args.compile and cuda, "cuda_graphs": args.cuda_graphs and cuda},
        "peak_shape": f"{profile.peak_size}³ {profile.dtype}",
    }


class Bench:
    """The phases of one run, sharing the model, the prepared requests and the report."""

    def __init__(
        self, profile: Profile, device: torch.device, report: Report, workers: int, deadline: Deadline
    ) -> None:
        self.profile, self.device, self.report, self.workers, self.deadline = profile, device, report, workers, deadline
        self.dtype = getattr(torch, profile.dtype)
        self.model = build_model(profile.size, str(device), self.dtype)
        options = report.data["meta"]["fast_options"]
        self.fast = engines.load(
            "fast", model=self.model, compile_layers=options["compile"], cuda_graphs=options["cuda_graphs"]
        )
        self.flops = FlopModel(self.model.config)
        self.preprocessing = f"in {workers} worker process{'es' if workers != 1 else ''}"

    def item_flops(self, items: list[PreparedItem]) -> float:
        return sum(self.flops.image(len(item.image.patches), len(item.input_ids)) for item in items)

    def run_fast(self, batch: Batch) -> torch.Tensor:
        """The served engine on a batch; when it drops torch.compile or CUDA graphs (an unseen stack), the report
        says so."""
        seen = len(self.fast.fallbacks)
        scores = self.fast.forward(batch)
        for message in self.fast.fallbacks[seen:]:
            self.report.data["meta"]["fast_options"] = self.fast.options
            self.report.append("errors", f"fast engine {message}")
        return scores

    def run_official(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return official_forward(self.model, inputs, self.device)

    def parity(self, items: list[PreparedItem]) -> None:
        """Both paths (and the project's reference forward) on the same mixed-size batch."""
        items = items[: self.profile.parity_items]
        official = self.run_official(official_inputs(official_batch(items))).float().cpu().numpy()
        batch = collate(items)
        fast = self.run_fast(batch).float().cpu().numpy()
        with torch.inference_mode():
            reference = self.model(
                *(torch.from_numpy(a).to(self.device) for a in (batch.input_ids, batch.attention_mask)),
                torch.from_numpy(batch.reward_index).to(self.device),
                torch.from_numpy(batch.pixel_values).to(self.device),
                torch.from_numpy(batch.image_grid_thw).to(self.device),
            )
        reference = reference.float().cpu().numpy()
        delta = np.abs(np.stack([fast - official, reference - official]))
        tolerance = self.profile.tolerance
        self.report.set(
            "parity",
            {
                "items": len(items),
                "official": official.tolist(),
                "fast": fast.tolist(),
                "reference": reference.tolist(),
                "max_abs_mu": float(delta[..., 0].max()),
                "max_abs_log_sigma": float(delta[..., 1].max()),
                "mu_std": float(official[:, 0].std()),
                "tolerance": tolerance,
                "ok": bool(np.isfinite(official).all() and delta.max() <= tolerance),
            },
        )

    def sweep(self, key: str, batch_sizes: tuple[int, ...], items: list[PreparedItem], reserve: float) -> None:
        """images/s and TFLOP/s per batch size; stops at out-of-memory or when `reserve` s would be eaten."""
        peak = self.report.data["peak_tflops"]
        last_seconds = 0.0
        for size in batch_sizes:
            if self.deadline.left() < reserve + 3 * last_seconds:
                self.report.append(key, {"batch": size, "error": "skipped: time budget"})
                continue
            if key == "official":
                groups = [items[i : i + size] for i in range(0, len(items) - size + 1, size)]
                batches: list = [official_inputs(official_batch(group)) for group in groups]
                run: Callable = self.run_official
                padded = sum(
                    len(group) * (max(len(item.input_ids) for item in group) + len(OFFICIAL_TAIL)) for group in groups
                )
            else:
                groups = [group for group in length_sorted(items, size) if len(group) == size]
                batches, run = [collate(group) for group in groups], self.run_fast
                padded = sum(
                    len(group) * -(-max(len(i.input_ids) for i in group) // LENGTH_BUCKET) * LENGTH_BUCKET
                    for group in groups
                )
            started = time.perf_counter()
            try:
                seconds, rounds = timed_throughput(
                    run, batches, self.device, self.profile.min_seconds, self.profile.max_rounds, self.profile.warm
                )
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                self.report.append(key, {"batch": size, "error": "out of memory"})
                break
            last_seconds = time.perf_counter() - started
            images = [item for group in groups for item in group]
            tflops = rounds * self.item_flops(images) / seconds / 1e12
            tokens = sum(len(item.input_ids) for item in images)
            self.report.append(
                key,
                {
                    "batch": size,
                    "images_per_s": rounds * len(images) / seconds,
                    "tflops": tflops,
                    "pct_peak": 100 * tflops / peak,
                    "padding_pct": 100 * (1 - tokens / padded),
                    "rounds": rounds,
                    "seconds": seconds,
                },
            )

    def latency(self, items: list[PreparedItem], requests: list[Request]) -> None:
        """Batch-1 latency to the scores on the host: both paths from a prepared request, and the fast path
        from JPEG bytes (decode, resize and patchify in the calling process first)."""
        count = self.profile.latency_requests
        paths = {
            "fast": (lambda item: self.run_fast(collate([item])).cpu().numpy(), items[:count]),
            "fast_from_jpeg": (
                lambda request: self.run_fast(collate([prepare(request)])).cpu().numpy(),
                requests[:count],
            ),
            "official": (
                lambda item: self.run_official(official_inputs(official_batch([item]))).cpu().numpy(),
                items[:count],
            ),
        }
        result = {}
        for name, (run, inputs) in paths.items():
            if self.deadline.left() < 30:
                break
            times = latencies_ms(run, inputs, self.profile.warm)
            result[name] = {
                "p50_ms": float(np.median(times)),
                "p90_ms": float(np.quantile(times, 0.9)),
                "n": len(times),
            }
            self.report.set("latency", result)

    def stream_fast(self, pool: multiprocessing.pool.Pool, requests: list, size: int) -> float:
        """Requests → workers (decode, resize, patchify) → length-sorted batches of `size` → fast path."""
        window, pending, outputs = 4 * size, [], []
        for item in pool.imap(prepare, requests, chunksize=2):
            pending.append(item)
            if len(pending) == window:
                outputs += [self.run_fast(collate(group)) for group in length_sorted(pending, size)]
                pending = []
        outputs += [self.run_fast(collate(group)) for group in length_sorted(pending, size)]
        return float(torch.cat(outputs).sum().cpu())

    def stream_official(self, requests: list, size: int) -> float:
        """The official inferencer's loop: each batch preprocessed in the calling process, then scored."""
        total = 0.0
        for start in range(0, len(requests), size):
            items = [prepare(request) for request in requests[start : start + size]]
            total += float(self.run_official(official_inputs(official_batch(items))).sum().cpu())
        return total

    def streams(self, pool: multiprocessing.pool.Pool, requests: list) -> None:
        """End-to-end images/s from JPEG bytes, each path at its best model-only batch size."""
        result = {}
        plans = (
            ("fast", best(self.report.data.get("fast", [])), lambda size: self.stream_fast(pool, requests, size)),
            ("official", best(self.report.data.get("official", [])), lambda size: self.stream_official(requests, size)),
        )
        for name, row, run in plans:
            if row is None or self.deadline.left() < 2 * len(requests) / row["images_per_s"] + 15:
                continue
            if self.profile.warm:
                run(row["batch"])  # graphs for every length bucket, worker start-up
            synchronize(self.device)
            start = time.perf_counter()
            run(row["batch"])
            synchronize(self.device)
            result[name] = {
                "batch": row["batch"],
                "images": len(requests),
                "images_per_s": len(requests) / (time.perf_counter() - start),
                "preprocessing": self.preprocessing if name == "fast" else "in the calling process",
            }
            self.report.set("stream", result)


def run(args: argparse.Namespace) -> int:
    """All phases in order under the `--budget` deadline; 1 when the paths disagree (or a self-check phase failed)."""
    deadline = Deadline.after(args.budget)
    profile = PROFILES["self-check" if args.self_check else "gpu"]
    device = torch.device("cpu" if args.self_check or not torch.cuda.is_available() else "cuda")
    if device.type != "cuda" and not args.self_check:
        print("no CUDA device here: run with --self-check for the CPU check", file=sys.stderr)
        return 2
    report = Report(args.out, environment(device, profile, args))
    workers = args.workers or max(1, min(12, (os.cpu_count() or 2) - 2))
    jpegs = make_jpegs(2 * len(profile.image_sizes), sizes=profile.image_sizes)
    init_worker(jpegs)  # the official loop prepares in this process
    context = multiprocessing.get_context("spawn")  # never fork a process that holds a CUDA context
    started = time.perf_counter()

    def phase(name: str, step: Callable[[], object]) -> None:
        """Run one phase; a failure is recorded and the next phase still runs."""
        try:
            step()
        except Exception as exc:
            report.append("errors", f"{name}: {type(exc).__name__}: {exc}"[:500])
            traceback.print_exc()
        report.data.setdefault("phase_seconds", {})[name] = round(time.perf_counter() - started, 1)

    with context.Pool(workers, init_worker, (jpegs,)) as pool:
        items = pool.map(prepare, make_requests(profile.items, len(jpegs), profile.text_tokens, seed=1))
        report.set("peak_tflops", matmul_peak(device, getattr(torch, profile.dtype), profile.peak_size, 10))
        bench = Bench(profile, device, report, workers, deadline)
        report.set("flops_per_image", bench.item_flops(items) / len(items))
        phase("parity", lambda: bench.parity(items))
        phase(
            "official sweep", lambda: bench.sweep("official", profile.official_batches, items, 0.45 * deadline.left())
        )
        phase("fast sweep", lambda: bench.sweep("fast", profile.fast_batches, items, reserve=60))
        requests = make_requests(profile.stream_requests, len(jpegs), profile.text_tokens, seed=2)
        phase("latency", lambda: bench.latency(items, requests))
        phase("streams", lambda: bench.streams(pool, requests))
    report.set("summary", summarise(report.data))
    print(render(report.data))
    failed = not report.data.get("parity", {}).get("ok") or (args.self_check and report.data["errors"])
    return 1 if failed else 0
