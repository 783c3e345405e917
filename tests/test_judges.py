"""The judges (PickScore, CLIP ViT-H/14, aesthetic v2, HPSv2, ImageReward) against their official code paths' golden
outputs, and the shared interface: per-item errors, batches equal to single items, arrays, limits, weight sources."""

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
IR_GOLDEN = json.loads((TESTS / "golden" / "official_imagereward_tiny.json").read_text(encoding="utf-8"))
GOLDEN_ITEMS = GOLDEN["judges"] | IR_GOLDEN["judges"]
TOLERANCE = 1e-5  # relative to max(1, |score|): PickScore's scores are 100 x cosine


@pytest.fixture(scope="module")
def tiny_judges(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny judges; byte for byte those the golden file was made from."""
    out = make_tiny_judges(tmp_path_factory.mktemp("tiny-judges"))
    for name, digest in (GOLDEN["sha256"] | IR_GOLDEN["sha256"]).items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest, f"{name} changed: rerun golden-judges"
    return out


def sources(tiny: Path, name: str) -> tuple[Path, Path | None]:
    return {
        "pickscore": (tiny / "pickscore", tiny / "clip-h"),
        "clip-h": (tiny / "clip-h", None),
        "aesthetic": (tiny / "aesthetic-mlp.safetensors", tiny / "clip-l"),
        "hpsv2": (tiny / "hpsv2.safetensors", tiny / "clip-h"),
        "imagereward": (tiny / "imagereward", tiny / "bert"),
    }[name]


@pytest.fixture(scope="module")
def judges(tiny_judges: Path) -> dict:
    return {name: load_judge(name, *sources(tiny_judges, name), batch_size=4) for name in GOLDEN_ITEMS}


@pytest.mark.parametrize("name", ["pickscore", "clip-h", "aesthetic", "hpsv2", "imagereward"])
def test_matches_official(judges: dict, name: str) -> None:
    items = GOLDEN_ITEMS[name]
    results = judges[name].score([IMAGES / item["image"] for item in items], [item["prompt"] for item in items])
    for item, result in zip(items, results, strict=True):
        assert result.ok, result.error
        assert abs(result.score - item["score"]) <= TOLERANCE * max(1.0, abs(item["score"])), (item, result.score)


@pytest.mark.parametrize("name", ["pickscore", "clip-h"])
def test_token_ids_match_official(judges: dict, name: str) -> None:
    judge = judges[name].judge
    for item in GOLDEN["judges"][name]:
        assert judge.tokenizer.encode(judge.clean(item["prompt"])).ids == item["input_ids"], item["prompt"]


def test_imagereward_inputs_match_official(judges: dict) -> None:
    """35 ids, [CLS] first, padded ([DEC] / [ENC] written in a prompt are BLIP's added tokens, as in the official), and
    the pixels of `ImageReward.preprocess` (OpenAI's transform), every image mode."""
    judge = judges["imagereward"].judge
    for item in IR_GOLDEN["judges"]["imagereward"]:
        prepared = judge.prepare(IMAGES / item["image"], item["prompt"])
        assert list(prepared.input_ids) == item["input_ids"], item["prompt"]
        assert prepared.pixels.astype(np.float64).sum() == pytest.approx(item["pixel_sum"], rel=1e-9), item["image"]


def test_imagereward_weights(tmp_path: Path, tiny_judges: Path) -> None:
    """The official keys map onto transformers' modules and back; a pickle or a foreign key is refused."""
    from safetensors.torch import load_file, save_file

    from hpsv3_serve.judges.imagereward import official_to_ours, ours_to_official

    state = load_file(str(tiny_judges / "imagereward" / "ImageReward.safetensors"))
    unused = {key for key in state if key.startswith(("blip.vision_proj", "blip.text_proj")) or "position_ids" in key}
    assert set(ours_to_official(**official_to_ours(state))) == set(state) - unused
    (tmp_path / "ImageReward.pt").write_bytes(b"pickle")
    with pytest.raises(ModelLoadError, match=r"ImageReward\.pt: pickle checkpoints .* convert it once"):
        load_judge("imagereward", tmp_path, tiny_judges / "bert")
    save_file(
        state | {"blip.visual_encoder.head.weight": state["mlp.layers.7.weight"].clone()},
        str(tmp_path / "x.safetensors"),
    )
    (tmp_path / "med_config.json").write_text((tiny_judges / "imagereward" / "med_config.json").read_text())
    with pytest.raises(ModelLoadError, match=r"unexpected keys \['blip.visual_encoder.head.weight'\]"):
        load_judge("imagereward", tmp_path / "x.safetensors", tiny_judges / "bert")
    save_file({k: v for k, v in state.items() if not k.startswith("mlp.")}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ModelLoadError, match=r"not an ImageReward checkpoint .* no mlp\.layers\.0\.weight"):
        load_judge("imagereward", tmp_path / "x.safetensors", tiny_judges / "bert")


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


def test_hpsv2_scores_what_the_official_cannot(judges: dict) -> None:
    """RGBA (hpsv2 keeps 4 channels and fails) is scored without alpha; a 224-long non-square image is padded."""
    rgba = Image.open(IMAGES / "rgba_640x480.png")
    assert judges["hpsv2"](rgba, "a balloon") == pytest.approx(judges["hpsv2"](rgba.convert("RGB"), "a balloon"))
    assert judges["hpsv2"].score([Image.new("RGB", (224, 100), "red")], "red")[0].ok


def test_crop_offsets_follow_each_convention() -> None:
    assert crop_box(224, 227, 224, TRANSFORMERS)[1] == 1  # (227 - 224) // 2
    assert crop_box(224, 227, 224, OPENAI)[1] == 2  # round(1.5) = 2 (torchvision CenterCrop)


def test_pickle_and_unknown_sources_are_refused(tmp_path: Path, tiny_judges: Path) -> None:
    with pytest.raises(ModelLoadError, match="unknown reward model"):
        load_judge("imagereward2")
    pth = tmp_path / "sac+logos+ava1-l14-linearMSE.pth"
    pth.write_bytes(b"pickle")
    pth.with_name("HPS_v2_compressed.pt").write_bytes(b"pickle")
    with pytest.raises(ModelLoadError, match="convert it once"):
        load_judge("aesthetic", pth, tiny_judges / "clip-l")
    folder = tmp_path / "pickscore"
    folder.mkdir()
    (folder / "config.json").write_text((tiny_judges / "pickscore" / "config.json").read_text())
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelLoadError, match=r"no model.safetensors.*pytorch_model.bin"):
        load_judge("pickscore", folder, tiny_judges / "clip-h")
    assert set(JUDGES) == {"hpsv3", "hpsv2", "hpsv2.1", "pickscore", "clip-h", "aesthetic", "imagereward"}
    with pytest.raises(ModelLoadError, match=r"\['state_dict'\]"):  # HPSv2's .pt nests its weights
        load_judge("hpsv2", pth.with_name("HPS_v2_compressed.pt"), tiny_judges / "clip-h")


@pytest.fixture
def offline_hub(tiny_judges: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An offline hub cache holding the tiny judges under the default hub ids (and the aesthetic MLP and ImageReward
    under the .pth / .pt names they are published under, pickle or not)."""
    import shutil

    from huggingface_hub import constants

    from hpsv3_serve.judges import AESTHETIC, AESTHETIC_FILE, CLIP_H, IMAGEREWARD, PICKSCORE

    commit = "0123456789abcdef0123456789abcdef01234567"
    for repo, source in ((PICKSCORE.weights, "pickscore"), (CLIP_H.weights, "clip-h"), (AESTHETIC.base, "clip-l"),
                         (AESTHETIC.weights, "aesthetic-mlp.safetensors"), (IMAGEREWARD.weights, "imagereward"),
                         (IMAGEREWARD.base, "bert")):  # fmt: skip
        folder = tmp_path / "hub" / ("models--" + repo.replace("/", "--"))
        snapshot = folder / "snapshots" / commit
        if (tiny_judges / source).is_dir():
            shutil.copytree(tiny_judges / source, snapshot)
        else:
            snapshot.mkdir(parents=True)
            shutil.copy(tiny_judges / source, snapshot / AESTHETIC_FILE)
        (folder / "refs").mkdir()
        (folder / "refs" / "main").write_text(commit)
    ir_snapshot = tmp_path / "hub" / "models--THUDM--ImageReward" / "snapshots" / commit
    shutil.copytree(ir_snapshot, tmp_path / "tiny-ir")
    (ir_snapshot / "ImageReward.safetensors").rename(ir_snapshot / "ImageReward.pt")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hub"


def test_default_hub_ids(offline_hub: Path, judges: dict) -> None:
    image = IMAGES / "square_512.png"
    for name in ("pickscore", "clip-h"):
        assert load_judge(name)(image, "a fox") == pytest.approx(judges[name](image, "a fox"), rel=1e-6)
    with pytest.raises(ModelLoadError, match=r"aesthetic-model\.pth: pickle checkpoints .* convert it once"):
        load_judge("aesthetic")
    with pytest.raises(ModelLoadError, match=r"ImageReward\.pt: pickle checkpoints .* convert it once"):
        load_judge("imagereward")
    ours = load_judge("imagereward", offline_hub.parent / "tiny-ir")  # converted locally; the tokenizer from the hub
    assert ours(image, "a fox") == pytest.approx(judges["imagereward"](image, "a fox"), rel=1e-6)


def test_cli_scores_with_another_model(tiny_judges: Path, capsys: pytest.CaptureFixture) -> None:
    from hpsv3_serve.cli import main

    image = IMAGES / "square_512.png"
    args = ["score", str(image), "nope.png", "--prompt", "a fox", "--model", "pickscore",
            "--checkpoint", str(tiny_judges / "pickscore"), "--base", str(tiny_judges / "clip-h")]  # fmt: skip
    assert main([*args, "--format", "jsonl"]) == 1
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0]["model"] == "pickscore" and rows[0]["score"] == pytest.approx(
        load_judge("pickscore", *sources(tiny_judges, "pickscore"))(image, "a fox")[0], rel=1e-6
    )
    assert rows[1]["error"] == "nope.png: no such file"
    assert main(args) == 1 and "score     sigma" in capsys.readouterr().out
    assert main([*args, "--endpoint", "127.0.0.1:1"]) == 2


def test_hpsv3_is_one_of_the_judges(tiny: Path, tiny_checkpoint: Path, golden: dict) -> None:
    item = golden["items"][0]
    with load_judge("hpsv3", tiny_checkpoint, tiny / "base") as scorer:
        result = scorer.score([IMAGES / item["image"]], item["prompt"])[0]
    assert result.score == result.mu and abs(result.mu - item["mu"]) <= 1e-5
