"""The rendered repository: both targets line up with Triton's schema; the GPU target's engines get
the ensemble's tensor names (checked by running the renamed graphs in ONNX Runtime)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from hpsv3_export.tensorrt_build import ENSEMBLE_NAMES, renamed
from hpsv3_repository.build import GPU_FILES, RepositoryError, check_ensemble, render, settings_for
from hpsv3_serve.inputs import prepare_image, vision_position_ids

from .conftest import IMAGES


@pytest.fixture
def gpu_artifacts(tiny_artifacts: Path, tmp_path: Path) -> Path:
    """The tiny export plus the files the GPU host adds (engines and the vLLM folder), as empty files:
    rendering only links them."""
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    for path in tiny_artifacts.iterdir():
        (artifacts / path.name).symlink_to(path)
    for name in GPU_FILES:
        (artifacts / name).parent.mkdir(parents=True, exist_ok=True)
        (artifacts / name).write_bytes(b"")
    return artifacts


def test_gpu_target_renders_tensorrt_plans_and_the_vllm_tower(gpu_artifacts: Path, tmp_path: Path) -> None:
    repository = render("gpu", settings_for(gpu_artifacts), tmp_path / "repo")
    for model in ("vision_encoder", "reward_head"):
        assert 'platform: "tensorrt_plan"' in (repository / model / "config.pbtxt").read_text()
        plan = repository / model / "1" / "model.plan"
        assert plan.resolve() == (gpu_artifacts / "tensorrt" / f"{model}.plan").resolve()
        assert not (repository / model / "1" / "model.py").exists()
    tower = (repository / "language_model" / "config.pbtxt").read_text()
    assert "KIND_MODEL" in tower and f"{gpu_artifacts.resolve()}/vllm" in tower and "${" not in tower
    assert "vllm" in (repository / "language_model" / "1" / "model.py").read_text()
    assert 'key: "quantization", value: { string_value: "none" }' in tower
    fp8 = render("gpu", settings_for(gpu_artifacts, vllm_quantization="fp8"), tmp_path / "fp8")
    assert 'string_value: "fp8"' in (fp8 / "language_model" / "config.pbtxt").read_text()
    assert "KIND_CPU" in (repository / "preprocess" / "config.pbtxt").read_text()
    cpu = render("cpu", settings_for(gpu_artifacts), tmp_path / "cpu")
    for name in ("hpsv3", "preprocess"):  # one serving graph, one preprocessing on both targets
        assert (cpu / name / "config.pbtxt").read_text() == (repository / name / "config.pbtxt").read_text()


def test_gpu_target_without_engines_says_how_to_build_them(tiny_artifacts: Path, tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match=r"export/tensorrt.py.*hpsv3 export --vllm"):
        render("gpu", settings_for(tiny_artifacts), tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_a_broken_ensemble_map_is_caught_before_serving(tiny_artifacts: Path, tmp_path: Path) -> None:
    repository = render("cpu", settings_for(tiny_artifacts), tmp_path / "repo")
    config = repository / "language_model" / "config.pbtxt"
    text = config.read_text().replace('"_GRID_THW", data_type: TYPE_INT64', '"_GRID_THW", data_type: TYPE_INT32')
    config.write_text(text)
    with pytest.raises(RepositoryError, match="_GRID_THW"):
        check_ensemble(repository)


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_engine_graphs_take_the_ensemble_tensor_names(tiny_artifacts: Path) -> None:
    image = prepare_image(IMAGES / "photo_800x600.jpg")
    feeds = {"patches": image.patches[None], "position_ids": vision_position_ids(image.grid_thw)[None]}
    vision = onnx.load(str(tiny_artifacts / "vision_encoder.onnx"))
    expected = _session(vision).run(None, feeds)[0]
    names = ENSEMBLE_NAMES["vision_encoder"]
    engine_graph = _session(renamed(vision, names))
    assert [i.name for i in engine_graph.get_inputs()] == ["_PATCHES", "_POSITION_IDS"]
    got = engine_graph.run(["_IMAGE_EMBEDS"], {names[key]: value for key, value in feeds.items()})[0]
    np.testing.assert_array_equal(got, expected)
    head = renamed(onnx.load(str(tiny_artifacts / "reward_head.onnx")), ENSEMBLE_NAMES["reward_head"])
    mu, sigma = _session(head).run(["MU", "SIGMA"], {"_HIDDEN": np.ones((3, expected.shape[-1]), np.float32)})
    assert mu.shape == sigma.shape == (3,) and (sigma > 0).all()
