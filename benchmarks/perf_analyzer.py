"""Triton's `perf_analyzer` as the load generator, when it is on PATH (NGC SDK image, or a tritonclient that ships it).

One run per concurrency level (`--concurrency-range N:N`, count windows of at least --requests requests, repeated
until stable) over real input data: each request carries one of the images (IMAGE, length-prefixed BYTES in
base64) and the prompt. Its CSV gives throughput and client latency percentiles (µs), its stdout the requests in
the reported windows; the server split comes from Triton's statistics as for the asyncio generator.
`scripts/setup_perf_analyzer.sh` installs it on a CPU-only machine.
"""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

from .scoring import ScoringError

BINARY = "perf_analyzer"
UNSTABLE_ADVICE = (
    "\nperf_analyzer found no 3 windows in a row within --stability percent of each other (a busy machine?): "
    "rerun with more --requests per window or a higher --stability; the finished levels are kept"
)


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


def request_count(stdout: str) -> int | None:
    """Requests in the measurement windows perf_analyzer reported (its Client section), if it printed them."""
    found = re.search(r"Client:\s*\n\s*Request count: (\d+)", stdout)
    return int(found.group(1)) if found else None


def measure(
    url: str, model: str, concurrency: int, requests: int, stability: int, data_file: Path, workdir: Path
) -> dict:
    """Run perf_analyzer at one concurrency level; raises ScoringError with its output when it fails."""
    csv_file = workdir / f"perf_analyzer-c{concurrency}.csv"
    command = [
        find() or BINARY, "-m", model, "-u", url, "-i", "grpc", "--input-data", str(data_file),
        "--concurrency-range", f"{concurrency}:{concurrency}", "--measurement-mode", "count_windows",
        "--measurement-request-count", str(requests), "--stability-percentage", str(stability), "-f", str(csv_file),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    output = done.stdout + done.stderr
    if done.returncode != 0:
        advice = UNSTABLE_ADVICE if "Failed to obtain stable measurement" in output else ""
        raise ScoringError(f"{' '.join(command)} exited with {done.returncode}: {output[-2000:]}{advice}")
    return parse_csv(csv_file.read_text()) | {"requests": request_count(done.stdout)}


def write_input_data(images: list[bytes], prompt: str, workdir: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "perf_analyzer-input.json"
    path.write_text(json.dumps(input_data(images, prompt)))
    return path
