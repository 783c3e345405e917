"""The engine factory and the fast engine: every backend from one `load`, the fast engine on CPU in fp32 against the
official golden file and the reference, `hpsv3 score --backend onnx` against the golden file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hpsv3_serve import engines
from hpsv3_serve.batching import collate
from hpsv3_serve.engines.fast_engine import graph_rows, served_lengths
from hpsv3_serve.errors import ModelLoadError
from hpsv3_serve.scorer import Scorer

from .conftest import IMAGES

HPSV3 = [str(Path(sys.executable).with_name("hpsv3"))]


def _golden_pairs(golden: dict) -> tuple[list[Path], list[str]]:
    return [IMAGES / item["image"] for item in golden["items"]], [item["prompt"] for item in golden["items"]]


def test_fast_engine_reproduces_the_official_golden_file(tiny: Path, tiny_checkpoint: Path, golden: dict) -> None:
    with Scorer.from_pretrained(tiny_checkpoint, tiny / "base", backend="fast", batch_size=4) as scorer:
        assert scorer.engine.name == "fast" and scorer.engine.options == {"compile": False, "cuda_graphs": False}
        results = scorer.score(*_golden_pairs(golden))
    for result, item in zip(results, golden["items"], strict=True):
        assert abs(result.mu - item["mu"]) <= 1e-5 and abs(result.log_sigma - item["log_sigma"]) <= 1e-5


def test_fast_engine_matches_the_reference_on_a_mixed_batch(tiny: Path, tiny_checkpoint: Path, scorer: Scorer) -> None:
    """Images of different sizes (two runs of equal-size images) and prompts of different lengths, in one batch."""
    fast = engines.load("fast", model=scorer.engine.model, cuda_graphs=True)  # graphs are CUDA-only: off here
    assert fast.options["cuda_graphs"] is False
    names = ["square_512.png", "square_512.png", "rgba_640x480.png", "small_200.png"]
    prompts = ["", "a cat", "a red balloon over a quiet lake, long prompt " * 4, "x"]
    batch = collate([scorer.prepare(IMAGES / name, prompt) for name, prompt in zip(names, prompts, strict=True)])
    assert np.abs(fast.score(batch) - scorer.engine.score(batch)).max() <= 1e-5


def test_graph_batches_pad_with_zero_rows_that_change_no_real_row(scorer: Scorer) -> None:
    """CUDA graphs serve dynamic batches by padding them to a graph batch size with zero rows: the real rows'
    scores are those of the unpadded batch (checked on the eager tower, the code the graphs record)."""
    assert [graph_rows(count) for count in (1, 2, 3, 4, 5, 8, 9, 16, 17, 24, 25, 32)] == [
        1, 2, 4, 4, 8, 8, 16, 16, 24, 24, 32, 32
    ]  # fmt: skip
    fast = engines.load("fast", model=scorer.engine.model)
    lengths = served_lengths(scorer.tokenizer)
    assert lengths == list(range(lengths[0], lengths[0] + 97, 32)) and lengths[0] > 256  # image tokens + template
    assert fast.warm_up(32, lengths) == 0  # no graphs on CPU: nothing to capture
    language = fast.fast.language
    embeds = torch.randn(3, 64, scorer.engine.model.language_model.embed_tokens.weight.shape[1])
    index = torch.tensor([63, 40, 10])
    padded = torch.cat([embeds, torch.zeros(1, 64, embeds.shape[-1])])
    with torch.inference_mode():
        alone, in_graph_batch = (
            language(embeds, index),
            language(padded, torch.cat([index, torch.zeros(1, dtype=torch.long)])),
        )
    assert torch.isfinite(in_graph_batch).all() and torch.allclose(in_graph_batch[:3], alone, atol=1e-5)


def test_the_factory_names_every_backend_and_says_what_is_missing(tmp_path: Path) -> None:
    assert engines.BACKENDS == ("torch", "fast", "onnx", "vllm")
    assert engines.default_backend("cuda:1") == "fast" and engines.default_backend("cpu") == "torch"
    with pytest.raises(ModelLoadError, match="choose from torch, fast, onnx, vllm"):
        engines.load("tensorrt")
    with pytest.raises(ModelLoadError, match="hpsv3 export --out DIR"):
        engines.load("onnx", folder=tmp_path / "none")
    with pytest.raises(ModelLoadError, match="hpsv3 export --vllm DIR"):
        engines.load("vllm")
    with pytest.raises(ModelLoadError, match="checkpoint and a base"):
        engines.load("fast")


def test_closing_a_scorer_closes_its_engine(tiny: Path, tiny_checkpoint: Path) -> None:
    closed = []

    class Recording:
        name = "recording"

        def score(self, batch):
            return np.zeros((len(batch), 2), np.float32)

        def close(self) -> None:
            closed.append(True)

    base = Scorer.from_pretrained(tiny_checkpoint, tiny / "base")
    with Scorer(Recording(), base.tokenizer) as scorer:
        assert scorer.score([IMAGES / "small_200.png"], "p")[0].mu == 0.0
    assert closed == [True]
    base.close()


def test_score_backend_onnx_reproduces_the_golden_file(
    tiny: Path, tiny_checkpoint: Path, tiny_artifacts: Path, golden: dict, tmp_path: Path
) -> None:
    """`hpsv3 score --backend onnx` reuses a verified export of the same checkpoint (cached by content hash)."""
    cache = tmp_path / "cache"
    (cache / "score-onnx").mkdir(parents=True)
    (cache / "score-onnx" / "onnx").symlink_to(tiny_artifacts)
    pairs = tmp_path / "pairs.jsonl"
    items = golden["items"]
    pairs.write_text(
        "".join(json.dumps({"image": str(IMAGES / i["image"]), "prompt": i["prompt"]}) + "\n" for i in items)
    )
    result = subprocess.run(
        [*HPSV3, "score", "--backend", "onnx", "--checkpoint", str(tiny_checkpoint), "--base", str(tiny / "base"),
         "--input", str(pairs), "--format", "jsonl"],
        capture_output=True, text=True, timeout=300, env=os.environ | {"HPSV3_CACHE_DIR": str(cache)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "reusing ONNX artifacts" in result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    for row, item in zip(rows, golden["items"], strict=True):
        assert abs(row["mu"] - item["mu"]) <= 1e-5 and abs(row["log_sigma"] - item["log_sigma"]) <= 1e-5
