"""The GPU benchmark's CPU self-check: same code paths at tiny shapes, paths agree, the report is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from transformers import Qwen2VLConfig

from hpsv3_benchmarks.gpu.gpu_bench import main
from hpsv3_benchmarks.gpu.shapes import REAL_CONFIG, FlopModel
from hpsv3_benchmarks.gpu.workload import length_sorted
from hpsv3_serve.batching import PreparedItem
from hpsv3_serve.engines.fast_engine import image_runs
from hpsv3_serve.inputs import PreparedImage

REPO = Path(__file__).resolve().parents[1]


def test_self_check_runs_every_phase_and_paths_agree(tmp_path: Path) -> None:
    assert main(["--self-check", "--out", str(tmp_path), "--workers", "1"]) == 0
    data = json.loads((tmp_path / "gpu_bench.json").read_text())
    assert data["errors"] == []
    parity = data["parity"]
    assert parity["ok"] and parity["max_abs_mu"] < 1e-4 and parity["max_abs_log_sigma"] < 1e-4
    assert np.allclose(parity["reference"], parity["official"], atol=1e-4)  # the project's own forward too
    for path in ("official", "fast"):
        assert [row["batch"] for row in data[path]] == [1, 2]
        assert all(row["images_per_s"] > 0 and row["tflops"] > 0 for row in data[path])
        assert data["latency"][path]["p50_ms"] > 0
        assert data["stream"][path]["images"] == 2
    assert data["stream"]["fast"]["preprocessing"] == "in 1 worker process"
    assert data["latency"]["fast_from_jpeg"]["n"] == 1
    assert "speedup" in data["summary"] and "targets" not in data["summary"]  # no targets on tiny CPU numbers
    text = (tmp_path / "gpu_bench.txt").read_text()
    assert "parity over 2 items" in text and "fast path (model only)" in text
    assert "FastEngine" in data["meta"]["fast_engine"]  # the served engine, not a benchmark-only copy


def test_flops_per_image_at_real_size_is_about_12_tflop() -> None:
    flops = FlopModel(Qwen2VLConfig(**REAL_CONFIG))
    assert 1.4e12 < flops.vision(1024) < 1.6e12
    assert 11.5e12 < flops.image(1024, 830) < 13e12  # issue #8: ≈ 12 TFLOP per image at 200704 pixels


def test_equal_size_images_share_one_attention_call() -> None:
    grids = np.array([[1, 32, 32], [1, 32, 32], [1, 24, 42], [1, 32, 32]])
    assert image_runs(grids) == ((2, 1024), (1, 1008), (1, 1024))


def test_run_sh_answers_help_without_a_gpu() -> None:
    env = {name: value for name, value in os.environ.items() if name != "OUT"}
    env |= {"PYTHON": sys.executable, "WHEELS": "/nonexistent"}  # no carried wheels here
    result = subprocess.run(
        ["bash", str(REPO / "benchmarks/gpu/run.sh"), "--help"], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "--self-check" in result.stdout and "run.sh" in result.stdout


def test_batches_are_cut_by_length_then_ordered_by_image_size() -> None:
    def item(length: int, patches: int) -> PreparedItem:
        image = PreparedImage(np.zeros((patches, 588), np.uint8), (1, 2, patches // 2))
        return PreparedItem(np.zeros(length, np.int64), image)

    items = [item(800, 8), item(880, 4), item(790, 4), item(870, 8), item(805, 4), item(860, 4)]
    batches = length_sorted(items, 3)
    assert [[len(i.input_ids) for i in batch] for batch in batches] == [[790, 805, 800], [860, 880, 870]]


def test_endpoint_self_check_serves_what_the_engine_scores(tmp_path: Path) -> None:
    """`run.sh --endpoint --self-check`: the virtual environment run.sh makes for the stub (over this
    interpreter's packages, the checkout linked in), the GPU target's repository on the real tritonserver,
    served scores equal to the in-process fast engine's, throughput per concurrency and latency recorded."""
    env = {name: value for name, value in os.environ.items() if name not in ("OUT", "PYTHONPATH")}
    env |= {"PYTHON": sys.executable, "WHEELS": "/nonexistent", "ENDPOINT_WHEELS": "/nonexistent", "OUT": str(tmp_path)}
    result = subprocess.run(
        ["bash", str(REPO / "benchmarks/gpu/run.sh"), "--endpoint", "--self-check"],
        capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads((tmp_path / "endpoint.json").read_text())
    assert data["errors"] == [] and data["meta"]["self_check"]
    parity = data["parity"]
    assert parity["ok"] and parity["failed"] == 0 and parity["max_abs_mu"] < 1e-4 and parity["requests"] == 4
    assert [row["concurrency"] for row in data["throughput"]] == [1, 4]
    assert all(row["images_per_s"] > 0 and row["failed"] == 0 for row in data["throughput"])
    assert data["latency"]["p50_ms"] > 0
    assert "served vs in-process over 4 requests" in (tmp_path / "endpoint.txt").read_text()
    assert (tmp_path / "tritonserver.log").stat().st_size > 0 and (tmp_path / "log.txt").is_file()
