"""What a TensorRT build needs from the machine, checked before any work, and what it records about it.

An engine only runs on the TensorRT version and GPU architecture it was built with, so the build folder
keeps `engines.json`: TensorRT version, GPU name and compute capability, precision, profiles, and the
sha256 of each source graph. `engines_are_current` compares a folder against that record.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from hpsv3_serve.files import write_text_atomic

RECORD = "engines.json"


class TensorRTUnavailable(RuntimeError):
    """TensorRT, ModelOpt or a GPU is missing: the message says what to install or where to run."""


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: str
    driver: str


def require_tensorrt() -> str:
    """TensorRT's version, or TensorRTUnavailable saying how to get it."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTUnavailable(
            "TensorRT is not installed: run this on the GPU host, in the Triton image of the Dockerfile (it has "
            "TensorRT), or `pip install tensorrt` (10.15 or newer for opset-23 Attention/RotaryEmbedding)"
        ) from exc
    return trt.__version__


def require_gpu() -> Gpu:
    """The first NVIDIA GPU as nvidia-smi reports it, or TensorRTUnavailable: engines are built on the card
    (architecture) they will run on."""
    if shutil.which("nvidia-smi") is None:
        raise TensorRTUnavailable(
            "no NVIDIA GPU here (nvidia-smi not found): build the engines on the GPU host that will serve them"
        )
    query = ["nvidia-smi", "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"]
    done = subprocess.run(query, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        raise TensorRTUnavailable(f"nvidia-smi lists no usable GPU ({(done.stderr or done.stdout).strip()})")
    name, capability, driver = (field.strip() for field in lines[0].split(","))
    return Gpu(name, capability, driver)


def require_modelopt() -> None:
    """fp8 needs Q/DQ nodes in the graph (TensorRT explicit quantization), inserted by NVIDIA ModelOpt."""
    try:
        import modelopt.onnx.quantization  # noqa: F401
    except ImportError as exc:
        raise TensorRTUnavailable(
            "--precision fp8 needs NVIDIA ModelOpt to calibrate and insert FP8 Q/DQ nodes: "
            "`pip install 'nvidia-modelopt[onnx]'` on the GPU host, or use bf16"
        ) from exc


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record(tensorrt_version: str, gpu: Gpu, precision: str, engines: dict[str, dict]) -> dict:
    """The build record: `engines` maps each engine to its source graph's sha256, precision and profile."""
    return {"tensorrt": tensorrt_version, "gpu": asdict(gpu), "precision": precision, "engines": engines}


def write_record(out: Path, build: dict) -> Path:
    path = out / RECORD
    write_text_atomic(path, json.dumps(build, indent=2) + "\n")  # a half-written record never reads as a build
    return path


def engines_are_current(out: Path, tensorrt_version: str, gpu: Gpu, precision: str, sources: dict[str, Path]) -> bool:
    """True when OUT holds every engine, built by this TensorRT on this GPU model at this precision from these
    exact graphs (so a restart can skip the build)."""
    try:
        built = json.loads((out / RECORD).read_text())
    except (OSError, ValueError):
        return False
    if (built.get("tensorrt"), built.get("gpu", {}).get("name"), built.get("precision")) != (
        tensorrt_version,
        gpu.name,
        precision,
    ):
        return False
    engines = built.get("engines", {})
    return all(
        (out / f"{name}.plan").is_file() and engines.get(name, {}).get("source_sha256") == sha256(source)
        for name, source in sources.items()
    )
