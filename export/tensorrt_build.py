"""Build the GPU target's TensorRT engines from an ONNX export (run on the GPU host, TensorRT ≥ 10.15).

    python export/tensorrt.py --artifacts ARTIFACTS [--precision bf16] [--max-patches 16384]

Writes ARTIFACTS/tensorrt/vision_encoder.plan (at --precision; I/O stays fp32/uint8/int64) and
ARTIFACTS/tensorrt/reward_head.plan (always fp32: the official rm_head runs in fp32). The graphs are
the exported ones with their inputs and outputs renamed to the ensemble's tensors (`_PATCHES`, …),
so `model_repository/build.py --target gpu` serves them as they are. Opset 23 Attention,
RMSNormalization and RotaryEmbedding need TensorRT 10.15 or newer.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import onnx

ENSEMBLE_NAMES = {
    "vision_encoder": {"patches": "_PATCHES", "position_ids": "_POSITION_IDS", "image_embeds": "_IMAGE_EMBEDS"},
    "reward_head": {"hidden": "_HIDDEN", "mu": "MU", "sigma": "SIGMA"},
}
PRECISIONS = ("bf16", "fp16", "fp32")


def renamed(model: onnx.ModelProto, names: dict[str, str]) -> onnx.ModelProto:
    """The graph with its inputs/outputs (and every reference to them) renamed."""
    graph = model.graph
    for value in [*graph.input, *graph.output]:
        value.name = names.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [names.get(name, name) for name in node.input]
        node.output[:] = [names.get(name, name) for name in node.output]
    return model


def build_engine(onnx_path: Path, names: dict[str, str], shapes: dict[str, tuple], precision: str) -> bytes:
    """Parse the renamed graph and build a serialized engine with one optimization profile.

    `shapes` maps each dynamic input to (min, opt, max) shapes."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(renamed(onnx.load(str(onnx_path)), names).SerializeToString()):
        errors = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}:\n{errors}")
    config = builder.create_builder_config()
    if precision != "fp32":
        config.set_flag(trt.BuilderFlag.BF16 if precision == "bf16" else trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, (smallest, typical, largest) in shapes.items():
        profile.set_shape(name, smallest, typical, largest)
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError(f"TensorRT failed to build {onnx_path} (see the log above)")
    return bytes(engine)


def build_all(artifacts: Path, precision: str, max_patches: int, max_batch: int) -> list[Path]:
    """Both engines into ARTIFACTS/tensorrt; returns their paths."""
    out = artifacts / "tensorrt"
    out.mkdir(exist_ok=True)
    vision = build_engine(
        artifacts / "vision_encoder.onnx",
        ENSEMBLE_NAMES["vision_encoder"],
        {"_PATCHES": ((1, 16, 588), (1, 1024, 588), (1, max_patches, 588)),
         "_POSITION_IDS": ((1, 16, 2), (1, 1024, 2), (1, max_patches, 2))},
        precision,
    )  # fmt: skip
    hidden = onnx.load(str(artifacts / "reward_head.onnx")).graph.input[0].type.tensor_type.shape.dim[1].dim_value
    head = build_engine(
        artifacts / "reward_head.onnx",
        ENSEMBLE_NAMES["reward_head"],
        {"_HIDDEN": ((1, hidden), (max_batch, hidden), (max_batch, hidden))},
        "fp32",
    )
    paths = [out / "vision_encoder.plan", out / "reward_head.plan"]
    for path, engine in zip(paths, (vision, head), strict=True):
        path.write_bytes(engine)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=Path, required=True, help="folder written by `hpsv3 export` (fp32)")
    parser.add_argument("--precision", choices=PRECISIONS, default="bf16", help="vision encoder compute precision")
    parser.add_argument("--max-patches", type=int, default=16384, help="largest image, in 14-pixel patches")
    parser.add_argument("--max-batch-size", type=int, default=16, help="largest reward_head batch (as the repo)")
    args = parser.parse_args(argv)
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        print("error: TensorRT is not installed; run this on the GPU host (pip install tensorrt)", file=sys.stderr)
        return 2
    for path in build_all(args.artifacts, args.precision, args.max_patches, args.max_batch_size):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
