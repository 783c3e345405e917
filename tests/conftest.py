"""Shared fixtures: the tiny model built once per session, the golden file, fixture images."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpsv3_repository.build import render, settings_for
from hpsv3_repository.launcher import TritonServer, free_port
from hpsv3_serve.checkpoint import CHECKPOINT_FILE
from hpsv3_serve.scorer import Scorer
from hpsv3_serve.tiny import TINY_CHECKPOINT, make_tiny

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    # Run in the background (`make test &`, nohup), SIGINT is ignored, and children inherit that through exec:
    # the tests' Ctrl-C (SIGINT to `hpsv3 serve`, `bench`, `cohp`, `train`) would do nothing. With a handler here
    # instead, every child starts with the default again.
    signal.signal(signal.SIGINT, signal.default_int_handler)

TESTS = Path(__file__).parent
IMAGES = TESTS / "fixtures" / "images"
GOLDEN = TESTS / "golden" / "official_tiny.json"
TOY_REPOSITORY = TESTS / "fixtures" / "toy_repository"
HUB_CHECKPOINT, HUB_BASE, HUB_TAG = "org/hpsv3-tiny", "org/qwen2-vl-tiny", "v1"
HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"


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


def _running(repository: Path, workdir: Path) -> Iterator[TritonServer]:
    server = TritonServer(
        repository, grpc_port=free_port(), http_port=free_port(), metrics_port=free_port(), workdir=workdir
    )
    server.start(timeout_s=180)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def toy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """The real tritonserver on a toy `hpsv3` (MU = image bytes, SIGMA = prompt bytes + 1); it imports
    numpy and hpsv3_serve, so loading it proves the stub sees this venv."""
    yield from _running(TOY_REPOSITORY, tmp_path_factory.mktemp("toy-triton"))


@pytest.fixture(scope="session")
def tiny_artifacts(tiny: Path, tiny_checkpoint: Path) -> Path:
    """`hpsv3 export` of the tiny model (verified against PyTorch while exporting)."""
    from hpsv3_export.onnx_export import export_onnx

    export_onnx(tiny_checkpoint, tiny / "base", tiny / "onnx")
    return tiny / "onnx"


@pytest.fixture(scope="session")
def tiny_server(tiny_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """The real CPU repository of the tiny model, served by the real tritonserver."""
    repository = render("cpu", settings_for(tiny_artifacts), tmp_path_factory.mktemp("repo") / "repository")
    yield from _running(repository, tmp_path_factory.mktemp("tiny-triton"))


@pytest.fixture
def hub(tiny: Path, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An offline hub cache (huggingface_hub's layout) holding the tiny checkpoint as HUB_CHECKPOINT and its base
    as HUB_BASE, both at HUB_COMMIT, with the tag HUB_TAG pointing there; returns the cache folder."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    for repo, source in ((HUB_CHECKPOINT, tiny_checkpoint), (HUB_BASE, tiny / "base")):
        folder = cache / ("models--" + repo.replace("/", "--"))
        snapshot = folder / "snapshots" / HUB_COMMIT
        if source.is_dir():
            shutil.copytree(source, snapshot)
        else:
            snapshot.mkdir(parents=True)
            shutil.copy(source, snapshot / CHECKPOINT_FILE)
        (folder / "refs").mkdir()
        (folder / "refs" / HUB_TAG).write_text(HUB_COMMIT)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # read by huggingface_hub at each call
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache
