"""The in-process Python API as RL users call it."""

from __future__ import annotations

import pytest

from hpsv3_serve.errors import InputError
from hpsv3_serve.scorer import Scorer

from .conftest import IMAGES


def test_call_returns_mu_per_pair(scorer: Scorer) -> None:
    images = [IMAGES / "small_200.png", IMAGES / "gray_300.png"]
    assert scorer(images, "a cat") == [r.mu for r in scorer.score(images, "a cat")]


def test_call_raises_naming_the_bad_items(scorer: Scorer) -> None:
    with pytest.raises(InputError, match=r"1 of 2 items: .*nope\.png: no such file"):
        scorer([IMAGES / "small_200.png", IMAGES / "nope.png"], ["a cat", "a dog"])


def test_prompt_count_must_match(scorer: Scorer) -> None:
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        scorer.score([IMAGES / "small_200.png"] * 2, ["a cat"])
