"""`hpsv3 bench` / benchmarks/run.py against the real tritonserver serving the tiny model: every number is checked
against scores computed in-process by `Scorer`, and a killed run resumes without scoring anything twice."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from hpsv3_benchmarks.cli import main
from hpsv3_benchmarks.metrics import wilson
from hpsv3_benchmarks.triton_stats import server_snapshot
from hpsv3_repository.launcher import TritonServer
from hpsv3_serve.scorer import Scorer

ROOT = Path(__file__).resolve().parent.parent
RUN_PY = ROOT / "benchmarks" / "run.py"
PERF_ANALYZER = ROOT / "build" / "perf_analyzer" / "bin" / "perf_analyzer"
HPSV3 = str(Path(sys.executable).with_name("hpsv3"))
PROMPTS = ["a red fox in the snow", "a lighthouse at night"]
SERVED_VS_INPROCESS = 2e-5  # ONNX Runtime in the server vs torch in-process (export parity: ~1e-6)


def _image(path: Path, index: int) -> Path:
    """A distinct small PNG: a colour of its own over a gradient."""
    colour = np.array([(index * 67) % 256, (index * 151 + 40) % 256, (index * 29 + 90) % 256], dtype=np.float64)
    ramp = np.linspace(0, 1, 48)[None, :, None]
    pixels = np.clip(colour * (0.5 + 0.5 * ramp) + np.zeros((40 + 4 * (index % 5), 48, 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def _key(image: Path | bytes, prompt: str) -> tuple[str, str]:
    data = image if isinstance(image, bytes) else image.read_bytes()
    return hashlib.sha256(data).hexdigest(), prompt


def _inprocess(scorer: Scorer, items: list[tuple[Path | bytes, str]]) -> dict[tuple[str, str], float]:
    """mu by (content sha256, prompt), each distinct content scored once as the runner does."""
    unique = {_key(image, prompt): (image, prompt) for image, prompt in items}
    results = scorer.score([image for image, _ in unique.values()], [prompt for _, prompt in unique.values()])
    assert all(r.ok for r in results), [r.error for r in results]
    return {key: r.mu for key, r in zip(unique, results, strict=True)}


def _counts(pairs: list[tuple[Path | bytes, Path | bytes, str]], mu: dict) -> dict:
    """Expected counts, straight from the in-process scores (preferred image first)."""
    gaps = [mu[_key(chosen, p)] - mu[_key(rejected, p)] for chosen, rejected, p in pairs]
    assert all(gap == 0 or abs(gap) > 10 * SERVED_VS_INPROCESS for gap in gaps), "a near-tie: pick other images"
    correct, ties = sum(gap > 0 for gap in gaps), sum(gap == 0 for gap in gaps)
    return {"pairs": len(gaps), "correct": correct, "wrong": len(gaps) - correct - ties, "model_ties": ties}


def _bench(*args: str | Path) -> int:
    return main([str(a) for a in args], prog="hpsv3 bench")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """img0..img7.png, copy_of_0.png (img0's bytes), corrupt.png."""
    root = tmp_path_factory.mktemp("bench-images")
    for index in range(8):
        _image(root / f"img{index}.png", index)
    (root / "copy_of_0.png").write_bytes((root / "img0.png").read_bytes())
    (root / "corrupt.png").write_bytes(b"not an image at all")
    return root


def test_pairs_accuracy_ties_interval_and_model_pairs(
    tiny_server: TritonServer, scorer: Scorer, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    img = [f"img{i}.png" for i in range(8)]
    records = [  # path1 preferred; (models)
        (img[0], img[1], "A", "B", [3, 1]), (img[2], img[3], "B", "A", [4, 0]), (img[4], img[5], "A", "C", [2, 1]),
        (img[6], img[7], "C", "B", [5, 2]), (img[1], img[3], "A", "B", [3, 2]), (img[7], img[0], "B", "C", None),
        (img[0], "copy_of_0.png", "A", "A", [3, 1]),  # the same content: a model tie, scored once
        (img[2], img[4], "A", "B", [2, 2]),  # a human tie: not scored
        (img[5], "missing.png", "A", "B", [3, 0]), ("corrupt.png", img[6], "A", "B", [3, 0]),
    ]  # fmt: skip
    data = [
        {"prompt": PROMPTS[i % 2], "path1": a, "path2": b, "model1": m1, "model2": m2, "choice_dist": dist}
        for i, (a, b, m1, m2, dist) in enumerate(records)
    ]
    (tmp_path / "test.json").write_text(json.dumps(data))
    decided = [(images / a, images / b, PROMPTS[i % 2]) for i, (a, b, *_) in enumerate(records[:7])]
    mu = _inprocess(scorer, [(image, p) for a, b, p in decided for image in (a, b)])

    code = _bench("--endpoint", tiny_server.grpc_url, "pairs", "--data", tmp_path / "test.json",
                  "--images-root", images, "--output", tmp_path / "out")  # fmt: skip

    assert code == 1, "an item the endpoint could not score makes the exit status 1"
    result = json.loads((tmp_path / "out" / "pairs.json").read_text())
    expected = _counts(decided, mu)
    overall = result["overall"]
    assert {key: overall[key] for key in expected} == expected and expected["model_ties"] == 1
    assert overall["accuracy"] == expected["correct"] / 7
    assert overall["ci95"] == pytest.approx(wilson(expected["correct"], 7))
    assert overall["accuracy_without_model_ties"] == expected["correct"] / 6
    assert result["excluded"] == {"human_ties": 1, "missing_image": 1, "failed_image": 1}
    assert result["missing_images"] == {"count": 1, "first": ["missing.png"]}
    assert result["failed_items"]["count"] == 1 and "corrupt.png" in result["failed_items"]["first"][0]
    by_models = result["by_model_pair"]
    assert set(by_models) == {"A vs B", "A vs C", "B vs C", "A vs A"}
    assert by_models["A vs B"] == {**by_models["A vs B"], **_counts([decided[i] for i in (0, 1, 4)], mu)}
    assert by_models["A vs A"]["model_ties"] == 1
    # 13 (image, prompt) references: 12 present, 11 distinct contents (one corrupt); each scored once
    assert {k: result["run"][k] for k in ("items", "unique", "from_cache", "scored_now")} == {
        "items": 13, "unique": 11, "from_cache": 0, "scored_now": 10,
    }  # fmt: skip
    out = capsys.readouterr().out
    assert "| all | 7 |" in out and "## By model pair" in out
    assert "Missing image files (1, excluded): `missing.png`" in out

    stale = tmp_path / "stale.jsonl"  # a cache made with another model is refused
    stale.write_text('{"format": "hpsv3-bench-scores/1", "model": "hpsv3", "probe_mu": 123.0, "probe_sigma": 1.0}\n')
    code = _bench("pairs", "--endpoint", tiny_server.grpc_url, "--data", tmp_path / "test.json",
                  "--images-root", images, "--output", tmp_path / "stale", "--cache", stale)  # fmt: skip
    assert code == 2 and "holds scores of another model" in capsys.readouterr().err


def test_pickapic_parquet_with_image_bytes(tiny_server: TritonServer, scorer: Scorer, images: Path, tmp_path: Path):
    data = [(images / f"img{i}.png").read_bytes() for i in range(6)]
    rows = [
        {"caption": PROMPTS[0], "jpg_0": data[0], "jpg_1": data[1], "label_0": 1.0, "label_1": 0.0},
        {"caption": PROMPTS[0], "jpg_0": data[2], "jpg_1": data[3], "label_0": 0.0, "label_1": 1.0},
        {"caption": PROMPTS[1], "jpg_0": data[4], "jpg_1": data[5], "label_0": 0.0, "label_1": 1.0},
        {"caption": PROMPTS[1], "jpg_0": data[0], "jpg_1": data[5], "label_0": 0.5, "label_1": 0.5},
    ]
    for row in rows:
        row |= {"model_0": "M", "model_1": "N"}
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "test_unique.parquet")
    decided = [(data[0], data[1], PROMPTS[0]), (data[3], data[2], PROMPTS[0]), (data[5], data[4], PROMPTS[1])]
    mu = _inprocess(scorer, [(image, p) for a, b, p in decided for image in (a, b)])

    code = _bench("--endpoint", tiny_server.grpc_url, "--output", tmp_path, "pairs", "--data",
                  tmp_path / "test_unique.parquet")  # fmt: skip

    result = json.loads((tmp_path / "pairs.json").read_text())
    assert code == 0 and result["format"] == "pickapic" and result["excluded"]["human_ties"] == 1
    expected = _counts(decided, mu)
    assert {key: result["overall"][key] for key in expected} == expected
    assert result["by_model_pair"]["M vs N"]["pairs"] == 3


def test_ranking_accuracy_over_all_pairs(tiny_server: TritonServer, scorer: Scorer, images: Path, tmp_path: Path):
    lists = [
        {"prompt": PROMPTS[0], "image_path": ["img0.png", "img1.png", "img2.png", "img3.png"], "rank": [1, 3, 2, 3]},
        {"prompt": PROMPTS[1], "image_path": ["img4.png", "img5.png", "gone.png", "img6.png"], "rank": [2, 1, 3, 4]},
    ]
    (tmp_path / "test.json").write_text(json.dumps(lists))
    mu = _inprocess(scorer, [(images / p, r["prompt"]) for r in lists for p in r["image_path"] if p != "gone.png"])
    correct = total = 0
    for record in lists:  # the official calc_rank_acc, pairs with a missing image left out
        for i in range(len(record["rank"])):
            for j in range(i + 1, len(record["rank"])):
                paths, rank = record["image_path"], record["rank"]
                if rank[i] == rank[j] or "gone.png" in (paths[i], paths[j]):
                    continue
                mu_i, mu_j = (mu[_key(images / paths[k], record["prompt"])] for k in (i, j))
                total += 1
                correct += (mu_i > mu_j) == (rank[i] < rank[j]) and mu_i != mu_j

    code = _bench("--endpoint", tiny_server.grpc_url, "ranking", "--data", tmp_path / "test.json",
                  "--images-root", images, "--output", tmp_path / "out")  # fmt: skip

    result = json.loads((tmp_path / "out" / "ranking.json").read_text())
    assert code == 0 and result["format"] == "hpdv2" and (result["lists"], result["images"]) == (2, 8)
    assert (result["overall"]["pairs"], result["overall"]["correct"]) == (total, correct) and total == 8
    assert result["excluded"] == {"human_ties": 1, "missing_image": 3, "failed_image": 0}
    assert result["missing_images"]["first"] == ["gone.png"]


def test_generation_category_means_per_generator(
    tiny_server: TritonServer, scorer: Scorer, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root, index, expected = tmp_path / "generated", 0, {}
    for generator in ("gen-a", "gen-b"):
        for category in ("animals", "architecture"):
            for number in range(3):
                image = _image(root / generator / category / f"{number:05d}.png", index)
                index += 1
                if (generator, category, number) == ("gen-b", "architecture", 2):
                    continue  # no prompt file: reported, left out
                prompt = f"{category} number {number}"
                image.with_suffix(".txt").write_text(f"{prompt}\n{number:05d}\n")  # official: prompt, then the name
                expected.setdefault(generator, {}).setdefault(category, []).append((image, prompt))

    code = _bench("--endpoint", tiny_server.grpc_url, "generation", "--images", root, "--first-line",
                  "--output", tmp_path / "out")  # fmt: skip

    assert code == 0
    result = json.loads((tmp_path / "out" / "generation.json").read_text())
    assert result["layout"] == "generators" and result["categories"] == ["animals", "architecture"]
    assert result["missing_prompts"] == {"count": 1, "first": ["gen-b/architecture/00002.png"]}
    for generator, categories in expected.items():
        means = []
        for category, items in categories.items():
            mus = np.array([r.mu for r in scorer.score([i for i, _ in items], [p for _, p in items])])
            stats = result["generators"][generator]["categories"][category]
            assert stats["count"] == len(mus)
            for key, value in (("mean", mus.mean()), ("std", mus.std()), ("min", mus.min()), ("max", mus.max())):
                assert stats[key] == pytest.approx(value, abs=SERVED_VS_INPROCESS), (generator, category, key)
            means.append(mus.mean())
        overall = result["generators"][generator]["overall"]
        assert overall["mean"] == pytest.approx(np.mean(means), abs=SERVED_VS_INPROCESS)
    assert (tmp_path / "out" / "generation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| generator | animals | architecture | overall |" in capsys.readouterr().out


def test_latency_sweep_with_the_server_split(tiny_server: TritonServer, images: Path, tmp_path: Path) -> None:
    args = ["--endpoint", tiny_server.grpc_url, "latency", "--images", images / "img0.png", images / "img3.png",
            "--requests", "4", "--output", tmp_path, "--load-generator", "asyncio"]  # fmt: skip

    assert _bench(*args, "--sweep", "1,2") == 0

    result = json.loads((tmp_path / "latency.json").read_text())
    assert result["load_generator"] == "asyncio"
    assert [level["concurrency"] for level in result["levels"]] == [1, 2]
    for level in result["levels"]:
        latency = level["latency_ms"]
        assert level["errors"] == 0 and level["throughput_per_s"] > 0
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"]
        models = level["server"]["models"]
        assert models["hpsv3"]["requests"] == 4, "the server counted exactly this level's requests"
        for step in ("preprocess", "vision_encoder", "language_model", "reward_head"):
            assert models[step]["compute_ms"] > 0 and models[step]["queue_ms"] >= 0
    assert (tmp_path / "latency.png").is_file() and (tmp_path / "latency.md").is_file()

    assert _bench(*args, "--sweep", "1,2,3") == 0  # the finished levels are kept
    rerun = json.loads((tmp_path / "latency.json").read_text())
    assert rerun["run"]["levels_from_log"] == 2 and rerun["run"]["levels_measured_now"] == 1
    assert rerun["levels"][:2] == result["levels"]


def test_latency_sweep_driven_by_perf_analyzer(tiny_server: TritonServer, images: Path, tmp_path: Path) -> None:
    """The real perf_analyzer binary (`make perf-analyzer`), found on PATH by `--load-generator auto`, sends the
    images as real input data: every request succeeds and Triton counts them."""
    if not PERF_ANALYZER.is_file():
        pytest.skip(f"{PERF_ANALYZER} is missing: `make perf-analyzer` installs it (make test does)")
    env = os.environ | {"PATH": f"{PERF_ANALYZER.parent}{os.pathsep}{os.environ['PATH']}"}
    sent = [images / "img0.png", images / "img3.png"]
    command = [sys.executable, RUN_PY, "--endpoint", tiny_server.grpc_url, "latency", "--images", *sent,
               "--requests", "4", "--stability", "100", "--sweep", "1,2", "--output", tmp_path]  # fmt: skip
    before = server_snapshot(tiny_server.grpc_url)["hpsv3"]["requests"]

    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "latency.json").read_text())
    assert result["load_generator"] == "perf_analyzer"
    for level in result["levels"]:
        assert level["requests"] >= 4 and level["errors"] == 0 and level["throughput_per_s"] > 0
        assert 0 < level["latency_ms"]["p50"] <= level["latency_ms"]["p90"] <= level["latency_ms"]["p99"]
        assert level["server"]["models"]["preprocess"]["compute_ms"] > 0, "the images reached preprocessing"
    measured = sum(level["requests"] for level in result["levels"])
    assert server_snapshot(tiny_server.grpc_url)["hpsv3"]["requests"] >= before + measured
    assert "load by perf_analyzer" in done.stdout


def _result_lines(cache: Path) -> int:
    return cache.read_text().count("\n") - 1 if cache.is_file() else 0  # minus the header


def test_an_interrupted_run_resumes_scores_nothing_twice_and_ends_the_same(
    tiny_server: TritonServer, scorer: Scorer, tmp_path: Path
) -> None:
    paths = [_image(tmp_path / "images" / f"{i:02d}.png", 20 + i) for i in range(32)]
    pairs = [{"prompt": PROMPTS[0], "path1": a.name, "path2": b.name} for a, b in itertools.pairwise(paths)]
    (tmp_path / "images" / "test.json").write_text(json.dumps(pairs))
    args = ["--endpoint", tiny_server.grpc_url, "--concurrency", "1", "pairs", "--data",
            str(tmp_path / "images" / "test.json"), "--output", str(tmp_path / "out")]  # fmt: skip
    cache = tmp_path / "out" / "scores.jsonl"

    first = subprocess.Popen([HPSV3, "bench", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while _result_lines(cache) < 3 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    first.send_signal(signal.SIGINT)  # as Ctrl-C
    _, stderr = first.communicate(timeout=30)
    assert first.returncode == 130 and "interrupted; what was scored is in" in stderr, stderr[-2000:]
    assert not list((tmp_path / "out").glob("pairs.*")), "no report from an unfinished run"
    cached = _result_lines(cache)
    assert 3 <= cached < 32, f"the run should be stopped halfway, not after {cached} of 32 scores"
    with cache.open("a") as handle:
        handle.write('{"image_sha256": "0123')  # as if killed (SIGKILL, power cut) in the middle of a line
    served_before = server_snapshot(tiny_server.grpc_url)["hpsv3"]["requests"]

    resumed = subprocess.run([sys.executable, str(RUN_PY), *args], capture_output=True, text=True, timeout=300)

    assert resumed.returncode == 0, resumed.stderr[-2000:]
    result = json.loads((tmp_path / "out" / "pairs.json").read_text())
    assert result["run"]["from_cache"] == cached and result["run"]["scored_now"] == 32 - cached
    served = server_snapshot(tiny_server.grpc_url)["hpsv3"]["requests"] - served_before
    assert served == 32 - cached + 1, "only the remainder was sent (plus the one probe that checks the model)"
    mu = _inprocess(scorer, [(path, PROMPTS[0]) for path in paths])
    expected = _counts([(a, b, PROMPTS[0]) for a, b in itertools.pairwise(paths)], mu)
    assert {key: result["overall"][key] for key in expected} == expected

    assert main(args) == 0  # once more: everything from the cache, the same report
    again = json.loads((tmp_path / "out" / "pairs.json").read_text())
    assert again["run"]["scored_now"] == 0 and again["run"]["from_cache"] == 32
    assert {k: v for k, v in again.items() if k != "run"} == {k: v for k, v in result.items() if k != "run"}
