"""The product end to end: export → repository → real tritonserver → gRPC, against the references."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from hpsv3_client import HPSv3Client
from hpsv3_export.onnx_export import ExportParityError, export_onnx
from hpsv3_repository.build import render, settings_for
from hpsv3_repository.launcher import TritonServer, free_port
from hpsv3_serve.checkpoint import source_record
from hpsv3_serve.engines.onnx_engine import MANIFEST_FILE, read_manifest
from hpsv3_serve.scorer import Scorer

from .conftest import IMAGES

REPO_ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-5


def _golden_inputs(golden: dict) -> tuple[list[Path], list[str]]:
    return [IMAGES / i["image"] for i in golden["items"]], [i["prompt"] for i in golden["items"]]


def test_export_writes_a_parity_report(tiny_artifacts: Path) -> None:
    manifest = read_manifest(tiny_artifacts)
    parity = manifest["parity"]
    assert manifest["opset"] == 23 and manifest["dtype"] == "float32"
    for stage in ("chain_mu", "chain_log_sigma"):  # what users get: the scores, end to end
        assert 0 <= parity[stage] <= TOLERANCE, stage
    for stage in ("vision_encoder", "language_model", "reward_head"):  # hidden states of magnitude ~1-10: ORT's
        assert 0 <= parity[stage] <= 1e-4, stage  # thread count changes the summation order by ~1e-5 under load
    for graph in ("language_model", "vision_encoder"):  # the 7B ones pass protobuf's 2 GB limit
        assert (tiny_artifacts / f"{graph}.onnx.data").is_file(), f"{graph} weights live in external data"


def test_export_fails_loudly_when_parity_is_off(tiny: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportParityError, match="parity off"):
        export_onnx(tiny_checkpoint, tiny / "base", tmp_path / "onnx", tolerance=1e-12)
    assert not (tmp_path / "onnx" / MANIFEST_FILE).exists(), "a failed export must not look complete"


def test_render_is_the_serving_graph(tiny_artifacts: Path, tmp_path: Path) -> None:
    repository = render("cpu", settings_for(tiny_artifacts, max_batch_size=8), tmp_path / "repo")
    assert sorted(p.name for p in repository.iterdir()) == [
        "hpsv3", "hpsv3_patches", "language_model", "preprocess", "preprocess_patches", "reward_head",
        "vision_encoder",
    ]  # fmt: skip
    ensemble = (repository / "hpsv3" / "config.pbtxt").read_text()
    assert "max_batch_size: 1\n" in ensemble and "${" not in ensemble
    assert "max_batch_size: 8" in (repository / "language_model" / "config.pbtxt").read_text()
    assert (repository / "preprocess" / "1" / "model.py").is_file()


def test_served_scores_match_official_golden_and_in_process(tiny_server: TritonServer, scorer: Scorer, golden: dict):
    images, prompts = _golden_inputs(golden)
    served = HPSv3Client(tiny_server.grpc_url, concurrency=8).score(images, prompts)
    local = scorer.score(images, prompts)
    for remote, reference, item in zip(served, local, golden["items"], strict=True):
        assert remote.ok, remote.error
        assert abs(remote.mu - item["mu"]) <= TOLERANCE and abs(remote.log_sigma - item["log_sigma"]) <= TOLERANCE
        assert abs(remote.mu - reference.mu) <= TOLERANCE and abs(remote.sigma - reference.sigma) <= TOLERANCE


def test_a_malformed_image_fails_only_its_request(tiny_server: TritonServer) -> None:
    client = HPSv3Client(tiny_server.grpc_url, concurrency=4)
    images = [IMAGES / "small_200.png", b"\x89PNG\r\n\x1a\n not really", IMAGES / "gray_300.png"]
    first = client.score(images, "a cat")
    assert first[0].ok and first[2].ok
    assert first[1].error.startswith("<19 bytes>: IMAGE: not a recognised image format (corrupt file or not an image;")
    (after,) = client.score([IMAGES / "small_200.png"], "a cat")
    assert after.ok and after.mu == pytest.approx(first[0].mu, abs=1e-6)


def test_raw_tritonclient_snippet_against_the_ensemble(tiny_server: TritonServer, scorer: Scorer) -> None:
    image = IMAGES / "photo_800x600.jpg"
    output = subprocess.run(
        [sys.executable, str(REPO_ROOT / "client" / "raw_tritonclient_example.py"), tiny_server.grpc_url,
         str(image), "a lighthouse"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    mu = float(output.split("mu=")[1].split()[0])
    (reference,) = scorer.score([image], "a lighthouse")
    assert mu == pytest.approx(reference.mu, abs=1e-4)  # the snippet prints 6 significant digits


def test_metrics_report_batches_per_model(tiny_server: TritonServer) -> None:
    HPSv3Client(tiny_server.grpc_url, concurrency=8).score([IMAGES / "small_200.png"] * 8, "a dog")
    with urllib.request.urlopen(tiny_server.metrics_url, timeout=10) as response:
        metrics = response.read().decode()
    for model in ("hpsv3", "preprocess", "vision_encoder", "language_model", "reward_head"):
        assert f'nv_inference_request_success{{model="{model}"' in metrics
    with grpcclient.InferenceServerClient(tiny_server.grpc_url) as client:
        stats = client.get_inference_statistics("language_model", as_json=True)["model_stats"][0]
    assert int(stats["inference_count"]) >= 8 and int(stats["execution_count"]) <= int(stats["inference_count"])


def test_hpsv3_serve_and_score_endpoint_reproduce_golden(tiny: Path, tiny_checkpoint: Path, tiny_artifacts: Path,
                                                        golden: dict, tmp_path: Path) -> None:  # fmt: skip
    """`hpsv3 serve` (reusing fresh artifacts) + `hpsv3 score --endpoint`; SIGINT stops it cleanly."""
    workdir = tmp_path / "serve"
    workdir.mkdir()
    os.symlink(tiny_artifacts, workdir / "onnx")
    ports = [str(free_port()) for _ in range(3)]
    hpsv3 = str(Path(sys.executable).with_name("hpsv3"))
    serve = subprocess.Popen(
        [hpsv3, "serve", "--checkpoint", str(tiny_checkpoint), "--base", str(tiny / "base"), "--workdir", str(workdir),
         "--grpc-port", ports[0], "--http-port", ports[1], "--metrics-port", ports[2]],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not any("endpoint ready" in line for line in lines):
            line = serve.stdout.readline()
            assert line, "hpsv3 serve exited early:\n" + "".join(lines)
            lines.append(line)
        assert any("reusing ONNX artifacts" in line for line in lines), "fresh artifacts must not be re-exported"
        pairs = tmp_path / "pairs.jsonl"
        images, prompts = _golden_inputs(golden)
        records = [json.dumps({"image": str(i), "prompt": p}) for i, p in zip(images, prompts, strict=True)]
        pairs.write_text("\n".join(records) + "\n")
        scored = subprocess.run(
            [hpsv3, "score", "--endpoint", f"127.0.0.1:{ports[0]}", "--input", str(pairs), "--format", "jsonl"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert scored.returncode == 0, scored.stderr
        for row, item in zip(map(json.loads, scored.stdout.splitlines()), golden["items"], strict=True):
            assert abs(row["mu"] - item["mu"]) <= TOLERANCE and abs(row["log_sigma"] - item["log_sigma"]) <= TOLERANCE
    finally:
        serve.send_signal(signal.SIGINT)
        rest, _ = serve.communicate(timeout=180)  # drains the pipe so shutdown logs never block it
        assert serve.returncode == 0, "".join(lines) + rest
    leftovers = subprocess.run(["pgrep", "-f", f"grpc-port={ports[0]}"], capture_output=True, text=True).stdout
    assert not leftovers.strip(), "tritonserver or stubs left running"


def test_readme_shows_the_tested_raw_snippet() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- raw-tritonclient-example -->\n```python\n", 1)[1].split("```", 1)[0]
    assert block == (REPO_ROOT / "client" / "raw_tritonclient_example.py").read_text(encoding="utf-8")


def test_serve_re_exports_only_when_the_source_changed(tiny: Path, tiny_checkpoint: Path, tiny_artifacts: Path,
                                                       tmp_path: Path) -> None:  # fmt: skip
    from hpsv3_repository.serve import ensure_artifacts

    shutil.copytree(tiny_artifacts, tmp_path / "onnx")
    said: list[str] = []
    assert ensure_artifacts(tiny_checkpoint, tiny / "base", tmp_path, said.append) == tmp_path / "onnx"
    assert "reusing" in said[-1]
    manifest = json.loads((tmp_path / "onnx" / MANIFEST_FILE).read_text())
    manifest["source_sha256"] = "made from another checkpoint"
    (tmp_path / "onnx" / MANIFEST_FILE).write_text(json.dumps(manifest))
    ensure_artifacts(tiny_checkpoint, tiny / "base", tmp_path, said.append)
    assert any("exporting" in line for line in said)
    assert read_manifest(tmp_path / "onnx")["source_sha256"] == read_manifest(tiny_artifacts)["source_sha256"]
    assert read_manifest(tmp_path / "onnx")["checkpoint"] == source_record(tiny_checkpoint)  # a local path, no commit


def test_ctrl_c_during_the_export_leaves_nothing_that_looks_complete(tiny: Path, tiny_checkpoint: Path,
                                                                     tmp_path: Path) -> None:  # fmt: skip
    """SIGINT while `hpsv3 serve` exports: exit 130 with advice; the next start exports again, whole. A manifest
    without its parity record (a process killed while verifying) is not trusted either."""
    from hpsv3_repository.serve import current_export, ensure_artifacts

    hpsv3 = str(Path(sys.executable).with_name("hpsv3"))
    ports = [str(free_port()) for _ in range(3)]
    serve = subprocess.Popen(
        [hpsv3, "serve", "--checkpoint", str(tiny_checkpoint), "--base", str(tiny / "base"), "--workdir",
         str(tmp_path), "--grpc-port", ports[0], "--http-port", ports[1], "--metrics-port", ports[2]],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert "exporting ONNX artifacts" in serve.stdout.readline()
    serve.send_signal(signal.SIGINT)  # as Ctrl-C, in the middle of the export
    output, _ = serve.communicate(timeout=120)
    assert serve.returncode == 130 and "interrupted before serving; rerun the same command" in output, output
    assert current_export(tmp_path / "onnx") == {}

    said: list[str] = []
    ensure_artifacts(tiny_checkpoint, tiny / "base", tmp_path, said.append)
    assert "exporting" in said[0] and "parity" in read_manifest(tmp_path / "onnx")
    unverified = read_manifest(tmp_path / "onnx")
    del unverified["parity"]
    (tmp_path / "onnx" / MANIFEST_FILE).write_text(json.dumps(unverified))
    assert current_export(tmp_path / "onnx") == {}
