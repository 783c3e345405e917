"""The reference scorer against golden outputs of the official hpsv3==1.0.0 inferencer (fp32, 1e-5)."""

from __future__ import annotations

import numpy as np
import PIL
import pytest

from hpsv3_serve.inputs import prepare_image
from hpsv3_serve.scorer import Scorer

from .conftest import IMAGES

TOLERANCE = 1e-5


def test_golden_was_made_by_the_official_stack(golden: dict) -> None:
    assert golden["versions"]["hpsv3"] == "1.0.0"
    assert golden["versions"]["transformers"] == "4.45.2"
    assert len(golden["items"]) >= 10


def test_one_by_one_matches_official(scorer: Scorer, golden: dict) -> None:
    for item in golden["items"]:
        (result,) = scorer.score([IMAGES / item["image"]], [item["prompt"]])
        assert result.ok, result.error
        assert abs(result.mu - item["mu"]) <= TOLERANCE, item["image"]
        assert abs(result.log_sigma - item["log_sigma"]) <= TOLERANCE, item["image"]
        assert result.sigma == pytest.approx(np.exp(item["log_sigma"]), rel=1e-4)


def test_batch_matches_official_batch(scorer: Scorer, golden: dict) -> None:
    items = golden["items"]
    results = scorer.score([IMAGES / i["image"] for i in items], [i["prompt"] for i in items])
    mu = np.array([r.mu for r in results])
    log_sigma = np.array([r.log_sigma for r in results])
    assert np.abs(mu - [i["mu_batch"] for i in items]).max() <= TOLERANCE
    assert np.abs(log_sigma - [i["log_sigma_batch"] for i in items]).max() <= TOLERANCE


def test_token_ids_equal_official_up_to_reward_token(scorer: Scorer, golden: dict) -> None:
    for item in golden["items"]:
        prepared = scorer.prepare(IMAGES / item["image"], item["prompt"])
        ids = prepared.input_ids.tolist()
        assert ids == item["input_ids"][: len(ids)], item["image"]
        tail = item["input_ids"][len(ids) :]
        assert len(tail) == 8, "official tail after <|Reward|> is \\n\\nEND\\n<|im_end|>\\n<|im_start|>assistant\\n"
        assert list(prepared.image.grid_thw) == item["grid_thw"]


@pytest.mark.skipif(PIL.__version__ != "13.0.0", reason="golden pixels were made with Pillow 13.0.0")
def test_pixels_equal_official(golden: dict) -> None:
    for item in golden["items"]:
        pixels = prepare_image(IMAGES / item["image"]).pixel_values.astype(np.float64).ravel()
        expected = item["pixel_values"]
        assert pixels.sum() == pytest.approx(expected["sum"], abs=1e-3), item["image"]
        assert np.abs(pixels).sum() == pytest.approx(expected["abs_sum"], rel=1e-9), item["image"]
        np.testing.assert_allclose(pixels[:8], expected["head"], atol=1e-6)
