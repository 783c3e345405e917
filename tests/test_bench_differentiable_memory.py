"""benchmarks/differentiable_memory.py: one step's memory per image on the tiny model, with and without checkpointing,
and the linear extrapolation a CPU uses for the 7B."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hpsv3_benchmarks.differentiable_memory import PROBES, extrapolate

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "differentiable_memory.py"


def test_extrapolation_is_linear_in_blocks_and_layers() -> None:
    measured = {(1, 1): 10 + 2 + 5, (2, 1): 10 + 4 + 5, (1, 2): 10 + 2 + 10}
    assert set(measured) == set(PROBES)
    fit = extrapolate(measured, (32, 28))
    assert (fit["base"], fit["per_vision_block"], fit["per_decoder_layer"]) == (10, 2, 5)
    assert fit["full_depth"] == pytest.approx(10 + 32 * 2 + 28 * 5)


def test_checkpointing_lowers_the_measured_peak(tiny: Path, tmp_path: Path) -> None:
    """`tiny`: its build caches the tokenizer the script loads."""
    command = [sys.executable, SCRIPT, "--size", "tiny", "--dtype", "float32", "--batch", "1", "--output", tmp_path]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    result = json.loads((tmp_path / "differentiable_memory.json").read_text())
    without = result["without checkpointing"]["peak_bytes_per_image"]
    with_checkpointing = result["with checkpointing"]["peak_bytes_per_image"]
    assert 0 < with_checkpointing < without
    assert "MiB per image" in (tmp_path / "differentiable_memory.md").read_text()
