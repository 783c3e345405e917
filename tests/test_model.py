"""Model behaviour users rely on: causal scores end at <|Reward|>, padding is inert, inputs matter."""

from __future__ import annotations

import numpy as np
import torch

from hpsv3_serve.batching import PreparedItem, collate
from hpsv3_serve.scorer import Scorer

from .conftest import IMAGES


def _score_ids(scorer: Scorer, ids: np.ndarray, item: PreparedItem) -> np.ndarray:
    """Score with an explicit token sequence, reading the reward at the <|Reward|> position."""
    batch = collate([PreparedItem(ids, item.image)])
    reward_position = int(np.flatnonzero(ids == 151657)[0])
    batch = batch.__class__(**{**batch.__dict__, "reward_index": np.array([reward_position])})
    return scorer.engine.score(batch)[0]


def test_tokens_after_reward_cannot_change_the_score(scorer: Scorer, golden: dict) -> None:
    """The official full sequence (with its tail after <|Reward|>) scores the same as ours ending there."""
    for entry in golden["items"][:3]:
        item = scorer.prepare(IMAGES / entry["image"], entry["prompt"])
        full = np.asarray(entry["input_ids"], np.int64)
        assert len(full) > len(item.input_ids)
        np.testing.assert_allclose(_score_ids(scorer, full, item), _score_ids(scorer, item.input_ids, item), atol=1e-5)
        garbage_tail = np.concatenate([item.input_ids, np.arange(1000, 1050, dtype=np.int64)])
        np.testing.assert_allclose(_score_ids(scorer, garbage_tail, item)[0], entry["mu"], atol=1e-5)


def test_right_padding_does_not_change_scores(scorer: Scorer) -> None:
    short = scorer.prepare(IMAGES / "small_200.png", "a")
    long = scorer.prepare(IMAGES / "small_200.png", "a much longer prompt " * 20)
    alone = scorer.engine.score(collate([short]))[0]
    padded = scorer.engine.score(collate([short, long]))[0]
    np.testing.assert_allclose(alone, padded, atol=1e-6)


def test_scores_react_to_image_and_prompt(scorer: Scorer) -> None:
    results = scorer.score(
        [IMAGES / "square_512.png", IMAGES / "gray_300.png", IMAGES / "square_512.png"],
        ["a fox", "a fox", "a red car in the rain at night"],
    )
    mus = [r.mu for r in results]
    assert abs(mus[0] - mus[1]) > 1e-3, "image must change the score"
    assert abs(mus[0] - mus[2]) > 1e-3, "prompt must change the score"


def test_rm_head_stays_float32_in_bfloat16(tiny, tiny_checkpoint) -> None:
    scorer = Scorer.from_pretrained(tiny_checkpoint, tiny / "base", dtype="bfloat16")
    model = scorer.engine.model
    assert model.language_model.embed_tokens.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.rm_head.parameters())
    (result,) = scorer.score([IMAGES / "square_512.png"], "a fox")
    assert result.ok and np.isfinite(result.mu)
