"""The served endpoint on one card: the GPU target (`build.py --target gpu --engine torch`) under the real
tritonserver, measured over gRPC from this process with JPEG bytes and prompt strings.

One run: HPSv3 with random weights at the profile's size, written as an official-layout checkpoint on a
base folder of that size (the tiny tokenizer: the lent machine has no Qwen tokenizer); the in-process
fast engine's scores of a few requests; the repository rendered and served (dynamic batching, the fast
engine with CUDA graphs inside the `reward_model` step); then the served scores of the same requests
against the in-process ones, images/s per client concurrency, and batch-1 latency. Results land in
OUT/endpoint.json (rewritten after every phase) and OUT/endpoint.txt; the server's log in
OUT/tritonserver.log. `--self-check` does it on CPU at tiny shapes in fp32, the served scores equal to
the in-process ones within 1e-4: that is what `make test` runs.

On a lent GPU machine run `bash benchmarks/gpu/run.sh --endpoint` (docs/PERFORMANCE.md): the Python
backend's stub needs numpy 1.x, so run.sh makes a virtual environment over the machine's packages with
the carried numpy 1.26 and the trimmed tritonserver in front.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpsv3_benchmarks.gpu.report import Report, run_facts
from hpsv3_serve.defaults import DEFAULT_MAX_BATCH_SIZE

PROMPT_TEXT = (
    "a photo of a red fox in the snow at dawn, golden light, sharp focus, detailed fur, 35mm film, "
    "an oil painting of a lighthouse on a cliff during a storm, dramatic waves, moody sky, high contrast, "
    "a cozy reading nook with plants and warm lamps, isometric, soft shadows, pastel colours, 4k render"
)


@dataclass(frozen=True)
class EndpointProfile:
    """Sizes and counts of one kind of run."""

    size: str
    dtype: str
    device: str
    concurrency: tuple[int, ...]  # client requests in flight, one round each
    round_requests: int  # requests per timed round
    latency_requests: int
    parity_requests: int
    tolerance: float  # max |Δ| of mu and log_sigma, served against in-process
    image_sizes: tuple[tuple[int, int], ...]
    max_batch_size: int  # the server's dynamic batches


PROFILES = {
    "gpu": EndpointProfile(
        size="7b",
        dtype="bfloat16",
        device="cuda",
        concurrency=(1, 8, 32, 64),
        round_requests=256,
        latency_requests=24,
        parity_requests=8,
        tolerance=0.25,  # bf16 through 60 layers; served batches differ from in-process ones
        image_sizes=((1024, 1024), (1920, 1080), (768, 1344), (1216, 832)),
        max_batch_size=DEFAULT_MAX_BATCH_SIZE,  # what `hpsv3 serve` deploys
    ),
    "self-check": EndpointProfile(
        size="tiny",
        dtype="float32",
        device="cpu",
        concurrency=(1, 4),
        round_requests=8,
        latency_requests=2,
        parity_requests=4,
        tolerance=1e-4,
        image_sizes=((300, 200), (200, 200)),
        max_batch_size=4,
    ),
}


def make_prompts(count: int, seed: int = 0) -> list[str]:
    """`count` prompts of 8–40 words drawn from a fixed list (seeded)."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(PROMPT_TEXT.split(), int(rng.integers(8, 41)))) for _ in range(count)]


