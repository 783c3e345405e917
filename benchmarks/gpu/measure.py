"""Timing primitives: the matmul peak, throughput over batches, per-request latency, and a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")


def synchronize(device: torch.device) -> None:
    """Wait for the device (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int, repeats: int) -> float:
    """TFLOP/s of a `size`³ matrix product in `dtype`: mean of `repeats` after three warm-ups."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e12


@dataclass(frozen=True)
class Deadline:
    """Seconds left of the run's budget, so every phase can skip itself rather than be killed."""

    end: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def left(self) -> float:
        return self.end - time.monotonic()


def timed_throughput(
    run: Callable[[T], torch.Tensor],
    batches: Sequence[T],
    device: torch.device,
    min_seconds: float,
    max_rounds: int,
    warm: bool = True,
) -> tuple[float, int]:
    """Run every batch once untimed (if `warm`), then whole rounds until `min_seconds` (or `max_rounds`) passed.

    `run` may return before the device is done (the fast path does); outputs are synchronised once per
    round. Returns (seconds, rounds) of the timed rounds.
    """
    for batch in batches if warm else ():
        run(batch)
    synchronize(device)
    start, rounds = time.perf_counter(), 0
    while rounds < max_rounds and (rounds == 0 or time.perf_counter() - start < min_seconds):
        outputs = [run(batch) for batch in batches]
        synchronize(device)
        rounds += 1
    del outputs
    return time.perf_counter() - start, rounds


def latencies_ms(run: Callable[[T], np.ndarray], requests: Sequence[T], warm: bool = True) -> list[float]:
    """Wall time of each request alone, to its scores on the host (one untimed pass first if `warm`)."""
    for request in requests if warm else ():
        run(request)
    times = []
    for request in requests:
        start = time.perf_counter()
        run(request)
        times.append((time.perf_counter() - start) * 1e3)
    return times
