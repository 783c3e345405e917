"""benchmarks/precision.py: bf16 against fp32 in-process, and the served model against both, on fixture images."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from hpsv3_benchmarks.precision import order_agreement
from hpsv3_repository.launcher import TritonServer

from .conftest import IMAGES

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "precision.py"


def test_order_agreement_counts_pairs_within_a_prompt_and_ties_as_disagreement() -> None:
    reference = np.array([1.0, 2.0, 3.0, 0.5, 0.7])
    other = np.array([1.0, 3.0, 2.0, 0.6, 0.6])
    groups = ["a", "a", "a", "b", "b"]
    assert order_agreement(reference, other, groups) == (2, 4)  # (0,1) (0,2) agree, (1,2) flips, b ties


def test_report_against_fp32_for_bf16_and_the_served_model(
    tiny: Path, tiny_checkpoint: Path, tiny_server: TritonServer, tmp_path: Path
) -> None:
    command = [sys.executable, SCRIPT, "--checkpoint", tiny_checkpoint, "--base", tiny / "base", "--images", IMAGES,
               "--prompt", "a red fox", "--prompt", "a lighthouse", "--dtypes", "float32,bfloat16",
               "--endpoint", tiny_server.grpc_url, "--output", tmp_path]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "precision.json").read_text())
    count = len([p for p in IMAGES.iterdir() if p.suffix in {".png", ".jpg"}])
    assert result["items"] == 2 * count and result["reference"] == "torch float32 (cpu)"
    served = result["variants"][f"endpoint {tiny_server.grpc_url}"]
    assert served["max_abs_delta_mu"] < 2e-5 and served["order_agreement"] == 1.0
    assert served["pairs"] == 2 * count * (count - 1) // 2
    bf16 = result["variants"]["torch bfloat16 (cpu)"]
    assert 0 < bf16["max_abs_delta_mu"] < 0.5 and 0 <= bf16["order_agreement"] <= 1
    assert "| torch bfloat16 (cpu) |" in done.stdout
