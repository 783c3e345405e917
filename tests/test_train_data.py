"""HPDv3 pair files: null confidence kept, filters, ties, clear errors; the collator is the core's batching."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpsv3_serve.batching import collate
from hpsv3_serve.prompt import PromptTokenizer
from hpsv3_serve.scorer import Scorer
from hpsv3_training.config import ConfigError, load_config
from hpsv3_training.data import DataError, PairDataset, collate_pairs, read_pairs

REPO_ROOT = Path(__file__).resolve().parent.parent


def _write(tmp_path: Path, records: list[dict]) -> Path:
    (tmp_path / "img").mkdir(exist_ok=True)
    for name in ("a.png", "b.png"):
        Image.new("RGB", (56, 84), (200, 10, 10) if name == "a.png" else (10, 10, 200)).save(tmp_path / "img" / name)
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(records))
    return path


def _record(**fields: object) -> dict:
    return {"prompt": "a red square", "path1": "img/a.png", "path2": "img/b.png", **fields}


def test_null_confidence_rows_are_kept_and_low_confidence_rows_dropped(tmp_path: Path) -> None:
    records = [
        _record(confidence=None, choice_dist=None),  # HPDv3's Midjourney / HPDv2 rows
        _record(confidence=0.5, choice_dist=[3, 2]),
        _record(confidence=0.97, choice_dist=[5, 0]),
        _record(),  # no confidence key at all
    ]
    pairs = read_pairs([_write(tmp_path, records)], confidence_threshold=0.95)
    assert len(pairs) == 3 and pairs[0].chosen == tmp_path / "img" / "a.png"
    assert len(read_pairs([tmp_path / "pairs.json"], confidence_threshold=None)) == 4


def test_tied_pairs_come_from_the_vote_margin(tmp_path: Path) -> None:
    records = [_record(choice_dist=[3, 3]), _record(choice_dist=[5, 1]), _record(choice_dist=None)]
    pairs = read_pairs([_write(tmp_path, records)], tied_threshold=0.2)
    assert [pair.tied for pair in pairs] == [True, False, False]
    assert not any(pair.tied for pair in read_pairs([tmp_path / "pairs.json"]))


def test_bad_files_and_records_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nothing\.json: no such file"):
        read_pairs([tmp_path / "nothing.json"])
    with pytest.raises(DataError, match=r"pairs.json\[0\]: a pair record needs text fields prompt, path1, path2"):
        read_pairs([_write(tmp_path, [{"prompt": "x", "path1": "img/a.png"}])])
    with pytest.raises(DataError, match=r"2 image files .* do not exist .*gone.png.*data.images_root"):
        read_pairs([_write(tmp_path, [_record(path1="img/gone.png", path2="img/gone.png")])])
    with pytest.raises(DataError, match="reserved token"):
        read_pairs([_write(tmp_path, [_record(prompt="x <|Reward|>")])])
    with pytest.raises(DataError, match="not valid JSON"):
        (tmp_path / "broken.json").write_text("[{")
        read_pairs([tmp_path / "broken.json"])


def test_collator_gives_the_scorer_batch(tmp_path: Path, tiny: Path, scorer: Scorer) -> None:
    """The training batch holds exactly the tensors in-process scoring builds (one source of preprocessing)."""
    path = _write(tmp_path, [_record(), _record(prompt="a blue square, longer prompt here")])
    dataset = PairDataset(read_pairs([path]), PromptTokenizer.from_base(tiny / "base"))
    batch = collate_pairs([dataset[0], dataset[1]])
    images = [tmp_path / "img" / name for name in ("a.png", "a.png", "b.png", "b.png")]
    prompts = ["a red square", "a blue square, longer prompt here"] * 2
    expected = collate([scorer.prepare(image, prompt) for image, prompt in zip(images, prompts, strict=True)])
    for name in ("input_ids", "attention_mask", "reward_index", "pixel_values", "image_grid_thw"):
        np.testing.assert_array_equal(batch[name].numpy(), getattr(expected, name), err_msg=name)
    assert batch["tied"].tolist() == [False, False]


def test_shipped_configs_parse_and_overrides_apply() -> None:
    recipe = load_config(REPO_ROOT / "training" / "configs" / "HPSv3_7B.yaml")
    assert recipe.loss.type == "uncertainty" and recipe.data.confidence_threshold == 0.95
    assert recipe.train["learning_rate"] == 2e-6 and recipe.train["bf16"] is True
    assert recipe.model.gradient_checkpointing and not recipe.model.freeze_vision_tower and recipe.model.tune_merger
    overrides = ["model.lora.enable=true", "loss.type=bt", "train.learning_rate=1e-4", "data.eval=[a.json, b.json]"]
    tiny = load_config(REPO_ROOT / "training" / "configs" / "tiny.yaml", overrides)
    assert tiny.model.lora.enable and tiny.loss.type == "bt" and tiny.data.eval == ["a.json", "b.json"]
    assert tiny.train["learning_rate"] == 1e-4, "1e-4 is a number (YAML 1.1 would read text)"
    with pytest.raises(ConfigError, match=r"expected section\.key=value"):
        load_config(REPO_ROOT / "training" / "configs" / "tiny.yaml", ["train.max_steps"])
