"""Engines: one narrow interface (a prepared batch in, `[B, 2]` mu/log_sigma out) per backend, built by `load`.

    engine = engines.load("fast", checkpoint=C, base=B, device="cuda", dtype="bfloat16", cuda_graphs=True)

- torch: the reference `HPSv3RewardModel` (transformers modules), CPU or CUDA.
- fast: the same weights run lean (`fast_engine`): what `--device cuda` uses and the Triton GPU target serves.
- onnx: the exported ONNX stages in ONNX Runtime (`folder` = `hpsv3 export --out` artifacts).
- vllm: vLLM's pooling runner (`folder` = `hpsv3 export --vllm` model folder).

Nothing is imported until an engine is asked for: `import hpsv3_serve.engines` stays light.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from .base import Engine

BACKENDS = ("torch", "fast", "onnx", "vllm")
EXPORTED = {"onnx": "hpsv3 export --out DIR", "vllm": "hpsv3 export --vllm DIR"}  # backends that run a folder

__all__ = ["BACKENDS", "Engine", "default_backend", "load"]


def default_backend(device: str) -> str:
    """The backend for a device when none is named: fast on CUDA, the reference on CPU."""
    return "fast" if device.startswith("cuda") else "torch"


def load(
    backend: str,
    *,
    checkpoint: str | os.PathLike | None = None,
    base: str | os.PathLike | None = None,
    model: Any = None,
    folder: str | os.PathLike | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    compile_layers: bool = False,
    cuda_graphs: bool = False,
    threads: int = 0,
    **vllm_options: Any,
) -> Engine:
    """The engine for `backend`. torch and fast load `checkpoint` (a local .safetensors) on `base` (a local
    Qwen2-VL folder) onto `device` in `dtype`, or run a loaded `HPSv3RewardModel` (`model`, where it lies);
    onnx and vllm run an exported `folder`. `compile_layers` and
    `cuda_graphs` are the fast engine's (graphs only on CUDA); `threads` is ONNX Runtime's per session;
    `vllm_options` go to `vllm.LLM`."""
    if backend not in BACKENDS:
        raise ModelLoadError(f"backend {backend!r} is unknown; choose from {', '.join(BACKENDS)}")
    if backend in EXPORTED:
        if folder is None or not Path(folder).is_dir():
            raise ModelLoadError(f"the {backend} backend runs an exported folder; make one with `{EXPORTED[backend]}`")
        if backend == "onnx":
            from .onnx_engine import OnnxEngine

            return OnnxEngine(Path(folder), threads)
        from .vllm_engine import VllmEngine

        return VllmEngine(Path(folder), dtype, **vllm_options)
    if model is None:
        if checkpoint is None or base is None:
            raise ModelLoadError(f"the {backend} backend needs a checkpoint and a base folder")
        model = _load_model(Path(checkpoint), Path(base), device, dtype)
    if backend == "fast":
        from .fast_engine import FastEngine

        return FastEngine(model, compile_layers=compile_layers, cuda_graphs=cuda_graphs)
    from .torch_engine import TorchEngine

    return TorchEngine(model, str(next(model.parameters()).device))


def _load_model(checkpoint: Path, base: Path, device: str, dtype: str):
    """The reward model on `device`, after checking the dtype and that the device exists."""
    import torch

    from ..checkpoint import DTYPES, load_model

    if dtype not in DTYPES:
        raise ModelLoadError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"--device {device}: torch {torch.__version__} sees no CUDA device; use --device cpu")
    return load_model(checkpoint, base, DTYPES[dtype], device).eval()
