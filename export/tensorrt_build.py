"""Build the GPU target's TensorRT engines from an ONNX export (run on the GPU host, TensorRT ≥ 10.15).

    python export/tensorrt.py --onnx ARTIFACTS [--out ARTIFACTS/tensorrt] [--precision bf16|fp16|fp32|fp8]

Writes OUT/vision_encoder.plan (at --precision; I/O stays uint8/int64/fp32), OUT/reward_head.plan (always
fp32: the official rm_head runs in fp32) and OUT/engines.json (TensorRT version, GPU, precision, profiles,
source sha256s). The graphs are the exported ones with inputs and outputs renamed to the ensemble's tensors
(`_PATCHES`, …), so `model_repository/build.py --target gpu` serves them as they are. Profiles: the vision
encoder takes one image of MIN_PATCHES..MAX_PATCHES patches (every size smart_resize can produce at 200704
pixels; optimised for 1024, a square image), the reward head 1..--max-batch-size rows.

fp8 (Hopper and newer) quantizes the vision encoder's matmuls with NVIDIA ModelOpt (Q/DQ nodes calibrated on
--calibration-images, fp16 elsewhere); measure its agreement on your images before serving it.
Opset-23 Attention, RMSNormalization and RotaryEmbedding need TensorRT 10.15 or newer. Without TensorRT or a
GPU it stops before any work and says where to run it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

from hpsv3_serve.defaults import DEFAULT_MAX_BATCH_SIZE
from hpsv3_serve.inputs import (
    IMAGE_SUFFIXES,
    MAX_PATCHES,
    MIN_PATCHES,
    PATCH_BYTES,
    PIXELS,
    load_image,
    prepare_image,
    vision_position_ids,
)

from .tensorrt_host import (
    TensorRTUnavailable,
    engines_are_current,
    record,
    require_gpu,
    require_modelopt,
    require_tensorrt,
    sha256,
    write_record,
)

ENSEMBLE_NAMES = {
    "vision_encoder": {"patches": "_PATCHES", "position_ids": "_POSITION_IDS", "image_embeds": "_IMAGE_EMBEDS"},
    "reward_head": {"hidden": "_HIDDEN", "mu": "MU", "sigma": "SIGMA"},
}
PRECISIONS = ("bf16", "fp16", "fp32", "fp8")
TYPICAL_PATCHES = PIXELS // (14 * 14)  # 1024: an image already at the pixel budget

Profile = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


def vision_profile() -> Profile:
    """(min, opt, max) shapes of the vision encoder's inputs: one image of any size smart_resize produces."""
    return {
        "_PATCHES": tuple((1, n, PATCH_BYTES) for n in (MIN_PATCHES, TYPICAL_PATCHES, MAX_PATCHES)),
        "_POSITION_IDS": tuple((1, n, 2) for n in (MIN_PATCHES, TYPICAL_PATCHES, MAX_PATCHES)),
    }


def head_profile(hidden_size: int, max_batch: int) -> Profile:
    """(min, opt, max) shapes of the reward head's input: 1..max_batch hidden states."""
    return {"_HIDDEN": ((1, hidden_size), (max_batch, hidden_size), (max_batch, hidden_size))}


def renamed(model: onnx.ModelProto, names: dict[str, str]) -> onnx.ModelProto:
    """The graph with its inputs/outputs (and every reference to them) renamed."""
    graph = model.graph
    for value in [*graph.input, *graph.output]:
        value.name = names.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [names.get(name, name) for name in node.input]
        node.output[:] = [names.get(name, name) for name in node.output]
    return model


def renamed_graph(source: Path, names: dict[str, str]) -> bytes:
    """SOURCE renamed, serialized without its external weights: the parser reads those from beside SOURCE."""
    return renamed(onnx.load(str(source), load_external_data=False), names).SerializeToString()


def renamed_copy(source: Path, names: dict[str, str], workdir: Path) -> Path:
    """WORKDIR/<name>.onnx: SOURCE renamed, with a copy of its external weights (ModelOpt wants a file)."""
    graph = workdir / source.name
    graph.write_bytes(renamed_graph(source, names))
    for data in source.parent.glob(f"{source.name}.data*"):
        shutil.copyfile(data, workdir / data.name)
    return graph


def calibration_inputs(folder: Path, limit: int = 64) -> dict[str, np.ndarray]:
    """ModelOpt calibration data for the renamed vision graph: images of FOLDER, prepared by the serving code,
    at the typical patch count (ModelOpt stacks samples, so they share one shape)."""
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not paths:
        raise ValueError(f"--calibration-images {folder}: no .png/.jpg/.webp/.bmp images there")
    patches, positions = [], []
    for path in paths:
        image = load_image(path).resize((448, 448))  # 1024 patches: one shape for every sample
        prepared = prepare_image(image)
        patches.append(prepared.patches[None])
        positions.append(vision_position_ids(prepared.grid_thw)[None])
    return {"_PATCHES": np.concatenate(patches), "_POSITION_IDS": np.concatenate(positions)}


