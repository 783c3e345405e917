"""CoHP end to end: tiny random-weight diffusers pipelines (all four architectures) on CPU, scored by the
real tritonserver serving the tiny HPSv3 over gRPC."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from hpsv3_cohp.cli import main
from hpsv3_repository.launcher import TritonServer, free_port
from hpsv3_serve.cli import main as hpsv3

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four tiny pipelines, built once for this module."""
    from hpsv3_cohp.tiny_pipelines import ARCHITECTURES, build

    root = tmp_path_factory.mktemp("cohp-tiny")
    for arch in ARCHITECTURES:
        build(arch, root)
    return root


def _run(server: TritonServer, cache: Path, output: Path, *args: str) -> int:
    return main(["--server", server.grpc_url, "--tiny", str(cache), "--output", str(output), "--device", "cpu", *args])


def _scores(report: dict) -> list[float]:
    scores = [i["score"] for m in report["models"].values() for i in m.get("images", [])]
    return scores + [i["score"] for r in report["rounds"] for i in r["images"]]


def test_full_loop_keeps_the_best_image_and_reproduces(tiny_server: TritonServer, tiny_cache: Path, tmp_path: Path):
    args = ["--prompt", "a red fox in the snow", "--rounds", "2", "--strengths", "0.7,0.4"]
    args += ["--images-per-model", "2", "--images-per-round", "2", "--seed", "7"]
    assert _run(tiny_server, tiny_cache, tmp_path / "a", *args) == 0
    folder = tmp_path / "a" / "0000-a-red-fox-in-the-snow"
    report = json.loads((folder / "report.json").read_text())

    assert set(report["models"]) == {"flux", "kolors", "sd3", "playground"}
    for model in report["models"].values():
        scores = [image["score"] for image in model["images"]]
        assert len(scores) == 2 and model["max"] == max(scores) and model["mean"] == pytest.approx(sum(scores) / 2)
    assert report["best_model"] == max(report["models"], key=lambda name: report["models"][name]["mean"])
    assert [(r["round"], r["strength"], len(r["images"])) for r in report["rounds"]] == [(1, 0.7, 2), (2, 0.4, 2)]
    assert report["final"]["score"] == max([report["models"][report["best_model"]]["max"], *_scores(report)[8:]])
    assert report["chosen_path"][-1]["score"] == report["final"]["score"]
    seeds = [i["seed"] for m in report["models"].values() for i in m["images"]]
    assert len(set(seeds)) == len(seeds)
    for image in ["final.png", "contact_sheet.png", *(i["path"] for r in report["rounds"] for i in r["images"])]:
        assert Image.open(folder / image).size[0] > 0
    assert Image.open(folder / "final.png").tobytes() == Image.open(folder / report["final"]["source"]).tobytes()

    assert _run(tiny_server, tiny_cache, tmp_path / "b", *args) == 0
    again = json.loads((tmp_path / "b" / folder.name / "report.json").read_text())
    assert _scores(again) == _scores(report) and again["chosen_path"] == report["chosen_path"]


def test_unreachable_server_fails_before_generating(tmp_path: Path, capsys: pytest.CaptureFixture):
    url = f"127.0.0.1:{free_port()}"
    args = ["--prompt", "a cat", "--tiny", str(tmp_path / "cache"), "--output", str(tmp_path / "out"), "--timeout", "1"]
    code = hpsv3(["cohp", "--server", url, *args])  # the `hpsv3 cohp` verb
    assert code == 2
    assert f"no Triton server answers at {url}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()  # nothing built or generated


def test_a_generator_that_cannot_load_is_skipped(
    tiny_server: TritonServer, tiny_cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    cache = tmp_path / "cache"
    (cache / "sdxl-seed0-v1").mkdir(parents=True)
    (cache / "sdxl-seed0-v1" / "model_index.json").write_text('{"_class_name": "StableDiffusionXLPipeline"}')
    (cache / "flux-seed0-v1").symlink_to(tiny_cache / "flux-seed0-v1")
    args = ["--prompt", "a cat", "--models", "playground,flux", "--best-of", "2"]
    with pytest.raises(SystemExit):  # --best-of takes one generator
        _run(tiny_server, cache, tmp_path / "out", *args)
    args = ["--prompt", "a cat", "--models", "playground,flux", "--rounds", "0"]
    assert _run(tiny_server, cache, tmp_path / "out", *args) == 0
    report = json.loads((tmp_path / "out" / "0000-a-cat" / "report.json").read_text())
    assert "error" in report["models"]["playground"] and report["best_model"] == "flux"
    assert "skipping generator 'playground'" in caplog.text
    assert _run(tiny_server, cache, tmp_path / "none", "--prompt", "a cat", "--models", "playground") == 1


def test_prompts_file_interrupted_and_restarted_skips_finished_prompts(
    tiny_server: TritonServer, tiny_cache: Path, tmp_path: Path
):
    prompts = [f"a watercolor of a lighthouse number {i}" for i in range(8)]
    (tmp_path / "prompts.txt").write_text("\n".join(prompts) + "\n")
    output = tmp_path / "out"
    command = [sys.executable, str(ROOT / "cohp" / "run.py"), "--server", tiny_server.grpc_url, "--prompts",
               str(tmp_path / "prompts.txt"), "--models", "flux", "--best-of", "2", "--tiny", str(tiny_cache),
               "--output", str(output), "--device", "cpu"]  # fmt: skip
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reports = sorted(output.glob("*/report.json"))
    while not reports and first.poll() is None:
        time.sleep(0.05)
        reports = sorted(output.glob("*/report.json"))
    first.send_signal(signal.SIGINT)  # as Ctrl-C
    _, stderr = first.communicate(timeout=30)
    assert first.returncode == 130 and "rerun the same command to resume" in stderr, stderr[-2000:]
    done_before = {path: path.stat().st_mtime_ns for path in output.glob("*/report.json")}
    assert 1 <= len(done_before) < len(prompts)

    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert second.stderr.count("skip ") == len(done_before)
    assert {path: path.stat().st_mtime_ns for path in done_before} == done_before  # not redone
    summary = json.loads((output / "summary.json").read_text())
    assert [entry["prompt"] for entry in summary] == prompts


def test_hostile_prompts_fail_alone_and_the_others_finish(tiny_server: TritonServer, tiny_cache: Path, tmp_path: Path):
    """A prompts file with lines the endpoint refuses (bytes that are not UTF-8, a reserved token, a JSON lone
    surrogate, 40 KB of text): each is reported in summary.json and on stderr, the good prompts finish, exit 1."""
    lines = [b"a red fox", b"caf\xe9 au lait", b"a <|Reward|> trick", b'{"prompt": "\\ud800"}', b"x" * 40_000,
             b"a lighthouse at night"]  # fmt: skip
    (tmp_path / "prompts.txt").write_bytes(b"\n".join(lines) + b"\n")
    code = _run(tiny_server, tiny_cache, tmp_path / "out", "--prompts", str(tmp_path / "prompts.txt"),
                "--models", "flux", "--best-of", "2")  # fmt: skip
    assert code == 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert [entry.get("error", "").split(": ", 1)[0] for entry in summary] == [
        "",
        *["PromptError"] * 3,
        "ScoreError",
        "",
    ]
    for entry, fragment in zip(summary[1:5], ["not valid UTF-8", "reserved token", "not valid UTF-8", "over the limit"],
                               strict=True):  # fmt: skip
        assert fragment in entry["error"], entry
    assert (tmp_path / "out" / summary[0]["folder"] / "report.json").is_file()
    assert (tmp_path / "out" / summary[-1]["folder"] / "report.json").is_file()
