"""The other reward models served (`hpsv3 serve --models`): one repository with HPSv3 and five judges on the real
tritonserver. Each judge's model gives its official golden scores over gRPC (files, and PIL images / arrays sent
losslessly), `rewards` gives every model's score for one request with the image decoded once, a bad item fails
alone without leaking anything, and `hpsv3 score --endpoint --model` works."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from hpsv3_client import HPSv3Client, HPSv3Reward
from hpsv3_repository.build import JudgeSource, RepositoryError, check_ensemble, render, settings_for_checkpoint
from hpsv3_repository.launcher import TritonServer
from hpsv3_repository.serve import export_judges
from hpsv3_serve.judges.served import prepare_all, score_output
from hpsv3_serve.judges.tiny import make_tiny_judges

from .conftest import IMAGES, _running

GOLDEN_DIR = Path(__file__).parent / "golden"
GOLDEN = {"judges": {}}
for _file in ("official_judges_tiny.json", "official_imagereward_tiny.json"):
    GOLDEN["judges"] |= json.loads((GOLDEN_DIR / _file).read_text(encoding="utf-8"))["judges"]
NAMES = ("pickscore", "clip-h", "aesthetic", "hpsv2", "imagereward")
TOLERANCE = 1e-5  # relative to max(1, |score|), as tests/test_judges.py


def close(a: float, b: float) -> bool:
    return abs(a - b) <= TOLERANCE * max(1.0, abs(b))


@pytest.fixture(scope="module")
def tiny_judges(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_judges(tmp_path_factory.mktemp("tiny-judges"))


def judge_sources(tiny: Path) -> list[JudgeSource]:
    return [
        JudgeSource("pickscore", str(tiny / "pickscore"), str(tiny / "clip-h")),
        JudgeSource("clip-h", str(tiny / "clip-h")),
        JudgeSource("aesthetic", str(tiny / "aesthetic-mlp.safetensors"), str(tiny / "clip-l")),
        JudgeSource("hpsv2", str(tiny / "hpsv2.safetensors"), str(tiny / "clip-h")),
        JudgeSource("imagereward", str(tiny / "imagereward"), str(tiny / "bert")),
    ]


def test_serve_exports_each_judge_once(tiny_judges: Path, tmp_path: Path) -> None:
    """`hpsv3 serve` exports the towers (checked against torch) and reuses them while the sources are unchanged."""
    said: list[str] = []
    first = export_judges(tuple(judge_sources(tiny_judges)[:1]), tmp_path, said.append)
    assert first[0].onnx == str(tmp_path / "judges" / "pickscore") and "exporting" in said[0]
    assert export_judges(tuple(judge_sources(tiny_judges)[:1]), tmp_path, said.append) == first
    assert "reusing" in said[1]


@pytest.fixture(scope="module")
def served(
    tiny: Path, tiny_checkpoint: Path, tiny_judges: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    """HPSv3 (the torch engine's two steps, on CPU: no export) beside the five tiny judges (the CLIP ones on ONNX
    Runtime as exported, ImageReward too) and `rewards`."""
    settings = settings_for_checkpoint(
        tiny_checkpoint, tiny / "base", device="cpu", torch_dtype="float32", preprocess_instances=1
    )
    workdir = tmp_path_factory.mktemp("judges")
    judges = export_judges(tuple(judge_sources(tiny_judges)), workdir, lambda text: None)
    assert [bool(judge.onnx) for judge in judges] == [True, True, True, True, True]
    repository = render("gpu", settings, workdir / "repo", "torch", judges=judges)
    yield from _running(repository, tmp_path_factory.mktemp("judges-triton"))


def test_render_adds_a_model_per_judge_and_rewards(tiny: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    settings = settings_for_checkpoint(tiny_checkpoint, tiny / "base", device="cpu", torch_dtype="float32")
    judges = [JudgeSource("pickscore", onnx="/exported/pickscore"), JudgeSource("hpsv2.1")]
    out = render("gpu", settings, tmp_path / "repo", "torch", judges=judges)
    names = sorted(path.name for path in out.iterdir())
    assert names == ["hpsv2.1", "hpsv3", "hpsv3_patches", "pickscore", "preprocess", "preprocess_patches",
                     "reward_model", "rewards"]  # fmt: skip
    assert '"/exported/pickscore"' in (out / "pickscore" / "config.pbtxt").read_text()
    rewards = (out / "rewards" / "config.pbtxt").read_text()
    assert all(f'"{score_output(name)}"' in rewards for name in ("hpsv3", "pickscore", "hpsv2.1"))
    assert score_output("hpsv2.1") == "SCORE_HPSV2_1" and f"max_batch_size: {settings.max_batch_size}\n" in rewards
    for bad in ([JudgeSource("hpsv3")], [JudgeSource("nope")], [JudgeSource("clip-h")] * 2):
        with pytest.raises(RepositoryError):
            render("gpu", settings, tmp_path / "bad", "torch", judges=bad)
    alone = render("gpu", replace(settings, rewards=False), tmp_path / "alone", "torch", judges=judges)
    assert sorted(path.name for path in alone.iterdir()) == [name for name in names if name != "rewards"]


def test_gpu_render_runs_the_torch_judges_on_the_gpu(tiny: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    """On the GPU (either engine) every judge is its torch model on KIND_GPU in the GPU dtype, the export unused; the
    check covers `rewards`: one score per model, each judge served alone on the same device."""
    settings = settings_for_checkpoint(tiny_checkpoint, tiny / "base", torch_dtype="float16")
    judges = [JudgeSource("pickscore", onnx="/exported/pickscore"), JudgeSource("imagereward")]
    out = render("gpu", settings, tmp_path / "repo", "torch", judges=judges)
    for model in ("pickscore", "imagereward", "rewards"):
        config = (out / model / "config.pbtxt").read_text()
        assert "kind: KIND_GPU" in config and '"cuda"' in config and '"float16"' in config, model
        assert "/exported" not in config
    cpu = settings_for_checkpoint(tiny_checkpoint, tiny / "base", device="cpu", torch_dtype="float32")
    config = (render("gpu", cpu, tmp_path / "cpu", "torch", judges=judges) / "pickscore" / "config.pbtxt").read_text()
    assert "kind: KIND_CPU" in config and '"/exported/pickscore"' in config  # served on CPU: as the cpu target
    rewards = out / "rewards" / "config.pbtxt"
    text = rewards.read_text()
    rewards.write_text(text.replace(f'"{score_output("imagereward")}"', '"SCORE_OTHER"'))
    with pytest.raises(RepositoryError, match="one FP32 score per model"):
        check_ensemble(out)
    rewards.write_text(text.replace('name: "ERRORS"', 'name: "WHY"'))
    with pytest.raises(RepositoryError, match="and ERRORS"):
        check_ensemble(out)
    rewards.write_text(text.replace("KIND_GPU", "KIND_CPU"))
    with pytest.raises(RepositoryError, match="not the same"):
        check_ensemble(out)
    shutil.rmtree(out / "imagereward")
    rewards.write_text(text)
    with pytest.raises(RepositoryError, match="judge imagereward is not a model"):
        check_ensemble(out)


@pytest.fixture(scope="module")
def served_on_torch(
    tiny: Path, tiny_checkpoint: Path, tiny_judges: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    """The gpu render as the container makes it (no judge export: torch judges), served on CPU (`device` cpu)."""
    settings = settings_for_checkpoint(
        tiny_checkpoint, tiny / "base", device="cpu", torch_dtype="float32", preprocess_instances=1
    )
    workdir = tmp_path_factory.mktemp("torch-judges")
    repository = render("gpu", settings, workdir / "repo", "torch", judges=judge_sources(tiny_judges)[:2])
    yield from _running(repository, tmp_path_factory.mktemp("torch-judges-triton"))


def test_gpu_render_served_on_cpu_gives_the_official_scores(served_on_torch: TritonServer) -> None:
    """The torch judges of the gpu render (PickScore and CLIP ViT-H/14 here; fp32 on CPU) give the golden scores,
    alone and through `rewards`."""
    rewards = HPSv3Client(served_on_torch.grpc_url, model="rewards", concurrency=4)
    for name in ("pickscore", "clip-h"):
        items = GOLDEN["judges"][name][:4]
        files, prompts = [IMAGES / item["image"] for item in items], [item["prompt"] for item in items]
        alone = HPSv3Client(served_on_torch.grpc_url, model=name, concurrency=4).score(files, prompts)
        together = rewards.score(files, prompts)
        for single, both, item in zip(alone, together, items, strict=True):
            assert single.ok and both.ok, (single.error, both.error)
            assert close(single.score, item["score"]) and close(both.scores[name], item["score"]), (name, item)


@pytest.mark.parametrize("name", NAMES)
def test_each_judge_served_gives_its_official_scores(served: TritonServer, name: str) -> None:
    """Files as they are, and the same images opened (PIL, in their own mode) or as arrays: the golden scores."""
    items = GOLDEN["judges"][name]
    files = [IMAGES / item["image"] for item in items]
    prompts = [item["prompt"] for item in items]
    client = HPSv3Client(served.grpc_url, model=name, concurrency=8)
    for images in (files, [Image.open(path) for path in files]):
        for result, item in zip(client.score(images, prompts), items, strict=True):
            assert result.ok, result.error
            assert result.model == name and result.mu is None and result.sigma is None
            assert close(result.score, item["score"]), (name, item["image"], result.score, item["score"])
    photo = next(item for item in items if item["image"] == "photo_800x600.jpg")
    pixels = np.asarray(Image.open(IMAGES / "photo_800x600.jpg"))
    assert close(client.score([pixels], photo["prompt"])[0].score, photo["score"])


def test_rewards_gives_every_score_from_one_decode(served: TritonServer, tiny: Path, tiny_judges: Path) -> None:
    """One request to `rewards` → SCORE_<MODEL> for HPSv3 and each judge, equal to the single-model calls. The
    decode happens once by construction: `rewards` runs `prepare_all`, which opens the image once (counted here)."""
    items = GOLDEN["judges"]["pickscore"][:4]
    client = grpcclient.InferenceServerClient(served.grpc_url)
    singles = {name: HPSv3Client(served.grpc_url, model=name).score([IMAGES / i["image"] for i in items],
                                                                     [i["prompt"] for i in items])
               for name in ("hpsv3", *NAMES)}  # fmt: skip
    for index, item in enumerate(items):
        inputs = [grpcclient.InferInput("IMAGE", [1, 1], "BYTES"), grpcclient.InferInput("PROMPT", [1, 1], "BYTES")]
        inputs[0].set_data_from_numpy(np.array([[(IMAGES / item["image"]).read_bytes()]], dtype=np.object_))
        inputs[1].set_data_from_numpy(np.array([[item["prompt"].encode()]], dtype=np.object_))
        response = client.infer("rewards", inputs)
        for name, results in singles.items():
            assert close(float(response.as_numpy(score_output(name))[0, 0]), results[index].score), name
    pixels = [np.asarray(Image.open(IMAGES / item["image"]).convert("RGB")) for item in items]
    both = HPSv3Client(served.grpc_url, model="rewards").score(pixels, [item["prompt"] for item in items])
    assert all(result.ok and set(result.scores) == {"hpsv3", *NAMES} for result in both)
    reward = HPSv3Reward(served.grpc_url, model="pickscore")
    try:
        scores, info = reward(pixels, [item["prompt"] for item in items])
    finally:
        reward.close()
    assert all(close(float(score), result.scores["pickscore"]) for score, result in zip(scores, both, strict=True))
    assert np.isnan(info["sigma"]).all()

    from hpsv3_serve.judges import load_judge

    opened = []
    original = Image.open
    judges = {"clip-h": load_judge("clip-h", tiny_judges / "clip-h").judge}
    try:
        Image.open = lambda *args, **kwargs: opened.append(1) or original(*args, **kwargs)
        from hpsv3_serve.limits import DEFAULT_LIMITS

        prepared, patches = prepare_all(
            judges, (IMAGES / "palette_400.png").read_bytes(), "a fox", DEFAULT_LIMITS, True
        )
    finally:
        Image.open = original
    assert len(opened) == 1 and set(prepared) == {"clip-h"} and patches.patches.dtype == np.uint8


def test_a_bad_item_fails_alone_and_leaks_nothing(served: TritonServer) -> None:
    good = IMAGES / "square_512.png"
    client = HPSv3Client(served.grpc_url, model="pickscore", concurrency=3)
    results = client.score([good, b"not an image", good], ["a fox", "x", "a fox"])
    assert [r.ok for r in results] == [True, False, True] and results[0].score == pytest.approx(results[2].score)
    assert results[1].error.startswith("<12 bytes>: IMAGE: ") and "Traceback" not in results[1].error
    assert "/" not in results[1].error.split("IMAGE: ", 1)[1]
    grpc = grpcclient.InferenceServerClient(served.grpc_url)
    inputs = [grpcclient.InferInput("IMAGE", [1, 1], "BYTES"), grpcclient.InferInput("PROMPT", [1, 1], "BYTES")]
    inputs[0].set_data_from_numpy(np.array([[b"not an image"]], dtype=np.object_))
    inputs[1].set_data_from_numpy(np.array([[b"a fox"]], dtype=np.object_))
    with pytest.raises(InferenceServerException) as caught:
        grpc.infer("rewards", inputs)
    assert "INVALID_ARGUMENT" in str(caught.value.status()) and caught.value.message().startswith("IMAGE: ")
    inputs[0].set_data_from_numpy(np.array([[good.read_bytes()]], dtype=np.object_))
    inputs[1].set_data_from_numpy(np.array([[b"\xff\xfe"]], dtype=np.object_))
    with pytest.raises(InferenceServerException) as caught:
        grpc.infer("rewards", inputs)
    assert caught.value.message().startswith("PROMPT: not valid UTF-8")


def test_rewards_keeps_the_scores_of_the_models_that_accept_an_item(served: TritonServer) -> None:
    """A prompt over HPSv3's token limit (2048) that the CLIP judges truncate: `rewards` still gives their scores,
    HPSv3's is missing with its reason in `errors`; scores equal the single-model calls. An image no model can open
    still fails the request, naming IMAGE."""
    image, long_prompt = IMAGES / "square_512.png", "a " * 2500
    result = HPSv3Client(served.grpc_url, model="rewards").score([image, b"not an image"], long_prompt)
    partial, broken = result
    assert partial.ok and set(partial.scores) == set(NAMES) and set(partial.errors) == {"hpsv3"}
    assert partial.errors["hpsv3"].startswith("PROMPT: ") and "(hpsv3)" in partial.errors["hpsv3"]
    for name in ("pickscore", "aesthetic"):
        alone = HPSv3Client(served.grpc_url, model=name).score([image], long_prompt)[0]
        assert close(partial.scores[name], alone.score), name
    assert partial.to_dict()["errors"] == partial.errors
    assert not broken.ok and "IMAGE: " in broken.error
    full = HPSv3Client(served.grpc_url, model="rewards").score([image], "a fox")[0]
    assert full.errors == {} and "errors" not in full.to_dict() and set(full.scores) == {"hpsv3", *NAMES}


def test_cli_scores_on_the_endpoint_with_another_model(served: TritonServer, capsys: pytest.CaptureFixture) -> None:
    from hpsv3_serve.cli import main

    item = GOLDEN["judges"]["clip-h"][0]
    args = ["score", str(IMAGES / item["image"]), "--prompt", item["prompt"], "--model", "clip-h",
            "--endpoint", served.grpc_url, "--format", "jsonl"]  # fmt: skip
    assert main(args) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["model"] == "clip-h" and close(row["score"], item["score"])


def test_serve_models_flags() -> None:
    from hpsv3_serve.cli import _served_judges, build_parser

    def parse(*args: str):
        return _served_judges(build_parser().parse_args(["serve", *args]))

    assert parse() == ()
    parser = build_parser()
    assert parser.parse_args(["serve"]).rewards and not parser.parse_args(["serve", "--no-rewards"]).rewards
    assert parse("--models", "hpsv3,pickscore,clip-h", "--judge-weights", "pickscore=/w", "--judge-base",
                 "pickscore=/b") == (JudgeSource("pickscore", "/w", "/b"), JudgeSource("clip-h"))  # fmt: skip
    for bad in (["--models", "nope"], ["--models", "clip-h", "--judge-weights", "pickscore=/w"],
                ["--models", "clip-h", "--judge-base", "clip-h"], ["--judge-weights", "hpsv3=/w"]):  # fmt: skip
        with pytest.raises(RepositoryError):
            parse(*bad)