def render(data: dict) -> str:
    """The run as a few lines of text."""
    meta = data["meta"]
    lines = [
        f"HPSv3 served endpoint ({'CPU self-check, tiny shapes' if meta['self_check'] else meta['size']})",
        f"device: {meta['device_name']}  torch {meta['torch']}  numpy {meta['numpy']}  dtype {meta['dtype']}",
        f"server: {meta['server']}",
    ]
    if load := data.get("load_s"):
        lines.append("setup: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in load.items()))
    if parity := data.get("parity"):
        lines.append(
            f"served vs in-process over {parity['requests']} requests: max |Δmu| {parity['max_abs_mu']:.3g}, "
            f"max |Δlog_sigma| {parity['max_abs_log_sigma']:.3g} (mu spread {parity['mu_std']:.3g}); "
            f"{'ok' if parity['ok'] else 'FAILED'} at tolerance {parity['tolerance']}"
        )
    if rounds := data.get("throughput"):
        lines += ["throughput (JPEG bytes + prompt over gRPC):", "  in flight  images/s  failed"]
        lines += [
            f"  {row['concurrency']:>9}  {row.get('images_per_s', 0):>8.2f}  {row.get('failed', row.get('error'))}"
            for row in rounds
        ]
    if latency := data.get("latency"):
        lines.append(f"batch-1 latency: p50 {latency['p50_ms']:.1f} ms, p90 {latency['p90_ms']:.1f} ms")
    lines += [f"error: {error}" for error in data["errors"]]
    return "\n".join(lines)


def environment(profile: EndpointProfile, args: argparse.Namespace) -> dict:
    cuda = profile.device == "cuda"
    return run_facts(profile, args.self_check, cuda) | {
        "numpy": np.__version__,
        "server": "tritonserver (nvidia-pytriton) · build.py --target gpu --engine torch · "
        f"CUDA graphs {'on' if cuda and args.cuda_graphs else 'off'}",
    }


def write_model(profile: EndpointProfile, folder: Path) -> tuple[Path, Path, Any]:
    """A random-weight model at the profile's size, its official-layout checkpoint and its base folder."""
    import torch

    from hpsv3_benchmarks.gpu.shapes import SIZES, build_model
    from hpsv3_serve.checkpoint import save_official
    from hpsv3_serve.tiny import write_base

    base = folder / "base"
    write_base(base)
    (base / "config.json").write_text(json.dumps(SIZES[profile.size], indent=2) + "\n", encoding="utf-8")
    model = build_model(profile.size, profile.device, getattr(torch, profile.dtype))
    checkpoint = folder / "HPSv3-random.safetensors"
    save_official({name: tensor.cpu() for name, tensor in model.state_dict().items()}, checkpoint)
    return checkpoint, base, model


def in_process_scores(model: Any, base: Path, images: list[bytes], prompts: list[str]) -> np.ndarray:
    """[n, 2] mu and log_sigma from the fast engine on `model` in this process (no CUDA graphs)."""
    from hpsv3_serve import Scorer, engines
    from hpsv3_serve.prompt import PromptTokenizer

    with Scorer(engines.load("fast", model=model), PromptTokenizer.from_base(base)) as scorer:
        results = scorer.score(images, prompts)
    return np.array([[result.mu, result.log_sigma] for result in results], np.float64)


def served_scores(url: str, images: list[bytes], prompts: list[str], concurrency: int) -> tuple[np.ndarray, int]:
    """[n, 2] mu and log_sigma from the endpoint (NaN where an item failed), and how many failed."""
    from hpsv3_client import HPSv3Client

    results = HPSv3Client(url, concurrency=concurrency, timeout_s=300).score(images, prompts)
    scores = np.array([[r.mu, r.log_sigma] if r.ok else [np.nan, np.nan] for r in results], np.float64)
    return scores, sum(not r.ok for r in results)


def free_cuda_cache() -> None:
    import torch

    gc.collect()  # the fused weights and their model may sit in reference cycles
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run(args: argparse.Namespace) -> int:
    """Every phase in order; 1 when the served scores disagree with the in-process ones or a phase failed."""
    from hpsv3_benchmarks.gpu.workload import make_jpegs
    from hpsv3_repository.build import render as render_repository
    from hpsv3_repository.build import settings_for_checkpoint
    from hpsv3_repository.launcher import TritonServer, free_port

    profile = PROFILES["self-check" if args.self_check else "gpu"]
    report = Report(args.out, environment(profile, args), "endpoint", render)
    folder = Path(tempfile.mkdtemp(prefix="hpsv3-endpoint-"))
    images = make_jpegs(2 * len(profile.image_sizes), sizes=profile.image_sizes)
    count = max(profile.round_requests, profile.parity_requests)
    jpegs = [images[i % len(images)] for i in range(count)]
    prompts = make_prompts(count)
    setup: dict[str, float] = {}

    def record(name: str, started: float) -> None:
        setup[name] = time.perf_counter() - started
        report.set("load_s", setup)

    server = None
    try:
        started = time.perf_counter()
        checkpoint, base, model = write_model(profile, folder)
        record("random checkpoint written", started)
        n, started = profile.parity_requests, time.perf_counter()
        reference = in_process_scores(model, base, jpegs[:n], prompts[:n])
        record("in-process scores", started)
        del model  # the card's memory goes to the server
        free_cuda_cache()
        settings = settings_for_checkpoint(
            checkpoint, base, device=profile.device, torch_dtype=profile.dtype, cuda_graphs=args.cuda_graphs,
            max_batch_size=profile.max_batch_size,
        )  # fmt: skip
        repository = render_repository("gpu", settings, folder / "repository", "torch")
        server = TritonServer(
            repository, grpc_port=free_port(), http_port=free_port(), metrics_port=None, workdir=folder / "triton"
        )
        started = time.perf_counter()
        server.start(timeout_s=args.start_timeout)
        record("server started (model loaded)", started)
        served, failed = served_scores(server.grpc_url, jpegs[:n], prompts[:n], concurrency=n)
        delta = np.abs(served - reference)
        report.set(
            "parity",
            {
                "requests": n,
                "failed": failed,
                "in_process": reference.tolist(),
                "served": served.tolist(),
                "max_abs_mu": float(np.nanmax(delta[:, 0])),
                "max_abs_log_sigma": float(np.nanmax(delta[:, 1])),
                "mu_std": float(reference[:, 0].std()),
                "tolerance": profile.tolerance,
                "ok": bool(failed == 0 and np.isfinite(served).all() and delta.max() <= profile.tolerance),
            },
        )
        for concurrency in profile.concurrency:
            served_scores(server.grpc_url, jpegs[: 2 * concurrency], prompts[: 2 * concurrency], concurrency)
            started = time.perf_counter()
            _, failed = served_scores(server.grpc_url, jpegs, prompts, concurrency)
            seconds = time.perf_counter() - started
            report.append(
                "throughput",
                {"concurrency": concurrency, "images": len(jpegs), "seconds": seconds,
                 "images_per_s": len(jpegs) / seconds, "failed": failed},
            )  # fmt: skip
        times = []
        for image, prompt in zip(jpegs[: profile.latency_requests], prompts, strict=False):
            started = time.perf_counter()
            served_scores(server.grpc_url, [image], [prompt], 1)
            times.append((time.perf_counter() - started) * 1e3)
        report.set(
            "latency",
            {"p50_ms": float(np.median(times)), "p90_ms": float(np.quantile(times, 0.9)), "n": len(times)},
        )
    except Exception as exc:
        report.append("errors", f"{type(exc).__name__}: {exc}"[:2000])
        traceback.print_exc()
    finally:
        if server is not None:
            server.stop()
            if server.log_path is not None and server.log_path.is_file():
                shutil.copy(server.log_path, args.out / "tritonserver.log")
        shutil.rmtree(folder, ignore_errors=True)
    print(render(report.data))
    return 0 if report.data.get("parity", {}).get("ok") and not report.data["errors"] else 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m hpsv3_benchmarks.gpu.endpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=Path("build/gpu_endpoint"), help="folder for the JSON and text")
    parser.add_argument("--self-check", action="store_true", help="CPU, tiny shapes, fp32: served = in-process")
    parser.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false", help="serve without graphs")
    parser.add_argument(
        "--start-timeout", type=float, default=300.0, help="seconds for the server to load the model (default 300)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