def quantized_fp8(graph: Path, calibration: dict[str, np.ndarray], workdir: Path) -> Path:
    """The renamed vision graph with FP8 Q/DQ nodes on its matmuls (ModelOpt post-training quantization)."""
    from modelopt.onnx.quantization import quantize

    output = workdir / "vision_encoder.fp8.onnx"
    quantize(
        onnx_path=str(graph),
        quantize_mode="fp8",
        calibration_data=calibration,
        output_path=str(output),
        high_precision_dtype="fp16",
    )
    return output


def build_engine(graph: bytes, path: Path, profile: Profile, precision: str) -> bytes:
    """Parse a (renamed) ONNX graph whose external weights sit beside PATH and build a serialized engine with
    one optimization profile."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(graph, path=str(path)):
        errors = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {path}:\n{errors}")
    config = builder.create_builder_config()
    flags = {"bf16": [trt.BuilderFlag.BF16], "fp16": [trt.BuilderFlag.FP16], "fp32": [],
             "fp8": [trt.BuilderFlag.FP8, trt.BuilderFlag.FP16]}[precision]  # fmt: skip
    for flag in flags:
        config.set_flag(flag)
    optimization = builder.create_optimization_profile()
    for name, (smallest, typical, largest) in profile.items():
        optimization.set_shape(name, smallest, typical, largest)
    config.add_optimization_profile(optimization)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError(f"TensorRT failed to build {path} (see the log above)")
    return bytes(engine)


def build_all(
    onnx_dir: Path, out: Path, precision: str, max_batch: int, calibration_images: Path | None = None
) -> list[Path]:
    """Both engines and the build record into OUT (skipped when OUT already matches); returns the paths."""
    version, gpu = require_tensorrt(), require_gpu()
    if precision == "fp8":
        require_modelopt()
        if calibration_images is None:
            raise ValueError("--precision fp8 needs --calibration-images DIR (a few dozen typical images)")
    sources = {"vision_encoder": onnx_dir / "vision_encoder.onnx", "reward_head": onnx_dir / "reward_head.onnx"}
    missing = [str(path) for path in sources.values() if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)} missing: export first with `hpsv3 export --out {onnx_dir}`")
    paths = [out / f"{name}.plan" for name in sources] + [out / "engines.json"]
    if engines_are_current(out, version, gpu, precision, sources):
        return paths
    out.mkdir(parents=True, exist_ok=True)
    head_graph = onnx.load(str(sources["reward_head"]))
    hidden = head_graph.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    profiles = {"vision_encoder": vision_profile(), "reward_head": head_profile(hidden, max_batch)}
    precisions = {"vision_encoder": precision, "reward_head": "fp32"}
    with tempfile.TemporaryDirectory() as work:
        for name, source in sources.items():
            graph, path = renamed_graph(source, ENSEMBLE_NAMES[name]), source
            if precisions[name] == "fp8":
                copy = renamed_copy(source, ENSEMBLE_NAMES[name], Path(work))
                path = quantized_fp8(copy, calibration_inputs(calibration_images), Path(work))
                graph = path.read_bytes()
            (out / f"{name}.plan").write_bytes(build_engine(graph, path, profiles[name], precisions[name]))
    engines = {
        name: {"source_sha256": sha256(source), "precision": precisions[name],
               "profile": {k: [list(s) for s in v] for k, v in profiles[name].items()}}
        for name, source in sources.items()
    }  # fmt: skip
    write_record(out, record(version, gpu, precision, engines))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python export/tensorrt.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--onnx", type=Path, required=True, help="folder written by `hpsv3 export --out` (fp32)")
    parser.add_argument("--out", type=Path, help="engine folder (default ONNX/tensorrt, where the GPU repo looks)")
    parser.add_argument("--precision", choices=PRECISIONS, default="bf16", help="vision encoder precision")
    parser.add_argument(
        "--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE, help="largest reward_head batch (as the repo)"
    )
    parser.add_argument("--calibration-images", type=Path, help="fp8 only: folder of typical images to calibrate")
    args = parser.parse_args(argv)
    try:
        paths = build_all(args.onnx, args.out or args.onnx / "tensorrt", args.precision, args.max_batch_size,
                          args.calibration_images)  # fmt: skip
    except (TensorRTUnavailable, FileNotFoundError, ValueError) as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"wrote {path}")
    return 0
