"""A generated corpus of every input class, through the Python API, the CLI and the served model: each format
is scored (the same scores everywhere), each bad item gets its own error naming it and the reason, and the
items around it are scored."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpsv3_client import HPSv3Client
from hpsv3_repository.server import TritonServer
from hpsv3_serve.limits import InputLimits
from hpsv3_serve.prompt import PromptTokenizer
from hpsv3_serve.scorer import Scorer

HPSV3 = str(Path(sys.executable).with_name("hpsv3"))
SERVED_VS_INPROCESS = 2e-5
LIMITS = InputLimits(max_image_bytes=2_000_000, max_image_pixels=40_000_000, max_prompt_tokens=64)


def _encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _picture(mode: str = "RGB", size: tuple[int, int] = (96, 64)) -> Image.Image:
    rng = np.random.default_rng(sum(map(ord, mode)))
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)


def good_corpus() -> dict[str, bytes]:
    """Every format and mode the official `Image.open(...).convert("RGB")` decodes."""
    sixteen = Image.fromarray(np.arange(64 * 96, dtype=np.uint16).reshape(64, 96) * 10)
    frames = [_picture(), _picture("L").convert("RGB")]
    return {
        "rgb.jpg": _encoded(_picture(), "JPEG", quality=90),
        "cmyk.jpg": _encoded(_picture("CMYK"), "JPEG"),
        "rgba.png": _encoded(_picture("RGBA"), "PNG"),
        "grey16.png": _encoded(sixteen, "PNG"),
        "palette-transparency.png": _encoded(_picture("P"), "PNG", transparency=0),
        "lossless.webp": _encoded(_picture(), "WEBP", lossless=True),
        "animated.gif": _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "bitmap.bmp": _encoded(_picture(), "BMP"),
        "scan.tiff": _encoded(_picture(), "TIFF"),
    }


def bad_corpus() -> dict[str, tuple[bytes, str, str]]:
    """name → (image bytes, prompt, a fragment of the expected error) for every class of bad input."""
    ok = _encoded(_picture(), "PNG")
    bomb = _encoded(Image.new("1", (8000, 8000)), "PNG")  # 64 M pixels in a few kB
    return {
        "empty": (b"", "p", "not a recognised image format"),
        "text": (b"just some text, not a picture", "p", "not a recognised image format"),
        "truncated.png": (ok[: len(ok) // 2], "p", "could not decode"),
        "corrupt.jpg": (b"\xff\xd8\xff\xe0" + bytes(200), "p", "not a recognised image format"),
        "huge-file": (ok + bytes(2_100_000), "p", "over the limit of 2000000"),
        "bomb.png": (bomb, "p", "8000x8000 is 64000000 pixels, over the limit of 40000000"),
        "thin.png": (_encoded(Image.new("RGB", (4020, 20)), "PNG"), "p", "aspect ratio must be smaller than 200"),
        "long-prompt": (ok, "word " * 100, "over the limit of 64 (raise it with --max-prompt-tokens)"),
        "reserved-token": (ok, "a <|image_pad|> b", "reserved token <|image_pad|>"),
    }


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
    bad["bomb.png"] = (_encoded(Image.new("1", (10000, 9000)), "PNG"), "p", "over the limit of 80000000")
    bad["not-utf8"] = (_encoded(_picture(), "PNG"), b"caf\xe9", "PROMPT: not valid UTF-8")
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
