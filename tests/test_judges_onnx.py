"""The judges' graphs exported to ONNX give the torch judge's scores (1e-5) on the golden items, batched with
prompts of different lengths (export/judges_onnx.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpsv3_export.judges_onnx import export_judge
from hpsv3_serve.judges import load_judge
from hpsv3_serve.judges.onnx_judge import OnnxJudge
from hpsv3_serve.judges.tiny import make_tiny_judges

from .conftest import IMAGES

GOLDEN = {
    name: item
    for file in ("official_judges_tiny.json", "official_imagereward_tiny.json")
    for name, item in json.loads((Path(__file__).parent / "golden" / file).read_text(encoding="utf-8"))[
        "judges"
    ].items()
}
SOURCES = {"pickscore": ("pickscore", "clip-h"), "clip-h": ("clip-h", None),
           "aesthetic": ("aesthetic-mlp.safetensors", "clip-l"), "hpsv2": ("hpsv2.safetensors", "clip-h"),
           "imagereward": ("imagereward", "bert")}  # fmt: skip


def tokens(item) -> tuple:
    return tuple(item.token_ids) if hasattr(item, "token_ids") else (item.input_ids, item.attention_mask)


@pytest.fixture(scope="module")
def tiny_judges(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_judges(tmp_path_factory.mktemp("tiny-judges"))


@pytest.mark.parametrize("name", list(SOURCES))
def test_onnx_towers_match_the_torch_judge(tiny_judges: Path, tmp_path: Path, name: str) -> None:
    """OnnxJudge prepares exactly as the torch judge (no torch weights loaded) and scores as it does."""
    weights, base = SOURCES[name]
    judge = load_judge(name, tiny_judges / weights, base and tiny_judges / base).judge
    onnx = OnnxJudge(export_judge(judge, tmp_path / name))
    golden = GOLDEN[name]
    items = [judge.prepare(IMAGES / item["image"], item["prompt"]) for item in golden]
    prepared = [onnx.prepare(IMAGES / item["image"], item["prompt"]) for item in golden]
    assert all(tokens(a) == tokens(b) and (a.pixels == b.pixels).all() for a, b in zip(items, prepared, strict=True))
    for got, want, item in zip(onnx.score_batch(prepared), judge.score_batch(items), golden, strict=True):
        assert abs(got - want) <= 1e-5 * max(1.0, abs(want)), (item["image"], got, want)
        assert abs(got - item["score"]) <= 1e-5 * max(1.0, abs(item["score"]))
