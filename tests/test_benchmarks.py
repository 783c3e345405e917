"""`hpsv3 bench throughput` end to end: its own tritonserver on the tiny export, the client, the in-process scorers."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from hpsv3_benchmarks.cli import main

from .conftest import IMAGES

RUN = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"


@pytest.mark.slow
def test_throughput_serves_measures_and_reports(
    tiny: Path, tiny_checkpoint: Path, tiny_artifacts: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    images = [IMAGES / "small_200.png", IMAGES / "wide_1920x1080.jpg"]
    command = [sys.executable, str(RUN), "throughput", "--serve", "--artifacts", str(tiny_artifacts)]
    command += ["--checkpoint", str(tiny_checkpoint), "--base", str(tiny / "base"), "--images", *map(str, images)]
    command += ["--sweep", "2", "--requests", "6", "--rounds", "1", "--batch-sizes", "2", "--no-official", "--no-vllm"]
    command += ["--output", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads((out / "throughput.json").read_text())
    markdown = (out / "throughput.md").read_text()
    assert markdown in done.stdout and "| system | setting | images/s |" in markdown
    assert "round 1/1" in done.stderr, "progress goes to stderr"
    assert not list(out.glob(".*.tmp*")), "the report is written through the atomic writer"
    systems = {m["system"]: m for m in report["measurements"]}
    assert set(systems) == {"endpoint (default)", "in-process Scorer (torch)", "in-process Scorer (onnxruntime)"}
    for measurement in report["measurements"]:
        assert measurement["images_per_s"] > 0 and not measurement["errors"], measurement
    endpoint = systems["endpoint (default)"]
    latency = endpoint["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"]
    models = endpoint["server"]["models"]
    assert {"hpsv3", "preprocess", "vision_encoder", "language_model", "reward_head"} <= set(models)
    assert models["hpsv3"]["requests"] == 6 and endpoint["server"]["server_ms"] > 0
    assert endpoint["cpu_ms_per_image"]["preprocess"] > 0, "CPU of the model stubs is measured"
    stages = report["stages_ms"]["ORT threads=1"]
    assert stages["vision encoder"]["wall_ms"] > 0 and stages["patchify"]["cpu_ms"] > 0
    assert {r["name"].split(" at ")[0] for r in report["ratios"]} == {"endpoint (default)"}
    assert report["machine"]["cpu_count"] >= 1
    run = report["run"]
    assert shlex.split(run["command"])[:3] == ["python benchmarks/run.py", "throughput", "--serve"]
    assert run["command"].endswith(f"--output {out}") and report["command"] == run["command"]
    assert run["endpoint"].startswith("127.0.0.1:"), "the server started here"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["throughput"], "throughput: pass --endpoint HOST:PORT (a running server) or --serve"),
        (["--endpoint", "127.0.0.1:8001", "throughput", "--serve"], "not both"),
        (["--endpoint", "127.0.0.1:8001", "throughput", "--variant", "t1:threads=1"], "--variant needs --serve"),
        (["throughput", "--serve", "--variant", "t1:threads"], "expected NAME:key=int"),
        (["throughput", "--serve", "--sweep", "0,4"], "expected a whole number ≥ 1, got 0"),
        (["throughput", "--serve", "--batch-sizes", "1,x"], "expected a list like 1,4,16, got '1,x'"),
    ],
)
def test_throughput_says_what_it_needs(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv, prog="hpsv3 bench")
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
