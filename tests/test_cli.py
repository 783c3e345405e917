"""The `hpsv3` console script, run for real as users run it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from hpsv3_repository.launcher import TritonServer

from .conftest import IMAGES

HPSV3 = [str(Path(sys.executable).with_name("hpsv3"))]


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*HPSV3, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


# Runs `hpsv3 ARGS` in a fresh interpreter, then prints which heavy modules it imported.
IMPORTS_OF = """import sys
from hpsv3_serve.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print("HEAVY", sorted({"torch", "transformers"} & set(sys.modules)), file=sys.stderr)
sys.exit(code)
"""


def _heavy_imports(*args: str) -> tuple[subprocess.CompletedProcess, str]:
    result = subprocess.run([sys.executable, "-c", IMPORTS_OF, *args], capture_output=True, text=True, timeout=120)
    return result, result.stderr.splitlines()[-1]


@pytest.mark.parametrize("verb", [[], ["score"], ["bench"], ["cohp"], ["demo-ui"]], ids=" ".join)
def test_help_and_client_verbs_start_without_torch_or_transformers(verb: list[str]) -> None:
    result, heavy = _heavy_imports(*verb, "--help")
    assert result.returncode == 0 and "usage:" in result.stdout, result.stderr[-2000:]
    assert heavy == "HEAVY []"


def test_score_on_an_endpoint_imports_neither_torch_nor_transformers(toy_server: TritonServer) -> None:
    result, heavy = _heavy_imports("score", "--endpoint", toy_server.grpc_url, str(IMAGES / "square_512.png"),
                                   "--prompt", "a cat", "--format", "jsonl")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "mu" in json.loads(result.stdout.splitlines()[0])
    assert heavy == "HEAVY []"


def test_help_teaches_the_verbs() -> None:
    result = _run("--help")
    assert result.returncode == 0
    assert "score" in result.stdout and "make-tiny" in result.stdout and "examples:" in result.stdout
    assert "bench" in result.stdout, "the benchmark runner is a verb too"
    assert "train" in result.stdout, "so is the trainer"
    assert "--checkpoint" in _run("score", "--help").stdout


def test_score_jsonl_reproduces_official_outputs(tmp_path: Path, tiny: Path, tiny_checkpoint: Path, golden: dict):
    """The issue's acceptance command: official-layout file + base with config and tokenizer only."""
    base_only = tmp_path / "base"
    base_only.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny / "base" / name, base_only / name)
    pairs = _jsonl(
        tmp_path / "pairs.jsonl", [{"image": str(IMAGES / i["image"]), "prompt": i["prompt"]} for i in golden["items"]]
    )
    result = _run("score", "--checkpoint", str(tiny_checkpoint), "--base", str(base_only), "--input", str(pairs),
                  "--format", "jsonl", "--device", "cpu")  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == len(golden["items"])
    for row, item in zip(rows, golden["items"], strict=True):
        assert set(row) == {"image", "prompt", "mu", "sigma", "log_sigma"}
        assert row["prompt"] == item["prompt"]
        assert abs(row["mu"] - item["mu"]) <= 1e-5 and abs(row["log_sigma"] - item["log_sigma"]) <= 1e-5


def test_bad_items_get_their_own_error_and_the_rest_are_scored(tmp_path: Path, tiny: Path, tiny_checkpoint: Path):
    (tmp_path / "fake.png").write_text("I am a text file")
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(300))
    Image.new("RGB", (4100, 20)).save(tmp_path / "thin.png")
    shutil.copy(IMAGES / "small_200.png", tmp_path / "ok.png")
    records = [
        {"image": "ok.png", "prompt": ""},
        {"image": "missing.png", "prompt": "x"},
        {"image": "fake.png", "prompt": "x"},
        {"image": "corrupt.jpg", "prompt": "x"},
        {"image": "thin.png", "prompt": "x"},
        {"image": "ok.png", "prompt": "a <|Reward|> b"},
    ]
    inputs = _jsonl(tmp_path / "in.jsonl", records)
    with inputs.open("a") as handle:
        handle.write("{not json\n")
    result = _run("score", "--input", str(inputs), "--format", "jsonl",
                  "--checkpoint", str(tiny_checkpoint), "--base", str(tiny / "base"))  # fmt: skip
    assert result.returncode == 1
    assert "6 of 7 items failed" in result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert "mu" in rows[0] and rows[0]["prompt"] == "", "an empty prompt is allowed and scored"
    expected = [
        "missing.png: no such file",
        "fake.png: not a recognised image",
        "corrupt.jpg: not a recognised image",
        "thin.png: 4100x20: absolute aspect ratio",
        "reserved token <|Reward|>",
        "in.jsonl:7: expected",
    ]
    for row, fragment in zip(rows[1:], expected, strict=True):
        assert fragment in row["error"], row
        assert "mu" not in row


def test_table_output(tiny: Path, tiny_checkpoint: Path) -> None:
    result = _run("score", str(IMAGES / "square_512.png"), "--prompt", "a fox",
                  "--checkpoint", str(tiny_checkpoint), "--base", str(tiny / "base"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()
    assert header.split()[:3] == ["#", "mu", "sigma"]
    assert "square_512.png" in row and "a fox" in row


def test_offline_default_checkpoint_says_how_to_get_it(tmp_path: Path) -> None:
    result = subprocess.run(
        [*HPSV3, "score", str(IMAGES / "square_512.png")],
        capture_output=True, text=True, timeout=120,
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 2
    assert "hf download" in result.stderr and "local path" in result.stderr


def test_make_tiny_is_deterministic(tmp_path: Path, tiny_checkpoint: Path) -> None:
    result = _run("make-tiny", str(tmp_path / "again"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "again" / "HPSv3-tiny.safetensors").read_bytes() == tiny_checkpoint.read_bytes()
    assert not list((tmp_path / "again" / "base").glob("*.safetensors")), "the base folder holds no weights"
