"""Shared fixtures: the tiny model built once per session, the golden file, fixture images."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from hpsv3_serve.scorer import Scorer
from hpsv3_serve.tiny import TINY_CHECKPOINT, make_tiny

TESTS = Path(__file__).parent
IMAGES = TESTS / "fixtures" / "images"
GOLDEN = TESTS / "golden" / "official_tiny.json"


@pytest.fixture(scope="session")
def golden() -> dict:
    return json.loads(GOLDEN.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory, golden: dict) -> Path:
    """`hpsv3 make-tiny --seed 0` output; must be the very checkpoint the golden file was made from."""
    out = tmp_path_factory.mktemp("tiny")
    checkpoint = make_tiny(out, seed=0)
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert digest == golden["checkpoint_sha256"], "tiny checkpoint changed: regenerate goldens with `make golden`"
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny: Path) -> Path:
    return tiny / TINY_CHECKPOINT


@pytest.fixture(scope="session")
def scorer(tiny: Path, tiny_checkpoint: Path) -> Scorer:
    return Scorer.from_pretrained(tiny_checkpoint, tiny / "base", batch_size=4)
