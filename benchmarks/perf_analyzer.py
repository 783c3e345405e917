"""Triton's `perf_analyzer` as the load generator, when it is on PATH (NGC SDK image, or a tritonclient that ships it).

One run per concurrency level (`--concurrency-range N:N`, count windows of --requests requests) over real input
data: each request carries one of the images (IMAGE, length-prefixed BYTES in base64) and the prompt. Its CSV
gives throughput and client latency percentiles (µs); the server split comes from Triton's statistics as for
the asyncio generator.
"""

from __future__ import annotations

import base64
import csv
import json
import shutil
import struct
import subprocess
from pathlib import Path

from .scoring import ScoringError

BINARY = "perf_analyzer"


def find() -> str | None:
    """The perf_analyzer executable on PATH, if any."""
    return shutil.which(BINARY)


def input_data(images: list[bytes], prompt: str) -> dict:
    """perf_analyzer's real-input JSON: one entry per image; BYTES elements are a 4-byte little-endian length
    followed by the bytes."""

    def element(data: bytes) -> dict:
        return {"content": {"b64": base64.b64encode(struct.pack("<I", len(data)) + data).decode()}, "shape": [1]}

    return {"data": [{"IMAGE": element(image), "PROMPT": element(prompt.encode("utf-8"))} for image in images]}


def parse_csv(text: str) -> dict:
    """Throughput and latencies (ms) of the one level in a perf_analyzer -f CSV; mean = the sum of its phases."""
    (row,) = list(csv.DictReader(text.splitlines()))
    phases = ("Client Send", "Network+Server Send/Recv", "Server Queue", "Server Compute Input",
              "Server Compute Infer", "Server Compute Output", "Client Recv")  # fmt: skip
    latency = {key: float(row[f"{key} latency"]) / 1000 for key in ("p50", "p90", "p99")}
    latency["mean"] = sum(float(row[phase]) for phase in phases) / 1000
    return {"throughput_per_s": float(row["Inferences/Second"]), "latency_ms": latency}


def measure(url: str, model: str, concurrency: int, requests: int, data_file: Path, workdir: Path) -> dict:
    """Run perf_analyzer at one concurrency level; raises ScoringError with its output when it fails."""
    csv_file = workdir / f"perf_analyzer-c{concurrency}.csv"
    command = [
        find() or BINARY, "-m", model, "-u", url, "-i", "grpc", "--input-data", str(data_file),
        "--concurrency-range", f"{concurrency}:{concurrency}", "--measurement-mode", "count_windows",
        "--measurement-request-count", str(requests), "-f", str(csv_file),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise ScoringError(f"{' '.join(command)} exited with {done.returncode}: {(done.stdout + done.stderr)[-2000:]}")
    return parse_csv(csv_file.read_text())


def write_input_data(images: list[bytes], prompt: str, workdir: Path) -> Path:
    path = workdir / "perf_analyzer-input.json"
    path.write_text(json.dumps(input_data(images, prompt)))
    return path
