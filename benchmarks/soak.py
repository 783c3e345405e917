"""`soak`: sustained load on a local endpoint for --minutes, every request accounted for.

First each (image, prompt) of the rotating set is scored once, alone: those are the expected answers. Then
--concurrency closed-loop workers send the set round and round until the time is up, and every answer is
checked against its expected one (|Δmu| and |Δsigma| ≤ --tolerance: dynamic batching must not change or
mix up results). Each request ends as correct, wrong, or failed with the server's status; lost = sent − the
three, and must be 0. The memory of the server (the process listening on the endpoint's port) is sampled every
--sample-s in parts that add up with nothing counted twice: tritonserver, each model's Python-backend stubs
(proportional set size without shared memory) and the backend's shared-memory regions; the report gives start,
the value after warm-up (the first fifth of the run), peak, end and the trend after warm-up, for the server and
for each part, so growth shows, and where.

--kill MODEL@SECONDS injects a fault: at that time the soak SIGKILLs one Python-backend stub of MODEL (e.g.
language_model) of the local server; `hpsv3 serve`'s watchdog reloads the model and the client retries what
failed meanwhile. The report gives the recovery time: from the kill until the first request sent after it
was answered.

Only against a loopback endpoint (it saturates the server) and for at most 120 minutes (MAX_MINUTES).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import os
import signal
import time

import numpy as np

from hpsv3_repository.processes import listener_pid, python_stubs, server_memory
from hpsv3_serve.network import is_loopback

from .charts import soak_curves
from .formats import DataError
from .latency import load_images
from .report import Report, number, table

MAX_MINUTES = 120
FIRST = 5


def _check_local(endpoint: str) -> int:
    """The port of a loopback endpoint; DataError for anything else."""
    host, _, port = endpoint.rpartition(":")
    if not is_loopback(host) or not port.isdigit():
        raise DataError(f"soak runs only against a loopback endpoint (127.0.0.1:PORT), not {endpoint!r}")
    return int(port)


async def _expected(client, items: list[tuple[str, bytes, str]]) -> list[tuple[float, float]]:
    answers = []
    for name, data, prompt in items:
        (result,) = await client.score_async([data], [prompt])
        if result.error:
            raise DataError(f"{name}: the endpoint cannot score it even alone ({result.error})")
        answers.append((result.mu, result.sigma))
    return answers


async def _sample_memory(port: int, interval_s: float, samples: list[dict[str, float]], stop: asyncio.Event):
    """Every `interval_s` until `stop`: {"t": seconds, part: MiB, ...} (server_memory's parts)."""
    pid = listener_pid(port)
    started = time.perf_counter()
    while pid is not None:
        samples.append({"t": time.perf_counter() - started, **server_memory(pid)})
        try:
            await asyncio.wait_for(stop.wait(), interval_s)
            return
        except asyncio.TimeoutError:
            continue


def parse_kill(text: str) -> tuple[str, float]:
    """ "language_model@30" → ("language_model", 30.0)."""
    model, _, seconds = text.partition("@")
    try:
        return model, float(seconds)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--kill takes MODEL@SECONDS (e.g. language_model@30), not {text!r}") from None


async def _kill_stub(port: int, model: str, at_s: float, started: float, kills: list[dict]) -> None:
    """SIGKILL one stub of `model` of the server on `port` at `at_s` seconds into the run."""
    await asyncio.sleep(max(0.0, started + at_s - time.perf_counter()))
    pid = listener_pid(port)
    stubs = python_stubs(pid).get(model, []) if pid is not None else []
    if not stubs:
        raise DataError(f"--kill {model}@{at_s:g}: no Python-backend stub of {model!r} under the server on {port}")
    os.kill(stubs[0], signal.SIGKILL)
    kills.append({"model": model, "pid": stubs[0], "at_s": time.perf_counter() - started})


async def soak(args: argparse.Namespace, items: list[tuple[str, bytes, str]], port: int) -> dict:
    """Run the load; returns every count, latency and memory sample."""
    from hpsv3_client import HPSv3Client

    client = HPSv3Client(args.endpoint, model=args.model, concurrency=args.concurrency, timeout_s=args.timeout)
    async with client as c:
        await c.wait_ready(timeout_s=60)
        expected = await _expected(c, items)
        counts: collections.Counter = collections.Counter()
        reasons: collections.Counter = collections.Counter()
        latencies: list[float] = []
        done_at: list[float] = []
        kills: list[dict] = []
        recovered_at: list[float] = []
        samples: list[dict[str, float]] = []
        stop = asyncio.Event()
        rotation = itertools.count()
        started = time.perf_counter()
        deadline = started + args.minutes * 60

        async def worker() -> None:
            while time.perf_counter() < deadline:
                index = next(rotation) % len(items)
                name, data, prompt = items[index]
                counts["sent"] += 1
                sent = time.perf_counter()
                after_kill = bool(kills) and not recovered_at
                (result,) = await c.score_async([data], [prompt])
                latencies.append(time.perf_counter() - sent)
                done_at.append(time.perf_counter() - started)
                if after_kill and not result.error and not recovered_at:
                    recovered_at.append(done_at[-1])
                if result.error:
                    counts["failed"] += 1
                    reasons[result.error.split(": ", 1)[-1][:160]] += 1  # the reason, not the item's name
                    continue
                mu, sigma = expected[index]
                ok = abs(result.mu - mu) <= args.tolerance and abs(result.sigma - sigma) <= args.tolerance
                counts["correct" if ok else "wrong"] += 1
                if not ok:
                    reasons[f"{name}: mu {result.mu:.6f} ≠ {mu:.6f} expected"] += 1

        sampler = asyncio.ensure_future(_sample_memory(port, args.sample_s, samples, stop))
        faults = [_kill_stub(port, model, at_s, started, kills) for model, at_s in args.kill]
        await asyncio.gather(*(worker() for _ in range(args.concurrency)), *faults)
        wall = time.perf_counter() - started
        stop.set()
        await sampler
    counts["lost"] = counts["sent"] - counts["correct"] - counts["wrong"] - counts["failed"]
    for kill in kills:
        kill["recovery_s"] = next((t - kill["at_s"] for t in recovered_at if t >= kill["at_s"]), None)
    return {"counts": dict(counts), "reasons": reasons.most_common(FIRST), "wall_s": wall,
            "latencies_s": latencies, "done_at_s": done_at, "memory": samples, "faults": kills}  # fmt: skip


def _trend_mib_per_min(times: np.ndarray, mib: np.ndarray) -> float | None:
    """Least-squares slope after the first fifth of the run (warm-up), MiB per minute."""
    steady = times >= times[-1] / 5
    return float(np.polyfit(times[steady], mib[steady], 1)[0] * 60) if steady.sum() >= 3 else None


def _summary(times: np.ndarray, mib: np.ndarray) -> dict:
    warm = int(np.argmax(times >= times[-1] / 5))  # the first sample after warm-up
    return {"start_mib": float(mib[0]), "warm_mib": float(mib[warm]), "peak_mib": float(mib.max()),
            "end_mib": float(mib[-1]), "trend_mib_per_min": _trend_mib_per_min(times, mib)}  # fmt: skip


def memory_summary(samples: list[dict[str, float]]) -> dict:
    """Start, peak and end MiB and the trend after warm-up, of the whole server and of each part."""
    if not samples:
        return {"samples": 0}
    times = np.array([sample["t"] for sample in samples])
    names = list(dict.fromkeys(name for sample in samples for name in sample if name != "t"))
    parts = {name: np.array([sample.get(name, 0.0) for sample in samples]) for name in names}
    total = np.sum(list(parts.values()), axis=0)
    return {"samples": len(samples), **_summary(times, total),
            "parts": {name: _summary(times, mib) for name, mib in parts.items()}}  # fmt: skip


def markdown(result: dict) -> str:
    counts, memory, latency = result["counts"], result["memory"], result["latency_ms"]
    lines = [
        f"# Soak: {result['endpoint']}, {result['minutes']:g} min at concurrency {result['concurrency']}",
        "",
        f"Rotating set: {result['items']} (image, prompt) items, each checked against its answer alone "
        f"(tolerance {result['tolerance']:g}).",
        "",
        *table(["sent", "correct", "wrong", "failed", "lost", "images/s", "p50 ms", "p99 ms"],
               [[counts.get(k, 0) for k in ("sent", "correct", "wrong", "failed", "lost")]
                + [number(result["throughput_per_s"], 2), number(latency["p50"], 1), number(latency["p99"], 1)]],
               numeric_from=0),
        "",
        "Server memory (MiB; tritonserver and stubs: proportional set size; shared_memory: /dev/shm regions):",
        "",
        *table(["part", "start", "after warm-up", "peak", "end", "trend MiB/min (after warm-up)"],
               [[name, *(number(summary.get(k), 1) for k in ("start_mib", "warm_mib", "peak_mib", "end_mib")),
                 number(summary.get("trend_mib_per_min"), 2)]
                for name, summary in [*memory.get("parts", {}).items(), ("**server**", memory)]],
               numeric_from=1),
        "",
        f"{memory['samples']} samples, every {result['sample_s']:g} s; warm-up: the first fifth of the run.",
    ]  # fmt: skip
    if result["faults"]:
        lines += ["", "Faults injected:", ""]
        lines += table(["model", "stub pid", "killed at s", "recovered after s"],
                       [[f["model"], f["pid"], number(f["at_s"], 1), number(f["recovery_s"], 2)]
                        for f in result["faults"]])  # fmt: skip
    if result["reasons"]:
        lines += ["", "Failures and mismatches (most frequent first):", ""]
        lines += [f"- {count} × `{reason}`" for reason, count in result["reasons"]]
    return "\n".join(lines) + "\n"


def run_soak(args: argparse.Namespace) -> Report:
    port = _check_local(args.endpoint)
    if not 0 < args.minutes <= MAX_MINUTES:
        raise DataError(f"--minutes must be in (0, {MAX_MINUTES}], got {args.minutes}")
    images = load_images(args.images)
    prompts = args.prompt or ["a photo of a cat sitting on a sofa"]
    items = [(name, data, prompt) for prompt in prompts for name, data in images.items()]
    raw = asyncio.run(soak(args, items, port))
    latencies = np.asarray(raw["latencies_s"]) * 1000
    counts = raw["counts"]
    result = {
        "task": "soak", "endpoint": args.endpoint, "minutes": args.minutes, "concurrency": args.concurrency,
        "items": len(items), "tolerance": args.tolerance, "sample_s": args.sample_s, "counts": counts,
        "reasons": raw["reasons"],
        "throughput_per_s": counts.get("correct", 0) / raw["wall_s"],
        "latency_ms": dict(zip(("p50", "p99"), np.percentile(latencies, [50, 99]).tolist(), strict=True)),
        "memory": memory_summary(raw["memory"]), "memory_samples": raw["memory"], "faults": raw["faults"], "run": {},
    }  # fmt: skip
    failed = counts.get("wrong", 0) + counts.get("failed", 0) + counts.get("lost", 0)
    return Report("soak", result, markdown(result), lambda path: soak_curves(raw, path), failed=failed)
