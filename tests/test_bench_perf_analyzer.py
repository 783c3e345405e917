"""benchmarks/perf_analyzer.py: the input data and CSV formats documented by perf_analyzer (docs/input_data.md,
docs/measurements_metrics.md). perf_analyzer itself is not on PyPI for CPU (`perf-analyzer` 0.1.0 is a placeholder):
the latency tests run the asyncio generator."""

from __future__ import annotations

import base64
import struct

import pytest

from hpsv3_benchmarks.perf_analyzer import input_data, parse_csv

DOCUMENTED_CSV = (
    "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,"
    "Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency\n"
    "1,69.2,225,2148,64,206,11781,19,0,13891,18795,19753,21018\n"
)


def test_bytes_tensors_carry_a_little_endian_length_prefix() -> None:
    data = input_data([b"\x89PNG...", b"JPEG"], "a cat")["data"]
    assert len(data) == 2
    image = base64.b64decode(data[0]["IMAGE"]["content"]["b64"])
    assert image == struct.pack("<I", 7) + b"\x89PNG..." and data[0]["IMAGE"]["shape"] == [1]
    assert base64.b64decode(data[1]["PROMPT"]["content"]["b64"]) == b"\x05\x00\x00\x00a cat"


def test_csv_gives_throughput_and_latencies_in_ms() -> None:
    level = parse_csv(DOCUMENTED_CSV)
    assert level["throughput_per_s"] == 69.2
    assert level["latency_ms"]["p50"] == pytest.approx(13.891) and level["latency_ms"]["p99"] == pytest.approx(21.018)
    assert level["latency_ms"]["mean"] == pytest.approx((225 + 2148 + 64 + 206 + 11781 + 19 + 0) / 1000)
