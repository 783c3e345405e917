"""export/tensorrt.py as far as a machine without TensorRT or a GPU allows: it refuses before any work and says
where to run; its profiles cover every image size; the graphs it hands to TensorRT (renamed, external weights
linked, fp8 calibration inputs from the serving code) run in ONNX Runtime; a current build is not redone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from hpsv3_export.tensorrt_build import (
    ENSEMBLE_NAMES,
    calibration_inputs,
    head_profile,
    renamed_copy,
    renamed_graph,
    vision_profile,
)
from hpsv3_export.tensorrt_host import (
    Gpu,
    TensorRTUnavailable,
    engines_are_current,
    record,
    require_gpu,
    require_modelopt,
    sha256,
    write_record,
)
from hpsv3_serve.inputs import MAX_PATCHES, MIN_PATCHES, prepare_image, vision_position_ids

from .conftest import IMAGES

SCRIPT = Path(__file__).resolve().parent.parent / "export" / "tensorrt.py"


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


@pytest.mark.skipif(_has("tensorrt"), reason="TensorRT is installed here")
def test_without_tensorrt_the_script_refuses_and_says_where_to_run(tiny_artifacts: Path, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, SCRIPT, "--onnx", tiny_artifacts, "--out", tmp_path / "engines"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2
    assert "TensorRT is not installed" in done.stderr and "GPU host" in done.stderr
    assert not (tmp_path / "engines").exists(), "nothing written before the checks pass"


def test_without_a_gpu_the_build_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi on it
    with pytest.raises(TensorRTUnavailable, match="no NVIDIA GPU here"):
        require_gpu()


@pytest.mark.skipif(_has("modelopt"), reason="ModelOpt is installed here")
def test_fp8_without_modelopt_says_what_to_install() -> None:
    with pytest.raises(TensorRTUnavailable, match="nvidia-modelopt"):
        require_modelopt()


def test_profiles_cover_every_patch_count_and_the_head_batches() -> None:
    vision = vision_profile()
    assert vision["_PATCHES"] == ((1, MIN_PATCHES, 588), (1, 1024, 588), (1, MAX_PATCHES, 588))
    assert [shape[1] for shape in vision["_POSITION_IDS"]] == [MIN_PATCHES, 1024, MAX_PATCHES]
    assert head_profile(3584, 16) == {"_HIDDEN": ((1, 3584), (16, 3584), (16, 3584))}


def test_renamed_graphs_find_their_external_weights_and_run(tiny_artifacts: Path, tmp_path: Path) -> None:
    """What TensorRT parses: the renamed graph bytes, weights read from beside the source (`parse(path=...)`,
    as ONNX Runtime does for a graph file in that folder); and the copy ModelOpt quantizes."""
    source = tmp_path / "export" / "vision_encoder.onnx"
    source.parent.mkdir()
    for name in ("vision_encoder.onnx", "vision_encoder.onnx.data"):
        shutil.copyfile(tiny_artifacts / name, source.parent / name)
    image = prepare_image(IMAGES / "tall_300x900.png")
    feeds = {"patches": image.patches[None], "position_ids": vision_position_ids(image.grid_thw)[None]}
    expected = ort.InferenceSession(str(source)).run(None, feeds)[0]
    names = ENSEMBLE_NAMES["vision_encoder"]
    beside = source.with_name("renamed.onnx")
    beside.write_bytes(renamed_graph(source, names))
    (tmp_path / "work").mkdir()
    for graph in (beside, renamed_copy(source, names, tmp_path / "work")):
        session = ort.InferenceSession(str(graph))
        got = session.run(["_IMAGE_EMBEDS"], {"_PATCHES": feeds["patches"], "_POSITION_IDS": feeds["position_ids"]})
        np.testing.assert_array_equal(got[0], expected)


def test_fp8_calibration_inputs_come_from_the_serving_preprocessing(tiny_artifacts: Path, tmp_path: Path) -> None:
    data = calibration_inputs(IMAGES)
    count = len([p for p in IMAGES.iterdir() if p.suffix in {".png", ".jpg"}])
    assert data["_PATCHES"].shape == (count, 1024, 588) and data["_PATCHES"].dtype == np.uint8
    assert data["_POSITION_IDS"].shape == (count, 1024, 2) and data["_POSITION_IDS"].dtype == np.int64
    graph = renamed_copy(tiny_artifacts / "vision_encoder.onnx", ENSEMBLE_NAMES["vision_encoder"], tmp_path)
    session = ort.InferenceSession(str(graph))
    first = {name: values[:1] for name, values in data.items()}
    assert np.isfinite(session.run(None, first)[0]).all()
    with pytest.raises(ValueError, match=r"no \.png"):
        calibration_inputs(tmp_path)  # holds only the graph copy


def test_a_current_build_is_recognised_and_a_changed_one_is_not(tiny_artifacts: Path, tmp_path: Path) -> None:
    sources = {name: tiny_artifacts / f"{name}.onnx" for name in ("vision_encoder", "reward_head")}
    gpu = Gpu("NVIDIA H100 80GB HBM3", "9.0", "580.65")
    for name in sources:
        (tmp_path / f"{name}.plan").write_bytes(b"engine")
    engines = {name: {"source_sha256": sha256(path), "precision": "bf16"} for name, path in sources.items()}
    write_record(tmp_path, record("10.15.1", gpu, "bf16", engines))
    assert json.loads((tmp_path / "engines.json").read_text())["gpu"]["compute_capability"] == "9.0"

    assert engines_are_current(tmp_path, "10.15.1", gpu, "bf16", sources)
    assert not engines_are_current(tmp_path, "10.16.0", gpu, "bf16", sources), "another TensorRT"
    assert not engines_are_current(tmp_path, "10.15.1", Gpu("NVIDIA L4", "8.9", "580.65"), "bf16", sources)
    assert not engines_are_current(tmp_path, "10.15.1", gpu, "fp8", sources), "another precision"
    os.remove(tmp_path / "reward_head.plan")
    assert not engines_are_current(tmp_path, "10.15.1", gpu, "bf16", sources), "an engine is missing"
