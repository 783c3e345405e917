"""The judges (PickScore, CLIP ViT-H/14, aesthetic v2) against their official code paths' golden outputs, and the
shared interface: per-item errors, batches equal to single items, arrays, limits, weight sources."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpsv3_serve.errors import ModelLoadError
from hpsv3_serve.judges import JUDGES, load_judge
from hpsv3_serve.judges.clip_inputs import OPENAI, TRANSFORMERS, crop_box
from hpsv3_serve.judges.tiny import make_tiny_judges
from hpsv3_serve.limits import InputLimits

TESTS = Path(__file__).parent
IMAGES = TESTS / "fixtures" / "images"
GOLDEN = json.loads((TESTS / "golden" / "official_judges_tiny.json").read_text(encoding="utf-8"))
TOLERANCE = 1e-5  # relative to max(1, |score|): PickScore's scores are 100 x cosine


@pytest.fixture(scope="module")
def tiny_judges(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny judges; byte for byte those the golden file was made from."""
    out = make_tiny_judges(tmp_path_factory.mktemp("tiny-judges"))
    for name, digest in GOLDEN["sha256"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest, f"{name} changed: rerun golden-judges"
    return out


def sources(tiny: Path, name: str) -> tuple[Path, Path | None]:
    return {
        "pickscore": (tiny / "pickscore", tiny / "clip-h"),
        "clip-h": (tiny / "clip-h", None),
        "aesthetic": (tiny / "aesthetic-mlp.safetensors", tiny / "clip-l"),
    }[name]


@pytest.fixture(scope="module")
def judges(tiny_judges: Path) -> dict:
    return {name: load_judge(name, *sources(tiny_judges, name), batch_size=4) for name in GOLDEN["judges"]}


@pytest.mark.parametrize("name", ["pickscore", "clip-h", "aesthetic"])
def test_matches_official(judges: dict, name: str) -> None:
    items = GOLDEN["judges"][name]
    results = judges[name].score([IMAGES / item["image"] for item in items], [item["prompt"] for item in items])
    for item, result in zip(items, results, strict=True):
        assert result.ok, result.error
        assert abs(result.score - item["score"]) <= TOLERANCE * max(1.0, abs(item["score"])), (item, result.score)


@pytest.mark.parametrize("name", ["pickscore", "clip-h"])
def test_token_ids_match_official(judges: dict, name: str) -> None:
    judge = judges[name].judge
    for item in GOLDEN["judges"][name]:
        assert judge.tokenizer.encode(judge.clean(item["prompt"])).ids == item["input_ids"], item["prompt"]


def test_batch_equals_single_and_bad_items_fail_alone(judges: dict) -> None:
    judge = judges["pickscore"]
    images = [IMAGES / "square_512.png", IMAGES / "missing.png", b"not an image", IMAGES / "gray_300.png", 42]
    prompts = ["a fox", "x", "y", "a cat", "z"]
    results = judge.score(images, prompts)
    assert [r.ok for r in results] == [True, False, False, True, False]
    assert "missing.png: no such file" in results[1].error and "not a recognised image format" in results[2].error
    singles = [judge.score([images[i]], [prompts[i]])[0].score for i in (0, 3)]
    assert [results[0].score, results[3].score] == pytest.approx(singles, rel=1e-6)
    assert results[0].to_dict() == {"image": str(images[0]), "prompt": "a fox", "model": "pickscore",
                                    "score": results[0].score}  # fmt: skip


def test_arrays_score_as_lossless_files(judges: dict) -> None:
    pixels = np.asarray(Image.open(IMAGES / "photo_800x600.jpg").convert("RGB"))
    for name in ("clip-h", "aesthetic"):
        from_file = judges[name](IMAGES / "photo_800x600.jpg", "a photo")
        from_array = judges[name](pixels, "a photo")
        from_float = judges[name](pixels.astype(np.float32) / 255, "a photo")
        assert from_array == pytest.approx(from_file, rel=1e-6) and from_float == pytest.approx(from_file, rel=1e-6)


def test_limits_and_prompts(tiny_judges: Path) -> None:
    judge = load_judge("clip-h", tiny_judges / "clip-h", limits=InputLimits(max_image_pixels=1000, max_prompt_bytes=8))
    results = judge.score([IMAGES / "small_200.png", IMAGES / "small_200.png", IMAGES / "small_200.png"],
                          ["ok", "much too long", "\ud800"])  # fmt: skip
    assert "over the limit of 1000" in results[0].error
    assert "over the limit of 8" in results[1].error and "lone surrogate" in results[2].error


def test_crop_offsets_follow_each_convention() -> None:
    assert crop_box(224, 227, 224, TRANSFORMERS)[1] == 1  # (227 - 224) // 2
    assert crop_box(224, 227, 224, OPENAI)[1] == 2  # round(1.5) = 2 (torchvision CenterCrop)


def test_pickle_and_unknown_sources_are_refused(tmp_path: Path, tiny_judges: Path) -> None:
    with pytest.raises(ModelLoadError, match="unknown reward model"):
        load_judge("imagereward2")
    pth = tmp_path / "sac+logos+ava1-l14-linearMSE.pth"
    pth.write_bytes(b"pickle")
    with pytest.raises(ModelLoadError, match="convert it once"):
        load_judge("aesthetic", pth, tiny_judges / "clip-l")
    folder = tmp_path / "pickscore"
    folder.mkdir()
    (folder / "config.json").write_text((tiny_judges / "pickscore" / "config.json").read_text())
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelLoadError, match=r"no model.safetensors.*pytorch_model.bin"):
        load_judge("pickscore", folder, tiny_judges / "clip-h")
    assert set(JUDGES) == {"hpsv3", "pickscore", "clip-h", "aesthetic"}
