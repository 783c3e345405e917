"""A generated corpus of every input class, through the Python API, the CLI and the served model: each format
is scored (the same scores everywhere), each bad item gets its own error naming it and the reason, and the
items around it are scored."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpsv3_client import HPSv3Client
from hpsv3_repository.launcher import TritonServer
from hpsv3_serve.limits import InputLimits
from hpsv3_serve.prompt import PromptTokenizer
from hpsv3_serve.scorer import Scorer

from .hostile import bad_corpus, encoded, good_corpus, picture

HPSV3 = str(Path(sys.executable).with_name("hpsv3"))
SERVED_VS_INPROCESS = 2e-5
LIMITS = InputLimits(max_image_bytes=2_000_000, max_image_pixels=40_000_000, max_prompt_tokens=64)


@pytest.fixture(scope="module")
def limited_scorer(scorer: Scorer, tiny: Path) -> Scorer:
    """The tiny scorer with small limits (the server test uses the same numbers in its repository)."""
    return Scorer(scorer.engine, PromptTokenizer.from_base(tiny / "base", LIMITS), 4, LIMITS)


def test_python_api_scores_every_format_and_names_every_bad_item(limited_scorer: Scorer) -> None:
    good, bad = good_corpus(), bad_corpus()
    images = [data for data, _, _ in bad.values()] + list(good.values())
    prompts = [prompt for _, prompt, _ in bad.values()] + ["a fox"] * len(good)
    results = limited_scorer.score(images, prompts)
    for (name, (_, _, fragment)), result in zip(bad.items(), results, strict=False):
        assert result.error and fragment in result.error, (name, result.error)
        assert result.mu is None
    for name, result in zip(good, results[len(bad) :], strict=True):
        assert result.error is None and np.isfinite(result.mu), (name, result.error)


def test_cli_reports_each_bad_item_and_scores_the_rest(tiny: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    good, bad = good_corpus(), bad_corpus()
    records = []
    for name, (data, prompt, _) in bad.items():
        (tmp_path / name).write_bytes(data)
        records.append({"image": name, "prompt": prompt})
    for name, data in good.items():
        (tmp_path / name).write_bytes(data)
        records.append({"image": name, "prompt": "a fox"})
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    command = [HPSV3, "score", "--input", tmp_path / "in.jsonl", "--format", "jsonl", "--checkpoint", tiny_checkpoint,
               "--base", tiny / "base", "--max-image-bytes", "2000000", "--max-image-pixels", "40000000",
               "--max-prompt-tokens", "64"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1 and f"{len(bad)} of {len(records)} items failed" in done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    for row, (name, (_, _, fragment)) in zip(rows, bad.items(), strict=False):
        assert row["image"].endswith(name) and fragment in row["error"], row
    assert all("mu" in row for row in rows[len(bad) :])


def test_server_answers_every_format_each_bad_item_alone_and_keeps_serving(
    tiny_server: TritonServer, scorer: Scorer
) -> None:
    """Against the served model (default limits): bad items interleaved with good ones; every good one gets
    the in-process score, every bad one an INVALID_ARG naming the reason."""
    good = good_corpus()
    bad = {name: case for name, case in bad_corpus().items() if name not in ("huge-file", "long-prompt")}
    bad["bomb.png"] = (encoded(Image.new("1", (10000, 9000)), "PNG"), "p", "over the limit of 80000000")
    bad["not-utf8"] = (encoded(picture(), "PNG"), b"caf\xe9", "PROMPT: not valid UTF-8")
    images, prompts = [], []
    for data, prompt, _ in bad.values():
        images += [data, good["rgb.jpg"]]
        prompts += [prompt, "a fox"]
    images += list(good.values())
    prompts += ["a fox"] * len(good)
    results = _score_raw(tiny_server.grpc_url, images, prompts)
    for index, (name, (_, _, fragment)) in enumerate(bad.items()):
        error, after = results[2 * index], results[2 * index + 1]
        assert error[0] is None and fragment in error[1], (name, error)
        assert after[0] is not None, f"the request after {name} was answered"
    expected = scorer.score(list(good.values()), "a fox")
    for (mu, error), reference, name in zip(results[2 * len(bad) :], expected, good, strict=True):
        assert error is None and abs(mu - reference.mu) < SERVED_VS_INPROCESS, (name, error)


def _score_raw(url: str, images: list[bytes], prompts: list[str | bytes]) -> list[tuple[float | None, str | None]]:
    """(mu, error) per item: strings go through HPSv3Client; raw prompt bytes (invalid UTF-8, which Python
    strings cannot hold) through plain tritonclient, as a non-Python client would send them."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    results: list[tuple[float | None, str | None]] = []
    client = HPSv3Client(url)
    raw = grpcclient.InferenceServerClient(url)
    for image, prompt in zip(images, prompts, strict=True):
        if isinstance(prompt, bytes):
            inputs = [grpcclient.InferInput(name, [1, 1], "BYTES") for name in ("IMAGE", "PROMPT")]
            inputs[0].set_data_from_numpy(np.array([[image]], dtype=np.object_))
            inputs[1].set_data_from_numpy(np.array([[prompt]], dtype=np.object_))
            try:
                results.append((float(raw.infer("hpsv3", inputs).as_numpy("MU").ravel()[0]), None))
            except InferenceServerException as exc:
                results.append((None, exc.message()))
            continue
        (result,) = client.score([image], prompt)
        results.append((result.mu, result.error))
    return results
