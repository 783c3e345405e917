"""Benchmarks and CoHP with another reward model: the real tritonserver serving the tiny HPSv3 beside the tiny
PickScore (`hpsv3 serve --models hpsv3,pickscore`). `bench pairs --model hpsv3,pickscore` writes the table with a
row per model and keeps each model's scores apart in the cache (a rerun that adds a model scores only that one);
`generation` gives a judge's per-category table; CoHP picks its images by PickScore."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hpsv3_benchmarks.cache import read_jsonl
from hpsv3_benchmarks.cli import main as bench
from hpsv3_benchmarks.triton_stats import server_snapshot
from hpsv3_repository.build import JudgeSource, render, settings_for_checkpoint
from hpsv3_repository.launcher import TritonServer
from hpsv3_repository.serve import export_judges
from hpsv3_serve.judges import load_judge
from hpsv3_serve.scorer import Scorer

from .conftest import _running
from .test_bench_run import PROMPTS, _image, _key

TOLERANCE = 1e-5  # a served judge against the same judge in-process (tests/test_judges_served.py)
SERVED_HPSV3 = 2e-5  # the torch engine in the server against `Scorer` in-process


@pytest.fixture(scope="module")
def tiny_judges(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hpsv3_serve.judges.tiny import make_tiny_judges

    return make_tiny_judges(tmp_path_factory.mktemp("tiny-judges"))


@pytest.fixture(scope="module")
def pickscore(tiny_judges: Path):
    return load_judge("pickscore", tiny_judges / "pickscore", tiny_judges / "clip-h")


@pytest.fixture(scope="module")
def served(
    tiny: Path, tiny_checkpoint: Path, tiny_judges: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    """HPSv3 (the torch engine, CPU) and PickScore (ONNX Runtime), as `hpsv3 serve --models hpsv3,pickscore`."""
    settings = settings_for_checkpoint(
        tiny_checkpoint, tiny / "base", device="cpu", torch_dtype="float32", preprocess_instances=1
    )
    workdir = tmp_path_factory.mktemp("bench-judges")
    source = JudgeSource("pickscore", str(tiny_judges / "pickscore"), str(tiny_judges / "clip-h"))
    judges = export_judges((source,), workdir, lambda text: None)
    repository = render("gpu", settings, workdir / "repo", "torch", judges=judges)
    yield from _running(repository, tmp_path_factory.mktemp("bench-judges-triton"))


def _requests(server: TritonServer, model: str) -> int:
    return server_snapshot(server.grpc_url)[model]["requests"]


def test_pairs_table_with_a_row_per_model_and_a_rerun_scores_only_the_added_model(
    served: TritonServer, scorer: Scorer, pickscore, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    images = [_image(tmp_path / "images" / f"img{i}.png", 40 + i) for i in range(8)]
    records = [(0, 1), (2, 3), (4, 5), (6, 7), (1, 2)]
    data = [{"prompt": PROMPTS[i % 2], "path1": images[a].name, "path2": images[b].name}
            for i, (a, b) in enumerate(records)]  # fmt: skip
    (tmp_path / "images" / "test.json").write_text(json.dumps(data))
    args = ["--endpoint", served.grpc_url, "pairs", "--data", tmp_path / "images" / "test.json", "--output",
            tmp_path / "out"]  # fmt: skip
    items = [(images[k], PROMPTS[i % 2]) for i, pair in enumerate(records) for k in pair]
    paths, prompts = [image for image, _ in items], [prompt for _, prompt in items]
    expected = {
        "hpsv3": {_key(*item): r.mu for item, r in zip(items, scorer.score(paths, prompts), strict=True)},
        "pickscore": {_key(*item): r.score for item, r in zip(items, pickscore.score(paths, prompts), strict=True)},
    }
    assert bench([str(a) for a in args], prog="hpsv3 bench") == 0  # --model hpsv3: today's report
    (tmp_path / "alone.json").write_text((tmp_path / "out" / "pairs.json").read_text())
    alone = json.loads((tmp_path / "alone.json").read_text())
    assert "models" not in alone and alone["overall"]["pairs"] == 5 and alone["run"]["scored_now"] == 10 - 1
    before = {model: _requests(served, model) for model in ("hpsv3", "pickscore")}

    code = bench([*map(str, args), "--model", "hpsv3,pickscore"], prog="hpsv3 bench")

    assert code == 0
    result = json.loads((tmp_path / "out" / "pairs.json").read_text())
    assert list(result["models"]) == ["hpsv3", "pickscore"]
    assert result["run"]["from_cache"] == {"hpsv3": 9, "pickscore": 0}  # 9 distinct images: img1, img2 twice
    assert result["run"]["scored_now"] == {"hpsv3": 0, "pickscore": 9}
    sent = {model: _requests(served, model) - before[model] for model in before}
    assert sent == {"hpsv3": 1, "pickscore": 9 + 1}, "only the added model was scored (plus each model's probe)"
    cached = {}
    for record in read_jsonl(tmp_path / "out" / "scores.jsonl"):
        if "image_sha256" in record:
            cached[(record["model"], record["image_sha256"], record["prompt"])] = record
    for model, tolerance in (("hpsv3", SERVED_HPSV3), ("pickscore", TOLERANCE)):
        for key, value in expected[model].items():
            line = cached[(model, *key)]
            assert abs(line.get("score", line.get("mu")) - value) <= tolerance * max(1.0, abs(value)), (model, key)
        gaps = [expected[model][_key(images[a], PROMPTS[i % 2])] - expected[model][_key(images[b], PROMPTS[i % 2])]
                for i, (a, b) in enumerate(records)]  # fmt: skip
        assert all(abs(gap) > 10 * tolerance for gap in gaps), "a near-tie: pick other images"
        overall = result["models"][model]["overall"]
        assert (overall["pairs"], overall["correct"]) == (5, sum(gap > 0 for gap in gaps)), model
    assert result["models"]["hpsv3"]["overall"] == alone["overall"]
    out = capsys.readouterr().out
    assert "| model | test.json | model ties | 95 % CI | without model ties | pairs |" in out
    assert "| hpsv3 |" in out and "| pickscore |" in out and "## pickscore" in out

    both = tmp_path / "out" / "pairs.json"  # runs combined: one column per run, a row per model
    assert bench(["table", f"first={tmp_path / 'alone.json'}", f"both={both}", "--output", str(tmp_path / "t")]) == 0
    combined = json.loads((tmp_path / "t" / "table.json").read_text())
    assert combined["columns"] == ["first", "both"] and list(combined["models"]) == ["hpsv3", "pickscore"]
    assert combined["models"]["hpsv3"]["first"] == combined["models"]["hpsv3"]["both"] == alone["overall"]
    assert "| pickscore | — |" in (tmp_path / "t" / "table.md").read_text()


def test_generation_table_for_another_judge(served: TritonServer, pickscore, tmp_path: Path) -> None:
    root, expected = tmp_path / "generated", {}
    for index, category in enumerate(("animals", "animals", "plants", "plants")):
        image = _image(root / "gen-a" / category / f"{index}.png", 60 + index)
        image.with_suffix(".txt").write_text(f"a {category} picture")
        expected.setdefault(category, []).append(pickscore.score([image], f"a {category} picture")[0].score)

    code = bench(["--endpoint", served.grpc_url, "--model", "pickscore", "generation", "--images", str(root),
                  "--output", str(tmp_path / "out")], prog="hpsv3 bench")  # fmt: skip

    assert code == 0
    result = json.loads((tmp_path / "out" / "generation.json").read_text())
    for category, scores in expected.items():
        assert result["generators"]["gen-a"]["categories"][category]["mean"] == pytest.approx(np.mean(scores), 1e-5)

    code = bench(["--endpoint", served.grpc_url, "--model", "hpsv3,pickscore", "generation", "--images", str(root),
                  "--output", str(tmp_path / "out")], prog="hpsv3 bench")  # fmt: skip

    assert code == 0  # a section per model; PickScore's from the cache
    both = json.loads((tmp_path / "out" / "generation.json").read_text())
    assert both["models"]["pickscore"]["generators"] == result["generators"]
    assert both["run"]["from_cache"] == {"hpsv3": 0, "pickscore": 4}
    assert "## hpsv3" in (tmp_path / "out" / "generation.md").read_text()


@pytest.mark.slow
def test_cohp_with_pickscore_as_the_judge(
    served: TritonServer, pickscore, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """`python cohp/run.py --reward-model pickscore`: every image's score is PickScore's, and the kept image is the
    best by PickScore; a finished prompt is skipped only for the same reward model."""
    from hpsv3_cohp.cli import main as cohp
    from hpsv3_cohp.resume import finished

    args = ["--server", served.grpc_url, "--tiny", str(tmp_path / "tiny"), "--output", str(tmp_path / "out"),
            "--device", "cpu", "--prompt", "a red fox in the snow", "--models", "flux", "--rounds", "1",
            "--strengths", "0.5", "--images-per-model", "2", "--images-per-round", "2"]  # fmt: skip

    assert cohp([*args, "--reward-model", "pickscore"]) == 0

    folder = tmp_path / "out" / "0000-a-red-fox-in-the-snow"
    report = json.loads((folder / "report.json").read_text())
    assert report["reward_model"] == "pickscore"
    images = [*report["models"]["flux"]["images"], *report["rounds"][0]["images"]]
    judged = pickscore.score([folder / image["path"] for image in images], "a red fox in the snow")
    for image, result in zip(images, judged, strict=True):
        assert abs(image["score"] - result.score) <= TOLERANCE * max(1.0, abs(result.score)), image["path"]
    assert report["final"]["score"] == max(image["score"] for image in images)

    assert cohp([*args, "--reward-model", "pickscore"]) == 0  # finished: skipped
    assert "skip " in capsys.readouterr().err
    assert finished(folder, "a red fox in the snow", "pickscore") and not finished(folder, "a red fox in the snow")


def test_table_refuses_what_it_cannot_join(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    report = {"task": "pairs", "data": "HPDv3/test.json", "overall": {}, "run": {"model": "hpsv3"}}
    (tmp_path / "a.json").write_text(json.dumps(report))
    (tmp_path / "latency.json").write_text(json.dumps({"task": "latency"}))
    out = ["--output", str(tmp_path / "t")]
    assert bench(["table", str(tmp_path / "a.json"), str(tmp_path / "a.json"), *out]) == 2
    assert "two reports make the column 'test.json': name them, e.g. HPDv3=" in capsys.readouterr().err
    assert bench(["table", str(tmp_path / "latency.json"), *out]) == 2
    assert "not a pairs or ranking report" in capsys.readouterr().err
