"""The defaults every entry point shares, stated once and importable without torch (so `hpsv3 --help` stays fast)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_BATCH_SIZE = 8  # in-process: pairs per forward pass (scorer, `hpsv3 score`, benchmarks)
DEFAULT_MAX_BATCH_SIZE = 16  # served: Triton's dynamic batching limit, and the TensorRT profiles built for it
DEFAULT_CHECKPOINT = "MizzenAI/HPSv3"
DEFAULT_BASE = "Qwen/Qwen2-VL-7B-Instruct"
DTYPE_NAMES = ("float32", "bfloat16", "float16")  # weights dtypes (checkpoint.DTYPES maps them to torch's)
CACHE_ENV = "HPSV3_CACHE_DIR"


def cache_dir() -> Path:
    """Where exports, engines and rebuilt tokenizers are kept: `$HPSV3_CACHE_DIR`, else ~/.cache/hpsv3_serve."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "hpsv3_serve")
