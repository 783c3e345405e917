"""Benchmark a real-size HPSv3 on one GPU: the official-style forward against the served fast engine.

The fast path is `hpsv3_serve.engines.fast_engine.FastEngine`, built by `engines.load("fast", ...)`: what
`hpsv3 score --device cuda` runs and what the GPU target's `--engine torch` serves inside Triton.

One run, on one card: a bf16 matmul peak, a parity check of the two paths, images/s and achieved
TFLOP/s per batch size for each path, batch-1 latency, and an end-to-end stream from JPEG bytes with
preprocessing in worker processes. Results land in OUT/gpu_bench.json (rewritten after every phase) and
OUT/gpu_bench.txt. `--self-check` runs the same code paths on CPU at tiny shapes (fp32) and fails when
the paths disagree: that is what `make test` runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m hpsv3_benchmarks.gpu",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="On a lent GPU machine run `bash benchmarks/gpu/run.sh` (it sets PYTHONPATH, installs carried "
        "wheels and writes to $OUT); see docs/PERFORMANCE.md. Here: `python -m hpsv3_benchmarks.gpu "
        "--self-check --out build/gpu_bench`.",
    )
    parser.add_argument("--out", type=Path, default=Path("build/gpu_bench"), help="folder for the JSON and text")
    parser.add_argument("--self-check", action="store_true", help="CPU, tiny shapes, fp32: check paths agree")
    parser.add_argument(
        "--budget", type=float, default=400.0, help="seconds (default 400); a phase that would overrun is skipped"
    )
    parser.add_argument("--workers", type=int, default=None, help="preprocessing processes (default: cores − 2)")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="fast path without torch.compile")
    parser.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false", help="fast path without graphs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Parse the options, then load torch and run (so `--help` answers at once)."""
    args = parse_args(argv)
    from hpsv3_benchmarks.gpu.bench import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
